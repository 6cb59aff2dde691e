"""Retention: the background sweep that removes finished events and report requests, in batches.
"""
from __future__ import annotations

from datetime import datetime, timedelta

from . import delivery, removals
from .context import Context
from .event_state import finished_at
from .reports import REPORT_REQUEST
from .vtn_reports import VTN_REPORT_REQUEST

#: At most this many things are removed per pass, each in a short transaction of its own, so a
#: pass never holds the store for long; a backlog is worked off over the following passes.
BATCH = 200
#: The report request kinds whose ``final_report`` requests expire (one more report was
#: promised and never came).
_REQUEST_KINDS = (REPORT_REQUEST, VTN_REPORT_REQUEST)


def sweep(ctx: Context, limit: int = BATCH) -> int:
    """Remove up to ``limit`` things whose ``OPENADR_EVENT_RETENTION`` has passed: events
    (with their VENs' responses), counted from :func:`finished_at`, and report requests that
    waited in ``final_report`` for a last report that never came, counted from when they began
    to wait. Until then ``vtn.events()``, ``vtn.event_responses()`` and oadrRequestEvent still
    show the events. They are found through :mod:`.removals`, so a pass reads only the entries
    that are due, not every event.

    The VENs' delivery records drop their entries for removed events at their next
    distribution. Fulfilled report requests and acknowledged outbox messages need no sweep:
    they are removed when they finish (see docs/events.rst, "Retention").

    :returns: how many events and report requests were removed.
    """
    now = ctx.now()
    keep = ctx.settings.event_retention
    removed = 0
    while removed < limit:
        wanted = limit - removed
        entries = removals.due(ctx, now - keep, wanted)
        for entry in entries:
            removed += _take(ctx, entry, now, keep)
        # Every entry taken left the due part of the index (dropped, removed, or filed again
        # at a later instant): a short read means nothing more is due.
        if len(entries) < wanted:
            break
    return removed


def _take(ctx: Context, entry: removals.Entry, now: datetime, keep: timedelta) -> int:
    """Remove what one entry names if it is due, checked again inside the transaction (an
    operator or the VEN may have changed it meanwhile); 1 when something was removed. A stale
    entry is dropped, or filed again at the instant its thing now finishes."""
    with ctx.store.atomic():
        if entry.what == removals.EVENT:
            current = ctx.store.get_event(entry.key)
            finished = finished_at(current) if current is not None else None
            if finished is not None and finished + keep > now:
                removals.add(ctx, removals.EVENT, "", entry.key, finished)
                return 0  # not yet: filed at its new instant
            removals.drop(ctx, entry)
            if current is None or finished is None:
                return 0  # gone already, or open-ended again: filed anew when it finishes
            ctx.store.delete_event(entry.key)
            ctx.store.delete_event_responses(entry.key)
            delivery.unindex_event(ctx, current)
            return 1
        # A request's entry is due as read (it began to wait at least ``keep`` ago).
        request = ctx.store.get_record(entry.what, entry.ven_id, entry.key) \
            if entry.what in _REQUEST_KINDS else None
        removals.drop(ctx, entry)
        if request is None or request.get("state") != "final_report":
            return 0  # fulfilled (and removed), or never a request this sweep expires
        ctx.store.delete_record(entry.what, entry.ven_id, entry.key)
        return 1
