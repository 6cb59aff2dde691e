"""Fuzzing the request pipeline: every VEN-to-VTN payload, mutated, plus a corpus of hostile XML.

Structure-aware: a schema-legal dict of each payload type (tests/support/strategies.py) is encoded
with the codec, often made to name the registered VEN and its real IDs (so it gets past
authentication and into the services), then mutated: values at the edges of their types,
repeated, deep, removed, added or misplaced elements, flipped bytes. Every request, on a SQLite
store, goes through tests/support/hostile.py's post_checked: never HTTP 500, under a second, a 400
reason of at most about 200 characters, the store unchanged when the message is refused, every
200 reply valid against the official XSD.

The budget is fixed (examples per payload, no deadline per example but a limit per request) so
the file stays under about a minute; tests/fuzz/ has a coverage-guided target for longer runs.
"""
from __future__ import annotations

import copy
import gzip
import os
from datetime import timedelta

import pytest
from flask import Flask
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from lxml import etree

from flask_openadr import codec
from flask_openadr.codec.convert import MAX_REPEATED
from flask_openadr.codec.fields import local_name
from flask_openadr.services import SERVICE_OF, SERVICES
from flask_openadr.services.replies import PAIRED_REPLY
from flask_openadr.testing import data_point, metadata_report
from tests.support.clock import T0
from tests.support.hostile import post_checked, reply_code
from tests.support.strategies import PAYLOAD_STRATEGIES, XML_TEXT
from tests.support.vens import make_ven

#: Every payload a VEN may send the VTN.
VEN_PAYLOADS = sorted(PAIRED_REPLY)

#: Texts at the edges of the value types (and past them) for any simple element.
EDGE_VALUES = [
    "", " ", "0", "-1", "-0", "007", "4294967295", "4294967296", "9" * 11, "9" * 5000,
    "1e400", "-1e400", "NaN", "INF", "-INF", "1.5", "0.0000001", "true", "false", "TRUE",
    "P99999999999W", "P999999999D", "P1M", "P1Y", "-P1M", "P1Y2M3DT4H5M6S", "PT0.5S", "P",
    "PT", "P1W", "1W", "-PT1S", "PT" + "9" * 5000 + "S", "P0D",
    "9999-12-31T23:59:59Z", "9999-12-31T24:00:00Z", "0001-01-01T00:00:00Z",
    "2026-02-30T00:00:00Z", "2026-12-01T12:00:00+01:00", "2026-12-01T12:00:00",
    "2026-12-01T12:00:00.123456789Z", "x-" + "a" * 300, "x" * 70000, "\u00e4\u2713\U0001f600",
    "http://x.example/" + "a" * 2000, "optOut", "x-schedule", "METADATA", "200", "999",
]

#: Element local names whose text the registered VEN's real IDs replace, so mutated messages
#: reach the services' deeper rules rather than stopping at "unknown venID".
ID_ELEMENTS = ("venID", "registrationID", "eventID", "reportRequestID", "reportSpecifierID",
               "rID", "optID")


class Target:
    """A VTN with a registered VEN that offered reports, has requests for them and one event."""

    def __init__(self, app: Flask):
        self.app = app
        self.vtn = app.extensions["test_vtn"]
        self.store = app.extensions["openadr"].context.store
        self.ven = make_ven(app)
        self.ids: dict[str, list[str]] = {}
        self.setup()

    def setup(self) -> None:
        ven = self.ven
        name, reply = ven.register()
        assert reply["response"]["response_code"] == 200
        while ven.poll()[0] != "oadrResponse":
            pass  # the VTN's METADATA register report and whatever else is queued
        usage = metadata_report("spec-usage", "TELEMETRY_USAGE", [
            data_point("rid-power"), data_point("rid-energy")])
        name, reply = ven.register_report([usage])
        assert reply["response"]["response_code"] == 200
        requests = [r["report_request_id"] for r in reply.get("report_requests", [])]
        # A registration made again (keep_registered) keeps its venID, so the event made the
        # first time still targets the VEN; a second one would overlap it and be refused.
        event_id = (self.ids.get("eventID") or [None])[0]
        if event_id is None:
            with self.app.app_context():
                event_id = self.vtn.add_event(
                    ven_id=ven.ven_id, signal_name="SIMPLE", signal_type="level",
                    intervals=[{"dtstart": T0 + timedelta(hours=1),
                                "duration": timedelta(hours=1), "signal_payload": 1.0}])
        self.ids = {"venID": [ven.ven_id], "registrationID": [ven.registration_id],
                    "eventID": [event_id], "reportRequestID": requests or ["none"],
                    "reportSpecifierID": ["spec-usage", "METADATA"],
                    "rID": ["rid-power", "rid-energy"], "optID": ["opt-1"]}

    def keep_registered(self) -> None:
        """Messages the fuzzer sends may end the registration: start again, so later examples
        still reach the services."""
        ven = self.store.get_ven(self.ven.ven_id)
        if ven is None or not ven.get("registration_id"):
            self.ven.registration_id = None
            self.setup()


@pytest.fixture
def target(telemetry_app) -> Target:
    return Target(telemetry_app)


# ------------------------------------------------------------------------- mutations


def _payload_element(root):
    return root[0][0]  # oadrPayload / oadrSignedObject / <payload>


def _use_real_ids(draw, target: Target, payload) -> None:
    for element in payload.iter():
        if isinstance(element.tag, str) and len(element) == 0:
            real = target.ids.get(local_name(element.tag))
            if real and draw(st.integers(0, 3)):
                element.text = draw(st.sampled_from(real))


def _mutate(draw, payload) -> None:
    """Apply one structural mutation somewhere inside the payload element."""
    elements = [e for e in payload.iter() if isinstance(e.tag, str)]
    element = draw(st.sampled_from(elements))
    parent = element.getparent()
    kind = draw(st.sampled_from(["edge", "edge", "repeat", "deep", "remove", "add", "wrong",
                                 "swap"]))
    if kind == "edge" and len(element) == 0:
        element.text = draw(st.one_of(st.sampled_from(EDGE_VALUES), XML_TEXT))
    elif kind == "repeat" and element is not payload:
        count = draw(st.sampled_from([2, 3, 40, MAX_REPEATED, MAX_REPEATED + 1, 5000]))
        index = parent.index(element)
        for _ in range(count - 1):
            parent.insert(index, copy.deepcopy(element))
            if len(etree.tostring(parent)) > 2 * 1024 * 1024:
                break  # the size limit is tested separately; keep the example cheap
    elif kind == "deep":
        depth = draw(st.sampled_from([10, 255, 300, 5000]))
        inner = element
        for _ in range(depth):
            inner = etree.SubElement(inner, element.tag)
    elif kind == "remove" and element is not payload:
        parent.remove(element)
    elif kind == "add":
        tag = draw(st.sampled_from([element.tag, "{urn:unknown}x", "{" + payload.nsmap.get(
            "oadr", "urn:x") + "}oadrPoll", "plain"]))
        element.insert(draw(st.integers(0, len(element))), etree.Element(tag))
    elif kind == "wrong":
        # text where elements belong, or an element where text belongs
        if len(element):
            element.text = "stray"
        else:
            etree.SubElement(element, "{urn:unknown}child").text = element.text
    elif kind == "swap" and len(element) > 1:
        first, second = element[0], element[-1]
        element.replace(second, copy.deepcopy(first))
        element.replace(first, copy.deepcopy(second))


def _flip(draw, body: bytes) -> bytes:
    data = bytearray(body)
    for _ in range(draw(st.integers(1, 4))):
        position = draw(st.integers(0, len(data) - 1))
        data[position] = draw(st.integers(0, 255))
    return bytes(data)


@st.composite
def requests(draw, target: Target):
    """(endpoint, body) of one fuzzed request."""
    payload_name = draw(st.sampled_from(VEN_PAYLOADS))
    root = codec.encode_element(payload_name, draw(PAYLOAD_STRATEGIES[payload_name]))
    payload = _payload_element(root)
    if draw(st.integers(0, 4)):
        _use_real_ids(draw, target, payload)
    for _ in range(draw(st.integers(0, 3))):
        _mutate(draw, payload)
    body = etree.tostring(root, xml_declaration=True, encoding="UTF-8")
    if draw(st.integers(0, 5)) == 0:
        body = _flip(draw, body)
    endpoint = SERVICE_OF[payload_name]
    if draw(st.integers(0, 9)) == 0:
        endpoint = draw(st.sampled_from(sorted(SERVICES)))
    return endpoint, body


#: Examples per store; OPENADR_FUZZ_EXAMPLES=5000 runs a longer campaign locally.
EXAMPLES = int(os.environ.get("OPENADR_FUZZ_EXAMPLES", "150"))


@settings(max_examples=EXAMPLES, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                 HealthCheck.data_too_large, HealthCheck.large_base_example])
@given(data=st.data())
def test_fuzzed_messages_never_break_the_vtn(target, data):
    endpoint, body = data.draw(requests(target))
    response = post_checked(target.ven, target.store, endpoint, body)
    # what the examples reached (pytest --hypothesis-show-statistics shows the spread)
    outcome = str(response.status_code)
    if response.status_code == 200:
        outcome += f" {reply_code(response.get_data())}"
    event(outcome)
    target.keep_registered()


# ------------------------------------------------------------------------- hostile corpus


def _poll(ven_id: str) -> bytes:
    return codec.encode("oadrPoll", {"ven_id": ven_id})


def _opt(ven_id: str, duration: str) -> bytes:
    body = codec.encode("oadrCreateOpt", {
        "opt_id": "opt-9", "opt_type": "optOut", "opt_reason": "x-schedule", "ven_id": ven_id,
        "created_date_time": T0, "request_id": "r-9", "target": {},
        "vavailability": {"available": [{"dtstart": T0, "duration": timedelta(days=7)}]}})
    return body.replace(b"P7D", duration.encode())


def _created_event(ven_id: str, event_id: str, count: int, modification: str = "0") -> bytes:
    responses = [{"response_code": 200, "request_id": "r", "opt_type": "optIn",
                  "qualified_event_id": {"event_id": event_id, "modification_number": 0}}
                 for _ in range(count)]
    body = codec.encode("oadrCreatedEvent", {"response": {"response_code": 200, "request_id": ""},
                                             "event_responses": responses, "ven_id": ven_id})
    return body.replace(b"<ei:modificationNumber>0<", f"<ei:modificationNumber>{modification}<"
                        .encode())


def _cancel_report(ven_id: str, count: int) -> bytes:
    return codec.encode("oadrCancelReport", {
        "request_id": "c-1", "report_request_ids": [f"r{n}" for n in range(count)],
        "report_to_follow": False, "ven_id": ven_id})


def _registration(transport_name: str) -> bytes:
    body = codec.encode("oadrCreatePartyRegistration", {
        "request_id": "reg-9", "profile_name": "2.0b", "transport_name": "simpleHttp",
        "report_only": False, "xml_signature": False, "http_pull_model": True})
    return body.replace(b">simpleHttp<", b">" + transport_name.encode() + b"<")


def _metadata(ven_id: str, duration: str) -> bytes:
    body = codec.encode("oadrRegisterReport", {"request_id": "m-1", "ven_id": ven_id, "reports": [
        metadata_report("spec-x", "TELEMETRY_USAGE", [data_point("rid-x")],
                        duration=timedelta(hours=7))]})
    return body.replace(b"PT7H", duration.encode())


LAUGHS = (b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
          + b"".join(b'<!ENTITY lol%d "%s">' % (n, (b"&lol%d;" % (n - 1) if n > 1 else b"&lol;") * 10)
                     for n in range(1, 10))
          + b"]><lolz>&lol9;</lolz>")

#: name -> (endpoint, function of (target) -> body[, content type]).
CORPUS = {
    "billion laughs": ("OadrPoll", lambda t: LAUGHS),
    "external entity /etc/passwd": ("OadrPoll", lambda t: (
        b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY e SYSTEM "file:///etc/passwd">]><r>&e;</r>')),
    "parameter entity /dev/zero": ("OadrPoll", lambda t: (
        b'<!DOCTYPE r [<!ENTITY % p SYSTEM "file:///dev/zero"> %p;]><r/>')),
    "parameter entity /dev/urandom": ("OadrPoll", lambda t: (
        b'<!DOCTYPE r [<!ENTITY % p SYSTEM "file:///dev/urandom"> %p;]><r/>')),
    "external DTD": ("OadrPoll", lambda t: (
        b'<?xml version="1.0"?><!DOCTYPE r SYSTEM "http://127.0.0.1:1/x.dtd"><r/>')),
    "DOCTYPE after a BOM and a comment": ("OadrPoll", lambda t: (
        b"\xef\xbb\xbf<!-- x --><!DOCTYPE r [<!ENTITY e 'x'>]><r>&e;</r>")),
    "xinclude": ("OadrPoll", lambda t: _poll(t.ven.ven_id).replace(
        b"</oadr:oadrPoll>", b'<xi:include xmlns:xi="http://www.w3.org/2001/XInclude" '
        b'href="file:///etc/passwd" parse="text"/></oadr:oadrPoll>')),
    "schemaLocation to a file": ("OadrPoll", lambda t: _poll(t.ven.ven_id).replace(
        b"<oadr:oadrPoll ", b'<oadr:oadrPoll xmlns:xsi="http://www.w3.org/2001/XMLSchema-'
        b'instance" xsi:schemaLocation="x file:///etc/passwd" ')),
    "stylesheet processing instruction": ("OadrPoll", lambda t: _poll(t.ven.ven_id).replace(
        b"?>", b'?><?xml-stylesheet href="file:///etc/passwd"?>', 1)),
    "deep nesting": ("OadrPoll", lambda t: b"<a>" * 100000 + b"</a>" * 100000),
    "oversized": ("OadrPoll", lambda t: _poll(t.ven.ven_id).replace(
        b"</oadr:oadrPoll>", b"<!--" + b"x" * (2 * 1024 * 1024) + b"--></oadr:oadrPoll>")),
    "gzip body": ("OadrPoll", lambda t: gzip.compress(_poll(t.ven.ven_id))),
    "gzip bomb": ("OadrPoll", lambda t: gzip.compress(b"<" * (50 * 1024 * 1024))),
    "UTF-16 with BOM": ("OadrPoll", lambda t: _poll(t.ven.ven_id).replace(
        b"UTF-8", b"UTF-16").decode().encode("utf-16")),
    "UTF-16 hiding a DOCTYPE": ("OadrPoll", lambda t: (
        '<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE r [<!ENTITY % p SYSTEM '
        '"file:///dev/zero"> %p;]><r/>').encode("utf-16-le")),
    "UTF-7 hiding a DOCTYPE": ("OadrPoll", lambda t: (
        b'<?xml version="1.0" encoding="UTF-7"?>+ADw-!DOCTYPE r +AFs-+ADw-!ENTITY +ACU- p '
        b'SYSTEM +ACI-file:///dev/zero+ACI-+AD4- +ACU-p;+AF0-+AD4-<r/>')),
    "empty": ("OadrPoll", lambda t: b""),
    "NUL bytes": ("OadrPoll", lambda t: b"\x00" * 100),
    "not XML": ("OadrPoll", lambda t: b"GET / HTTP/1.1\r\n\r\n"),
    "truncated": ("OadrPoll", lambda t: _poll(t.ven.ven_id)[:-20]),
    "P99999999999W": ("EiOpt", lambda t: _opt(t.ven.ven_id, "P99999999999W")),
    "P999999999D": ("EiOpt", lambda t: _opt(t.ven.ven_id, "P999999999D")),
    "5,000-digit duration": ("EiOpt", lambda t: _opt(t.ven.ven_id, "PT" + "9" * 5000 + "S")),
    "5,000-digit integer": ("EiEvent", lambda t: _created_event(
        t.ven.ven_id, t.ids["eventID"][0], 1, "9" * 5000)),
    "P1M in a METADATA report": ("EiReport", lambda t: _metadata(t.ven.ven_id, "P1M")),
    "P1Y in a METADATA report": ("EiReport", lambda t: _metadata(t.ven.ven_id, "P1Y")),
    "20,000 unknown reportRequestIDs": ("EiReport", lambda t: _cancel_report(t.ven.ven_id,
                                                                              20000)),
    "3,000 event responses": ("EiEvent", lambda t: _created_event(
        t.ven.ven_id, t.ids["eventID"][0], 3000)),
    "1,000 event responses": ("EiEvent", lambda t: _created_event(
        t.ven.ven_id, t.ids["eventID"][0], MAX_REPEATED)),
    "1 MB transport name": ("EiRegisterParty", lambda t: _registration("x" * 1000000)),
    "6 KB content type": ("OadrPoll", lambda t: (_poll(t.ven.ven_id),
                                                 "application/x-" + "a" * 6000)),
    "many attributes": ("OadrPoll", lambda t: _poll(t.ven.ven_id).replace(
        b"<oadr:oadrPoll ", b"<oadr:oadrPoll " + b" ".join(b'a%d="x"' % n for n in range(20000))
        + b" ")),
    "many namespaces": ("OadrPoll", lambda t: _poll(t.ven.ven_id).replace(
        b"<oadr:oadrPoll ", b"<oadr:oadrPoll " + b" ".join(
            b'xmlns:n%d="urn:n%d"' % (n, n) for n in range(20000)) + b" ")),
    "long tag name": ("OadrPoll", lambda t: _poll(t.ven.ven_id).replace(
        b"</oadr:oadrPoll>", b"<" + b"t" * 500000 + b"/></oadr:oadrPoll>")),
    "comments and CDATA in values": ("OadrPoll", lambda t: _poll(t.ven.ven_id).replace(
        t.ven.ven_id.encode(), b"<!--c--><![CDATA[" + t.ven.ven_id.encode() + b"]]><?pi x?>")),
}


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_hostile_corpus(target, name):
    endpoint, make = CORPUS[name]
    made = make(target)
    body, content_type = made if isinstance(made, tuple) else (made, "application/xml")
    response = post_checked(target.ven, target.store, endpoint, body, content_type)
    if name in ("P1M in a METADATA report", "P1Y in a METADATA report", "P999999999D",
                "P99999999999W", "5,000-digit duration", "3,000 event responses",
                "20,000 unknown reportRequestIDs"):
        # valid 2.0b the VTN cannot honour: a code the VEN can act on, not a 400
        assert response.status_code == 200
        assert b"<ei:responseCode>454</ei:responseCode>" in response.get_data()
