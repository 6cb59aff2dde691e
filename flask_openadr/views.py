"""The OpenADR blueprint: one POST route per service, and the pipeline of one request."""
from __future__ import annotations

import logging

from flask import Blueprint, Response, current_app, request

from . import codec, services
from .errors import MalformedMessage, StoreError
from .security.fingerprint import client_fingerprint

logger = logging.getLogger("flask_openadr")

SERVICE_NAMES = ("EiRegisterParty", "EiEvent", "EiReport", "EiOpt", "OadrPoll")
# Peers send application/xml (the harness requires it); text/xml is the same document type.
XML_TYPES = {"application/xml", "text/xml"}


def create_blueprint(url_prefix: str) -> Blueprint:
    bp = Blueprint("openadr", __name__, url_prefix=url_prefix)
    for service in SERVICE_NAMES:
        bp.add_url_rule(f"/{service}", endpoint=service, view_func=_view(service),
                        methods=["POST"])
    return bp


def _view(service: str):
    def view() -> Response:
        return handle_request(service)

    view.__name__ = service
    return view


def _bad_request(reason: str) -> Response:
    return Response(reason + "\n", status=400, content_type="text/plain; charset=utf-8")


def _read_body(limit: int) -> bytes | None:
    """The request body, or None when it is larger than ``limit`` (checked before reading all)."""
    if request.content_length is not None and request.content_length > limit:
        return None
    body = request.stream.read(limit + 1)
    return None if len(body) > limit else body


def handle_request(service: str) -> Response:
    state = current_app.extensions["openadr"]
    state.first_request(request.environ)
    ctx = state.context

    if request.mimetype and request.mimetype not in XML_TYPES:
        return _bad_request(f"Content-Type must be application/xml, not {request.mimetype}")
    body = _read_body(ctx.settings.max_message_bytes)
    if body is None:
        return _bad_request(f"message larger than {ctx.settings.max_message_bytes} bytes")
    try:
        payload_name, payload = codec.decode(body, max_bytes=ctx.settings.max_message_bytes)
    except MalformedMessage as exc:
        return _bad_request(f"malformed OpenADR message: {exc}")

    try:
        fingerprint = client_fingerprint(request.environ)
    except ValueError:
        return _bad_request("the client certificate cannot be read")
    ctx.emit("message_received", ven_id=payload.get("ven_id"), payload_name=payload_name,
             payload=payload)
    try:
        # One pooled connection for the whole request on the SQL store (a no-op elsewhere).
        with ctx.store.session():
            outcome = services.handle(ctx, service, payload_name, payload, fingerprint)
        body = outcome.body or codec.encode(outcome.payload_name, outcome.payload)
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
