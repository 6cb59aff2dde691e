"""Event status and currentValue: what a VEN is told of an event at the moment it is sent,
derived from the stored event and that instant, never stored."""
from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Mapping

from ..protocol import is_open_ended, window_end

__all__ = [
    "SIMPLE_SIGNAL_NAMES",
    "current_value",
    "event_status",
    "finished_at",
    "is_cancelled",
    "needs_acknowledgement",
    "time_status",
]

#: The SIMPLE signal's names (2.0a spelled it in lower case); its currentValue is a level.
SIMPLE_SIGNAL_NAMES = frozenset({"SIMPLE", "simple"})


def time_status(active_period: Mapping[str, Any], now: datetime) -> str:
    """The status the active period's times imply at ``now``, ignoring cancellation.

    This is the harness's ``calculateEventStatus`` (protocol notes 5.2): a duration of 0 is
    open-ended and active from its start (rule 47); "near" exists only with a ramp-up period.

    :param active_period: the event's ``active_period`` dict.
    :param now: the instant the status is computed for (the payload's createdDateTime).
    :returns: ``"far"``, ``"near"``, ``"active"`` or ``"completed"``.
    """
    start = active_period["dtstart"]
    duration = active_period["duration"]
    ramp_up = active_period.get("ramp_up", timedelta(0))
    if now < start:
        return "near" if ramp_up > timedelta(0) and now >= start - ramp_up else "far"
    end = window_end(start, duration)
    if end is None or now < end:
        return "active"
    return "completed"


def is_cancelled(event: Mapping[str, Any]) -> bool:
    """Whether the VTN cancelled ``event`` (or the version a VEN is sent is a cancellation):
    the stored event's own ``cancelled`` field, the one place this is recorded. The eventStatus
    "cancelled" a VEN sees is derived from it (:func:`event_status`).

    :param event: a stored event, or a version of it from
        :func:`~flask_openadr.services.event_versions.as_version`.
    """
    return event.get("cancelled") is True


def event_status(event: Mapping[str, Any], now: datetime) -> str:
    """The eventStatus to send at ``now``: ``"cancelled"`` once the VTN cancelled the event,
    otherwise :func:`time_status`.

    :param event: a stored or rendered event dict.
    :param now: the instant the status is computed for.
    """
    if is_cancelled(event):
        return "cancelled"
    return time_status(event["active_period"], now)


def current_value(
    event: Mapping[str, Any], signal: Mapping[str, Any], now: datetime
) -> float | None:
    """The signal's currentValue at ``now``.

    While the event is active this is the payload of the interval containing ``now`` (interval
    starts are cumulative from dtstart; the single PT0S interval of an open-ended event holds
    for as long as the event lasts). Otherwise it is 0.0 for a SIMPLE signal (rule 14) and None
    for other signals, which means "omit currentValue".

    :param event: the event the signal belongs to.
    :param signal: one entry of ``event["event_signals"]``.
    :param now: the instant the value is computed for.
    """
    if event_status(event, now) == "active":
        return _payload_at(event["active_period"], signal["intervals"], now)
    if signal["signal_name"] in SIMPLE_SIGNAL_NAMES:
        return 0.0
    return None


def _payload_at(
    active_period: Mapping[str, Any], intervals: list[Mapping[str, Any]], now: datetime
) -> float | None:
    if is_open_ended(active_period["duration"]):
        return float(intervals[0]["signal_payload"])
    start = active_period["dtstart"]
    for interval in intervals:
        start += interval["duration"]
        if now < start:
            return float(interval["signal_payload"])
    return None


def needs_acknowledgement(event: Mapping[str, Any], now: datetime) -> bool:
    """Whether a VEN answers a version of ``event`` it is sent at ``now`` with
    oadrCreatedEvent: when the event says oadrResponseRequired "always" and its times are not
    over (a VEN does not answer a completed event, as the openleadr VEN shows; a cancellation
    it does answer). Only such versions are sent again until answered.

    :param event: the stored event.
    :param now: the instant of sending.
    """
    return (event.get("response_required") == "always"
            and time_status(event["active_period"], now) != "completed")


def finished_at(event: Mapping[str, Any]) -> datetime | None:
    """When the event was over for good: the later of its end and its cancellation (the
    modification_date_time of the cancelling version); None while it may still run (not
    cancelled and open-ended, duration 0). The retention period counts from here.

    :param event: the stored event.
    """
    period = event["active_period"]
    end = window_end(period["dtstart"], period["duration"])
    if not is_cancelled(event):
        return end
    # A cancelled event is never modified again, so its last modification is the cancellation.
    cancelled_at: datetime = (event["event_descriptor"].get("modification_date_time")
                              or period["dtstart"])
    return cancelled_at if end is None else max(end, cancelled_at)
