"""The compiled writer and the generic encoder give the same bytes and refuse the same payloads.

``codec.encode`` writes with the compiled writer (:mod:`flask_openadr.codec.writer`) and runs
the generic engine only for what the writer did not take, to encode it or to raise its error.
So every payload here is encoded three ways: by the generic engine, by the writer alone and by
``codec.encode``. Either the generic engine encodes it and all three give its bytes (the writer
must not refuse a payload that the strategies generate), or the generic engine raises, the
writer refuses (None) and ``codec.encode`` raises the same error, with the generic engine's
message.
"""
from __future__ import annotations

import math
import sys
from collections import OrderedDict
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from flask_openadr import codec
from flask_openadr.codec import convert, writer
from flask_openadr.codec.fields import ComplexType, Field, Substitution, ctype, f, local_name, q
from flask_openadr.codec.schema import ITEM_BASE, PAYLOAD_TYPES
from flask_openadr.codec.values import STRING

from tests.support.strategies import PAYLOAD_STRATEGIES
from tests.test_codec import _created_event, _event_payload
from tests.test_codec_fast_path import EDITS, all_types
from tests.test_codec_roundtrip import EXAMPLES as ROUND_TRIP_EXAMPLES

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def generic(name: str, payload: Any) -> bytes:
    return etree.tostring(convert.encode_element(name, payload), xml_declaration=True,
                          encoding="UTF-8")


def outcome(function, *args) -> Any:
    """What ``function(*args)`` returned, or ``(exception type, message)`` of what it raised."""
    try:
        return function(*args)
    except Exception as error:  # noqa: BLE001 - the type is part of what is compared
        return type(error), str(error)


def same(name: str, payload: Any, *, rare: bool = False) -> bytes | None:
    """Assert that the three ways agree on ``payload``; its bytes, or None when refused.

    :param rare: the payload has a shape the writer leaves to the generic engine (a subclass
        of dict, list or str): the writer may refuse it."""
    expected = outcome(generic, name, payload)
    compiled = outcome(writer.message(name), payload)
    encoded = outcome(codec.encode, name, payload)
    if isinstance(expected, bytes):
        assert compiled == expected or (rare and compiled is None), \
            "the writer refused or changed what the generic engine wrote"
        assert encoded == expected
        return expected
    # The writer refuses, or meets the same exception (one the value's own methods raise, such
    # as OverflowError for a date-time whose UTC time is before year 1).
    assert compiled is None or compiled == expected, \
        f"the writer took what the generic engine refused: {expected}"
    assert encoded == expected  # the same exception type, with the generic engine's message
    return None


SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def test_every_type_of_the_model_compiles_once():
    types = all_types()
    assert len(types) > len(PAYLOAD_TYPES)
    for kind in types:
        assert callable(writer.writer(kind))
        assert writer.writer(kind) is writer.writer(kind)
    assert writer.message("oadrPoll") is writer.message("oadrPoll")
    assert writer.message("oadrNope") is None


def test_a_type_that_contains_itself_is_refused_when_compiled():
    node = ctype("test:node", f(q("ei", "venID"), STRING))
    object.__setattr__(node, "members", node.members + (
        Field("child", (q("ei", "eiTarget"),), node, optional=True),))
    with pytest.raises(TypeError, match="contains itself"):
        writer.writer(node)


@SETTINGS
@given(data=st.data())
@pytest.mark.parametrize("payload_name", sorted(PAYLOAD_TYPES))
def test_generated_payloads_encode_the_same(payload_name, data):
    assert same(payload_name, data.draw(PAYLOAD_STRATEGIES[payload_name])) is not None


# ---------------------------------------------------------------- the payloads of other tests

def _examples() -> list[tuple[str, dict]]:
    """The example of every payload of the round-trip tests, the payloads of the codec's tests,
    the documents of the decoder's tests (and every edit of them that decodes), decoded, and
    the payloads of the encoding benchmark."""
    found: list[tuple[str, dict]] = list(ROUND_TRIP_EXAMPLES.items())
    found += [("oadrDistributeEvent", _event_payload(value)) for value in (1.0, -0.5, 1e-9)]
    found += [("oadrCreatedEvent", _created_event())]
    for document, old, new in EDITS:
        for body in (document, document.replace(old, new)):
            try:
                found.append(codec.decode(body))
            except Exception:  # noqa: BLE001 - refused edits have no payload to encode
                pass
    sys.path.insert(0, str(Path(__file__).parent.parent / "bench"))
    try:
        import bench_encode
    finally:
        sys.path.pop(0)
    found.extend(bench_encode.PAYLOADS.values())
    return found


EXAMPLES = _examples()


@pytest.mark.parametrize("name, payload", EXAMPLES, ids=[str(n) for n in range(len(EXAMPLES))])
def test_the_payloads_of_other_tests_encode_the_same(name, payload):
    assert same(name, payload) is not None


def test_there_are_examples_of_every_shape():
    names = {name for name, _ in EXAMPLES}
    assert names == set(PAYLOAD_TYPES)
    assert len(EXAMPLES) > 50


# ---------------------------------------------------------------- edge values

def event(**changes: Any) -> dict:
    """An oadrDistributeEvent with every shape of the model; ``changes`` replace keys of its
    event (``descriptor__x``, ``signal__x``, ``interval__x``, ``period__x`` go deeper)."""
    interval = {"dtstart": T0, "duration": timedelta(hours=1), "uid": "0", "signal_payload": 1.5}
    signal = {"intervals": [interval], "signal_name": "SIMPLE", "signal_type": "level",
              "signal_id": "s", "current_value": 2.0,
              "item_base": {"kind": "energyReal", "item_description": "RealEnergy",
                            "item_units": "Wh", "si_scale_code": "k"},
              "target": {"group_ids": ["g1"]}}
    descriptor = {"event_id": "e", "modification_number": 0, "created_date_time": T0,
                  "market_context": "http://mc.example", "event_status": "far"}
    period = {"dtstart": T0, "duration": timedelta(hours=1)}
    one = {"event_descriptor": descriptor, "active_period": period, "event_signals": [signal],
           "target": {"ven_ids": ["v1"]}, "response_required": "always"}
    parts = {"descriptor": descriptor, "signal": signal, "interval": interval, "period": period}
    for key, value in changes.items():
        part, _, inner = key.partition("__")
        holder = parts[part] if inner else one
        holder[inner or key] = value
    return {"request_id": "d1", "vtn_id": "vtn", "events": [one]}


TEXTS = ["", " ", "007", "a<b>&c", "]]>", "\"quoted\" 'single'", "tab\tnew\nline", "cr\r\n",
         "Ünïcødé ✓", "\U0001F600 astral", "\x7f\x85\x9f", "\u2028\u2029", "\ufdd0\ufffd",
         "\ue000", "\U0010FFFF", "&amp;", "&#13;", "{braces}", "%s %d", "\\"]
REFUSED_TEXTS = ["\x00", "nul\x00", "\x01", "\x08", "\x0b", "\x0c", "\x1f", "\ufffe", "\uffff",
                 "\ud800", "lone \udfff", "\x1b[0m"]


@pytest.mark.parametrize("text", TEXTS + REFUSED_TEXTS)
def test_texts_are_escaped_as_the_serializer_escapes_them(text):
    written = same("oadrPoll", {"ven_id": text})
    assert (written is None) == (text in REFUSED_TEXTS)
    # in a deeper value, a list item and a wrapper's list
    same("oadrDistributeEvent", event(descriptor__vtn_comment=text))
    same("oadrDistributeEvent", event(signal__target={"group_ids": [text, "g"]}))
    same("oadrCreatedReport", {"response": {"response_code": 200, "request_id": ""},
                               "pending_reports": [text]})


@settings(max_examples=300, deadline=None)
@given(text=st.text(st.characters(), max_size=6))
def test_any_text_is_written_or_refused_as_the_generic_engine_does(text):
    same("oadrPoll", {"ven_id": text})


VALUES = [
    # floats: the shortest form, negative zero, extremes, ints, and what is refused
    ("signal__current_value", [0.0, -0.0, 1e-300, 1.7976931348623157e308, 5e-324, 1 / 3, 3,
                               -7, 10**30, 10**400, True, math.inf, -math.inf, math.nan, "1.5",
                               None]),
    # unsignedInt
    ("descriptor__modification_number", [0, 1, 4294967295, 4294967296, -1, True, 1.0, "1",
                                         None]),
    ("descriptor__priority", [0, 2**32 - 1, 2**32, -1, False, None]),
    # date-times: UTC, other zones, fractions, naive, extremes
    ("descriptor__created_date_time", [
        T0, T0.replace(microsecond=123000), T0.replace(microsecond=123456),
        T0.replace(microsecond=1), datetime(1, 1, 1, tzinfo=timezone.utc),
        datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=timezone.utc),
        datetime(2026, 1, 1, 1, tzinfo=timezone(timedelta(hours=1))),
        datetime(2026, 1, 1, tzinfo=timezone(timedelta(hours=-5, minutes=-30))),
        datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=1))),
        datetime(2026, 1, 1), "2026-01-01T00:00:00Z", T0.date(), None]),
    # durations: zero, negative, days, fractions (refused), cached and not
    ("interval__duration", [timedelta(0), timedelta(seconds=-1), timedelta(days=-1, seconds=5),
                            timedelta(days=999999999, hours=23), timedelta(days=1, seconds=1),
                            timedelta(seconds=1.5), timedelta(microseconds=1), 3600, "PT1H",
                            None]),
    # enumerations, fixed and extensible
    ("signal__signal_name", ["SIMPLE", "simple", "x-custom", "x-", "x-a<b", "LOAD_DISPATCH", "",
                             None, 1]),
    ("descriptor__event_status", ["far", "active", "Far", " far", "", None]),
    ("response_required", ["always", "never", "sometimes", None]),
    # strings and URIs that are not str
    ("descriptor__market_context", ["", "urn:x", 7, b"bytes", None]),
    ("interval__uid", ["", "1", 1, None]),
    # substitution groups: every member, a member the schema names twice, unknown ones
    ("signal__item_base", [
        *({"kind": local_name(qname), **values} for qname, values in (
            (q("power", "voltage"), {"item_description": "Voltage", "item_units": "V",
                                     "si_scale_code": "none"}),
            (q("oadr", "currency"), {"item_description": "currency", "item_units": "USD",
                                     "si_scale_code": "none"}),
            (q("oadr", "customUnit"), {"item_description": "<mine>", "item_units": "&",
                                       "si_scale_code": "m"}),
            (q("oadr", "pulseCount"), {"item_description": "pulse count", "item_units": "count",
                                       "pulse_factor": 1.5}),
            (q("power", "powerReal"), {"item_description": "RealPower", "item_units": "W",
                                       "si_scale_code": "k", "power_attributes": {
                                           "hertz": 60.0, "voltage": 230.5, "ac": True}}),
            (q("power", "powerReal"), {"item_description": "RealPower", "item_units": "W",
                                       "si_scale_code": "k", "power_attributes": {
                                           "hertz": 1e20, "voltage": 1e-7, "ac": False}}),
            (q("power", "powerReal"), {"item_description": "RealPower", "item_units": "W",
                                       "si_scale_code": "k", "power_attributes": {
                                           "hertz": math.inf, "voltage": 1.0, "ac": 1}}),
        )),
        {"kind": "energyReal"}, {"kind": "watts"}, {"kind": 1}, {"kind": ["voltage"]},
        {"item_description": "Voltage"}, "voltage", [], None,
        {"kind": "voltage", "item_description": "Voltage", "item_units": "V",
         "si_scale_code": "none", "extra": 1}]),
    # targets: empty (an element without content), lists that are not lists
    ("target", [{}, {"ven_ids": []}, {"ven_ids": ()}, {"ven_ids": ("a", "b")},
                {"ven_ids": None}, {"ven_ids": "v1"}, {"ven_ids": [None]},
                {"transport_interfaces": [{"point_of_receipt": "a", "point_of_delivery": "b"}]},
                {"transport_interfaces": [{}]}, {"ven_id": ["v"]}, [], None]),
    ("signal__target", [{}, None, {"group_ids": [], "party_ids": []}]),
    # lists with a minimum, held by a wrapper
    ("signal__intervals", [[], None, (), "x", [None], [{}]]),
    ("event_signals", [[], None, [{}], ()]),
    ("active_period", [{"dtstart": T0, "duration": timedelta(0), "tolerance": None,
                        "notification": timedelta(days=1), "ramp_up": timedelta(minutes=5),
                        "recovery": timedelta(minutes=5), "start_after": timedelta(0)},
                       {"dtstart": T0}, {"duration": timedelta(0)}, {}, None]),
]


@pytest.mark.parametrize("key, value", [(key, value) for key, values in VALUES
                                        for value in values],
                         ids=lambda value: repr(value)[:40])
def test_edge_values_are_written_or_refused_as_the_generic_engine_does(key, value):
    same("oadrDistributeEvent", event(**{key: value}))


def test_the_edge_values_are_not_all_refused_or_all_written():
    written = [same("oadrDistributeEvent", event(**{key: value})) is not None
               for key, values in VALUES for value in values]
    assert 40 < sum(written) < len(written) - 40


def test_empty_elements_and_nil_are_written_as_the_serializer_writes_them():
    body = same("oadrDistributeEvent", event(target={}))
    assert b"<ei:eiTarget/>" in body and b'<xcal:components xsi:nil="true"/>' in body
    body = same("oadrCreatedReport", {"response": {"response_code": 200, "request_id": ""},
                                      "pending_reports": []})
    assert b"<oadr:oadrPendingReports/>" in body and b"<pyld:requestID></pyld:requestID>" in body
    # an optional wrapper with no items: no wrapper at all
    body = same("oadrCreatedPartyRegistration", {
        "response": {"response_code": 200, "request_id": "r"}, "vtn_id": "vtn",
        "profiles": [{"profile_name": "2.0b", "transports": ["simpleHttp"]}], "extensions": []})
    assert b"oadrExtensions" not in body
    body = same("oadrCreatedPartyRegistration", {
        "response": {"response_code": 200, "request_id": "r"}, "vtn_id": "vtn",
        "profiles": [{"profile_name": "2.0b", "transports": ["simpleHttp"]}],
        "service_specific_info": {"services": []},
        "extensions": [{"extension_name": "x", "infos": []}]})
    assert b"<oadr:oadrServiceSpecificInfo/>" in body


@pytest.mark.parametrize("payload", [
    {"choice": 1}, {"value": 1.0, "resource_status": {"online": True, "manual_override": False}},
    {}, {"value": None, "resource_status": None},
    {"value": None, "resource_status": {"online": True, "manual_override": False}},
    {"value": 1.0, "resource_status": None}])
def test_a_choice_is_written_or_refused_as_the_generic_engine_does(payload):
    same("oadrUpdateReport", {"request_id": "u", "reports": [{
        "intervals": [{"report_payloads": [{"r_id": "r", **payload}]}],
        "report_request_id": "rr", "report_specifier_id": "s", "created_date_time": T0}]})


@pytest.mark.parametrize("payload", [
    None, [], "x", {"ven_id": "v", "extra": None}, {"ven_id": None}, OrderedDict(ven_id="v"),
    type("Dict", (dict,), {})(ven_id="v"), OrderedDict(ven_id=7), {1: "v"}, {("ven_id",): "v"}])
def test_payloads_of_other_types_are_written_or_refused_as_the_generic_engine_does(payload):
    same("oadrPoll", payload, rare=True)


def test_subclasses_of_dict_list_and_str_are_taken_by_the_generic_engine():
    class Text(str):
        pass

    payload = {"response": OrderedDict(response_code=200, request_id=Text("r")),
               "pending_reports": type("List", (list,), {})(["a", Text("b")])}
    assert writer.message("oadrCreatedReport")(payload) is None
    assert codec.encode("oadrCreatedReport", payload) == generic("oadrCreatedReport", payload)


# ---------------------------------------------------------------- broken payloads

BAD_VALUES = st.sampled_from([None, 0, -1, 1.5, math.nan, "", "x", "\x00", [], [None], {},
                              {"kind": "voltage"}, (), True, T0, datetime(2026, 1, 1),
                              timedelta(seconds=0.5), object()])


def _places(value: Any, path: tuple = ()) -> list[tuple]:
    """Every place in a payload where a value can be replaced, removed or added."""
    found = [path]
    if isinstance(value, dict):
        for key, item in value.items():
            found.extend(_places(item, path + (key,)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found.extend(_places(item, path + (index,)))
    return found


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
@pytest.mark.parametrize("payload_name", sorted(PAYLOAD_TYPES))
def test_broken_payloads_are_refused_as_the_generic_engine_refuses_them(payload_name, data):
    payload = data.draw(PAYLOAD_STRATEGIES[payload_name])
    path = data.draw(st.sampled_from(_places(payload)))
    action = data.draw(st.sampled_from(["replace", "delete", "add"]))
    if not path:
        payload = data.draw(BAD_VALUES)
    else:
        holder = payload
        for step in path[:-1]:
            holder = holder[step]
        if action == "replace":
            holder[path[-1]] = data.draw(BAD_VALUES)
        elif action == "delete":
            del holder[path[-1]]
        elif isinstance(holder, dict):
            holder[data.draw(st.sampled_from(["kind", "x", "value", "ven_id", "items"]))] = \
                data.draw(BAD_VALUES)
        else:
            holder.append(data.draw(BAD_VALUES))
    same(payload_name, payload)


def test_encode_runs_the_generic_engine_only_for_what_the_writer_refused(monkeypatch):
    walked = []
    real = convert._encode_complex

    def spy(element, data, ctype, where, **keywords):
        walked.append(where)
        return real(element, data, ctype, where, **keywords)

    for name, payload in EXAMPLES:  # oadrResponse's prepared replies are built by the tree once
        codec.encode(name, payload)
    monkeypatch.setattr(convert, "_encode_complex", spy)
    for name, payload in EXAMPLES:
        codec.encode(name, payload)
    assert walked == []
    with pytest.raises(ValueError, match=r"oadrPoll\.ven_id: expected str"):
        codec.encode("oadrPoll", {"ven_id": 7})
    assert walked == ["oadrPoll"]
