"""Who gets an event, in which order and in which shape: targets, overlaps, the harness's
order and the oadrEvent rendered for one VEN."""
from __future__ import annotations

import math
from datetime import datetime
from typing import Any, Callable, Iterable, Mapping

from ..errors import EventError
from ..protocol import window_end
from .event_state import current_value, event_status, is_cancelled, time_status

__all__ = [
    "TARGET_KEYS",
    "VEN_SELECTING_KEYS",
    "check_one_ven_id",
    "order_events",
    "overlap",
    "render_event",
    "signal_for",
    "targets_ven",
]

#: The eiTarget members an event dict carries, each a list (a missing key means []).
TARGET_KEYS = (
    "ven_ids", "group_ids", "resource_ids", "party_ids", "group_names", "end_device_assets",
)
#: The members that choose VENs. end_device_assets names device classes inside a VEN, so a
#: target holding only device classes still reaches every VEN.
VEN_SELECTING_KEYS = ("ven_ids", "group_ids", "resource_ids", "party_ids", "group_names")


def targets_ven(event: Mapping[str, Any], ven: Mapping[str, Any]) -> bool:
    """Whether ``event`` is aimed at ``ven``.

    A report-only VEN gets no events (protocol notes 5.1 step 2: it registered as a reporting
    device). Otherwise an event whose target names no venID, group, resource, party or group
    name goes to every VEN; else it needs one match: the venID, or a group, resource, party or
    group name the VEN record lists. Device classes (end_device_assets) do not choose VENs.

    :param event: the stored event.
    :param ven: the VEN record (``ven_id``, ``report_only``, ``group_ids``, ``resource_ids``,
        ``party_ids`` and, optionally, ``group_names``).
    """
    if ven.get("report_only"):
        return False
    target = event.get("target") or {}
    if not any(target.get(key) for key in VEN_SELECTING_KEYS):
        return True
    if ven["ven_id"] in target.get("ven_ids", []):
        return True
    return any(
        set(target.get(key, [])) & set(ven.get(key) or [])
        for key in ("group_ids", "resource_ids", "party_ids", "group_names")
    )


def overlap(event: Mapping[str, Any], other: Mapping[str, Any],
            vens: Callable[[], Iterable[Mapping[str, Any]]]) -> bool:
    """Whether ``event`` and ``other`` would run at once for one VEN in one market context,
    which a VTN must not do ([HAR]: the certification harness expects a new event that
    overlaps another of the same VEN and program to be refused).

    They overlap when neither is cancelled, their market contexts are equal, their active
    periods intersect (a duration of 0 runs open-ended), and they share a VEN: either aims at
    every VEN, they name the same venID, or one of ``vens`` is targeted by both.

    :param event: the stored event.
    :param other: another stored event.
    :param vens: gives the VEN records to test membership targets (groups, resources, ...)
        with; called only when the cheaper tests leave the question open.
    """
    if is_cancelled(event) or is_cancelled(other):
        return False
    if (event["event_descriptor"].get("market_context")
            != other["event_descriptor"].get("market_context")):
        return False
    if not _periods_meet(event["active_period"], other["active_period"]):
        return False
    targets = [e.get("target") or {} for e in (event, other)]
    if any(not any(t.get(key) for key in VEN_SELECTING_KEYS) for t in targets):
        return True
    if set(targets[0].get("ven_ids", [])) & set(targets[1].get("ven_ids", [])):
        return True
    return any(targets_ven(event, ven) and targets_ven(other, ven)
               for ven in vens() if not ven.get("report_only"))


def _periods_meet(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    a_end, b_end = (window_end(p["dtstart"], p["duration"]) for p in (a, b))
    return ((b_end is None or a["dtstart"] < b_end)
            and (a_end is None or b["dtstart"] < a_end))


def order_events(events: Iterable[Mapping[str, Any]], now: datetime) -> list[Any]:
    """The events in the harness's order (protocol notes 5.2): active events by priority (1
    first; 0 or absent means "no priority" and comes after every positive priority), then by
    dtstart; then far and near events by dtstart; then completed ones. A cancelled event
    sorts by the status its times imply. Ties fall back to the eventID, so every store gives
    the same order.

    :param events: stored or rendered events.
    :param now: the instant of sending.
    """
    return sorted(events, key=lambda event: _order_key(event, now))


def _order_key(event: Mapping[str, Any], now: datetime) -> tuple[Any, ...]:
    status = time_status(event["active_period"], now)
    start = event["active_period"]["dtstart"]
    event_id = event["event_descriptor"]["event_id"]
    if status == "active":
        priority = event["event_descriptor"].get("priority") or 0
        return (0, priority if priority > 0 else math.inf, start, event_id)
    return (1 if status in ("far", "near") else 2, 0, start, event_id)


def render_event(event: Mapping[str, Any], ven_id: str, now: datetime) -> dict[str, Any]:
    """The event as sent to one VEN at ``now``: created_date_time ``now``, the event_status
    and each signal's current_value derived from that same instant (omitted when None), and
    every target naming at most the receiving VEN.

    :param event: the stored event; not modified.
    :param ven_id: the receiving VEN.
    :param now: the instant of sending (one clock reading for the whole payload).
    """
    # Shallow copies of what is changed here, and nothing else: the intervals and the active
    # period are shared with ``event``, which is never written through them (the encoder only
    # reads), so rendering costs no deep copy of every interval.
    rendered = dict(event)
    # Cancellation travels as the derived eventStatus; the stored field has no XML element.
    rendered.pop("cancelled", None)
    descriptor = rendered["event_descriptor"] = dict(rendered["event_descriptor"])
    descriptor["created_date_time"] = now
    descriptor["event_status"] = event_status(event, now)
    # A signal aimed only at other VENs is not this VEN's: narrowed, its target would be
    # empty, which means every VEN.
    rendered["event_signals"] = [dict(signal) for signal in rendered["event_signals"]
                                 if signal_for(signal, ven_id)]
    for signal in rendered["event_signals"]:
        signal.pop("current_value", None)
        value = current_value(event, signal, now)
        if value is not None:
            signal["current_value"] = value
        if "target" in signal:
            signal["target"] = _narrowed(signal["target"], ven_id)
    rendered["target"] = _narrowed(rendered.get("target") or {}, ven_id)
    check_one_ven_id(rendered)
    return rendered


def signal_for(signal: Mapping[str, Any], ven_id: str | None) -> bool:
    """Whether a signal may be sent to ``ven_id`` (None: a VEN not named by venID): it has no
    target of its own, or its target names the VEN, or selects VENs by membership (which the
    event's target already decided)."""
    target = signal.get("target") or {}
    if not target.get("ven_ids") or (ven_id is not None and ven_id in target["ven_ids"]):
        return True
    return any(target.get(key) for key in VEN_SELECTING_KEYS if key != "ven_ids")


def _narrowed(target: Mapping[str, Any], ven_id: str) -> dict[str, Any]:
    # Other VENs named beside this one are none of its business, and the harness allows one.
    # (Each member is a list of strings: copying the lists is copying the target.)
    narrowed = {key: list(value) if isinstance(value, list) else value
                for key, value in target.items()}
    narrowed["ven_ids"] = [ven_id] if ven_id in target.get("ven_ids", []) else []
    return narrowed


def check_one_ven_id(event: Mapping[str, Any]) -> None:
    """What is sent names at most one venID per eiTarget [HAR]."""
    targets = [("target", event["target"])] + [
        (f"event_signals[{index}].target", signal["target"])
        for index, signal in enumerate(event["event_signals"])
        if "target" in signal
    ]
    for path, target in targets:
        ven_ids = target.get("ven_ids", [])
        if len(ven_ids) > 1:
            raise EventError(
                f"{path}.ven_ids is {ven_ids!r}; an eiTarget sent to a VEN may name at most one "
                "venID (give each VEN its own copy, or target by group or resource)"
            )
