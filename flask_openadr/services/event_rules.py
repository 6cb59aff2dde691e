"""OpenADR 2.0b conformance rules of an event, checked when it is made: each rule here and
nowhere else, naming the rule (or field), the value and what is allowed."""
from __future__ import annotations

import math
import sys
from datetime import timedelta
from typing import Any, Callable, Iterable, Mapping

from .. import enums
from ..errors import EventError
from ..protocol import is_aware, is_extension_token, is_open_ended
from .event_state import SIMPLE_SIGNAL_NAMES
from .event_targets import TARGET_KEYS, VEN_SELECTING_KEYS, check_one_ven_id, signal_for

__all__ = [
    "PERIOD_ARGUMENTS",
    "SIGNAL_NAMES",
    "SIGNAL_RULES",
    "SIGNAL_TYPES",
    "check_datetime",
    "check_duration",
    "check_mapping",
    "check_number",
    "validate_event",
]

# The XSD enumerations (flask_openadr.enums) as sets: the signal rules below are written in
# terms of the signal's name and type, so these two are checked before them (the codec checks
# every other enumeration when the event is encoded). signalName also takes "x-" extension
# tokens, signalType does not.
SIGNAL_TYPES = frozenset(enums.SIGNAL_TYPES)
SIGNAL_NAMES = frozenset(enums.SIGNAL_NAMES)
SIMPLE_LEVELS = frozenset({0, 1, 2, 3})  # normal, moderate, high, special (rule 9)

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
# The codec takes any string as a device class; the 2.0b profile names these.
DEVICE_CLASSES = frozenset(enums.DEVICE_CLASSES)
#: The active-period keys, by the build_event/modify_event argument that sets each.
PERIOD_ARGUMENTS = {
    "start_after": "start_after",
    "notification_period": "notification",
    "ramp_up_period": "ramp_up",
    "recovery_period": "recovery",
}


def validate_event(event: Mapping[str, Any]) -> None:
    """Check an event against the conformance rules; raise :class:`EventError` on the first
    violation, naming the rule (or field), the offending value and what is allowed.

    The XSD's own types of the fields no rule here reads (priority, response_required, the
    version's time and reason, testEvent, vtnComment, itemBase) are left to the codec: every
    event is also encoded once when it is made
    (:func:`~flask_openadr.services.events.check_sendable`), which names the field and the
    value as clearly. The fields the rules compute with are checked here first, so that a
    wrong type is reported rather than raising in the middle of a rule.

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
    if event.get("cancelled", True) is not True:
        raise EventError(f"cancelled is {event['cancelled']!r}; a cancelled event says True, "
                         "any other leaves the key out")
    if "created_date_time" in descriptor:
        check_one_ven_id(event)
    _check_signal_targets(event)


def _validate_descriptor(descriptor: Any) -> None:
    path = "event_descriptor"
    check_mapping(descriptor, path)
    _check_text(descriptor.get("event_id"), f"{path}.event_id")
    # Rules 4 and 5 count modification numbers.
    _check_uint(descriptor.get("modification_number"), f"{path}.modification_number")
    # Overlaps compare market contexts; an empty one (a valid xs:anyURI) would name no program.
    _check_text(descriptor.get("market_context"), f"{path}.market_context")


def _validate_active_period(period: Any) -> None:
    path = "active_period"
    check_mapping(period, path)
    check_datetime(period.get("dtstart"), f"{path}.dtstart")
    check_duration(period.get("duration"), f"{path}.duration")
    for key in PERIOD_ARGUMENTS.values():
        _check_optional(period, key, check_duration, path)


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
        check_mapping(signal, path)
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


def _validate_signal_kind(signal: Mapping[str, Any], path: str) -> None:
    name = signal.get("signal_name")
    if not isinstance(name, str) or not (name in SIGNAL_NAMES or is_extension_token(name)):
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
    summed = timedelta(0)
    for index, interval in enumerate(intervals):
        where = f"{path}.intervals[{index}]"
        check_mapping(interval, where)
        if "dtstart" in interval:
            raise EventError(
                f"{where} has dtstart {interval['dtstart']!r}; event intervals carry no "
                "dtstart, their starts follow from the active period's dtstart"
            )
        check_duration(interval.get("duration"), f"{where}.duration")
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
    check_number(payload, f"{where}.signal_payload")
    if simple and payload not in SIMPLE_LEVELS:
        raise EventError(
            f"rule 9: {where}.signal_payload is {payload!r}; a SIMPLE signal's payloads must "
            "be 0 (normal), 1 (moderate), 2 (high) or 3 (special)"
        )


def _check_durations_sum(
    intervals: list[Mapping[str, Any]], summed: timedelta, total: timedelta, path: str
) -> None:
    if is_open_ended(total):
        # Rule 8 for an open-ended event (rule 47): one PT0S interval, nothing else sums to 0.
        if len(intervals) != 1 or not is_open_ended(intervals[0]["duration"]):
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
    check_mapping(baseline, path)
    check_datetime(baseline.get("dtstart"), f"{path}.dtstart")
    check_duration(baseline.get("duration"), f"{path}.duration")
    _validate_intervals(baseline.get("intervals"), baseline["duration"], path, payloads=False)


def _validate_target(target: Any, path: str) -> None:
    check_mapping(target, path)
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
    by_membership = not named or any(target.get(key) for key in VEN_SELECTING_KEYS
                                     if key != "ven_ids")
    reached = [*named, *([None] if by_membership else [])]
    for ven_id in reached:
        if not any(signal_for(signal, ven_id) for signal in event["event_signals"]):
            who = f"venID {ven_id!r}" if ven_id is not None else "a VEN chosen by group, " \
                "resource or party (or every VEN)"
            raise EventError(f"event_signals: no signal is aimed at {who}, which the event's "
                             "target reaches; give that VEN a signal, or leave it out of the "
                             "target")


def _required(mapping: Mapping[str, Any], key: str, path: str) -> Any:
    if key not in mapping:
        raise EventError(f"{path} has no {key}; it is required")
    return mapping[key]


def _check_optional(
    mapping: Mapping[str, Any], key: str, check: Callable[[Any, str], None], path: str
) -> None:
    if key in mapping:
        check(mapping[key], f"{path}.{key}")


def check_mapping(value: Any, path: str) -> None:
    if not isinstance(value, Mapping):
        raise EventError(f"{path} is {value!r}; it must be a dict")


def _check_text(value: Any, path: str) -> None:
    if not isinstance(value, str) or not value:
        raise EventError(f"{path} is {value!r}; it must be a non-empty string")


def _check_uint(value: Any, path: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise EventError(f"{path} is {value!r}; it must be a non-negative int (xs:unsignedInt)")


def check_number(value: Any, path: str) -> float:
    """``value`` as the float a payload is, refused unless it is a finite int or float.

    :raises EventError: naming ``path`` and the value.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise EventError(f"{path} is {value!r}; it must be a finite number")
    try:
        number = float(value)
    except OverflowError:
        # An int beyond a float's range; its repr may run to thousands of digits (or refuse
        # to be made at all beyond sys.get_int_max_str_digits), so name its magnitude.
        sign = "-" if value < 0 else ""
        raise EventError(
            f"{path} is about {sign}10**{int(math.log10(abs(value)))}, beyond a float's "
            f"range; it must be a finite number, at most {sys.float_info.max:.1e} in size"
        ) from None
    if not math.isfinite(number):
        raise EventError(f"{path} is {value!r}; it must be a finite number")
    return number


def check_datetime(value: Any, path: str) -> None:
    if not is_aware(value):
        raise EventError(f"{path} is {value!r}; it must be a timezone-aware datetime (UTC)")


def check_duration(value: Any, path: str) -> None:
    if not isinstance(value, timedelta) or value < timedelta(0):
        raise EventError(f"{path} is {value!r}; it must be a non-negative timedelta")


def _check_choice(value: Any, allowed: Iterable[str], path: str) -> None:
    if not isinstance(value, str) or value not in allowed:
        raise EventError(f"{path} is {value!r}; it must be one of {sorted(allowed)}")
