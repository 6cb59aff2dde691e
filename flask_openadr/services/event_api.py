"""What the Python API asks of events beyond the protocol: its two input forms of a new event,
and listings with each event's status as it is now and the VENs' answers."""
from __future__ import annotations

from datetime import datetime
from typing import Any, Iterable, Mapping

from ..errors import UnknownEvent
from ..protocol import is_registered
from ..store.base import VenRecord
from . import events
from .context import Context

__all__ = ["OPEN_STATUSES", "answers", "answers_by_event", "events_for_ven", "new_event",
           "open_events_by_ven", "stored_event", "with_status"]

#: The event statuses in which an event still asks something of its VENs.
OPEN_STATUSES = ("far", "near", "active")


def new_event(ctx: Context, ven_id: str | None, event: dict[str, Any] | None,
              fields: dict[str, Any]) -> dict[str, Any]:
    """The event to store for ``vtn.add_event``: from a full event dict (``event``), or from
    the convenience form (``ven_id`` and ``fields``), with the VTN's market context and a new
    eventID where they are not given.

    :raises TypeError: ``event`` given together with other arguments.
    :raises flask_openadr.errors.EventError: the event breaks a conformance rule.
    """
    if event is not None:
        if ven_id is not None or fields:
            raise TypeError("add_event(event=...) takes no other arguments")
        return events.normalize_full_event(
            event, event_id_factory=ctx.new_id, default_market_context=ctx.settings.market_context
        )
    fields = dict(fields)
    fields.setdefault("market_context", ctx.settings.market_context)
    fields.setdefault("event_id", ctx.new_id())
    return events.build_event(ven_id=ven_id, **fields)


def with_status(event: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    """A copy of a stored event whose ``event_status`` is the one at ``now``."""
    descriptor = dict(event["event_descriptor"], event_status=events.event_status(event, now))
    return dict(event, event_descriptor=descriptor)


def stored_event(ctx: Context, event_id: str) -> dict[str, Any]:
    """The stored event ``event_id``.

    :raises flask_openadr.errors.UnknownEvent: for an eventID the store does not hold.
    """
    event = ctx.store.get_event(event_id)
    if event is None:
        raise UnknownEvent(event_id)
    return event


def events_for_ven(ctx: Context, ven_id: str) -> list[dict[str, Any]]:
    """The stored events aimed at one VEN, each with its status now, in start order.

    :raises LookupError: for a venID the VTN does not know.
    """
    ven = ctx.store.get_ven(ven_id)
    if ven is None:
        raise LookupError(f"VEN {ven_id!r} is not known to this VTN")
    now = ctx.now()
    chosen = [with_status(event, now) for event in ctx.store.list_events()
              if events.targets_ven(event, ven)]
    return sorted(chosen, key=lambda e: (e["active_period"]["dtstart"],
                                         e["event_descriptor"]["event_id"]))


def open_events_by_ven(ctx: Context) -> dict[str, list[str]]:
    """For every VEN, the eventIDs of its open events (:data:`OPEN_STATUSES` now)."""
    now = ctx.now()
    open_events = [event for event in ctx.store.list_events()
                   if events.event_status(event, now) in OPEN_STATUSES]
    return {ven["ven_id"]: [e["event_descriptor"]["event_id"] for e in open_events
                            if events.targets_ven(e, ven)]
            for ven in ctx.store.list_vens()}


def answers(ctx: Context, event: Mapping[str, Any],
            vens: Iterable[VenRecord]) -> dict[str, dict[str, Any] | None]:
    """venID -> the VEN's latest answer to ``event`` (highest modification number), or None for
    a registered VEN among ``vens`` the event is aimed at that has not answered yet."""
    latest_of: dict[str, dict[str, Any] | None] = {
        ven["ven_id"]: None for ven in vens
        if is_registered(ven) and events.targets_ven(event, ven)
    }
    for record in events.event_responses(ctx, event["event_descriptor"]["event_id"]):
        latest = latest_of.get(record["ven_id"])
        if latest is None or record["modification_number"] >= latest["modification_number"]:
            latest_of[record["ven_id"]] = dict(record)
    return latest_of


def answers_by_event(ctx: Context) -> dict[str, dict[str, dict[str, Any] | None]]:
    """:func:`answers` of every stored event, reading the VENs once."""
    vens = ctx.store.list_vens()
    return {event["event_descriptor"]["event_id"]: answers(ctx, event, vens)
            for event in ctx.store.list_events()}
