"""The compiled decoder and the generic walk accept the same documents and give the same dicts.

The VTN decodes with the compiled decoder alone and walks the generic engine only over what the
compiled decoder refused, to say why. So every document here is decoded both ways, directly:
either both accept it with the same dict, or the compiled decoder refuses it and the walk
raises. Valid documents must be accepted by the compiled decoder, whatever their layout.
"""
from __future__ import annotations

import random
import sys
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from flask_openadr import codec
from flask_openadr.codec import convert
from flask_openadr.codec.compiled import decoder
from flask_openadr.codec.fields import ComplexType, Field, Substitution, ctype, f, q
from flask_openadr.codec.parser import parse
from flask_openadr.codec.schema import PAYLOAD_TYPES
from flask_openadr.codec.values import STRING
from flask_openadr.errors import MalformedMessage, UnsupportedValue

from tests.support.strategies import PAYLOAD_STRATEGIES

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def both(body: bytes):
    """``(compiled result, walked result or the error the walk raised)`` of one document."""
    name, element = convert._payload(parse(body))
    ctype = PAYLOAD_TYPES[name]
    compiled = decoder(ctype)(element)
    try:
        walked = convert._decode_complex(element, ctype, name)
    except (MalformedMessage, convert._Unhonoured) as error:
        walked = error
    else:
        crowded = convert._crowded(element, name)
        if crowded:  # a valid document, refused because of its size (454)
            walked = UnsupportedValue(name, walked, crowded)
    return compiled, walked


def agree(body: bytes):
    """Assert that both decoders agree on ``body``; the compiled decoder's result."""
    compiled, walked = both(body)
    if isinstance(walked, UnsupportedValue):  # too many elements: decoded without the limit
        _, element = convert._payload(parse(body))
        unlimited = decoder(PAYLOAD_TYPES[walked.payload_name])(element, sys.maxsize)
        assert repr(unlimited) == repr(walked.payload)
    if isinstance(walked, Exception):
        assert compiled is None, f"the walk refused what the compiled decoder took: {walked}"
    else:
        assert compiled is not None, f"the compiled decoder refused what the walk took: {walked}"
        assert repr(compiled) == repr(walked)  # repr: 1 and 1.0 would be ==
    return compiled


def all_types() -> list:
    """Every complex type the payloads use."""
    found: dict = {}

    def visit(kind):
        if isinstance(kind, Substitution):
            for _, member_type in kind.members:
                visit(member_type)
        elif isinstance(kind, ComplexType) and id(kind) not in found:
            found[id(kind)] = kind
            for member in kind.members:
                for option in getattr(member, "options", (member,)):
                    if hasattr(option, "type"):
                        visit(option.type)

    for payload_type in PAYLOAD_TYPES.values():
        visit(payload_type)
    return list(found.values())


def test_every_type_of_the_model_compiles():
    types = all_types()
    assert len(types) > len(PAYLOAD_TYPES)
    for kind in types:
        assert callable(decoder(kind))
        assert decoder(kind) is decoder(kind)  # generated once


def test_a_type_that_contains_itself_is_refused_when_compiled():
    node = ctype("test:node", f(q("ei", "venID"), STRING))
    object.__setattr__(node, "members", node.members + (
        Field("child", (q("ei", "eiTarget"),), node, optional=True),))
    with pytest.raises(TypeError, match="contains itself"):
        decoder(node)


SETTINGS = settings(max_examples=20, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


@settings(SETTINGS, max_examples=40)
@given(data=st.data())
@pytest.mark.parametrize("payload_name", sorted(PAYLOAD_TYPES))
def test_generated_payloads_decode_the_same(payload_name, data):
    payload = data.draw(PAYLOAD_STRATEGIES[payload_name])
    decoded = agree(codec.encode(payload_name, payload))
    assert decoded is not None


def reformat(body: bytes, seed: int) -> bytes:
    """The same document indented, with comments and processing instructions added at random
    between elements and inside values: nothing a decoder may read differently."""
    root = etree.fromstring(body)
    chooser = random.Random(seed)
    # Not into an empty value: indenting would give it text.
    elements = [element for element in root.iter() if len(element) or element.text]
    for element in chooser.sample(elements, k=min(len(elements), 8)):
        node = (etree.Comment(" c ") if chooser.random() < 0.5
                else etree.ProcessingInstruction("pi", "x"))
        element.insert(chooser.randint(0, len(element)), node)
    return etree.tostring(root, pretty_print=chooser.random() < 0.5)


@SETTINGS
@given(data=st.data(), seed=st.integers(0, 2**32))
@pytest.mark.parametrize("payload_name", sorted(PAYLOAD_TYPES))
def test_reformatted_payloads_decode_the_same(payload_name, data, seed):
    body = codec.encode(payload_name, data.draw(PAYLOAD_STRATEGIES[payload_name]))
    decoded = agree(reformat(body, seed))
    assert decoded is not None
    assert decoded == codec.decode(body)[1]


REPORT = codec.encode("oadrUpdateReport", {
    "request_id": "u1", "ven_id": "v1", "reports": [{
        "intervals": [{"uid": "0", "report_payloads": [{"r_id": "r1", "value": 1.5}]}],
        "report_request_id": "rr", "report_specifier_id": "s",
        "created_date_time": T0,
    }]})

# Every shape of the model: lists of values and of elements, lists held by a wrapper (with the
# list's items inside a further wrapper: oadrTransports), values three steps down, a wrapper
# that may be empty (start_after), flattened children (eiEvent), a nil element (components),
# a substitution group (itemBase), a choice (payloadFloat or oadrPayloadResourceStatus).
EVENT = codec.encode("oadrDistributeEvent", {
    "request_id": "d1", "vtn_id": "vtn", "response": {"response_code": 200, "request_id": "d1"},
    "events": [{
        "event_descriptor": {"event_id": "e", "modification_number": 0, "created_date_time": T0,
                             "market_context": "http://mc.example", "event_status": "far"},
        "active_period": {"dtstart": T0, "duration": timedelta(hours=1),
                          "start_after": timedelta(minutes=5)},
        "event_signals": [{
            "intervals": [{"duration": timedelta(hours=1), "uid": "0", "signal_payload": 1.0}],
            "signal_name": "SIMPLE", "signal_type": "level", "signal_id": "s",
            "current_value": 2.0,
            "item_base": {"kind": "energyReal", "item_description": "RealEnergy",
                          "item_units": "Wh", "si_scale_code": "k"},
            "target": {"group_ids": ["g1", "g2"], "aggregated_pnodes": ["p1", "p2"]},
        }],
        "target": {"ven_ids": ["v1"]}, "response_required": "always"}]})

REGISTRATION = codec.encode("oadrCreatedPartyRegistration", {
    "response": {"response_code": 200, "request_id": "r"}, "vtn_id": "vtn",
    "profiles": [{"profile_name": "2.0b", "transports": ["simpleHttp", "xmpp"]}],
    "extensions": [{"extension_name": "x", "infos": [{"key": "k", "value": "v"}]}]})

CREATED_REPORT = codec.encode("oadrCreatedReport", {
    "response": {"response_code": 200, "request_id": "c1"}, "pending_reports": ["rr1", "rr2"],
    "ven_id": "v1"})

STATUS = codec.encode("oadrUpdateReport", {
    "request_id": "u2", "ven_id": "v1", "reports": [{
        "intervals": [{"uid": "0", "report_payloads": [{"r_id": "r1", "resource_status": {
            "online": True, "manual_override": False}}]}],
        "report_request_id": "rr", "report_specifier_id": "s", "created_date_time": T0}]})

def edits(document: bytes, old: bytes, *replacements: bytes) -> list:
    return [(document, old, new) for new in replacements]


VALUE = b"<ei:value>1.5</ei:value>"
CREATED = b"<ei:createdDateTime>2026-01-01T00:00:00Z"
RID = b"<ei:rID>r1</ei:rID>"
UID = b"<xcal:uid><xcal:text>0</xcal:text></xcal:uid>"
SPECIFIER = b"<ei:reportSpecifierID>s</ei:reportSpecifierID>"
GROUP = b"<ei:groupID>g2</ei:groupID>"
NODE = b"<power:node>p2</power:node>"
PENDING = b"<ei:reportRequestID>rr2</ei:reportRequestID>"
SIGNAL = b"<ei:signalPayload><ei:payloadFloat><ei:value>1.0</ei:value>"
CURRENT = b"<ei:currentValue><ei:payloadFloat><ei:value>2.0</ei:value></ei:payloadFloat>"
START_AFTER = b"<xcal:startafter>PT5M</xcal:startafter>"
NIL = b'<xcal:components xsi:nil="true"/>'
XMPP = b"<oadr:oadrTransportName>xmpp</oadr:oadrTransportName>"

# Edits of those documents: each must give the same answer both ways, whether a dict or an error.
EDITS = [
    # values
    *edits(REPORT, VALUE, b"<ei:value> 1.5 </ei:value>", b"<ei:value>1<!-- c -->.5</ei:value>",
           b"<ei:value>1<?pi x?>.5</ei:value>", b"<ei:value>1<!-- c -->x.5</ei:value>",
           b"<ei:value>NaN</ei:value>", b"<ei:value>1.5<ei:x/></ei:value>", b"<ei:value/>"),
    *edits(REPORT, CREATED, b"<ei:createdDateTime>2026-01-01T24:00:00Z",
           b"<ei:createdDateTime>2026-02-30T00:00:00Z",
           b"<ei:createdDateTime>2026-01-01T00:00:00.1234Z"),
    # text, comments and processing instructions between elements
    *edits(REPORT, RID, RID + b"<!-- between -->", RID + b"text", RID + b"<!-- c -->text",
           b"<?pi x?>" + RID),
    # collapsed wrappers
    *edits(REPORT, UID, b"<xcal:uid>\n  <xcal:text>0</xcal:text>\n</xcal:uid>",
           b"<xcal:uid><!-- c --><xcal:text>0</xcal:text></xcal:uid>",
           b"<xcal:uid>x<xcal:text>0</xcal:text></xcal:uid>",
           b"<xcal:uid><xcal:text>0</xcal:text><xcal:text>1</xcal:text></xcal:uid>",
           b"<xcal:uid/>", b"<xcal:uid><!-- c --></xcal:uid>",
           b"<xcal:uid><xcal:date-time>0</xcal:date-time></xcal:uid>"),
    # single elements and lists
    *edits(REPORT, SPECIFIER, SPECIFIER * 2, b""),
    *edits(REPORT, b"<strm:intervals>", b"<strm:intervals><!-- none -->", b"<strm:intervals>x",
           b"<strm:intervals><ei:other/>"),
    *edits(REPORT, b"</oadr:oadrReportPayload>",
           b"</oadr:oadrReportPayload><oadr:oadrReportPayload><ei:rID>r2</ei:rID>"
           b"<ei:payloadFloat><ei:value>2</ei:value></ei:payloadFloat></oadr:oadrReportPayload>",
           b"</oadr:oadrReportPayload><!-- c --><oadr:oadrReportPayload><ei:rID>r2</ei:rID>"
           b"</oadr:oadrReportPayload>"),
    # a choice: payloadFloat or oadrPayloadResourceStatus
    *edits(REPORT, b"<ei:payloadFloat><ei:value>1.5</ei:value></ei:payloadFloat>", b""),
    *edits(STATUS, b"<oadr:oadrOnline>true</oadr:oadrOnline>",
           b"<oadr:oadrOnline>1</oadr:oadrOnline>", b"<oadr:oadrOnline>yes</oadr:oadrOnline>"),
    *edits(STATUS, b"<oadr:oadrPayloadResourceStatus>", b"<ei:payloadFloat><ei:value>1</ei:value>"
           b"</ei:payloadFloat><oadr:oadrPayloadResourceStatus>"),
    # lists of values (up to MAX_REPEATED), and lists of wrappers each holding a value
    *edits(EVENT, GROUP, b"", b"<!-- c -->" + GROUP, b"<ei:groupID>g2<ei:x/></ei:groupID>",
           GROUP * 999, GROUP * 1000),
    *edits(EVENT, NODE, b"<!-- c -->" + NODE, b"", b"<power:mrid>p2</power:mrid>", NODE * 2),
    # a list held by a wrapper, of values
    *edits(CREATED_REPORT, PENDING, PENDING * 999, PENDING * 1000, b"", PENDING + b"<!-- c -->\n",
           PENDING + b"<ei:eventID>x</ei:eventID>"),
    *edits(CREATED_REPORT, b"<ei:reportRequestID>rr1</ei:reportRequestID>" + PENDING, b""),
    # values three steps down, optional or not
    *edits(EVENT, SIGNAL, SIGNAL.replace(b"<ei:payloadFloat>", b"<!-- c --><ei:payloadFloat>"),
           SIGNAL.replace(b"1.0", b"x")),
    *edits(EVENT, CURRENT + b"</ei:currentValue>", b""),
    *edits(EVENT, CURRENT, b"<ei:currentValue><ei:payloadFloat></ei:payloadFloat>"),
    # wrappers that may be empty: no value
    *edits(EVENT, START_AFTER, b"", b"<!-- c -->", b"x", START_AFTER.replace(b"PT5M", b"P1M"),
           START_AFTER * 2),
    *edits(EVENT, b"<xcal:tolerate>" + START_AFTER + b"</xcal:tolerate>", b""),
    # a flattened child, a nil element
    *edits(EVENT, b"<ei:eiEvent>", b"<ei:eiEvent><!-- c -->", b"<ei:eiEvent>x"),
    *edits(EVENT, NIL, b"<!-- c -->" + NIL, b"<xcal:components>anything<a/></xcal:components>",
           b""),
    # a substitution group
    *edits(EVENT, b"<power:energyReal>", b"<power:energyReal><!-- c -->", b"<power:energyReal>x"),
    *edits(EVENT, b"<scale:siScaleCode>k</scale:siScaleCode>",
           b"<scale:siScaleCode>K</scale:siScaleCode>"),
    *edits(EVENT, b"power:energyReal>", b"power:energyApparent>", b"power:voltage>"),
    # lists held by wrappers, of elements whose own list is held by a wrapper
    *edits(REGISTRATION, XMPP, b"<!-- c -->" + XMPP, XMPP.replace(b"xmpp", b"smtp"), b""),
    *edits(REGISTRATION, b"<oadr:oadrTransport>" + XMPP + b"</oadr:oadrTransport>", b""),
    *edits(REGISTRATION, b"<oadr:oadrTransports>", b"<oadr:oadrTransports><oadr:oadrProfile/>"),
    *edits(REGISTRATION, b"<oadr:oadrExtensions>", b"<oadr:oadrExtensions><!-- c -->"),
    *edits(REGISTRATION, b"<oadr:oadrInfo><oadr:oadrKey>k</oadr:oadrKey>"
           b"<oadr:oadrValue>v</oadr:oadrValue></oadr:oadrInfo>", b""),
]


@pytest.mark.parametrize("document, old, new", EDITS, ids=[str(n) for n in range(len(EDITS))])
def test_edited_documents_decode_the_same(document, old, new):
    assert old in document
    agree(document.replace(old, new))


def test_the_edits_are_not_all_refused_or_all_accepted():
    outcomes = [agree(document.replace(old, new)) is None for document, old, new in EDITS]
    assert 10 < sum(outcomes) < len(outcomes) - 10


def test_the_generic_walk_runs_only_on_refused_documents(monkeypatch):
    walked = []
    real = convert._decode_complex

    def spy(element, ctype, where):
        walked.append(where)
        return real(element, ctype, where)

    monkeypatch.setattr(convert, "_decode_complex", spy)
    for document in (REPORT, EVENT, REGISTRATION, CREATED_REPORT, STATUS, reformat(EVENT, 1), reformat(REPORT, 2)):
        name, payload = codec.decode(document)
        assert payload
    assert walked == []
    with pytest.raises(MalformedMessage, match=r"ei:value: 'x' is not an xs:float"):
        codec.decode(REPORT.replace(b"<ei:value>1.5</ei:value>", b"<ei:value>x</ei:value>"))
    assert walked and walked[0] == "oadrUpdateReport"
    with pytest.raises(UnsupportedValue) as refusal:
        codec.decode(EVENT.replace(b">PT5M<", b">P1M<"))
    assert refusal.value.payload["events"][0]["active_period"]["start_after"] == "P1M"
