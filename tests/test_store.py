"""Store conformance: one suite every backend passes, plus the shared-file and process tests.

A new backend joins by adding its name to BACKENDS (and SHARED_BACKENDS when several processes
share it) and a line to STORE_URIS; the tests themselves do not change.
"""
from __future__ import annotations

import json
import math
import multiprocessing
import os
import signal
import sqlite3
import threading
import time
import traceback
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
from flask_openadr.store.memory import MemoryStore
from flask_openadr.store.sqlite import SCHEMA_VERSION, SQLiteStore

BACKENDS = ["memory", "sqlite"]
SHARED_BACKENDS = ["sqlite"]  # backends that several processes see as one store

STORE_URIS = {
    "memory": lambda tmp_path: "memory://",
    "sqlite": lambda tmp_path: f"sqlite:///{tmp_path / 'vtn.sqlite'}",
}

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


# -- SQLite specifics ----------------------------------------------------------------------------


@pytest.fixture
def sqlite_store(tmp_path):
    opened = open_store(f"sqlite:///{tmp_path / 'vtn.sqlite'}")
    yield opened
    opened.close()


def test_sqlite_connection_settings_and_schema(sqlite_store):
    sqlite_store.get_ven("007")
    connection = sqlite_store._connection().sqlite
    pragma = lambda name: connection.execute(f"PRAGMA {name}").fetchone()[0]  # noqa: E731
    assert pragma("journal_mode") == "wal"
    assert pragma("synchronous") == 1  # NORMAL
    assert pragma("busy_timeout") == 30000
    assert pragma("foreign_keys") == 1
    assert pragma("user_version") == SCHEMA_VERSION
    names = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
    assert {"vens", "events", "delivered", "event_responses", "outbox"} <= names
    assert {"vens_fingerprint", "event_responses_by_event", "outbox_next"} <= names


def test_sqlite_refuses_a_database_from_a_newer_version(tmp_path):
    path = tmp_path / "vtn.sqlite"
    with sqlite3.connect(path) as raw:
        raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    raw.close()
    store = open_store(f"sqlite:///{path}")
    with pytest.raises(StoreError, match=f"schema version {SCHEMA_VERSION + 1}"):
        store.get_ven("007")


def test_sqlite_driver_errors_become_store_errors_naming_the_uri(tmp_path):
    (tmp_path / "a-directory").mkdir()
    uri = f"sqlite:///{tmp_path / 'a-directory'}"
    store = open_store(uri)
    with pytest.raises(StoreError, match="unable to open") as raised:
        store.get_ven("007")
    assert uri in str(raised.value)
    assert isinstance(raised.value.__cause__, sqlite3.Error)


def test_sqlite_waiting_too_long_for_another_writer_is_a_store_error(tmp_path):
    path = tmp_path / "vtn.sqlite"
    store = SQLiteStore(str(path), timeout=0.2)
    store.get_ven("007")  # creates the file and the schema
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StoreError, match="locked") as raised:
            store.put_ven(make_ven("007"))
        assert isinstance(raised.value.__cause__, sqlite3.OperationalError)
    finally:
        other.execute("ROLLBACK")
        other.close()
    store.put_ven(make_ven("007"))  # and it recovers
    assert store.get_ven("007") is not None
    store.close()


def test_sqlite_first_use_waits_for_another_connection_to_switch_to_wal(tmp_path):
    # Several workers opening a new file at once: switching to WAL needs the file to itself and
    # SQLite does not apply the busy timeout to it, so the store must wait on its own.
    path = tmp_path / "vtn.sqlite"
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("CREATE TABLE unrelated (x)")
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO unrelated VALUES (1)")  # holds the write lock of the new file
    release = threading.Timer(0.3, other.execute, ("COMMIT",))
    release.start()
    store = open_store(f"sqlite:///{path}")
    try:
        store.put_ven(make_ven("007"))
        assert store._connection().sqlite.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        release.join()
        other.close()
        store.close()


def test_sqlite_has_one_connection_per_thread(sqlite_store):
    mine = sqlite_store._connection()
    assert sqlite_store._connection() is mine
    theirs = []
    thread = threading.Thread(target=lambda: theirs.append(sqlite_store._connection()))
    thread.start()
    thread.join()
    assert theirs[0] is not mine and theirs[0].sqlite is not mine.sqlite


def test_sqlite_closes_the_connections_of_ended_threads(sqlite_store):
    ended = []
    thread = threading.Thread(target=lambda: ended.append(sqlite_store._connection().sqlite))
    thread.start()
    thread.join()
    ended[0].execute("SELECT 1")  # still open: nothing has pruned it yet
    thread = threading.Thread(target=sqlite_store._connection)  # a new connection prunes
    thread.start()
    thread.join()
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        ended[0].execute("SELECT 1")


def test_sqlite_close_closes_this_processes_connections(sqlite_store):
    connection = sqlite_store._connection().sqlite
    sqlite_store.close()
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        connection.execute("SELECT 1")
    assert sqlite_store._connection().sqlite is not connection


def _wait_for_child(pid, seconds=20):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)  # pragma: no cover - only on a hang
    os.waitpid(pid, 0)
    pytest.fail(f"the forked child {pid} hung")


def _in_child(body):
    """Run body() in the child of a fork and leave with its verdict, never returning to pytest."""
    code = 1
    try:
        body()
        code = 0
    except BaseException:
        traceback.print_exc()
    finally:
        os._exit(code)


@fork_only
def test_sqlite_child_of_fork_never_uses_the_parents_connection(sqlite_store):
    sqlite_store.put_ven(make_ven("parent"))
    parent_connection = sqlite_store._connection().sqlite
    used_by = []
    parent_connection.set_trace_callback(lambda statement: used_by.append(os.getpid()))

    def child():
        sqlite_store.put_ven(make_ven("child"))
        assert sqlite_store.get_ven("parent") is not None
        assert sqlite_store._connection().sqlite is not parent_connection
        sqlite_store.close()
        assert os.getpid() not in used_by, "the child ran statements on the parent's connection"

    pid = os.fork()
    if pid == 0:
        _in_child(child)
    assert _wait_for_child(pid) == 0
    # The parent's connection is still its own, open, and sees what the child wrote.
    assert sqlite_store._connection().sqlite is parent_connection
    assert sqlite_store.get_ven("child") is not None


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
            _in_child(child)
        assert _wait_for_child(pid) == 0
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


@pytest.mark.parametrize("uri", ["mongodb://db.example/vtn", "vtn.sqlite", "", "redis://h/0"])
def test_open_store_unknown_scheme_names_the_uri_and_the_choices(uri):
    with pytest.raises(ConfigurationError) as raised:
        open_store(uri)
    message = str(raised.value)
    assert repr(uri) in message
    for mentioned in ("memory://", "sqlite://", "redis://", "postgresql://", "later release"):
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
