"""Protocol logic on plain dicts: which service handles which payload, and who is asking.

Internal: applications use the :class:`~flask_openadr.VTN` methods, which call these services;
their names and signatures may change in any release (see ``docs/api.rst``).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Optional

from ..errors import (
    ComplianceError,
    InvalidID,
    NotRecognized,
    NotRegistered,
    Rejection,
    Unidentified,
)
from ..protocol import EI_EVENT, EI_OPT, EI_REGISTER_PARTY, EI_REPORT, OADR_POLL, is_registered
from ..security import replay
from ..store.base import NonceUsed, Transition, VenRecord
from . import binding, events, liveness, opt, poll, registration, reports, vtn_reports
from .context import Context, Reply
from .replies import PAIRED_REPLY, error_reply, response

logger = logging.getLogger("flask_openadr")

#: A service for payloads a VEN may send before it is registered: (ctx, payload, fingerprint).
OpenService = Callable[[Context, dict[str, Any], Optional[str]], tuple[str, dict[str, Any]]]
#: A service for a registered VEN's payload: (ctx, ven, payload).
Service = Callable[[Context, VenRecord, dict[str, Any]], Reply]

OPEN: dict[str, OpenService] = {
    "oadrQueryRegistration": registration.query,
    "oadrCreatePartyRegistration": registration.create,
}

# Service endpoint -> payload -> its service, for registered VENs.
SERVICES: dict[str, dict[str, Service]] = {
    EI_REGISTER_PARTY: {
        "oadrCancelPartyRegistration": registration.cancel,
        "oadrCanceledPartyRegistration": registration.canceled,
        "oadrResponse": registration.acknowledged,
    },
    EI_EVENT: {
        "oadrRequestEvent": events.request_event,
        "oadrCreatedEvent": events.created_event,
    },
    EI_REPORT: {
        # The VEN as report producer (reports) and as consumer of VTN reports (vtn_reports).
        "oadrRegisterReport": reports.register_report,
        "oadrCreatedReport": reports.created_report,
        "oadrUpdateReport": reports.update_report,
        "oadrCanceledReport": reports.canceled_report,
        "oadrRegisteredReport": vtn_reports.registered_report,
        "oadrCreateReport": vtn_reports.create_report,
        "oadrUpdatedReport": vtn_reports.updated_report,
        "oadrCancelReport": vtn_reports.cancel_report,
    },
    EI_OPT: {
        "oadrCreateOpt": opt.create_opt,
        "oadrCancelOpt": opt.cancel_opt,
    },
    OADR_POLL: {"oadrPoll": poll.poll},
}
SERVICE_OF = {name: service for service, table in SERVICES.items() for name in table}
SERVICE_OF.update(dict.fromkeys(OPEN, EI_REGISTER_PARTY))


@dataclass
class Outcome:
    """What the view encodes and returns; ``ven_id`` is the caller, when known. ``signed``: the
    reply must be signed (the VEN signed its message, or registered with signatures)."""

    payload_name: str
    payload: dict[str, Any]
    ven_id: str | None
    signed: bool = False
    #: The encoded reply, when the service built it inside its transaction (see
    #: :meth:`~flask_openadr.services.context.Context.reply`); None: the view encodes it.
    body: bytes | None = None


def authenticate(ctx: Context, payload: dict[str, Any], fingerprint: str | None) -> VenRecord:
    """The registered VEN a message comes from (notes 4.2).

    :raises Unidentified: (HTTP 403, no OpenADR reply) the message names no venID, or an empty
        one, and the caller's certificate belongs to no registered VEN.
    :raises InvalidID: (452) an unknown venID (compared case-sensitively), or an empty one from
        a registered caller.
    :raises NotRegistered: (463) a VEN that is not registered or is bound to another
        certificate than the caller's (see :mod:`~flask_openadr.services.binding`).
    """
    ven_id = payload.get("ven_id")
    if not ven_id:
        ven = ctx.store.get_ven_by_fingerprint(fingerprint) if fingerprint else None
        if not is_registered(ven):
            # Nothing ties the caller to a registration: no OpenADR reply at all ([HAR]: the
            # harness fails a VTN that answers an unregistered, empty-venID poll with 452).
            raise Unidentified("the message names no venID and the caller's client "
                               "certificate belongs to no registered VEN; register first")
        if ven_id is not None:
            # A registered caller naming an empty venID names a wrong one.
            raise InvalidID(description="the message carries an empty venID; send "
                            f"{ven['ven_id']!r}")
    else:
        ven = ctx.store.get_ven(ven_id)
        if ven is None:
            raise InvalidID(description=f"venID {ven_id!r} is not known to this VTN")
    binding.check_caller(ven, fingerprint)
    if not is_registered(ven):
        raise NotRegistered(description=f"venID {ven['ven_id']!r} has no active registration")
    return ven


def require_signature(ven: VenRecord, signed: bool) -> None:
    """459 for an unsigned message from a VEN that registered with XML signatures (notes 2.3:
    it must sign every message)."""
    if ven.get("xml_signature") and not signed:
        raise ComplianceError(description=f"venID {ven['ven_id']!r} registered with "
                              "oadrXmlSignature true, so every message must be signed")


def handle(ctx: Context, service: str, payload_name: str, payload: dict[str, Any],
           fingerprint: str | None = None, *, signed: bool = False,
           nonce: replay.Nonce | None = None) -> Outcome:
    """Run the service logic for one decoded message; protocol errors become paired replies.

    :param signed: the message carried a signature that verified (the view checks it first).
    :param nonce: the nonce of that signature, fresh but not yet remembered
        (:func:`~flask_openadr.security.replay.fresh`). It is written with the message's first
        write, the liveness update of an authenticated VEN, so that a signed poll writes once
        like an unsigned one; a message refused before that write, or a registration, has it
        written on its own. Either way a replay (454) changes nothing.

    Exceptions other than :class:`~flask_openadr.errors.Rejection` propagate: they are bugs or
    store failures, and the view turns them into HTTP 500 or 503.
    """
    ven_id = payload.get("ven_id")
    sign_reply = signed
    online = None  # the online transition this message won; its callback runs after the service
    try:
        if SERVICE_OF.get(payload_name) != service:
            expected = SERVICE_OF.get(payload_name)
            raise NotRecognized(description=f"{payload_name} is not accepted at {service}"
                                + (f"; send it to {expected}" if expected else ""))
        if payload_name in OPEN:
            # A VEN asking for signatures gets even this reply signed.
            sign_reply = signed or bool(payload.get("xml_signature"))
            # Taken before it is written, so that a refusal does not write it a second time.
            pending, nonce = nonce, None
            if pending is not None:
                replay.remember(ctx.store, pending)  # before a registration changes anything
            name, reply = OPEN[payload_name](ctx, payload, fingerprint)
            if payload_name == "oadrCreatePartyRegistration" and reply.get("ven_id"):
                # A registration is a message from the VEN too; a new one is its first sight.
                _run_online(ctx, liveness.seen(ctx, reply["ven_id"]))
            return Outcome(name, reply, reply.get("ven_id"), sign_reply)
        ven = authenticate(ctx, payload, fingerprint)
        ven_id = ven["ven_id"]
        sign_reply = signed or bool(ven.get("xml_signature"))
        require_signature(ven, signed)
        pending, nonce = nonce, None
        online = seen(ctx, ven, pending)
        name, reply, *built = SERVICES[service][payload_name](ctx, ven, payload)
        _run_online(ctx, online)
        return Outcome(name, reply, ven_id, sign_reply, built[0] if built else None)
    except Unidentified:
        refusal = _used_up(ctx, nonce)
        if refusal is None:
            raise
        return refuse(ctx, payload_name, payload, refusal, ven_id, sign_reply)
    except Rejection as rejection:
        _run_online(ctx, online)
        return refuse(ctx, payload_name, payload, _used_up(ctx, nonce) or rejection, ven_id,
                      sign_reply)


def seen(ctx: Context, ven: VenRecord, nonce: replay.Nonce | None) -> Transition | None:
    """The liveness update of an authenticated message (see :func:`.liveness.seen`), which
    remembers the message's ``nonce`` too, in the same atomic step: this is the one write of
    most messages, a poll with nothing pending above all, signed or not.

    :raises ~flask_openadr.errors.InvalidData: 454 when the nonce was used before (a replay);
        nothing was written.
    """
    try:
        return liveness.seen(ctx, ven["ven_id"], ven, nonce)
    except NonceUsed:
        if nonce is None:
            raise  # a store reporting a nonce it was not given: a bug, not a replay
        raise replay.replayed(nonce) from None


def _used_up(ctx: Context, nonce: replay.Nonce | None) -> Rejection | None:
    """Write the nonce of a message refused before its first write: a message that could not
    be accepted now may be acceptable later in the replay window (once its VEN registers, say),
    so its nonce is used up all the same. Returns the replay refusal when it was used before,
    which then answers the message as it would have before any other check."""
    if nonce is None:
        return None
    try:
        replay.remember(ctx.store, nonce)
    except Rejection as refusal:
        return refusal
    return None


def refuse(ctx: Context, payload_name: str, payload: dict[str, Any], rejection: Rejection,
           ven_id: str | None = None, signed: bool = False) -> Outcome:
    """The paired reply carrying ``rejection``'s code, with no service run and nothing changed
    (the view uses it for messages whose signature is refused)."""
    if payload_name not in PAIRED_REPLY:
        # A VTN-to-VEN payload sent to us: nothing pairs with it.
        return Outcome("oadrResponse", {"response": response(
            "", rejection.response_code, rejection.description)}, ven_id, signed)
    name, reply = error_reply(ctx, payload_name, payload, rejection)
    return Outcome(name, reply, ven_id, signed)


def _run_online(ctx: Context, transition: Transition | None) -> None:
    """Run the online callback this message won. It never changes the VEN's reply: a failure is
    logged, and the callback is retried by a sweep once its lease ends."""
    if transition is None:
        return
    try:
        liveness.run_transition(ctx, transition)
    except Exception:
        logger.exception("could not complete the online transition of VEN %r (epoch %d); a "
                         "sweep retries it when its lease ends", transition["ven_id"],
                         transition["epoch"])
