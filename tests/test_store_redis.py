"""The Redis store's own behaviour: URIs, prefixes, locking, fork safety and Redis outages.

What every backend does is in test_store.py, which runs against Redis too. The tests here use
the shared test Redis (tests/support/backends.py) with a prefix of their own, except the
outage tests, which start a private redis-server on a free port and stop it: the shared one is
never stopped.
"""
from __future__ import annotations

import contextlib
import logging
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest
from flask import Flask

from flask_openadr import VTN, codec
from flask_openadr.errors import ConfigurationError, StoreError
from flask_openadr.store import open_store
from flask_openadr.store.memory import MemoryStore
from flask_openadr.testing import VENTestClient
from tests.support.backends import (
    REDIS_SERVER, REDIS_URI, redis_reachable, redis_uri, require_server,
)
from tests.support.forking import in_child, wait_for_child

redis = pytest.importorskip("redis")

from flask_openadr.store.redis import LAYOUT, RedisStore  # noqa: E402
from flask_openadr.store.rules import DELIVERED, NONCES, Conflict  # noqa: E402

UTC = timezone.utc
T0 = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
SECOND = timedelta(seconds=1)
FINGERPRINT = "AB:CD:EF:01:23:45:67:89:0A:BC"


def make_ven(ven_id, **fields):
    ven = {"ven_id": ven_id, "registration_id": f"reg-{ven_id}", "fingerprint": None,
           "poll_frequency": timedelta(seconds=10), "registered_at": T0}
    ven.update(fields)
    return ven


def make_event(event_id, **fields):
    return {"event_descriptor": {"event_id": event_id, "modification_number": 0}, **fields}


def make_item(priority, **payload):
    return {"priority": priority, "payload_name": "oadrDistributeEvent", "payload": payload}


@pytest.fixture
def uri(tmp_path):
    return redis_uri(tmp_path)


@pytest.fixture
def store(uri):
    opened = open_store(uri)
    yield opened
    opened.close()


def raw_client():
    require_server(REDIS_SERVER, *redis_reachable())
    return redis.Redis.from_url(REDIS_URI, decode_responses=True)


def keys_under(prefix):
    client = raw_client()
    try:
        return sorted(client.scan_iter(match=prefix + "*", count=1000))
    finally:
        client.close()


# -- URIs ----------------------------------------------------------------------------------------


def test_uri_defaults():
    store = open_store("redis://127.0.0.1:6379/0")
    assert isinstance(store, RedisStore)
    assert store.prefix == "openadr:"
    assert (store.lock_lease, store.lock_wait) == (10.0, 30.0)
    kwargs = store.redis._client().connection_pool.connection_kwargs
    assert (kwargs["host"], kwargs["port"], kwargs["db"]) == ("127.0.0.1", 6379, 0)
    # Short timeouts by default: a request fails with 503 instead of hanging on a dead server.
    assert (kwargs["socket_timeout"], kwargs["socket_connect_timeout"]) == (5.0, 5.0)
    assert kwargs["decode_responses"] is True and kwargs["protocol"] == 2
    assert kwargs["retry"].get_retries() == 0  # a lost reply never makes a write run twice


def test_uri_options_of_the_store_and_of_redis_py():
    store = open_store(
        "REDIS://db.example:6380/3?prefix=my%20vtn:&lock_lease=2.5&lock_wait=7"
        "&socket_timeout=0.5&max_connections=20&health_check_interval=30"
    )
    assert store.prefix == "my vtn:"
    assert (store.lock_lease, store.lock_wait) == (2.5, 7.0)
    pool = store.redis._client().connection_pool
    kwargs = pool.connection_kwargs
    assert (kwargs["host"], kwargs["port"], kwargs["db"]) == ("db.example", 6380, 3)
    assert kwargs["socket_timeout"] == 0.5 and kwargs["socket_connect_timeout"] == 5.0
    assert kwargs["health_check_interval"] == 30 and pool.max_connections == 20


def test_rediss_uses_tls():
    store = open_store("rediss://db.example:6380/0?ssl_cert_reqs=none")
    assert store.redis._client().connection_pool.connection_class is redis.SSLConnection


@pytest.mark.parametrize(
    "uri, problem",
    [
        ("redis://h/0?decode_responses=false", "'decode_responses'.*sets itself"),
        ("redis://h/0?protocol=3", "'protocol'.*sets itself"),
        ("redis://h/0?retry_on_timeout=true", "'retry_on_timeout'.*sets itself"),
        ("redis://h/0?no_such_option=1", "option redis-py does not take"),
        ("redis://h/0?socket_timeout=soon", "option redis-py does not take"),
        ("redis://h/vtn", "path '/vtn'.*database number"),
        ("redis://h/0?prefix=", "empty prefix"),
        ("redis://h/0?lock_lease=0", "lock_lease='0'.*greater than 0"),
        ("redis://h/0?lock_wait=forever", "lock_wait='forever'"),
    ],
)
def test_malformed_uris_are_refused_when_opened(uri, problem):
    with pytest.raises(ConfigurationError, match=problem):
        open_store(uri)


def test_the_password_never_shows():
    uri = "redis://operator:s3cret@db.example:6379/0?prefix=x:"
    store = open_store(uri)
    assert "s3cret" not in repr(store) and "operator:***@" in repr(store)
    with pytest.raises(ConfigurationError) as raised:
        open_store(uri + "&no_such_option=1")
    assert "s3cret" not in str(raised.value) and "operator:***@" in str(raised.value)


def test_missing_redis_py_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "redis", None)  # import redis now raises ImportError
    with pytest.raises(ConfigurationError) as raised:
        open_store("redis://:s3cret@127.0.0.1:6379/0")
    message = str(raised.value)
    assert 'pip install "flask-openadr[redis]"' in message
    assert "s3cret" not in message


def test_the_backend_module_imports_without_redis_py():
    code = (
        "import sys; sys.modules['redis'] = None\n"
        "import flask_openadr.store.redis as backend\n"
        "from flask_openadr.errors import ConfigurationError\n"
        "try:\n"
        "    backend.from_uri('redis://127.0.0.1/0')\n"
        "except ConfigurationError as exc:\n"
        "    print(exc)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert 'pip install "flask-openadr[redis]"' in result.stdout


def test_opening_the_store_needs_no_server():
    store = open_store("redis://127.0.0.1:1/0")  # nothing is sent until the first call
    with pytest.raises(StoreError, match="ConnectionError"):
        store.create_schema()


# -- the layout of the keys ----------------------------------------------------------------------


def test_create_schema_marks_an_empty_keyspace_with_its_layout(store):
    store.create_schema()
    client = raw_client()
    try:
        assert client.get(store.prefix + "layout") == LAYOUT
    finally:
        client.close()
    store.create_schema()  # idempotent
    store.put_ven(make_ven("007"))
    assert store.get_ven("007")["ven_id"] == "007"


def test_keys_of_the_old_layout_are_refused_and_left_alone(uri):
    # What the store before the rules wrote: no layout key, rows in hashes such as P vens.
    store = open_store(uri)
    client = raw_client()
    try:
        client.hset(store.prefix + "vens", "007", '{"ven_id":"007"}')
        client.set(store.prefix + "seq", "41")
        for call in (store.create_schema, lambda: store.get_ven("007"),
                     lambda: store.put_ven(make_ven("008"))):
            with pytest.raises(StoreError) as raised:
                call()
            message = str(raised.value)
            assert f"found '{store.prefix}vens'" in message or f"found '{store.prefix}seq'" \
                in message
            assert "older development version" in message and "another prefix" in message
        # Nothing was read as this layout's, and nothing was written or destroyed.
        assert keys_under(store.prefix) == [store.prefix + "seq", store.prefix + "vens"]
        assert client.hget(store.prefix + "vens", "007") == '{"ven_id":"007"}'
    finally:
        client.close()
    store.close()


def test_a_layout_of_another_version_is_refused(uri):
    store = open_store(uri)
    client = raw_client()
    try:
        client.set(store.prefix + "layout", "99")
        with pytest.raises(StoreError, match="layout '99'.*reads layout '1' only"):
            store.list_vens()
        assert keys_under(store.prefix) == [store.prefix + "layout"]
    finally:
        client.close()
    store.close()


# -- prefixes ------------------------------------------------------------------------------------


def fill(store):
    store.put_ven(make_ven("007", fingerprint=FINGERPRINT))
    store.put_event(make_event("event-1"))
    store.set_delivered("007", {"event-1": 0})
    store.put_event_response({"ven_id": "007", "event_id": "event-1", "modification_number": 0,
                              "opt_type": "optIn", "received_at": T0})
    store.push_outbox("007", make_item(1, name="x"))
    store.put_record("opt", "007", "a", {"name": "a"})
    store.record_seen("007", T0, T0, T0)


def test_two_prefixes_on_one_server_are_two_stores(tmp_path):
    first = open_store(redis_uri(tmp_path / "first"))
    second = open_store(redis_uri(tmp_path / "second"))
    fill(first)
    assert second.list_vens() == [] and second.get_ven_by_fingerprint(FINGERPRINT) is None
    assert second.list_events() == [] and second.get_delivered("007") == {}
    assert second.list_event_responses("event-1") == [] and second.list_outbox("007") == []
    assert second.list_records("opt", "007") == [] and second.list_liveness() == {}
    assert second.due_offline(T0, 10) == [] and second.stale_transitions(T0, 10) == []
    assert first.list_vens() != [] and first.due_offline(T0, 10) == [("007", 1)]
    # Every key the first store wrote is under its prefix; the second wrote none but the mark
    # of its layout (its reads checked there was no other).
    written = keys_under(first.prefix)
    assert {first.prefix + name for name in ("layout", "t:vens", "t:events", "rows:seq",
                                             "t:liveness", "i:liveness_due")} <= set(written)
    assert keys_under(second.prefix) == [second.prefix + "layout"]
    # Each prefix has its own write lock: a block open on one does not hold up the other.
    second = open_store(redis_uri(tmp_path / "second") + "&lock_wait=0.5")
    with first.atomic():
        first.put_ven(make_ven("in-block"))  # reads the VEN first: the block takes its lock
        second.put_ven(make_ven("not-waiting"))
    assert [v["ven_id"] for v in second.list_vens()] == ["not-waiting"]
    first.close()
    second.close()


def test_ids_that_look_like_key_separators_or_are_not_ascii(store):
    ven_ids = ["a:b", "a", "b:c", "\u00e9t\u00e9", "\U0001f50c", "lone \ud800 surrogate", "x*?[]"]
    for ven_id in ven_ids:
        store.put_ven(make_ven(ven_id, fingerprint="11:22"))
        store.push_outbox(ven_id, make_item(1, owner=ven_id))
        store.put_record("a:b", ven_id, "k", {"owner": ven_id})
        store.record_seen(ven_id, T0, T0, T0)
    for ven_id in ven_ids:
        assert store.get_ven(ven_id)["ven_id"] == ven_id
        assert [i["payload"]["owner"] for i in store.list_outbox(ven_id)] == [ven_id]
        assert store.get_record("a:b", ven_id, "k") == {"owner": ven_id}
        assert store.get_liveness(ven_id)["ven_id"] == ven_id
    assert [v["ven_id"] for v in store.list_vens()] == sorted(ven_ids)
    assert store.get_ven_by_fingerprint("1122")["ven_id"] == min(ven_ids)
    assert sorted(store.list_liveness()) == sorted(ven_ids)


def test_an_id_redis_py_cannot_send_is_a_type_error_not_an_outage(store):
    # A StoreError would answer HTTP 503 ("try again later") to what is a bug.
    with pytest.raises(TypeError, match="NoneType"):
        store.get_ven(None)
    with pytest.raises(TypeError, match="NoneType"):
        store.get_delivered(None)


def test_outbox_priorities_beyond_a_double_keep_their_order(store):
    # Priorities are in the items' keys, not in sorted-set scores (doubles, exact to 2**53).
    store.push_outbox("007", make_item(2**53 + 1, name="highest"))
    store.push_outbox("007", make_item(2**53, name="high"))
    store.push_outbox("007", make_item(-(2**60), name="lowest"))
    assert [i["payload"]["name"] for i in store.get_poll_state("007", "awaiting")["outbox"]] \
        == ["lowest", "high", "highest"]
    assert store.pop_outbox("007", max_priority=-(2**60) - 1) is None
    assert store.pop_outbox("007", max_priority=2**60)["payload"]["name"] == "lowest"
    assert store.pop_outbox("007", max_priority=2**53 - 1) is None
    assert store.pop_outbox("007", max_priority=2**53)["payload"]["name"] == "high"
    assert store.pop_outbox("007")["payload"]["name"] == "highest"


# -- one round trip for the hot paths ------------------------------------------------------------


def count_commands(store, monkeypatch):
    client = store.redis._client()
    sent = []
    execute = client.execute_command

    def spy(*args, **options):
        sent.append(args[0])
        return execute(*args, **options)

    monkeypatch.setattr(client, "execute_command", spy)
    return sent


def test_record_seen_is_one_evalsha(store, monkeypatch):
    store.record_seen("warm-up", T0, T0, T0)  # loads the script into the server once
    sent = count_commands(store, monkeypatch)
    assert store.record_seen("007", T0, T0 + SECOND, T0) is not None  # a transition
    assert store.record_seen("007", T0, T0 + 2 * SECOND, T0) is None  # the common case
    assert sent == ["EVALSHA", "EVALSHA"]


def test_a_signed_record_seen_is_one_evalsha(store, monkeypatch):
    store.record_seen("warm-up", T0, T0, T0, nonce="warm-up", nonce_expires_at=T0 + SECOND)
    sent = count_commands(store, monkeypatch)
    store.record_seen("007", T0, T0 + SECOND, T0, nonce="n", nonce_expires_at=T0 + SECOND)
    assert sent == ["EVALSHA"]


def test_the_reads_of_a_poll_are_one_round_trip_each(store, monkeypatch):
    store.put_ven(make_ven("007"))
    store.get_poll_state("007", "awaiting")  # loads the script
    sent = count_commands(store, monkeypatch)
    assert store.get_ven("007")["ven_id"] == "007"
    store.get_poll_state("007", "awaiting")
    assert sent == ["HMGET", "EVALSHA"]


def test_a_block_that_reads_nothing_is_one_evalsha_and_takes_no_lock(store, monkeypatch):
    store.push_outbox("warm-up", make_item(1))
    store.pop_outbox("warm-up")  # loads the scripts into the server once
    sent = count_commands(store, monkeypatch)
    store.push_outbox("007", make_item(1))
    store.put_event(make_event("event-1"))
    store.set_delivered("007", {"event-1": 0})
    assert sent == ["EVALSHA"] * 3  # the commit script, which checks no lock is held
    # A pop reads the outbox in its VEN's block: the VEN's lock, the read, the commit.
    del sent[:]
    assert store.pop_outbox("007") is not None
    assert sent == ["EVALSHA"] * 3


def test_scripts_are_loaded_again_after_the_server_forgets_them(store):
    store.record_seen("007", T0, T0, T0)
    raw = raw_client()
    try:
        raw.script_flush()
    finally:
        raw.close()
    assert store.record_seen("008", T0, T0, T0) is not None
    store.put_ven(make_ven("007"))
    assert store.get_ven("007") is not None


# -- atomic() ------------------------------------------------------------------------------------


def test_a_write_from_another_handle_waits_for_an_open_block(uri):
    block_store, other = open_store(uri), open_store(uri)
    done = []

    def write():
        other.push_outbox("007", make_item(0, name="other"))
        done.append(time.monotonic())

    with block_store.atomic():
        assert block_store.list_outbox("007") == []  # a read: the block takes its lock
        block_store.push_outbox("007", make_item(0, name="block"))
        writer = threading.Thread(target=write)
        writer.start()
        time.sleep(0.3)
        assert not done, "the other write did not wait for the block"
        assert other.list_outbox("007") == []  # readers never see a block's writes early
        committed = time.monotonic()
    writer.join(10)
    assert done and done[0] >= committed
    # The block committed first, so its item is older.
    assert [i["payload"]["name"] for i in other.list_outbox("007")] == ["block", "other"]
    block_store.close()
    other.close()


def test_a_block_that_outlives_its_lease_writes_nothing(uri):
    slow = open_store(uri + "&lock_lease=0.3")
    other = open_store(uri)
    with pytest.raises(StoreError, match="lost its lock") as raised:
        with slow.atomic():
            slow.put_ven(make_ven("from-the-slow-block"))
            time.sleep(0.6)  # no store call: the lock is not renewed and expires
            other.put_ven(make_ven("went-ahead"))  # the lock is free, so it does not wait
    assert "lock_lease=0.3" in str(raised.value)
    assert [v["ven_id"] for v in other.list_vens()] == ["went-ahead"]
    # Nothing of the failed block lingers: the next block works.
    with slow.atomic():
        slow.put_ven(make_ven("next"))
    assert [v["ven_id"] for v in other.list_vens()] == ["next", "went-ahead"]


def test_a_busy_block_renews_its_lock(uri):
    busy = open_store(uri + "&lock_lease=1")
    other = open_store(uri)
    finished = []
    writer = threading.Thread(
        target=lambda: (other.put_ven(make_ven("other")), finished.append(time.monotonic()))
    )
    with busy.atomic():
        busy.put_ven(make_ven("busy"))
        writer.start()
        for _ in range(40):  # 2 s: two leases, kept alive by the store calls
            time.sleep(0.05)
            busy.get_ven("busy")
        assert not finished, "the lock expired although the block kept using the store"
        committed = time.monotonic()
    writer.join(10)
    assert finished[0] >= committed
    assert [v["ven_id"] for v in other.list_vens()] == ["busy", "other"]


def test_per_ven_blocks_of_two_vens_run_side_by_side_and_single_writes_wait(uri):
    first, second, other = open_store(uri), open_store(uri), open_store(uri)
    done = []
    writer = threading.Thread(
        target=lambda: (other.put_ven(make_ven("single")), done.append(time.monotonic())))
    with first.atomic("007"):
        assert first.get_delivered("007") == {}  # a read: the block takes the VEN's lock
        first.set_delivered("007", {"e": 1})
        started = time.monotonic()
        with second.atomic("008"):  # another VEN: no wait
            second.set_delivered("008", {"e": 2})
        assert time.monotonic() - started < 1
        assert other.get_delivered("008") == {"e": 2}
        writer.start()
        time.sleep(0.3)
        assert not done, "a single write went ahead of an open per-VEN block"
        committed = time.monotonic()
    writer.join(10)
    assert done and done[0] >= committed
    assert other.get_delivered("007") == {"e": 1}
    for store in (first, second, other):
        store.close()


def test_a_per_ven_block_that_outlives_its_lease_writes_nothing(uri):
    slow = open_store(uri + "&lock_lease=0.3")
    other = open_store(uri)
    with pytest.raises(StoreError, match="lost its lock"):
        with slow.atomic("007"):
            slow.get_delivered("007")  # a read: the block takes the VEN's lock
            slow.set_delivered("007", {"from": "the slow block"})
            time.sleep(0.6)  # no store call: neither its lock nor its place is renewed
            with other.atomic("007"):  # the VEN's lock expired, so this one goes ahead
                other.set_delivered("007", {"went": "ahead"})
    assert other.get_delivered("007") == {"went": "ahead"}
    with other.atomic():  # and a VTN-wide block is not kept out by the expired place
        other.put_ven(make_ven("next"))
    assert [v["ven_id"] for v in other.list_vens()] == ["next"]


def test_the_lock_of_a_crashed_process_expires(uri):
    store = open_store(uri)
    client = raw_client()
    try:
        client.set(store.prefix + "lock", "token-of-a-dead-process", px=400)
        started = time.monotonic()
        store.put_ven(make_ven("007"))
        assert time.monotonic() - started >= 0.3
        with store.atomic():
            store.put_ven(make_ven("008"))
        assert len(store.list_vens()) == 2
    finally:
        client.close()


def test_waiting_longer_than_lock_wait_is_a_store_error(uri):
    store = open_store(uri + "&lock_wait=0.3")
    client = raw_client()
    try:
        client.set(store.prefix + "lock", "held", px=60000)
        for attempt in (lambda: store.put_ven(make_ven("007")),
                        lambda: store.pop_outbox("007"),
                        lambda: store.push_outbox("007", make_item(1)),
                        lambda: store.record_seen("007", T0, T0, T0),
                        lambda: read_in_a_block(store)):
            started = time.monotonic()
            with pytest.raises(StoreError, match="waited 0.3 s"):
                attempt()
            assert time.monotonic() - started < 3
        client.delete(store.prefix + "lock")
        store.put_ven(make_ven("007"))
    finally:
        client.close()


def read_in_a_block(store):
    with store.atomic():
        store.list_vens()


def test_record_seen_waits_only_for_its_own_vens_block(uri):
    blocking = open_store(uri)
    other = open_store(uri + "&lock_wait=0.3")
    with blocking.atomic("a"):
        blocking.get_liveness("a")  # the block holds a's lock
        assert other.record_seen("b", T0, T0, T0) is not None  # another VEN: no wait
        with pytest.raises(StoreError, match="waited"):
            other.record_seen("a", T0, T0, T0)
    assert other.record_seen("a", T0, T0, T0) is not None


def test_a_block_that_lost_a_compare_and_set_raises_conflict_and_writes_nothing(uri):
    # A nonce is put in its VEN's block; another VEN's block may take it at the same time.
    first, second = open_store(uri), open_store(uri)
    with pytest.raises(Conflict):
        with first.redis.transaction("a"):
            assert first.redis.put(NONCES, "n", "x", expect=0)  # Redis has no such row yet
            first.redis.put(DELIVERED, "a", "{}")
            with second.redis.transaction("b"):  # another VEN: no wait
                assert second.redis.put(NONCES, "n", "y", expect=0)
    assert first.redis.get(NONCES, ["n", "m"]) == {"n": (1, "y")}
    assert first.get_delivered("a") == {}
    # The lock was released with the block: a's next block does not wait.
    with first.redis.transaction("a"):
        assert first.redis.put(NONCES, "n", "z", expect=1)
    assert first.redis.get(NONCES, ["n"]) == {"n": (2, "z")}


def test_keys_of_removed_rows_partitions_and_index_entries_disappear(store):
    store.push_outbox("007", make_item(1))
    store.put_record("opt", "007", "a", {"n": 1})
    store.put_event_response({"ven_id": "007", "event_id": "event-1", "modification_number": 0,
                              "received_at": T0})
    store.set_delivered("007", {"event-1": 0})
    store.put_event(make_event("event-1"))
    store.record_seen("007", T0, T0, T0, nonce="n", nonce_expires_at=T0 + SECOND)
    store.pop_outbox("007")
    store.delete_record("opt", "007", "a")
    store.delete_event_responses("event-1")
    store.set_delivered("007", {})
    store.delete_event("event-1")
    store.maintain(T0 + 2 * SECOND)  # the nonce expired
    # What is left: the layout, the counter and the VEN's liveness row and its index entries.
    assert [key[len(store.prefix):] for key in keys_under(store.prefix)] == [
        "i:liveness_due", "i:liveness_due:at", "i:liveness_stale", "i:liveness_stale:at",
        "layout", "p:liveness:", "rows:seq", "t:liveness"]


def test_fresh_and_replaced_items_inside_a_block_keep_their_places(store):
    for event_id in ("e1", "e2", "e3"):
        store.put_event(make_event(event_id))
    store.push_outbox("007", make_item(1, name="stored"))
    with store.atomic():
        store.put_event(make_event("e1", note="replaced in place"))
        store.delete_event("e2")
        store.put_event(make_event("e4"))
        store.put_event(make_event("e2", note="back, now the newest"))
        store.push_outbox("007", make_item(1, name="pushed"))
        store.push_outbox("007", make_item(0, name="urgent"))
        inside = ([e["event_descriptor"]["event_id"] for e in store.list_events()],
                  [i["payload"]["name"] for i in store.list_outbox("007")])
        assert inside == (["e1", "e3", "e4", "e2"], ["urgent", "stored", "pushed"])
        assert store.pop_outbox("007", max_priority=0)["payload"]["name"] == "urgent"
        assert store.pop_outbox("007")["payload"]["name"] == "stored"
    assert [e["event_descriptor"]["event_id"] for e in store.list_events()] == inside[0]
    assert store.get_event("e1")["note"] == "replaced in place"
    assert [i["payload"]["name"] for i in store.list_outbox("007")] == ["pushed"]


# -- the same operations on Redis and on the memory store give the same answers -------------------

IDS = ["a", "b", "c"]
EVENT_IDS = ["e1", "e2", "e3"]


def random_operation(rng):
    """One store call with random arguments, as (name, args)."""
    ven, event = rng.choice(IDS), rng.choice(EVENT_IDS)
    at = T0 + rng.randrange(0, 40) * SECOND
    number = rng.randrange(100)
    choices = [
        ("put_ven", (make_ven(ven, fingerprint=rng.choice([None, "AA:01", "aa01", "BB"]),
                              n=number),)),
        ("get_ven", (ven,)),
        ("get_ven_by_fingerprint", (rng.choice(["AA01", "BB", "CC"]),)),
        ("list_vens", ()),
        ("put_event", (make_event(event, n=number),)),
        ("get_event", (event,)),
        ("list_events", ()),
        ("delete_event", (event,)),
        ("set_delivered", (ven, rng.choice([{}, {event: number}]))),
        ("get_delivered", (ven,)),
        ("put_event_response", ({"ven_id": ven, "event_id": event,
                                 "modification_number": rng.randrange(2), "n": number,
                                 "received_at": rng.choice([None, at])},)),
        ("list_event_responses", (event,)),
        ("push_outbox", (ven, make_item(rng.randrange(3), n=number))),
        ("pop_outbox", (ven, rng.choice([None, 0, 1, 2]))),
        ("list_outbox", (ven,)),
        ("clear_outbox", (ven,)),
        ("put_record", (rng.choice(["opt", "report"]), ven, rng.choice("xyz"), {"n": number})),
        ("get_record", (rng.choice(["opt", "report"]), ven, rng.choice("xyz"))),
        ("list_records", (rng.choice(["opt", "report"]), ven)),
        ("delete_record", (rng.choice(["opt", "report"]), ven, rng.choice("xyz"))),
        ("clear_records", (rng.choice(["opt", "report"]), ven)),
        ("record_seen", (ven, at, at + rng.randrange(0, 20) * SECOND,
                         at + rng.randrange(0, 20) * SECOND)),
        ("due_offline", (at, rng.randrange(4))),
        ("claim_offline", (ven, rng.randrange(4), at, at + rng.randrange(20) * SECOND)),
        ("complete_transition", (ven, rng.randrange(4))),
        ("stale_transitions", (at, rng.randrange(4))),
        ("reclaim_transition", (ven, rng.randrange(4), at, at + rng.randrange(20) * SECOND)),
        ("get_liveness", (ven,)),
        ("list_liveness", ()),
    ]
    return rng.choice(choices)


def everything(store):
    return {
        "vens": store.list_vens(),
        "events": store.list_events(),
        "delivered": {ven: store.get_delivered(ven) for ven in IDS},
        "responses": {event: store.list_event_responses(event) for event in EVENT_IDS},
        "outbox": {ven: store.list_outbox(ven) for ven in IDS},
        "records": {(kind, ven): store.list_records(kind, ven)
                    for kind in ("opt", "report") for ven in IDS},
        "liveness": store.list_liveness(),
        "due": store.due_offline(T0 + 100 * SECOND, 100),
        "stale": store.stale_transitions(T0 + 100 * SECOND, 100),
    }


def run_alike(stores, rng, count, where):
    for step in range(count):
        name, args = random_operation(rng)
        answers = [getattr(store, name)(*args) for store in stores]
        assert answers[0] == answers[1], f"{where}, step {step}: {name}{args}"


@pytest.mark.parametrize("seed", range(12))
def test_blocks_answer_like_the_memory_store(tmp_path, seed):
    """Inside a block the Redis store answers from Redis plus the block's own writes; the memory
    store answers from its state. The same calls must give the same answers, before, inside,
    after a committed block, and after a rolled-back one."""
    rng = random.Random(seed)
    reference, store = MemoryStore(), open_store(redis_uri(tmp_path))
    stores = (reference, store)
    run_alike(stores, rng, 60, "before")
    for block in range(4):
        rollback = block % 2 == 1
        with pytest.raises(RuntimeError) if rollback else contextlib.nullcontext():
            with reference.atomic(), store.atomic():
                run_alike(stores, rng, 40, f"block {block}")
                assert everything(reference) == everything(store), f"inside block {block}"
                if rollback:
                    raise RuntimeError("roll back")
        assert everything(reference) == everything(store), f"after block {block}"
    store.close()


# -- fork ----------------------------------------------------------------------------------------


fork_only = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")


@fork_only
def test_a_forked_child_never_uses_the_parents_connections(store):
    store.put_ven(make_ven("parent"))
    parent_client = store.redis._client()
    parent_pool = parent_client.connection_pool
    connection_id = parent_client.client_id()

    def child():
        assert store.redis._client() is not parent_client
        store.put_ven(make_ven("child"))
        with store.atomic():
            store.put_ven(make_ven("child-block"))
        assert store.get_ven("parent") is not None
        store.close()  # closes the child's pool only
        # redis-py resets a pool used in a child; the parent's was never touched.
        assert parent_pool.pid != os.getpid()

    pid = os.fork()
    if pid == 0:
        in_child(child)
    assert wait_for_child(pid) == 0
    # The parent's connection is the one it had: the child neither used nor closed it.
    assert parent_client.client_id() == connection_id
    assert store.redis._client() is parent_client
    assert [v["ven_id"] for v in store.list_vens()] == ["child", "child-block", "parent"]


@fork_only
def test_a_child_forked_inside_a_block_is_not_in_it(store):
    def child():
        assert store.get_ven("in-parent-block") is None  # not the parent's block
        assert store.redis.block() is None

    with store.atomic():
        store.put_ven(make_ven("in-parent-block"))
        pid = os.fork()
        if pid == 0:
            in_child(child)
        assert wait_for_child(pid) == 0
        assert store.get_ven("in-parent-block") is not None
    assert store.get_ven("in-parent-block") is not None


# -- outages: a private redis-server that the tests stop and start --------------------------------


def _free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class PrivateRedis:
    """A redis-server of this test's own, with a password, on a free port."""

    password = "s3cret"

    def __init__(self, directory, persistent):
        self.directory = directory
        self.persistent = persistent
        self.port = _free_port()
        self.process = None

    def uri(self, **options):
        query = "&".join(f"{name}={value}" for name, value in {"prefix": "vtn:", **options}.items())
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0?{query}"

    def start(self):
        command = [
            "redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
            "--requirepass", self.password, "--dir", str(self.directory),
            "--daemonize", "no", "--save", "",
            "--appendonly", "yes" if self.persistent else "no",
        ]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, password=self.password, socket_timeout=1,
                             socket_connect_timeout=1)
        deadline = time.monotonic() + 20
        try:
            while True:
                try:
                    client.ping()
                    return
                except redis.RedisError:
                    if self.process.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"redis-server on port {self.port} did not start")
                    time.sleep(0.05)
        finally:
            client.close()

    def stop(self):
        """A clean stop (SIGTERM): with appendonly the data is on disk when it exits."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:  # pragma: no cover
                self.process.kill()
                self.process.wait()
        self.process = None


def _private_redis(tmp_path, persistent):
    if shutil.which("redis-server") is None:
        require_server("redis-server binary on PATH", False, "the outage tests start their own")
    server = PrivateRedis(tmp_path, persistent)
    server.start()
    return server


@pytest.fixture
def private_redis(tmp_path):
    """A private server without persistence: a restart empties it."""
    server = _private_redis(tmp_path, persistent=False)
    yield server
    server.stop()


@pytest.fixture
def persistent_redis(tmp_path):
    """A private server with appendonly yes: its data survives a clean restart."""
    server = _private_redis(tmp_path, persistent=True)
    yield server
    server.stop()


def quick(seconds=3.0):
    """A context that fails the test when its body takes longer than ``seconds``."""

    class Timer:
        def __enter__(self):
            self.started = time.monotonic()
            return self

        def __exit__(self, *exc_info):
            elapsed = time.monotonic() - self.started
            assert elapsed < seconds, f"took {elapsed:.1f} s; a dead store must fail fast"
            return False

    return Timer()


def test_a_stopped_server_fails_fast_and_the_store_recovers_by_itself(private_redis):
    store = open_store(private_redis.uri(socket_timeout=1, socket_connect_timeout=1))
    store.put_ven(make_ven("007"))
    with store.atomic():
        store.push_outbox("007", make_item(1))
    private_redis.stop()

    for call in (lambda: store.put_ven(make_ven("008")),
                 lambda: store.get_ven("007"),
                 lambda: store.pop_outbox("007"),
                 lambda: store.record_seen("007", T0, T0, T0),
                 lambda: read_in_a_block(store)):
        with quick(), pytest.raises(StoreError) as raised:
            call()
        message = str(raised.value)
        assert f"redis://:***@127.0.0.1:{private_redis.port}/0" in message
        assert "s3cret" not in message
        assert isinstance(raised.value.__cause__, redis.ConnectionError)
        assert "ConnectionError" in message  # the cause, named

    private_redis.start()  # without persistence: an empty server
    # The pool's connections died with the old server; the first call reconnects by itself.
    assert store.get_ven("007") is None
    store.put_ven(make_ven("009"))
    assert store.get_ven("009")["ven_id"] == "009"
    with store.atomic():  # no lock token or half-done block survived the outage
        store.push_outbox("009", make_item(1, name="after"))
    assert store.pop_outbox("009")["payload"]["name"] == "after"
    assert store.record_seen("009", T0, T0, T0) is not None
    store.close()


def test_the_server_dying_inside_a_block_fails_the_block_and_nothing_sticks(private_redis):
    store = open_store(private_redis.uri(socket_timeout=1, socket_connect_timeout=1))
    with quick(), pytest.raises(StoreError):
        with store.atomic():
            store.put_ven(make_ven("007"))
            private_redis.stop()
            store.get_ven("008")
    with quick(), pytest.raises(StoreError):
        with store.atomic():  # a block that only writes: its commit reaches the dead server
            store.push_outbox("007", make_item(1))
    private_redis.start()
    with store.atomic():
        store.put_ven(make_ven("after"))
    assert [v["ven_id"] for v in store.list_vens()] == ["after"]
    store.close()


def test_a_hung_server_times_out_instead_of_hanging(private_redis):
    store = open_store(private_redis.uri(socket_timeout=0.5, socket_connect_timeout=0.5))
    store.put_ven(make_ven("007"))
    os.kill(private_redis.process.pid, signal.SIGSTOP)
    try:
        with quick(), pytest.raises(StoreError) as raised:
            store.get_ven("007")
        assert isinstance(raised.value.__cause__, redis.TimeoutError)
    finally:
        os.kill(private_redis.process.pid, signal.SIGCONT)
    assert store.get_ven("007")["ven_id"] == "007"
    store.close()


def test_a_vtn_answers_503_while_redis_is_down_and_recovers(persistent_redis, tmp_path, caplog):
    private_redis = persistent_redis
    app = Flask("redis_outage_app", instance_path=str(tmp_path / "instance"))
    app.config.update(
        TESTING=True,
        OPENADR_STORE_URI=private_redis.uri(socket_timeout=1, socket_connect_timeout=1),
        OPENADR_VTN_ID="TEST-VTN",
    )
    vtn = VTN(app)
    ven = VENTestClient(app.test_client(), ven_name="ven-one")
    name, reply = ven.register()
    assert reply["response"]["response_code"] == 200
    name, reply = ven.poll()
    assert name == "oadrRegisterReport"

    private_redis.stop()
    caplog.set_level(logging.ERROR, logger="flask_openadr")
    with quick():
        response = ven.post("OadrPoll", codec.encode("oadrPoll", {"ven_id": ven.ven_id}))
    assert response.status_code == 503
    store_errors = [r for r in caplog.records if "store unavailable" in r.getMessage()]
    assert store_errors and store_errors[0].exc_info[0] is StoreError
    assert "s3cret" not in caplog.text

    private_redis.start()  # appendonly: the VEN's registration survived the restart
    name, reply = ven.poll()
    assert name == "oadrResponse" and reply["response"]["response_code"] == 200
    with app.app_context():
        assert [v["ven_id"] for v in vtn.store.list_vens()] == [ven.ven_id]


def test_several_vens_through_a_redis_outage_lose_nothing(persistent_redis, tmp_path):
    from tests.support.outage import outage_app, several_vens_through_an_outage

    app = outage_app(tmp_path, persistent_redis.uri(socket_timeout=1, socket_connect_timeout=1))
    several_vens_through_an_outage(app, persistent_redis.stop, persistent_redis.start)


def test_an_empty_poll_is_three_round_trips(store, monkeypatch):
    # The VEN (authentication), record_seen and get_poll_state: one command each.
    from flask_openadr.config import Settings
    from flask_openadr.services import handle
    from flask_openadr.services.context import Context

    store.put_ven({"ven_id": "007", "registration_id": "reg-007", "report_only": False,
                   "group_ids": [], "resource_ids": [], "party_ids": []})
    ctx = Context(settings=Settings(), store=store, clock=lambda: T0)
    handle(ctx, "OadrPoll", "oadrPoll", {"ven_id": "007"})  # loads the scripts
    sent = count_commands(store, monkeypatch)
    outcome = handle(ctx, "OadrPoll", "oadrPoll", {"ven_id": "007"})
    assert outcome.payload_name == "oadrResponse"
    assert sent == ["HMGET", "EVALSHA", "EVALSHA"]
