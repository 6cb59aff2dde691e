"""The Python API's input forms of an event: the convenience arguments, targets in their
several spellings, and full event dicts, each turned into the stored form."""
from __future__ import annotations

import copy
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Mapping

from ..errors import EventError
from .event_rules import (
    PERIOD_ARGUMENTS,
    check_datetime,
    check_duration,
    check_mapping,
    check_number,
    validate_event,
)
from .event_targets import TARGET_KEYS

__all__ = [
    "as_test_event",
    "build_event",
    "derive_intervals",
    "fill_uids",
    "normalize_full_event",
    "normalize_target",
    "set_optional",
    "stored_form",
]

# Singular spellings accepted in the convenience forms ({"ven_id": "ven-1"}, ...).
# Singular spellings accepted in the convenience forms ({"ven_id": "ven-1"}, ...).
_SINGULAR_TARGET_KEYS = {key[:-1]: key for key in TARGET_KEYS}


def derive_intervals(
    intervals: list[Mapping[str, Any]], start: datetime | None = None
) -> tuple[datetime, timedelta, list[dict[str, Any]]]:
    """Turn convenience intervals (each with ``dtstart``, ``duration``, ``signal_payload``)
    into the active period's dtstart and duration and the signal's intervals.

    The first dtstart is the event start; each later dtstart, when given, must equal the end
    of the interval before it (a later one may be left out). uids become "0".."n-1" (rule 2)
    and dtstart is removed, since event intervals must not carry one.

    :param intervals: the convenience intervals, in order.
    :param start: the start to use when the first interval has no dtstart (modify_event keeps
        the event's current start this way); None makes the first dtstart required.
    :returns: ``(dtstart, duration, intervals)``.
    :raises EventError: naming the interval index when the intervals do not follow each other.
    """
    if not isinstance(intervals, (list, tuple)) or not intervals:
        raise EventError(f"intervals is {intervals!r}; it must list at least one interval")
    check_mapping(intervals[0], "intervals[0]")
    begin: datetime | None = intervals[0].get("dtstart")
    if begin is None:
        begin = start
    if begin is None:
        raise EventError("intervals[0].dtstart is missing; the first interval sets the start")
    check_datetime(begin, "intervals[0].dtstart")
    # Intervals follow each other in absolute time: in a zone with DST, adding a duration to
    # a local time is wall-clock arithmetic (an hour across the change would be 0 or 2).
    begin = begin.astimezone(timezone.utc)
    end = begin
    result = []
    for index, interval in enumerate(intervals):
        where = f"intervals[{index}]"
        check_mapping(interval, where)
        given = interval.get("dtstart")
        if index and given is not None:
            check_datetime(given, f"{where}.dtstart")
            if given.astimezone(timezone.utc) != end:
                raise EventError(
                    f"{where}.dtstart is {given.isoformat()}, but intervals[{index - 1}] ends at "
                    f"{end.isoformat()}; each interval must start where the one before it ends"
                )
        check_duration(interval.get("duration"), f"{where}.duration")
        duration: timedelta = interval["duration"]
        if "signal_payload" not in interval:
            raise EventError(f"{where} has no signal_payload; each interval carries one")
        payload = interval["signal_payload"]
        if isinstance(payload, int) and not isinstance(payload, bool):
            # The dict contract says float; validation checks the rest.
            payload = check_number(payload, f"{where}.signal_payload")
        result.append({"duration": duration, "uid": str(index), "signal_payload": payload})
        end = end + duration
    return begin, end - begin, result


def normalize_target(targets: Any = None, ven_id: str | None = None) -> dict[str, list[Any]]:
    """A TARGET dict with every list present, from the forms the Python API accepts.

    :param targets: None; a dict keyed like TARGET (``"ven_ids": [...]``) or with singular
        keys (``"ven_id": "..."``); or a list of such dicts (``[{"ven_id": "a"}, {"group_id":
        "g"}]``). Values are merged, duplicates dropped, order kept.
    :param ven_id: one more venID to target.
    :raises EventError: on an unknown key or a value of the wrong shape.
    """
    target: dict[str, list[Any]] = {key: [] for key in TARGET_KEYS}
    if isinstance(targets, Mapping):
        _merge_target(target, targets, "targets")
    elif isinstance(targets, (list, tuple)):
        for index, item in enumerate(targets):
            check_mapping(item, f"targets[{index}]")
            _merge_target(target, item, f"targets[{index}]")
    elif targets is not None:
        raise EventError(f"targets is {targets!r}; it must be a dict or a list of dicts")
    if ven_id is not None:
        _add_target_value(target["ven_ids"], ven_id)
    return target


def _merge_target(target: dict[str, list[Any]], given: Mapping[str, Any], path: str) -> None:
    for key, value in given.items():
        if key in TARGET_KEYS:
            # A bare string here would be iterated character by character.
            if not isinstance(value, (list, tuple)):
                raise EventError(f"{path}.{key} is {value!r}; it must be a list")
            for item in value:
                _add_target_value(target[key], item)
        elif key in _SINGULAR_TARGET_KEYS:
            _add_target_value(target[_SINGULAR_TARGET_KEYS[key]], value)
        else:
            allowed = sorted(TARGET_KEYS + tuple(_SINGULAR_TARGET_KEYS))
            raise EventError(f"{path} has unknown key {key!r}; the known keys are {allowed}")


def _add_target_value(values: list[Any], value: Any) -> None:
    if value not in values:
        values.append(copy.deepcopy(value))


def as_test_event(test_event: str | bool) -> str:
    """The testEvent text: a string (rule 6); a bool from Python callers becomes
    "true"/"false" (anything else is left for the encoding to refuse)."""
    if isinstance(test_event, bool):
        return "true" if test_event else "false"
    return test_event


def build_event(
    *,
    event_id: str,
    ven_id: str | None = None,
    signal_name: str,
    signal_type: str,
    intervals: list[Mapping[str, Any]],
    targets: Any = None,
    market_context: str,
    response_required: str = "always",
    priority: int | None = None,
    ramp_up_period: timedelta | None = None,
    notification_period: timedelta | None = None,
    recovery_period: timedelta | None = None,
    start_after: timedelta | None = None,
    test_event: str | bool | None = None,
    vtn_comment: str | None = None,
    signal_id: str | None = None,
    current_value: float | None = None,
    item_base: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A new single-signal event in the stored form, from the convenience arguments.

    The event starts at the first interval's dtstart and lasts as long as the intervals
    together; modification_number is 0 (rule 4). Several VENs may be targeted (they are kept
    in ``target["ven_ids"]``); each one is sent a copy naming only itself.

    :param event_id: the eventID.
    :param ven_id: a VEN to target (added to ``targets``).
    :param signal_name: e.g. ``"SIMPLE"``, ``"ELECTRICITY_PRICE"`` or ``"x-..."``.
    :param signal_type: e.g. ``"level"``, ``"price"``.
    :param intervals: ``[{"dtstart", "duration", "signal_payload"}, ...]``, consecutive.
    :param targets: see :func:`normalize_target`; None (and no ``ven_id``) targets every VEN.
    :param market_context: the program URI.
    :param response_required: ``"always"`` or ``"never"``.
    :param priority: 0 or absent is the lowest priority, 1 the highest.
    :param ramp_up_period: x-eiRampUp; the event is "near" this long before its start.
    :param notification_period: x-eiNotification.
    :param recovery_period: x-eiRecovery.
    :param start_after: the tolerance window (startafter) in which the VEN may start.
    :param test_event: testEvent text; True/False become "true"/"false".
    :param vtn_comment: free text.
    :param signal_id: the signalID; "0" when not given.
    :param current_value: ignored: currentValue is computed when the event is sent.
    :param item_base: the signal's units (emix:itemBase dict).
    :raises EventError: when the result breaks a rule (see :func:`validate_event`).
    """
    del current_value  # derived at send time, never stored
    dtstart, duration, signal_intervals = derive_intervals(intervals)
    signal: dict[str, Any] = {
        "intervals": signal_intervals,
        "signal_name": signal_name,
        "signal_type": signal_type,
        "signal_id": "0" if signal_id is None else signal_id,
    }
    if item_base is not None:
        signal["item_base"] = copy.deepcopy(dict(item_base))
    descriptor: dict[str, Any] = {"event_id": event_id, "modification_number": 0}
    set_optional(descriptor, "priority", priority)
    descriptor["market_context"] = market_context
    if test_event is not None:
        descriptor["test_event"] = as_test_event(test_event)
    set_optional(descriptor, "vtn_comment", vtn_comment)
    active_period: dict[str, Any] = {"dtstart": dtstart, "duration": duration}
    periods = {
        "start_after": start_after,
        "notification_period": notification_period,
        "ramp_up_period": ramp_up_period,
        "recovery_period": recovery_period,
    }
    for argument, value in periods.items():
        set_optional(active_period, PERIOD_ARGUMENTS[argument], value)
    event = {
        "event_descriptor": descriptor,
        "active_period": active_period,
        "event_signals": [signal],
        "target": normalize_target(targets, ven_id),
        "response_required": response_required,
    }
    validate_event(event)
    return event


def set_optional(mapping: dict[str, Any], key: str, value: Any) -> None:
    """Set an optional key, or remove it for None: optional keys are absent, never None."""
    if value is None:
        mapping.pop(key, None)
    else:
        mapping[key] = value


def stored_form(event: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy of an EVENT-shaped dict in the stored form: without createdDateTime,
    eventStatus and currentValue (all derived at send time), with every target list present.
    A rendered eventStatus "cancelled" is read as what it was derived from, the stored
    ``cancelled`` field.

    :param event: the event dict, rendered or stored; not modified.
    """
    check_mapping(event, "event")
    stored = copy.deepcopy(dict(event))
    descriptor = stored.get("event_descriptor")
    if isinstance(descriptor, dict):
        descriptor.pop("created_date_time", None)
        if descriptor.pop("event_status", None) == "cancelled":
            stored["cancelled"] = True
    stored["target"] = normalize_target(stored.get("target"))
    signals = stored.get("event_signals")
    for signal in signals if isinstance(signals, list) else []:
        if isinstance(signal, dict):
            signal.pop("current_value", None)
            if isinstance(signal.get("target"), Mapping):
                signal["target"] = normalize_target(signal["target"])
    return stored


def normalize_full_event(
    event: Mapping[str, Any],
    *,
    event_id_factory: Callable[[], str],
    default_market_context: str | None = None,
) -> dict[str, Any]:
    """A new event in the stored form, from a full EVENT-shaped dict (``vtn.add_event(event=...)``).

    Fills a missing event_id from ``event_id_factory``, sets modification_number 0 (rule 4),
    fills missing target lists, a missing market_context from ``default_market_context``, a
    missing response_required with "always" and missing interval uids with "0".."n-1"; drops
    created_date_time, event_status (a cancellation too), cancelled and current_value. Then
    validates.

    :param event: the full event dict; not modified.
    :param event_id_factory: makes an eventID when the dict has none.
    :param default_market_context: the configured program URI.
    :raises EventError: when the result breaks a rule.
    """
    stored = stored_form(event)
    stored.pop("cancelled", None)  # a new event is not cancelled (cancel_event does that)
    descriptor = stored.setdefault("event_descriptor", {})
    check_mapping(descriptor, "event_descriptor")
    if not descriptor.get("event_id"):
        descriptor["event_id"] = event_id_factory()
    descriptor["modification_number"] = 0
    if not descriptor.get("market_context") and default_market_context:
        descriptor["market_context"] = default_market_context
    stored.setdefault("response_required", "always")
    fill_uids(stored.get("event_signals"))
    if isinstance(stored.get("event_baseline"), dict):
        fill_uids([stored["event_baseline"]])
    validate_event(stored)
    return stored


def fill_uids(signals: Any) -> None:
    for signal in signals if isinstance(signals, list) else []:
        intervals = signal.get("intervals") if isinstance(signal, dict) else None
        for index, interval in enumerate(intervals if isinstance(intervals, list) else []):
            if isinstance(interval, dict):
                interval.setdefault("uid", str(index))
