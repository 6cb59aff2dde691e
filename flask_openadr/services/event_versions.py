"""Event versions: what modify_event changes, what counts as a change (rule 5), the next
modificationNumber, and which version of an event each VEN should hold."""
from __future__ import annotations

import copy
from datetime import datetime
from typing import Any, Mapping, NamedTuple

from ..errors import EventError
from .event_input import (
    as_test_event,
    derive_intervals,
    fill_uids,
    normalize_target,
    set_optional,
    stored_form,
)
from .event_rules import PERIOD_ARGUMENTS, check_mapping
from .event_state import event_status, is_cancelled
from .event_targets import targets_ven

__all__ = [
    "Version",
    "as_version",
    "changed_event",
    "next_version",
    "same_content",
    "version_for_ven",
]

# Fields that describe a version rather than the event; they never make a change (rule 5).
# Fields that describe a version rather than the event; they never make a change (rule 5).
_VERSION_FIELDS = ("modification_number", "modification_date_time", "modification_reason")


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
            set_optional(descriptor, key, changes[key])
    if "response_required" in changes:
        updated["response_required"] = changes["response_required"]
    if "test_event" in changes:
        value = changes["test_event"]
        set_optional(descriptor, "test_event", None if value is None else as_test_event(value))
    for argument, key in PERIOD_ARGUMENTS.items():
        if argument in changes:
            set_optional(updated["active_period"], key, changes[argument])
    if "targets" in changes or "ven_id" in changes:
        updated["target"] = normalize_target(changes.get("targets"), changes.get("ven_id"))
    return updated


def _replaced_content(current: dict[str, Any], event: Mapping[str, Any]) -> dict[str, Any]:
    replacement = stored_form(event)
    replacement.pop("cancelled", None)  # cancel_event cancels, not a modification
    descriptor = replacement.setdefault("event_descriptor", {})
    check_mapping(descriptor, "event.event_descriptor")
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
    fill_uids(replacement.get("event_signals"))
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
    set_optional(descriptor, "modification_reason", reason)
    return bumped


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
    if is_cancelled(event):
        return None if held is None else Version(current, True)
    status = event_status(event, now)
    if not targets_ven(event, ven):
        if held is None or (status == "completed" and held.modification_number == current):
            return held
        return Version(max(current, held.modification_number + 1), True)
    if status == "completed" and held is None:
        return None
    return Version(current, False)


def as_version(
    event: Mapping[str, Any], version: Version, ven: Mapping[str, Any]
) -> dict[str, Any]:
    """The stored ``event`` as the ``version`` a VEN is sent: a cancellation carries the
    version's modificationNumber and is cancelled (rendered with status "cancelled"), and,
    when the event no longer targets the VEN (a withdrawal), a target naming only that VEN,
    since a VEN may ignore an event whose target does not match it (protocol notes 5.2,
    Targets).

    :param event: the stored event; not modified.
    :param version: from :func:`version_for_ven`.
    :param ven: the receiving VEN record.
    """
    if not version.cancelled or (
        is_cancelled(event)
        and version.modification_number == event["event_descriptor"]["modification_number"]
        and targets_ven(event, ven)
    ):
        return dict(event)
    copied = copy.deepcopy(dict(event))
    copied["cancelled"] = True
    copied["event_descriptor"]["modification_number"] = version.modification_number
    if not targets_ven(event, ven):
        copied["target"] = normalize_target(None, ven["ven_id"])
        for signal in copied["event_signals"]:
            signal.pop("target", None)
    return copied
