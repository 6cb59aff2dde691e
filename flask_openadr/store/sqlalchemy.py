"""The SQL store (``postgresql://`` and other SQLAlchemy URLs): one VTN's workers on many hosts.

Built on SQLAlchemy Core (the ``[sqlalchemy]`` extra, which brings psycopg 3). It is
:class:`~flask_openadr.store.rules.RulesStore`, which holds every rule of the store, on
:class:`SQLBackend`: rows of text in one table, an index of due items in another, transactions
and locks. PostgreSQL is the database this store is tested on and tuned for; other databases
SQLAlchemy knows (SQLite through SQLAlchemy is tested; MySQL/MariaDB and others are not) run the
same rules with portable statements, every block holding one writer lock.

**Tables.** Every table is named ``<table_prefix><name>`` (default prefix ``openadr_``, chosen with
``?table_prefix=`` in the URI), so several VTNs, or a VTN and its tests, can share one database:
``rows`` (a row per key of each logical table of :mod:`~flask_openadr.store.rules`: its
partition, its place in the partition ``seq``, its ``version`` and its text ``value``, the JSON of
:mod:`flask_openadr.store.serialize`; text, not JSONB, which refuses the ``\\u0000`` a record may
hold), ``due`` (the index of due items, by score) and ``meta`` (the layout version).
:meth:`SQLBackend.create_schema` (``flask openadr init-db``) creates them; the store also creates
them the first time a process uses it.

**Transactions.** A block runs as one transaction on one connection, held by the thread for the
outermost block. On PostgreSQL its first statement takes transaction-level advisory locks whose
keys are derived from the table prefix (and the venID): a VTN-wide block takes the VTN's lock
exclusively, a VEN's block takes it shared and the VEN's own lock exclusively, so blocks of
different VENs run side by side on any number of hosts. A compare-and-set ``put`` is one
statement whose row lock decides between processes (``INSERT ... ON CONFLICT DO NOTHING``,
``UPDATE ... WHERE version = :expect``): the second of two waits for the first and then loses.
On other databases every block first updates one row of ``meta``, which makes it VTN-wide.

**Fast paths** (PostgreSQL; the rules' own code elsewhere): ``record_seen`` is one statement,
``get_poll_state`` one ``UNION ALL``, ``set_delivered_many`` one multi-row statement per chunk
(docs/stores.rst gives the figures that justify each).

**Processes.** The engine (and its connection pool) belongs to the process that created it: after
``fork()`` the child creates its own, and only detaches the inherited one
(``engine.dispose(close=False)``, SQLAlchemy's documented pattern), keeping it referenced so that
its connections, which the parent still uses, are never closed or finalised in the child.

**Outages.** Connections idle for a moment are checked with a ping when taken from the pool, so
after a restart of the database server the store reconnects by itself; while the server is down
every call raises :class:`~flask_openadr.errors.StoreError` (requests answer HTTP 503) within the
connect timeout.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import threading
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterable, Iterator, NamedTuple, TypeVar

from ..errors import ConfigurationError, StoreError
from . import serialize
from .base import (
    MANY_CHUNK,
    NonceUsed,
    PollState,
    Transition,
    check_seen_nonce,
    utc_text,
)
from .rules import (
    DELIVERED, DUE_OFFLINE, LIVENESS, STALE, Row, RulesStore, _key,
)

if TYPE_CHECKING:
    from sqlalchemy.engine.interfaces import DBAPIConnection

try:
    import sqlalchemy as sa
except ImportError as exc:  # the [sqlalchemy] extra is not installed; from_uri says so
    sa = None  # type: ignore[assignment]  # checked as "sa is None" before any use
    _IMPORT_ERROR: ImportError | None = exc
else:
    _IMPORT_ERROR = None

__all__ = ["SQLBackend", "SQLStore", "from_uri", "SCHEMA_VERSION", "DEFAULT_TABLE_PREFIX"]

#: The layout this code writes, kept in the ``meta`` table. Versions 1 and 2 were the tables
#: of each Store method (before the store was built on store.rules); they and newer ones are
#: refused, never read or changed.
SCHEMA_VERSION = 3

#: What table names start with unless the URI says ``?table_prefix=...``.
DEFAULT_TABLE_PREFIX = "openadr_"

# Lower case, so that the names need no quoting in psql; short enough that the longest index
# name stays under the 63 characters PostgreSQL keeps.
_TABLE_PREFIX = re.compile(r"^[a-z_][a-z0-9_]{0,29}$")

# The driver the [sqlalchemy] extra installs; postgresql:// means it rather than psycopg2.
_POSTGRESQL_ALIASES = {
    "postgres": "postgresql+psycopg",
    "postgresql": "postgresql+psycopg",
}
_EXTRA = 'pip install "flask-openadr[sqlalchemy]"'

# URI options for the connection pool of each process, as create_engine() takes them.
_POOL_OPTIONS: dict[str, Callable[[str], float]] = {
    "pool_size": int,
    "max_overflow": int,
    "pool_timeout": float,
}

T = TypeVar("T")


def from_uri(uri: str, *, instance_path: str | None = None) -> SQLStore:
    """Open the store named by a SQLAlchemy database URL.

    - ``postgresql://user:password@host:5432/dbname``, also written ``postgres://`` or
      ``postgresql+psycopg://``: PostgreSQL through psycopg 3 (the ``[sqlalchemy]`` extra);
    - any other URL whose dialect SQLAlchemy knows, with its driver installed, for example
      ``mysql+pymysql://user:password@host/dbname``.

    Query options go to the driver (``?connect_timeout=5&sslmode=require`` for psycopg), except
    ``table_prefix`` (default ``openadr_``: 1 to 30 lower-case letters, digits and ``_``, not
    starting with a digit), which is what the store's table names start with, and
    ``pool_size``, ``max_overflow`` and ``pool_timeout``, which size each process's connection
    pool (SQLAlchemy's defaults: 5, 10 and 30 seconds). ``instance_path`` is not used: the URL
    alone names the database.

    :raises ConfigurationError: when SQLAlchemy or the URL's driver is not installed, the URL is
        malformed, its dialect is unknown or asynchronous, or the prefix is not allowed.
    """
    from . import redact, unsupported_scheme

    shown = redact(uri)
    if sa is None:
        raise ConfigurationError(
            f"the store URI {shown!r} needs SQLAlchemy, which is not installed "
            f"({_IMPORT_ERROR}): {_EXTRA}"
        )
    try:
        url = sa.engine.make_url(uri)
    except (sa.exc.ArgumentError, ValueError):
        # The parser's message may repeat the URL, password and all.
        raise ConfigurationError(
            f"the store URI {shown!r} is not a database URL; write "
            "'dialect+driver://user:password@host:port/database', for example "
            "'postgresql://vtn:secret@db.example:5432/openadr'"
        ) from None
    backend, _, driver = url.drivername.lower().partition("+")
    if backend in _POSTGRESQL_ALIASES:
        url = url.set(drivername=f"postgresql+{driver}" if driver else "postgresql+psycopg")
    try:
        dialect = url.get_dialect()
    except sa.exc.NoSuchModuleError:
        raise unsupported_scheme(uri) from None
    if getattr(dialect, "is_async", False):
        raise ConfigurationError(
            f"the store URI {shown!r} names an asyncio driver ({url.drivername}); the VTN runs "
            "in WSGI workers and needs a synchronous one, such as postgresql+psycopg://"
        )
    try:
        dialect.import_dbapi()
    except ImportError as exc:
        raise ConfigurationError(
            f"the store URI {shown!r} needs the {url.drivername} driver, which is not installed "
            f"({exc}): {_EXTRA}"
            + ("" if url.get_backend_name() == "postgresql" else f", plus the {exc.name} package")
        ) from exc
    # make_url drops an empty value; an empty prefix is refused too, not taken for the default.
    blank = re.search(r"[?&]table_prefix=(?:&|$)", uri) is not None
    prefix = "" if blank else url.query.get("table_prefix", DEFAULT_TABLE_PREFIX)
    if isinstance(prefix, tuple) or not _TABLE_PREFIX.match(prefix):
        raise ConfigurationError(
            f"the store URI {shown!r} has table_prefix={prefix!r}; a prefix is 1 to 30 "
            "lower-case letters, digits and '_', not starting with a digit, for example "
            "'openadr_'"
        )
    engine_options = {}
    for name, convert in _POOL_OPTIONS.items():
        if name not in url.query:
            continue
        value = url.query[name]
        try:
            if isinstance(value, tuple):  # the option given twice
                raise ValueError
            engine_options[name] = convert(value)
            if engine_options[name] < 0:
                raise ValueError
        except (TypeError, ValueError):
            raise ConfigurationError(
                f"the store URI {shown!r} has {name}={value!r}; it must be a number >= 0"
            ) from None
    url = url.difference_update_query(["table_prefix", *_POOL_OPTIONS])
    return SQLStore(url, table_prefix=prefix, uri=shown, engine_options=engine_options)


class _Tables(NamedTuple):
    metadata: sa.MetaData
    meta: sa.Table
    rows: sa.Table
    due: sa.Table


def _define_tables(prefix: str) -> _Tables:
    """The store's tables, named ``prefix + name``, with types that work on every dialect."""
    from sqlalchemy.dialects import mysql

    # Keys sort in code point order (the index's ties, list_vens): collation "C" on
    # PostgreSQL, utf8mb4_bin on MySQL; SQLite compares bytes already. MySQL cannot index TEXT.
    def key() -> sa.types.TypeEngine[str]:
        return (
            sa.Text()
            .with_variant(sa.Text(collation="C"), "postgresql")
            .with_variant(sa.String(255, collation="utf8mb4_bin"), "mysql", "mariadb")
        )

    def column(name: str, type_: sa.types.TypeEngine[T], *args: Any, **kwargs: Any) -> sa.Column[T]:
        kwargs.setdefault("nullable", False)
        return sa.Column(name, type_, *args, **kwargs)

    metadata = sa.MetaData()
    meta = sa.Table(
        prefix + "meta", metadata,
        column("name", sa.String(64), primary_key=True),
        column("value", sa.BigInteger()),
    )
    rows = sa.Table(
        prefix + "rows", metadata,
        column("tbl", sa.String(32), primary_key=True),
        column("key", key(), primary_key=True),
        column("part", key()),
        # A row's place in its partition, never changed by a put of the same key: an identity
        # column on PostgreSQL (dropped with the table); elsewhere the put numbers it.
        column("seq", sa.BigInteger(), sa.Identity()),
        column("version", sa.BigInteger()),
        column("value", sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")),
    )
    sa.Index(prefix + "rows_scan", rows.c.tbl, rows.c.part, rows.c.seq)
    due = sa.Table(
        prefix + "due", metadata,
        column("name", sa.String(32), primary_key=True),
        column("member", key(), primary_key=True),
        column("score", key()),
    )
    sa.Index(prefix + "due_score", due.c.name, due.c.score, due.c.member)
    return _Tables(metadata, meta, rows, due)


def _advisory_key(prefix: str) -> int:
    """The PostgreSQL advisory lock key of one VTN's tables: a signed 64-bit hash of the prefix."""
    digest = hashlib.blake2b(f"flask-openadr:{prefix}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class _Block(threading.local):
    """This thread's open block: its connection and nesting depth, in process ``pid``."""

    pid = 0
    connection: sa.Connection | None = None
    depth = 0
    # The connection session() holds for the thread, in autocommit mode.
    session: sa.Connection | None = None


def _postgresql_statements(prefix: str) -> dict[str, Any]:
    """The PostgreSQL statements, built once per backend with bound parameters (building a
    construct per call cost 108 us of CPU against 43 us for executing a prebuilt one)."""
    rows, due = f"{prefix}rows", f"{prefix}due"
    # Lists of keys (and put_many's pairs) travel as one JSON text, which json.dumps writes in
    # C: psycopg's text[] dumper escapes each element with a regular expression in Python,
    # which took most of the CPU of a 100,000-VEN fan-out.
    keys = "ANY(ARRAY(SELECT json_array_elements_text(CAST(:keys AS json))))"
    upsert = (f"ON CONFLICT (tbl, key) DO UPDATE SET version = {rows}.version + 1, "
              "value = excluded.value")
    text = {
        "get": f"SELECT key, version, value FROM {rows} WHERE tbl = :t AND key = {keys}",
        "get_one": f"SELECT key, version, value FROM {rows} WHERE tbl = :t AND key = :k",
        "scan": f"SELECT key, version, value FROM {rows} WHERE tbl = :t AND part = :p "
                "ORDER BY seq",
        "put": f"INSERT INTO {rows} (tbl, key, part, version, value) "
               f"VALUES (:t, :k, :p, 1, :v) {upsert}",
        # A concurrent uncommitted insert of the key makes this wait, then do nothing.
        "put_new": f"INSERT INTO {rows} (tbl, key, part, version, value) "
                   "VALUES (:t, :k, :p, 1, :v) ON CONFLICT (tbl, key) DO NOTHING RETURNING 1",
        # A concurrent update of the row makes this wait, then compare with the new version.
        "put_if": f"UPDATE {rows} SET version = version + 1, value = :v "
                  "WHERE tbl = :t AND key = :k AND version = :e RETURNING 1",
        "put_many": f"INSERT INTO {rows} (tbl, key, part, version, value) "
                    "SELECT :t, k, :p, 1, v FROM json_each_text(CAST(:pairs AS json)) "
                    f"AS u(k, v) {upsert}",
        "delete": f"DELETE FROM {rows} WHERE tbl = :t AND key = {keys}",
        "index_set": f"INSERT INTO {due} (name, member, score) VALUES (:n, :m, :s) "
                     "ON CONFLICT (name, member) DO UPDATE SET score = excluded.score",
        "index_unset": f"DELETE FROM {due} WHERE name = :n AND member = :m",
        "index_range": f"SELECT member, score FROM {due} WHERE name = :n AND score <= :upto "
                       "ORDER BY score, member LIMIT :limit",
        # One round trip for both locks: the VTN's shared, then the VEN's exclusively. The
        # order matters (PostgreSQL queues a shared request behind a waiting exclusive one, so
        # taking the VEN's lock first could close a cycle); the materialised CTE is evaluated
        # before the outer SELECT, which fixes it.
        "lock_ven": "WITH vtn AS MATERIALIZED (SELECT pg_advisory_xact_lock_shared(:vtn) AS "
                    "held) SELECT pg_advisory_xact_lock(:ven) FROM vtn",
        "lock_vtn": "SELECT pg_advisory_xact_lock(:vtn)",
        "poll_state": _POLL_STATE.format(rows=rows),
        "seen": _SEEN.format(rows=rows, due=due, liveness=LIVENESS, due_offline=DUE_OFFLINE,
                             stale=STALE),
    }
    return {name: sa.text(sql) for name, sql in text.items()}


# get_poll_state in one statement: the VEN's delivery row, its records of one kind and its
# outbox, each in its partition's order (the rules' three reads).
_POLL_STATE = (
    "SELECT 0 AS part, seq, key, value FROM {rows} WHERE tbl = 'delivered' AND key = :ven "
    "UNION ALL SELECT 1, seq, key, value FROM {rows} WHERE tbl = 'records' AND part = :records "
    "UNION ALL SELECT 2, seq, key, value FROM {rows} WHERE tbl = 'outbox' AND part = :ven "
    "ORDER BY part, seq"
)

# record_seen's compare-and-set in one statement, the rules' RulesStore._seen: the VEN's
# liveness row is read and locked (FOR UPDATE waits for a concurrent writer and then reads its
# row), written back with its version checked, and the index entries follow it. The new row,
# when there was none, is inserted unless a concurrent insert won (written is then false and
# the caller runs the statement again, which sees that row).
_SEEN = """
WITH old AS (
  SELECT version, CAST(value AS jsonb) AS j FROM {rows}
  WHERE tbl = '{liveness}' AND key = :ven FOR UPDATE
), new AS (
  SELECT version, j->>'state' = 'online' AS stays, CASE WHEN j->>'state' = 'online'
    THEN j || jsonb_build_object('last_seen', CAST(:now AS text),
                                 'offline_at', CAST(:offline_at AS text))
    ELSE jsonb_build_object(
      'state', 'online', 'epoch', CAST(j->>'epoch' AS bigint) + 1,
      'last_seen', CAST(:now AS text), 'offline_at', CAST(:offline_at AS text),
      'pending_kind', 'online', 'pending_epoch', CAST(j->>'epoch' AS bigint) + 1,
      'lease_until', CAST(:lease_until AS text)) END AS j
  FROM old
  UNION ALL
  SELECT 0, false, jsonb_build_object(
      'state', 'online', 'epoch', 1, 'last_seen', CAST(:now AS text),
      'offline_at', CAST(:offline_at AS text), 'pending_kind', 'online', 'pending_epoch', 1,
      'lease_until', CAST(:lease_until AS text))
  WHERE NOT EXISTS (SELECT FROM old)
), updated AS (
  UPDATE {rows} AS r SET version = r.version + 1, value = CAST(new.j AS text) FROM new
  WHERE new.version > 0 AND r.tbl = '{liveness}' AND r.key = :ven AND r.version = new.version
  RETURNING 1
), inserted AS (
  INSERT INTO {rows} (tbl, key, part, version, value)
  SELECT '{liveness}', :ven, '', 1, CAST(new.j AS text) FROM new WHERE new.version = 0
  ON CONFLICT (tbl, key) DO NOTHING RETURNING 1
), written AS (
  SELECT 1 FROM updated UNION ALL SELECT 1 FROM inserted
), offline AS (
  INSERT INTO {due} (name, member, score)
  SELECT '{due_offline}', :ven, CAST(:offline_at AS text) FROM written
  ON CONFLICT (name, member) DO UPDATE SET score = excluded.score
), stale AS (
  INSERT INTO {due} (name, member, score)
  SELECT '{stale}', :ven, CAST(:lease_until AS text) FROM written, new WHERE NOT new.stays
  ON CONFLICT (name, member) DO UPDATE SET score = excluded.score
)
SELECT new.stays, CAST(new.j->>'epoch' AS bigint) AS epoch,
       EXISTS (SELECT FROM written) AS written
FROM new
"""


class _Portable(NamedTuple):
    """The statements of the other databases: plain SQL, run while the block holds the
    writer lock (a row of ``meta``), which makes each read-then-write a compare-and-set."""

    get: Any
    scan: Any
    version: Any
    next_seq: Any
    insert: Any
    update: Any
    delete: Any
    index_insert: Any
    index_unset: Any
    index_range: Any
    lock: Any


def _portable_statements(tables: _Tables) -> _Portable:
    rows, due, meta = tables.rows, tables.due, tables.meta
    table, key = rows.c.tbl == sa.bindparam("t"), rows.c.key == sa.bindparam("k")
    return _Portable(
        get=sa.select(rows.c.key, rows.c.version, rows.c.value)
        .where(table, rows.c.key.in_(sa.bindparam("keys", expanding=True))),
        scan=sa.select(rows.c.key, rows.c.version, rows.c.value)
        .where(table, rows.c.part == sa.bindparam("p")).order_by(rows.c.seq),
        version=sa.select(rows.c.version).where(table, key),
        next_seq=sa.select(sa.func.coalesce(sa.func.max(rows.c.seq), 0) + 1)
        .where(table, rows.c.part == sa.bindparam("p")),
        insert=sa.insert(rows).values(
            tbl=sa.bindparam("t"), key=sa.bindparam("k"), part=sa.bindparam("p"),
            seq=sa.bindparam("seq"), version=1, value=sa.bindparam("v")),
        update=sa.update(rows).where(table, key)
        .values(version=rows.c.version + 1, value=sa.bindparam("v")),
        delete=sa.delete(rows).where(table, rows.c.key.in_(sa.bindparam("keys", expanding=True))),
        index_insert=sa.insert(due).values(name=sa.bindparam("n"), member=sa.bindparam("m"),
                                           score=sa.bindparam("s")),
        index_unset=sa.delete(due).where(due.c.name == sa.bindparam("n"),
                                         due.c.member == sa.bindparam("m")),
        index_range=sa.select(due.c.member, due.c.score)
        .where(due.c.name == sa.bindparam("n"), due.c.score <= sa.bindparam("upto"))
        .order_by(due.c.score, due.c.member).limit(sa.bindparam("limit")),
        lock=sa.update(meta).where(meta.c.name == "writer_lock")
        .values(value=meta.c.value + 1),
    )


class SQLBackend:
    """A :class:`~flask_openadr.store.rules.Backend` in a SQL database, through SQLAlchemy Core.

    See the module documentation for the tables, transactions and behaviour across processes
    and outages.

    :param url: the database URL (a :class:`sqlalchemy.engine.URL` or str), without
        ``table_prefix``.
    :param table_prefix: what the store's table names start with.
    :param uri: the URI as shown in messages (password hidden); default: from ``url``.
    :param engine_options: extra keyword arguments for :func:`sqlalchemy.create_engine`
        (``pool_size``, ``max_overflow``, ``pool_timeout``, ...).
    """

    def __init__(self, url: str | sa.URL, *, table_prefix: str = DEFAULT_TABLE_PREFIX,
                 uri: str | None = None, engine_options: dict[str, Any] | None = None):
        if sa is None:
            raise ConfigurationError(f"the SQL store needs SQLAlchemy: {_EXTRA}")
        self.url = sa.engine.make_url(url)
        self.uri = uri or self.url.render_as_string(hide_password=True)
        self.table_prefix = table_prefix
        self.tables = _define_tables(table_prefix)
        self.dialect_name = self.url.get_backend_name()
        #: Whether the PostgreSQL statements (per-VEN locks, ON CONFLICT, fast paths) are used.
        self.postgresql = self.dialect_name == "postgresql"
        self._statements = _postgresql_statements(table_prefix) if self.postgresql else {}
        self._portable = _portable_statements(self.tables)
        self._engine_options = dict(engine_options or {})
        self._advisory_key = _advisory_key(table_prefix)
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._engines: dict[int, sa.Engine] = {}  # pid -> the Engine that process created
        # Pools inherited over fork, kept referenced so that the child never finalises (and so
        # closes) connections the parent is using.
        self._inherited: list[sa.pool.Pool] = []
        self._block = _Block()
        self._schema_ready = False
        # Each PostgreSQL statement -> its text for the driver, made on first use (see
        # _execute and _driver_texts).
        self._driver_sql: dict[Any, str] | None = None

    def __repr__(self) -> str:
        return f"SQLBackend({self.uri!r}, table_prefix={self.table_prefix!r})"

    # -- engine, per process -------------------------------------------------------------------

    def _process_lock(self) -> threading.Lock:
        # After fork() the lock may be held by a thread that does not exist in the child.
        pid = os.getpid()
        if pid != self._pid:
            self._lock = threading.Lock()
            self._pid = pid
        return self._lock

    def _engine(self) -> sa.Engine:
        """This process's engine, created on first use in the process."""
        pid = os.getpid()
        engine = self._engines.get(pid)
        if engine is not None:
            return engine
        with self._process_lock():
            engine = self._engines.get(pid)
            if engine is None:
                for inherited_pid in [p for p in self._engines if p != pid]:
                    inherited = self._engines.pop(inherited_pid)
                    self._inherited.append(inherited.pool)
                    inherited.dispose(close=False)
                engine = self._engines[pid] = self._create_engine()
        return engine

    def _create_engine(self) -> sa.Engine:
        options: dict[str, Any] = {}
        if self.postgresql and self.url.get_driver_name() in ("psycopg", "psycopg2"):
            # Fail fast while the server is unreachable (the default is to wait forever).
            connect_args: dict[str, str | int] = {}
            if "connect_timeout" not in self.url.query:
                connect_args["connect_timeout"] = 10
            if "options" not in self.url.query:
                # A lock wait (a writer behind a block that never ends) becomes a StoreError
                # after 30 s, as SQLite's busy timeout does, rather than a hung worker.
                connect_args["options"] = "-c lock_timeout=30s"
            if "application_name" not in self.url.query:
                connect_args["application_name"] = "flask-openadr"
            options["connect_args"] = connect_args
        elif self.dialect_name in ("mysql", "mariadb"):
            # Reads inside a block see what the writers before it committed.
            options["isolation_level"] = "READ COMMITTED"
        options.update(self._engine_options)
        with self._errors():
            engine = sa.create_engine(self.url, **options)
        _ping_when_idle(engine)
        return engine

    def close(self) -> None:
        """Close this process's pooled connections (the store reconnects when used again).
        Engines inherited from a parent process are left alone."""
        with self._process_lock():
            engine = self._engines.get(os.getpid())
        if engine is not None:
            with self._errors():
                engine.dispose()

    # -- errors --------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """Turn driver failures into StoreError naming the store (never its password)."""
        try:
            yield
        except sa.exc.DBAPIError as exc:
            raise StoreError(self._describe(exc)) from exc
        except sa.exc.TimeoutError as exc:
            raise StoreError(
                f"SQL store {self.uri}: every pooled connection is in use ({exc}); raise "
                "pool_size or max_overflow in the URI, or run fewer threads per worker"
            ) from exc

    def _describe(self, exc: sa.exc.DBAPIError) -> str:
        cause = exc.orig if exc.orig is not None else exc
        lines = str(cause).strip().splitlines()
        text = f"{type(cause).__name__}: {lines[0] if lines else '(no message)'}"
        if self.url.password:
            text = text.replace(str(self.url.password), "***")
        # No SQLSTATE, or class 08 (connection exception) / 57P (shutdown): the connection, not
        # the statement, failed.
        sqlstate = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
        lost = (
            exc.connection_invalidated
            or isinstance(exc, sa.exc.InterfaceError)
            or (isinstance(exc, sa.exc.OperationalError)
                and (sqlstate is None or sqlstate[:2] == "08" or sqlstate[:3] == "57P"))
        )
        if lost:
            return f"SQL store {self.uri} is unreachable or lost its connection: {text}"
        return f"SQL store {self.uri}: {text}"

    # -- schema --------------------------------------------------------------------------------

    def create_schema(self) -> None:
        """Create the tables and indexes that do not exist yet (idempotent); safe to run from
        several processes at once.

        :raises StoreError: when the tables hold another layout (an older or newer version).
        """
        if self._block.pid == os.getpid() and self._block.connection is not None:
            with self._errors():
                self._create_schema(self._block.connection)
        else:
            engine = self._engine()
            attempts = 1 if self.postgresql else 3
            for attempt in range(attempts):
                try:
                    with self._errors(), engine.begin() as connection:
                        if self.postgresql:
                            connection.execute(self._statements["lock_vtn"],
                                               {"vtn": self._advisory_key})
                        self._create_schema(connection)
                    break
                except StoreError as exc:
                    # Without transactional DDL two processes may both create a table; the
                    # loser's next look finds it there. Another layout is final.
                    if attempt == attempts - 1 or isinstance(exc.__cause__, _OtherLayout):
                        raise
        self._schema_ready = True

    def _version(self, connection: sa.Connection) -> int | None:
        meta = self.tables.meta
        if not sa.inspect(connection).has_table(meta.name):
            return None
        version: int | None = connection.execute(
            sa.select(meta.c.value).where(meta.c.name == "schema_version")).scalar()
        return version

    def _check_version(self, version: int | None) -> None:
        """Refuse tables of another layout, naming what was found and what to do: they are
        never read, converted or dropped."""
        if version is None or version == SCHEMA_VERSION:
            return
        prefix = self.table_prefix
        if version < SCHEMA_VERSION:
            message = (
                f"SQL store {self.uri}: the tables {prefix}* hold layout version {version}, "
                f"the one-table-per-kind layout of an earlier development version of "
                f"flask-openadr 0.1.0; this version stores everything in {prefix}rows and "
                f"{prefix}due (layout {SCHEMA_VERSION}) and does not read or convert the old "
                f"tables. Drop the tables {prefix}* (the VENs then register again), or keep "
                "them and point this VTN at another ?table_prefix="
            )
        else:
            message = (
                f"SQL store {self.uri}: the tables {prefix}* have layout version {version}, "
                f"written by a newer flask-openadr; this one knows up to {SCHEMA_VERSION}"
            )
        raise StoreError(message) from _OtherLayout(version)

    def _create_schema(self, connection: sa.Connection) -> None:
        version = self._version(connection)
        self._check_version(version)  # before anything is created beside another layout
        self.tables.metadata.create_all(connection, checkfirst=True)
        if version is None:
            connection.execute(
                sa.insert(self.tables.meta),
                [{"name": "schema_version", "value": SCHEMA_VERSION},
                 {"name": "writer_lock", "value": 0}],
            )

    def _ensure_schema(self) -> None:
        """Create the schema on this store's first use, unless it is there already: that look
        takes no lock, so it never waits for (or on) a block open in this or another thread."""
        if self._schema_ready:
            return
        with self._errors(), self._engine().connect() as connection:
            connection.execution_options(isolation_level="AUTOCOMMIT")
            version = self._version(connection)
        self._check_version(version)
        if version == SCHEMA_VERSION:
            self._schema_ready = True
        else:
            self.create_schema()

    # -- transactions --------------------------------------------------------------------------

    def _current(self) -> _Block:
        block = self._block
        if block.pid != os.getpid():
            # A fresh thread, or the thread that called fork(): a block open in the parent
            # belongs to the parent, and so does its connection.
            block.pid = os.getpid()
            block.connection = None
            block.depth = 0
            block.session = None
        return block

    def _lock_writers(self, connection: sa.Connection, ven_id: str | None = None) -> None:
        """Make every other block of these tables that conflicts with this one (of this VEN,
        or VTN-wide ones, with ``ven_id``; every other without) wait until this transaction
        ends."""
        if not self.postgresql:
            connection.execute(self._portable.lock)
        elif ven_id is not None:
            connection.execute(self._statements["lock_ven"], {
                "vtn": self._advisory_key,
                "ven": _advisory_key(f"{self.table_prefix}\0{ven_id}"),
            })
        else:
            connection.execute(self._statements["lock_vtn"], {"vtn": self._advisory_key})

    @contextlib.contextmanager
    def transaction(self, lock: str | None = None) -> Iterator[None]:
        """See :class:`~flask_openadr.store.rules.Backend`.

        The outermost block takes a connection (the session's, or one from the pool), begins a
        transaction and takes the locks (see the module documentation) before anything else,
        so a conflicting block, in any thread of any process, waits there before it has read
        anything. A nested block joins it, whatever its ``lock``.
        """
        block = self._current()
        if block.connection is not None:
            block.depth += 1
            try:
                yield
            finally:
                block.depth -= 1
            return
        self._ensure_schema()
        session = block.session
        owned = session is None  # else the session's connection, kept after the block
        with self._errors():
            if session is None:
                connection = self._engine().connect()
            else:
                connection = session
                if connection.in_transaction():
                    connection.commit()
                connection.execution_options(isolation_level=connection.default_isolation_level)
            try:
                transaction = connection.begin()
                self._lock_writers(connection, lock)
            except BaseException:
                self._end_block_connection(connection, owned)
                raise
        block.connection, block.depth = connection, 1
        try:
            try:
                yield
            finally:
                block.connection, block.depth = None, 0
        except BaseException:
            # The block's own exception is the one to see; a failed rollback only adds to it.
            with contextlib.suppress(sa.exc.SQLAlchemyError):
                transaction.rollback()
            self._end_block_connection(connection, owned)
            raise
        try:
            with self._errors():
                transaction.commit()
        finally:
            # Back to the pool (rolled back there if the commit failed), or to the session.
            self._end_block_connection(connection, owned)

    @staticmethod
    def _end_block_connection(connection: sa.Connection, owned: bool) -> None:
        with contextlib.suppress(sa.exc.SQLAlchemyError):
            if owned:
                connection.close()
            else:
                if connection.in_transaction():
                    connection.rollback()
                connection.execution_options(isolation_level="AUTOCOMMIT")

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        """One connection from the pool for everything this thread does until the end, in
        autocommit outside blocks (whose transactions run on it too). Re-entrant; inside a
        block, nothing changes."""
        block = self._current()
        if block.session is not None or block.connection is not None:
            yield
            return
        self._ensure_schema()
        with self._errors():
            connection = self._engine().connect()
            connection.execution_options(isolation_level="AUTOCOMMIT")
        block.session = connection
        try:
            yield
        finally:
            block.session = None
            with contextlib.suppress(sa.exc.SQLAlchemyError):
                connection.close()

    def _run(self, work: Callable[[sa.Connection], T]) -> T:
        """``work(connection)`` inside this thread's block, or else as one statement in its own
        transaction (autocommit: one round trip, no BEGIN/COMMIT)."""
        block = self._current()
        with self._errors():
            if block.connection is not None:
                return work(block.connection)
            if block.session is not None:
                session = block.session
                try:
                    result = work(session)
                except BaseException:
                    # The statement's own error is the one to see (a broken connection makes
                    # SQLAlchemy refuse anything but a rollback).
                    with contextlib.suppress(sa.exc.SQLAlchemyError):
                        session.rollback()
                    raise
                # Autocommit at the database; this ends SQLAlchemy's autobegun transaction.
                if session.in_transaction():
                    session.commit()
                return result
            self._ensure_schema()
            with self._engine().connect() as connection:
                connection.execution_options(isolation_level="AUTOCOMMIT")
                return work(connection)

    def _execute(self, statement: Any, parameters: dict[str, Any]) -> list[Any]:
        """The rows of one statement (none for a write without RETURNING).

        The PostgreSQL statements (plain SQL text with named parameters) run on the driver's
        cursor of the block's or session's connection, as SQLAlchemy would send them: its
        execution of a ``text()`` construct (compiled cache lookup, execution context, result
        and column set-up) cost 227 µs of CPU per read by key, against 83 µs on the cursor,
        and a push runs 14 of them (docs/benchmarks.rst). Driver errors are turned into
        SQLAlchemy's, and a lost connection invalidated, as SQLAlchemy does for its own. While
        anything listens to SQLAlchemy's cursor events (a tracer, a test counting statements),
        the statements go through SQLAlchemy, so that it sees every one."""
        sql = self._driver_texts().get(statement) if self.postgresql else None

        def work(connection: sa.Connection) -> list[Any]:
            dispatch = connection.dispatch
            if sql is not None and not (dispatch.before_cursor_execute
                                        or dispatch.after_cursor_execute):
                return self._on_cursor(connection, sql, parameters)
            result = connection.execute(statement, parameters)
            return list(result.all()) if result.returns_rows else []

        return self._run(work)

    def _driver_texts(self) -> dict[Any, str]:
        # The statements that run on the cursor, compiled once for the dialect: all of
        # PostgreSQL's, with a driver whose paramstyle takes a dict of named parameters
        # (psycopg and psycopg2 do; with another, none).
        if self._driver_sql is None:
            dialect = self._engine().dialect
            self._driver_sql = {
                statement: str(statement.compile(dialect=dialect))
                for statement in self._statements.values()
            } if dialect.paramstyle in ("pyformat", "named") else {}
        return self._driver_sql

    @staticmethod
    def _on_cursor(connection: sa.Connection, sql: str,
                   parameters: dict[str, Any]) -> list[Any]:
        proxied = connection.connection
        dbapi = proxied.dbapi_connection
        assert dbapi is not None  # (a connection of a block or a session is checked out)
        # One cursor per driver connection, kept with it (a new one per statement cost more).
        kept = proxied.info.get("flask_openadr.cursor")
        if kept is None or kept[0] is not dbapi:
            kept = proxied.info["flask_openadr.cursor"] = (dbapi, dbapi.cursor())
        cursor = kept[1]
        dialect = connection.dialect
        try:
            cursor.execute(sql, parameters)
            return list(cursor.fetchall()) if cursor.description is not None else []
        except dialect.loaded_dbapi.Error as exc:
            lost = dialect.is_disconnect(exc, dbapi, cursor)
            if lost:
                connection.invalidate(exc)
            raise sa.exc.DBAPIError.instance(
                sql, parameters, exc, dialect.loaded_dbapi.Error,
                connection_invalidated=lost, dialect=dialect) from exc

    # -- rows ----------------------------------------------------------------------------------

    def get(self, table: str, keys: Iterable[str]) -> dict[str, Row]:
        wanted = list(dict.fromkeys(keys))
        if not wanted:
            return {}
        if self.postgresql:
            # Any number of keys in one round trip: one array parameter.
            if len(wanted) == 1:
                found = self._execute(self._statements["get_one"], {"t": table, "k": wanted[0]})
            else:
                found = self._execute(self._statements["get"],
                                      {"t": table, "keys": json.dumps(wanted)})
        else:
            found = []
            for start in range(0, len(wanted), MANY_CHUNK):
                found += self._execute(self._portable.get, {
                    "t": table, "keys": wanted[start:start + MANY_CHUNK]})
        return {key: Row(version, value) for key, version, value in found}

    def scan(self, table: str, partition: str) -> list[tuple[str, Row]]:
        statement = self._statements["scan"] if self.postgresql else self._portable.scan
        return [(key, Row(version, value))
                for key, version, value in self._execute(statement, {"t": table, "p": partition})]

    def put(self, table: str, key: str, value: str, *, partition: str = "",
            expect: int | None = None) -> bool:
        if not self.postgresql:
            return self._put_portable(table, key, value, partition, expect)
        parameters = {"t": table, "k": key, "p": partition, "v": value}
        if expect is None:
            self._execute(self._statements["put"], parameters)
            return True
        if expect == 0:
            return bool(self._execute(self._statements["put_new"], parameters))
        return bool(self._execute(self._statements["put_if"], dict(parameters, e=expect)))

    def _put_portable(self, table: str, key: str, value: str, partition: str,
                      expect: int | None) -> bool:
        statements = self._portable
        with self.transaction():  # the writer lock, so the read still holds at the write
            found = self._execute(statements.version, {"t": table, "k": key})
            version = found[0][0] if found else 0
            if expect is not None and version != expect:
                return False
            if found:
                self._execute(statements.update, {"t": table, "k": key, "v": value})
                return True
            seq = self._execute(statements.next_seq, {"t": table, "p": partition})[0][0]
            self._execute(statements.insert, {"t": table, "k": key, "p": partition, "seq": seq,
                                              "v": value})
            return True

    def put_many(self, table: str, values: dict[str, str], partition: str = "") -> None:
        """``put`` of every key to its value (no compare-and-set) in a few statements: one per
        thousands of rows on PostgreSQL. Not part of the Backend protocol; the store's
        set_delivered_many fast path uses it."""
        if not self.postgresql:
            with self.transaction():
                for key, value in values.items():
                    self.put(table, key, value, partition=partition)
            return
        items = list(values.items())
        for start in range(0, len(items), _PUT_MANY_CHUNK):
            chunk = items[start:start + _PUT_MANY_CHUNK]
            self._execute(self._statements["put_many"], {
                "t": table, "p": partition, "pairs": json.dumps(dict(chunk))})

    def delete(self, table: str, keys: Iterable[str]) -> None:
        wanted = list(dict.fromkeys(keys))
        if not wanted:
            return
        if self.postgresql:
            self._execute(self._statements["delete"], {"t": table, "keys": json.dumps(wanted)})
            return
        with self.transaction():
            for start in range(0, len(wanted), MANY_CHUNK):
                self._execute(self._portable.delete,
                              {"t": table, "keys": wanted[start:start + MANY_CHUNK]})

    # -- the index of due items ----------------------------------------------------------------

    def index_set(self, index: str, member: str, score: str | None) -> None:
        parameters = {"n": index, "m": member, "s": score}
        if self.postgresql:
            name = "index_unset" if score is None else "index_set"
            self._execute(self._statements[name], parameters)
            return
        with self.transaction():
            self._execute(self._portable.index_unset, parameters)
            if score is not None:
                self._execute(self._portable.index_insert, parameters)

    def index_range(self, index: str, upto: str, limit: int) -> list[tuple[str, str]]:
        statement = self._statements["index_range"] if self.postgresql \
            else self._portable.index_range
        rows = self._execute(statement, {"n": index, "upto": upto, "limit": limit})
        return [(member, score) for member, score in rows]

    # -- fast paths' statements (PostgreSQL) ---------------------------------------------------

    def seen(self, ven_id: str, now: str, offline_at: str,
             lease_until: str) -> tuple[bool, int]:
        """record_seen's liveness compare-and-set as one statement: whether the VEN was online
        already, and its epoch now."""
        parameters = {"ven": ven_id, "now": now, "offline_at": offline_at,
                      "lease_until": lease_until}
        while True:
            stays, epoch, written = self._execute(self._statements["seen"], parameters)[0]
            if written:
                return stays, epoch
            # Another process inserted the VEN's first row first: read it and go again.

    def poll_rows(self, ven_id: str, records: str) -> list[Any]:
        """The rows of get_poll_state as ``(part, seq, key, value)``, by part then seq."""
        return self._execute(self._statements["poll_state"], {"ven": ven_id,
                                                              "records": records})


class _OtherLayout(Exception):
    """The cause of the StoreError refusing tables of another layout version."""


# Rows per statement of put_many: big enough that 100,000 VENs take a few round trips, small
# enough that one statement's parameters stay a few megabytes.
_PUT_MANY_CHUNK = 10_000


class SQLStore(RulesStore):
    """The SQL store: :class:`~flask_openadr.store.rules.RulesStore` on a :class:`SQLBackend`,
    with fast paths on PostgreSQL (see the module documentation).

    Open it with :func:`flask_openadr.store.open_store`; the arguments are
    :class:`SQLBackend`'s.
    """

    #: Shared by every process that opens the same URI (see :attr:`Store.single_process`).
    single_process: ClassVar[bool] = False

    backend: SQLBackend

    def __init__(self, url: str | sa.URL, *, table_prefix: str = DEFAULT_TABLE_PREFIX,
                 uri: str | None = None, engine_options: dict[str, Any] | None = None):
        super().__init__(SQLBackend(url, table_prefix=table_prefix, uri=uri,
                                    engine_options=engine_options))

    def __repr__(self) -> str:
        return f"SQLStore({self.uri!r}, table_prefix={self.table_prefix!r})"

    @property
    def url(self) -> sa.URL:
        return self.backend.url

    @property
    def uri(self) -> str:
        return self.backend.uri

    @property
    def table_prefix(self) -> str:
        return self.backend.table_prefix

    # -- fast paths (PostgreSQL): each does exactly what the rules' method does ----------------

    def record_seen(self, ven_id: str, now: datetime, offline_at: datetime,
                    lease_until: datetime, nonce: str | None = None,
                    nonce_expires_at: datetime | None = None) -> Transition | None:
        """One statement instead of a block of six (docs/stores.rst); with a nonce, the
        rules' nonce compare-and-set and that statement in the VEN's block."""
        if not self.backend.postgresql or not isinstance(ven_id, str):
            return super().record_seen(ven_id, now, offline_at, lease_until, nonce,
                                       nonce_expires_at)
        texts = (utc_text(now, "now"), utc_text(offline_at, "offline_at"),
                 utc_text(lease_until, "lease_until"))
        nonce_texts = check_seen_nonce(nonce, now, nonce_expires_at)
        if nonce is None or nonce_texts is None:
            return self._seen_now(ven_id, *texts)
        with self.backend.transaction(ven_id):
            if not self._take_nonce(nonce, *nonce_texts):
                raise NonceUsed(nonce)  # and the block writes nothing
            return self._seen_now(ven_id, *texts)

    def _seen_now(self, ven_id: str, now: str, offline_at: str,
                  lease_until: str) -> Transition | None:
        stays, epoch = self.backend.seen(ven_id, now, offline_at, lease_until)
        return None if stays else {"ven_id": ven_id, "kind": "online", "epoch": epoch}

    def get_poll_state(self, ven_id: str, kind: str) -> PollState:
        """One statement instead of three reads (docs/stores.rst)."""
        if not self.backend.postgresql or not isinstance(ven_id, str):
            return super().get_poll_state(ven_id, kind)
        state: PollState = {"delivered": {}, "records": [], "outbox": []}
        outbox: list[tuple[int, str]] = []
        for part, _, key, value in self.backend.poll_rows(ven_id, _key(kind, ven_id)):
            if part == 0:
                state["delivered"] = serialize.loads(value) or {}
            elif part == 1:
                state["records"].append(serialize.loads(value))
            else:
                outbox.append((json.loads(key)[1], value))
        # The rules' outbox order: by priority, first put first within one (a stable sort).
        outbox.sort(key=lambda entry: entry[0])
        state["outbox"] = [serialize.loads(value) for _, value in outbox]
        return state

    def _put_delivered(self, texts: dict[str, str]) -> None:
        """The puts of :meth:`~RulesStore.set_delivered_many` in a few multi-row statements
        instead of one per VEN (docs/stores.rst)."""
        if not self.backend.postgresql:
            super()._put_delivered(texts)
            return
        self.backend.put_many(DELIVERED, texts)


#: A pooled connection unused for longer than this is pinged before it is handed out.
PING_AFTER_IDLE = 1.0


def _ping_when_idle(engine: sa.Engine) -> None:
    """Check a pooled connection before use only when it sat idle, so the store recovers by
    itself after the database restarted without paying a round trip per statement.

    ``pool_pre_ping`` pings at every checkout: a third of a simple statement's time, and the
    sweep or a poll checks out a connection several times in a row. A connection used a moment
    ago is as good as a ping; one idle across an outage is pinged, fails, and is replaced (the
    pool retries the checkout with a fresh connection). A connection that breaks while in use
    raises StoreError once and is discarded with the rest of the pool, as before.
    """

    @sa.event.listens_for(engine, "checkin")
    def stamp(dbapi_connection: DBAPIConnection, record: sa.pool.ConnectionPoolEntry) -> None:
        record.info["flask_openadr_idle_since"] = time.monotonic()

    @sa.event.listens_for(engine, "checkout")
    def ping(dbapi_connection: DBAPIConnection, record: sa.pool.ConnectionPoolEntry,
             proxy: sa.pool.PoolProxiedConnection) -> None:
        idle_since = record.info.get("flask_openadr_idle_since")
        if idle_since is not None and time.monotonic() - idle_since < PING_AFTER_IDLE:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:
            raise sa.exc.DisconnectionError(f"pooled connection is dead: {exc}") from exc


