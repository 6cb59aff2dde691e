"""The compiled fast path of the decoder changes speed, never results.

Every document is decoded twice, with the compiled decoders and with the generic engine alone
(decoders disabled); both must give the same dict, or the same MalformedMessage text.
"""
from __future__ import annotations

from datetime import datetime, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flask_openadr import codec
from flask_openadr.codec import convert
from flask_openadr.codec.schema import PAYLOAD_TYPES
from flask_openadr.errors import MalformedMessage

from tests.support.strategies import PAYLOAD_STRATEGIES


def outcome(body: bytes):
    try:
        return codec.decode(body)
    except MalformedMessage as error:
        return ("error", str(error))


def both(body: bytes, monkeypatch):
    fast = outcome(body)
    with monkeypatch.context() as patch:
        patch.setattr(convert, "decoder", lambda ctype: (lambda element: None))
        generic = outcome(body)
    return fast, generic


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                  HealthCheck.function_scoped_fixture])
@given(data=st.data())
@pytest.mark.parametrize("payload_name", sorted(PAYLOAD_TYPES))
def test_generated_payloads_decode_the_same(payload_name, data, monkeypatch):
    body = codec.encode(payload_name, data.draw(PAYLOAD_STRATEGIES[payload_name]))
    fast, generic = both(body, monkeypatch)
    assert fast == generic
    assert fast[0] == payload_name


REPORT = codec.encode("oadrUpdateReport", {
    "request_id": "u1", "ven_id": "v1", "reports": [{
        "intervals": [{"uid": "0", "report_payloads": [{"r_id": "r1", "value": 1.5}]}],
        "report_request_id": "rr", "report_specifier_id": "s",
        "created_date_time": datetime(2026, 1, 1, tzinfo=timezone.utc),
    }]})

# Edits that leave the plain form: each must give the generic engine's answer (a value or the
# error), whichever path handles it.
EDITS = [
    (b"<ei:value>1.5</ei:value>", b"<ei:value> 1.5 </ei:value>"),
    (b"<ei:value>1.5</ei:value>", b"<ei:value>1<!-- c -->.5</ei:value>"),
    (b"<ei:value>1.5</ei:value>", b"<ei:value>NaN</ei:value>"),
    (b"<ei:value>1.5</ei:value>", b"<ei:value>1.5<ei:x/></ei:value>"),
    (b"<ei:rID>r1</ei:rID>", b"<ei:rID>r1</ei:rID><!-- between -->"),
    (b"<ei:rID>r1</ei:rID>", b"<ei:rID>r1</ei:rID>text"),
    (b"<ei:rID>r1</ei:rID>", b"<?pi x?><ei:rID>r1</ei:rID>"),
    (b"<xcal:uid><xcal:text>0</xcal:text></xcal:uid>",
     b"<xcal:uid>\n  <xcal:text>0</xcal:text>\n</xcal:uid>"),
    (b"<xcal:uid><xcal:text>0</xcal:text></xcal:uid>",
     b"<xcal:uid>x<xcal:text>0</xcal:text></xcal:uid>"),
    (b"<xcal:uid><xcal:text>0</xcal:text></xcal:uid>",
     b"<xcal:uid><xcal:text>0</xcal:text><xcal:text>1</xcal:text></xcal:uid>"),
    (b"<xcal:uid><xcal:text>0</xcal:text></xcal:uid>", b"<xcal:uid/>"),
    (b"<ei:reportSpecifierID>s</ei:reportSpecifierID>",
     b"<ei:reportSpecifierID>s</ei:reportSpecifierID>"
     b"<ei:reportSpecifierID>t</ei:reportSpecifierID>"),
    (b"<ei:reportSpecifierID>s</ei:reportSpecifierID>", b""),
    (b"<ei:createdDateTime>2026-01-01T00:00:00Z",
     b"<ei:createdDateTime>2026-01-01T24:00:00Z"),
    (b"<ei:createdDateTime>2026-01-01T00:00:00Z",
     b"<ei:createdDateTime>2026-02-30T00:00:00Z"),
    (b"<ei:createdDateTime>2026-01-01T00:00:00Z",
     b"<ei:createdDateTime>2026-01-01T00:00:00.1234Z"),
    (b"<strm:intervals>", b"<strm:intervals><!-- none -->"),
    (b"<strm:intervals>", b"<strm:intervals><ei:other/>"),
]


@pytest.mark.parametrize("old, new", EDITS)
def test_irregular_documents_decode_the_same(old, new, monkeypatch):
    assert old in REPORT
    body = REPORT.replace(old, new, 1)
    fast, generic = both(body, monkeypatch)
    assert fast == generic


def test_the_fast_path_is_taken_for_plain_documents(monkeypatch):
    calls = []
    real = convert._decode_member

    def spy(*args):
        calls.append(args[0])
        return real(*args)

    monkeypatch.setattr(convert, "_decode_member", spy)
    name, payload = codec.decode(REPORT)
    assert payload["reports"][0]["intervals"][0]["report_payloads"][0]["value"] == 1.5
    assert calls == []  # no member went through the generic engine
    name, payload = codec.decode(REPORT.replace(b"<ei:value>1.5</ei:value>",
                                                b"<ei:value>1<!-- c -->.5</ei:value>"))
    assert calls  # the irregular document went through the generic engine
    assert payload["reports"][0]["intervals"][0]["report_payloads"][0]["value"] == 1.5
