"""What the operator asks of the VTN, checked once for the forms and the JSON endpoints alike.

Each function takes plain values, calls the VTN's public API and raises :class:`InputError` with
a message per input field when the request cannot be done. The portal's own rules (a known
target, an event that has not begun in the past) are checked here; the protocol's rules (a SIMPLE
level is 0 to 3, ...) stay in the library, whose :class:`~flask_openadr.EventError` is turned
into a message next to the field it names.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from flask import current_app

from flask_openadr import EventError, UnknownEvent

#: How far in the past a start may be, for a start of "now" typed a moment ago.
START_SLACK = timedelta(minutes=1)
#: The furthest ahead an event may start, and its longest duration: a demand-response event
#: beyond these is a typing error (2036 for 2026, minutes for seconds), not a plan.
HORIZON = timedelta(days=366)
MAX_DURATION_MINUTES = 7 * 24 * 60


class InputError(ValueError):
    """Operator input the portal refuses: ``errors`` maps each input field to its message."""

    def __init__(self, errors: dict[str, str]):
        super().__init__("; ".join(f"{field}: {message}" for field, message in errors.items()))
        self.errors = errors


def vtn():
    return current_app.extensions["openadr"].vtn


def now() -> datetime:
    return current_app.extensions["openadr"].context.now()


def known_groups() -> set[str]:
    """The groups of the allow-list and of the VENs the VTN knows."""
    groups = {g for groups in current_app.config["ALLOWED_VENS"].values() for g in groups}
    for ven in vtn().vens():
        groups.update(ven.get("group_ids") or [])
    return groups


def resolve_target(*, target: str | None = None, ven_id: str | None = None,
                   group_id: str | None = None, field: str = "target") -> dict[str, Any]:
    """The ``add_event`` targeting arguments for a group name, a venID or a VEN name.

    :param target: free text from the form: a group, a venID or a VEN name, in that order.
    :param ven_id: a venID (JSON ``ven_id``); :param group_id: a group (JSON ``group_id``).
    """
    vens = vtn().vens()
    if target is not None:
        text = target.strip()
        if text in known_groups():
            return {"targets": {"group_ids": [text]}}
        for ven in vens:
            if text in (ven["ven_id"], ven.get("ven_name")):
                return {"ven_id": ven["ven_id"]}
        raise InputError({field: f"no group or VEN is named {text!r}; known groups: "
                                 f"{', '.join(sorted(known_groups())) or 'none'}"})
    if ven_id is not None:
        if not any(ven["ven_id"] == ven_id for ven in vens):
            raise InputError({"ven_id": f"no VEN has venID {ven_id!r}; GET /api/vens lists them"})
        return {"ven_id": ven_id}
    if group_id is not None:
        if group_id not in known_groups():
            raise InputError({"group_id": f"no group is named {group_id!r}; known groups: "
                                          f"{', '.join(sorted(known_groups())) or 'none'}"})
        return {"targets": {"group_ids": [group_id]}}
    raise InputError({field: "give a target: a group or a VEN"})


def check_start(start: datetime, field: str = "start") -> None:
    """A new or moved event starts from now on (a minute of slack for "now") and within
    :data:`HORIZON`."""
    if start < now() - START_SLACK:
        raise InputError({field: f"{start:%Y-%m-%d %H:%M} UTC is in the past; the VENs could no "
                                 "longer act on it. Give a start from now on"})
    if start > now() + HORIZON:
        raise InputError({field: f"{start:%Y-%m-%d %H:%M} UTC is more than {HORIZON.days} days "
                                 "ahead; check the year"})


def duration_of(minutes: float, field: str = "duration_minutes") -> timedelta:
    """The duration of ``minutes``, which must be more than 0 and at most a week."""
    if not 0 < minutes <= MAX_DURATION_MINUTES:
        raise InputError({field: f"{field} must be more than 0 and at most "
                                 f"{MAX_DURATION_MINUTES} (a week), not {minutes:g}"})
    return timedelta(minutes=minutes)


def _field_of(error: EventError, fields: dict[str, str]) -> str:
    """The input field an EventError is about, from the event field its message names."""
    text = str(error)
    for marker, field in (("signal_payload", fields["level"]), ("duration", fields["duration"]),
                          ("dtstart", fields["start"]), ("signal_name", fields["signal"]),
                          ("signal_type", fields["signal"])):
        if marker in text:
            return field
    return "form"


FORM_FIELDS = {"level": "level", "duration": "duration_minutes", "start": "start",
               "signal": "signal"}
JSON_FIELDS = {"level": "level", "duration": "duration_minutes", "start": "start",
               "signal": "signal_name"}


#: The unit each signal the portal offers is sent with: OpenADR wants a price in a currency
#: and a dispatch setpoint in a power unit (the portal's prices are USD/kWh, setpoints kW).
ITEM_BASES = {
    "ELECTRICITY_PRICE": {"kind": "currencyPerKWh", "item_description": "currencyPerKWh",
                          "item_units": "USD", "si_scale_code": "none"},
    "LOAD_DISPATCH": {"kind": "powerReal", "item_description": "RealPower", "item_units": "W",
                      "si_scale_code": "k",
                      "power_attributes": {"hertz": 60.0, "voltage": 120.0, "ac": True}},
}


def add_event(target: dict[str, Any], start: datetime, duration: timedelta, level: float, *,
              signal_name: str = "SIMPLE", signal_type: str = "level",
              market_context: str | None = None, fields: dict[str, str] = FORM_FIELDS) -> str:
    """Add a one-interval event; returns its eventID."""
    check_start(start, fields["start"])
    options = dict(target)
    if market_context:
        options["market_context"] = market_context  # else OPENADR_MARKET_CONTEXT
    if signal_name in ITEM_BASES:
        options["item_base"] = ITEM_BASES[signal_name]
    try:
        return vtn().add_event(
            signal_name=signal_name, signal_type=signal_type,
            intervals=[{"dtstart": start.astimezone(timezone.utc), "duration": duration,
                        "signal_payload": float(level)}],
            **options)
    except EventError as error:
        raise InputError({_field_of(error, fields): str(error)}) from None


def modify_event(event_id: str, *, start: datetime | None = None,
                 duration: timedelta | None = None, level: float | None = None,
                 fields: dict[str, str] = FORM_FIELDS) -> dict[str, Any]:
    """Change the start, duration or level of a one-interval event."""
    event = get_event(event_id)
    intervals = event["event_signals"][0]["intervals"]
    if len(intervals) != 1 or len(event["event_signals"]) != 1:
        raise InputError({"form": f"event {event_id!r} has several signals or intervals; this "
                                  "portal changes one-interval events only"})
    if start is not None and start != event["active_period"]["dtstart"]:
        check_start(start, fields["start"])
    new = {"dtstart": start or event["active_period"]["dtstart"],
           "duration": duration or event["active_period"]["duration"],
           "signal_payload": intervals[0]["signal_payload"] if level is None else float(level)}
    try:
        return vtn().modify_event(event_id, intervals=[new])
    except EventError as error:
        raise InputError({_field_of(error, fields): str(error)}) from None


def cancel_event(event_id: str) -> dict[str, Any]:
    get_event(event_id)
    try:
        return vtn().cancel_event(event_id)
    except EventError as error:
        raise InputError({"form": str(error)}) from None


def get_event(event_id: str) -> dict[str, Any]:
    """The event, or :class:`LookupError` naming the eventID."""
    try:
        return vtn().get_event(event_id)
    except UnknownEvent:
        raise LookupError(f"event {event_id!r} is not known") from None


def request_telemetry(ven_id: str) -> str:
    """Ask the VEN for one report of its registered TELEMETRY_USAGE data; returns the
    reportRequestID."""
    try:
        return vtn().request_named_report(ven_id, "TELEMETRY_USAGE")
    except (LookupError, ValueError) as error:
        raise InputError({"form": str(error)}) from None
