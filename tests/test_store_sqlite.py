"""What the SQLite store does beyond the conformance suite (tests/test_store.py): its connection
settings, its file layout and the refusal of others, connections per thread and across fork,
the WAL, and the statements and query plans of the paths every VEN message takes."""
from __future__ import annotations

import multiprocessing
import os
import sqlite3
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from flask_openadr.errors import StoreError
from flask_openadr.store import open_store, serialize
from flask_openadr.store.base import NonceUsed, utc_text
from flask_openadr.store.sqlite import (
    JOURNAL_SIZE_LIMIT,
    SCHEMA_VERSION,
    SQLiteStore,
    _NEXT_OUT,
    _POLL_STATE,
)
from tests.support.forking import in_child, wait_for_child

UTC = timezone.utc
T0 = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
SECOND = timedelta(seconds=1)
TTL = timedelta(seconds=30)
LEASE = timedelta(seconds=60)

fork_only = pytest.mark.skipif(
    "fork" not in multiprocessing.get_all_start_methods(), reason="needs fork()"
)


def make_ven(ven_id="007", **fields):
    return {"ven_id": ven_id, "registration_id": f"reg-{ven_id}", "fingerprint": None, **fields}


def seen(store, ven_id, at=T0, **nonce):
    return store.record_seen(ven_id, at, at + TTL, at + LEASE, **nonce)


@pytest.fixture
def sqlite_store(tmp_path):
    opened = open_store(f"sqlite:///{tmp_path / 'vtn.sqlite'}")
    yield opened
    opened.close()


def connection_of(store):
    return store.backend.connection().sqlite


def _statements(store, call):
    """The SQL statements (with their values) that call() runs on this thread's connection."""
    connection = connection_of(store)
    statements = []
    connection.set_trace_callback(statements.append)
    try:
        call()
    finally:
        connection.set_trace_callback(None)
    return statements


def _names(path):
    raw = sqlite3.connect(path)
    try:
        return (raw.execute("PRAGMA user_version").fetchone()[0],
                {row[0] for row in raw.execute("SELECT name FROM sqlite_master")})
    finally:
        raw.close()


# -- settings and layout -------------------------------------------------------------------------


def test_sqlite_connection_settings_and_schema(sqlite_store):
    sqlite_store.get_ven("007")
    connection = connection_of(sqlite_store)
    pragma = lambda name: connection.execute(f"PRAGMA {name}").fetchone()[0]  # noqa: E731
    assert pragma("journal_mode") == "wal"
    assert pragma("synchronous") == 1  # NORMAL
    assert pragma("busy_timeout") == 30000
    assert pragma("foreign_keys") == 1
    assert pragma("journal_size_limit") == JOURNAL_SIZE_LIMIT
    assert pragma("user_version") == SCHEMA_VERSION == 4
    names = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
    assert {"store_rows", "store_rows_scan", "store_index", "store_index_due"} <= names


def test_sqlite_create_schema_makes_the_tables_before_any_other_call(tmp_path):
    path = tmp_path / "vtn.sqlite"
    store = SQLiteStore(str(path))
    store.create_schema()
    store.create_schema()
    store.close()
    version, names = _names(path)
    assert version == SCHEMA_VERSION
    assert {"store_rows", "store_index"} <= names
    raw = sqlite3.connect(path)
    try:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        raw.close()


def test_sqlite_stores_the_rules_rows_and_index(sqlite_store):
    # The layout the docs describe: the rules' tables are values of tbl; the due index by score.
    seen(sqlite_store, "007")
    sqlite_store.put_ven(make_ven("007"))
    raw = connection_of(sqlite_store)
    assert raw.execute("SELECT tbl, key, part, version FROM store_rows ORDER BY tbl").fetchall() \
        == [("liveness", "007", "", 1), ("vens", "007", "", 1)]
    assert raw.execute("SELECT idx, member, score FROM store_index ORDER BY idx").fetchall() == [
        ("liveness_due", "007", utc_text(T0 + TTL, "offline_at")),
        ("liveness_stale", "007", utc_text(T0 + LEASE, "lease_until")),
    ]


def test_sqlite_refuses_a_database_from_a_newer_version(tmp_path):
    path = tmp_path / "vtn.sqlite"
    with sqlite3.connect(path) as raw:
        raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    raw.close()
    store = open_store(f"sqlite:///{path}")
    with pytest.raises(StoreError, match=f"schema version {SCHEMA_VERSION + 1}.*newer"):
        store.get_ven("007")


@pytest.mark.parametrize("old_version", [1, 2, 3])
def test_sqlite_refuses_a_file_of_the_old_layout_and_leaves_it_untouched(tmp_path, old_version):
    # The layout before the store was built on the rules: a table per kind of record (in WAL
    # mode, as that store left its files).
    path = tmp_path / "vtn.sqlite"
    raw = sqlite3.connect(path, isolation_level=None)
    raw.execute("PRAGMA journal_mode = WAL")
    raw.execute("CREATE TABLE vens (ven_id TEXT PRIMARY KEY, fingerprint TEXT, data TEXT)")
    raw.execute("INSERT INTO vens VALUES (?, NULL, ?)", ("007", serialize.dumps(make_ven())))
    raw.execute(f"PRAGMA user_version = {old_version}")
    raw.close()
    before = path.read_bytes()
    store = open_store(f"sqlite:///{path}")
    for call in (lambda: store.get_ven("007"), store.create_schema):
        with pytest.raises(StoreError) as raised:
            call()
        message = str(raised.value)
        assert f"schema version {old_version}" in message and str(path) in message
        assert "does not read" in message and "move the file away" in message
    store.close()
    version, names = _names(path)
    assert version == old_version
    assert "store_rows" not in names and "vens" in names
    assert path.read_bytes() == before


# -- errors and waiting --------------------------------------------------------------------------


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
    store.put_ven(make_ven("008"))
    seen(store, "008")  # online: its next record_seen takes the one-transaction fast path
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        for write in (lambda: store.put_ven(make_ven("007")), lambda: seen(store, "007"),
                      lambda: seen(store, "008", T0 + SECOND)):
            with pytest.raises(StoreError, match="locked") as raised:
                write()
            assert isinstance(raised.value.__cause__, sqlite3.OperationalError)
            assert not connection_of(store).in_transaction  # nothing left open
        assert store.get_ven("007") is None  # readers do not wait (WAL)
        assert store.get_liveness("008")["last_seen"] == T0
    finally:
        other.execute("ROLLBACK")
        other.close()
    store.put_ven(make_ven("007"))  # and it recovers
    assert store.get_ven("007") is not None
    seen(store, "008", T0 + 2 * SECOND)
    assert store.get_liveness("008")["last_seen"] == T0 + 2 * SECOND
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
        assert connection_of(store).execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        release.join()
        other.close()
        store.close()


# -- connections ---------------------------------------------------------------------------------


def test_sqlite_has_one_connection_per_thread(sqlite_store):
    mine = sqlite_store.backend.connection()
    assert sqlite_store.backend.connection() is mine
    theirs = []
    thread = threading.Thread(target=lambda: theirs.append(sqlite_store.backend.connection()))
    thread.start()
    thread.join()
    assert theirs[0] is not mine and theirs[0].sqlite is not mine.sqlite


def test_sqlite_closes_the_connections_of_ended_threads(sqlite_store):
    ended = []
    thread = threading.Thread(target=lambda: ended.append(connection_of(sqlite_store)))
    thread.start()
    thread.join()
    ended[0].execute("SELECT 1")  # still open: nothing has pruned it yet
    thread = threading.Thread(target=sqlite_store.backend.connection)  # a new one prunes
    thread.start()
    thread.join()
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        ended[0].execute("SELECT 1")


def test_sqlite_close_closes_this_processes_connections(sqlite_store):
    connection = connection_of(sqlite_store)
    sqlite_store.close()
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        connection.execute("SELECT 1")
    assert connection_of(sqlite_store) is not connection


@fork_only
def test_sqlite_child_of_fork_never_uses_the_parents_connection(sqlite_store):
    sqlite_store.put_ven(make_ven("parent"))
    parent_connection = connection_of(sqlite_store)
    used_by = []
    parent_connection.set_trace_callback(lambda statement: used_by.append(os.getpid()))

    def child():
        sqlite_store.put_ven(make_ven("child"))
        assert sqlite_store.get_ven("parent") is not None
        assert connection_of(sqlite_store) is not parent_connection
        sqlite_store.close()
        assert os.getpid() not in used_by, "the child ran statements on the parent's connection"

    pid = os.fork()
    if pid == 0:
        in_child(child)
    assert wait_for_child(pid) == 0
    # The parent's connection is still its own, open, and sees what the child wrote.
    assert connection_of(sqlite_store) is parent_connection
    assert sqlite_store.get_ven("child") is not None


# -- nonces and the WAL --------------------------------------------------------------------------


def _nonces(store):
    raw = connection_of(store)
    rows = [key for (key,) in raw.execute("SELECT key FROM store_rows WHERE tbl = 'nonces'")]
    index = [member for (member,) in raw.execute(
        "SELECT member FROM store_index WHERE idx = 'nonce_expiry'")]
    assert sorted(rows) == sorted(index), "a nonce without its index entry, or the reverse"
    return sorted(rows)


def test_sqlite_maintain_purges_expired_nonces_and_keeps_the_others(sqlite_store):
    for i in range(30):
        seen(sqlite_store, "007", T0, nonce=f"old-{i}", nonce_expires_at=T0 + 10 * SECOND)
    seen(sqlite_store, "008", T0, nonce="new", nonce_expires_at=T0 + 20 * SECOND)
    assert len(_nonces(sqlite_store)) == 31  # record_seen takes nonces, never purges them
    sqlite_store.maintain(T0 + 10 * SECOND)
    assert _nonces(sqlite_store) == ["new"]
    with pytest.raises(NonceUsed):
        seen(sqlite_store, "008", T0 + 11 * SECOND, nonce="new",
             nonce_expires_at=T0 + 20 * SECOND)


def test_sqlite_remember_nonce_purges_a_few_expired_nonces_as_it_goes(sqlite_store):
    for i in range(25):
        assert sqlite_store.remember_nonce(f"old-{i}", T0, T0 + 10 * SECOND)
    for i in range(3):  # each removes up to ten expired ones
        assert sqlite_store.remember_nonce(f"new-{i}", T0 + 10 * SECOND, T0 + 20 * SECOND)
    assert _nonces(sqlite_store) == ["new-0", "new-1", "new-2"]


def test_sqlite_sets_a_journal_size_limit_and_maintain_truncates_the_wal(sqlite_store):
    connection = connection_of(sqlite_store)
    assert connection.execute("PRAGMA journal_size_limit").fetchone()[0] == JOURNAL_SIZE_LIMIT
    # A reader holding a snapshot keeps SQLite's automatic checkpoints from resetting the WAL.
    reader = sqlite3.connect(sqlite_store.path, isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM store_rows").fetchone()
    for i in range(300):
        sqlite_store.put_ven(make_ven(f"ven-{i}") | {"ven_name": "x" * 2000})
    wal = Path(sqlite_store.path + "-wal")
    assert wal.stat().st_size > 1024 * 1024
    sqlite_store.maintain()  # the reader is still there: it gives up, quickly
    assert connection.execute("PRAGMA busy_timeout").fetchone()[0] == 30000  # restored
    assert wal.stat().st_size > 1024 * 1024
    reader.execute("COMMIT")
    reader.close()
    sqlite_store.maintain()
    assert wal.stat().st_size == 0
    assert len(sqlite_store.list_vens()) == 300  # nothing lost


def test_sqlite_maintain_refuses_to_run_inside_a_block(sqlite_store):
    with sqlite_store.atomic():
        with pytest.raises(RuntimeError, match="outside atomic"):
            sqlite_store.maintain(T0)


# -- statements of the poll path -----------------------------------------------------------------


def test_sqlite_record_seen_of_an_online_ven_is_two_updates_in_one_transaction(sqlite_store):
    seen(sqlite_store, "007")
    statements = _statements(sqlite_store, lambda: seen(sqlite_store, "007", T0 + SECOND))
    assert [s.split()[:2] for s in statements] == [
        ["BEGIN", "IMMEDIATE"], ["UPDATE", "store_rows"], ["UPDATE", "store_index"],
        ["COMMIT"]], statements
    # And both took effect: the row, and the due entry the sweep reads.
    assert sqlite_store.get_liveness("007")["offline_at"] == T0 + SECOND + TTL
    assert sqlite_store.due_offline(T0 + TTL, 10) == []
    assert sqlite_store.due_offline(T0 + SECOND + TTL, 10) == [("007", 1)]


def test_sqlite_an_empty_poll_is_four_statements_and_one_write_transaction(sqlite_store):
    # The store calls of a poll that finds nothing to send (services/poll.py): the VEN, its
    # liveness update, its poll state. Before the store was on the rules: five statements
    # (three poll-state reads, and the liveness UPDATE without BEGIN).
    sqlite_store.put_ven(make_ven("007"))
    seen(sqlite_store, "007")
    sqlite_store.set_delivered("007", {"event-1": 0})

    def poll():
        sqlite_store.get_ven("007")
        seen(sqlite_store, "007", T0 + SECOND)
        sqlite_store.get_poll_state("007", "report_request")

    statements = _statements(sqlite_store, poll)
    work = [s for s in statements if not s.startswith(("BEGIN", "COMMIT"))]
    assert len(work) == 4 and len(statements) == 6, statements
    assert [s.split()[0] for s in statements].count("BEGIN") == 1, statements


def test_sqlite_record_seen_with_a_nonce_is_one_transaction(sqlite_store):
    seen(sqlite_store, "007")
    statements = _statements(sqlite_store, lambda: seen(
        sqlite_store, "007", T0 + SECOND, nonce="n", nonce_expires_at=T0 + TTL))
    verbs = [s.split()[0] for s in statements]
    assert verbs == ["BEGIN", "INSERT", "INSERT", "UPDATE", "UPDATE", "COMMIT"], statements
    assert "'nonces'" in statements[1] and "'nonce_expiry'" in statements[2], statements
    before = sqlite_store.get_liveness("007")
    statements = _statements(sqlite_store, lambda: pytest.raises(NonceUsed, lambda: seen(
        sqlite_store, "007", T0 + 2 * SECOND, nonce="n", nonce_expires_at=T0 + TTL)))
    verbs = [s.split()[0] for s in statements]
    assert verbs == ["BEGIN", "INSERT", "ROLLBACK"], statements  # the INSERT changed no row
    assert sqlite_store.get_liveness("007") == before


# -- query plans ---------------------------------------------------------------------------------


def _plan(connection, statement, params=()):
    return [row[3] for row in connection.execute("EXPLAIN QUERY PLAN " + statement, params)]


def _vm_steps(connection, call):
    steps = []
    connection.set_progress_handler(lambda: steps.append(1), 1)
    try:
        result = call()
    finally:
        connection.set_progress_handler(None, 1)
    return result, len(steps)


def _crowd(store, count=3000):
    """Many VENs the sweeps must not touch (online and not due, offline, nothing pending), with
    records and outbox items of their own, and three due VENs."""
    with store.atomic():
        for i in range(count):
            ven_id = f"quiet-{i:04d}"
            store.record_seen(ven_id, T0, T0 + timedelta(days=1), T0 + LEASE)
            store.complete_transition(ven_id, 1)
            store.put_record("report_request", ven_id, "r", {"n": i})
            store.push_outbox(ven_id, {"priority": 1, "payload_name": "x", "payload": {}})
            if i % 2:
                store.claim_offline(ven_id, 1, T0 + timedelta(days=1), T0)
                store.complete_transition(ven_id, 2)
        for i in range(3):
            store.record_seen(f"due-{i}", T0, T0, T0)


def test_sqlite_liveness_sweeps_read_only_their_index_range(sqlite_store):
    _crowd(sqlite_store)
    connection = connection_of(sqlite_store)
    connection.execute("ANALYZE")  # the plans must hold with statistics as well as without
    for sweep in (lambda: sqlite_store.due_offline(T0, 10),
                  lambda: sqlite_store.stale_transitions(T0, 10)):
        statements = _statements(sqlite_store, sweep)
        assert statements[0].startswith("SELECT member, score FROM store_index"), statements
        if "?" in statements[0]:  # pragma: no cover - Pythons that trace statements unexpanded
            pytest.skip("this sqlite3 module traces statements without their values")
        plan = _plan(connection, statements[0])
        assert len(plan) == 1 and "USING COVERING INDEX store_index_due (" in plan[0], plan
        assert plan[0].startswith("SEARCH"), plan  # a range of the index, no scan, no sorting
        # And the cost follows the rows returned: count the VM steps of the whole sweep.
        found, steps = _vm_steps(connection, sweep)
        assert len(found) == 3
        assert steps < 400, f"{steps} VM steps for 3 rows of 3003"


@pytest.mark.parametrize("analyzed", [False, True])
def test_sqlite_poll_reads_use_the_keys_and_partitions(sqlite_store, analyzed):
    # Without statistics too: a VTN's file never has any (no ANALYZE runs on it), and SQLite
    # then planned a partition's read as a range of the primary key, every VEN's rows.
    _crowd(sqlite_store)
    connection = connection_of(sqlite_store)
    if analyzed:
        connection.execute("ANALYZE")
    partition = '["report_request","quiet-0007"]'
    for statement, params in [(_POLL_STATE, ("quiet-0007", partition)),
                              (_NEXT_OUT, ("quiet-0007",))]:
        plan = _plan(connection, statement, params)
        assert not any(step.startswith("SCAN") for step in plan), plan
        assert not any("USING PRIMARY KEY (tbl=?)" in step for step in plan), plan
    state, steps = _vm_steps(connection, lambda: sqlite_store.get_poll_state(
        "quiet-0007", "report_request"))
    assert state["records"] == [{"n": 7}] and len(state["outbox"]) == 1
    assert steps < 200, f"{steps} VM steps for one VEN's poll state among 3003"
    item, steps = _vm_steps(connection, lambda: sqlite_store.pop_outbox("quiet-0007"))
    assert item is not None and steps < 200, steps


def test_sqlite_replayed_nonce_of_an_online_ven_writes_nothing(sqlite_store):
    sqlite_store.put_ven(make_ven("007"))
    seen(sqlite_store, "007", T0)  # online: later calls take the one-transaction path
    seen(sqlite_store, "007", T0 + SECOND, nonce="n-1", nonce_expires_at=T0 + 60 * SECOND)
    before = sqlite_store.get_liveness("007")
    with pytest.raises(NonceUsed):
        seen(sqlite_store, "007", T0 + 2 * SECOND, nonce="n-1",
             nonce_expires_at=T0 + 62 * SECOND)
    assert sqlite_store.get_liveness("007") == before  # the liveness update rolled back
    assert _nonces(sqlite_store) == ["n-1"]
    assert not connection_of(sqlite_store).in_transaction
    # A fresh nonce goes through, with its expiry entry.
    seen(sqlite_store, "007", T0 + 3 * SECOND, nonce="n-2", nonce_expires_at=T0 + 63 * SECOND)
    assert sqlite_store.get_liveness("007")["last_seen"] == T0 + 3 * SECOND
    assert _nonces(sqlite_store) == ["n-1", "n-2"]
