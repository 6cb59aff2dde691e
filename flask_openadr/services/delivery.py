"""Per-VEN event delivery state: worked out when events or VENs change, read by each poll.

Each VEN has one delivery record (``store.get_delivered``)::

    {"events": {event_id: entry}, "due_at": datetime | None, "sent_at": datetime | None}

``events`` names every event the VEN holds or should be sent, with what it was last sent of it
(``{}`` when nothing yet): ``{"modification_number", "cancelled", "sent_at", "acknowledged"}``.
``due_at`` is the earliest instant at which a poll has something to distribute: set to "now"
by every change that may affect the VEN (fan-out on write), and after each distribution to the
next redelivery time of an unanswered version (or, with ``OPENADR_EVENT_REFRESH``, the next
refresh of a live event set), or None. ``sent_at`` is when the VEN was last sent an
oadrDistributeEvent. A poll whose VEN is not due reads this one record and nothing else,
whatever the number of VENs and events.

The rules for which version a VEN should hold live in
:func:`~flask_openadr.services.event_versions.version_for_ven`; this module only decides whom a
change may affect, and keeps the record.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterable, Iterator, Mapping

from ..store.base import VenRecord
from . import push_due, removals
from .context import Context
from .event_state import event_status, finished_at, is_cancelled, needs_acknowledgement
from .event_targets import order_events, targets_ven
from .event_versions import Version, as_version, version_for_ven
from .outbox import redelivery_after

#: How many VENs a fan-out reads and writes at once.
FAN_OUT_BATCH = 1000
#: Statuses in which an event goes to every VEN it targets.
LIVE_STATUSES = frozenset({"far", "near", "active"})
# Target keys that select VENs other than by venID: an event using one may reach any VEN.
_BY_MEMBERSHIP = ("group_ids", "resource_ids", "party_ids", "group_names")


def load(ctx: Context, ven_id: str) -> dict[str, Any]:
    """The VEN's delivery record (an empty one when it has none)."""
    return from_stored(ctx.store.get_delivered(ven_id))


def from_stored(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The delivery record a stored delivery map holds (an empty one for ``{}``)."""
    return {"events": dict(raw.get("events") or {}), "due_at": raw.get("due_at"),
            "sent_at": raw.get("sent_at")}


def save(ctx: Context, ven_id: str, record: dict[str, Any]) -> None:
    ctx.store.set_delivered(ven_id, record if record["events"] else {})


def _mark(record: dict[str, Any], event_id: str, now: datetime) -> None:
    record["events"].setdefault(event_id, {})
    if record["due_at"] is None or record["due_at"] > now:
        record["due_at"] = now


def is_due(record: Mapping[str, Any], now: datetime) -> bool:
    """Whether a poll at ``now`` must work out a distribution for the VEN."""
    return record["due_at"] is not None and record["due_at"] <= now


# ---------------------------------------------------------------------------------------------
# Fan-out on write.


def fan_out(ctx: Context, event: dict[str, Any], previous: dict[str, Any] | None,
            now: datetime, *, reached: list[VenRecord] | None = None) -> int:
    """Mark every VEN that ``event`` (the new version of ``previous``, or a new event) may
    affect: those targeted by either version. A VEN that holds a version of the event is
    marked whatever the change (a modification, a cancellation or a withdrawal must reach it);
    one that does not is marked only while the event is far, near or active (an event added
    after it ended is never sent). Call it inside the transaction that stores the event (every
    stored version goes through here, so it also files the version for the retention sweep).

    :param reached: for a new event (no ``previous``), the VENs it targets when the caller
        has read them already (see :func:`vens_reached`); None reads them here.
    :returns: how many VENs were marked.
    """
    event_id = event["event_descriptor"]["event_id"]
    finished = finished_at(event)
    if finished is not None:
        removals.add(ctx, removals.EVENT, "", event_id, finished)
    live = event_status(event, now) in LIVE_STATUSES
    versions = [event] if previous is None else [event, previous]
    marked = 0
    batch: list[VenRecord] = []
    candidates = reached if reached is not None and previous is None \
        else _candidates(ctx, versions)
    for ven in candidates:
        if any(targets_ven(version, ven) for version in versions):
            batch.append(ven)
        if len(batch) >= FAN_OUT_BATCH:
            marked += _mark_batch(ctx, batch, event, event_id, live, now)
            batch = []
    if batch:
        marked += _mark_batch(ctx, batch, event, event_id, live, now)
    return marked


def _mark_batch(ctx: Context, vens: list[VenRecord], event: dict[str, Any], event_id: str,
                live: bool, now: datetime) -> int:
    # One read and one write for the whole batch: thousands of VENs cost a few round trips.
    found = ctx.store.get_delivered_many([ven["ven_id"] for ven in vens])
    changed: dict[str, dict[str, Any]] = {}
    for ven in vens:
        raw = found[ven["ven_id"]]
        record = from_stored(raw)
        if event_id in record["events"] or (live and targets_ven(event, ven)):
            _mark(record, event_id, now)
            changed[ven["ven_id"]] = record
    if changed:
        ctx.store.set_delivered_many(changed)
        for ven in vens:
            if ven["ven_id"] in changed:
                push_due.mark(ctx, ven)
    return len(changed)


def _candidates(ctx: Context, versions: list[dict[str, Any]]) -> Iterator[VenRecord]:
    # An event aimed at venIDs only is looked up VEN by VEN; any other may reach every VEN.
    targets = [version.get("target") or {} for version in versions]
    if all(target.get("ven_ids") and not any(target.get(k) for k in _BY_MEMBERSHIP)
           for target in targets):
        for ven_id in sorted({v for target in targets for v in target["ven_ids"]}):
            ven = ctx.store.get_ven(ven_id)
            if ven is not None:
                yield ven
    else:
        yield from ctx.store.list_vens()


def vens_reached(ctx: Context, event: Mapping[str, Any]) -> list[VenRecord] | None:
    """The VENs ``event`` targets (see :func:`targets_ven`), or None when it aims at every VEN.
    Reads the VENs it names by venID, or every VEN when it targets by membership."""
    target = event.get("target") or {}
    if not any(target.get(key) for key in _VEN_KEYS):
        return None
    return [ven for ven in _candidates(ctx, [dict(event)]) if targets_ven(event, ven)]


def refresh_ven(ctx: Context, ven: VenRecord, now: datetime, *, fresh: bool = False) -> None:
    """Mark the events a change of ``ven``'s targeting (groups, resources, parties,
    report-only) may affect: events that now target it and it does not hold, and events it
    holds that no longer target it (a withdrawal). ``fresh`` starts from an empty record (a new
    registration: every current event is sent again). Call it inside the transaction that
    stores the VEN record.

    Only the events the target index (:func:`index_event`) lists for the VEN's venID, groups,
    resources and parties, those aimed at every VEN, and those it holds are read, not every
    stored event."""
    ven_id = ven["ven_id"]
    record = {"events": {}, "due_at": None, "sent_at": None} if fresh else load(ctx, ven_id)
    changed = fresh
    candidates = dict.fromkeys(record["events"])
    for selector in _ven_selectors(ven):
        for entry in ctx.store.list_records(EVENT_TARGETS, selector):
            candidates[entry["event_id"]] = None
    for event_id in candidates:
        event = ctx.store.get_event(event_id)
        if event is None:
            continue
        entry = record["events"].get(event_id)
        if entry is None:
            if targets_ven(event, ven) and event_status(event, now) in LIVE_STATUSES:
                _mark(record, event_id, now)
                changed = True
        elif not targets_ven(event, ven) and not entry.get("cancelled"):
            _mark(record, event_id, now)
            changed = True
    if changed:
        save(ctx, ven_id, record)
        if is_due(record, now):
            push_due.mark(ctx, ven)


# ---------------------------------------------------------------------------------------------
# The target index: which events may concern a VEN, without reading every event.

#: Store record kind of the target index. Under the owner ``"<target key>:<value>"`` (such as
#: ``"group_ids:north"``), or ``"*"`` for events that name no VEN, group, resource or party, one
#: record ``{"event_id"}`` per event whose target names it, keyed by eventID.
EVENT_TARGETS = "event_target"
_EVERY_VEN = "*"
_VEN_KEYS = ("ven_ids", "group_ids", "resource_ids", "party_ids", "group_names")


def _event_selectors(event: Mapping[str, Any]) -> set[str]:
    target = event.get("target") or {}
    found = {f"{key}:{value}" for key in _VEN_KEYS for value in target.get(key) or []}
    return found or {_EVERY_VEN}


def _ven_selectors(ven: Mapping[str, Any]) -> list[str]:
    selectors = [_EVERY_VEN, f"ven_ids:{ven['ven_id']}"]
    for key in _VEN_KEYS[1:]:
        selectors.extend(f"{key}:{value}" for value in ven.get(key) or [])
    return selectors


def index_event(ctx: Context, event: Mapping[str, Any],
                previous: Mapping[str, Any] | None = None) -> None:
    """Keep the target index right for a new or changed event; inside the transaction that
    stores it."""
    event_id = event["event_descriptor"]["event_id"]
    new = _event_selectors(event)
    old = _event_selectors(previous) if previous is not None else set()
    for selector in sorted(old - new):
        ctx.store.delete_record(EVENT_TARGETS, selector, event_id)
    for selector in sorted(new - old):
        ctx.store.put_record(EVENT_TARGETS, selector, event_id, {"event_id": event_id})


def indexed_events(ctx: Context, event: Mapping[str, Any],
                   reached: Iterable[Mapping[str, Any]]) -> list[str]:
    """The eventIDs the target index lists under ``event``'s own targets, under the targets of
    every VEN in ``reached`` (venID, groups, resources, parties) and as aimed at every VEN, in
    the order first found: every event that may share a VEN with ``event`` when ``reached``
    holds the VENs it targets (an event that shares one names it, or one of its groups,
    resources or parties, or every VEN)."""
    selectors = dict.fromkeys([_EVERY_VEN, *sorted(_event_selectors(event))])
    for ven in reached:
        selectors.update(dict.fromkeys(_ven_selectors(ven)))
    found: dict[str, None] = {}
    for selector in selectors:
        for entry in ctx.store.list_records(EVENT_TARGETS, selector):
            found[entry["event_id"]] = None
    return list(found)


def unindex_event(ctx: Context, event: Mapping[str, Any]) -> None:
    """Drop a removed event from the target index; inside the transaction that removes it."""
    event_id = event["event_descriptor"]["event_id"]
    for selector in sorted(_event_selectors(event)):
        ctx.store.delete_record(EVENT_TARGETS, selector, event_id)


# ---------------------------------------------------------------------------------------------
# Planning and recording a distribution.


@dataclass
class Planned:
    """One event of the next oadrDistributeEvent to a VEN: the version sent, and why."""

    event: dict[str, Any]  # the stored event as this version (see as_version)
    version: Version
    changed: bool  # the VEN does not hold this version yet
    acknowledged: bool  # the entry's "acknowledged" after sending


@dataclass
class Plan:
    """What the next oadrDistributeEvent to a VEN carries (``planned``, in sending order) and
    whether one is due now (``due``: a version the VEN does not hold, or an unanswered one whose
    redelivery time has come)."""

    planned: list[Planned]
    due: bool


def held(entry: Any) -> Version | None:
    """The version an entry of the delivery record says the VEN holds, or None."""
    if not isinstance(entry, Mapping) or "modification_number" not in entry:
        return None
    return Version(entry["modification_number"], bool(entry.get("cancelled")))


def events_of(ctx: Context, record: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The stored events the record names (deleted ones are left out)."""
    found = (ctx.store.get_event(event_id) for event_id in record["events"])
    return [event for event in found if event is not None]


def plan(ctx: Context, ven: VenRecord, stored: Iterable[dict[str, Any]],
         entries: Mapping[str, Any], now: datetime, *, completed: bool = False,
         sent_at: datetime | None = None) -> Plan:
    """Work out the next oadrDistributeEvent to ``ven`` from ``stored`` events and its
    delivery entries: every far, near and active event it holds or should hold, every version it
    does not hold yet, and every version it has not answered although it must (sent again once
    :func:`~flask_openadr.services.outbox.redelivery_after` has passed since it was last sent).
    ``completed`` also lists the events that ended at the version the VEN holds (an
    oadrRequestEvent shows them until the retention sweep removes them). With
    ``OPENADR_EVENT_REFRESH``, a VEN last sent a distribution at ``sent_at`` is due again once
    that period has passed, while it holds a far, near or active event.
    """
    wait = redelivery_after(ctx, ven)
    planned: list[Planned] = []
    due = False
    for event in stored:
        entry = entries.get(event["event_descriptor"]["event_id"]) or {}
        was = held(entry)
        version = version_for_ven(event, ven, was, now)
        if version is None:
            continue
        changed = version != was
        answer = needs_acknowledgement(event, now)
        unanswered = not changed and answer and not entry.get("acknowledged")
        status = event_status(event, now)
        live = not version.cancelled and (
            status in LIVE_STATUSES or (completed and status == "completed"))
        if changed or unanswered:
            sent_at = None if changed else entry.get("sent_at")
            due = due or changed or sent_at is None or sent_at + wait <= now
        if changed or unanswered or live:
            planned.append(Planned(as_version(event, version, ven), version, changed,
                                   acknowledged=not answer or not (changed or unanswered)))
    refresh = _refresh_at(ctx, sent_at, planned)
    due = due or (refresh is not None and refresh <= now)
    order = {id(e): n for n, e in enumerate(order_events([p.event for p in planned], now))}
    planned.sort(key=lambda p: order[id(p.event)])
    return Plan(planned, due)


def _refresh_at(ctx: Context, sent_at: datetime | None,
                planned: Iterable[Planned]) -> datetime | None:
    """When an unchanged event set is next sent again (``OPENADR_EVENT_REFRESH``): only while
    it holds an event that is not cancelled (a refresh lists far, near and active events)."""
    if ctx.settings.event_refresh is None or sent_at is None:
        return None
    if not any(not p.version.cancelled for p in planned):
        return None
    return sent_at + ctx.settings.event_refresh


def after_sending(ctx: Context, ven: VenRecord, record: dict[str, Any],
                  stored: list[dict[str, Any]], sent: list[Planned], now: datetime) -> None:
    """Record that ``sent`` went to the VEN at ``now`` and work out when it is next due; drop
    the entries that can no longer matter (deleted events, answered cancellations of cancelled
    events, events marked but never sent that have nothing left to send)."""
    by_id = {event["event_descriptor"]["event_id"]: event for event in stored}
    entries = record["events"]
    for item in sent:
        entries[item.event["event_descriptor"]["event_id"]] = {
            "modification_number": item.version.modification_number,
            "cancelled": item.version.cancelled,
            "sent_at": now,
            "acknowledged": item.acknowledged,
        }
    if sent:
        record["sent_at"] = now
    for event_id in list(entries):
        event = by_id.get(event_id)
        if event is None or _finished(event, ven, entries[event_id], now):
            del entries[event_id]
    record["due_at"] = next_due(ctx, ven, record, by_id, now)
    save(ctx, ven["ven_id"], record)


def _finished(event: Mapping[str, Any], ven: VenRecord, entry: Mapping[str, Any],
              now: datetime) -> bool:
    was = held(entry)
    if was is None:
        # Marked but never sent: finished when there is nothing to send it any more (it ended,
        # or was cancelled, before the VEN polled).
        return version_for_ven(event, ven, None, now) is None
    current = event["event_descriptor"]["modification_number"]
    if is_cancelled(event):
        # A cancelled event cannot change again: once the VEN has the cancellation (and
        # answered it, when it must), nothing more is ever sent.
        return was.cancelled and bool(entry.get("acknowledged")) and \
            was.modification_number >= current
    # Anything else stays until the retention sweep deletes the event: a completed event is
    # still shown to oadrRequestEvent, and a withdrawal keeps the event from that VEN.
    return False


def next_due(ctx: Context, ven: VenRecord, record: Mapping[str, Any],
             by_id: Mapping[str, dict[str, Any]], now: datetime) -> datetime | None:
    """When the VEN is next due: ``now`` while an entry has never been sent (a reply limit
    left it out), else the earliest redelivery of an unanswered version or refresh of a live
    event set (``OPENADR_EVENT_REFRESH``), else None."""
    wait = redelivery_after(ctx, ven)
    due = None
    refresh = ctx.settings.event_refresh
    for event_id, entry in record["events"].items():
        if held(entry) is None:
            return now
        event = by_id.get(event_id)
        if (refresh is not None and record.get("sent_at") is not None and event is not None
                and not held(entry).cancelled  # type: ignore[union-attr]
                and event_status(event, now) in LIVE_STATUSES):
            at = record["sent_at"] + refresh
            due = at if due is None or at < due else due
        if (event is not None and not entry.get("acknowledged")
                and needs_acknowledgement(event, now)):
            at = entry["sent_at"] + wait
            due = at if due is None or at < due else due
    return due


def acknowledge(ctx: Context, ven_id: str, answers: Iterable[tuple[str, int]]) -> None:
    """The VEN answered these (event_id, modification_number): an answer to the version it was
    last sent ends that version's redelivery (optIn or optOut alike: either says it has it)."""
    record = load(ctx, ven_id)
    changed = False
    for event_id, number in answers:
        entry = record["events"].get(event_id)
        was = held(entry)
        if was is not None and not entry.get("acknowledged") and was.modification_number == number:
            entry["acknowledged"] = True
            changed = True
    if changed:
        save(ctx, ven_id, record)
