"""The VENs as the operator manages them: enrolment before the first connection, targeting and
certificate changes, and the list of VENs with their liveness as it is now."""
from __future__ import annotations

from typing import Any, Iterable

from . import liveness
from ..protocol import is_registered
from ..store.base import VenRecord
from . import events, registration
from .context import Context

__all__ = ["enroll", "listing", "update"]

def _string_list(key: str, value: Iterable[str]) -> list[str]:
    # A string is iterable too: "g1" would silently become ["g", "1"].
    if isinstance(value, str):
        raise TypeError(f"{key} must be a list of strings, not the string {value!r}")
    return list(value)


def _refuse_taken(ctx: Context, ven_id: str, fingerprint: str) -> None:
    holder = ctx.store.get_ven_by_fingerprint(fingerprint)
    if holder is not None and holder["ven_id"] != ven_id:
        raise ValueError(f"fingerprint {fingerprint} already belongs to venID "
                         f"{holder['ven_id']!r}")


def update(ctx: Context, ven_id: str, *, group_ids: Iterable[str] | None = None,
           resource_ids: Iterable[str] | None = None, party_ids: Iterable[str] | None = None,
           group_names: Iterable[str] | None = None,
           fingerprint: str | None = None) -> VenRecord:
    """Change a VEN's groups, resources, parties or group names (None leaves one unchanged), or
    bind it to a new certificate; the events it joins or leaves reach it (see
    ``docs/events.rst``, "Who is told of a change").

    :param fingerprint: the canonical fingerprint of the VEN's new certificate, or None.
    :raises LookupError: the VEN is not known.
    :raises ValueError: the fingerprint belongs to another VEN.
    :raises TypeError: a list given as a string.
    """
    with ctx.store.atomic():
        ven = ctx.store.get_ven(ven_id)
        if ven is None:
            raise LookupError(f"VEN {ven_id!r} is not known to this VTN")
        if fingerprint is not None:
            _refuse_taken(ctx, ven_id, fingerprint)
            ven["fingerprint"] = fingerprint
        for key, value in (("group_ids", group_ids), ("resource_ids", resource_ids),
                           ("party_ids", party_ids), ("group_names", group_names)):
            if value is not None:
                ven[key] = _string_list(key, value)  # type: ignore[literal-required]
        ctx.store.put_ven(ven)
        events.refresh_ven(ctx, ven, ctx.now())
    return ven


def enroll(ctx: Context, ven_id: str, fingerprint: str, *, ven_name: str | None = None,
           group_ids: Iterable[str] | None = None, resource_ids: Iterable[str] | None = None,
           party_ids: Iterable[str] | None = None) -> VenRecord:
    """Store a VEN that is not registered yet, its venID bound to its certificate's
    (canonical) fingerprint.

    :returns: the new VEN record.
    :raises ValueError: ``ven_id`` is empty, or the venID or the fingerprint is already known.
    :raises TypeError: a targeting list given as a string.
    """
    if not isinstance(ven_id, str) or not ven_id:
        raise ValueError(f"ven_id must be a non-empty string, not {ven_id!r}")
    ven: VenRecord = {"ven_id": ven_id, "registration_id": None, "ven_name": ven_name,
                      "fingerprint": fingerprint, "registered_at": None}
    for key, value in (("group_ids", group_ids), ("resource_ids", resource_ids),
                       ("party_ids", party_ids)):
        ven[key] = _string_list(key, value or [])  # type: ignore[literal-required]
    with ctx.store.atomic():
        if ctx.store.get_ven(ven_id) is not None:
            raise ValueError(f"venID {ven_id!r} is already known to this VTN; change it "
                             "with update_ven")
        _refuse_taken(ctx, ven_id, fingerprint)
        ctx.store.put_ven(ven)
    return ven


def listing(ctx: Context) -> list[dict[str, Any]]:
    """Every VEN record with its liveness now: ``liveness`` (see
    :func:`flask_openadr.services.liveness.presence`), ``online``, ``last_seen``, ``offline_at`` and
    ``epoch`` (None for a VEN not seen since it registered); and ``cancel_requested``, whether
    the VTN waits for the VEN to answer its oadrCancelPartyRegistration (derived from that
    message, for registered VENs only: one outbox read each)."""
    rows = ctx.store.list_liveness()
    since = liveness.watching_since(ctx)
    now = ctx.now()
    listed = []
    for ven in ctx.store.list_vens():
        row = rows.get(ven["ven_id"])
        deadline = None
        if row is not None and row["offline_at"] is not None:
            # After an outage of the VTN, not before one deadline after it came back.
            deadline = liveness.offline_deadline(row["offline_at"], ven, ctx.settings, since)
        state = liveness.presence(row, now, deadline)
        listed.append(dict(ven, liveness=state,
                           online=None if state is None else state == "online",
                           last_seen=row["last_seen"] if row else None,
                           offline_at=deadline,
                           epoch=row["epoch"] if row else None,
                           cancel_requested=is_registered(ven) and registration.cancel_requested(
                               ctx, ven["ven_id"])))
    return listed
