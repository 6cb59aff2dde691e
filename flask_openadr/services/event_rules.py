"""OpenADR 2.0b event rules as pure functions on dicts: status, values, validity, targets, order."""
from __future__ import annotations

import copy
import math
import re
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterable, Mapping, NamedTuple

from .. import enums
from ..errors import EventError

__all__ = [
    "EVENT_STATUSES",
    "SIGNAL_NAMES",
    "SIGNAL_TYPES",
    "TARGET_KEYS",
    "build_event",
    "changed_event",
    "current_value",
    "derive_intervals",
    "event_status",
    "next_version",
    "normalize_full_event",
    "normalize_target",
    "order_events",
    "render_event",
    "same_content",
    "strip_derived",
    "targets_ven",
    "time_status",
    "validate_event",
    "version_for_ven",
    "finished_at",
    "needs_acknowledgement",
    "Version",
    "as_version",
]

# The XSD enumerations (flask_openadr.enums) as sets. signalName also takes "x-" extension tokens,
# signalType does not.
SIGNAL_TYPES = frozenset(enums.SIGNAL_TYPES)
SIGNAL_NAMES = frozenset(enums.SIGNAL_NAMES)
_EXTENSION_TOKEN = re.compile(r"x-\S.*")  # the XSD's EiExtensionTokenType pattern
SIMPLE_SIGNAL_NAMES = frozenset({"SIMPLE", "simple"})
SIMPLE_LEVELS = frozenset({0, 1, 2, 3})  # normal, moderate, high, special (rule 9)
RESPONSE_REQUIRED = frozenset(enums.RESPONSE_REQUIRED)
EVENT_STATUSES = frozenset(enums.EVENT_STATUSES)

#: The eiTarget members an event dict carries, each a list (a missing key means []).
TARGET_KEYS = (
    "ven_ids", "group_ids", "resource_ids", "party_ids", "group_names", "end_device_assets",
)
# Members that choose VENs. end_device_assets names device classes inside a VEN, so a target
# holding only device classes still reaches every VEN.
_VEN_SELECTING_KEYS = ("ven_ids", "group_ids", "resource_ids", "party_ids", "group_names")
# Singular spellings accepted in the convenience forms ({"ven_id": "ven-1"}, ...).
_SINGULAR_TARGET_KEYS = {key[:-1]: key for key in TARGET_KEYS}

_ZERO = timedelta(0)

# Signal name -> (allowed signal types, allowed itemBase kinds): the combinations the 2.0b
# profile and the certification harness accept ([HAR] for price and LOAD_DISPATCH).
_CURRENCY_KINDS = frozenset({"currency", "currencyPerKWh", "currencyPerKW", "currencyPerThm"})
_POWER_ENERGY_KINDS = frozenset({"powerReal", "powerApparent", "powerReactive", "energyReal",
                                 "energyApparent", "energyReactive"})
_PRICE_RULE = (frozenset({"price", "priceRelative", "priceMultiplier"}), _CURRENCY_KINDS)
SIGNAL_RULES: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "ELECTRICITY_PRICE": _PRICE_RULE,
    "ENERGY_PRICE": _PRICE_RULE,
    "DEMAND_CHARGE": _PRICE_RULE,
    "LOAD_DISPATCH": (frozenset({"setpoint", "delta", "multiplier"}), _POWER_ENERGY_KINDS),
}
DEVICE_CLASSES = frozenset(enums.DEVICE_CLASSES)
# The active-period keys, by the build_event/modify_event argument that sets each.
_PERIOD_ARGUMENTS = {
    "start_after": "start_after",
    "notification_period": "notification",
    "ramp_up_period": "ramp_up",
    "recovery_period": "recovery",
}
# Fields that describe a version rather than the event; they never make a change (rule 5).
_VERSION_FIELDS = ("modification_number", "modification_date_time", "modification_reason")


# ---------------------------------------------------------------------------------------------
# Status and currentValue: derived at the moment of sending, never stored.


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
    ramp_up = active_period.get("ramp_up", _ZERO)
    if now < start:
        return "near" if ramp_up > _ZERO and now >= start - ramp_up else "far"
    if duration == _ZERO or now < start + duration:
        return "active"
    return "completed"


def event_status(event: Mapping[str, Any], now: datetime) -> str:
    """The eventStatus to send at ``now``: ``"cancelled"`` once the VTN cancelled the event,
    otherwise :func:`time_status`.

    :param event: a stored or rendered event dict.
    :param now: the instant the status is computed for.
    """
    if event["event_descriptor"].get("event_status") == "cancelled":
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
    if active_period["duration"] == _ZERO:
        return float(intervals[0]["signal_payload"])
    start = active_period["dtstart"]
    for interval in intervals:
        start += interval["duration"]
        if now < start:
            return float(interval["signal_payload"])
    return None


# ---------------------------------------------------------------------------------------------
# Validation: every rule the VTN enforces on an event, each checked here and nowhere else.


def validate_event(event: Mapping[str, Any]) -> None:
    """Check an event against the conformance rules; raise :class:`EventError` on the first
    violation, naming the rule (or field), the offending value and what is allowed.

    Accepts the stored form and the rendered form. "At most one venID per eiTarget" applies
    to what is sent, so it is checked only for a rendered event (one carrying
    ``created_date_time``): a stored event may name several VENs, and :func:`render_event`
    gives each VEN a copy naming only itself.

    :param event: the event dict.
    :raises EventError: when a rule is broken.
    """
    if not isinstance(event, Mapping):
        raise EventError(f"an event must be a dict, not {type(event).__name__}")
    descriptor = _required(event, "event_descriptor", "event")
    _validate_descriptor(descriptor)
    _validate_active_period(_required(event, "active_period", "event"))
    _validate_signals(event)
    if "event_baseline" in event:
        _validate_baseline(event["event_baseline"])
    _validate_target(_required(event, "target", "event"), "target")
    _check_choice(event.get("response_required"), RESPONSE_REQUIRED, "response_required")
    if "created_date_time" in descriptor:
        _check_one_ven_id(event)
    _check_signal_targets(event)


def _validate_descriptor(descriptor: Any) -> None:
    path = "event_descriptor"
    _check_mapping(descriptor, path)
    _check_text(descriptor.get("event_id"), f"{path}.event_id")
    _check_uint(descriptor.get("modification_number"), f"{path}.modification_number")
    _check_optional(descriptor, "modification_date_time", _check_datetime, path)
    _check_optional(descriptor, "modification_reason", _check_string, path)
    _check_optional(descriptor, "priority", _check_uint, path)
    _check_text(descriptor.get("market_context"), f"{path}.market_context")
    _check_optional(descriptor, "created_date_time", _check_datetime, path)
    if "event_status" in descriptor:
        _check_choice(descriptor["event_status"], EVENT_STATUSES, f"{path}.event_status")
    # testEvent is xs:string, not boolean: anything but "false" marks a test event (rule 6).
    _check_optional(descriptor, "test_event", _check_string, path)
    _check_optional(descriptor, "vtn_comment", _check_string, path)


def _validate_active_period(period: Any) -> None:
    path = "active_period"
    _check_mapping(period, path)
    _check_datetime(period.get("dtstart"), f"{path}.dtstart")
    _check_duration(period.get("duration"), f"{path}.duration")
    for key in _PERIOD_ARGUMENTS.values():
        _check_optional(period, key, _check_duration, path)


def _validate_signals(event: Mapping[str, Any]) -> None:
    signals = event.get("event_signals")
    if not isinstance(signals, list) or not signals:
        raise EventError(
            f"event_signals is {signals!r}; an event needs a list of at least one signal"
        )
    total = event["active_period"]["duration"]
    seen_ids: set[str] = set()
    for index, signal in enumerate(signals):
        path = f"event_signals[{index}]"
        _check_mapping(signal, path)
        _validate_signal_kind(signal, path)
        signal_id = signal.get("signal_id")
        _check_text(signal_id, f"{path}.signal_id")
        if signal_id in seen_ids:
            raise EventError(
                f"{path}.signal_id {signal_id!r} is used twice; signalIDs must be unique "
                "within an event"
            )
        seen_ids.add(signal_id)
        simple = signal["signal_name"] in SIMPLE_SIGNAL_NAMES
        _validate_intervals(signal.get("intervals"), total, path, payloads=True, simple=simple)
        if "target" in signal:
            _validate_target(signal["target"], f"{path}.target")
        if "item_base" in signal:
            _check_mapping(signal["item_base"], f"{path}.item_base")
        _check_optional(signal, "current_value", _check_number, path)


def _validate_signal_kind(signal: Mapping[str, Any], path: str) -> None:
    name = signal.get("signal_name")
    if not isinstance(name, str) or not (name in SIGNAL_NAMES or _EXTENSION_TOKEN.fullmatch(name)):
        raise EventError(
            f"{path}.signal_name (signalName) is {name!r}; it must be one of "
            f"{sorted(SIGNAL_NAMES)} or an extension token starting with 'x-'"
        )
    # signalType has no x- extensions in the XSD, unlike signalName.
    _check_choice(signal.get("signal_type"), SIGNAL_TYPES, f"{path}.signal_type (signalType)")
    if name in SIMPLE_SIGNAL_NAMES:
        if signal["signal_type"] != "level":
            raise EventError(
                f"{path}.signal_type is {signal['signal_type']!r}; a {name} signal must have "
                "signal_type 'level'"
            )
        if "item_base" in signal:
            raise EventError(f"{path}.item_base is {signal['item_base']!r}; a {name} signal "
                             "carries levels, which have no unit: leave item_base out")
    if name in SIGNAL_RULES:
        types, kinds = SIGNAL_RULES[name]
        if signal["signal_type"] not in types:
            raise EventError(f"{path}.signal_type is {signal['signal_type']!r}; a {name} signal "
                             f"must have signal_type {' or '.join(map(repr, sorted(types)))}")
        kind = (signal.get("item_base") or {}).get("kind") \
            if isinstance(signal.get("item_base"), Mapping) else None
        if kind not in kinds:
            raise EventError(f"{path}.item_base kind is {kind!r}; a {name} signal needs an "
                             f"item_base of kind {' or '.join(map(repr, sorted(kinds)))}")


def _validate_intervals(
    intervals: Any, total: timedelta, path: str, *, payloads: bool, simple: bool = False
) -> None:
    if not isinstance(intervals, list) or not intervals:
        raise EventError(f"{path}.intervals is {intervals!r}; it must list at least one interval")
    summed = _ZERO
    for index, interval in enumerate(intervals):
        where = f"{path}.intervals[{index}]"
        _check_mapping(interval, where)
        if "dtstart" in interval:
            raise EventError(
                f"{where} has dtstart {interval['dtstart']!r}; event intervals carry no "
                "dtstart, their starts follow from the active period's dtstart"
            )
        _check_duration(interval.get("duration"), f"{where}.duration")
        if interval.get("uid") != str(index):
            raise EventError(
                f"rule 2: {where}.uid is {interval.get('uid')!r}; uids must run "
                f"'0', '1', ... in order, so this one must be {str(index)!r}"
            )
        if payloads:
            _validate_payload(interval, where, simple)
        summed += interval["duration"]
    _check_durations_sum(intervals, summed, total, path)


def _validate_payload(interval: Mapping[str, Any], where: str, simple: bool) -> None:
    if "signal_payload" not in interval:
        raise EventError(f"{where} has no signal_payload; each interval carries exactly one")
    payload = interval["signal_payload"]
    if isinstance(payload, (list, tuple)):
        raise EventError(
            f"{where}.signal_payload is {payload!r}; each interval carries exactly one payload"
        )
    _check_number(payload, f"{where}.signal_payload")
    if simple and payload not in SIMPLE_LEVELS:
        raise EventError(
            f"rule 9: {where}.signal_payload is {payload!r}; a SIMPLE signal's payloads must "
            "be 0 (normal), 1 (moderate), 2 (high) or 3 (special)"
        )


def _check_durations_sum(
    intervals: list[Mapping[str, Any]], summed: timedelta, total: timedelta, path: str
) -> None:
    if total == _ZERO:
        # Rule 8 for an open-ended event (rule 47): one PT0S interval, nothing else sums to 0.
        if len(intervals) != 1 or intervals[0]["duration"] != _ZERO:
            raise EventError(
                f"rule 8: {path} has {len(intervals)} interval(s) summing to {summed}, but the "
                "active period's duration is 0 (open-ended); such an event needs exactly one "
                "interval of duration 0"
            )
    elif summed != total:
        raise EventError(
            f"rule 8: {path}.intervals durations sum to {summed}, but the active period's "
            f"duration is {total}; they must be equal"
        )


def _validate_baseline(baseline: Any) -> None:
    path = "event_baseline"
    _check_mapping(baseline, path)
    _check_datetime(baseline.get("dtstart"), f"{path}.dtstart")
    _check_duration(baseline.get("duration"), f"{path}.duration")
    _validate_intervals(baseline.get("intervals"), baseline["duration"], path, payloads=False)


def _validate_target(target: Any, path: str) -> None:
    _check_mapping(target, path)
    for key in TARGET_KEYS:
        values = target.get(key, [])
        if not isinstance(values, list):
            raise EventError(f"{path}.{key} is {values!r}; it must be a list")
        if key != "end_device_assets":
            for value in values:
                _check_text(value, f"{path}.{key} item")
        else:
            for value in values:
                mrid = value.get("mrid") if isinstance(value, Mapping) else value
                if mrid not in DEVICE_CLASSES:
                    raise EventError(f"{path}.end_device_assets item {value!r} is not a device "
                                     f"class; mrid must be one of {sorted(DEVICE_CLASSES)}")


def _check_signal_targets(event: Mapping[str, Any]) -> None:
    """Every VEN the event reaches gets at least one of its signals (a VEN is sent only the
    signals aimed at it, and an event needs one)."""
    target = event["target"]
    named = target.get("ven_ids", [])
    by_membership = not named or any(target.get(key) for key in _VEN_SELECTING_KEYS
                                     if key != "ven_ids")
    reached = [*named, *([None] if by_membership else [])]
    for ven_id in reached:
        if not any(_signal_for(signal, ven_id) for signal in event["event_signals"]):
            who = f"venID {ven_id!r}" if ven_id is not None else "a VEN chosen by group, " \
                "resource or party (or every VEN)"
            raise EventError(f"event_signals: no signal is aimed at {who}, which the event's "
                             "target reaches; give that VEN a signal, or leave it out of the "
                             "target")


def _check_one_ven_id(event: Mapping[str, Any]) -> None:
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


def _required(mapping: Mapping[str, Any], key: str, path: str) -> Any:
    if key not in mapping:
        raise EventError(f"{path} has no {key}; it is required")
    return mapping[key]


def _check_optional(
    mapping: Mapping[str, Any], key: str, check: Callable[[Any, str], None], path: str
) -> None:
    if key in mapping:
        check(mapping[key], f"{path}.{key}")


def _check_mapping(value: Any, path: str) -> None:
    if not isinstance(value, Mapping):
        raise EventError(f"{path} is {value!r}; it must be a dict")


def _check_string(value: Any, path: str) -> None:
    if not isinstance(value, str):
        raise EventError(f"{path} is {value!r}; it must be a string")


def _check_text(value: Any, path: str) -> None:
    if not isinstance(value, str) or not value:
        raise EventError(f"{path} is {value!r}; it must be a non-empty string")


def _check_uint(value: Any, path: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise EventError(f"{path} is {value!r}; it must be a non-negative int (xs:unsignedInt)")


def _check_number(value: Any, path: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise EventError(f"{path} is {value!r}; it must be a finite number")


def _check_datetime(value: Any, path: str) -> None:
    if not isinstance(value, datetime) or value.utcoffset() is None:
        raise EventError(f"{path} is {value!r}; it must be a timezone-aware datetime (UTC)")


def _check_duration(value: Any, path: str) -> None:
    if not isinstance(value, timedelta) or value < _ZERO:
        raise EventError(f"{path} is {value!r}; it must be a non-negative timedelta")


def _check_choice(value: Any, allowed: Iterable[str], path: str) -> None:
    if not isinstance(value, str) or value not in allowed:
        raise EventError(f"{path} is {value!r}; it must be one of {sorted(allowed)}")


# ---------------------------------------------------------------------------------------------
# Building the stored form.


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
    _check_mapping(intervals[0], "intervals[0]")
    begin = intervals[0].get("dtstart")
    if begin is None:
        begin = start
    if begin is None:
        raise EventError("intervals[0].dtstart is missing; the first interval sets the start")
    _check_datetime(begin, "intervals[0].dtstart")
    # Intervals follow each other in absolute time: in a zone with DST, adding a duration to
    # a local time is wall-clock arithmetic (an hour across the change would be 0 or 2).
    begin = begin.astimezone(timezone.utc)
    end = begin
    result = []
    for index, interval in enumerate(intervals):
        where = f"intervals[{index}]"
        _check_mapping(interval, where)
        given = interval.get("dtstart")
        if index and given is not None:
            _check_datetime(given, f"{where}.dtstart")
            if given.astimezone(timezone.utc) != end:
                raise EventError(
                    f"{where}.dtstart is {given.isoformat()}, but intervals[{index - 1}] ends at "
                    f"{end.isoformat()}; each interval must start where the one before it ends"
                )
        duration = interval.get("duration")
        _check_duration(duration, f"{where}.duration")
        if "signal_payload" not in interval:
            raise EventError(f"{where} has no signal_payload; each interval carries one")
        payload = interval["signal_payload"]
        if isinstance(payload, int) and not isinstance(payload, bool):
            payload = float(payload)  # the dict contract says float; validation checks the rest
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
            _check_mapping(item, f"targets[{index}]")
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


def _test_event_text(test_event: Any) -> str:
    # testEvent is a string (rule 6); a bool from Python callers becomes "true"/"false".
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
    _set_optional(descriptor, "priority", priority)
    descriptor["market_context"] = market_context
    if test_event is not None:
        descriptor["test_event"] = _test_event_text(test_event)
    _set_optional(descriptor, "vtn_comment", vtn_comment)
    active_period: dict[str, Any] = {"dtstart": dtstart, "duration": duration}
    periods = {
        "start_after": start_after,
        "notification_period": notification_period,
        "ramp_up_period": ramp_up_period,
        "recovery_period": recovery_period,
    }
    for argument, value in periods.items():
        _set_optional(active_period, _PERIOD_ARGUMENTS[argument], value)
    event = {
        "event_descriptor": descriptor,
        "active_period": active_period,
        "event_signals": [signal],
        "target": normalize_target(targets, ven_id),
        "response_required": response_required,
    }
    validate_event(event)
    return event


def _set_optional(mapping: dict[str, Any], key: str, value: Any) -> None:
    # Optional keys are absent, never None.
    if value is None:
        mapping.pop(key, None)
    else:
        mapping[key] = value


def strip_derived(event: Mapping[str, Any], *, keep_cancelled: bool = True) -> dict[str, Any]:
    """A deep copy of an EVENT-shaped dict in the stored form: without createdDateTime,
    currentValue and any eventStatus but "cancelled" (all derived at send time), with every
    target list present.

    :param event: the event dict, rendered or stored; not modified.
    :param keep_cancelled: keep ``event_status: "cancelled"`` (False drops it too).
    """
    _check_mapping(event, "event")
    stored = copy.deepcopy(dict(event))
    descriptor = stored.get("event_descriptor")
    if isinstance(descriptor, dict):
        descriptor.pop("created_date_time", None)
        if not (keep_cancelled and descriptor.get("event_status") == "cancelled"):
            descriptor.pop("event_status", None)
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
    created_date_time, event_status and current_value. Then validates.

    :param event: the full event dict; not modified.
    :param event_id_factory: makes an eventID when the dict has none.
    :param default_market_context: the configured program URI.
    :raises EventError: when the result breaks a rule.
    """
    stored = strip_derived(event, keep_cancelled=False)
    descriptor = stored.setdefault("event_descriptor", {})
    _check_mapping(descriptor, "event_descriptor")
    if not descriptor.get("event_id"):
        descriptor["event_id"] = event_id_factory()
    descriptor["modification_number"] = 0
    if not descriptor.get("market_context") and default_market_context:
        descriptor["market_context"] = default_market_context
    stored.setdefault("response_required", "always")
    _fill_uids(stored.get("event_signals"))
    if isinstance(stored.get("event_baseline"), dict):
        _fill_uids([stored["event_baseline"]])
    validate_event(stored)
    return stored


def _fill_uids(signals: Any) -> None:
    for signal in signals if isinstance(signals, list) else []:
        intervals = signal.get("intervals") if isinstance(signal, dict) else None
        for index, interval in enumerate(intervals if isinstance(intervals, list) else []):
            if isinstance(interval, dict):
                interval.setdefault("uid", str(index))


# ---------------------------------------------------------------------------------------------
# Versions: what modify_event and cancel_event change.


def changed_event(event: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of the stored ``event`` with ``changes`` applied, version fields untouched.

    Keys of ``changes``: ``intervals`` (convenience form; a missing first dtstart keeps the
    start; single-signal events only), ``priority``, ``response_required``, ``targets`` and/or
    ``ven_id`` (together they replace the whole target), ``market_context``,
    ``ramp_up_period``, ``notification_period``, ``recovery_period``, ``start_after``,
    ``test_event``, ``vtn_comment``, or ``event`` (a full event dict replacing the content).
    None removes an optional field. ``modification_reason`` is handled by
    :func:`next_version`.

    :raises EventError: when a change cannot be applied.
    """
    updated = copy.deepcopy(dict(event))
    if "event" in changes:
        updated = _replaced_content(updated, changes["event"])
    descriptor = updated["event_descriptor"]
    if "intervals" in changes:
        _change_intervals(updated, changes["intervals"])
    for key in ("priority", "vtn_comment", "market_context"):
        if key in changes:
            _set_optional(descriptor, key, changes[key])
    if "response_required" in changes:
        updated["response_required"] = changes["response_required"]
    if "test_event" in changes:
        value = changes["test_event"]
        _set_optional(descriptor, "test_event", None if value is None else _test_event_text(value))
    for argument, key in _PERIOD_ARGUMENTS.items():
        if argument in changes:
            _set_optional(updated["active_period"], key, changes[argument])
    if "targets" in changes or "ven_id" in changes:
        updated["target"] = normalize_target(changes.get("targets"), changes.get("ven_id"))
    return updated


def _replaced_content(current: dict[str, Any], event: Mapping[str, Any]) -> dict[str, Any]:
    replacement = strip_derived(event, keep_cancelled=False)
    descriptor = replacement.setdefault("event_descriptor", {})
    _check_mapping(descriptor, "event.event_descriptor")
    event_id = current["event_descriptor"]["event_id"]
    if descriptor.get("event_id", event_id) != event_id:
        raise EventError(
            f"event.event_descriptor.event_id is {descriptor['event_id']!r}; a modification "
            f"keeps the eventID {event_id!r}"
        )
    descriptor["event_id"] = event_id
    descriptor.setdefault("market_context", current["event_descriptor"]["market_context"])
    # The version fields are the VTN's to set (next_version), whatever the dict says.
    for key in _VERSION_FIELDS:
        descriptor.pop(key, None)
    descriptor["modification_number"] = current["event_descriptor"]["modification_number"]
    replacement.setdefault("response_required", current["response_required"])
    _fill_uids(replacement.get("event_signals"))
    return replacement


def _change_intervals(event: dict[str, Any], intervals: list[Mapping[str, Any]]) -> None:
    signals = event["event_signals"]
    if len(signals) != 1:
        raise EventError(
            f"intervals= applies to single-signal events; this one has {len(signals)} signals, "
            "so pass event=<full event dict> instead"
        )
    period = event["active_period"]
    period["dtstart"], period["duration"], signals[0]["intervals"] = derive_intervals(
        intervals, start=period["dtstart"]
    )


def same_content(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether two stored events differ only in their version fields (not a change, rule 5)."""
    return _content(a) == _content(b)


def _content(event: Mapping[str, Any]) -> dict[str, Any]:
    content = copy.deepcopy(dict(event))
    for key in _VERSION_FIELDS:
        content["event_descriptor"].pop(key, None)
    return content


def next_version(
    event: Mapping[str, Any], now: datetime, reason: str | None = None
) -> dict[str, Any]:
    """The next version of a changed event: modification_number + 1 exactly (rule 5),
    modification_date_time ``now``, and ``reason`` as modification_reason (a reason left from
    an earlier modification is dropped, since it would describe the wrong change).

    :param event: the changed event; not modified.
    :param now: the modification time.
    :param reason: the modificationReason, or None.
    """
    bumped = copy.deepcopy(dict(event))
    descriptor = bumped["event_descriptor"]
    descriptor["modification_number"] += 1
    descriptor["modification_date_time"] = now
    _set_optional(descriptor, "modification_reason", reason)
    return bumped


# ---------------------------------------------------------------------------------------------
# Who gets what, in which order, in which shape.


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
    if not any(target.get(key) for key in _VEN_SELECTING_KEYS):
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
    if any(e["event_descriptor"].get("event_status") == "cancelled" for e in (event, other)):
        return False
    if (event["event_descriptor"].get("market_context")
            != other["event_descriptor"].get("market_context")):
        return False
    if not _periods_meet(event["active_period"], other["active_period"]):
        return False
    targets = [e.get("target") or {} for e in (event, other)]
    if any(not any(t.get(key) for key in _VEN_SELECTING_KEYS) for t in targets):
        return True
    if set(targets[0].get("ven_ids", [])) & set(targets[1].get("ven_ids", [])):
        return True
    return any(targets_ven(event, ven) and targets_ven(other, ven)
               for ven in vens() if not ven.get("report_only"))


def _periods_meet(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    def end(period: Mapping[str, Any]) -> datetime | None:
        return None if period["duration"] == _ZERO else period["dtstart"] + period["duration"]

    a_end, b_end = end(a), end(b)
    return ((b_end is None or a["dtstart"] < b_end)
            and (a_end is None or b["dtstart"] < a_end))


class Version(NamedTuple):
    """What a VEN holds (or should hold) of one event: the modificationNumber, and whether
    that version is a cancellation."""

    modification_number: int
    cancelled: bool


def version_for_ven(
    event: Mapping[str, Any], ven: Mapping[str, Any], held: Version | None, now: datetime
) -> Version | None:
    """The version of ``event`` that ``ven`` should hold at ``now``, given the version it was
    last sent (``held``); None when the VEN need not hear of the event at all. The rules for
    every kind of change (docs/events.rst, "Who is told of a change"):

    * a VEN that holds a cancellation keeps it: OpenADR has no "un-cancel", so an event is not
      sent again to a VEN it was cancelled or withdrawn for (add a new event to reach it);
    * a cancelled event reaches the VENs that were sent an earlier version (rule 21: a VEN
      need not hear of an event it never knew);
    * an event that no longer targets a VEN that holds it (retargeted away, the VEN left the
      group, resource or party, or it registered as report-only) is withdrawn: the VEN gets it
      as cancelled, with a modificationNumber it has not seen (the current one, or one more
      than it holds when the event itself did not change), since a VEN ignores a cancellation
      whose number it already has;
    * a far, near or active event goes to every VEN it targets, at its current version;
    * an event that is over (completed) goes to no VEN that never knew it (an operator may add
      history), and to a VEN that holds an older version only as that new, completed version,
      so a VEN that still runs the old times learns that it ended (modified into the past).

    :param event: the stored event.
    :param ven: the VEN record.
    :param held: the version last sent to the VEN, or None.
    :param now: the instant of sending.
    """
    if held is not None and held.cancelled:
        return held
    current = event["event_descriptor"]["modification_number"]
    status = event_status(event, now)
    if status == "cancelled":
        return None if held is None else Version(current, True)
    if not targets_ven(event, ven):
        if held is None or (status == "completed" and held.modification_number == current):
            return held
        return Version(max(current, held.modification_number + 1), True)
    if status == "completed" and held is None:
        return None
    return Version(current, False)


def finished_at(event: Mapping[str, Any]) -> datetime | None:
    """When the event was over for good: the later of its end and its cancellation (the
    modification_date_time of the cancelling version); None while it may still run (not
    cancelled and open-ended, duration 0). The retention period counts from here.

    :param event: the stored event.
    """
    period = event["active_period"]
    end = period["dtstart"] + period["duration"] if period["duration"] > _ZERO else None
    descriptor = event["event_descriptor"]
    if descriptor.get("event_status") != "cancelled":
        return end
    cancelled_at = descriptor.get("modification_date_time") or period["dtstart"]
    return cancelled_at if end is None else max(end, cancelled_at)


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


def as_version(
    event: Mapping[str, Any], version: Version, ven: Mapping[str, Any]
) -> dict[str, Any]:
    """The stored ``event`` as the ``version`` a VEN is sent: a cancellation carries the
    version's modificationNumber and status "cancelled", and, when the event no longer targets
    the VEN (a withdrawal), a target naming only that VEN, since a VEN may ignore an event
    whose target does not match it (protocol notes 5.2, Targets).

    :param event: the stored event; not modified.
    :param version: from :func:`version_for_ven`.
    :param ven: the receiving VEN record.
    """
    descriptor = event["event_descriptor"]
    if not version.cancelled or (
        descriptor.get("event_status") == "cancelled"
        and version.modification_number == descriptor["modification_number"]
        and targets_ven(event, ven)
    ):
        return dict(event)
    copied = copy.deepcopy(dict(event))
    copied["event_descriptor"]["event_status"] = "cancelled"
    copied["event_descriptor"]["modification_number"] = version.modification_number
    if not targets_ven(event, ven):
        copied["target"] = normalize_target(None, ven["ven_id"])
        for signal in copied["event_signals"]:
            signal.pop("target", None)
    return copied


def render_event(event: Mapping[str, Any], ven_id: str, now: datetime) -> dict[str, Any]:
    """The event as sent to one VEN at ``now``: created_date_time ``now``, the event_status
    and each signal's current_value derived from that same instant (omitted when None), and
    every target naming at most the receiving VEN.

    :param event: the stored event; not modified.
    :param ven_id: the receiving VEN.
    :param now: the instant of sending (one clock reading for the whole payload).
    """
    rendered = copy.deepcopy(dict(event))
    descriptor = rendered["event_descriptor"]
    descriptor["created_date_time"] = now
    descriptor["event_status"] = event_status(event, now)
    # A signal aimed only at other VENs is not this VEN's: narrowed, its target would be
    # empty, which means every VEN.
    rendered["event_signals"] = [signal for signal in rendered["event_signals"]
                                 if _signal_for(signal, ven_id)]
    for signal in rendered["event_signals"]:
        signal.pop("current_value", None)
        value = current_value(event, signal, now)
        if value is not None:
            signal["current_value"] = value
        if "target" in signal:
            signal["target"] = _narrowed(signal["target"], ven_id)
    rendered["target"] = _narrowed(rendered.get("target") or {}, ven_id)
    _check_one_ven_id(rendered)
    return rendered


def _signal_for(signal: Mapping[str, Any], ven_id: str | None) -> bool:
    """Whether a signal may be sent to ``ven_id`` (None: a VEN not named by venID): it has no
    target of its own, or its target names the VEN, or selects VENs by membership (which the
    event's target already decided)."""
    target = signal.get("target") or {}
    if not target.get("ven_ids") or (ven_id is not None and ven_id in target["ven_ids"]):
        return True
    return any(target.get(key) for key in _VEN_SELECTING_KEYS if key != "ven_ids")


def _narrowed(target: Mapping[str, Any], ven_id: str) -> dict[str, Any]:
    # Other VENs named beside this one are none of its business, and the harness allows one.
    narrowed = copy.deepcopy(dict(target))
    narrowed["ven_ids"] = [ven_id] if ven_id in target.get("ven_ids", []) else []
    return narrowed
