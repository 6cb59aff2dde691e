"""Which push VENs may have something to push: the hints a sender pass reads, so that a pass
costs in proportion to the push VENs with something due, not to every push VEN.

The hints are one due index of the store (:meth:`~flask_openadr.store.base.Store.set_due`),
:data:`INDEX`, member the venID, filed at the instant the VEN is next due: "now" for a VEN a
change may have given something to push now (an event for it was added or changed, a message
was queued for it), a later instant for one with something due then (an unanswered message due
again, a back-off that ends). Changes file the VEN at "now" inside their own transaction
(:func:`mark`); a sender ends each turn by working out the VEN's next due instant from its own
data and filing the VEN there, or removing it (:func:`schedule`), as a poll of a push VEN that
takes a message does. A sender pass reads only the members due at its instant (:func:`hinted`).
A hint that turns out stale costs one sender step; a hint that is missing is made up for by the
sender's sweep of every push VEN, a slice of them each pass (see :mod:`flask_openadr.push`).

A VEN's hint is that VEN's data: only transactions that may write its data (its own per-VEN
block, or a VTN-wide one) file it, and those are serialised for it.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any, Mapping

from ..protocol import is_registered
from .context import Context

#: The store's due index of the hints, member the venID.
INDEX = "push"


def is_push(ven: Mapping[str, Any]) -> bool:
    """Whether the VTN pushes to this VEN: registered, for push, with an address."""
    return is_registered(ven) and ven.get("http_pull_model") is False \
        and bool(ven.get("transport_address"))


def mark(ctx: Context, ven: Mapping[str, Any]) -> None:
    """A change may have given ``ven`` something to push now: hint the senders, when it is a
    push VEN. Inside the transaction of the change. (A later instant the VEN was filed at is
    replaced: the sender's turn that follows files it again from its data.)"""
    if is_push(ven):
        ctx.store.set_due(INDEX, ven["ven_id"], ctx.now())


def schedule(ctx: Context, ven_id: str, at: datetime | None) -> None:
    """A sender's turn for the VEN ended: hint that it next has something due at ``at`` (at
    once when ``at`` has passed), or nothing (None). Inside the transaction of the release,
    which read what ``at`` is worked out from."""
    ctx.store.set_due(INDEX, ven_id, at)


def hinted(ctx: Context, now: datetime, limit: int) -> list[str]:
    """The venIDs hinted as due at ``now``, the earliest first, at most ``limit`` (one read)."""
    return [ven_id for ven_id, _ in ctx.store.list_due(INDEX, now, limit)]
