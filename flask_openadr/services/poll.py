"""OadrPoll: the user's on_poll first, then the VEN's outbox and pending event distribution."""
from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from ..protocol import reply_name
from ..store.base import VenRecord
from . import delivery, events, outbox, push, push_due, reports
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
    wait = outbox.redelivery_after(ctx, ven)
    if nothing_pending(ctx, ven_id, now, wait):
        # Most polls: answered from three reads, without a transaction or a write lock. A
        # message queued meanwhile is simply taken by the next poll.
        return reply_name("oadrPoll"), {"response": response(""), "ven_id": ven_id}
    # The reply is encoded inside the transaction that records it as sent: when it cannot be
    # built, the transaction rolls back and the VEN is sent it on a later poll instead.
    with ctx.store.atomic(ven_id):
        awaiting = ctx.store.list_records(outbox.AWAITING, ven_id)
        # Whether events are due decides whether the outbox is taken in two steps (the
        # messages that go before a distribution, then the rest) or, as for most polls, one.
        pending = events.pending_distribution(ctx, ven, now)
        item = outbox.take(ctx, ven_id, now, wait, superseded=reports.superseded,
                           max_priority=outbox.BEFORE_EVENTS if pending else None,
                           awaiting=awaiting)
        if item is not None:
            reply = ctx.reply(item["payload_name"], item["payload"])
        elif pending is not None:
            # What was worked out above is sent, not read and worked out again.
            reply = ctx.reply("oadrDistributeEvent", events.distribute_pending(ctx, pending, now))
        else:
            return reply_name("oadrPoll"), {"response": response(""), "ven_id": ven_id}
        if push_due.is_push(ven):
            # A push VEN that polls takes its messages here: the senders learn when what it
            # took is due again (its redelivery), as from a sender's turn.
            push.reschedule(ctx, ven, now)
        return reply


def nothing_pending(ctx: Context, ven_id: str, now: datetime, wait: timedelta) -> bool:
    """Whether the VEN has nothing to be sent: no events due, no sent message due again, and
    an empty outbox. One store read (one round trip on a server store)."""
    state = ctx.store.get_poll_state(ven_id, outbox.AWAITING)
    if delivery.is_due(delivery.from_stored(state["delivered"]), now):
        return False
    if any(record["sent_at"] + wait <= now for record in state["records"]):
        return False
    return not state["outbox"]
