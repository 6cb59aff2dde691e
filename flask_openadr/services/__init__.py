"""Protocol logic on plain dicts: which service handles which payload, and who is asking."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable

from .. import liveness
from ..errors import InvalidID, NotRecognized, NotRegistered, Rejection
from ..store.base import Transition, VenRecord
from . import events, opt, poll, registration, reports, vtn_reports
from .context import Context
from .replies import PAIRED_REPLY, error_reply, response

logger = logging.getLogger("flask_openadr")

# Payloads a VEN may send before it is registered: they get (ctx, payload, fingerprint).
OPEN = {
    "oadrQueryRegistration": registration.query,
    "oadrCreatePartyRegistration": registration.create,
}

# Service endpoint -> payload -> function(ctx, ven, payload) for registered VENs.
SERVICES: dict[str, dict[str, Callable[..., tuple[str, dict[str, Any]]]]] = {
    "EiRegisterParty": {
        "oadrCancelPartyRegistration": registration.cancel,
        "oadrCanceledPartyRegistration": registration.canceled,
        "oadrResponse": registration.acknowledged,
    },
    "EiEvent": {
        "oadrRequestEvent": events.request_event,
        "oadrCreatedEvent": events.created_event,
    },
    "EiReport": {
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
    "EiOpt": {
        "oadrCreateOpt": opt.create_opt,
        "oadrCancelOpt": opt.cancel_opt,
    },
    "OadrPoll": {"oadrPoll": poll.poll},
}
SERVICE_OF = {name: service for service, table in SERVICES.items() for name in table}
SERVICE_OF.update(dict.fromkeys(OPEN, "EiRegisterParty"))


@dataclass
class Outcome:
    """What the view encodes and returns; ``ven_id`` is the caller, when known."""

    payload_name: str
    payload: dict[str, Any]
    ven_id: str | None
    #: The encoded reply, when the service built it inside its transaction (see
    #: :meth:`~flask_openadr.services.context.Context.reply`); None: the view encodes it.
    body: bytes | None = None


def authenticate(ctx: Context, payload: dict[str, Any], fingerprint: str | None) -> VenRecord:
    """The registered VEN a message comes from (notes 4.2): 452 for an unknown venID (compared
    case-sensitively), 463 for a VEN that is not registered or whose certificate differs."""
    ven_id = payload.get("ven_id")
    if ven_id is None:
        ven = ctx.store.get_ven_by_fingerprint(fingerprint) if fingerprint else None
        if ven is None:
            raise InvalidID(description="the message carries no venID")
    else:
        ven = ctx.store.get_ven(ven_id)
        if ven is None:
            raise InvalidID(description=f"venID {ven_id!r} is not known to this VTN")
    if fingerprint and ven.get("fingerprint") and ven["fingerprint"] != fingerprint:
        raise NotRegistered(description=f"the client certificate does not belong to venID "
                            f"{ven['ven_id']!r}")
    if not ven.get("registration_id"):
        raise NotRegistered(description=f"venID {ven['ven_id']!r} has no active registration")
    return ven


def handle(ctx: Context, service: str, payload_name: str, payload: dict[str, Any],
           fingerprint: str | None = None) -> Outcome:
    """Run the service logic for one decoded message; protocol errors become paired replies.

    Exceptions other than :class:`~flask_openadr.errors.Rejection` propagate: they are bugs or
    store failures, and the view turns them into HTTP 500 or 503.
    """
    ven_id = payload.get("ven_id")
    online = None  # the online transition this message won; its callback runs after the service
    try:
        if SERVICE_OF.get(payload_name) != service:
            expected = SERVICE_OF.get(payload_name)
            raise NotRecognized(description=f"{payload_name} is not accepted at {service}"
                                + (f"; send it to {expected}" if expected else ""))
        if payload_name in OPEN:
            name, reply = OPEN[payload_name](ctx, payload, fingerprint)
            if payload_name == "oadrCreatePartyRegistration" and reply.get("ven_id"):
                # A registration is a message from the VEN too; a new one is its first sight.
                _run_online(ctx, liveness.seen(ctx, reply["ven_id"]))
            return Outcome(name, reply, reply.get("ven_id"))
        ven = authenticate(ctx, payload, fingerprint)
        ven_id = ven["ven_id"]
        online = liveness.seen(ctx, ven_id, ven)
        name, reply, *built = SERVICES[service][payload_name](ctx, ven, payload)
        _run_online(ctx, online)
        return Outcome(name, reply, ven_id, built[0] if built else None)
    except Rejection as rejection:
        _run_online(ctx, online)
        if payload_name not in PAIRED_REPLY:
            # A VTN-to-VEN payload sent to us: nothing pairs with it.
            return Outcome("oadrResponse", {"response": response(
                "", rejection.response_code, rejection.description)}, ven_id)
        name, reply = error_reply(ctx, payload_name, payload, rejection)
        return Outcome(name, reply, ven_id)


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
