"""The per-VEN outbox of VTN-originated payloads: the order a poll takes them in, and their
redelivery until the VEN acknowledges them."""
from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Callable, Mapping

from ..protocol import reply_name
from ..store.base import OutboxItem
from . import push_due
from .context import Context

# Poll order (protocol notes 5.5). oadrDistributeEvent is not queued: it is built at poll time
# from the current event set, between the register report and report requests.
PRIORITY = {
    "oadrCancelPartyRegistration": 1,
    "oadrRequestReregistration": 1,
    "oadrRegisterReport": 2,
    "oadrCreateReport": 4,
    "oadrCancelReport": 4,
    "oadrUpdateReport": 5,
}
#: Items at or below this priority go before a pending event distribution.
BEFORE_EVENTS = 2

#: The VEN's message that acknowledges each queued payload. A payload listed here stays (as an
#: AWAITING record) after it was sent, and a later poll sends it again once
#: OPENADR_REDELIVERY_AFTER has passed without the acknowledgement; one not listed is sent once.
ACKNOWLEDGED_BY = {name: reply_name(name) for name in (
    "oadrCancelPartyRegistration", "oadrRequestReregistration", "oadrRegisterReport",
    "oadrCreateReport", "oadrCancelReport", "oadrUpdateReport",
)}

#: Store record kind of the sent messages waiting for their acknowledgement, keyed by
#: :func:`acknowledgement_key`: ``{"item": OutboxItem, "sent_at": datetime}``.
AWAITING = "outbox_awaiting"
#: Record kinds this module keeps per VEN (cleared when a registration ends).
RECORD_KINDS = (AWAITING,)


def push(ctx: Context, ven_id: str, payload_name: str, payload: dict[str, Any]) -> None:
    """Queue a message for the VEN; a push VEN's senders are told in the same transaction."""
    with ctx.store.atomic(ven_id):
        ctx.store.push_outbox(ven_id, {"priority": PRIORITY[payload_name],
                                       "payload_name": payload_name, "payload": payload})
        ven = ctx.store.get_ven(ven_id)
        if ven is not None:
            push_due.mark(ctx, ven)


def redelivery_after(ctx: Context, ven: Mapping[str, Any]) -> timedelta:
    """How long a sent message waits for its acknowledgement before it is sent again:
    ``OPENADR_REDELIVERY_AFTER``, by default two of the VEN's poll intervals."""
    if ctx.settings.redelivery_after is not None:
        return ctx.settings.redelivery_after
    return 2 * (ven.get("poll_frequency") or ctx.settings.poll_frequency)


def acknowledgement_key(payload_name: str, payload: Mapping[str, Any]) -> str:
    """What the VEN's acknowledgement names a sent message by: its requestID, echoed in the
    acknowledgement's eiResponse; oadrRequestReregistration has none (the VEN answers it with a
    plain oadrResponse), so there the payload name, of which a VEN has at most one queued."""
    return payload.get("request_id") or payload_name


def queued(ctx: Context, ven_id: str, payload_name: str) -> bool:
    """Whether a ``payload_name`` message waits for the VEN: queued, or sent and not yet
    acknowledged."""
    return any(item["payload_name"] == payload_name for item in ctx.store.list_outbox(ven_id)) \
        or any(record["item"]["payload_name"] == payload_name
               for record in ctx.store.list_records(AWAITING, ven_id))


def acknowledge(ctx: Context, ven_id: str, key: str) -> None:
    """The VEN acknowledged the sent message ``key`` (see :func:`acknowledgement_key`): it is
    not sent again. A key that waits for nothing is ignored (a repeated acknowledgement)."""
    with ctx.store.atomic(ven_id):  # the VEN's own data: other VENs need not wait
        ctx.store.delete_record(AWAITING, ven_id, key)


def take(
    ctx: Context,
    ven_id: str,
    now: datetime,
    redelivery_after: timedelta,
    *,
    max_priority: int | None = None,
    superseded: Callable[[Context, str, Mapping[str, Any]], bool] = lambda *args: False,
    awaiting: list[dict[str, Any]] | None = None,
    queued: list[OutboxItem] | None = None,
) -> OutboxItem | None:
    """The VEN's next message, recorded as sent at ``now``; call it inside ``ctx.store.atomic()``
    with the encoding of the reply.

    Order: priority first (lower first, protocol notes 5.5); within a priority, a message sent
    before and due again (unacknowledged for ``redelivery_after``) goes before a queued one,
    since it was queued earlier. A message that needs an acknowledgement is kept as awaiting
    it; one ``superseded`` says is no longer needed (a newer message replaced it, or it was
    acknowledged another way) is dropped instead of sent.

    :param max_priority: consider only priorities up to this one.
    :param awaiting: the VEN's AWAITING records when the caller has read them already (a poll
        takes twice and reads them once: a take that returns nothing changes none of those it
        considered).
    :param queued: the VEN's outbox when the caller has read it already in this transaction:
        an empty one is not popped (a pop is a read of its own).
    """
    due = None
    if awaiting is None:
        awaiting = ctx.store.list_records(AWAITING, ven_id)
    for record in awaiting:
        item = record["item"]
        if max_priority is not None and item["priority"] > max_priority:
            continue
        if superseded(ctx, ven_id, item):
            ctx.store.delete_record(AWAITING, ven_id, _key(item))
            continue
        if record["sent_at"] + redelivery_after <= now and (
                due is None or item["priority"] < due["priority"]):
            due = item
    limit = max_priority if due is None else due["priority"] - 1
    item = ctx.store.pop_outbox(ven_id, max_priority=limit) if queued is None or queued \
        else None
    while item is not None and superseded(ctx, ven_id, item):
        item = ctx.store.pop_outbox(ven_id, max_priority=limit)
    chosen = item or due
    if chosen is not None and chosen["payload_name"] in ACKNOWLEDGED_BY:
        ctx.store.put_record(AWAITING, ven_id, _key(chosen), {"item": chosen, "sent_at": now})
    return chosen


def _key(item: Mapping[str, Any]) -> str:
    return acknowledgement_key(item["payload_name"], item["payload"])
