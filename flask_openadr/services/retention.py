"""Retention: the background sweep that removes completed and cancelled events, in batches."""
from __future__ import annotations

from . import delivery
from .context import Context
from .event_state import finished_at

#: At most this many events are removed per pass, each in a short transaction of its own, so a
#: pass never holds the store for long; a backlog is worked off over the following passes.
BATCH = 200


def sweep(ctx: Context, limit: int = BATCH) -> int:
    """Remove up to ``limit`` events (with their VENs' responses) whose
    ``OPENADR_EVENT_RETENTION`` has passed, counted from :func:`finished_at`. Until then
    ``vtn.events()``, ``vtn.event_responses()`` and oadrRequestEvent still show them.

    The VENs' delivery records drop their entries for removed events at their next
    distribution. Finished report requests and acknowledged outbox messages need no sweep:
    they are removed when they finish (see docs/events.rst, "Retention").

    :returns: how many events were removed.
    """
    now = ctx.now()
    keep = ctx.settings.event_retention
    removed = 0
    for event in ctx.store.list_events():
        if removed >= limit:
            break
        finished = finished_at(event)
        if finished is None or finished + keep > now:
            continue
        event_id = event["event_descriptor"]["event_id"]
        with ctx.store.atomic():
            # Checked again inside the transaction: an operator may have changed or removed it
            # meanwhile.
            current = ctx.store.get_event(event_id)
            if current is None:
                continue
            again = finished_at(current)
            if again is None or again + keep > now:
                continue
            ctx.store.delete_event(event_id)
            ctx.store.delete_event_responses(event_id)
            delivery.unindex_event(ctx, current)
        removed += 1
    return removed
