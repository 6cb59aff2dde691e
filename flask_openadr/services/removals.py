"""The index of due removals: what the retention sweep removes, found by when it finished.

An entry names one thing that finished (an event that ended or was cancelled, a report request
left waiting in ``final_report``) and is filed at the instant it finished, in the store's due
index :data:`INDEX` (:meth:`~flask_openadr.store.base.Store.set_due`), member the thing's key.
A retention pass reads the entries filed at least ``OPENADR_EVENT_RETENTION`` ago, and only
those: it costs what it removes, not what the store holds.

A thing has one entry, filed by the transaction that finishes it (a later one, such as a
modification of the event, files it again at its new instant). Entries are checked again
against the thing itself when they are taken, so an entry that went stale (an event modified to
end later or to be open-ended, a request that was fulfilled after all) is filed again or
dropped, never acted on.

Locking: an event's entry is written in the VTN-wide block that stores the event, a report
request's in its VEN's block (the entry is that VEN's data, and no other VEN's block writes
it); the retention sweep takes entries in VTN-wide blocks.
"""
from __future__ import annotations

import json
from datetime import datetime
from typing import NamedTuple

from .context import Context

#: The store's due index of the entries.
INDEX = "removal"
#: What events are filed as (with the owner ``""``); other things are filed by record kind.
EVENT = "event"


class Entry(NamedTuple):
    """One due removal: ``what`` (a record kind, or :data:`EVENT`), the owner's venID (``""``
    for an event), the thing's key, and when it finished."""

    what: str
    ven_id: str
    key: str
    finished: datetime


def _member(what: str, ven_id: str, key: str) -> str:
    # A JSON array, which no key can make ambiguous (and which escapes any NUL).
    return json.dumps([what, ven_id, key])


def add(ctx: Context, what: str, ven_id: str, key: str, finished: datetime) -> None:
    """File ``(what, ven_id, key)`` as finished at ``finished``, replacing the instant it was
    filed at; call it in the transaction that finishes it. ``what`` is a record kind, or
    :data:`EVENT` (``ven_id`` then ``""``)."""
    ctx.store.set_due(INDEX, _member(what, ven_id, key), finished)


def due(ctx: Context, upto: datetime, limit: int) -> list[Entry]:
    """Up to ``limit`` entries that finished at ``upto`` or before, the earliest first."""
    found = []
    for member, finished in ctx.store.list_due(INDEX, upto, limit):
        what, ven_id, key = json.loads(member)
        found.append(Entry(what, ven_id, key, finished))
    return found


def drop(ctx: Context, entry: Entry) -> None:
    """Remove one taken entry."""
    ctx.store.set_due(INDEX, _member(entry.what, entry.ven_id, entry.key), None)
