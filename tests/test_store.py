"""Store conformance: one suite every backend passes, plus the shared-file and process tests.

A new backend joins in tests/support/backends.py; the tests themselves do not change.
"""
from __future__ import annotations

import json
import math
import multiprocessing
import os
import threading
import time
import warnings
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flask_openadr.errors import ConfigurationError, StoreError
from flask_openadr.store import BACKENDS as STORE_BACKENDS
from flask_openadr.store import open_store, serialize
from flask_openadr.store.base import NonceUsed
from flask_openadr.store.memory import MemoryStore
from flask_openadr.store.sqlite import SQLiteStore
from tests.support.backends import SHARED, URI_FACTORIES
from tests.support.forking import in_child, wait_for_child

BACKENDS = list(URI_FACTORIES)
SHARED_BACKENDS = SHARED
STORE_URIS = URI_FACTORIES

UTC = timezone.utc
T0 = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
FINGERPRINT = "AB:CD:EF:01:23:45:67:89:0A:BC"

fork_only = pytest.mark.skipif(
    "fork" not in multiprocessing.get_all_start_methods(), reason="needs fork()"
)


@pytest.fixture(params=BACKENDS)
def store(request, tmp_path):
    opened = open_store(STORE_URIS[request.param](tmp_path))
    yield opened
    opened.close()


@pytest.fixture(params=SHARED_BACKENDS)
def shared_uri(request, tmp_path):
    return STORE_URIS[request.param](tmp_path)


# -- records -------------------------------------------------------------------------------------


def make_ven(ven_id="007", **fields):
    ven = {
        "ven_id": ven_id,
        "registration_id": f"reg-{ven_id}",
        "ven_name": f"VEN {ven_id}",
        "profile_name": "2.0b",
        "transport_name": "simpleHttp",
        "transport_address": None,
        "report_only": False,
        "xml_signature": True,
        "http_pull_model": True,
        "fingerprint": FINGERPRINT,
        "poll_frequency": timedelta(seconds=10, microseconds=1),
        "group_ids": ["group-1"],
        "resource_ids": [],
        "party_ids": ["007"],
        "registered_at": T0,
        "cancel_requested": False,
    }
    ven.update(fields)
    return ven


def make_event(event_id="event-1", **fields):
    event = {
        "event_descriptor": {
            "event_id": event_id,
            "modification_number": 0,
            "created_date_time": T0,
            "market_context": "http://market.example/1",
            "priority": 1,
            "test_event": False,
        },
        "active_period": {"dtstart": T0, "duration": timedelta(hours=1)},
        "event_signals": [
            {
                "signal_id": "007",
                "intervals": [
                    {"uid": "0", "duration": timedelta(minutes=30), "signal_payload": 1.5},
                    {"uid": "1", "duration": timedelta(microseconds=-1), "signal_payload": 0},
                ],
            }
        ],
        "targets": {"ven_id": ["007"]},
    }
    event.update(fields)
    return event


def make_item(priority, payload_name="oadrDistributeEvent", **payload):
    return {"priority": priority, "payload_name": payload_name, "payload": payload}


def make_response(ven_id, event_id, modification_number=0, received_at=T0, opt_type="optIn"):
    return {
        "ven_id": ven_id,
        "event_id": event_id,
        "modification_number": modification_number,
        "opt_type": opt_type,
        "response_code": 200,
        "response_description": "OK",
        "request_id": f"req-{ven_id}-{modification_number}",
        "received_at": received_at,
    }


def assert_exact(got, expected, where="value"):
    """Equal *and* of the same types all the way down (1 == 1.0 == True would hide a bug)."""
    assert type(got) is type(expected), f"{where}: {type(got)} != {type(expected)}"
    if isinstance(expected, dict):
        assert list(got) == list(expected), f"{where}: keys {list(got)} != {list(expected)}"
        for key in expected:
            assert_exact(got[key], expected[key], f"{where}[{key!r}]")
    elif isinstance(expected, list):
        assert len(got) == len(expected), f"{where}: length {len(got)} != {len(expected)}"
        for i, (g, e) in enumerate(zip(got, expected)):
            assert_exact(g, e, f"{where}[{i}]")
    elif isinstance(expected, float):
        if math.isnan(expected):
            assert math.isnan(got), where
        else:
            assert got == expected and math.copysign(1, got) == math.copysign(1, expected), where
    elif isinstance(expected, datetime):
        assert got == expected, f"{where}: {got!r} != {expected!r}"
        assert got.utcoffset() == timedelta(0), f"{where}: {got!r} is not in UTC"
    else:
        assert got == expected, f"{where}: {got!r} != {expected!r}"


def snapshot(store, ven_ids=("007", "008"), event_ids=("event-1", "event-2")):
    """Everything the store holds about some keys, to compare before and after."""
    return {
        "vens": store.list_vens(),
        "events": store.list_events(),
        "delivered": {v: store.get_delivered(v) for v in ven_ids},
        "responses": {e: store.list_event_responses(e) for e in event_ids},
        "outbox": {v: store.list_outbox(v) for v in ven_ids},
    }


# -- empty store ---------------------------------------------------------------------------------


def test_missing_records_are_none_or_empty(store):
    assert store.get_ven("007") is None
    assert store.get_ven_by_fingerprint(FINGERPRINT) is None
    assert store.list_vens() == []
    assert store.get_event("event-1") is None
    assert store.list_events() == []
    assert store.get_delivered("007") == {}
    assert store.list_event_responses("event-1") == []
    assert store.pop_outbox("007") is None
    assert store.pop_outbox("007", max_priority=5) is None
    assert store.list_outbox("007") == []
    # Removing what is not there is not an error.
    store.delete_event("event-1")
    store.clear_outbox("007")


# -- VENs ----------------------------------------------------------------------------------------


def test_ven_round_trip_is_exact(store):
    ven = make_ven("007")
    store.put_ven(ven)
    assert_exact(store.get_ven("007"), ven)
    assert store.get_ven("7") is None  # "007" is an ID, never a number
    assert_exact(store.list_vens(), [ven])


def test_ven_datetime_in_another_offset_comes_back_as_the_same_instant_in_utc(store):
    plus_two = T0.astimezone(timezone(timedelta(hours=2)))
    store.put_ven(make_ven(registered_at=plus_two))
    got = store.get_ven("007")["registered_at"]
    assert got == T0 and got.utcoffset() == timedelta(0) and got.microsecond == 123456


def test_put_ven_replaces_the_whole_record(store):
    store.put_ven(make_ven("007", ven_name="first"))
    replacement = make_ven("007", registration_id=None)
    del replacement["ven_name"]
    store.put_ven(replacement)
    assert_exact(store.get_ven("007"), replacement)
    assert len(store.list_vens()) == 1


def test_list_vens_is_ordered_by_ven_id(store):
    for ven_id in ["b", "10", "a", "9", "007", "B"]:
        store.put_ven(make_ven(ven_id, fingerprint=None))
    assert [v["ven_id"] for v in store.list_vens()] == ["007", "10", "9", "B", "a", "b"]


def test_ven_values_are_copies(store):
    ven = make_ven("007")
    store.put_ven(ven)
    ven["group_ids"].append("changed-after-put")
    ven["ven_name"] = "changed-after-put"
    for got in (
        store.get_ven("007"),
        store.get_ven_by_fingerprint(FINGERPRINT),
        store.list_vens()[0],
    ):
        assert got == make_ven("007")
        got["group_ids"].append("changed-after-get")
        got["ven_name"] = "changed-after-get"
    assert store.get_ven("007") == make_ven("007")


def test_get_ven_by_fingerprint_ignores_case_and_colons(store):
    store.put_ven(make_ven("007", fingerprint="ab:cd:ef:01:23:45:67:89:0a:bc"))
    store.put_ven(make_ven("008", fingerprint="11223344556677889900"))
    lower_plain = " abcdef01234567890abc "
    for asked in (FINGERPRINT, FINGERPRINT.lower(), FINGERPRINT.replace(":", ""), lower_plain):
        assert store.get_ven_by_fingerprint(asked)["ven_id"] == "007", asked
    assert store.get_ven_by_fingerprint("11:22:33:44:55:66:77:88:99:00")["ven_id"] == "008"
    assert store.get_ven_by_fingerprint("AB:CD:EF:01:23:45:67:89:0A:BD") is None
    assert store.get_ven_by_fingerprint("") is None
    # The record keeps the fingerprint as it was written.
    assert store.get_ven("007")["fingerprint"] == "ab:cd:ef:01:23:45:67:89:0a:bc"


def test_fingerprint_lookup_follows_overwrites(store):
    store.put_ven(make_ven("007"))
    store.put_ven(make_ven("007", fingerprint="00:11:22:33:44:55:66:77:88:99"))
    assert store.get_ven_by_fingerprint(FINGERPRINT) is None
    assert store.get_ven_by_fingerprint("00112233445566778899")["ven_id"] == "007"
    store.put_ven(make_ven("007", fingerprint=None))
    assert store.get_ven_by_fingerprint("00112233445566778899") is None
    store.put_ven(make_ven("008", fingerprint=""))
    assert store.get_ven_by_fingerprint("") is None


def test_shared_fingerprint_returns_the_lowest_ven_id(store):
    for ven_id in ["c", "a", "b"]:
        store.put_ven(make_ven(ven_id))
    assert store.get_ven_by_fingerprint(FINGERPRINT)["ven_id"] == "a"


def test_put_ven_refuses_bad_records_and_writes_nothing(store):
    with pytest.raises(ValueError, match="ven_id"):
        store.put_ven({"ven_name": "no id"})
    with pytest.raises(ValueError, match="naive"):
        store.put_ven(make_ven(registered_at=datetime(2024, 5, 1, 12, 0)))
    with pytest.raises(TypeError, match="set"):
        store.put_ven(make_ven(group_ids={"a", "b"}))
    with pytest.raises(ValueError, match="fingerprint"):
        store.put_ven(make_ven(fingerprint=1234))
    assert store.list_vens() == []


# -- events --------------------------------------------------------------------------------------


def test_event_round_trip_is_exact(store):
    event = make_event("007")
    store.put_event(event)
    assert_exact(store.get_event("007"), event)
    assert_exact(store.list_events(), [event])


def test_awkward_text_in_records_round_trips(store):
    # A lone surrogate cannot be encoded as UTF-8; a NUL ends a C string.
    event = make_event("event-1", text=["\ud800", "a\x00b", "\U0001f50c", "\\u0000", '"$dt"'])
    store.put_event(event)
    assert_exact(store.get_event("event-1"), event)


def test_events_list_in_insertion_order_and_a_replacement_keeps_its_place(store):
    for event_id in ["event-2", "event-1", "event-3"]:
        store.put_event(make_event(event_id))
    changed = make_event("event-1", note="modified")
    store.put_event(changed)
    events = store.list_events()
    assert [e["event_descriptor"]["event_id"] for e in events] == ["event-2", "event-1", "event-3"]
    assert events[1] == changed


def test_delete_event(store):
    for event_id in ["event-1", "event-2", "event-3"]:
        store.put_event(make_event(event_id))
    store.delete_event("event-2")
    store.delete_event("event-2")
    assert store.get_event("event-2") is None
    store.put_event(make_event("event-2"))  # put again: now the newest
    store.delete_event("event-1")
    assert [e["event_descriptor"]["event_id"] for e in store.list_events()] == [
        "event-3",
        "event-2",
    ]


def test_get_events_reads_many_events_at_once(store):
    for event_id in ["event-1", "event-2", "event-3"]:
        store.put_event(make_event(event_id))
    got = store.get_events(["event-3", "unknown", "event-1", "event-3"])
    assert got == {"event-3": make_event("event-3"), "event-1": make_event("event-1")}
    got["event-1"]["event_descriptor"]["modification_number"] = 42  # a copy
    assert store.get_event("event-1") == make_event("event-1")
    assert store.get_events([]) == {}
    many = [f"event-{n:04d}" for n in range(1203)]  # more than one chunk
    for event_id in many[::100]:
        store.put_event(make_event(event_id))
    assert sorted(store.get_events(many)) == sorted(many[::100])
    with store.atomic():
        store.delete_event("event-2")
        store.put_event(make_event("event-4", targets={"ven_id": ["008"]}))
        # the block sees its own writes
        assert store.get_events(["event-2", "event-4"]) == {
            "event-4": make_event("event-4", targets={"ven_id": ["008"]})}
    with pytest.raises(RuntimeError):
        with store.atomic():
            store.delete_event("event-3")
            raise RuntimeError("roll back")
    assert list(store.get_events(["event-2", "event-3"])) == ["event-3"]


def test_event_values_are_copies(store):
    event = make_event()
    store.put_event(event)
    event["event_descriptor"]["modification_number"] = 99
    for got in (store.get_event("event-1"), store.list_events()[0]):
        assert got == make_event()
        got["event_descriptor"]["modification_number"] = 42
        got["event_signals"][0]["intervals"].clear()
    assert store.get_event("event-1") == make_event()


def test_put_event_needs_an_event_id(store):
    with pytest.raises(ValueError, match="event_id"):
        store.put_event({"event_descriptor": {}})
    with pytest.raises(ValueError, match="event_id"):
        store.put_event({"event_descriptor": {"event_id": 7}})
    with pytest.raises(ValueError, match="event_id"):
        store.put_event({})
    assert store.list_events() == []


# -- delivery state ------------------------------------------------------------------------------


def test_delivered_map(store):
    store.set_delivered("007", {"event-1": 0, "007": 3})
    assert_exact(store.get_delivered("007"), {"event-1": 0, "007": 3})
    assert store.get_delivered("008") == {}
    store.set_delivered("007", {"event-2": 1})  # replaces, does not merge
    assert store.get_delivered("007") == {"event-2": 1}
    got = store.get_delivered("007")
    got["event-9"] = 9
    assert store.get_delivered("007") == {"event-2": 1}
    given_map = {"event-3": 2}
    store.set_delivered("008", given_map)
    given_map["event-3"] = 5
    assert store.get_delivered("008") == {"event-3": 2}
    store.set_delivered("007", {})
    assert store.get_delivered("007") == {}
    with pytest.raises(TypeError):
        store.set_delivered("007", [("event-1", 0)])


def test_delivered_maps_of_many_vens_at_once(store):
    store.set_delivered("007", {"event-1": {"n": 0}})
    store.set_delivered_many({"008": {"event-2": {"n": 1}}, "009": {"event-3": [1, 2]},
                              "007": {}})
    assert store.get_delivered("007") == {}
    assert store.get_delivered("008") == {"event-2": {"n": 1}}
    got = store.get_delivered_many(["009", "008", "nobody", "008"])
    assert got == {"009": {"event-3": [1, 2]}, "008": {"event-2": {"n": 1}}, "nobody": {}}
    got["008"]["event-2"]["n"] = 5  # a copy
    assert store.get_delivered("008") == {"event-2": {"n": 1}}
    many = {f"ven-{n:04d}": {"event": {"n": n}} for n in range(1203)}  # more than one chunk
    store.set_delivered_many(many)
    assert store.get_delivered_many(list(many)) == many
    with store.atomic():
        store.set_delivered_many({"ven-0001": {}, "ven-0002": {"event": {"n": -2}}})
        assert store.get_delivered_many(["ven-0001", "ven-0002"]) == {
            "ven-0001": {}, "ven-0002": {"event": {"n": -2}}}  # the block sees its own writes
    with pytest.raises(RuntimeError):
        with store.atomic():
            store.set_delivered_many({"ven-0003": {}})
            raise RuntimeError("roll back")
    assert store.get_delivered("ven-0003") == {"event": {"n": 3}}
    with pytest.raises(TypeError):
        store.set_delivered_many({"ven-0004": {}, "ven-0005": [("event", 1)]})
    assert store.get_delivered("ven-0004") == {"event": {"n": 4}}  # checked before writing
    assert store.get_delivered_many([]) == {}
    store.set_delivered_many({})


# -- event responses -----------------------------------------------------------------------------


def test_event_response_upserts_on_ven_event_and_modification_number(store):
    store.put_event_response(make_response("007", "event-1", 0, opt_type="optIn"))
    store.put_event_response(make_response("007", "event-1", 0, opt_type="optOut"))
    assert [r["opt_type"] for r in store.list_event_responses("event-1")] == ["optOut"]
    later = make_response("007", "event-1", 1, received_at=T0 + timedelta(seconds=1))
    store.put_event_response(later)
    responses = store.list_event_responses("event-1")
    assert [(r["modification_number"], r["opt_type"]) for r in responses] == [
        (0, "optOut"),
        (1, "optIn"),
    ]
    assert_exact(responses[1], later)


def test_event_responses_are_ordered_by_received_at_then_ven_id(store):
    # The +05:00 time is the latest instant although its local text sorts first.
    plus_five = timezone(timedelta(hours=5))
    store.put_event_response(make_response("a", "event-1", 0, T0 + timedelta(hours=2)))
    store.put_event_response(make_response("b", "event-1", 0, T0))
    latest = (T0 + timedelta(hours=3)).astimezone(plus_five)
    store.put_event_response(make_response("c", "event-1", 0, latest))
    store.put_event_response(make_response("a", "event-1", 1, T0))
    store.put_event_response(make_response("z", "event-2", 0, T0 - timedelta(days=1)))
    got = [(r["ven_id"], r["modification_number"]) for r in store.list_event_responses("event-1")]
    assert got == [("a", 1), ("b", 0), ("a", 0), ("c", 0)]
    assert [r["ven_id"] for r in store.list_event_responses("event-2")] == ["z"]
    assert store.list_event_responses("event-3") == []


def test_delete_event_responses_removes_every_version_of_one_event(store):
    store.put_event_response(make_response("007", "event-1", 0))
    store.put_event_response(make_response("008", "event-1", 1))
    store.put_event_response(make_response("007", "event-2", 0))
    store.delete_event_responses("event-1")
    assert store.list_event_responses("event-1") == []
    assert [r["ven_id"] for r in store.list_event_responses("event-2")] == ["007"]
    store.delete_event_responses("event-9")  # nothing there: not an error
    with store.atomic():
        store.put_event_response(make_response("009", "event-2", 1))
        store.delete_event_responses("event-2")
        assert store.list_event_responses("event-2") == []  # the block sees its own writes
        store.put_event_response(make_response("010", "event-2", 0))
    assert [r["ven_id"] for r in store.list_event_responses("event-2")] == ["010"]
    with pytest.raises(RuntimeError):
        with store.atomic():
            store.delete_event_responses("event-2")
            raise RuntimeError("roll back")
    assert [r["ven_id"] for r in store.list_event_responses("event-2")] == ["010"]


def test_event_response_values_are_copies(store):
    response = make_response("007", "event-1")
    store.put_event_response(response)
    response["opt_type"] = "optOut"
    got = store.list_event_responses("event-1")[0]
    got["opt_type"] = "changed"
    assert store.list_event_responses("event-1") == [make_response("007", "event-1")]


def test_event_response_needs_its_key(store):
    for bad in (
        {**make_response("007", "event-1"), "modification_number": None},
        {**make_response("007", "event-1"), "modification_number": "0"},
        {**make_response("007", "event-1"), "ven_id": None},
        {**make_response("007", "event-1"), "received_at": "2024-05-01T12:00:00Z"},
    ):
        with pytest.raises(ValueError):
            store.put_event_response(bad)
    assert store.list_event_responses("event-1") == []


# -- outbox --------------------------------------------------------------------------------------


def test_outbox_pops_lowest_priority_first_and_fifo_within_one(store):
    for priority, name in [(2, "a"), (1, "b"), (2, "c"), (1, "d"), (0, "e")]:
        store.push_outbox("007", make_item(priority, name=name))
    popped = [store.pop_outbox("007")["payload"]["name"] for _ in range(5)]
    assert popped == ["e", "b", "d", "a", "c"]
    assert store.pop_outbox("007") is None


def test_outbox_max_priority(store):
    store.push_outbox("007", make_item(3, name="x"))
    store.push_outbox("007", make_item(1, name="y"))
    assert store.pop_outbox("007", max_priority=0) is None
    assert store.pop_outbox("007", max_priority=1)["payload"]["name"] == "y"
    assert store.pop_outbox("007", max_priority=2) is None
    assert store.pop_outbox("007", max_priority=3)["payload"]["name"] == "x"
    with pytest.raises(ValueError, match="max_priority"):
        store.pop_outbox("007", max_priority="1")


def test_list_outbox_is_in_pop_order_and_removes_nothing(store):
    items = [make_item(2, name="a"), make_item(1, name="b"), make_item(1, name="c")]
    for item in items:
        store.push_outbox("007", item)
    listed = store.list_outbox("007")
    assert_exact(listed, [items[1], items[2], items[0]])
    assert store.list_outbox("007") == listed
    assert [store.pop_outbox("007") for _ in range(3)] == listed


def test_outboxes_are_per_ven_and_clear_empties_one(store):
    store.push_outbox("007", make_item(1, name="for-007"))
    store.push_outbox("008", make_item(1, name="for-008"))
    store.push_outbox("008", make_item(2, name="for-008-too"))
    assert store.pop_outbox("7") is None
    store.clear_outbox("008")
    assert store.list_outbox("008") == []
    assert store.pop_outbox("008") is None
    assert store.pop_outbox("007")["payload"]["name"] == "for-007"
    store.push_outbox("008", make_item(1, name="after-clear"))
    assert store.pop_outbox("008")["payload"]["name"] == "after-clear"


def test_outbox_values_are_copies_and_round_trip_exactly(store):
    item = make_item(1, event=make_event())
    store.push_outbox("007", item)
    item["payload"]["event"]["event_descriptor"]["event_id"] = "changed"
    listed = store.list_outbox("007")[0]
    assert_exact(listed, make_item(1, event=make_event()))
    listed["payload"].clear()
    assert_exact(store.pop_outbox("007"), make_item(1, event=make_event()))


def test_outbox_item_needs_an_int_priority(store):
    for priority in (None, "1", 1.0, True):
        with pytest.raises(ValueError, match="priority"):
            store.push_outbox("007", make_item(priority))
    assert store.list_outbox("007") == []


# -- atomic --------------------------------------------------------------------------------------


def populate(store):
    store.put_ven(make_ven("007"))
    store.put_event(make_event("event-1"))
    store.set_delivered("007", {"event-1": 0})
    store.put_event_response(make_response("007", "event-1"))
    store.push_outbox("007", make_item(1, name="first"))
    store.push_outbox("008", make_item(1, name="other"))


def write_everything(store):
    """One write of every kind, all visible to snapshot()."""
    store.put_ven(make_ven("008"))
    store.put_ven(make_ven("007", ven_name="renamed"))
    store.put_event(make_event("event-2"))
    store.delete_event("event-1")
    store.set_delivered("007", {"event-2": 4})
    store.set_delivered("008", {"event-2": 4})
    store.put_event_response(make_response("007", "event-1", opt_type="optOut"))
    store.put_event_response(make_response("008", "event-2"))
    assert store.pop_outbox("007")["payload"]["name"] == "first"
    store.push_outbox("007", make_item(0, name="second"))
    store.clear_outbox("008")


def test_atomic_commits_every_write(store):
    populate(store)
    with store.atomic():
        write_everything(store)
    committed = snapshot(store)
    assert [v["ven_name"] for v in committed["vens"]] == ["renamed", "VEN 008"]
    assert [e["event_descriptor"]["event_id"] for e in committed["events"]] == ["event-2"]
    assert committed["outbox"] == {"007": [make_item(0, name="second")], "008": []}


def test_exception_inside_atomic_rolls_back_every_write(store):
    populate(store)
    before = snapshot(store)

    class Boom(Exception):
        pass

    with pytest.raises(Boom) as raised:
        with store.atomic():
            write_everything(store)
            assert snapshot(store) != before  # the block sees its own writes
            raise Boom("the very exception")
    assert str(raised.value) == "the very exception"
    assert snapshot(store) == before
    # The store still works after a rollback.
    store.push_outbox("007", make_item(0, name="after"))
    assert store.pop_outbox("007")["payload"]["name"] == "after"


def test_nested_atomic_joins_the_outer_block(store):
    with pytest.raises(RuntimeError):
        with store.atomic():
            with store.atomic():
                store.put_ven(make_ven("inner"))
            assert store.get_ven("inner") is not None
            raise RuntimeError("outer fails after the inner block finished")
    assert store.get_ven("inner") is None

    # No savepoints: an inner failure the outer block catches rolls nothing back by itself.
    with store.atomic():
        store.put_ven(make_ven("outer"))
        with pytest.raises(KeyError):
            with store.atomic():
                store.put_ven(make_ven("inner"))
                raise KeyError("inner")
        store.put_ven(make_ven("outer-2"))
    assert [v["ven_id"] for v in store.list_vens()] == ["inner", "outer", "outer-2"]


def test_atomic_serialises_read_modify_write_between_threads(store):
    store.put_event(make_event("counter", count=0))
    errors = []

    def increment():
        try:
            for _ in range(50):
                with store.atomic():
                    event = store.get_event("counter")
                    event["count"] += 1
                    time.sleep(0)  # invite a thread switch between the read and the write
                    store.put_event(event)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=increment) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors
    assert store.get_event("counter")["count"] == 200


def test_refused_value_inside_atomic_rolls_back_with_the_block(store):
    with pytest.raises(ValueError):
        with store.atomic():
            store.put_ven(make_ven("007"))
            store.put_ven(make_ven("008", registered_at=datetime(2024, 1, 1)))
    assert store.list_vens() == []


def test_store_works_after_close(store):
    store.put_ven(make_ven("007"))
    store.close()
    store.put_ven(make_ven("008"))
    assert [v["ven_id"] for v in store.list_vens()] == ["007", "008"]


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(value=st.deferred(lambda: record_values))
def test_any_record_value_round_trips_through_the_store(store, value):
    event = {"event_descriptor": {"event_id": "any"}, "value": value}
    store.put_event(event)
    assert_exact(store.get_event("any"), event)


# -- shared stores: several handles, several processes -------------------------------------------


def test_nested_atomic_commits_only_when_the_outer_block_ends(shared_uri):
    writer, reader = open_store(shared_uri), open_store(shared_uri)
    try:
        with writer.atomic():
            with writer.atomic():
                writer.put_ven(make_ven("007"))
            assert reader.get_ven("007") is None
        assert reader.get_ven("007") is not None
    finally:
        writer.close()
        reader.close()


def test_data_survives_close_and_reopen(shared_uri):
    first = open_store(shared_uri)
    populate(first)
    before = snapshot(first)
    first.close()
    second = open_store(shared_uri)
    try:
        assert snapshot(second) == before
    finally:
        second.close()


def _open_target(target):
    # With fork the child gets the parent's store object itself; with spawn it gets the URI.
    return open_store(target) if isinstance(target, str) else target


def _push_then_pop_worker(target, tag, count, barrier, result_path):
    store = _open_target(target)
    barrier.wait()
    for i in range(count):
        store.push_outbox("007", make_item(i % 3, id=f"{tag}-{i}"))
    barrier.wait()  # both have pushed: now pop against each other until empty
    popped = []
    while (item := store.pop_outbox("007")) is not None:
        popped.append(item["payload"]["id"])
        # A pause between pops, as a sender's push makes: with none, a pop that takes
        # microseconds (SQLite) lets one process take the write lock again and again while the
        # other sleeps in its busy handler, and the pops never overlap.
        time.sleep(0.001)
    Path(result_path).write_text(json.dumps(popped))
    store.close()


def _increment_worker(target, count, barrier):
    store = _open_target(target)
    barrier.wait()
    for _ in range(count):
        with store.atomic():
            event = store.get_event("counter")
            event["count"] += 1
            store.put_event(event)
    store.close()


def _run_processes(method, target, args_per_process, seconds=120):
    """Run the workers to the end; a worker that fails (or hangs, and is killed after
    ``seconds``, which a spawned worker importing everything on a loaded machine needs)
    fails the test. The workers' barriers have no timeout of their own for the same reason."""
    context = multiprocessing.get_context(method)
    processes = [context.Process(target=target, args=args) for args in args_per_process]
    for process in processes:
        process.start()
    deadline = time.monotonic() + seconds
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
    for process in processes:
        if process.is_alive():  # pragma: no cover - only on a hang
            process.kill()
            process.join()
    assert [p.exitcode for p in processes] == [0] * len(processes)


START_METHODS = [
    pytest.param("fork", marks=fork_only),
    "spawn",
]


@pytest.mark.parametrize("method", START_METHODS)
def test_concurrent_pops_from_two_processes_hand_out_each_item_once(shared_uri, method, tmp_path):
    parent = open_store(shared_uri)
    parent.push_outbox("008", make_item(1, id="unrelated"))  # opens the parent's connection
    barrier = multiprocessing.get_context(method).Barrier(2)
    target = parent if method == "fork" else shared_uri
    results = [tmp_path / "popped-a.json", tmp_path / "popped-b.json"]
    count = 150
    _run_processes(
        method,
        _push_then_pop_worker,
        [(target, tag, count, barrier, str(path)) for tag, path in zip("ab", results)],
    )
    popped = [json.loads(path.read_text()) for path in results]
    everything = popped[0] + popped[1]
    assert len(everything) == len(set(everything)), "an item was popped twice"
    assert set(everything) == {f"{tag}-{i}" for tag in "ab" for i in range(count)}
    assert popped[0] and popped[1], "the pops did not overlap; the test proved nothing"
    assert parent.list_outbox("007") == []
    assert parent.pop_outbox("008")["payload"]["id"] == "unrelated"
    parent.close()


@pytest.mark.parametrize("method", START_METHODS)
def test_read_modify_write_in_atomic_from_two_processes_loses_nothing(shared_uri, method):
    parent = open_store(shared_uri)
    parent.put_event(make_event("counter", count=0))
    barrier = multiprocessing.get_context(method).Barrier(2)
    target = parent if method == "fork" else shared_uri
    _run_processes(method, _increment_worker, [(target, 200, barrier), (target, 200, barrier)])
    assert parent.get_event("counter")["count"] == 400
    parent.close()


# -- replay nonces -------------------------------------------------------------------------------


def test_remember_nonce_is_true_once_until_it_expires(store):
    window = timedelta(seconds=60)
    assert store.remember_nonce("AB:CD/n-1", T0, T0 + window) is True
    assert store.remember_nonce("AB:CD/n-1", T0 + timedelta(seconds=30), T0 + 2 * window) is False
    assert store.remember_nonce("AB:CD/n-2", T0, T0 + window) is True  # another nonce
    # Expired (expires_at <= now): the nonce may be used again, and is remembered anew.
    later = T0 + window
    assert store.remember_nonce("AB:CD/n-1", later, later + window) is True
    assert store.remember_nonce("AB:CD/n-1", later + timedelta(seconds=1), later + window) is False


def test_remember_nonce_compares_instants_whatever_the_offset(store):
    plus_two = timezone(timedelta(hours=2))
    assert store.remember_nonce("n", T0, T0 + timedelta(seconds=60))
    # The same instant as T0 + 30 s, written in another offset: still unexpired.
    assert not store.remember_nonce("n", (T0 + timedelta(seconds=30)).astimezone(plus_two),
                                    T0 + timedelta(seconds=90))


def test_remember_nonce_refuses_bad_arguments_and_remembers_nothing(store):
    naive = datetime(2024, 5, 1, 12)
    with pytest.raises(ValueError, match="now"):
        store.remember_nonce("n", naive, T0)
    with pytest.raises(ValueError, match="expires_at"):
        store.remember_nonce("n", T0, naive)
    with pytest.raises(ValueError, match="nonce"):
        store.remember_nonce(None, T0, T0 + timedelta(seconds=1))
    assert store.remember_nonce("n", T0, T0 + timedelta(seconds=1)) is True


def test_remember_nonce_leaves_the_vtn_state_alone(store):
    populate(store)
    before = snapshot(store)
    assert store.remember_nonce("n", T0, T0 + timedelta(seconds=60))
    assert snapshot(store) == before


def _nonce_worker(target, nonces, barrier, result_path):
    store = _open_target(target)
    barrier.wait()
    won = [n for n in nonces if store.remember_nonce(n, T0, T0 + timedelta(seconds=60))]
    Path(result_path).write_text(json.dumps(won))
    store.close()


def _race_for_nonces(shared_uri, method, tmp_path, worker):
    """Two processes run ``worker`` over the same 150 nonces at once; returns the parent's store,
    the nonces and the nonces each process won."""
    parent = open_store(shared_uri)
    assert parent.remember_nonce("opened", T0, T0 + timedelta(seconds=60))  # parent connects
    barrier = multiprocessing.get_context(method).Barrier(2)
    target = parent if method == "fork" else shared_uri
    nonces = [f"nonce-{i}" for i in range(150)]
    results = [tmp_path / "won-a.json", tmp_path / "won-b.json"]
    _run_processes(method, worker, [(target, nonces, barrier, str(path)) for path in results])
    return parent, nonces, [json.loads(path.read_text()) for path in results]


@pytest.mark.parametrize("method", START_METHODS)
def test_each_nonce_is_new_for_exactly_one_of_two_processes(shared_uri, method, tmp_path):
    parent, nonces, won = _race_for_nonces(shared_uri, method, tmp_path, _nonce_worker)
    assert sorted(won[0] + won[1]) == sorted(nonces), "a nonce was new twice, or never"
    # And a third connection sees every one of them as already used.
    assert not any(parent.remember_nonce(n, T0, T0 + timedelta(seconds=60)) for n in nonces)
    parent.close()


# -- record_seen with the replay nonce ------------------------------------------------------------
# The liveness constants (TTL, LEASE, SECOND) are defined further down; these tests run later.


def _signed_seen(store, ven_id, nonce, at=T0, window=timedelta(seconds=60)):
    """record_seen as a signed message's liveness update calls it."""
    return store.record_seen(ven_id, at, at + TTL, at + LEASE, nonce=nonce,
                             nonce_expires_at=at + window)


def test_record_seen_with_a_used_nonce_raises_and_writes_nothing(store):
    assert _signed_seen(store, "007", "AB:CD/n-1") == online("007", 1)
    assert store.claim_offline("007", 1, T0 + TTL, T0 + TTL + LEASE) is not None
    before = store.get_liveness("007")
    # The VEN is offline: a replay must neither bring it online nor touch last_seen.
    with pytest.raises(NonceUsed) as raised:
        _signed_seen(store, "007", "AB:CD/n-1", T0 + TTL + SECOND)
    assert raised.value.nonce == "AB:CD/n-1"
    assert store.get_liveness("007") == before
    # Used by one VEN, refused for another too (the key is the caller's to scope), and still
    # remembered: remember_nonce agrees.
    with pytest.raises(NonceUsed):
        _signed_seen(store, "008", "AB:CD/n-1", T0 + SECOND)
    assert store.get_liveness("008") is None
    assert store.remember_nonce("AB:CD/n-1", T0 + SECOND, T0 + TTL) is False
    # A fresh nonce proceeds, and makes the online transition.
    assert _signed_seen(store, "007", "AB:CD/n-2", T0 + TTL + SECOND) == online("007", 3)


def test_record_seen_takes_a_nonce_remember_nonce_already_holds_as_used(store):
    assert store.remember_nonce("n", T0, T0 + timedelta(seconds=60))
    with pytest.raises(NonceUsed):
        _signed_seen(store, "007", "n", T0 + SECOND)
    assert store.get_liveness("007") is None


def test_record_seen_accepts_an_expired_nonce_again(store):
    window = timedelta(seconds=60)
    assert _signed_seen(store, "007", "n", T0, window) == online("007", 1)
    later = T0 + window  # expires_at <= now: expired
    assert _signed_seen(store, "007", "n", later, window) is None
    assert store.get_liveness("007")["last_seen"] == later
    # And remembered anew until later + window.
    with pytest.raises(NonceUsed):
        _signed_seen(store, "007", "n", later + SECOND, window)
    assert store.get_liveness("007")["last_seen"] == later


def test_maintain_keeps_the_nonces_unexpired_at_the_clock_it_is_given(store):
    # The VTN's clock, not the wall clock (T0 is long past): a purge by the wall clock would
    # forget this nonce and let its replay through.
    assert _signed_seen(store, "007", "n", T0) == online("007", 1)
    store.maintain(T0 + SECOND)
    with pytest.raises(NonceUsed):
        _signed_seen(store, "007", "n", T0 + 2 * SECOND)


def test_maintain_with_no_nonce_expired_does_not_wait_for_a_vens_block(shared_uri):
    # A VTN-wide block would wait for the open block of VEN 007 (and hold every VEN back while
    # it waits): with nothing to purge, maintain takes none.
    store, other = open_store(shared_uri), open_store(shared_uri)
    try:
        _signed_seen(store, "007", "n", T0)
        inside, release = threading.Event(), threading.Event()

        def hold():
            with other.atomic("008"):
                other.put_record("report", "008", "k", {"v": 1})
                inside.set()
                release.wait(10)

        holder = threading.Thread(target=hold)
        holder.start()
        try:
            assert inside.wait(10)
            done = threading.Thread(target=store.maintain, args=(T0 + SECOND,))
            done.start()
            done.join(5)
            assert not done.is_alive(), "maintain waited for another VEN's block"
        finally:
            release.set()
            holder.join(10)
    finally:
        store.close()
        other.close()


def test_memory_maintain_forgets_the_nonces_record_seen_took_once_expired():
    memory = MemoryStore()
    window = timedelta(seconds=60)
    for i in range(3):
        _signed_seen(memory, "007", f"old-{i}", T0, window)
    _signed_seen(memory, "007", "new", T0 + window, window)
    assert len(memory._nonces) == 4  # noqa: SLF001 - the purge is not observable else
    memory.maintain(T0 + window)
    assert list(memory._nonces) == ["new"]  # noqa: SLF001


def test_record_seen_refuses_a_nonce_without_its_expiry_and_writes_nothing(store):
    with pytest.raises(ValueError, match="nonce_expires_at"):
        store.record_seen("007", T0, T0 + TTL, T0 + LEASE, nonce="n")
    with pytest.raises(ValueError, match="nonce"):
        store.record_seen("007", T0, T0 + TTL, T0 + LEASE, nonce_expires_at=T0 + TTL)
    with pytest.raises(ValueError, match="nonce_expires_at"):
        store.record_seen("007", T0, T0 + TTL, T0 + LEASE, nonce="n",
                          nonce_expires_at=datetime(2024, 5, 1, 12))
    assert store.get_liveness("007") is None
    assert store.remember_nonce("n", T0, T0 + TTL) is True


def _signed_seen_worker(target, nonces, barrier, result_path):
    store = _open_target(target)
    barrier.wait()
    won = []
    for i, nonce in enumerate(nonces):
        try:
            store.record_seen(f"ven-{i % 3}", T0, T0 + timedelta(days=1), T0 + LEASE,
                              nonce=nonce, nonce_expires_at=T0 + timedelta(seconds=60))
        except NonceUsed:
            continue
        won.append(nonce)
    Path(result_path).write_text(json.dumps(won))
    store.close()


@pytest.mark.parametrize("method", START_METHODS)
def test_each_nonce_proceeds_in_exactly_one_of_two_processes(shared_uri, method, tmp_path):
    parent, nonces, won = _race_for_nonces(shared_uri, method, tmp_path, _signed_seen_worker)
    assert sorted(won[0] + won[1]) == sorted(nonces), "a nonce proceeded twice, or never"
    assert not any(parent.remember_nonce(n, T0, T0 + timedelta(seconds=60)) for n in nonces)
    # Each VEN went online exactly once between the two processes.
    assert {v: row["epoch"] for v, row in parent.list_liveness().items()} == \
        {"ven-0": 1, "ven-1": 1, "ven-2": 1}
    parent.close()


def test_memory_store_forgets_expired_nonces():
    memory = MemoryStore()
    for i in range(5):
        assert memory.remember_nonce(f"old-{i}", T0, T0 + timedelta(seconds=10))
    assert memory.remember_nonce("new", T0 + timedelta(seconds=11), T0 + timedelta(seconds=20))
    assert list(memory._nonces) == ["new"]  # noqa: SLF001 - the purge is not observable else


@fork_only
def test_memory_store_works_in_a_child_forked_while_a_thread_holds_its_lock():
    store = MemoryStore()
    store.put_ven(make_ven("parent"))
    inside, release = threading.Event(), threading.Event()

    def hold():
        with store.atomic():
            inside.set()
            release.wait(20)

    holder = threading.Thread(target=hold)
    holder.start()
    assert inside.wait(5)

    def child():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            store.put_ven(make_ven("child"))  # hangs on the inherited, held lock if not replaced
        assert any("forked process" in str(w.message) for w in caught), caught
        assert [v["ven_id"] for v in store.list_vens()] == ["child", "parent"]

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads, on 3.12+
            pid = os.fork()
        if pid == 0:
            in_child(child)
        assert wait_for_child(pid) == 0
    finally:
        release.set()
        holder.join()
    assert store.get_ven("child") is None  # the child's data was its own


# -- open_store ----------------------------------------------------------------------------------


def test_open_store_memory():
    assert isinstance(open_store("memory://"), MemoryStore)
    assert isinstance(open_store("MEMORY://"), MemoryStore)
    with pytest.raises(ConfigurationError, match="memory://x"):
        open_store("memory://x")


def test_open_store_sqlite_relative_path_is_under_the_instance_path(tmp_path):
    instance = tmp_path / "instance"
    store = open_store("sqlite:///data/vtn.sqlite", instance_path=str(instance))
    assert isinstance(store, SQLiteStore)
    assert store.path == str(instance / "data" / "vtn.sqlite")
    store.put_ven(make_ven("007"))  # creates the missing directories
    assert (instance / "data" / "vtn.sqlite").is_file()
    store.close()


def test_open_store_sqlite_relative_path_without_instance_path_is_under_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = open_store("sqlite:///vtn.sqlite")
    monkeypatch.chdir("/")  # resolved at open time, not at first use
    assert store.path == str(tmp_path / "vtn.sqlite")


def test_open_store_sqlite_four_slashes_is_absolute(tmp_path):
    store = open_store(f"sqlite:///{tmp_path}/vtn.sqlite", instance_path="/elsewhere")
    assert f"sqlite:///{tmp_path}".startswith("sqlite:////")
    assert store.path == str(tmp_path / "vtn.sqlite")


@pytest.mark.parametrize("uri", ["sqlite://", "sqlite:///", "sqlite:///:memory:"])
def test_open_store_refuses_in_memory_sqlite(uri):
    with pytest.raises(ConfigurationError, match="in-memory") as raised:
        open_store(uri)
    assert repr(uri) in str(raised.value)


@pytest.mark.parametrize(
    "uri, problem",
    [("sqlite://host/vtn.sqlite", "host"), ("sqlite:///vtn.sqlite?timeout=5", "query")],
)
def test_open_store_refuses_malformed_sqlite_uris(uri, problem):
    with pytest.raises(ConfigurationError, match=problem) as raised:
        open_store(uri)
    assert repr(uri) in str(raised.value)


@pytest.mark.parametrize("uri", ["mongodb://db.example/vtn", "vtn.sqlite", ""])
def test_open_store_unknown_scheme_names_the_uri_and_the_choices(uri):
    with pytest.raises(ConfigurationError) as raised:
        open_store(uri)
    message = str(raised.value)
    assert repr(uri) in message
    for mentioned in ("memory://", "sqlite://", "redis://", "postgresql://"):
        assert mentioned in message


def test_open_store_error_hides_the_password():
    with pytest.raises(ConfigurationError) as raised:
        open_store("mysql://operator:s3cret@db.example/vtn")
    assert "s3cret" not in str(raised.value)
    assert "mysql://operator:***@db.example/vtn" in str(raised.value)


def test_open_store_refuses_a_uri_that_is_not_a_str():
    with pytest.raises(ConfigurationError, match="str"):
        open_store(None)


def test_a_backend_plugs_in_with_one_registry_entry(monkeypatch):
    opened = []

    def factory(uri, *, instance_path=None):
        opened.append((uri, instance_path))
        return MemoryStore()

    monkeypatch.setitem(STORE_BACKENDS, "custom", factory)
    assert isinstance(open_store("custom://x", instance_path="/i"), MemoryStore)
    assert opened == [("custom://x", "/i")]


def test_backends_are_imported_lazily():
    assert all(isinstance(backend, str) for backend in STORE_BACKENDS.values())


# -- serialize -----------------------------------------------------------------------------------

TAG_LIKE_KEYS = st.sampled_from(["$dt", "$td", "$float", "$map", "$", "$other", "dt"])
aware_datetimes = st.datetimes(
    min_value=datetime(2, 1, 1),
    max_value=datetime(9998, 12, 31),
    timezones=st.builds(
        timezone,
        st.timedeltas(
            min_value=-timedelta(hours=23, minutes=59), max_value=timedelta(hours=23, minutes=59)
        ),
    ),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(),
    st.sampled_from(["007", "0", "-0", "1e3", "true", "null"]),
    aware_datetimes,
    st.timedeltas(),
)
record_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(st.text(max_size=8), TAG_LIKE_KEYS), children, max_size=4),
    ),
    max_leaves=25,
)


@settings(max_examples=300, deadline=None)
@given(record_values)
def test_serialize_round_trip_is_exact(value):
    text = serialize.dumps(value)
    assert isinstance(text, str)
    assert_exact(serialize.loads(text), value)


@pytest.mark.parametrize(
    "value",
    [
        {"$dt": "2024-05-01T12:00:00.000000+00:00"},
        {"$td": [1, 2, 3]},
        {"$float": "nan"},
        {"$map": {"$dt": "x"}},
        {"$map": 1},
        {"outer": {"$dt": {"$td": [0, 0, 0]}}},
        [{"$": None}, {"$dt": 1, "other": 2}],
    ],
)
def test_serialize_user_dicts_that_look_like_tags_stay_dicts(value):
    assert_exact(serialize.loads(serialize.dumps(value)), value)


def test_serialize_datetimes_are_utc_text_with_microseconds():
    plus_two = T0.astimezone(timezone(timedelta(hours=2)))
    expected = '{"$dt":"2024-05-01T12:00:00.123456+00:00"}'
    assert serialize.dumps(T0) == serialize.dumps(plus_two) == expected
    whole_second = datetime(2024, 5, 1, tzinfo=UTC)
    assert serialize.loads(serialize.dumps(whole_second)).microsecond == 0
    assert ".000000+00:00" in serialize.dumps(whole_second)
    assert serialize.loads(serialize.dumps(plus_two)).tzinfo == UTC


@pytest.mark.parametrize(
    "value",
    [
        timedelta(days=-1, microseconds=1),
        timedelta(microseconds=-1),
        timedelta(days=999999999, hours=23, minutes=59, seconds=59, microseconds=999999),
        timedelta.min,
        timedelta(0),
    ],
)
def test_serialize_timedeltas_are_exact(value):
    assert_exact(serialize.loads(serialize.dumps(value)), value)


def test_serialize_non_finite_floats():
    for value in (math.inf, -math.inf, math.nan, -0.0):
        assert_exact(serialize.loads(serialize.dumps(value)), value)


@pytest.mark.parametrize(
    "value",
    [datetime(2024, 5, 1, 12, 0), {"a": [1, {"b": datetime(2024, 5, 1)}]}],
)
def test_serialize_refuses_naive_datetimes(value):
    with pytest.raises(ValueError, match="naive datetime 2024-05-01T"):
        serialize.dumps(value)


@pytest.mark.parametrize(
    "value, named",
    [
        ({1, 2}, "set"),
        ((1, 2), "tuple"),
        (b"007", "bytes"),
        (date(2024, 5, 1), "date"),
        (Decimal("1.5"), "Decimal"),
        ({"a": object()}, "object"),
        ({1: "int key"}, "key 1"),
    ],
)
def test_serialize_refuses_other_types(value, named):
    with pytest.raises(TypeError, match=named):
        serialize.dumps(value)


def test_serialize_refuses_unknown_tags():
    with pytest.raises(ValueError, match=r"\$bytes"):
        serialize.loads('{"$bytes":"AAEC"}')
    with pytest.raises(ValueError, match=r"\$bytes"):  # inside a record, and beside a $map
        serialize.loads('{"a":[{"$bytes":"AAEC"}],"b":{"$map":{"$dt":1}}}')


def test_serialize_reads_a_map_tag_spelled_with_an_escape():
    # Text that hides "$map" from a plain substring test (JSON allows \u escapes in keys)
    # still decodes its body as the user dict it was, not as a tag.
    text = '{"a":{"\\u0024map":{"$dt":"x"}},"t":{"$td":[1,2,3]}}'
    assert_exact(serialize.loads(text), {"a": {"$dt": "x"}, "t": timedelta(1, 2, 3)})


# == Store protocol v2: records, liveness, create_schema =========================================
# Conformance tests (every backend, public protocol only), then the shared-store process tests,
# then SQLite specifics (schema migration, query plans).

TTL = timedelta(seconds=30)  # offline_at - now, as the liveness service would compute it
LEASE = timedelta(seconds=60)  # lease_until - now
SECOND = timedelta(seconds=1)
MICROSECOND = timedelta(microseconds=1)


def seen(store, ven_id, at=T0):
    """record_seen the way the liveness service calls it: offline after TTL, a lease of LEASE."""
    return store.record_seen(ven_id, at, at + TTL, at + LEASE)


def online(ven_id, epoch):
    return {"ven_id": ven_id, "kind": "online", "epoch": epoch}


def offline(ven_id, epoch):
    return {"ven_id": ven_id, "kind": "offline", "epoch": epoch}


def make_record(name="r-1", **fields):
    record = {
        "name": name,
        "created": T0,
        "granularity": timedelta(minutes=1),
        "points": [{"r_id": "007", "value": 1.5}],
        "user_map": {"$dt": "a user key, not a tag"},
    }
    record.update(fields)
    return record


def test_create_schema_is_callable_and_idempotent(store):
    store.create_schema()
    store.create_schema()
    store.put_record("opt", "007", "a", make_record())
    assert seen(store, "007") == online("007", 1)
    store.create_schema()  # on a store in use: changes nothing
    assert store.get_record("opt", "007", "a") == make_record()
    assert store.get_liveness("007")["epoch"] == 1


# -- records -------------------------------------------------------------------------------------


def test_missing_records_and_liveness_are_none_or_empty(store):
    assert store.get_record("opt", "007", "a") is None
    assert store.list_records("opt", "007") == []
    store.delete_record("opt", "007", "a")
    store.clear_records("opt", "007")
    assert store.get_liveness("007") is None
    assert store.list_liveness() == {}
    assert store.due_offline(T0, 10) == []
    assert store.stale_transitions(T0, 10) == []
    assert store.claim_offline("007", 1, T0, T0 + LEASE) is None
    assert store.reclaim_transition("007", 1, T0, T0 + LEASE) is False
    store.complete_transition("007", 1)
    assert store.list_liveness() == {}


def test_record_round_trip_is_exact_and_values_are_copies(store):
    record = make_record()
    store.put_record("report_request", "007", "r-1", record)
    record["points"].append("changed after put")
    record["name"] = "changed after put"
    for got in (
        store.get_record("report_request", "007", "r-1"),
        store.list_records("report_request", "007")[0],
    ):
        assert_exact(got, make_record())
        got["points"].clear()
        got["name"] = "changed after get"
    assert_exact(store.get_record("report_request", "007", "r-1"), make_record())
    assert store.get_record("report_request", "007", "R-1") is None  # keys are exact
    assert store.get_record("report_request", "7", "r-1") is None  # "007" is an ID


def test_records_list_in_insertion_order_and_a_replacement_keeps_its_place(store):
    for name in ["b", "10", "a", "9"]:
        store.put_record("opt", "007", name, make_record(name))
    replacement = make_record("10", note="replaced")
    store.put_record("opt", "007", "10", replacement)
    listed = store.list_records("opt", "007")
    assert [r["name"] for r in listed] == ["b", "10", "a", "9"]
    assert_exact(listed[1], replacement)


def test_delete_record_and_a_record_put_again_goes_last(store):
    for name in "abc":
        store.put_record("opt", "007", name, make_record(name))
    store.delete_record("opt", "007", "a")
    store.delete_record("opt", "007", "a")  # already gone: not an error
    assert store.get_record("opt", "007", "a") is None
    assert [r["name"] for r in store.list_records("opt", "007")] == ["b", "c"]
    store.put_record("opt", "007", "a", make_record("a"))
    assert [r["name"] for r in store.list_records("opt", "007")] == ["b", "c", "a"]
    store.delete_record("opt", "007", "a")  # the newest gone, a new one still goes last
    store.put_record("opt", "007", "d", make_record("d"))
    store.put_record("opt", "007", "b", make_record("b", note="replaced"))
    assert [r["name"] for r in store.list_records("opt", "007")] == ["b", "c", "d"]


def test_records_are_isolated_by_kind_and_ven_id_and_clear_empties_one_collection(store):
    # Owners that would collide if a backend joined kind, ven_id and key with ":" or "/".
    owners = [
        ("opt", "007", "k"),
        ("opt", "7", "k"),
        ("report_request", "007", "k"),
        ("opt", "a:b", "c"),
        ("opt", "a", "b:c"),
        ("opt:a", "b", "c"),
        ("opt", "a/b", "c"),
    ]
    for kind, ven_id, key in owners:
        store.put_record(kind, ven_id, key, make_record(f"{kind}|{ven_id}|{key}"))
    for kind, ven_id, key in owners:
        assert store.get_record(kind, ven_id, key)["name"] == f"{kind}|{ven_id}|{key}"
        assert [r["name"] for r in store.list_records(kind, ven_id)] == [f"{kind}|{ven_id}|{key}"]
    store.clear_records("opt", "007")
    store.clear_records("opt", "a")
    store.delete_record("opt", "a/b", "x")  # another key of a collection that exists: nothing
    left = {owner for owner in owners if store.get_record(*owner) is not None}
    assert left == set(owners) - {("opt", "007", "k"), ("opt", "a", "b:c")}
    assert store.list_records("opt", "007") == []
    store.put_record("opt", "007", "k", make_record("after clear"))
    assert [r["name"] for r in store.list_records("opt", "007")] == ["after clear"]


def test_put_record_refuses_bad_values_and_writes_nothing(store):
    with pytest.raises(ValueError, match="naive"):
        store.put_record("opt", "007", "k", make_record(created=datetime(2024, 5, 1, 12, 0)))
    with pytest.raises(TypeError, match="set"):
        store.put_record("opt", "007", "k", make_record(points={1, 2}))
    with pytest.raises(TypeError, match="dict"):
        store.put_record("opt", "007", "k", [("not", "a dict")])
    for kind, ven_id, key, named in [
        (None, "007", "k", "kind"),
        ("opt", 7, "k", "ven_id"),
        ("opt", "007", 1, "key"),
    ]:
        with pytest.raises(ValueError, match=named):
            store.put_record(kind, ven_id, key, make_record())
    assert store.list_records("opt", "007") == []
    # A refused replacement leaves the record that was there.
    store.put_record("opt", "007", "k", make_record("kept"))
    with pytest.raises(ValueError, match="naive"):
        store.put_record("opt", "007", "k", make_record(created=datetime(2024, 5, 1, 12, 0)))
    assert_exact(store.get_record("opt", "007", "k"), make_record("kept"))


# -- due items ----------------------------------------------------------------------------------


def test_list_due_is_earliest_first_then_by_member_and_limited(store):
    # c at +1s; a and b at +2s (a tie, by member); d at +3s; e much later.
    for member, seconds in [("d", 3), ("b", 2), ("c", 1), ("a", 2), ("e", 100)]:
        store.set_due("push", member, T0 + seconds * SECOND)
    now = T0 + 3 * SECOND
    assert store.list_due("push", now, 10) == [
        ("c", T0 + SECOND), ("a", T0 + 2 * SECOND), ("b", T0 + 2 * SECOND), ("d", now)]
    assert store.list_due("push", now, 2) == [("c", T0 + SECOND), ("a", T0 + 2 * SECOND)]
    assert store.list_due("push", now, 0) == []
    assert [m for m, _ in store.list_due("push", now - MICROSECOND, 10)] == ["c", "a", "b"]
    assert store.list_due("push", T0 + SECOND, 10) == [("c", T0 + SECOND)]  # at == upto is due
    assert store.list_due("push", T0, 10) == []
    assert store.list_due("other", now, 10) == []  # never written: empty, no error


def test_due_instants_compare_whatever_their_offsets_and_come_back_in_utc(store):
    plus_two, minus_five = timezone(timedelta(hours=2)), timezone(timedelta(hours=-5))
    store.set_due("push", "later", (T0 + SECOND).astimezone(minus_five))
    store.set_due("push", "sooner", T0.astimezone(plus_two))
    due = store.list_due("push", (T0 + SECOND).astimezone(plus_two), 10)
    assert due == [("sooner", T0), ("later", T0 + SECOND)]
    assert [at.utcoffset() for _, at in due] == [timedelta(0), timedelta(0)]
    assert store.list_due("push", (T0 + SECOND - MICROSECOND).astimezone(minus_five), 10) == [
        ("sooner", T0)]


def test_set_due_replaces_the_instant_and_none_removes_the_member(store):
    store.set_due("push", "a", T0 + 5 * SECOND)
    store.set_due("push", "b", T0 + 2 * SECOND)
    store.set_due("push", "a", T0 + SECOND)  # earlier: one instant per member
    assert store.list_due("push", T0 + 9 * SECOND, 10) == [("a", T0 + SECOND),
                                                           ("b", T0 + 2 * SECOND)]
    store.set_due("push", "a", T0 + 9 * SECOND)  # later: not due before it any more
    assert store.list_due("push", T0 + 8 * SECOND, 10) == [("b", T0 + 2 * SECOND)]
    store.set_due("push", "a", T0 + 9 * SECOND)  # the same again changes nothing
    store.set_due("push", "b", None)
    store.set_due("push", "b", None)  # removing what is not there is not an error
    store.set_due("push", "never-filed", None)
    assert store.list_due("push", T0 + 9 * SECOND, 10) == [("a", T0 + 9 * SECOND)]


def test_due_members_are_any_text_in_code_point_order(store):
    members = ['["event","","e-1"]', "B", "a", "a b", "\u00e9t\u00e9", "\U0001f50c", "x" * 1000,
               "\\u0000", "'; DROP TABLE x; --", "\x01", "\t"]
    for member in members:
        store.set_due("removal", member, T0)
    assert store.list_due("removal", T0, 100) == [(m, T0) for m in sorted(members)]
    assert store.list_due("removal", T0, 3) == [(m, T0) for m in sorted(members)[:3]]


def test_due_indexes_are_apart_from_each_other_and_from_the_stores_own(store):
    store.set_due("push", "007", T0)
    store.set_due("removal", "007", T0 + SECOND)
    assert store.list_due("push", T0 + SECOND, 10) == [("007", T0)]
    assert store.list_due("removal", T0 + SECOND, 10) == [("007", T0 + SECOND)]
    # The store's own indexes (liveness, nonces) are not services' indexes, whatever their
    # names: neither sees the other's members.
    seen(store, "008")
    assert store.remember_nonce("n-1", T0, T0 + SECOND)
    for name in ("liveness_due", "liveness_stale", "nonce_expiry", "due:push", "push:"):
        assert store.list_due(name, T0 + timedelta(days=1), 10) == []
        store.set_due(name, "009", T0)
    assert store.due_offline(T0 + timedelta(days=1), 10) == [("008", 1)]
    assert store.stale_transitions(T0 + timedelta(days=1), 10) == [online("008", 1)]
    assert store.list_due("push", T0 + SECOND, 10) == [("007", T0)]
    assert store.remember_nonce("n-1", T0, T0 + SECOND) is False


def test_set_due_and_list_due_refuse_bad_arguments_and_write_nothing(store):
    store.set_due("push", "kept", T0)
    naive = datetime(2024, 5, 1, 12, 0)
    for args, named in [
        (("push", "a", naive), "at"),
        (("push", "a", "2024-05-01T12:00:00+00:00"), "at"),
        (("push", "kept", naive), "at"),
        (("", "a", T0), "index"),
        ((None, "a", T0), "index"),
        (("pu\0sh", "a", T0), "index"),
        (("x" * 25, "a", T0), "index"),
        (("push", "", T0), "member"),
        (("push", 7, T0), "member"),
        (("push", "a\0b", T0), "member"),
    ]:
        with pytest.raises(ValueError, match=f"^{named} "):
            store.set_due(*args)
    store.set_due("x" * 24, "a", T0)  # the longest index name
    assert store.list_due("x" * 24, T0, 10) == [("a", T0)]
    for args, named in [
        (("push", naive, 10), "upto"),
        (("push", "2024-05-01", 10), "upto"),
        (("", T0, 10), "index"),
        (("x" * 25, T0, 10), "index"),
        (("push", T0, -1), "limit"),
        (("push", T0, "10"), "limit"),
        (("push", T0, 1.0), "limit"),
        (("push", T0, True), "limit"),
        (("push", T0, None), "limit"),
    ]:
        with pytest.raises(ValueError, match=f"^{named} "):
            store.list_due(*args)
    assert store.list_due("push", T0 + timedelta(days=1), 10) == [("kept", T0)]


def test_set_due_takes_effect_with_its_block(store):
    with pytest.raises(RuntimeError):
        with store.atomic("007"):
            store.set_due("push", "007", T0)
            store.put_record("opt", "007", "k", make_record())
            raise RuntimeError("roll back")
    assert store.list_due("push", T0, 10) == []
    assert store.get_record("opt", "007", "k") is None
    with store.atomic("007"):
        store.set_due("push", "007", T0)
        store.set_due("push", "007", T0 + SECOND)  # the block sees, and keeps, its last set
        assert store.list_due("push", T0 + SECOND, 10) == [("007", T0 + SECOND)]
    with store.atomic():
        store.set_due("push", "007", None)
        store.set_due("push", "008", T0)
    assert store.list_due("push", T0 + SECOND, 10) == [("008", T0)]


def test_blocks_of_different_vens_set_their_own_members_side_by_side(store):
    # The locking contract: a VEN's block sets that VEN's members; blocks of many VENs at once
    # (threads here) lose none of them.
    errors = []

    def file(n):
        try:
            for round_ in range(5):
                with store.atomic(f"ven-{n}"):
                    store.set_due("push", f"ven-{n}", T0 + round_ * SECOND + n * MICROSECOND)
        except Exception as exc:  # reported below, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=file, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert store.list_due("push", T0 + timedelta(days=1), 100) == [
        (f"ven-{n}", T0 + 4 * SECOND + n * MICROSECOND) for n in range(8)]


# -- liveness ------------------------------------------------------------------------------------


def test_first_record_seen_makes_the_ven_online_at_epoch_1(store):
    assert seen(store, "007") == online("007", 1)
    assert_exact(
        store.get_liveness("007"),
        {
            "ven_id": "007",
            "state": "online",
            "epoch": 1,
            "last_seen": T0,
            "offline_at": T0 + TTL,
            "pending": {"kind": "online", "epoch": 1, "lease_until": T0 + LEASE},
        },
    )
    assert store.get_liveness("7") is None


def test_record_seen_when_online_returns_none_and_moves_last_seen_and_offline_at(store):
    seen(store, "007")
    later = T0 + 10 * SECOND
    assert store.record_seen("007", later, later + TTL, later + 5 * LEASE) is None
    liveness = store.get_liveness("007")
    assert (liveness["state"], liveness["epoch"]) == ("online", 1)
    assert (liveness["last_seen"], liveness["offline_at"]) == (later, later + TTL)
    # The pending transition (and its lease) belongs to whoever won it: untouched.
    assert liveness["pending"] == {"kind": "online", "epoch": 1, "lease_until": T0 + LEASE}
    assert store.due_offline(T0 + TTL, 10) == []
    assert store.due_offline(later + TTL, 10) == [("007", 1)]


def test_liveness_compares_instants_whatever_the_offset(store):
    plus_two, minus_five = timezone(timedelta(hours=2)), timezone(timedelta(hours=-5))
    # offline_at is 14:00:30+02:00; the nows below are 07:00:xx-05:00, whose text sorts first.
    store.record_seen("007", T0.astimezone(plus_two), (T0 + TTL).astimezone(plus_two), T0 + LEASE)
    assert store.due_offline((T0 + TTL + SECOND).astimezone(minus_five), 10) == [("007", 1)]
    assert store.due_offline((T0 + TTL - MICROSECOND).astimezone(minus_five), 10) == []
    liveness = store.get_liveness("007")
    assert_exact(liveness["last_seen"], T0)  # in UTC, to the microsecond
    assert_exact(liveness["offline_at"], T0 + TTL)
    assert store.claim_offline("007", 1, (T0 + TTL).astimezone(minus_five), T0) == offline("007", 2)


def test_due_offline_is_earliest_first_limited_and_only_online_vens_that_are_due(store):
    # offline_at: c at +1s; a and b at +2s (a tie, ordered by ven_id); d at +3s; e much later.
    for ven_id, seconds in [("d", 3), ("b", 2), ("c", 1), ("a", 2), ("e", 100)]:
        store.record_seen(ven_id, T0, T0 + seconds * SECOND, T0 + LEASE)
    store.record_seen("f", T0, T0, T0 + LEASE)  # due, but already offline:
    assert store.claim_offline("f", 1, T0, T0 + LEASE) == offline("f", 2)
    now = T0 + 3 * SECOND
    assert store.due_offline(now, 10) == [("c", 1), ("a", 1), ("b", 1), ("d", 1)]
    assert store.due_offline(now, 2) == [("c", 1), ("a", 1)]
    assert store.due_offline(now, 0) == []
    assert store.due_offline(now - MICROSECOND, 10) == [("c", 1), ("a", 1), ("b", 1)]
    assert store.due_offline(T0 + SECOND, 10) == [("c", 1)]  # offline_at == now is due
    assert store.due_offline(T0, 10) == []
    # The epoch is the current one, after transitions.
    seen(store, "f", now)
    assert store.due_offline(now + TTL, 10)[-1] == ("f", 3)


def test_claim_offline_is_a_compare_and_set(store):
    seen(store, "007")  # online at epoch 1, due at T0 + TTL
    due, lease = T0 + TTL, T0 + TTL + LEASE
    assert store.claim_offline("007", 2, due, lease) is None  # wrong epoch
    assert store.claim_offline("007", 0, due, lease) is None
    assert store.claim_offline("007", 1, due - MICROSECOND, lease) is None  # not due yet
    assert store.claim_offline("008", 1, due, lease) is None  # never seen
    assert store.get_liveness("007")["state"] == "online"
    # The sweep read ("007", 1) as due, then a message came in before it claimed.
    seen(store, "007", T0 + 20 * SECOND)
    assert store.claim_offline("007", 1, due, lease) is None
    due = T0 + 20 * SECOND + TTL
    assert store.claim_offline("007", 1, due, lease) == offline("007", 2)
    assert_exact(
        store.get_liveness("007"),
        {
            "ven_id": "007",
            "state": "offline",
            "epoch": 2,
            "last_seen": T0 + 20 * SECOND,
            "offline_at": due,
            "pending": {"kind": "offline", "epoch": 2, "lease_until": lease},
        },
    )
    # Already offline: another sweeper with the same (stale) read loses, and so does any epoch.
    assert store.claim_offline("007", 1, due, lease) is None
    assert store.claim_offline("007", 2, due + LEASE, lease) is None
    assert store.due_offline(due + timedelta(days=1), 10) == []


def test_record_seen_after_offline_is_a_new_online_transition(store):
    seen(store, "007")
    store.complete_transition("007", 1)
    assert store.claim_offline("007", 1, T0 + TTL, T0 + TTL + LEASE) == offline("007", 2)
    back = T0 + 100 * SECOND
    assert store.record_seen("007", back, back + TTL, back + LEASE) == online("007", 3)
    liveness = store.get_liveness("007")
    assert (liveness["state"], liveness["epoch"]) == ("online", 3)
    assert (liveness["last_seen"], liveness["offline_at"]) == (back, back + TTL)
    # The offline callback never completed; the newer transition replaced it.
    assert liveness["pending"] == {"kind": "online", "epoch": 3, "lease_until": back + LEASE}
    assert store.record_seen("007", back + SECOND, back + SECOND + TTL, back + LEASE) is None
    assert store.due_offline(back + SECOND + TTL, 10) == [("007", 3)]
    store.complete_transition("007", 2)  # the offline callback finishing late changes nothing
    assert store.get_liveness("007")["pending"]["epoch"] == 3


def test_complete_transition_clears_only_the_matching_epoch(store):
    seen(store, "007")
    seen(store, "008")
    for ven_id, epoch in [("007", 2), ("007", 0), ("009", 1)]:
        store.complete_transition(ven_id, epoch)
    assert store.get_liveness("007")["pending"] == {
        "kind": "online",
        "epoch": 1,
        "lease_until": T0 + LEASE,
    }
    store.complete_transition("007", 1)
    liveness = store.get_liveness("007")
    assert liveness["pending"] is None
    assert (liveness["state"], liveness["epoch"]) == ("online", 1)  # only pending changes
    store.complete_transition("007", 1)  # again: nothing, no error
    assert store.get_liveness("008")["pending"]["epoch"] == 1  # another VEN's is its own
    assert store.stale_transitions(T0 + timedelta(days=1), 10) == [online("008", 1)]


def test_stale_transitions_are_oldest_lease_first_and_limited(store):
    # lease_until: d at +1s (but completed); a and b at +2s (a tie, by ven_id); c at +3s.
    for ven_id, seconds in [("c", 3), ("a", 2), ("b", 2), ("d", 1), ("e", 100)]:
        store.record_seen(ven_id, T0, T0 + timedelta(days=1), T0 + seconds * SECOND)
    store.complete_transition("d", 1)
    store.record_seen("f", T0, T0, T0)  # an offline transition pending, lease to +2s
    assert store.claim_offline("f", 1, T0, T0 + 2 * SECOND) == offline("f", 2)
    now = T0 + 3 * SECOND
    assert store.stale_transitions(now, 10) == [
        online("a", 1),
        online("b", 1),
        offline("f", 2),
        online("c", 1),
    ]
    assert store.stale_transitions(now, 2) == [online("a", 1), online("b", 1)]
    assert store.stale_transitions(now, 0) == []
    assert store.stale_transitions(T0 + 2 * SECOND, 10)[-1] == offline("f", 2)  # == now is stale
    assert store.stale_transitions(T0 + 2 * SECOND - MICROSECOND, 10) == []


def test_reclaim_transition_is_a_compare_and_set(store):
    seen(store, "007")  # pending online 1, lease until T0 + LEASE
    expired, new_lease = T0 + LEASE, T0 + 2 * LEASE
    assert store.reclaim_transition("007", 1, expired - MICROSECOND, new_lease) is False
    assert store.reclaim_transition("007", 2, expired, new_lease) is False  # wrong epoch
    assert store.reclaim_transition("008", 1, expired, new_lease) is False  # never seen
    assert store.reclaim_transition("007", 1, expired, new_lease) is True
    assert store.get_liveness("007")["pending"] == {
        "kind": "online",
        "epoch": 1,
        "lease_until": new_lease,
    }
    # A second sweeper that read the same stale list loses: the lease runs again.
    assert store.reclaim_transition("007", 1, expired, new_lease + SECOND) is False
    assert store.stale_transitions(new_lease - MICROSECOND, 10) == []
    assert store.stale_transitions(new_lease, 10) == [online("007", 1)]
    store.complete_transition("007", 1)
    assert store.reclaim_transition("007", 1, new_lease, new_lease + LEASE) is False  # done


def test_list_liveness_has_every_row_by_ven_id_and_gives_copies(store):
    seen(store, "b")
    seen(store, "10", T0 + SECOND)
    seen(store, "a")
    store.claim_offline("a", 1, T0 + TTL, T0 + TTL + LEASE)
    everything = store.list_liveness()
    assert list(everything) == ["10", "a", "b"]
    for ven_id, liveness in everything.items():
        assert_exact(liveness, store.get_liveness(ven_id))
    assert (everything["a"]["state"], everything["a"]["epoch"]) == ("offline", 2)
    everything["b"]["pending"]["epoch"] = 99
    everything["b"]["state"] = "changed"
    got = store.get_liveness("b")
    got["pending"]["epoch"] = 98
    assert store.get_liveness("b")["pending"]["epoch"] == 1
    assert store.list_liveness()["b"]["state"] == "online"


def test_liveness_refuses_bad_arguments_and_writes_nothing(store):
    naive = datetime(2024, 5, 1, 12, 0)
    for args, named in [
        ((naive, T0, T0), "now"),
        ((T0, naive, T0), "offline_at"),
        ((T0, T0, naive), "lease_until"),
        ((T0, "2024-05-01T12:00:00+00:00", T0), "offline_at"),
    ]:
        with pytest.raises(ValueError, match=f"^{named} must be an aware datetime"):
            store.record_seen("007", *args)
    assert store.get_liveness("007") is None
    seen(store, "007")
    before = store.get_liveness("007")
    with pytest.raises(ValueError, match="^now "):
        store.record_seen("007", naive, T0 + TTL, T0 + LEASE)  # the fast path checks too
    for bad_limit in (-1, "10", 1.0, True, None):
        with pytest.raises(ValueError, match="limit"):
            store.due_offline(T0, bad_limit)
        with pytest.raises(ValueError, match="limit"):
            store.stale_transitions(T0, bad_limit)
    for bad_epoch in ("1", 1.0, True, None):
        with pytest.raises(ValueError, match="epoch"):
            store.claim_offline("007", bad_epoch, T0 + TTL, T0 + LEASE)
        with pytest.raises(ValueError, match="epoch"):
            store.complete_transition("007", bad_epoch)
        with pytest.raises(ValueError, match="epoch"):
            store.reclaim_transition("007", bad_epoch, T0 + LEASE, T0 + LEASE)
    with pytest.raises(ValueError, match="^now "):
        store.due_offline(naive, 10)
    with pytest.raises(ValueError, match="^lease_until "):
        store.claim_offline("007", 1, T0 + TTL, naive)
    with pytest.raises(ValueError, match="^now "):
        store.reclaim_transition("007", 1, naive, T0 + LEASE)
    assert store.get_liveness("007") == before


def test_records_and_liveness_roll_back_with_atomic(store):
    store.put_record("opt", "007", "a", make_record("a"))
    seen(store, "007")
    seen(store, "forgotten")
    before = (store.list_records("opt", "007"), store.list_liveness())
    with pytest.raises(RuntimeError, match="roll back"):
        with store.atomic():
            store.put_record("opt", "007", "b", make_record("b"))
            store.put_record("opt", "007", "a", make_record("a", note="replaced"))
            store.put_record("report", "008", "c", make_record("c"))
            store.clear_records("opt", "007")
            assert store.claim_offline("007", 1, T0 + TTL, T0 + LEASE) == offline("007", 2)
            assert seen(store, "007", T0 + TTL) == online("007", 3)
            assert seen(store, "008") == online("008", 1)
            store.complete_transition("007", 3)
            assert store.claim_offline("forgotten", 1, T0 + TTL, T0 + LEASE) == offline(
                "forgotten", 2)
            raise RuntimeError("roll back")
    assert (store.list_records("opt", "007"), store.list_liveness()) == before
    assert store.list_records("report", "008") == []


def test_a_rolled_back_deletion_puts_events_and_records_back_in_their_places(store):
    for name in ("e1", "e2", "e3"):
        store.put_event(make_event(name))
        store.put_record("opt", "007", name, make_record(name))
    with pytest.raises(RuntimeError, match="roll back"):
        with store.atomic():
            store.delete_event("e1")
            store.put_event(make_event("e1", note="put again goes last"))
            store.delete_event("e2")
            store.delete_record("opt", "007", "e2")
            store.put_record("opt", "007", "e2", make_record("e2", note="last"))
            store.delete_record("opt", "007", "e1")
            assert [r["name"] for r in store.list_records("opt", "007")] == ["e3", "e2"]
            raise RuntimeError("roll back")
    assert [e["event_descriptor"]["event_id"] for e in store.list_events()] == ["e1", "e2", "e3"]
    assert store.get_event("e1") == make_event("e1")
    assert [r["name"] for r in store.list_records("opt", "007")] == ["e1", "e2", "e3"]
    assert store.get_record("opt", "007", "e2") == make_record("e2")


def test_poll_state_is_the_three_reads_together(store):
    assert store.get_poll_state("007", "awaiting") == {"delivered": {}, "records": [],
                                                        "outbox": []}
    store.set_delivered("007", {"events": {"e": 1}, "due_at": T0})
    store.put_record("awaiting", "007", "b", make_record("b"))
    store.put_record("awaiting", "007", "a", make_record("a"))
    store.put_record("other", "007", "c", make_record("c"))
    store.put_record("awaiting", "008", "d", make_record("d"))
    for priority, name in [(5, "p5"), (1, "p1a"), (3, "p3"), (1, "p1b")]:
        store.push_outbox("007", make_item(priority, name=name))
    store.push_outbox("008", make_item(0, name="theirs"))

    def three_reads():
        return {"delivered": store.get_delivered("007"),
                "records": store.list_records("awaiting", "007"),
                "outbox": store.list_outbox("007")}

    state = store.get_poll_state("007", "awaiting")
    assert state == three_reads()
    assert [r["name"] for r in state["records"]] == ["b", "a"]
    assert [i["payload"]["name"] for i in state["outbox"]] == ["p1a", "p1b", "p3", "p5"]
    with pytest.raises(RuntimeError, match="roll back"):
        with store.atomic("007"):  # a block sees its own writes here too
            store.pop_outbox("007")
            store.delete_record("awaiting", "007", "b")
            store.set_delivered("007", {})
            assert store.get_poll_state("007", "awaiting") == three_reads()
            assert three_reads()["delivered"] == {}
            raise RuntimeError("roll back")
    assert store.get_poll_state("007", "awaiting") == state


def _in_rounds(items, size=2):
    """The items in rounds of ``size``: the race tests release all racers at each round's start."""
    return [items[i : i + size] for i in range(0, len(items), size)]


def _race_in_threads(body, rounds, count=4):
    """Run body(round) for every round in ``count`` threads, each round released in all threads
    at once (see the process tests below for why); every result, in no particular order."""
    barrier = threading.Barrier(count)
    results, errors = [], []

    def run():
        try:
            for work in rounds:
                barrier.wait(10)
                results.extend(body(work))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    return results


def test_threads_claiming_the_same_due_vens_claim_each_once(store):
    ven_ids = [f"ven-{i:03d}" for i in range(200)]
    for ven_id in ven_ids:
        store.record_seen(ven_id, T0, T0, T0 + LEASE)
    due = store.due_offline(T0, 1000)
    assert len(due) == 200

    def claim(due):
        return [t for ven_id, epoch in due if (t := store.claim_offline(ven_id, epoch, T0, T0))]

    won = _race_in_threads(claim, _in_rounds(due))
    assert sorted(won, key=lambda t: t["ven_id"]) == [offline(v, 2) for v in ven_ids]


def test_threads_seeing_the_same_offline_vens_make_each_online_once(store):
    ven_ids = [f"ven-{i:03d}" for i in range(200)]
    for ven_id in ven_ids:
        store.record_seen(ven_id, T0, T0, T0 + LEASE)
        store.claim_offline(ven_id, 1, T0, T0 + LEASE)

    def see(ven_ids):
        return [t for ven_id in ven_ids if (t := seen(store, ven_id, T0 + TTL))]

    won = _race_in_threads(see, _in_rounds(ven_ids))
    assert sorted(won, key=lambda t: t["ven_id"]) == [online(v, 3) for v in ven_ids]


# -- liveness across processes (shared stores) ---------------------------------------------------
# The work comes in rounds with a barrier before each: every round starts with all processes on
# the same VEN at the same moment, which is when a compare-and-set that is not atomic shows.
# Every process tries every VEN, so a claim that is no compare-and-set at all fails whatever the
# timing. There is no check that several processes won some: how the calls interleave is up to
# the scheduler, and one process may win them all.


def _claim_offline_worker(target, rounds, barrier, result_path):
    store = _open_target(target)
    store.get_liveness("warm-up")  # connect before the race, not in it
    won = []
    for due in rounds:
        barrier.wait()
        won += [t for ven_id, epoch in due if (t := store.claim_offline(ven_id, epoch, T0, T0))]
    Path(result_path).write_text(json.dumps(won))
    store.close()


def _record_seen_worker(target, rounds, barrier, result_path):
    store = _open_target(target)
    store.get_liveness("warm-up")
    won = []
    for ven_ids in rounds:
        barrier.wait()
        won += [t for ven_id in ven_ids if (t := seen(store, ven_id, T0 + TTL))]
    Path(result_path).write_text(json.dumps(won))
    store.close()


def _race_in_processes(method, worker, target, rounds, tmp_path, count=4):
    """Run worker(target, rounds, barrier, result_path) in ``count`` processes; their results."""
    barrier = multiprocessing.get_context(method).Barrier(count)
    paths = [tmp_path / f"won-{i}.json" for i in range(count)]
    _run_processes(method, worker, [(target, rounds, barrier, str(path)) for path in paths])
    return [json.loads(path.read_text()) for path in paths]


@pytest.mark.parametrize("method", START_METHODS)
def test_processes_claiming_the_same_due_vens_claim_each_once(shared_uri, method, tmp_path):
    parent = open_store(shared_uri)
    ven_ids = [f"ven-{i:03d}" for i in range(200)]
    for ven_id in ven_ids:
        parent.record_seen(ven_id, T0, T0, T0 + LEASE)
    # Every process read the same sweep, then claims every VEN in it.
    due = parent.due_offline(T0, 1000)
    assert len(due) == 200
    target = parent if method == "fork" else shared_uri
    won = _race_in_processes(method, _claim_offline_worker, target, _in_rounds(due), tmp_path)
    everything = sorted((t for mine in won for t in mine), key=lambda t: t["ven_id"])
    assert everything == [offline(v, 2) for v in ven_ids], "a VEN was claimed twice or never"
    assert parent.due_offline(T0, 1000) == []
    parent.close()


@pytest.mark.parametrize("method", START_METHODS)
def test_processes_seeing_the_same_offline_vens_make_each_online_once(
    shared_uri, method, tmp_path
):
    parent = open_store(shared_uri)
    ven_ids = [f"ven-{i:03d}" for i in range(200)]
    for ven_id in ven_ids:
        parent.record_seen(ven_id, T0, T0, T0 + LEASE)
        assert parent.claim_offline(ven_id, 1, T0, T0 + LEASE) == offline(ven_id, 2)
    target = parent if method == "fork" else shared_uri
    won = _race_in_processes(method, _record_seen_worker, target, _in_rounds(ven_ids), tmp_path)
    everything = sorted((t for mine in won for t in mine), key=lambda t: t["ven_id"])
    assert everything == [online(v, 3) for v in ven_ids], "a VEN came online twice or never"
    assert all(
        (row["state"], row["epoch"]) == ("online", 3) for row in parent.list_liveness().values()
    )
    parent.close()


def test_a_session_changes_nothing_a_caller_can_see(store):
    with store.session():
        store.put_ven({"ven_id": "007", "registration_id": "r"})
        with store.atomic("007"):
            store.set_delivered("007", {"e": 1})
        with pytest.raises(RuntimeError):
            with store.atomic():
                store.set_delivered("007", {"e": 2})
                raise RuntimeError("roll back")
        with store.session():
            assert store.get_delivered("007") == {"e": 1}
    assert store.get_ven("007")["registration_id"] == "r"
    assert store.get_delivered("007") == {"e": 1}
