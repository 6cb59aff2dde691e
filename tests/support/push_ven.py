"""A push VEN for the tests: a real HTTP server on a free loopback port that parses and answers
OpenADR messages with the openleadr package's message parsing and creation (what its VEN uses),
registers for push, records what it receives, and sends oadrCreatedEvent back to the VTN.

``mode`` makes it misbehave: ``"ok"`` answers as a VEN does, ``"error"`` answers HTTP 500,
``"hang"`` holds each request for ``hang_seconds`` before answering 500, ``"refuse"`` answers
every message with an oadrResponse carrying 452. ``delay_seconds`` delays every answer (a VEN
far away).
"""
from __future__ import annotations

import threading
import time
import urllib.request
import uuid

from openleadr.messaging import create_message, parse_message
from werkzeug.serving import make_server

from tests.support.servers import free_port

PREFIX = "/OpenADR2/Simple/2.0b"


def _ok(request_id):
    return {"response_code": 200, "response_description": "OK", "request_id": request_id}


class PushVEN:
    """The VEN at ``http://127.0.0.1:<port>/ven``, talking to the VTN at ``vtn_base``."""

    def __init__(self, vtn_base: str, name: str = "pushy", *, ssl_context=None):
        self.vtn_base = vtn_base
        #: An ssl.SSLContext: the VEN serves https (and may require a client certificate).
        self.ssl_context = ssl_context
        #: The client certificate (PEM) each push came with, when the VEN serves https.
        self.client_certificates: list[str | None] = []
        self.name = name
        self.port = free_port()
        self.ven_id: str | None = None
        self.registration_id: str | None = None
        self.mode = "ok"
        #: A flask_openadr.security.signature.Signer: every answer is signed with it.
        self.signer = None
        #: The raw body of every message that arrived.
        self.bodies: list[bytes] = []
        self.hang_seconds = 3.0
        self.delay_seconds = 0.0
        #: (payload_name, payload, time.monotonic()) of every message that arrived, answered or
        #: not; ``paths`` the URL path of each.
        self.received: list[tuple[str, dict, float]] = []
        self.paths: list[str] = []
        self.in_flight = 0
        self.most_in_flight = 0
        self._lock = threading.Lock()
        self._server = None
        self._thread = None
        self._answering: list[threading.Thread] = []
        #: What went wrong sending oadrCreatedEvent (the test decides whether that matters).
        self.errors: list[Exception] = []

    # -- the server -------------------------------------------------------------------------

    def start(self) -> None:
        self._server = make_server("127.0.0.1", self.port, self._wsgi, threaded=True,
                                   ssl_context=self.ssl_context)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(10)
            self._server = None
        for thread in self._answering:  # while the VTN still runs
            thread.join(10)

    @property
    def address(self) -> str:
        # With a trailing slash: the VTN must push to <address without it>/OpenADR2/...
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}/ven/"

    def _wsgi(self, environ, start_response):
        with self._lock:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
            if self.delay_seconds:
                time.sleep(self.delay_seconds)
            if self.mode == "hang":
                time.sleep(self.hang_seconds)
            if self.mode in ("error", "hang"):
                start_response("500 Internal Server Error", [("Content-Type", "text/plain")])
                return [b"down for maintenance\n"]
            payload_name, payload = parse_message(body)
            with self._lock:
                self.bodies.append(body)
                self.client_certificates.append(environ.get("SSL_CLIENT_CERT"))
                self.received.append((payload_name, payload, time.monotonic()))
                self.paths.append(environ["PATH_INFO"])
            if self.mode == "refuse":
                answer = create_message("oadrResponse", ven_id=self.ven_id, response={
                    "response_code": 452, "response_description": "not for me",
                    "request_id": payload.get("request_id") or ""})
            else:
                answer = self._answer(payload_name, payload)
            answer = answer.encode() if isinstance(answer, str) else answer
            if self.signer is not None and answer:
                answer = self._signed(answer)
            start_response("200 OK", [("Content-Type", "application/xml"),
                                      ("Content-Length", str(len(answer)))])
            return [answer]
        finally:
            with self._lock:
                self.in_flight -= 1

    def _answer(self, payload_name: str, payload: dict) -> bytes:
        request_id = payload.get("request_id") or ""
        if payload_name == "oadrDistributeEvent":
            # An empty 200 now; oadrCreatedEvent later on EiEvent, as a VEN does.
            thread = threading.Thread(target=self._created_event, args=(payload,), daemon=True)
            self._answering.append(thread)
            thread.start()
            return b""
        if payload_name == "oadrRegisterReport":
            return create_message("oadrRegisteredReport", response=_ok(request_id),
                                  ven_id=self.ven_id, report_requests=[])
        if payload_name == "oadrCreateReport":
            # Every requested report is now pending at this VEN.
            pending = [{"report_request_id": r["report_request_id"]}
                       for r in payload.get("report_requests") or []]
            return create_message("oadrCreatedReport", response=_ok(request_id),
                                  ven_id=self.ven_id, pending_reports=pending)
        if payload_name == "oadrCancelReport":
            return create_message("oadrCanceledReport", response=_ok(request_id),
                                  ven_id=self.ven_id, pending_reports=[])
        if payload_name == "oadrUpdateReport":
            return create_message("oadrUpdatedReport", response=_ok(request_id),
                                  ven_id=self.ven_id)
        if payload_name == "oadrCancelPartyRegistration":
            return create_message("oadrCanceledPartyRegistration", response=_ok(request_id),
                                  ven_id=self.ven_id, registration_id=payload["registration_id"])
        if payload_name == "oadrRequestReregistration":
            return create_message("oadrResponse", response=_ok(""), ven_id=self.ven_id)
        raise AssertionError(f"a VEN is never pushed {payload_name}")

    def _signed(self, answer: bytes) -> bytes:
        # openleadr builds the message; the project's signer signs it as the VEN's key would.
        from datetime import datetime, timezone

        from flask_openadr import codec
        from flask_openadr.security.signature import sign

        name, payload = codec.decode(answer)
        return sign(codec.encode_element(name, payload), self.signer,
                    now=datetime.now(timezone.utc))

    # -- the VEN's own requests ---------------------------------------------------------------

    def send(self, service: str, payload_name: str, **payload) -> tuple[str, dict]:
        request = urllib.request.Request(
            f"{self.vtn_base}{PREFIX}/{service}", data=create_message(payload_name, **payload).encode(),
            headers={"Content-Type": "application/xml"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return parse_message(response.read())

    def register(self) -> dict:
        name, reply = self.send(
            "EiRegisterParty", "oadrCreatePartyRegistration", request_id=uuid.uuid4().hex,
            ven_name=self.name, profile_name="2.0b", transport_name="simpleHttp",
            transport_address=self.address, report_only=False, xml_signature=False,
            http_pull_model=False)
        assert name == "oadrCreatedPartyRegistration", (name, reply)
        assert reply["response"]["response_code"] == 200, reply
        self.ven_id, self.registration_id = reply["ven_id"], reply["registration_id"]
        return reply

    def _created_event(self, payload: dict) -> None:
        responses = [{"event_id": event["event_descriptor"]["event_id"],
                      "modification_number": event["event_descriptor"]["modification_number"],
                      "opt_type": "optIn", "response_code": 200, "response_description": "OK",
                      "request_id": payload["request_id"]}
                     for event in payload.get("events") or []
                     if event.get("response_required", "always") == "always"]
        if responses:
            try:
                self.send("EiEvent", "oadrCreatedEvent", response=_ok(""), ven_id=self.ven_id,
                          event_responses=responses)
            except OSError as exc:
                self.errors.append(exc)

    # -- what arrived -------------------------------------------------------------------------

    def names(self) -> list[str]:
        with self._lock:
            return [name for name, _, _ in self.received]

    def of(self, payload_name: str) -> list[tuple[dict, float]]:
        with self._lock:
            return [(p, t) for name, p, t in self.received if name == payload_name]
