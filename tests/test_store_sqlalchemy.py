"""The SQL store's own behaviour: URI forms, layout, statements, query plans, locking, fork and
outages.

The conformance suite (tests/test_store.py) runs against PostgreSQL too; this file covers what
only the SQL backend has. Tests that need the PostgreSQL at 127.0.0.1:5432 skip without it
(and fail with CI=true); the outage tests run a private PostgreSQL of their own.
"""
from __future__ import annotations

import gc
import glob
import json
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
from flask_openadr.store import rules  # noqa: E402
from flask_openadr.store.sqlalchemy import SCHEMA_VERSION, SQLStore  # noqa: E402

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
    engine = store.backend._engine()
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
    assert store.backend.tables.rows.name == "openadr_rows"
    assert "s3cret" not in repr(store) and "s3cret" not in store.uri
    assert not store.backend._engines  # nothing connects before the first call


def test_table_prefix_is_taken_out_of_the_url_and_other_options_reach_the_driver():
    store = open_store(
        "postgresql://vtn@db.example/openadr?table_prefix=vtn2_&connect_timeout=3&sslmode=require"
    )
    assert store.table_prefix == "vtn2_"
    assert dict(store.url.query) == {"connect_timeout": "3", "sslmode": "require"}
    assert {table.name for table in store.backend.tables.metadata.sorted_tables} == {
        f"vtn2_{name}" for name in ("meta", "rows", "due")
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
    pool = store.backend._engine().pool
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
        assert isinstance(store, SQLStore) and store.backend.dialect_name == "sqlite"
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


# -- layout --------------------------------------------------------------------------------------


def _table_names(store):
    with store.backend._engine().connect() as connection:
        return set(sa.inspect(connection).get_table_names())


def test_create_schema_is_idempotent_and_makes_every_table_and_index(pg_store):
    prefix = pg_store.table_prefix
    assert not any(name.startswith(prefix) for name in _table_names(pg_store))
    pg_store.create_schema()
    pg_store.create_schema()
    with pg_store.backend._engine().connect() as connection:
        inspector = sa.inspect(connection)
        names = {name for name in inspector.get_table_names() if name.startswith(prefix)}
        indexes = {index["name"]: index["column_names"]
                   for table in names for index in inspector.get_indexes(table)}
        version = connection.execute(
            sa.text(f"SELECT value FROM {prefix}meta WHERE name = 'schema_version'")
        ).scalar()
    assert names == {f"{prefix}meta", f"{prefix}rows", f"{prefix}due"}
    assert indexes[f"{prefix}rows_scan"] == ["tbl", "part", "seq"]
    assert indexes[f"{prefix}due_score"] == ["name", "score", "member"]
    assert version == SCHEMA_VERSION == 3


def test_first_use_creates_the_schema(pg_uri):
    store = open_store(pg_uri)
    try:
        assert store.get_ven("007") is None
        assert f"{store.table_prefix}rows" in _table_names(store)
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


@pytest.mark.parametrize("old_version", [1, 2])
def test_tables_of_the_old_layout_are_refused_and_left_as_they_are(pg_uri, old_version):
    # What flask-openadr wrote before the store was built on store.rules: a table per kind.
    store = open_store(pg_uri)
    prefix = store.table_prefix
    with store.backend._engine().begin() as connection:
        connection.execute(sa.text(f"CREATE TABLE {prefix}meta (name varchar(64) PRIMARY KEY, "
                                   "value bigint NOT NULL)"))
        connection.execute(sa.text(f"INSERT INTO {prefix}meta VALUES ('schema_version', "
                                   f"{old_version}), ('writer_lock', 0)"))
        connection.execute(sa.text(f"CREATE TABLE {prefix}vens (ven_id text PRIMARY KEY, "
                                   "data text NOT NULL)"))
        connection.execute(sa.text(f"INSERT INTO {prefix}vens VALUES ('007', '{{}}')"))
    try:
        for call in (lambda: store.get_ven("007"), store.create_schema,
                     lambda: store.put_ven(make_ven("008"))):
            with pytest.raises(StoreError) as raised:
                call()
            message = str(raised.value)
            assert f"the tables {prefix}* hold layout version {old_version}" in message
            assert f"Drop the tables {prefix}*" in message and "table_prefix" in message
        assert _table_names(store) >= {f"{prefix}meta", f"{prefix}vens"}
        assert f"{prefix}rows" not in _table_names(store)  # nothing created beside them
        with store.backend._engine().connect() as connection:
            assert connection.execute(sa.text(f"SELECT ven_id FROM {prefix}vens")).all() == [
                ("007",)]
    finally:
        store.close()


def test_a_layout_from_a_newer_version_is_refused(pg_uri):
    first = open_store(pg_uri)
    first.create_schema()
    with first.backend._engine().begin() as connection:
        connection.execute(sa.text(
            f"UPDATE {first.table_prefix}meta SET value = 99 WHERE name = 'schema_version'"
        ))
    first.close()
    second = open_store(pg_uri)
    try:
        with pytest.raises(StoreError, match="layout version 99, written by a newer"):
            second.get_ven("007")
    finally:
        second.close()


# -- statements and query plans ------------------------------------------------------------------


def test_an_empty_poll_is_three_statements(pg_store):
    """The VEN's record, record_seen and get_poll_state: one statement each (the fast paths),
    going online and staying online alike."""
    pg_store.put_ven(make_ven("007"))
    for _ in range(2):
        sent = statements_of(pg_store, lambda: (
            pg_store.get_ven("007"),
            pg_store.record_seen("007", T0, T0 + TTL, T0 + LEASE),
            pg_store.get_poll_state("007", "report"),
        ))
        assert len(sent) == 3, sent
        assert "FOR UPDATE" in sent[1] and "ON CONFLICT" in sent[1]
        assert "UNION ALL" in sent[2]


def test_the_statements_run_on_the_drivers_cursor_as_they_would_through_sqlalchemy(pg_store):
    """With nothing listening to SQLAlchemy's cursor events, the PostgreSQL statements run on
    the driver's cursor (cheaper): the same statements, with the same results and errors."""
    import psycopg

    sent: list[str] = []

    class Counting(psycopg.Cursor):
        def execute(self, query, params=None, **kwargs):
            sent.append(str(query))
            return super().execute(query, params, **kwargs)

    engine = pg_store.backend._engine()
    engine.dispose()  # new connections, each made with the counting cursor

    def counting(dbapi_connection, record):
        dbapi_connection.cursor_factory = Counting

    sa.event.listen(engine.pool, "connect", counting)
    try:
        pg_store.put_ven(make_ven("007"))
        sent.clear()
        assert pg_store.get_ven("007")["ven_id"] == "007"
        pg_store.record_seen("007", T0, T0 + TTL, T0 + LEASE)
        assert pg_store.get_poll_state("007", "report")["outbox"] == []
        assert len(sent) == 3, sent
        assert "%(k)s" in sent[0] and "FOR UPDATE" in sent[1] and "UNION ALL" in sent[2]
        with engine.connect() as connection:  # the cursor kept with the driver connection
            assert isinstance(connection.connection.info["flask_openadr.cursor"][1], Counting)
        # An error of the statement is the store's error, and the store goes on working.
        with pytest.raises(StoreError):
            pg_store.backend._execute(pg_store.backend._statements["index_range"],
                                      {"n": "x", "upto": "y", "limit": "not a number"})
        assert pg_store.get_ven("007")["ven_id"] == "007"
    finally:
        sa.event.remove(engine.pool, "connect", counting)


def test_the_fan_out_of_an_event_is_a_few_statements(pg_store):
    vens = {f"ven-{i:05d}": {"e1": i} for i in range(25_000)}
    vens["gone"] = {}
    pg_store.create_schema()
    sent = statements_of(pg_store, lambda: pg_store.set_delivered_many(vens))
    # The lock, the deletion, and three multi-row upserts of 10,000 rows at most.
    assert len(sent) == 5, [statement[:60] for statement in sent]
    (many,) = statements_of(pg_store, lambda: pg_store.get_delivered_many(list(vens)))
    assert "ANY" in many
    found = pg_store.get_delivered_many(list(vens))
    assert found["ven-00007"] == {"e1": 7} and found["gone"] == {} and len(found) == len(vens)


def _explain(store, name, parameters):
    """EXPLAIN of one of the backend's statements as the generic plan a prepared statement
    falls back to, which cannot see the parameter values."""
    statement = store.backend._statements[name]
    compiled = statement.compile(dialect=store.backend._engine().dialect)
    names = list(compiled.params)
    text = compiled.string
    for number, bound in enumerate(names, 1):
        text = text.replace(f"%({bound})s", f"${number}")
    with store.backend._engine().connect() as connection:
        connection.exec_driver_sql("SET plan_cache_mode = force_generic_plan")
        connection.exec_driver_sql(f"PREPARE probe AS {text}")
        values = ", ".join(
            "ARRAY[" + ", ".join(f"'{v}'" for v in parameters[bound]) + "]"
            if isinstance(parameters[bound], list) else
            str(parameters[bound]) if isinstance(parameters[bound], int)
            else f"'{parameters[bound]}'"
            for bound in names
        )
        rows = connection.exec_driver_sql(f"EXPLAIN (COSTS OFF) EXECUTE probe({values})").all()
        connection.exec_driver_sql("DEALLOCATE probe")
    return "\n".join(row[0] for row in rows)


def test_the_index_the_scans_and_the_gets_read_only_what_they_return(pg_store):
    """index_range costs what it returns, scan the partition, get its keys: 20,000 rows of
    other partitions and indexes around, never a sequential scan or a sort."""
    pg_store.create_schema()
    prefix = pg_store.table_prefix
    with pg_store.backend._engine().begin() as connection:
        connection.execute(sa.text(
            f"INSERT INTO {prefix}rows (tbl, key, part, version, value) SELECT 'outbox', "
            "'k' || i, 'ven-' || (i % 1000), 1, '{}' FROM generate_series(1, 20000) AS i"))
        connection.execute(sa.text(
            f"INSERT INTO {prefix}due (name, member, score) SELECT "
            "CASE WHEN i % 2 = 0 THEN 'liveness_due' ELSE 'liveness_stale' END, 'ven-' || i, "
            "'2024-05-0' || (i % 9 + 1) FROM generate_series(1, 20000) AS i"))
        connection.execute(sa.text(f"ANALYZE {prefix}rows"))
        connection.execute(sa.text(f"ANALYZE {prefix}due"))
    for name, parameters, index in [
        ("index_range", {"n": "liveness_due", "upto": "2024-05-01", "limit": 10}, "due_score"),
        ("scan", {"t": "outbox", "p": "ven-7"}, "rows_scan"),
        ("get", {"t": "outbox", "keys": json.dumps(["k1", "k2"])}, "rows_pkey"),
        ("get_one", {"t": "outbox", "k": "k1"}, "rows_pkey"),
    ]:
        plan = _explain(pg_store, name, parameters)
        assert f"Scan using {prefix}{index} " in plan, plan  # an Index (Only) Scan
        assert "Seq Scan" not in plan and "Sort" not in plan, plan
    due = sorted(f"ven-{i}" for i in range(1, 20001) if i % 18 == 0)  # code point order
    assert pg_store.backend.index_range("liveness_due", "2024-05-01", 3) == [
        (member, "2024-05-01") for member in due[:3]]


# -- locks and compare-and-set across processes --------------------------------------------------


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


def _finished(thread, done, result):
    assert done.wait(10), "the call did not finish"
    thread.join()
    assert "error" not in result, result
    return result.get("value")


def test_writers_wait_for_a_vtn_wide_block_but_the_poll_path_does_not(pg_uri):
    holder, other = open_store(pg_uri), open_store(pg_uri)  # two stores: as two processes
    other.push_outbox("007", make_item(1, "a"))
    other.record_seen("007", T0, T0, T0)
    try:
        with holder.atomic():
            holder.put_ven(make_ven("in-block"))
            # record_seen is one statement that takes no lock, and reads take none.
            for call in (
                lambda: other.record_seen("008", T0, T0, T0),
                lambda: other.record_seen("007", T0, T0, T0),
                lambda: other.get_ven("in-block"),
                lambda: other.get_poll_state("007", "report"),
            ):
                _finished(*_in_thread(call))
            # A VEN's block (a pop, a liveness transition) waits for a VTN-wide one.
            waiting = [_in_thread(lambda: other.put_ven(make_ven("after"))),
                       _in_thread(lambda: other.pop_outbox("007")),
                       _in_thread(lambda: other.claim_offline("007", 1, T0, T0))]
            time.sleep(0.5)
            assert not any(done.is_set() for _, done, _ in waiting), \
                "a writer did not wait for the open block"
        assert _finished(*waiting[1])["payload"]["n"] == "a"
        _finished(*waiting[0])
        _finished(*waiting[2])
        assert [v["ven_id"] for v in other.list_vens()] == ["after", "in-block"]
    finally:
        holder.close()
        other.close()


def test_a_put_of_a_key_another_block_inserted_waits_for_it_and_then_loses(pg_uri):
    """The compare-and-set contract across processes whatever lock a block holds: two VENs'
    blocks take the same nonce; the second waits for the first and does not take it."""
    first, second = open_store(pg_uri), open_store(pg_uri)
    try:
        with first.backend.transaction("ven-a"):
            assert first.backend.put(rules.NONCES, "n", "later", expect=0)
            thread, done, result = _in_thread(lambda: _put_in_block(second, "ven-b", 0))
            assert not done.wait(0.5), "the second insert did not wait for the first"
        assert _finished(thread, done, result) is False
        with first.backend.transaction("ven-a"):
            assert first.backend.put(rules.NONCES, "n", "again", expect=1)
            thread, done, result = _in_thread(lambda: _put_in_block(second, "ven-b", 1))
            assert not done.wait(0.5), "the second update did not wait for the first"
        assert _finished(thread, done, result) is False
        assert second.backend.get(rules.NONCES, ["n"]) == {"n": rules.Row(2, "again")}
    finally:
        first.close()
        second.close()


def _put_in_block(store, ven_id, expect):
    with store.backend.transaction(ven_id):
        return store.backend.put(rules.NONCES, "n", "lost", expect=expect)


def test_blocks_of_different_table_prefixes_do_not_wait_for_each_other(pg_uri):
    one = open_store(pg_uri)
    two = open_store(pg_uri.replace("table_prefix=", "table_prefix=x"))
    try:
        assert one.backend._advisory_key != two.backend._advisory_key
        with one.atomic():
            one.put_ven(make_ven("a"))
            _finished(*_in_thread(lambda: two.put_ven(make_ven("b"))))
    finally:
        from tests.support.backends import drop_postgresql_tables

        two.close()
        one.close()
        drop_postgresql_tables({two.table_prefix})


def _portable(store):
    """What the other databases run (plain statements under the writer lock, no fast path),
    here on PostgreSQL."""
    store.backend.postgresql = False
    return store


def test_the_portable_statements_behave_the_same(pg_store):
    store = _portable(pg_store)
    for event_id in ["e2", "e1", "e3"]:
        store.put_event(make_event(event_id))
    store.put_event(make_event("e1", note="replaced"))
    assert [e["event_descriptor"]["event_id"] for e in store.list_events()] == ["e2", "e1", "e3"]
    assert store.get_event("e1")["note"] == "replaced"
    store.put_ven(make_ven("007"))
    store.put_ven(make_ven("007", registration_id=None))
    assert store.get_ven("007")["registration_id"] is None
    for priority, name in [(2, "a"), (1, "b"), (1, "c")]:
        store.push_outbox("007", make_item(priority, name))
    popped = [store.pop_outbox("007", max_priority=1) for _ in range(3)]
    assert [item and item["payload"]["n"] for item in popped] == ["b", "c", None]
    assert store.record_seen("007", T0, T0, T0 + LEASE)["epoch"] == 1
    assert store.record_seen("007", T0 + SECOND, T0 + TTL, T0 + LEASE) is None
    assert store.get_liveness("007")["offline_at"] == T0 + TTL
    assert store.claim_offline("007", 1, T0 + TTL, T0 + LEASE)["epoch"] == 2
    assert store.record_seen("007", T0 + TTL, T0 + 2 * TTL, T0 + 2 * LEASE) == {
        "ven_id": "007", "kind": "online", "epoch": 3,
    }
    assert store.get_liveness("007")["pending"] == {
        "kind": "online", "epoch": 3, "lease_until": T0 + 2 * LEASE,
    }
    store.set_delivered_many({"007": {"e1": 1}, "008": {"e1": 2}})
    assert store.get_poll_state("007", "report")["delivered"] == {"e1": 1}
    statements = statements_of(store, lambda: store.put_ven(make_ven("009")))
    assert statements[0].startswith(f"UPDATE {store.table_prefix}meta SET value")  # the lock


@pytest.mark.parametrize("portable", [False, True], ids=["postgresql", "portable"])
def test_record_seen_makes_each_online_once_across_threads(pg_uri, portable):
    stores = [open_store(pg_uri) for _ in range(4)]
    for store in stores:
        if portable:
            _portable(store)
    ven_ids = [f"ven-{i:02d}" for i in range(40)]
    for ven_id in ven_ids:
        stores[0].record_seen(ven_id, T0, T0, T0)
        stores[0].claim_offline(ven_id, 1, T0, T0)
    barrier = threading.Barrier(len(stores))
    won, errors = [], []

    def see(store):
        try:
            barrier.wait(10)
            for ven_id in ven_ids + ["new-" + ven_id for ven_id in ven_ids]:
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
        assert sorted(won) == sorted(ven_ids + ["new-" + ven_id for ven_id in ven_ids])
        liveness = stores[0].list_liveness()
        assert {liveness[v]["epoch"] for v in ven_ids} == {3}
        assert {liveness["new-" + v]["epoch"] for v in ven_ids} == {1}
        assert stores[0].due_offline(T0 + 2 * TTL, 1000) == sorted(
            (ven_id, liveness[ven_id]["epoch"]) for ven_id in liveness)
    finally:
        for store in stores:
            store.close()


def test_sqlite_through_sqlalchemy_runs_the_rules(tmp_path):
    store = open_store(f"sqlite+pysqlite:///{tmp_path / 'sqla.sqlite'}")
    try:
        assert not store.backend.postgresql
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
        now = datetime.now(timezone.utc)
        assert store.remember_nonce("n", now, now + TTL)
        assert not store.remember_nonce("n", now, now + TTL)
    finally:
        store.close()


# -- fork ----------------------------------------------------------------------------------------

fork_only = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")


def _backend_pid(store):
    with store.backend._engine().connect() as connection:
        return connection.execute(sa.text("SELECT pg_backend_pid()")).scalar()


@fork_only
def test_a_forked_child_never_uses_or_closes_the_parents_connections(pg_store):
    pg_store.put_ven(make_ven("parent"))
    parent_engine = pg_store.backend._engine()
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
            assert pg_store.backend._engine() is not parent_engine
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
    assert pg_store.backend._engine() is parent_engine
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
    sa.event.listen(store.backend._engine(), "checkout", lambda *args: checkouts.append(1))
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
