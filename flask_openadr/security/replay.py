"""Replay protection for signed messages: a fresh timestamp and a nonce never seen before.

The signed ``dsp:ReplayProtect`` of a message (see :mod:`.signature`) carries a timestamp and a
nonce. A message is accepted when its timestamp is within ``OPENADR_REPLAY_WINDOW`` of the VTN's
clock, in either direction (clocks drift both ways), and its nonce has not been used by the same
signer while it could still be accepted. Nonces live in the shared store
(:meth:`~flask_openadr.store.base.Store.remember_nonce`), so a replay is caught whichever worker
or host it reaches. Both refusals are 454 (Invalid data), like a signature that does not verify.
"""
from __future__ import annotations

from datetime import datetime, timedelta

from ..errors import InvalidData
from ..store.base import Store
from .signature import Verified

__all__ = ["check"]


def check(store: Store, verified: Verified, *, now: datetime, window: timedelta) -> None:
    """Refuse a stale, future or replayed message; remember its nonce otherwise.

    Call it only after the signature verified: an attacker who cannot sign cannot use up
    another VEN's nonces.

    :raises ~flask_openadr.errors.InvalidData: 454, naming the timestamp or the nonce.
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
    # timestamp; scoped by signer, so two VENs never collide.
    expires_at = max(verified.timestamp, now) + window
    if not store.remember_nonce(f"{verified.fingerprint}/{verified.nonce}", now, expires_at):
        raise InvalidData(description=(
            f"dsp:nonce {verified.nonce!r} was already used in a message from this signer "
            "(a replay); sign every message with a fresh random nonce"))
