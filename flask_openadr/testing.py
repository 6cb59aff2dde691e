"""A VEN-side test client, so applications can test their handlers without a real VEN.

::

    from flask_openadr.testing import VENTestClient

    def test_registration(app):
        ven = VENTestClient(app.test_client(), ven_name="thermostat-1")
        name, reply = ven.register()
        assert reply["response"]["response_code"] == 200
        name, reply = ven.poll()   # "oadrRegisterReport": the VTN's METADATA report
"""
from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any

from . import codec

DEFAULT_PREFIX = "/OpenADR2/Simple/2.0b"


class VENTestClient:
    """Sends VEN messages through a Flask test client and decodes the replies.

    Each method returns ``(payload_name, payload)`` of the VTN's reply; :meth:`send` raises
    :class:`AssertionError` when the HTTP status is not 200 (use :meth:`post` to see it).
    After :meth:`register` the client remembers ``ven_id`` and ``registration_id``.
    """

    def __init__(self, client: Any, *, ven_name: str = "test-ven", ven_id: str | None = None,
                 url_prefix: str = DEFAULT_PREFIX, environ: dict[str, Any] | None = None):
        self.client = client
        self.ven_name = ven_name
        self.ven_id = ven_id
        self.registration_id: str | None = None
        self.url_prefix = url_prefix.rstrip("/")
        self.environ = environ or {}

    def post(self, service: str, body: bytes, content_type: str = "application/xml"):
        """POST raw bytes to a service endpoint; returns the Flask test response."""
        return self.client.post(f"{self.url_prefix}/{service}", data=body,
                                content_type=content_type, environ_base=self.environ)

    def send(self, service: str, payload_name: str, payload: dict[str, Any]):
        response = self.post(service, codec.encode(payload_name, payload))
        if response.status_code != 200:
            raise AssertionError(f"HTTP {response.status_code}: {response.get_data(as_text=True)}")
        return codec.decode(response.get_data())

    @staticmethod
    def new_request_id() -> str:
        return uuid.uuid4().hex

    # -- EiRegisterParty ---------------------------------------------------------------

    def query_registration(self):
        return self.send("EiRegisterParty", "oadrQueryRegistration",
                         {"request_id": self.new_request_id()})

    def register(self, *, report_only: bool = False, xml_signature: bool = False,
                 http_pull_model: bool = True, renew: bool = False, **extra: Any):
        """oadrCreatePartyRegistration; ``renew=True`` sends the current IDs (re-registration)."""
        payload = {"request_id": self.new_request_id(), "profile_name": "2.0b",
                   "transport_name": "simpleHttp", "report_only": report_only,
                   "xml_signature": xml_signature, "ven_name": self.ven_name,
                   "http_pull_model": http_pull_model}
        if self.ven_id is not None:
            payload["ven_id"] = self.ven_id
        if renew:
            payload["registration_id"] = self.registration_id
        payload.update(extra)
        name, reply = self.send("EiRegisterParty", "oadrCreatePartyRegistration", payload)
        if reply["response"]["response_code"] == 200:
            self.ven_id = reply["ven_id"]
            self.registration_id = reply["registration_id"]
        return name, reply

    def cancel_registration(self, registration_id: str | None = None):
        return self.send("EiRegisterParty", "oadrCancelPartyRegistration", {
            "request_id": self.new_request_id(),
            "registration_id": registration_id or self.registration_id,
            "ven_id": self.ven_id})

    def canceled_registration(self, request_id: str, code: int = 200):
        """Acknowledge an oadrCancelPartyRegistration received on poll."""
        return self.send("EiRegisterParty", "oadrCanceledPartyRegistration", {
            "response": {"response_code": code, "response_description": "OK",
                         "request_id": request_id},
            "registration_id": self.registration_id, "ven_id": self.ven_id})

    def respond(self, service: str = "EiRegisterParty", request_id: str = "", code: int = 200):
        """A plain oadrResponse, such as the acknowledgement of oadrRequestReregistration."""
        return self.send(service, "oadrResponse", {
            "response": {"response_code": code, "response_description": "OK",
                         "request_id": request_id},
            "ven_id": self.ven_id})

    # -- OadrPoll and EiEvent ------------------------------------------------------------

    def poll(self):
        return self.send("OadrPoll", "oadrPoll", {"ven_id": self.ven_id})

    def request_event(self, reply_limit: int | None = None):
        payload: dict[str, Any] = {"request_id": self.new_request_id(), "ven_id": self.ven_id}
        if reply_limit is not None:
            payload["reply_limit"] = reply_limit
        return self.send("EiEvent", "oadrRequestEvent", payload)

    def created_event(self, distribute: dict[str, Any], opt_type: str = "optIn",
                      event_ids: list[str] | None = None):
        """Answer an oadrDistributeEvent with ``opt_type`` for each (or the named) event."""
        responses = [
            {"response_code": 200, "response_description": "OK",
             "request_id": distribute["request_id"],
             "qualified_event_id": {
                 "event_id": e["event_descriptor"]["event_id"],
                 "modification_number": e["event_descriptor"]["modification_number"]},
             "opt_type": opt_type}
            for e in distribute["events"]
            if event_ids is None or e["event_descriptor"]["event_id"] in event_ids
        ]
        return self.send("EiEvent", "oadrCreatedEvent", {
            "response": {"response_code": 200, "response_description": "OK", "request_id": ""},
            "event_responses": responses, "ven_id": self.ven_id})

    # -- EiReport ------------------------------------------------------------------------

    def registered_report(self, register_report: dict[str, Any]):
        """Acknowledge the VTN's METADATA oadrRegisterReport without requesting reports."""
        return self.send("EiReport", "oadrRegisteredReport", {
            "response": {"response_code": 200, "response_description": "OK",
                         "request_id": register_report["request_id"]},
            "report_requests": [], "ven_id": self.ven_id})


def utc(*args: int) -> datetime:
    """``datetime(*args)`` in UTC: ``utc(2026, 12, 1, 17)``."""
    return datetime(*args, tzinfo=timezone.utc)
