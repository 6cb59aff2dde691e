"""OadrPoll: the user's on_poll first, then the VEN's outbox and pending event distribution."""
from __future__ import annotations

from typing import Any

from ..store.base import VenRecord
from . import events, outbox, reports
from .context import Context, Reply
from .replies import response


def poll(ctx: Context, ven: VenRecord, payload: dict[str, Any]) -> Reply:
    """Answer one oadrPoll with exactly one pending message, or oadrResponse 200."""
    ven_id = ven["ven_id"]
    handler = ctx.handler("on_poll")
    if handler is not None:
        result = handler(ven_id)
        if result:
            name, reply = result
            return name, reply
    now = ctx.now()
    # The reply is encoded inside the transaction that records it as sent: when it cannot be
    # built, the transaction rolls back and the VEN is sent it on a later poll instead.
    wait = outbox.redelivery_after(ctx, ven)
    with ctx.store.atomic(ven_id):
        awaiting = ctx.store.list_records(outbox.AWAITING, ven_id)
        # Whether events are due decides whether the outbox is taken in two steps (the
        # messages that go before a distribution, then the rest) or, as for most polls, one.
        events_due = events.distribution_pending(ctx, ven, now)
        item = outbox.take(ctx, ven_id, now, wait, superseded=reports.superseded,
                           max_priority=outbox.BEFORE_EVENTS if events_due else None,
                           awaiting=awaiting)
        if item is not None:
            return ctx.reply(item["payload_name"], item["payload"])
        if events_due:
            return ctx.reply("oadrDistributeEvent", events.distribute_event_payload(ctx, ven, now))
    return "oadrResponse", {"response": response(""), "ven_id": ven_id}
