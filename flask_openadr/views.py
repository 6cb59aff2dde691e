"""The OpenADR blueprint: one POST route per service, and the pipeline of one request."""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Callable

from flask import Blueprint, Response, current_app, request

from . import codec, services
from .codec.values import shown
from .errors import (InvalidData, MalformedMessage, Rejection, StoreError, Unidentified,
                     UnsupportedValue)
from .protocol import SERVICE_NAMES
from .security import replay, signature

if TYPE_CHECKING:
    from lxml import etree

    from .runtime import AppState

logger = logging.getLogger("flask_openadr")

# Peers send application/xml (the harness requires it); text/xml is the same document type.
XML_TYPES = {"application/xml", "text/xml"}


def create_blueprint(url_prefix: str) -> Blueprint:
    bp = Blueprint("openadr", __name__, url_prefix=url_prefix)
    for service in SERVICE_NAMES:
        bp.add_url_rule(f"/{service}", endpoint=service, view_func=_view(service),
                        methods=["POST"])
    return bp


def _view(service: str) -> Callable[[], Response]:
    def view() -> Response:
        return handle_request(service)

    view.__name__ = service
    return view


#: A 400 reason is for a person reading a log: short, whatever the peer sent (every place that
#: repeats an inbound value shortens it; this is the last guard).
MAX_REASON_CHARS = 200


def _bad_request(reason: str) -> Response:
    if len(reason) > MAX_REASON_CHARS:
        reason = reason[:MAX_REASON_CHARS - 3] + "..."
    return Response(reason + "\n", status=400, content_type="text/plain; charset=utf-8")


def _forbidden(reason: str) -> Response:
    return Response(reason + "\n", status=403, content_type="text/plain; charset=utf-8")


def _read_body(environ: dict[str, Any], limit: int) -> bytes | None:
    """The request body, or None when it is larger than ``limit`` (checked before reading all)."""
    declared = environ.get("CONTENT_LENGTH")
    if declared and len(declared) < 16 and declared.isascii() and declared.isdigit():
        # What every VEN sends: read the server's input stream directly, which gives at most
        # the declared length (WSGI, PEP 3333), without werkzeug's stream wrappers. A short
        # body then fails to parse, as werkzeug's disconnect error would have refused it.
        # (Longer digit strings, beyond any limit, take werkzeug's path, which refuses them.)
        if int(declared) > limit:
            return None
        return bytes(environ["wsgi.input"].read(int(declared)))
    length = request.content_length
    if length is not None and length > limit:
        return None
    # With a Content-Length the stream ends there, so read just that: reading limit + 1 bytes
    # made the stream allocate a buffer of the whole limit (1 MiB by default) per request.
    body = request.stream.read(length if length is not None else limit + 1)
    return None if len(body) > limit else body


def handle_request(service: str) -> Response:
    state: AppState = current_app.extensions["openadr"]
    environ = request.environ
    state.first_request(environ)
    ctx = state.context

    # Who is calling comes first: a caller the VTN must refuse gets nothing read or parsed.
    identity = state.identifier.identify(environ)
    if identity is None and ctx.settings.require_client_cert:
        # INFO, not WARNING: anyone can cause one. A deployment where every VEN is refused
        # (a proxy that does not pass the certificate) shows it here.
        logger.info("refused a request to %s from %s: no verified client certificate", service,
                    request.remote_addr)
        return _forbidden("a verified TLS client certificate is required")
    fingerprint = identity.fingerprint if identity is not None else None

    # The header as VENs send it is taken as it is; any other is parsed (parameters, case).
    if environ.get("CONTENT_TYPE") not in XML_TYPES and request.mimetype \
            and request.mimetype not in XML_TYPES:
        return _bad_request(f"Content-Type must be application/xml, not {shown(request.mimetype)}")
    body = _read_body(environ, ctx.settings.max_message_bytes)
    if body is None:
        return _bad_request(f"message larger than {ctx.settings.max_message_bytes} bytes")
    payload_name = "message"  # for the logs, until the payload is known
    try:
        root = codec.parse(body, max_bytes=ctx.settings.max_message_bytes)
        signed = signature.is_signed(root)
        if not signed:
            payload_name, payload = codec.decode_element(root)
    except MalformedMessage as exc:
        return _bad_request(f"malformed OpenADR message: {exc}")
    except UnsupportedValue as exc:
        return _unsupported(state, exc, signed=False)

    try:
        # One pooled connection for the whole request on the SQL store (a no-op elsewhere).
        with ctx.store.session():
            nonce = None
            if signed:
                try:
                    verified = signature.verify(root, client_fingerprint=fingerprint)
                    # The nonce is written by the services, with the message's first write.
                    nonce = replay.fresh(verified, now=ctx.now(),
                                         window=ctx.settings.replay_window)
                except Rejection as refusal:
                    return _refused(state, service, root, refusal)
                try:
                    # Only what the signature covers is read from here on.
                    payload_name, payload = codec.decode_element(verified.payload)
                except MalformedMessage as exc:
                    return _bad_request(f"malformed OpenADR message: {exc}")
                except UnsupportedValue as exc:
                    return _unsupported(state, exc, signed=True)
                # Without a TLS client certificate (a deployment that does not require one) the
                # signer's certificate identifies the VEN; with one, verify() made sure they
                # match.
                fingerprint = fingerprint or verified.fingerprint
            ctx.emit("message_received", ven_id=payload.get("ven_id"), payload_name=payload_name,
                     payload=payload)
            outcome = services.handle(ctx, service, payload_name, payload, fingerprint,
                                      signed=signed, nonce=nonce)
        body = _encode(state, outcome)
    except Unidentified as refusal:
        logger.info("refused %s at %s from %s: %s", payload_name, service, request.remote_addr,
                    refusal)
        return _forbidden(str(refusal))
    except StoreError:
        logger.exception("OpenADR store unavailable while handling %s at %s", payload_name,
                         service)
        return Response("store unavailable\n", status=503, content_type="text/plain")
    except Exception:
        # Handlers run before the store writes they lead to (or inside a transaction that this
        # exception rolled back), so nothing half-done is left behind.
        logger.exception("error while handling %s at %s", payload_name, service)
        return Response("internal error\n", status=500, content_type="text/plain")
    ctx.emit("message_sent", ven_id=outcome.ven_id, payload_name=outcome.payload_name,
             payload=outcome.payload)
    return Response(body, status=200, content_type="application/xml")


def _refused(state: AppState, service: str, root: etree._Element, refusal: Rejection) -> Response:
    """The paired reply to a message whose signature or replay check failed: the payload is
    decoded only to address that reply; no service runs and nothing changes."""
    try:
        payload_name, payload = codec.decode_element(root)
    except MalformedMessage as exc:
        return _bad_request(f"malformed OpenADR message: {exc}")
    except UnsupportedValue as exc:
        # Refused for its signature anyway; the decoded payload still addresses the reply.
        payload_name, payload = exc.payload_name, exc.payload
    logger.warning("refused a signed %s at %s (venID %r): %d %s", payload_name, service,
                   payload.get("ven_id"), refusal.response_code, refusal.description)
    outcome = services.refuse(state.context, payload_name, payload, refusal,
                              payload.get("ven_id"), signed=True)
    return Response(_encode(state, outcome), status=200, content_type="application/xml")


def _unsupported(state: AppState, exc: UnsupportedValue, *, signed: bool) -> Response:
    """The paired reply (454) to a valid 2.0b message the VTN cannot honour: the VEN gets a code
    it can act on instead of a 400, no service runs and nothing changes."""
    logger.info("refused %s (venID %r): %s", exc.payload_name, exc.payload.get("ven_id"),
                exc.description)
    outcome = services.refuse(state.context, exc.payload_name, exc.payload,
                              InvalidData(description=exc.description),
                              exc.payload.get("ven_id"), signed=signed)
    return Response(_encode(state, outcome), status=200, content_type="application/xml")


def _encode(state: AppState, outcome: services.Outcome) -> bytes:
    """The reply document, signed when the VEN signs (or registered with signatures) and the
    VTN has a key; a VTN without one answers unsigned (and refuses signing registrations).

    A service that records a delivery builds the reply inside that transaction
    (``outcome.body``), so a reply that cannot be encoded is never counted as sent. A signed
    reply is signed from those bytes (or the codec's), with no tree built again."""
    body = outcome.body or codec.encode(outcome.payload_name, outcome.payload)
    if outcome.signed and state.signer is not None:
        return signature.sign_message(body, state.signer, now=state.context.now())
    return body
