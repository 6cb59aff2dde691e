"""The index of due removals: what the retention sweep removes, found by when it finished.

An entry names one thing that finished (an event that ended or was cancelled, a report request
left waiting in ``final_report``) and is filed under the UTC hour it finished in: store records
of kind :data:`DUE`, owner the hour (``"2024-05-01T12"``), one per thing. The hours that hold
entries are records of kind :data:`HOURS` under the owner ``"*"``. A retention pass reads the
hours, takes those that began at least ``OPENADR_EVENT_RETENTION`` ago, and reads only their
entries: it costs what it removes (plus at most one hour of things that are not due yet), not
what the store holds.

Entries are written in the transaction that finishes the thing, and checked again against the
thing itself when they are taken, so an entry that went stale (an event modified to end later,
a request that was fulfilled after all) is dropped or filed again, never acted on. A thing may
have several entries (one per change); each is dropped when taken.

Entries are only ever inserted (puts of distinct keys, and of an hour that may exist already)
by the VEN paths, so a per-VEN block (``atomic(ven_id)``) may write them without another
VEN's block reading them; only :func:`drop_empty_hour`, in a VTN-wide block, removes an hour, and only the retention
sweep, in VTN-wide blocks, removes entries.
"""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any, Iterator

from .context import Context

#: Record kind of the entries, owner the hour they are filed under.
DUE = "removal_due"
#: Record kind of the hours that hold entries, owner :data:`_ALL`, key the hour.
HOURS = "removal_hours"
_ALL = "*"
#: What events are filed as (with the owner ``""``); other things are filed by record kind.
EVENT = "event"


def hour_of(instant: datetime) -> str:
    """The hour an instant is filed under: UTC ``YYYY-MM-DDTHH``, which sorts by time."""
    return instant.astimezone(timezone.utc).strftime("%Y-%m-%dT%H")


def add(ctx: Context, what: str, ven_id: str, key: str, finished: datetime) -> None:
    """File ``(what, ven_id, key)`` as finished at ``finished``; call it in the transaction
    that finishes it. ``what`` is a record kind, or :data:`EVENT` (``ven_id`` then ``""``)."""
    hour = hour_of(finished)
    entry_key = json.dumps([what, ven_id, key])
    ctx.store.put_record(DUE, hour, entry_key, {"what": what, "ven_id": ven_id, "key": key,
                                                "finished": finished})
    ctx.store.put_record(HOURS, _ALL, hour, {"hour": hour})


def due_hours(ctx: Context, now: datetime, keep: timedelta) -> list[str]:
    """The hours, oldest first, that may hold entries due at ``now``: those that began at
    least ``keep`` ago."""
    last = hour_of(now - keep)
    return sorted(h for h in (r["hour"] for r in ctx.store.list_records(HOURS, _ALL))
                  if h <= last)


def entries(ctx: Context, hour: str) -> Iterator[dict[str, Any]]:
    """The entries of one hour."""
    yield from ctx.store.list_records(DUE, hour)


def drop(ctx: Context, hour: str, entry: dict[str, Any]) -> None:
    """Remove one taken entry."""
    key = json.dumps([entry["what"], entry["ven_id"], entry["key"]])
    ctx.store.delete_record(DUE, hour, key)


def drop_empty_hour(ctx: Context, hour: str) -> bool:
    """Forget an hour whose entries are all taken; True when it was dropped. Checked inside a
    VTN-wide block, which the per-VEN blocks filing an entry there wait for (and
    :func:`add` files the hour again if one comes later)."""
    with ctx.store.atomic():
        if ctx.store.list_records(DUE, hour):
            return False
        ctx.store.delete_record(HOURS, _ALL, hour)
    return True
