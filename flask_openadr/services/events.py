"""EiEvent service: stored events, their distribution to VENs, and the VENs' opt answers."""
from __future__ import annotations

import copy
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Mapping, TypeVar

from .. import enums
from ..errors import EventError, InvalidData, InvalidID, UnknownEvent
from ..protocol import reply_name
from ..store.base import EventResponseRecord, VenRecord
from . import delivery, opt
from .context import Context, Reply
from .event_input import build_event, normalize_full_event, normalize_target, stored_form
from .event_rules import validate_event
from .event_state import current_value, event_status, is_cancelled
from .event_targets import order_events, overlap, render_event, targets_ven
from .event_versions import changed_event, next_version, same_content
from .replies import EiResponse, request_id_of
from .replies import response as ei_response

__all__ = [
    "UnknownEvent",
    "add_event",
    "check_sendable",
    "build_event",
    "cancel_event",
    "created_event",
    "current_value",
    "Pending",
    "distribute_event_payload",
    "distribute_pending",
    "distribution_pending",
    "pending_distribution",
    "event_responses",
    "event_status",
    "events_for_ven",
    "modify_event",
    "refresh_ven",
    "normalize_full_event",
    "normalize_target",
    "order_events",
    "render_event",
    "request_event",
    "targets_ven",
    "validate_event",
]

T = TypeVar("T")

#: The keyword arguments :func:`modify_event` understands.
CHANGES = frozenset(
    {
        "intervals", "priority", "response_required", "targets", "ven_id", "market_context",
        "ramp_up_period", "notification_period", "recovery_period", "start_after", "test_event",
        "vtn_comment", "modification_reason", "event",
    }
)
OPT_TYPES = frozenset(enums.OPT_TYPES)  # rule 16


# ---------------------------------------------------------------------------------------------
# The VTN's own changes (the Python API).


def add_event(ctx: Context, event: dict[str, Any]) -> str:
    """Store a new event; it reaches the VENs it targets on their next poll.

    :param ctx: the VTN context.
    :param event: the stored form, from :func:`build_event` or :func:`normalize_full_event`.
    :returns: the eventID.
    :raises EventError: when the event breaks a rule, does not start at modification_number 0
        (rule 4), its eventID is taken, or it overlaps a non-cancelled event of the same VEN
        in the same market context (the error names that event).
    """
    validate_event(event)
    descriptor = event["event_descriptor"]
    event_id: str = descriptor["event_id"]
    if descriptor["modification_number"] != 0:
        raise EventError(
            f"rule 4: event_descriptor.modification_number is {descriptor['modification_number']}"
            "; a new event starts at 0"
        )
    check_sendable(ctx, event)
    with ctx.store.atomic():
        if ctx.store.get_event(event_id) is not None:
            raise EventError(
                f"event_id {event_id!r} is already taken; eventIDs are unique (use "
                "modify_event or cancel_event to change the existing event)"
            )
        reached = _check_no_overlap(ctx, event)
        ctx.store.put_event(event)
        delivery.index_event(ctx, event)
        delivery.fan_out(ctx, event, None, ctx.now(), reached=reached)
    ctx.emit("event_added", event_id=event_id, modification_number=0)
    return event_id


#: A new event that reaches more VENs than this by group, resource or party is checked against
#: every stored event (one read of them all) rather than through the target index (one read
#: per target of each VEN it reaches): its fan-out reads every VEN anyway.
OVERLAP_INDEX_VENS = 200


def _check_no_overlap(ctx: Context, event: dict[str, Any]) -> list[VenRecord] | None:
    """Refuse a new event that would run at once with another for one VEN in one market
    context (see :func:`~flask_openadr.services.event_targets.overlap`).

    Only the events that may share a VEN with it are read: those the target index lists for
    the VENs it reaches (see :func:`~flask_openadr.services.delivery.indexed_events`). An
    event aimed at every VEN may overlap any event, and one that reaches many VENs by
    membership reads every stored event instead. Inside the VTN-wide transaction of the add,
    so its cost is what every other writer waits for.

    :returns: the VENs the event targets (for its fan-out), or None when it aims at every VEN.
    """
    event_id = event["event_descriptor"]["event_id"]
    reached = delivery.vens_reached(ctx, event)
    if reached is None or len(reached) > OVERLAP_INDEX_VENS:
        others = ctx.store.list_events()
    else:
        ids = delivery.indexed_events(ctx, event, reached)
        stored = ctx.store.get_events(ids)
        others = [stored[other_id] for other_id in ids if other_id in stored]
    known: list[VenRecord] = []

    def vens() -> list[VenRecord]:
        # Two events share a VEN through membership only if the new one reaches it, so the VENs
        # it reaches are enough; read every VEN only when it aims at every VEN (and then only
        # when a test needs them).
        if reached is not None:
            return reached
        if not known:
            known.extend(ctx.store.list_vens())
        return known

    for other in others:
        if other["event_descriptor"]["event_id"] == event_id:
            continue
        if overlap(event, other, vens):
            other_id = other["event_descriptor"]["event_id"]
            raise EventError(
                f"event {event_id!r} overlaps event {other_id!r} "
                "(same VEN, same market_context, active periods that intersect); an event "
                f"replaces another by cancel_event({other_id!r}) first, or change the other "
                "one with modify_event"
            )
    return reached


def modify_event(ctx: Context, event_id: str, **changes: Any) -> dict[str, Any]:
    """Change an event: its modification_number goes up by exactly one (rule 5),
    modification_date_time becomes now, and the VENs it targets get it on their next poll.

    :param ctx: the VTN context.
    :param event_id: the event to change.
    :param changes: see :func:`~flask_openadr.services.event_versions.changed_event`, plus
        ``modification_reason`` (which describes this change only).
    :returns: the new stored event.
    :raises UnknownEvent: for an eventID the store does not hold.
    :raises EventError: for a cancelled event, a call that changes nothing (the version would
        go up without a change), or a result that breaks a rule.
    :raises TypeError: for an argument that is not a change.
    """
    unknown = sorted(set(changes) - CHANGES)
    if unknown:
        raise TypeError(f"modify_event() got unknown changes {unknown}; allowed: {sorted(CHANGES)}")
    now = ctx.now()
    with ctx.store.atomic():
        current = _get(ctx, event_id)
        if is_cancelled(current):
            raise EventError(
                f"event {event_id!r} is cancelled; a cancelled event cannot be modified "
                "(add a new event instead)"
            )
        updated = changed_event(current, changes)
        if same_content(current, updated):
            raise EventError(
                f"no change: the changes given leave event {event_id!r} as it is, so its "
                f"modification_number stays {current['event_descriptor']['modification_number']}"
            )
        updated = next_version(updated, now, _reason(changes))
        validate_event(updated)
        check_sendable(ctx, updated)
        ctx.store.put_event(updated)
        delivery.index_event(ctx, updated, current)
        delivery.fan_out(ctx, updated, current, now)
    ctx.emit(
        "event_modified",
        event_id=event_id,
        modification_number=updated["event_descriptor"]["modification_number"],
    )
    return updated


def check_sendable(ctx: Context, event: dict[str, Any]) -> None:
    """Refuse, once and when it is made, an event version that could never be sent: it is
    encoded as an oadrDistributeEvent the way a poll would send it (the XSD allows no fraction
    of a second in a duration, no control character in text, ...). Caught later, such an
    event would fail every poll of the VENs it targets.

    :raises EventError: naming the field, the value and the rule the message breaks.
    """
    ven_ids = (event.get("target") or {}).get("ven_ids") or ["VEN"]
    payload = {"response": _ok(""), "request_id": "0", "vtn_id": ctx.settings.vtn_id,
               "events": [render_event(event, ven_ids[0], ctx.now())]}
    try:
        ctx.check_payload("oadrDistributeEvent", payload)
    except ValueError as error:
        raise EventError(
            f"event {event['event_descriptor']['event_id']!r} cannot be sent, because every "
            f"oadrDistributeEvent must be valid against the OpenADR 2.0b schema: {error}"
        ) from None


def _reason(changes: Mapping[str, Any]) -> str | None:
    if changes.get("modification_reason") is not None:
        reason: str = changes["modification_reason"]
        return reason
    replacement = changes.get("event")
    if isinstance(replacement, Mapping):
        return (replacement.get("event_descriptor") or {}).get("modification_reason")
    return None


def cancel_event(
    ctx: Context, event_id: str, *, modification_reason: str | None = None,
    response_required: str | None = None,
) -> dict[str, Any]:
    """Cancel an event: it is stored as ``cancelled`` (sent with eventStatus "cancelled"),
    its modification_number up by one (rule 5).

    The cancellation is sent to every VEN that knew the event, until it answers it (see
    docs/events.rst, "Delivery"). Cancelling a cancelled event changes nothing and returns it
    as it is.

    :param ctx: the VTN context.
    :param event_id: the event to cancel.
    :param modification_reason: why, if the VENs should be told.
    :param response_required: ``"always"`` or ``"never"``: set in the same modification step
        as the cancellation ([HAR]: the certification harness has the operator cancel an event
        and stop asking for answers with one modificationNumber step). None keeps it.
    :returns: the stored, cancelled event.
    :raises UnknownEvent: for an eventID the store does not hold.
    """
    now = ctx.now()
    with ctx.store.atomic():
        event = _get(ctx, event_id)
        if is_cancelled(event):
            return event
        event["cancelled"] = True
        if response_required is not None:
            event["response_required"] = response_required  # the encoding below checks it
        event = next_version(event, now, modification_reason)
        check_sendable(ctx, event)
        ctx.store.put_event(event)
        delivery.fan_out(ctx, event, None, now)
    ctx.emit(
        "event_cancelled",
        event_id=event_id,
        modification_number=event["event_descriptor"]["modification_number"],
    )
    return event


def event_responses(ctx: Context, event_id: str) -> list[EventResponseRecord]:
    """The VENs' opt answers to an event, one per (ven_id, modification_number).

    :param ctx: the VTN context.
    :param event_id: the event; answers stay readable after the event is deleted.
    """
    return ctx.store.list_event_responses(event_id)


def _get(ctx: Context, event_id: str) -> dict[str, Any]:
    event = ctx.store.get_event(event_id)
    if event is None:
        raise UnknownEvent(event_id)
    return event


# ---------------------------------------------------------------------------------------------
# Distribution: which events a VEN gets, and the oadrDistributeEvent that carries them.


def refresh_ven(ctx: Context, ven: VenRecord, now: datetime) -> None:
    """After a VEN's groups, resources or parties changed: mark the events it joins or leaves
    (see :func:`~flask_openadr.services.delivery.refresh_ven`); inside the transaction that
    stored the VEN record."""
    delivery.refresh_ven(ctx, ven, now)


def events_for_ven(ctx: Context, ven: VenRecord, now: datetime) -> list[dict[str, Any]]:
    """The stored events the next oadrDistributeEvent to ``ven`` carries, in sending order,
    each as the version the VEN is sent (see :func:`~flask_openadr.services.delivery.plan`).

    :param ctx: the VTN context.
    :param ven: the VEN record.
    :param now: the instant of sending.
    """
    record = delivery.load(ctx, ven["ven_id"])
    stored = delivery.events_of(ctx, record)
    return [p.event for p in delivery.plan(ctx, ven, stored, record["events"], now).planned]


@dataclass
class Pending:
    """A distribution worked out and due (see :func:`pending_distribution`): the VEN record,
    its delivery record as read, the stored events it names and the plan, so that sending it
    (:func:`distribute_pending`) reads none of them again."""

    ven: VenRecord
    record: dict[str, Any]
    stored: list[dict[str, Any]]
    plan: delivery.Plan


def pending_distribution(ctx: Context, ven: VenRecord, now: datetime, *,
                         ven_is_current: bool = False,
                         delivered: Mapping[str, Any] | None = None) -> Pending | None:
    """The oadrDistributeEvent ``ven`` should be sent now, worked out but not recorded, or
    None when none is due: one of its events has a version it does not hold (new, changed,
    cancelled or withdrawn), or one it must answer and has not, and was last sent at least
    :func:`~flask_openadr.services.outbox.redelivery_after` ago. A status change alone (far to
    active, active to completed) is no reason: the VEN derives status from the times it has.

    A VEN that no change has marked since its last distribution is answered from its delivery
    record alone (see :mod:`~flask_openadr.services.delivery`). Call it inside the VEN's
    transaction, and :func:`distribute_pending` in the same one to send what it found.

    :param ctx: the VTN context.
    :param ven: the VEN record.
    :param now: the instant of the check.
    :param ven_is_current: ``ven`` was read inside the caller's transaction, so it is not
        read again.
    :param delivered: the VEN's stored delivery map when the caller read it inside its
        transaction, so it is not read again.
    """
    record = delivery.load(ctx, ven["ven_id"]) if delivered is None \
        else delivery.from_stored(delivered)
    if not delivery.is_due(record, now):
        return None
    ven = ven if ven_is_current else _current_ven(ctx, ven)
    stored = delivery.events_of(ctx, record)
    plan = delivery.plan(ctx, ven, stored, record["events"], now, sent_at=record["sent_at"])
    if plan.due:
        return Pending(ven, record, stored, plan)
    # Marked, but nothing to send (the change was undone before the VEN polled): put the
    # record right, so that the next poll reads it alone again.
    delivery.after_sending(ctx, ven, record, stored, [], now)
    return None


def distribution_pending(ctx: Context, ven: VenRecord, now: datetime) -> bool:
    """Whether ``ven`` should be sent an oadrDistributeEvent now (see
    :func:`pending_distribution`).

    :param ctx: the VTN context.
    :param ven: the VEN record.
    :param now: the instant of the check.
    """
    return pending_distribution(ctx, ven, now) is not None


def distribute_pending(ctx: Context, pending: Pending, now: datetime) -> dict[str, Any]:
    """The oadrDistributeEvent ``pending`` worked out, recorded as delivered at ``now`` (the
    same instant it was worked out at), in the transaction :func:`pending_distribution` ran
    in; the reply of a poll or a push (no requestID of the VEN's to echo, no reply limit)."""
    planned = pending.plan.planned
    delivery.after_sending(ctx, pending.ven, pending.record, pending.stored, planned, now)
    return _payload(ctx, pending.ven, now, [p.event for p in planned],
                    request_id=None, response=None)


def distribute_event_payload(
    ctx: Context,
    ven: VenRecord,
    now: datetime,
    *,
    request_id: str | None = None,
    response: EiResponse | None = None,
    reply_limit: int | None = None,
    completed: bool = False,
) -> dict[str, Any]:
    """The oadrDistributeEvent for ``ven`` at ``now``, recorded as delivered.

    Call it inside ``ctx.store.atomic()`` together with the encoding of the reply (see
    :meth:`~flask_openadr.services.context.Context.reply`), so that nothing is recorded as
    delivered unless its reply was built.

    :param ctx: the VTN context.
    :param ven: the VEN record.
    :param now: the instant of sending: createdDateTime, eventStatus and currentValue all
        derive from it.
    :param request_id: the payload's requestID; a new one when None or empty (the harness
        wants it non-empty).
    :param response: the eiResponse to include. None gives, for a pull VEN (the default when
        the record does not say), 200 with an empty requestID (the poll-reply form), and for a
        push VEN no eiResponse.
    :param reply_limit: the VEN's replyLimit: at most this many events, trimmed from the end;
        0 means none ([HAR]: the certification harness asks for 0 and expects no event). None
        means no limit.
    :param completed: also carry the events that ended at the version the VEN holds (the
        answer to oadrRequestEvent shows them, with status completed, until they are removed).
    """
    with ctx.store.atomic(ven["ven_id"]):
        record = delivery.load(ctx, ven["ven_id"])
        ven = _current_ven(ctx, ven) if delivery.is_due(record, now) else ven
        stored = delivery.events_of(ctx, record)
        planned = delivery.plan(ctx, ven, stored, record["events"], now,
                                sent_at=record["sent_at"], completed=completed).planned
        planned = _limited(planned, reply_limit)
        delivery.after_sending(ctx, ven, record, stored, planned, now)
        return _payload(ctx, ven, now, [p.event for p in planned],
                        request_id=request_id, response=response)


def _limited(items: list[T], reply_limit: int | None) -> list[T]:
    """The first ``reply_limit`` items (all of them for None): the one replyLimit rule."""
    return items if reply_limit is None else items[:max(reply_limit, 0)]


def _current_ven(ctx: Context, ven: VenRecord) -> VenRecord:
    # The caller read the VEN record before its transaction; a group change committed since
    # would be planned with the old groups and its withdrawal lost, so read it again.
    return ctx.store.get_ven(ven["ven_id"]) or ven


def _payload(
    ctx: Context,
    ven: VenRecord,
    now: datetime,
    events: list[dict[str, Any]],
    *,
    request_id: str | None,
    response: EiResponse | None,
) -> dict[str, Any]:
    payload: dict[str, Any] = {}
    if response is None and ven.get("http_pull_model", True):
        # The harness requires an eiResponse in pull mode [HAR].
        response = _ok("")
    if response is not None:
        payload["response"] = response
    payload["request_id"] = request_id or ctx.new_id()
    payload["vtn_id"] = ctx.settings.vtn_id
    payload["events"] = [render_event(event, ven["ven_id"], now) for event in events]
    return payload


def _ok(request_id: str) -> EiResponse:
    return ei_response(request_id, 200)


# ---------------------------------------------------------------------------------------------
# Messages from VENs.


def request_event(ctx: Context, ven: VenRecord, payload: dict[str, Any]) -> Reply:
    """Answer oadrRequestEvent with oadrDistributeEvent (200, echoing the requestID).

    A user ``on_request_event(ven_id)`` handler is asked first: a list it returns (stored or
    full event dicts, or convenience-form dicts as :func:`build_event` takes them) is sent
    instead of the built-in set, in the protocol's order. Anything else sends the built-in set.

    :param ctx: the VTN context.
    :param ven: the authenticated VEN record.
    :param payload: ``{"request_id", "ven_id", "reply_limit"?}``.
    """
    echo = _ok(payload.get("request_id", ""))
    reply_limit = payload.get("reply_limit")
    handler = ctx.handler("on_request_event")
    chosen = handler(ven["ven_id"]) if handler is not None else None
    now = ctx.now()
    if not isinstance(chosen, list):
        with ctx.store.atomic(ven["ven_id"]):
            reply = distribute_event_payload(ctx, ven, now, response=echo,
                                             reply_limit=reply_limit, completed=True)
            # Built in the same transaction: a reply that cannot be encoded records nothing.
            return ctx.reply(reply_name("oadrRequestEvent"), reply)
    # Events a handler makes up are sent as they are and not recorded as delivered: the
    # built-in distribution keeps its own account of the stored events.
    events = order_events([_handler_event(ctx, item) for item in chosen], now)
    events = _limited(events, reply_limit)
    return ctx.reply(reply_name("oadrRequestEvent"),
                     _payload(ctx, ven, now, events, request_id=None, response=echo))


def _handler_event(ctx: Context, item: Any) -> dict[str, Any]:
    if not isinstance(item, Mapping):
        raise EventError(f"on_request_event returned {item!r} in its list; each must be a dict")
    if "event_descriptor" in item:
        event = stored_form(item)
        validate_event(event)
    else:
        fields = dict(item)
        fields.setdefault("event_id", ctx.new_id())
        fields.setdefault("market_context", ctx.settings.market_context)
        event = build_event(**fields)
    check_sendable(ctx, event)  # the XSD's types, as for a stored event
    return event


def created_event(ctx: Context, ven: VenRecord, payload: dict[str, Any]) -> Reply:
    """Record a VEN's oadrCreatedEvent (its optIn/optOut answers) and reply oadrResponse 200.

    Every answer is checked before anything is written: an eventID the store does not hold,
    or a modification_number newer than the event's, is answered 452 (a VEN cannot have
    seen that version). Answers to older versions are kept: rule 17 allows a late optOut.
    One answer is kept per (ven_id, event_id, modification_number); a later one replaces it.
    An event-level opt (oadrCreateOpt naming the event) decides over any oadrCreatedEvent: the
    answer is then recorded with the opt's ``opt_type`` and its ``opt_id`` (see
    :func:`~flask_openadr.services.opt.decided_by`).
    The ``on_created_event({"ven_id", "event_responses"})`` handler sees the checked answers
    (as received) before they are written, outside the store's transaction (user code must
    not hold the write lock), so a handler that raises a Rejection leaves the store unchanged.

    :param ctx: the VTN context.
    :param ven: the authenticated VEN record.
    :param payload: ``{"response", "event_responses", "ven_id"}``; each event response holds
        ``response_code``, ``response_description``?, ``request_id``, ``qualified_event_id``
        (``event_id``, ``modification_number``) and ``opt_type``.
    :raises InvalidID: 452, for an unknown event, an event that neither targets the VEN nor
        was sent to it, or a future version.
    :raises InvalidData: 454, for an answer missing a field or with an unknown opt type.
    """
    ven_id = ven["ven_id"]
    now = ctx.now()
    answers = payload.get("event_responses") or []
    records = _distinct([_response_record(ven_id, raw, now, index)
                         for index, raw in enumerate(answers)])
    _check_answers(ctx, ven, records)
    handler = ctx.handler("on_created_event")
    if handler is not None:
        # The answers as the VEN sent them (qualified_event_id nested), after the checks.
        handler({"ven_id": ven_id, "event_responses": copy.deepcopy(answers)})
    with ctx.store.atomic(ven_id):
        deciders = opt.decided_by_many(ctx, ven_id, [r["event_id"] for r in records])
        for record in records:
            deciding = deciders.get(record["event_id"])
            if deciding is not None:
                # Answered 200 and counted as an acknowledgement, but the VEN's opt state for
                # the event stays the event-level opt's.
                record["opt_type"] = deciding["opt_type"]
                record["opt_id"] = deciding["opt_id"]
            ctx.store.put_event_response(record)
        delivery.acknowledge(ctx, ven_id, [(r["event_id"], r["modification_number"])
                                           for r in records])
    for record in records:
        ctx.emit(
            "event_response_received",
            ven_id=ven_id,
            event_id=record["event_id"],
            modification_number=record["modification_number"],
            opt_type=record["opt_type"],
        )
    return reply_name("oadrCreatedEvent"), {"response": _ok(request_id_of(payload)),
                                            "ven_id": ven_id}


def _response_record(
    ven_id: str, raw: Mapping[str, Any], now: datetime, index: int
) -> EventResponseRecord:
    where = f"event_responses[{index}]"
    try:
        # The codec nests the eventID as the schema does (qualifiedEventID); flat is accepted.
        qualified = raw.get("qualified_event_id", raw)
        record: EventResponseRecord = {
            "ven_id": ven_id,
            "event_id": str(qualified["event_id"]),
            "modification_number": int(qualified["modification_number"]),
            "opt_type": raw["opt_type"],
            "response_code": int(raw["response_code"]),
            "response_description": raw.get("response_description"),
            "request_id": raw.get("request_id") or "",
            "received_at": now,
        }
    except (AttributeError, KeyError, TypeError, ValueError) as error:
        raise InvalidData(description=f"{where} is incomplete or malformed ({error!r})") from None
    if record["opt_type"] not in OPT_TYPES:
        raise InvalidData(
            description=f"{where}.opt_type is {record['opt_type']!r}; it must be optIn or optOut"
        )
    return record


def _distinct(records: list[EventResponseRecord]) -> list[EventResponseRecord]:
    """One answer per (event_id, modification_number), the last one the VEN sent (the store
    keeps one per key and a later one replaces it, so the earlier ones would only cost writes),
    in the order each key first appears."""
    last: dict[tuple[str, int], EventResponseRecord] = {}
    for record in records:
        last[(record["event_id"], record["modification_number"])] = record
    return list(last.values())


def _check_answers(ctx: Context, ven: VenRecord, records: list[EventResponseRecord]) -> None:
    entries = delivery.load(ctx, ven["ven_id"])["events"] if records else {}
    # One read for every event answered, however many answers name it (issue 10: one read
    # per answer let a 1 MiB message cost thousands of round trips).
    events = ctx.store.get_events([r["event_id"] for r in records]) if records else {}
    for record in records:
        event = events.get(record["event_id"])
        if event is None:
            raise InvalidID(description=f"eventID {record['event_id']!r} is not known to this VTN")
        if record["event_id"] not in entries and not targets_ven(event, ven):
            # Neither aimed at the VEN nor ever sent to it: recording the answer would put it
            # under an event of other VENs.
            raise InvalidID(description=f"eventID {record['event_id']!r} is not an event of "
                            f"venID {ven['ven_id']!r}; answer only the events it was sent")
        current = event["event_descriptor"]["modification_number"]
        sent = delivery.held(entries.get(record["event_id"]))
        if record["modification_number"] > current and (
            sent is None or record["modification_number"] != sent.modification_number
        ):
            # A withdrawal (see version_for_ven) may carry one more than the event's number.
            raise InvalidID(
                description=f"eventID {record['event_id']!r} has modificationNumber {current}; "
                f"{record['modification_number']} was never sent"
            )
