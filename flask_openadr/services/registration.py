"""EiRegisterParty: query, create, cancel and re-register, on dicts (protocol notes 5.1)."""
from __future__ import annotations

from typing import Any

from . import liveness
from ..errors import ComplianceError, InvalidID, NotAllowed, OutOfSequence
from ..protocol import is_registered, is_success, reply_name
from ..store.base import VenRecord
from . import binding, delivery, opt, outbox, push, reports, vtn_reports
from .context import Context
from .replies import PROFILES, response


def _registered_reply(ctx: Context, request_id: str, ven: VenRecord | None) -> dict[str, Any]:
    reply: dict[str, Any] = {"response": response(request_id), "vtn_id": ctx.settings.vtn_id,
                             "profiles": PROFILES,
                             "requested_oadr_poll_freq": ctx.settings.poll_frequency}
    if is_registered(ven):
        reply["registration_id"] = ven["registration_id"]
        reply["ven_id"] = ven["ven_id"]
    return reply


def query(ctx: Context, payload: dict[str, Any], fingerprint: str | None
          ) -> tuple[str, dict[str, Any]]:
    """oadrQueryRegistration: what the VTN offers, and the caller's IDs if it is registered.

    Without a client certificate the caller cannot be told apart from any other, so no IDs are
    returned then (the VEN sends its IDs itself when it re-registers).
    """
    ven = ctx.store.get_ven_by_fingerprint(fingerprint) if fingerprint else None
    reply = _registered_reply(ctx, payload["request_id"], ven)
    handler = ctx.handler("on_query_registration")
    if handler is not None:
        extra = handler(dict(payload, fingerprint=fingerprint))
        if extra and "service_specific_info" in extra:
            reply["service_specific_info"] = extra["service_specific_info"]
    return reply_name("oadrQueryRegistration"), reply


def _check_profile(ctx: Context, payload: dict[str, Any]) -> None:
    if payload["profile_name"] != "2.0b":
        raise ComplianceError(description=f"oadrProfileName {payload['profile_name']!r} is not "
                              "supported; this VTN speaks 2.0b")
    if payload["transport_name"] != "simpleHttp":
        raise NotAllowed(description=f"oadrTransportName {payload['transport_name']!r} is not "
                         "offered; use simpleHttp")
    if "http_pull_model" not in payload:
        raise ComplianceError(description="oadrHttpPullModel is required with simpleHttp")
    if not payload["http_pull_model"]:
        # Checked before any handler sees it: the VTN pushes to this address.
        payload["transport_address"] = push.normalise_address(payload.get("transport_address"))
    if payload["xml_signature"] and not ctx.settings.signs:
        # A VEN that asked for signatures rejects every unsigned reply; refuse it clearly
        # rather than register it and leave it unable to use anything the VTN sends.
        raise NotAllowed(description="this VTN has no signing key, so it does not offer XML "
                         "signatures; register with oadrXmlSignature false, or have the "
                         "operator set OPENADR_SIGNING_CERT and OPENADR_SIGNING_KEY")


def _handler_ids(result: Any) -> dict[str, Any]:
    """Normalise what on_create_party_registration returned (see docs/handlers.rst)."""
    if result is None:
        return {}
    if isinstance(result, str):
        return {"registration_id": result}
    if isinstance(result, tuple) and len(result) == 2:
        return {"ven_id": result[0], "registration_id": result[1]}
    if isinstance(result, dict):
        allowed = {"ven_id", "registration_id", "group_ids", "resource_ids", "party_ids",
                   "group_names"}
        unknown = set(result) - allowed
        if unknown:
            raise TypeError(f"on_create_party_registration returned unknown key(s) "
                            f"{sorted(unknown)}; allowed are {sorted(allowed)}")
        return dict(result)
    raise TypeError("on_create_party_registration must return None, a registration_id, a "
                    f"(ven_id, registration_id) tuple or a dict, not {result!r}")


def create(ctx: Context, payload: dict[str, Any], fingerprint: str | None
           ) -> tuple[str, dict[str, Any]]:
    """oadrCreatePartyRegistration: a new registration, or the renewal of the current one.

    The VEN record it creates or renews is bound to the caller's certificate ``fingerprint``; a
    record bound to another certificate is never registered by this caller (463).
    """
    payload = dict(payload)  # _check_profile normalises the transport address in this copy
    _check_profile(ctx, payload)
    ven_id = payload.get("ven_id")
    registration_id = payload.get("registration_id")
    if ven_id is not None:
        current = ctx.store.get_ven(ven_id)
        if current is not None:
            binding.check_claim(current, fingerprint)
    else:
        # A VEN that lost its IDs but presents a known certificate keeps its venID (and a VEN
        # enrolled with add_ven gets the venID it was enrolled with).
        current = ctx.store.get_ven_by_fingerprint(fingerprint) if fingerprint else None

    if registration_id is not None:
        # Renewal (notes 5.1 step 4): only with the VEN's current registrationID.
        if current is None or current.get("registration_id") != registration_id:
            raise InvalidID(description=f"registrationID {registration_id!r} is not the current "
                            "registration of this VEN")
        ven = _updated_record(current, payload, fingerprint)
        ven["poll_frequency"] = ctx.settings.poll_frequency
        with ctx.store.atomic():
            _check_claim_again(ctx, ven["ven_id"], fingerprint)
            ctx.store.put_ven(ven)
            push.index(ctx, ven)
            # A renewal may change report_only, and with it which events the VEN gets.
            delivery.refresh_ven(ctx, ven, ctx.now())
        ctx.emit("registration_created", ven_id=ven["ven_id"],
                 registration_id=registration_id, reregistration=True)
        return (reply_name("oadrCreatePartyRegistration"),
                _registered_reply(ctx, payload["request_id"], ven))

    bound_ven_id = current["ven_id"] if current is not None and binding.bound_to(
        current, fingerprint) else None
    handler = ctx.handler("on_create_party_registration")
    ids = _handler_ids(handler(_handler_payload(payload, fingerprint, bound_ven_id))
                       if handler else None)
    if ven_id is not None and ids.get("ven_id", ven_id) != ven_id:
        # Rule 402: a pre-allocated venID is returned unchanged.
        raise ValueError(f"on_create_party_registration returned venID {ids['ven_id']!r} for a "
                         f"VEN that sent the pre-allocated venID {ven_id!r}; rule 402 requires "
                         "the VTN to echo it (raise Rejection to refuse the VEN instead)")
    known_ven_id = current["ven_id"] if current is not None else None
    new_ven_id = ven_id or ids.get("ven_id") or known_ven_id or fingerprint or ctx.new_id()
    if new_ven_id != known_ven_id:
        current = ctx.store.get_ven(new_ven_id)
        if current is not None:
            # The handler's venID (or the fingerprint) names an existing record: the same rule.
            binding.check_claim(current, fingerprint)
    base: VenRecord = current or {"ven_id": new_ven_id, "group_ids": [], "resource_ids": [],
                                  "party_ids": []}
    ven = _updated_record(base, payload, fingerprint)
    ven.update({
        "ven_id": new_ven_id,
        "registration_id": ids.get("registration_id") or ctx.new_id(),
        "poll_frequency": ctx.settings.poll_frequency,
        "registered_at": ctx.now(),
    })
    for key in ("group_ids", "resource_ids", "party_ids", "group_names"):
        if key in ids:
            ven[key] = list(ids[key])
    vtn_offers = vtn_reports.offers(ctx, new_ven_id)  # user code: outside the transaction
    with ctx.store.atomic():
        _check_claim_again(ctx, new_ven_id, fingerprint)
        ctx.store.put_ven(ven)
        push.index(ctx, ven)
        # A new registration starts afresh: nothing queued for the old one is sent, every
        # current event is distributed again, and report and opt state begins anew.
        ctx.store.clear_outbox(new_ven_id)
        delivery.refresh_ven(ctx, ven, ctx.now(), fresh=True)
        _clear_records(ctx, new_ven_id)
        vtn_reports.queue_register_report(ctx, new_ven_id, vtn_offers)
    ctx.emit("registration_created", ven_id=new_ven_id,
             registration_id=ven["registration_id"], reregistration=False)
    return (reply_name("oadrCreatePartyRegistration"),
            _registered_reply(ctx, payload["request_id"], ven))


def _check_claim_again(ctx: Context, ven_id: str, fingerprint: str | None) -> None:
    """The binding check once more, inside the write transaction: a concurrent registration
    (on any worker) may have bound the record since it was read, and the later of two
    registrations for one venID must not take it over."""
    existing = ctx.store.get_ven(ven_id)
    if existing is not None:
        binding.check_claim(existing, fingerprint)


def _handler_payload(payload: dict[str, Any], fingerprint: str | None,
                     bound_ven_id: str | None) -> dict[str, Any]:
    return {
        "request_id": payload["request_id"],
        "ven_id": payload.get("ven_id"),
        "ven_name": payload.get("ven_name"),
        "profile_name": payload["profile_name"],
        "transport_name": payload["transport_name"],
        "transport_address": payload.get("transport_address"),
        "report_only": payload["report_only"],
        "xml_signature": payload["xml_signature"],
        "http_pull_model": payload.get("http_pull_model"),
        "fingerprint": fingerprint,
        "bound_ven_id": bound_ven_id,
    }


def _updated_record(base: VenRecord, payload: dict[str, Any], fingerprint: str | None) -> VenRecord:
    return {
        **base,
        "ven_name": payload.get("ven_name", base.get("ven_name")),
        "profile_name": payload["profile_name"],
        "transport_name": payload["transport_name"],
        "transport_address": payload.get("transport_address"),
        "report_only": payload["report_only"],
        "xml_signature": payload["xml_signature"],
        "http_pull_model": payload.get("http_pull_model", True),
        "fingerprint": fingerprint or base.get("fingerprint"),
    }


#: Store record kinds that belong to a registration: report capabilities and subscriptions in
#: both directions, opt schedules, and sent messages awaiting their acknowledgement.
RECORD_KINDS = (reports.RECORD_KINDS + vtn_reports.RECORD_KINDS + opt.RECORD_KINDS
                + outbox.RECORD_KINDS)


def _clear_records(ctx: Context, ven_id: str) -> None:
    for kind in RECORD_KINDS:
        ctx.store.clear_records(kind, ven_id)


def _end_registration(ctx: Context, ven: VenRecord) -> None:
    """Drop a registration and what was pending for it (notes 5.1 step 6). The VEN record stays,
    so later messages from it get 463 (not registered) rather than 452 (unknown)."""
    ended: VenRecord = {**ven, "registration_id": None}
    with ctx.store.atomic():
        ctx.store.put_ven(ended)
        push.index(ctx, ended)
        ctx.store.clear_outbox(ven["ven_id"])
        ctx.store.set_delivered(ven["ven_id"], {})
        _clear_records(ctx, ven["ven_id"])
    # It left on purpose: it is no longer swept, so no on_ven_offline follows.
    liveness.retire(ctx, ven["ven_id"])
    ctx.emit("registration_cancelled", ven_id=ven["ven_id"],
             registration_id=ven["registration_id"])


def cancel(ctx: Context, ven: VenRecord, payload: dict[str, Any]
           ) -> tuple[str, dict[str, Any]]:
    """oadrCancelPartyRegistration from the VEN."""
    if payload["registration_id"] != ven["registration_id"]:
        raise InvalidID(description=f"registrationID {payload['registration_id']!r} is not the "
                        "current registration of this VEN")
    handler = ctx.handler("on_cancel_party_registration")
    if handler is not None:
        handler(ven["ven_id"], dict(payload))
    _end_registration(ctx, ven)
    return reply_name("oadrCancelPartyRegistration"), {
        "response": response(payload["request_id"]),
        "registration_id": payload["registration_id"],
        "ven_id": ven["ven_id"],
    }


def canceled(ctx: Context, ven: VenRecord, payload: dict[str, Any]
             ) -> tuple[str, dict[str, Any]]:
    """oadrCanceledPartyRegistration: the VEN acknowledges a cancellation the VTN asked for."""
    if not cancel_requested(ctx, ven["ven_id"]):
        raise OutOfSequence(description="the VTN has not asked this VEN to cancel its "
                            "registration")
    if payload.get("registration_id", ven["registration_id"]) != ven["registration_id"]:
        raise InvalidID(description=f"registrationID {payload['registration_id']!r} is not the "
                        "current registration of this VEN")
    request_id = payload["response"]["request_id"]
    if ctx.store.get_record(outbox.AWAITING, ven["ven_id"], request_id) is None:
        # Like every other acknowledgement: one that names no request the VEN was sent is out
        # of sequence, and must not end the registration silently.
        raise OutOfSequence(description=f"requestID {request_id!r} names no "
                            "oadrCancelPartyRegistration sent to this VEN; echo the requestID "
                            "of the one it received")
    # Any answer acknowledges the request; a VEN that refused it is not asked again and again.
    outbox.acknowledge(ctx, ven["ven_id"], outbox.acknowledgement_key(
        "oadrCancelPartyRegistration", {"request_id": request_id}))
    if not is_success(payload["response"]["response_code"]):
        return reply_name("oadrCanceledPartyRegistration"), {"response": response(request_id),
                                                            "ven_id": ven["ven_id"]}
    _end_registration(ctx, ven)
    # No venID: the registration it named is gone, and a VEN (the certification harness) that
    # has forgotten it flags the unknown venID.
    return reply_name("oadrCanceledPartyRegistration"), {"response": response(request_id)}


def acknowledged(ctx: Context, ven: VenRecord, payload: dict[str, Any]
                 ) -> tuple[str, dict[str, Any]]:
    """oadrResponse from the VEN (the acknowledgement of oadrRequestReregistration)."""
    outbox.acknowledge(ctx, ven["ven_id"], outbox.acknowledgement_key(
        "oadrRequestReregistration", {}))
    return reply_name("oadrResponse"), {"response": response(payload["response"]["request_id"]),
                                        "ven_id": ven["ven_id"]}


def request_cancel(ctx: Context, ven_id: str) -> None:
    """Queue oadrCancelPartyRegistration; the registration ends when the VEN acknowledges.
    Asking again while one is queued or unacknowledged queues nothing more."""
    with ctx.store.atomic():
        ven = ctx.store.get_ven(ven_id)
        if not is_registered(ven):
            raise LookupError(f"VEN {ven_id!r} has no active registration")
        if cancel_requested(ctx, ven_id):
            return
        outbox.push(ctx, ven_id, "oadrCancelPartyRegistration", {
            "request_id": ctx.new_id(),
            "registration_id": ven["registration_id"],
            "ven_id": ven_id,
        })


def cancel_requested(ctx: Context, ven_id: str) -> bool:
    """Whether the VTN has asked the VEN to cancel its registration and waits for its answer:
    the oadrCancelPartyRegistration itself, queued or sent and not yet acknowledged, says so
    (a VEN that refused it has answered, and is no longer asked)."""
    return outbox.queued(ctx, ven_id, "oadrCancelPartyRegistration")


def request_reregistration(ctx: Context, ven_id: str) -> None:
    """Queue oadrRequestReregistration for the VEN's next poll. Asking again while one is
    queued or unacknowledged queues nothing more."""
    with ctx.store.atomic():
        ven = ctx.store.get_ven(ven_id)
        if not is_registered(ven):
            raise LookupError(f"VEN {ven_id!r} has no active registration")
        if outbox.queued(ctx, ven_id, "oadrRequestReregistration"):
            return
        outbox.push(ctx, ven_id, "oadrRequestReregistration", {"ven_id": ven_id})
