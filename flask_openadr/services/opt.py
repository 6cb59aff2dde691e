"""EiOpt: the VENs' availability schedules and event-level opts, stored by optID (notes 5.4).

Each opt is a store record of kind ``opt`` keyed by (venID, optID): optIDs are minted by the VEN,
so two VENs may use the same one without touching each other's schedules.
"""
from __future__ import annotations

import copy
from datetime import datetime, timedelta
from typing import Any, Mapping

from ..errors import ComplianceError, InvalidData, InvalidID
from ..protocol import is_aware, is_open_ended, reply_name
from ..store.base import EventResponseRecord, VenRecord
from . import bounds
from .context import Context
from .event_targets import targets_ven
from .replies import response

OPT = "opt"
#: Record kinds this module keeps per VEN (cleared when a registration ends).
RECORD_KINDS = (OPT,)
_WINDOW_KEYS = frozenset({"dtstart", "duration"})


def create_opt(ctx: Context, ven: VenRecord, payload: dict[str, Any]
               ) -> tuple[str, dict[str, Any]]:
    """oadrCreateOpt: store (or, for a known optID, replace) an opt schedule or event-level opt.

    With a qualifiedEventID the event and its current modificationNumber must match (452) and
    neither vavailability nor marketContext may be present (459); without one, vavailability
    is required and its windows hold only dtstart and duration (459). ``on_create_opt(payload)``
    may refuse with a Rejection before anything is stored.
    """
    ven_id = ven["ven_id"]
    qualified = payload.get("qualified_event_id")
    if qualified is not None:
        for key, element in (("vavailability", "xcal:vavailability"),
                             ("market_context", "emix:marketContext")):
            if key in payload:
                raise ComplianceError(description=f"an event-level opt (qualifiedEventID "
                                      f"{qualified['event_id']!r}) must not carry {element}")
        _check_event(ctx, ven, qualified)
    else:
        if "vavailability" not in payload:
            raise ComplianceError(description="an opt without qualifiedEventID is a schedule and "
                                  "needs xcal:vavailability")
        for position, window in enumerate(payload["vavailability"]["available"]):
            extra = set(window) - _WINDOW_KEYS
            if extra:
                raise ComplianceError(description=f"vavailability window {position} carries "
                                      f"{sorted(extra)}; availability windows hold only dtstart "
                                      "and duration")
            if window["duration"] < timedelta(0):
                raise InvalidData(description=f"vavailability window {position} has a negative "
                                  f"duration {window['duration']}; send PT0S or more")
            # A window the VTN could not compare with later (vtn.opted_out) is refused now.
            bounds.end_of(window["dtstart"], window["duration"],
                          f"vavailability window {position}")
    handler = ctx.handler("on_create_opt")
    if handler is not None:
        handler(copy.deepcopy(payload))
    now = ctx.now()
    record = _record(payload, ven_id, now)
    with ctx.store.atomic(ven_id):
        ctx.store.put_record(OPT, ven_id, record["opt_id"], record)
        if qualified is not None:
            # The VEN's opt state for the event is now this opt's (see decided_by), and
            # vtn.event_responses() shows it with the optID.
            ctx.store.put_event_response(_event_response(record, now))
    return reply_name("oadrCreateOpt"), {"response": response(payload["request_id"]),
                              "opt_id": payload["opt_id"]}


def _check_event(ctx: Context, ven: VenRecord, qualified: Mapping[str, Any]) -> None:
    event_id = qualified["event_id"]
    event = ctx.store.get_event(event_id)
    if event is None or not targets_ven(event, ven):
        raise InvalidID(description=f"eventID {event_id!r} names no event of this VEN")
    current = event["event_descriptor"]["modification_number"]
    if qualified["modification_number"] != current:
        raise InvalidID(description=f"event {event_id!r} is at modificationNumber {current}, "
                        f"not {qualified['modification_number']}")


def decided_by(ctx: Context, ven_id: str, event_id: str) -> dict[str, Any] | None:
    """The event-level opt (oadrCreateOpt with a qualifiedEventID) that decides the VEN's opt
    state for ``event_id``, the latest received; None when the VEN has none for it.

    An event-level opt beats any oadrCreatedEvent for that event, earlier or later ([HAR]: the
    certification harness opts in with oadrCreateOpt, then sends oadrCreatedEvent optOut and
    expects the VEN still opted in), until the VEN cancels the opt with oadrCancelOpt.
    """
    return decided_by_many(ctx, ven_id, [event_id]).get(event_id)


def decided_by_many(ctx: Context, ven_id: str, event_ids: list[str]) -> dict[str, dict[str, Any]]:
    """:func:`decided_by` for each of ``event_ids`` that has a deciding opt, by eventID, from
    one read of the VEN's opts (a message answering many events must not read them per event)."""
    wanted = set(event_ids)
    deciding: dict[str, dict[str, Any]] = {}
    for record in ctx.store.list_records(OPT, ven_id):
        event_id = (record.get("qualified_event_id") or {}).get("event_id")
        if event_id in wanted and (event_id not in deciding
                                   or record["received_at"] > deciding[event_id]["received_at"]):
            deciding[event_id] = record
    return deciding


def _event_response(record: Mapping[str, Any], now: datetime) -> EventResponseRecord:
    """The event response an event-level opt amounts to, naming the opt by ``opt_id``."""
    qualified = record["qualified_event_id"]
    return {"ven_id": record["ven_id"], "event_id": qualified["event_id"],
            "modification_number": qualified["modification_number"],
            "opt_type": record["opt_type"], "response_code": 200,
            "response_description": None, "request_id": record["request_id"],
            "received_at": now, "opt_id": record["opt_id"]}


def _record(payload: Mapping[str, Any], ven_id: str, now: datetime) -> dict[str, Any]:
    """The stored form of an opt: the payload's fields, the windows as ``availability`` and the
    time it was received."""
    record: dict[str, Any] = {
        "opt_id": payload["opt_id"],
        "ven_id": ven_id,
        "opt_type": payload["opt_type"],
        "opt_reason": payload["opt_reason"],
        "market_context": payload.get("market_context"),
        "qualified_event_id": copy.deepcopy(payload.get("qualified_event_id")),
        "availability": [{"dtstart": w["dtstart"], "duration": w["duration"]}
                         for w in (payload.get("vavailability") or {}).get("available", [])],
        "target": copy.deepcopy(payload.get("target")),
        "device_class": copy.deepcopy(payload.get("device_class")),
        "created_date_time": payload["created_date_time"],
        "request_id": payload["request_id"],
        "received_at": now,
    }
    return record


def cancel_opt(ctx: Context, ven: VenRecord, payload: dict[str, Any]
               ) -> tuple[str, dict[str, Any]]:
    """oadrCancelOpt: remove the VEN's opt; 452 for an optID this VEN does not have (unknown,
    already cancelled, or another VEN's). ``on_cancel_opt`` sees the payload plus the stored
    ``opt`` and may refuse."""
    ven_id = ven["ven_id"]
    opt_id = payload["opt_id"]
    record = ctx.store.get_record(OPT, ven_id, opt_id)
    if record is None:
        raise InvalidID(description=f"optID {opt_id!r} names no opt of this VEN")
    handler = ctx.handler("on_cancel_opt")
    if handler is not None:
        handler(dict(copy.deepcopy(payload), opt=record))
    with ctx.store.atomic(ven_id):
        ctx.store.delete_record(OPT, ven_id, opt_id)
    return reply_name("oadrCancelOpt"), {"response": response(payload["request_id"]),
                                         "opt_id": opt_id}


def _overlaps(window: Mapping[str, Any], start: datetime, end: datetime) -> bool:
    """A window overlaps [start, end); a duration of 0 is open-ended, as for events."""
    begins: datetime = window["dtstart"]
    if is_open_ended(window["duration"]):
        return begins < end
    return begins < end and start < bounds.clamped_end(begins, window["duration"])


def opted_out(ctx: Context, ven_id: str, start: datetime, end: datetime, *,
              market_context: str | None = None, event_id: str | None = None
              ) -> list[dict[str, Any]]:
    """The VEN's optOut records that concern [start, end): schedules with a window overlapping it
    (and, when ``market_context`` is given, made for that program or for none), plus, when
    ``event_id`` is given, event-level optOuts of that event. Empty when the VEN has not opted out.
    """
    for name, value in (("start", start), ("end", end)):
        if not is_aware(value):
            raise ValueError(f"{name} must be an aware datetime, not {value!r}")
    if end <= start:
        raise ValueError(f"end {end} must be after start {start}")
    found = []
    for record in ctx.store.list_records(OPT, ven_id):
        if record["opt_type"] != "optOut":
            continue
        qualified = record.get("qualified_event_id")
        if qualified is not None:
            if event_id is not None and qualified["event_id"] == event_id:
                found.append(record)
            continue
        program = record.get("market_context")
        if market_context is not None and program not in (None, market_context):
            continue
        if any(_overlaps(window, start, end) for window in record["availability"]):
            found.append(record)
    return found
