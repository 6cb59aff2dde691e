"""The SQL store's own behaviour: URI forms, schema, query plans, locking, fork and outages.

The conformance suite (tests/test_store.py) runs against PostgreSQL too; this file covers what
only the SQL backend has. Tests that need the PostgreSQL at 127.0.0.1:5432 skip without it
(and fail with CI=true); the outage tests run a private PostgreSQL of their own.
"""
from __future__ import annotations

import gc
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import traceback
from datetime import datetime, timedelta, timezone

import pytest

from flask_openadr.errors import ConfigurationError, StoreError
from flask_openadr.store import open_store
from tests.support.backends import postgresql_uri, require_server

sa = pytest.importorskip("sqlalchemy")
from flask_openadr.store.sqlalchemy import SCHEMA_VERSION, SQLStore, _Features  # noqa: E402

UTC = timezone.utc
T0 = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
SECOND = timedelta(seconds=1)
TTL = timedelta(seconds=30)
LEASE = timedelta(seconds=60)


def make_ven(ven_id="007", **fields):
    ven = {"ven_id": ven_id, "registration_id": f"reg-{ven_id}", "fingerprint": None,
           "registered_at": T0, "poll_frequency": timedelta(seconds=10)}
    ven.update(fields)
    return ven


def make_event(event_id, **fields):
    return {"event_descriptor": {"event_id": event_id, "modification_number": 0}, **fields}


def make_item(priority, name):
    return {"priority": priority, "payload_name": "oadrDistributeEvent", "payload": {"n": name}}


@pytest.fixture
def pg_uri(tmp_path):
    return postgresql_uri(tmp_path)


@pytest.fixture
def pg_store(pg_uri):
    store = open_store(pg_uri)
    yield store
    store.close()


def statements_of(store, call):
    """The SQL statements call() sends through this process's engine."""
    engine = store._engine()
    sent = []

    def record(conn, cursor, statement, parameters, context, executemany):
        sent.append(statement)

    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        call()
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)
    return sent


# -- URI forms (no server needed) ----------------------------------------------------------------


@pytest.mark.parametrize(
    "uri",
    [
        "postgresql://vtn:s3cret@db.example:5432/openadr",
        "postgres://vtn:s3cret@db.example:5432/openadr",
        "postgresql+psycopg://vtn:s3cret@db.example:5432/openadr",
        "POSTGRESQL://vtn:s3cret@db.example:5432/openadr",
    ],
)
def test_postgresql_uri_forms_open_a_psycopg_store_without_connecting(uri):
    store = open_store(uri)
    assert isinstance(store, SQLStore)
    assert store.url.drivername == "postgresql+psycopg"
    assert (store.url.host, store.url.port, store.url.database) == ("db.example", 5432, "openadr")
    assert store.table_prefix == "openadr_"
    assert store.tables.vens.name == "openadr_vens"
    assert "s3cret" not in repr(store) and "s3cret" not in store.uri
    assert not store._engines  # nothing connects before the first call


def test_table_prefix_is_taken_out_of_the_url_and_other_options_reach_the_driver():
    store = open_store(
        "postgresql://vtn@db.example/openadr?table_prefix=vtn2_&connect_timeout=3&sslmode=require"
    )
    assert store.table_prefix == "vtn2_"
    assert dict(store.url.query) == {"connect_timeout": "3", "sslmode": "require"}
    assert {table.name for table in store.tables.metadata.sorted_tables} == {
        f"vtn2_{name}" for name in ("meta", "vens", "events", "delivered", "event_responses",
                                    "outbox", "records", "liveness", "nonces")
    }


@pytest.mark.parametrize(
    "prefix", ["", "Upper_", "1st_", "with-dash_", "x" * 31, "a;drop table vens;--"]
)
def test_a_bad_table_prefix_is_refused(prefix):
    with pytest.raises(ConfigurationError, match="table_prefix") as raised:
        open_store(f"postgresql://vtn:s3cret@h/db?table_prefix={prefix}")
    assert "s3cret" not in str(raised.value)


def test_pool_options_size_the_pool_of_each_process():
    store = open_store("postgresql://h/db?pool_size=20&max_overflow=0&pool_timeout=2.5&x=1")
    assert dict(store.url.query) == {"x": "1"}
    pool = store._engine().pool
    assert (pool.size(), pool._max_overflow, pool._timeout) == (20, 0, 2.5)
    for bad in ("pool_size=big", "max_overflow=-1", "pool_timeout=soon", "pool_size=1&pool_size=2"):
        with pytest.raises(ConfigurationError, match=bad.partition("=")[0]):
            open_store(f"postgresql://h/db?{bad}")


def test_a_table_prefix_given_twice_is_refused():
    with pytest.raises(ConfigurationError, match="table_prefix"):
        open_store("postgresql://h/db?table_prefix=a_&table_prefix=b_")


def test_any_sqlalchemy_url_opens_the_sql_store(tmp_path):
    # SQLite through SQLAlchemy (not the native sqlite:// store): the generic registry entry.
    store = open_store(f"sqlite+pysqlite:///{tmp_path / 'sqla.sqlite'}")
    try:
        assert isinstance(store, SQLStore) and store.backend == "sqlite"
        store.put_ven(make_ven("007"))
        assert store.get_ven("007") == make_ven("007")
    finally:
        store.close()


def test_a_missing_driver_names_the_extra_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "psycopg", None)  # import psycopg now fails
    with pytest.raises(ConfigurationError) as raised:
        open_store("postgresql://vtn:s3cret@db.example/openadr")
    message = str(raised.value)
    assert 'pip install "flask-openadr[sqlalchemy]"' in message
    assert "postgresql+psycopg" in message and "vtn:***@db.example" in message
    assert "s3cret" not in message


def test_a_missing_driver_of_another_database_is_named():
    if _module_available("pymysql"):  # pragma: no cover - only where PyMySQL is installed
        pytest.skip("PyMySQL is installed here")
    with pytest.raises(ConfigurationError, match="pymysql") as raised:
        open_store("mysql+pymysql://vtn:s3cret@db.example/openadr")
    assert "vtn:***@db.example" in str(raised.value) and "s3cret" not in str(raised.value)


def _module_available(name):
    import importlib.util

    return importlib.util.find_spec(name) is not None


def test_missing_sqlalchemy_names_the_extra_to_install():
    # A fresh interpreter in which SQLAlchemy cannot be imported.
    code = textwrap.dedent(
        """
        import sys
        sys.modules["sqlalchemy"] = None
        from flask_openadr.errors import ConfigurationError
        from flask_openadr.store import open_store
        try:
            open_store("postgresql://vtn:s3cret@db.example/openadr")
        except ConfigurationError as exc:
            print(exc)
        else:
            print("no error")
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert done.returncode == 0, done.stderr
    assert "needs SQLAlchemy" in done.stdout
    assert 'pip install "flask-openadr[sqlalchemy]"' in done.stdout
    assert "s3cret" not in done.stdout


@pytest.mark.parametrize("uri", ["mongodb://db.example/vtn", "nosuchdb+driver://h/x"])
def test_an_unknown_scheme_is_refused_with_the_choices(uri):
    with pytest.raises(ConfigurationError, match="unsupported store URI") as raised:
        open_store(uri)
    for mentioned in ("memory://", "sqlite://", "postgresql://", "SQLAlchemy"):
        assert mentioned in str(raised.value)


def test_an_asyncio_driver_is_refused():
    with pytest.raises(ConfigurationError, match="asyncio"):
        open_store("postgresql+asyncpg://vtn@db.example/openadr")


@pytest.mark.parametrize(
    "uri", ["postgresql://vtn:s3cret@db.example:notaport/x", "postgresql://vtn:s3cret@[::1/x"]
)
def test_a_malformed_url_is_refused_without_showing_the_password(uri):
    with pytest.raises(ConfigurationError, match="not a database URL") as raised:
        open_store(uri)
    assert "s3cret" not in str(raised.value)


def test_an_unreachable_server_is_a_store_error_naming_the_uri_without_the_password():
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    store = open_store(f"postgresql://vtn:s3cret@127.0.0.1:{port}/openadr?connect_timeout=2")
    started = time.monotonic()
    with pytest.raises(StoreError) as raised:
        store.get_ven("007")
    assert time.monotonic() - started < 5
    message = str(raised.value)
    assert f"postgresql://vtn:***@127.0.0.1:{port}/openadr" in message
    assert "unreachable" in message and "s3cret" not in message
    assert isinstance(raised.value.__cause__, sa.exc.OperationalError)
    with pytest.raises(StoreError):
        with store.atomic():
            pass  # pragma: no cover - the block never starts
    store.close()


# -- schema --------------------------------------------------------------------------------------


def _table_names(store):
    with store._engine().connect() as connection:
        return set(sa.inspect(connection).get_table_names())


def test_create_schema_is_idempotent_and_makes_every_table_and_index(pg_store):
    prefix = pg_store.table_prefix
    assert not any(name.startswith(prefix) for name in _table_names(pg_store))
    pg_store.create_schema()
    pg_store.create_schema()
    with pg_store._engine().connect() as connection:
        inspector = sa.inspect(connection)
        names = {name for name in inspector.get_table_names() if name.startswith(prefix)}
        indexes = {
            index["name"]: index
            for table in names
            for index in inspector.get_indexes(table)
        }
        version = connection.execute(
            sa.text(f"SELECT value FROM {prefix}meta WHERE name = 'schema_version'")
        ).scalar()
    assert names == {table.name for table in pg_store.tables.metadata.sorted_tables}
    assert {f"{prefix}liveness_due", f"{prefix}liveness_stale", f"{prefix}outbox_next",
            f"{prefix}vens_fingerprint", f"{prefix}event_responses_event"} <= set(indexes)
    where = indexes[f"{prefix}liveness_due"]["dialect_options"]["postgresql_where"]
    assert "online" in str(where)
    assert version == SCHEMA_VERSION


def test_first_use_creates_the_schema(pg_uri):
    store = open_store(pg_uri)
    try:
        assert store.get_ven("007") is None
        assert f"{store.table_prefix}liveness" in _table_names(store)
    finally:
        store.close()


def test_stores_created_at_once_in_threads_all_find_one_schema(pg_uri):
    stores = [open_store(pg_uri) for _ in range(4)]
    barrier = threading.Barrier(len(stores))
    errors = []

    def first_use(store, index):
        try:
            barrier.wait(10)
            store.put_ven(make_ven(f"ven-{index}"))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=first_use, args=(s, i)) for i, s in enumerate(stores)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    try:
        assert not errors, errors
        assert [v["ven_id"] for v in stores[0].list_vens()] == [f"ven-{i}" for i in range(4)]
    finally:
        for store in stores:
            store.close()


def test_version_1_tables_get_the_nonces_table_and_keep_their_data(pg_uri):
    first = open_store(pg_uri)
    first.put_ven(make_ven("007"))
    with first._engine().begin() as connection:  # back to what version 1 wrote
        connection.execute(sa.text(f"DROP TABLE {first.table_prefix}nonces"))
        connection.execute(sa.text(
            f"UPDATE {first.table_prefix}meta SET value = 1 WHERE name = 'schema_version'"
        ))
    first.close()
    second = open_store(pg_uri)
    try:
        now = datetime.now(timezone.utc)
        assert second.remember_nonce("n", now, now + timedelta(seconds=60))
        assert not second.remember_nonce("n", now, now + timedelta(seconds=60))
        assert second.get_ven("007")["ven_id"] == "007"
        with second._engine().connect() as connection:
            version = connection.execute(sa.text(
                f"SELECT value FROM {second.table_prefix}meta WHERE name = 'schema_version'"
            )).scalar()
        assert version == SCHEMA_VERSION == 2
    finally:
        second.close()


def test_a_schema_from_a_newer_version_is_refused(pg_uri):
    first = open_store(pg_uri)
    first.create_schema()
    with first._engine().begin() as connection:
        connection.execute(sa.text(
            f"UPDATE {first.table_prefix}meta SET value = 99 WHERE name = 'schema_version'"
        ))
    first.close()
    second = open_store(pg_uri)
    try:
        with pytest.raises(StoreError, match="schema version 99"):
            second.get_ven("007")
    finally:
        second.close()


# -- statements and query plans ------------------------------------------------------------------


def test_record_seen_is_one_statement_without_a_transaction(pg_store):
    pg_store.record_seen("007", T0, T0 + TTL, T0 + LEASE)
    for _ in range(2):  # going online, then staying online: the same single statement
        sent = statements_of(
            pg_store, lambda: pg_store.record_seen("007", T0, T0 + TTL, T0 + LEASE)
        )
        assert len(sent) == 1, sent
        assert sent[0].startswith("INSERT INTO") and "ON CONFLICT" in sent[0]
        assert "RETURNING" in sent[0]
        pg_store.claim_offline("007", pg_store.get_liveness("007")["epoch"], T0 + TTL, T0)


def test_pop_and_the_liveness_compare_and_sets_are_one_statement_each(pg_store):
    pg_store.push_outbox("007", make_item(1, "a"))
    pg_store.record_seen("007", T0, T0, T0)
    (pop,) = statements_of(pg_store, lambda: pg_store.pop_outbox("007"))
    assert pop.startswith("DELETE") and "FOR UPDATE SKIP LOCKED" in pop and "RETURNING" in pop
    for call in (
        lambda: pg_store.claim_offline("007", 1, T0, T0),
        lambda: pg_store.reclaim_transition("007", 2, T0, T0 + LEASE),
        lambda: pg_store.complete_transition("007", 2),
    ):
        (statement,) = statements_of(pg_store, call)
        assert statement.startswith("UPDATE"), statement


def _fill_liveness(store, count):
    """``count`` VENs the sweeps must not return (online but not due, offline, nothing
    pending), and three that they return."""
    store.create_schema()
    table = store.tables.liveness.name
    far = T0 + timedelta(days=1)
    with store._engine().begin() as connection:
        connection.execute(
            sa.text(
                f"INSERT INTO {table} (ven_id, state, epoch, last_seen, offline_at, "
                "went_online) SELECT 'quiet-' || i, CASE WHEN i % 2 = 0 THEN 'online' "
                "ELSE 'offline' END, 2, :t0, :far, false FROM generate_series(1, :count) AS i"
            ),
            {"t0": T0, "far": far, "count": count},
        )
        connection.execute(sa.text(f"ANALYZE {table}"))
    for i in range(3):
        store.record_seen(f"due-{i}", T0, T0, T0)


def _explain(store, query, generic=False):
    """EXPLAIN (ANALYZE) of a query as the store would send it; with ``generic``, the generic
    plan a prepared statement falls back to, which cannot see the parameter values."""
    dialect = store._engine().dialect
    compiled = query.compile(dialect=dialect)
    with store._engine().connect() as connection:
        if not generic:
            rows = connection.exec_driver_sql(
                "EXPLAIN (ANALYZE, COSTS OFF) " + compiled.string, compiled.params
            ).all()
            return "\n".join(row[0] for row in rows)
        names = list(compiled.params)
        text = compiled.string
        for number, name in enumerate(names, 1):
            text = text.replace(f"%({name})s", f"${number}")
        connection.exec_driver_sql("SET plan_cache_mode = force_generic_plan")
        connection.exec_driver_sql(f"PREPARE sweep AS {text}")
        values = ", ".join(
            f"'{value.isoformat()}'::timestamptz" if isinstance(value, datetime) else str(value)
            for value in compiled.params.values()
        )
        rows = connection.exec_driver_sql(f"EXPLAIN (COSTS OFF) EXECUTE sweep({values})").all()
        connection.exec_driver_sql("DEALLOCATE sweep")
        connection.exec_driver_sql("RESET plan_cache_mode")
        return "\n".join(row[0] for row in rows)


@pytest.mark.parametrize("generic", [False, True], ids=["custom-plan", "generic-plan"])
def test_liveness_sweeps_read_only_their_partial_index(pg_store, generic):
    _fill_liveness(pg_store, 20000)
    prefix = pg_store.table_prefix
    for query, index in [
        (pg_store._due_offline_query(T0, 10), f"{prefix}liveness_due"),
        (pg_store._stale_query(T0, 10), f"{prefix}liveness_stale"),
    ]:
        plan = _explain(pg_store, query, generic)
        assert f"Index Scan using {index}" in plan, plan
        assert "Seq Scan" not in plan and "Sort" not in plan, plan
        if not generic:
            assert "Rows Removed by Filter" not in plan, plan  # the index holds only candidates
    assert [v for v, _ in pg_store.due_offline(T0, 10)] == ["due-0", "due-1", "due-2"]
    assert [t["ven_id"] for t in pg_store.stale_transitions(T0, 10)] == [
        "due-0", "due-1", "due-2"
    ]


# -- writers, locks and the fallbacks for other databases ---------------------------------------


def _in_thread(call):
    done = threading.Event()
    result = {}

    def run():
        try:
            result["value"] = call()
        except BaseException as exc:  # pragma: no cover - reported by the caller
            result["error"] = exc
        finally:
            done.set()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, done, result


def test_writers_wait_for_a_block_but_liveness_and_pop_do_not(pg_uri):
    holder, other = open_store(pg_uri), open_store(pg_uri)  # two stores: as two processes
    other.push_outbox("007", make_item(1, "a"))
    other.record_seen("007", T0, T0, T0)
    try:
        with holder.atomic():
            holder.put_ven(make_ven("in-block"))
            # The compare-and-set calls are single statements that take no lock.
            for call in (
                lambda: other.record_seen("008", T0, T0, T0),
                lambda: other.claim_offline("007", 1, T0, T0),
                lambda: other.pop_outbox("007"),
                lambda: other.get_ven("in-block"),
            ):
                thread, done, result = _in_thread(call)
                assert done.wait(10), "a lock-free call waited for the block"
                thread.join()
                assert "error" not in result, result
            # A write outside a block is a block of its own: it waits.
            thread, done, result = _in_thread(lambda: other.put_ven(make_ven("after")))
            assert not done.wait(0.5), "a writer did not wait for the open block"
        assert done.wait(10)
        thread.join()
        assert "error" not in result, result
        assert [v["ven_id"] for v in other.list_vens()] == ["after", "in-block"]
    finally:
        holder.close()
        other.close()


def test_blocks_of_different_table_prefixes_do_not_wait_for_each_other(pg_uri):
    one = open_store(pg_uri)
    two = open_store(pg_uri.replace("table_prefix=", "table_prefix=x"))
    try:
        assert one._advisory_key != two._advisory_key
        with one.atomic():
            one.put_ven(make_ven("a"))
            thread, done, result = _in_thread(lambda: two.put_ven(make_ven("b")))
            assert done.wait(10), "a VTN with other tables waited for this one's block"
            thread.join()
    finally:
        from tests.support.backends import drop_postgresql_tables

        two.close()
        one.close()
        drop_postgresql_tables({two.table_prefix})


FALLBACKS = {
    "no-upsert": _Features(upsert=None, seen_in_one_statement=True, pop_in_one_statement=True),
    "no-returning": _Features(upsert="on_conflict", seen_in_one_statement=False,
                              pop_in_one_statement=False),
    "none": _Features(upsert=None, seen_in_one_statement=False, pop_in_one_statement=False),
}


@pytest.mark.parametrize("features", list(FALLBACKS.values()), ids=list(FALLBACKS))
def test_the_fallbacks_for_other_databases_behave_the_same(pg_store, features):
    # What a database without ON CONFLICT or RETURNING runs, here on PostgreSQL.
    pg_store._features = features
    for event_id in ["e2", "e1", "e3"]:
        pg_store.put_event(make_event(event_id))
    pg_store.put_event(make_event("e1", note="replaced"))
    assert [e["event_descriptor"]["event_id"] for e in pg_store.list_events()] == ["e2", "e1", "e3"]
    assert pg_store.get_event("e1")["note"] == "replaced"
    pg_store.put_ven(make_ven("007"))
    pg_store.put_ven(make_ven("007", registration_id=None))
    assert pg_store.get_ven("007")["registration_id"] is None
    for priority, name in [(2, "a"), (1, "b"), (1, "c")]:
        pg_store.push_outbox("007", make_item(priority, name))
    popped = [pg_store.pop_outbox("007", max_priority=1) for _ in range(3)]
    assert [item and item["payload"]["n"] for item in popped] == ["b", "c", None]
    assert pg_store.record_seen("007", T0, T0, T0 + LEASE)["epoch"] == 1
    assert pg_store.record_seen("007", T0 + SECOND, T0 + TTL, T0 + LEASE) is None
    assert pg_store.get_liveness("007")["offline_at"] == T0 + TTL
    assert pg_store.claim_offline("007", 1, T0 + TTL, T0 + LEASE)["epoch"] == 2
    assert pg_store.record_seen("007", T0 + TTL, T0 + 2 * TTL, T0 + 2 * LEASE) == {
        "ven_id": "007", "kind": "online", "epoch": 3,
    }
    assert pg_store.get_liveness("007")["pending"] == {
        "kind": "online", "epoch": 3, "lease_until": T0 + 2 * LEASE,
    }


def test_the_record_seen_fallback_makes_each_online_once_across_threads(pg_uri):
    stores = [open_store(pg_uri) for _ in range(4)]
    for store in stores:
        store._features = FALLBACKS["none"]
    ven_ids = [f"ven-{i:02d}" for i in range(40)]
    for ven_id in ven_ids:
        stores[0].record_seen(ven_id, T0, T0, T0)
        stores[0].claim_offline(ven_id, 1, T0, T0)
    barrier = threading.Barrier(len(stores))
    won, errors = [], []

    def see(store):
        try:
            barrier.wait(10)
            for ven_id in ven_ids:
                if store.record_seen(ven_id, T0 + TTL, T0 + 2 * TTL, T0 + LEASE):
                    won.append(ven_id)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=see, args=(store,)) for store in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    try:
        assert not errors, errors
        assert sorted(won) == ven_ids
    finally:
        for store in stores:
            store.close()


def test_sqlite_through_sqlalchemy_runs_the_liveness_and_outbox_statements(tmp_path):
    store = open_store(f"sqlite+pysqlite:///{tmp_path / 'sqla.sqlite'}")
    try:
        assert store.record_seen("007", T0, T0, T0 + LEASE) == {
            "ven_id": "007", "kind": "online", "epoch": 1,
        }
        liveness = store.get_liveness("007")
        assert liveness["last_seen"] == T0 and liveness["last_seen"].tzinfo == UTC
        assert store.due_offline(T0, 10) == [("007", 1)]
        assert store.claim_offline("007", 1, T0, T0)["epoch"] == 2
        store.push_outbox("007", make_item(1, "a"))
        with pytest.raises(RuntimeError):
            with store.atomic():
                assert store.pop_outbox("007")["payload"]["n"] == "a"
                raise RuntimeError("roll back")
        assert store.pop_outbox("007")["payload"]["n"] == "a"
    finally:
        store.close()


# -- fork ----------------------------------------------------------------------------------------

fork_only = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")


def _backend_pid(store):
    with store._engine().connect() as connection:
        return connection.execute(sa.text("SELECT pg_backend_pid()")).scalar()


@fork_only
def test_a_forked_child_never_uses_or_closes_the_parents_connections(pg_store):
    pg_store.put_ven(make_ven("parent"))
    parent_engine = pg_store._engine()
    parent_backend = _backend_pid(pg_store)
    used_by = []
    sa.event.listen(parent_engine, "before_cursor_execute",
                    lambda *args: used_by.append(os.getpid()))
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report through the pipe, never return into pytest
        code = 1
        try:
            os.close(read)
            pg_store.put_ven(make_ven("child"))
            assert pg_store.get_ven("parent") is not None
            assert pg_store._engine() is not parent_engine
            assert _backend_pid(pg_store) != parent_backend
            pg_store.close()
            gc.collect()  # nothing inherited may be finalised (and so closed) here
            assert os.getpid() not in used_by, "the child ran statements on the parent's pool"
            code = 0
        except BaseException:
            os.write(write, traceback.format_exc().encode())
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read) as pipe:
        report = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, report
    # The parent's engine and its connection are as they were: same server process, alive.
    assert pg_store._engine() is parent_engine
    assert _backend_pid(pg_store) == parent_backend
    assert pg_store.get_ven("child") is not None


# -- outages: a private PostgreSQL we may stop --------------------------------------------------


def _postgres_bindir():
    candidates = []
    if shutil.which("pg_config"):
        found = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True)
        candidates.append(found.stdout.strip())
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for bindir in candidates:
        if all(os.access(os.path.join(bindir, tool), os.X_OK)
               for tool in ("initdb", "postgres", "pg_ctl")):
            return bindir
    return None


class PrivatePostgres:
    """A throw-away PostgreSQL server in a temporary directory, on a free port.

    PostgreSQL refuses to run as root, so under root it runs as the ``postgres`` user.
    """

    def __init__(self, bindir):
        self.bindir = bindir
        self.root = tempfile.mkdtemp(prefix="openadr-pg-")
        self.data = os.path.join(self.root, "data")
        self.log = os.path.join(self.root, "server.log")
        self.process = None
        self.user = None
        if os.geteuid() == 0:
            self.user = pwd.getpwnam("postgres")
            os.chown(self.root, self.user.pw_uid, self.user.pw_gid)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.uri = f"postgresql://postgres@127.0.0.1:{self.port}/postgres?connect_timeout=2"

    def _command(self, tool, *args):
        argv = [os.path.join(self.bindir, tool), *args]
        return ["runuser", "-u", "postgres", "--", *argv] if self.user else argv

    def init(self):
        subprocess.run(
            self._command("initdb", "-D", self.data, "-A", "trust", "-U", "postgres",
                          "--no-sync", "-E", "UTF8"),
            check=True, capture_output=True, timeout=120,
        )

    def start(self):
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                self._command("postgres", "-D", self.data, "-p", str(self.port), "-k",
                              self.root, "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"),
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        import psycopg

        deadline = time.monotonic() + 60
        while True:
            try:
                psycopg.connect(host="127.0.0.1", port=self.port, user="postgres",
                                dbname="postgres", connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    with open(self.log) as log:
                        raise RuntimeError(f"the private PostgreSQL did not start:\n{log.read()}")
                time.sleep(0.1)

    def stop(self):
        if self.process is None:
            return
        subprocess.run(self._command("pg_ctl", "stop", "-D", self.data, "-m", "fast", "-w"),
                       capture_output=True, timeout=60)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:  # pragma: no cover - only if pg_ctl failed
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.process = None

    def remove(self):
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def private_postgres():
    missing = []
    bindir = _postgres_bindir()
    if bindir is None:
        missing.append(
            "initdb, postgres and pg_ctl (pg_config --bindir, /usr/lib/postgresql/*/bin)"
        )
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            missing.append("a 'postgres' user to run them as (PostgreSQL refuses root)")
        if not shutil.which("runuser"):
            missing.append("runuser")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        missing.append("psycopg")
    require_server("private PostgreSQL for the outage tests", not missing, "; ".join(missing))
    server = PrivatePostgres(bindir)
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.remove()


def test_the_store_fails_fast_while_the_server_is_down_and_recovers_by_itself(private_postgres):
    store = open_store(private_postgres.uri)
    try:
        store.put_ven(make_ven("007"))
        store.push_outbox("007", make_item(1, "queued"))
        private_postgres.stop()
        for call in (
            lambda: store.get_ven("007"),
            lambda: store.put_ven(make_ven("008")),
            lambda: store.record_seen("007", T0, T0, T0),
            lambda: store.pop_outbox("007"),
        ):
            started = time.monotonic()
            with pytest.raises(StoreError, match="unreachable") as raised:
                call()
            assert time.monotonic() - started < 5, "the store did not fail fast"
            assert f"127.0.0.1:{private_postgres.port}" in str(raised.value)
        private_postgres.start()
        assert store.get_ven("007") == make_ven("007")  # no reopen, no restart of the VTN
        assert store.pop_outbox("007")["payload"]["n"] == "queued"
        store.put_ven(make_ven("008"))
        assert [v["ven_id"] for v in store.list_vens()] == ["007", "008"]
    finally:
        store.close()


def test_a_vtn_answers_503_while_the_server_is_down_and_works_again_after(
    private_postgres, tmp_path, caplog
):
    from flask import Flask

    from flask_openadr import VTN, codec
    from flask_openadr.testing import VENTestClient

    app = Flask("outage_app", instance_path=str(tmp_path / "instance"))
    app.config.update(TESTING=True, OPENADR_STORE_URI=private_postgres.uri,
                      OPENADR_VTN_ID="TEST-VTN")
    vtn = VTN(app)
    ven = VENTestClient(app.test_client(), ven_name="outage-ven")
    name, reply = ven.register()
    assert reply["response"]["response_code"] == 200
    name, _ = ven.poll()
    assert name == "oadrRegisterReport"

    private_postgres.stop()
    caplog.clear()
    started = time.monotonic()
    response = ven.post("OadrPoll", codec.encode("oadrPoll", {"ven_id": ven.ven_id}))
    assert response.status_code == 503
    assert time.monotonic() - started < 10
    logged = [r for r in caplog.records if r.name == "flask_openadr" and r.levelname == "ERROR"]
    assert logged and "store unavailable" in logged[0].getMessage()

    private_postgres.start()
    name, reply = ven.poll()
    assert name in ("oadrResponse", "oadrDistributeEvent", "oadrRegisterReport"), name
    with app.app_context():
        stored = vtn.store.get_ven(ven.ven_id)
    assert stored["registration_id"] == ven.registration_id
    with app.app_context():
        vtn.store.close()


def test_several_vens_through_a_postgresql_outage_lose_nothing(private_postgres, tmp_path):
    from tests.support.outage import outage_app, several_vens_through_an_outage

    app = outage_app(tmp_path, private_postgres.uri)
    several_vens_through_an_outage(app, private_postgres.stop, private_postgres.start)


def test_one_connection_checkout_per_request(tmp_path):
    """A poll through the VTN takes one pooled connection for its whole request."""
    import sqlalchemy as sa
    from flask import Flask

    from tests.support.vens import make_ven
    from flask_openadr import VTN

    app = Flask("one_checkout", instance_path=str(tmp_path / "instance"))
    app.config.update(TESTING=True, OPENADR_STORE_URI=postgresql_uri(tmp_path))
    VTN(app)
    ven = make_ven(app)
    ven.register()
    ven.registered_report(ven.poll()[1])
    store = app.extensions["openadr"].context.store
    checkouts = []
    sa.event.listen(store._engine(), "checkout", lambda *args: checkouts.append(1))
    for _ in range(3):
        assert ven.poll()[0] == "oadrResponse"
    assert len(checkouts) == 3
    store.close()


def test_a_session_runs_every_call_and_block_on_one_connection(tmp_path):
    uri = postgresql_uri(tmp_path)
    store, other = open_store(uri), open_store(uri)
    store.put_ven({"ven_id": "007", "registration_id": "r"})
    with store.session():
        store.put_ven({"ven_id": "008", "registration_id": "r"})
        assert other.get_ven("008") is not None  # committed at once outside a block
        with store.atomic("007"):
            store.set_delivered("007", {"kept": 1})
        with pytest.raises(RuntimeError):
            with store.atomic():
                store.set_delivered("007", {"rolled": "back"})
                raise RuntimeError("roll back")
        assert other.get_delivered("007") == {"kept": 1}
        with store.session():  # re-entrant
            assert store.get_delivered("007") == {"kept": 1}
    assert store.get_ven("008") is not None  # and the store works after it as before
    store.close()
    other.close()
