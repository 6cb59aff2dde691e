"""Which push VENs may have something to push: the hints a sender pass reads, so that a pass
costs in proportion to the push VENs with something due, not to every push VEN.

Two record collections, each keyed by venID: under the owner ``"now"`` the VENs a change may
have given something to push now (an event for them was added or changed, a message was queued
for them); under ``"later"`` the VENs that have something due at a known instant, ``{"ven_id",
"at"}`` (an unanswered message due again, a back-off that ends). Changes add "now" hints inside
their own transaction (:func:`mark`); a sender ends each turn by working out the VEN's next due
instant from its own data and putting the one hint that says so (:func:`schedule`). A hint that
turns out stale costs one sender step; a hint that is missing is made up for by the sender's
full pass over every push VEN, which runs now and then (see :mod:`flask_openadr.push`).

A VEN's hints are that VEN's data (only transactions that may write its data write them, and
those are serialised for it) kept under shared owners, so that a pass lists them in one read.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any, Mapping

from ..protocol import is_registered
from .context import Context

#: Store record kind of the hints.
PUSH_DUE = "push_due"
_NOW = "now"
_LATER = "later"


def is_push(ven: Mapping[str, Any]) -> bool:
    """Whether the VTN pushes to this VEN: registered, for push, with an address."""
    return is_registered(ven) and ven.get("http_pull_model") is False \
        and bool(ven.get("transport_address"))


def mark(ctx: Context, ven: Mapping[str, Any]) -> None:
    """A change may have given ``ven`` something to push now: hint the senders, when it is a
    push VEN. Inside the transaction of the change."""
    if is_push(ven):
        ctx.store.put_record(PUSH_DUE, _NOW, ven["ven_id"], {"ven_id": ven["ven_id"]})


def schedule(ctx: Context, ven_id: str, at: datetime | None, now: datetime) -> None:
    """A sender's turn for the VEN ended: hint that it next has something due at ``at`` (at
    once when ``at <= now``), or nothing (None). Inside the transaction of the release, which
    read what ``at`` is worked out from. (Written without reading the hints first: a delete
    of a hint that is not there costs less than the read that would skip it.)"""
    if at is not None and at <= now:
        ctx.store.put_record(PUSH_DUE, _NOW, ven_id, {"ven_id": ven_id})
    else:
        ctx.store.delete_record(PUSH_DUE, _NOW, ven_id)
    if at is not None and at > now:
        ctx.store.put_record(PUSH_DUE, _LATER, ven_id, {"ven_id": ven_id, "at": at})
    else:
        ctx.store.delete_record(PUSH_DUE, _LATER, ven_id)


def hinted(ctx: Context, now: datetime, *, later: bool) -> list[str]:
    """The venIDs hinted as due now, and with ``later`` those whose "later" instant has come
    (one read each)."""
    found = dict.fromkeys(record["ven_id"] for record in ctx.store.list_records(PUSH_DUE, _NOW))
    if later:
        found.update(dict.fromkeys(record["ven_id"]
                                   for record in ctx.store.list_records(PUSH_DUE, _LATER)
                                   if record["at"] <= now))
    return list(found)
