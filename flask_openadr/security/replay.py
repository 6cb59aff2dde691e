"""Replay protection for signed messages: a fresh timestamp and a nonce never seen before.

The signed ``dsp:ReplayProtect`` of a message (see :mod:`.signature`) carries a timestamp and a
nonce. A message is accepted when its timestamp is within ``OPENADR_REPLAY_WINDOW`` of the VTN's
clock, in either direction (clocks drift both ways), and its nonce has not been used by the same
signer while it could still be accepted. Nonces live in the shared store
(:meth:`~flask_openadr.store.base.Store.remember_nonce`), so a replay is caught whichever worker
or host it reaches. Both refusals are 454 (Invalid data), like a signature that does not verify.

The two checks are separate steps, so that the nonce can be written with the first write the
message leads to (the services do that, see :func:`flask_openadr.services.handle`) instead of
in a transaction of its own: :func:`fresh` checks the timestamp and names the nonce, without
touching the store; :func:`remember` writes the nonce. :func:`check` does both at once.

This module needs neither lxml nor Flask, so that the services can use it.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from ..errors import InvalidData
from ..store.base import Store

if TYPE_CHECKING:
    from .signature import Verified

__all__ = ["Nonce", "check", "fresh", "remember", "replayed"]


@dataclass(frozen=True)
class Nonce:
    """The nonce of a signed message whose timestamp is fresh, as the store keeps it: ``key``
    is scoped by signer (so two VENs never collide), remembered from ``now`` until
    ``expires_at``."""

    key: str
    now: datetime
    expires_at: datetime
    #: The nonce as the VEN sent it, for the refusal's description.
    value: str


def fresh(verified: Verified, *, now: datetime, window: timedelta) -> Nonce:
    """Refuse a stale or future message; otherwise return its nonce, not yet remembered.

    Call it only after the signature verified: an attacker who cannot sign cannot use up
    another VEN's nonces.

    :raises ~flask_openadr.errors.InvalidData: 454, naming the timestamp.
    """
    skew = verified.timestamp - now
    if abs(skew) > window:
        direction = "ahead of" if skew > timedelta(0) else "behind"
        raise InvalidData(description=(
            f"dsp:timestamp {verified.timestamp.isoformat()} is {abs(skew.total_seconds()):.0f} s "
            f"{direction} the VTN's clock, outside OPENADR_REPLAY_WINDOW "
            f"({window.total_seconds():g} s); sign each message when it is sent and keep "
            "clocks synchronised (NTP)"))
    # A nonce matters while its message could be accepted, which ends ``window`` after its
    # timestamp.
    return Nonce(f"{verified.fingerprint}/{verified.nonce}", now,
                 max(verified.timestamp, now) + window, verified.nonce)


def replayed(nonce: Nonce) -> InvalidData:
    """The refusal (454) of a message whose nonce was used before."""
    return InvalidData(description=(
        f"dsp:nonce {nonce.value!r} was already used in a message from this signer "
        "(a replay); sign every message with a fresh random nonce"))


def remember(store: Store, nonce: Nonce) -> None:
    """Write ``nonce`` to the store, in a write of its own.

    :raises ~flask_openadr.errors.InvalidData: 454 when it was used before (a replay).
    """
    if not store.remember_nonce(nonce.key, nonce.now, nonce.expires_at):
        raise replayed(nonce)


def check(store: Store, verified: Verified, *, now: datetime, window: timedelta) -> None:
    """Refuse a stale, future or replayed message; remember its nonce otherwise
    (:func:`fresh`, then :func:`remember`).

    :raises ~flask_openadr.errors.InvalidData: 454, naming the timestamp or the nonce.
    """
    remember(store, fresh(verified, now=now, window=window))
