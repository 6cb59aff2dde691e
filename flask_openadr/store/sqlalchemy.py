"""The SQL store (``postgresql://`` and other SQLAlchemy URLs): one VTN's workers on many hosts.

Built on SQLAlchemy Core (the ``[sqlalchemy]`` extra, which brings psycopg 3). PostgreSQL is the
database this store is tested on and tuned for; the code is written so that other databases
SQLAlchemy knows (MySQL/MariaDB, SQLite through SQLAlchemy, ...) work too, with the differences
noted where they are made.

**Tables.** Every table is named ``<table_prefix><name>`` (default prefix ``openadr_``, chosen with
``?table_prefix=`` in the URI), so several VTNs, or a VTN and its tests, can share one database.
:meth:`SQLStore.create_schema` (``flask openadr init-db``) creates them; the store also creates
them the first time a process uses it. Records are kept as the JSON text of
:mod:`flask_openadr.store.serialize` (text, not JSONB: JSONB refuses the ``\\u0000`` a record may
hold, and nothing queries inside a record).

**Transactions.** :meth:`SQLStore.atomic` runs its block in one transaction on one connection,
held by the thread for the outermost block. On PostgreSQL the block first takes a transaction-level
advisory lock whose key is derived from the table prefix, so every writer of this VTN, in any
process on any host, waits for the block: what it read is still true when it writes. On other
databases it takes the same role by updating one row of the ``meta`` table. The calls the protocol
runs at every message or poll are single compare-and-set statements that need no lock:
``record_seen`` (one ``INSERT ... ON CONFLICT DO UPDATE ... RETURNING``), the other liveness
transitions (one conditional ``UPDATE`` each) and ``pop_outbox`` (one ``DELETE ... RETURNING`` of
the row a ``FOR UPDATE SKIP LOCKED`` subquery chose). Every other write outside a block is a short
block of its own.

**Processes.** The engine (and its connection pool) belongs to the process that created it: after
``fork()`` the child creates its own, and only detaches the inherited one
(``engine.dispose(close=False)``, SQLAlchemy's documented pattern), keeping it referenced so that
its connections, which the parent still uses, are never closed or finalised in the child.

**Outages.** Connections are checked with a ping when taken from the pool, so after a restart of
the database server the store reconnects by itself; while the server is down every call raises
:class:`~flask_openadr.errors.StoreError` (requests answer HTTP 503) within the connect timeout.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import re
import threading
import time
from datetime import datetime, timezone
from typing import (
    TYPE_CHECKING, Any, Callable, ClassVar, Iterator, NamedTuple, Sequence, TypeVar, overload,
)

from ..errors import ConfigurationError, StoreError
from ..protocol import is_aware
from . import serialize
from .base import (
    PollState,
    EventResponseRecord,
    Liveness,
    NonceUsed,
    OutboxItem,
    Transition,
    VenRecord,
    MANY_CHUNK,
    check_delivered,
    check_max_priority,
    check_seen_nonce,
    event_id_of,
    event_response_key,
    normalize_fingerprint,
    outbox_priority,
    received_at_text,
    ven_id_of,
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

__all__ = ["SQLStore", "from_uri", "SCHEMA_VERSION", "DEFAULT_TABLE_PREFIX"]

#: The schema this code writes, kept in the ``meta`` table; a newer one is refused.
SCHEMA_VERSION = 2
# How often (in new nonces per process) remember_nonce deletes the expired ones.
_NONCE_PURGE_EVERY = 100

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

UTC = timezone.utc
_ONLINE = "online"
_OFFLINE = "offline"

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


class _Reads(NamedTuple):
    """The prebuilt reads of :attr:`SQLStore._reads`."""

    ven: Any
    ven_by_fingerprint: Any
    delivered: Any
    record: Any
    records: Any
    outbox: Any
    poll_state: Any


class _Tables(NamedTuple):
    metadata: sa.MetaData
    meta: sa.Table
    vens: sa.Table
    events: sa.Table
    delivered: sa.Table
    event_responses: sa.Table
    outbox: sa.Table
    records: sa.Table
    liveness: sa.Table
    nonces: sa.Table


def _define_tables(prefix: str) -> _Tables:
    """The store's tables, named ``prefix + name``, with types that work on every dialect."""
    from sqlalchemy.dialects import mysql

    # Keys sort in code point order (list_vens, ties in the sweeps): collation "C" on
    # PostgreSQL, utf8mb4_bin on MySQL; SQLite compares bytes already. MySQL cannot index TEXT.
    def key() -> sa.types.TypeEngine[str]:
        return (
            sa.Text()
            .with_variant(sa.Text(collation="C"), "postgresql")
            .with_variant(sa.String(255, collation="utf8mb4_bin"), "mysql", "mariadb")
        )

    def data() -> sa.types.TypeEngine[str]:
        return sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")

    def time() -> sa.types.TypeEngine[datetime]:
        # timestamptz on PostgreSQL; microseconds on MySQL. Values are bound in UTC.
        return sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")

    def column(name: str, type_: sa.types.TypeEngine[T], **kwargs: Any) -> sa.Column[T]:
        kwargs.setdefault("nullable", False)
        return sa.Column(name, type_, **kwargs)

    metadata = sa.MetaData()

    def name(table: str) -> str:
        return prefix + table

    meta = sa.Table(
        name("meta"), metadata,
        column("name", sa.String(64), primary_key=True),
        column("value", sa.BigInteger()),
    )
    vens = sa.Table(
        name("vens"), metadata,
        column("ven_id", key(), primary_key=True),
        column("fingerprint", key(), nullable=True),  # normalize_fingerprint(data.fingerprint)
        column("data", data()),
    )
    sa.Index(name("vens_fingerprint"), vens.c.fingerprint, vens.c.ven_id)
    events = sa.Table(
        name("events"), metadata,
        column("event_id", key(), primary_key=True),
        column("position", sa.BigInteger()),
        column("data", data()),
    )
    sa.Index(name("events_position"), events.c.position)
    delivered = sa.Table(
        name("delivered"), metadata,
        column("ven_id", key(), primary_key=True),
        column("data", data()),
    )
    event_responses = sa.Table(
        name("event_responses"), metadata,
        column("ven_id", key(), primary_key=True),
        column("event_id", key(), primary_key=True),
        column("modification_number", sa.BigInteger(), primary_key=True, autoincrement=False),
        column("received_at", key(), nullable=True),  # UTC ISO text that sorts by time
        column("data", data()),
    )
    sa.Index(name("event_responses_event"), event_responses.c.event_id)
    outbox = sa.Table(
        name("outbox"), metadata,
        # bigserial on PostgreSQL; SQLite only numbers an INTEGER key by itself.
        column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True,
               autoincrement=True),
        column("ven_id", key()),
        column("priority", sa.Integer()),
        column("data", data()),
        sqlite_autoincrement=True,
    )
    sa.Index(name("outbox_next"), outbox.c.ven_id, outbox.c.priority, outbox.c.id)
    records = sa.Table(
        name("records"), metadata,
        column("kind", key(), primary_key=True),
        column("ven_id", key(), primary_key=True),
        column("key", key(), primary_key=True),
        column("position", sa.BigInteger()),
        column("data", data()),
    )
    sa.Index(name("records_order"), records.c.kind, records.c.ven_id, records.c.position)
    liveness = sa.Table(
        name("liveness"), metadata,
        column("ven_id", key(), primary_key=True),
        column("state", sa.String(16), nullable=True),
        column("epoch", sa.BigInteger()),
        column("last_seen", time(), nullable=True),
        column("offline_at", time(), nullable=True),
        column("pending_kind", sa.String(16), nullable=True),
        column("pending_epoch", sa.BigInteger(), nullable=True),
        column("lease_until", time(), nullable=True),
        # Whether the latest record_seen made the VEN online: RETURNING shows only new values,
        # and this is how one INSERT ... ON CONFLICT statement tells its caller it won.
        column("went_online", sa.Boolean(), default=False),
    )
    # Partial indexes (PostgreSQL, SQLite; a plain index elsewhere): a sweep reads only the
    # rows it returns. The predicates use literals, as the sweep queries do, so that a generic
    # plan of a prepared statement can still prove it may use them.
    online = liveness.c.state == _literal(_ONLINE)
    pending = liveness.c.pending_kind.is_not(None)
    sa.Index(name("liveness_due"), liveness.c.offline_at, liveness.c.ven_id,
             postgresql_where=online, sqlite_where=online)
    sa.Index(name("liveness_stale"), liveness.c.lease_until, liveness.c.ven_id,
             postgresql_where=pending, sqlite_where=pending)
    # Version 2: replay nonces (remember_nonce).
    nonces = sa.Table(
        name("nonces"), metadata,
        column("nonce", key(), primary_key=True),
        column("expires_at", time()),
    )
    sa.Index(name("nonces_expiry"), nonces.c.expires_at)
    return _Tables(metadata, meta, vens, events, delivered, event_responses, outbox, records,
                   liveness, nonces)


def _literal(text: str) -> Any:
    """A string as an SQL literal rather than a bound parameter (``text`` is a constant)."""
    assert "'" not in text
    return sa.literal_column(f"'{text}'", sa.String())


_SCOPED_LOCK = None if sa is None else sa.text(
    "WITH vtn AS MATERIALIZED (SELECT pg_advisory_xact_lock_shared(:vtn) AS held) "
    "SELECT pg_advisory_xact_lock(:ven) FROM vtn"
)


def _advisory_key(prefix: str) -> int:
    """The PostgreSQL advisory lock key of one VTN's tables: a signed 64-bit hash of the prefix."""
    digest = hashlib.blake2b(f"flask-openadr:{prefix}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _aware(name: str, value: datetime) -> datetime:
    if not is_aware(value):
        raise ValueError(f"{name} must be an aware datetime, got {value!r}")
    return value.astimezone(UTC)


def _epoch(epoch: int) -> int:
    if not isinstance(epoch, int) or isinstance(epoch, bool):
        raise ValueError(f"epoch must be an int, got {epoch!r}")
    return epoch


def _limit(limit: int) -> int:
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 0:
        raise ValueError(f"limit must be an int >= 0, got {limit!r}")
    return limit


class _Features(NamedTuple):
    """What the dialect can do in one statement; the store falls back to steps under the
    writer lock for what it cannot."""

    upsert: str | None  # "on_conflict" (PostgreSQL, SQLite), "duplicate_key" (MySQL) or None
    seen_in_one_statement: bool  # INSERT ... ON CONFLICT DO UPDATE ... RETURNING
    pop_in_one_statement: bool  # DELETE ... RETURNING (FOR UPDATE SKIP LOCKED on PostgreSQL)


class _Block(threading.local):
    """This thread's open atomic() block: its connection and nesting depth, in process ``pid``."""

    pid = 0
    connection: sa.Connection | None = None
    depth = 0
    # The connection session() holds for the thread, in autocommit mode.
    session: sa.Connection | None = None


class SQLStore:
    """A :class:`~flask_openadr.store.base.Store` in a SQL database, through SQLAlchemy Core.

    Open it with :func:`flask_openadr.store.open_store`; see the module documentation for the
    tables, transactions and behaviour across processes and outages.

    :param url: the database URL (a :class:`sqlalchemy.engine.URL` or str), without
        ``table_prefix``.
    :param table_prefix: what the store's table names start with.
    :param uri: the URI as shown in messages (password hidden); default: from ``url``.
    :param engine_options: extra keyword arguments for :func:`sqlalchemy.create_engine`
        (``pool_size``, ``max_overflow``, ``pool_timeout``, ...).
    """

    #: Shared by every process that opens the same URI (see :attr:`Store.single_process`).
    single_process: ClassVar[bool] = False

    def __init__(self, url: str | sa.URL, *, table_prefix: str = DEFAULT_TABLE_PREFIX,
                 uri: str | None = None, engine_options: dict[str, Any] | None = None):
        if sa is None:
            raise ConfigurationError(f"the SQL store needs SQLAlchemy: {_EXTRA}")
        self.url = sa.engine.make_url(url)
        self.uri = uri or self.url.render_as_string(hide_password=True)
        self.table_prefix = table_prefix
        self.tables = _define_tables(table_prefix)
        self.backend = self.url.get_backend_name()
        self._engine_options = dict(engine_options or {})
        self._postgresql = self.backend == "postgresql"
        self._advisory_key = _advisory_key(table_prefix)
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._engines: dict[int, sa.Engine] = {}  # pid -> the Engine that process created
        # Pools inherited over fork, kept referenced so that the child never finalises (and so
        # closes) connections the parent is using.
        self._inherited: list[sa.pool.Pool] = []
        self._block = _Block()
        self._schema_ready = False
        self._nonce_calls = 0  # remember_nonce purges expired nonces every so many calls
        self._features: _Features | None = None

    def __repr__(self) -> str:
        return f"SQLStore({self.uri!r}, table_prefix={self.table_prefix!r})"

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
        if self._postgresql and self.url.get_driver_name() in ("psycopg", "psycopg2"):
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
        elif self.backend in ("mysql", "mariadb"):
            # Reads inside a block see what the writers before it committed.
            options["isolation_level"] = "READ COMMITTED"
        options.update(self._engine_options)
        with self._errors():
            engine = sa.create_engine(self.url, **options)
        _ping_when_idle(engine)
        return engine

    def features(self) -> _Features:
        """What this database does in one statement (known once the first engine exists)."""
        if self._features is None:
            dialect = self._engine().dialect
            on_conflict = self.backend in ("postgresql", "sqlite")
            self._features = _Features(
                upsert="on_conflict" if on_conflict else (
                    "duplicate_key" if self.backend in ("mysql", "mariadb") else None
                ),
                seen_in_one_statement=on_conflict and bool(dialect.insert_returning),
                pop_in_one_statement=on_conflict and bool(dialect.delete_returning),
            )
        return self._features

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

    def maintain(self, now: datetime | None = None) -> None:
        """Nothing to do (see :meth:`~flask_openadr.store.base.Store.maintain`)."""

    def create_schema(self) -> None:
        """Create the tables and indexes that do not exist yet (idempotent); see
        :meth:`flask_openadr.store.base.Store.create_schema`. Safe to run from several
        processes at once.

        :raises StoreError: when the database holds a schema written by a newer flask-openadr.
        """
        if self._block.pid == os.getpid() and self._block.connection is not None:
            with self._errors():
                self._create_schema(self._block.connection)
        else:
            engine = self._engine()
            attempts = 1 if self._postgresql else 3
            for attempt in range(attempts):
                try:
                    with self._errors(), engine.begin() as connection:
                        if self._postgresql:
                            self._lock_writers(connection)
                        self._create_schema(connection)
                    break
                except StoreError:
                    # Without transactional DDL two processes may both create a table; the
                    # loser's next look finds it there.
                    if attempt == attempts - 1:
                        raise
        self._schema_ready = True

    def _create_schema(self, connection: sa.Connection) -> None:
        tables = self.tables
        tables.metadata.create_all(connection, checkfirst=True)
        meta = tables.meta
        version = connection.execute(
            sa.select(meta.c.value).where(meta.c.name == "schema_version")
        ).scalar()
        if version is None:
            connection.execute(
                sa.insert(meta),
                [{"name": "schema_version", "value": SCHEMA_VERSION},
                 {"name": "writer_lock", "value": 0}],
            )
        elif version < SCHEMA_VERSION:
            # create_all above added the tables of the newer versions (each version so far
            # only adds tables).
            connection.execute(
                sa.update(meta).where(meta.c.name == "schema_version")
                .values(value=SCHEMA_VERSION)
            )
        elif version > SCHEMA_VERSION:
            raise StoreError(
                f"SQL store {self.uri}: the tables {self.table_prefix}* have schema version "
                f"{version}, written by a newer flask-openadr; this one knows up to "
                f"{SCHEMA_VERSION}"
            )

    def _ensure_schema(self) -> None:
        """Create the schema on this store's first use, unless it is there already: that look
        takes no lock, so it never waits for (or on) a block open in this or another thread."""
        if self._schema_ready:
            return
        meta = self.tables.meta
        with self._errors(), self._engine().connect() as connection:
            connection.execution_options(isolation_level="AUTOCOMMIT")
            version = None
            if sa.inspect(connection).has_table(meta.name):
                version = connection.execute(
                    sa.select(meta.c.value).where(meta.c.name == "schema_version")
                ).scalar()
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
        """Make every other writer of these tables (of this VEN, with ``ven_id``) wait until
        this transaction ends."""
        if self._postgresql and ven_id is not None:
            # One round trip for both: the VTN's lock shared, then the VEN's exclusively. The
            # order matters (PostgreSQL queues a shared request behind a waiting exclusive one,
            # so taking the VEN's lock first could close a cycle); the materialised CTE is
            # evaluated before the outer SELECT, which fixes it.
            connection.execute(_SCOPED_LOCK, {
                "vtn": self._advisory_key,
                "ven": _advisory_key(f"{self.table_prefix}\0{ven_id}"),
            })
        elif self._postgresql:
            connection.execute(sa.select(sa.func.pg_advisory_xact_lock(self._advisory_key)))
        else:
            meta = self.tables.meta
            connection.execute(
                sa.update(meta).where(meta.c.name == "writer_lock").values(value=meta.c.value + 1)
            )

    @contextlib.contextmanager
    def atomic(self, ven_id: str | None = None) -> Iterator[None]:
        """See :meth:`flask_openadr.store.base.Store.atomic`.

        The outermost block takes a connection from the pool, begins a transaction and takes
        the writer lock (see the module documentation) before anything else, so a second
        writer, in any thread of any process, waits there before it has read anything. On
        PostgreSQL a block with ``ven_id`` takes the VTN's advisory lock shared and the VEN's
        own advisory lock exclusively, so blocks of different VENs run side by side while
        VTN-wide blocks (which take the VTN's lock exclusively) still exclude them all.
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
                self._lock_writers(connection, ven_id)
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
        """See :meth:`flask_openadr.store.base.Store.session`: one connection from the pool
        for everything this thread does until the end, in autocommit outside atomic() blocks
        (whose transactions run on it too). Re-entrant; inside a block, nothing changes."""
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

    def _write(self, work: Callable[[sa.Connection], T]) -> T:
        """``work(connection)`` while holding the writer lock: in this thread's block, or in a
        short block of its own."""
        with self.atomic():
            return self._run(work)

    def _rows(self, statement: Any) -> Sequence[Any]:
        return self._run(lambda connection: connection.execute(statement).all())

    def _upsert(self, connection: sa.Connection, table: sa.Table, values: dict[str, Any],
                update: list[str]) -> None:
        """Insert ``values``, or update the ``update`` columns of the row with the same primary
        key. The caller holds the writer lock (the fallback is an UPDATE, then an INSERT)."""
        keys = [column.name for column in table.primary_key.columns]
        upsert = self.features().upsert
        if upsert == "on_conflict":
            dialect = _dialect_module(self.backend)
            statement = dialect.insert(table).values(values)
            statement = statement.on_conflict_do_update(
                index_elements=keys, set_={name: statement.excluded[name] for name in update}
            )
            connection.execute(statement)
        elif upsert == "duplicate_key":
            from sqlalchemy.dialects import mysql

            statement = mysql.insert(table).values(values)
            statement = statement.on_duplicate_key_update(
                {name: statement.inserted[name] for name in update}
            )
            connection.execute(statement)
        else:
            where = [table.c[name] == values[name] for name in keys]
            changed = connection.execute(
                sa.update(table).where(*where).values({name: values[name] for name in update})
            )
            if changed.rowcount == 0:
                connection.execute(sa.insert(table).values(values))

    def _next_position(self, connection: sa.Connection, table: sa.Table,
                       *where: sa.ColumnElement[bool]) -> int:
        """One more than the highest ``position`` (a subquery in the INSERT would be one round
        trip less, but MySQL refuses to read the table it inserts into)."""
        highest = connection.execute(
            sa.select(sa.func.max(table.c.position)).where(*where)
        ).scalar()
        return (highest or 0) + 1

    # -- VENs ----------------------------------------------------------------------------------
    # Values are validated and encoded before any statement runs, so a refused value writes
    # nothing.

    @functools.cached_property
    def _reads(self) -> _Reads:
        """The reads every VEN message makes, built once with bound parameters: building a
        construct costs more CPU than executing it (on PostgreSQL 108 us against 43 us per
        read, bench figures in docs/benchmarks.rst), and a poll makes several."""
        tables = self.tables
        vens, delivered, records, outbox = tables.vens, tables.delivered, tables.records, \
            tables.outbox
        ven_id: sa.BindParameter[str] = sa.bindparam("ven_id")
        return _Reads(
            ven=sa.select(vens.c.data).where(vens.c.ven_id == ven_id),
            ven_by_fingerprint=sa.select(vens.c.data)
            .where(vens.c.fingerprint == sa.bindparam("fingerprint"))
            .order_by(vens.c.ven_id).limit(1),
            delivered=sa.select(delivered.c.data).where(delivered.c.ven_id == ven_id),
            record=sa.select(records.c.data).where(
                records.c.kind == sa.bindparam("kind"), records.c.ven_id == ven_id,
                records.c.key == sa.bindparam("key")),
            records=sa.select(records.c.data).where(
                records.c.kind == sa.bindparam("kind"), records.c.ven_id == ven_id)
            .order_by(records.c.position),
            outbox=sa.select(outbox.c.data).where(outbox.c.ven_id == ven_id)
            .order_by(outbox.c.priority, outbox.c.id),
            poll_state=self._poll_state_statement(),
        )

    def _poll_state_statement(self) -> Any:
        """get_delivered, list_records and list_outbox of one VEN as one UNION ALL: each row
        says which of the three it belongs to (``part``) and its place there (``o1``, ``o2``).
        With the prebuilt reads it took an empty PostgreSQL poll from 2.15 to about 1.5 ms of
        worker CPU (docs/benchmarks.rst, "Delivery at scale")."""
        tables = self.tables
        delivered, records, outbox = tables.delivered, tables.records, tables.outbox
        ven_id: sa.BindParameter[str] = sa.bindparam("ven_id")

        def number(value: int) -> Any:
            return sa.literal_column(str(value), sa.BigInteger())

        return sa.union_all(
            sa.select(number(0).label("part"), number(0).label("o1"), number(0).label("o2"),
                      delivered.c.data).where(delivered.c.ven_id == ven_id),
            sa.select(number(1), records.c.position, number(0), records.c.data)
            .where(records.c.kind == sa.bindparam("kind"), records.c.ven_id == ven_id),
            sa.select(number(2), outbox.c.priority, outbox.c.id, outbox.c.data)
            .where(outbox.c.ven_id == ven_id),
        ).order_by(sa.text("part"), sa.text("o1"), sa.text("o2"))

    def _read(self, statement: Any, **parameters: Any) -> Sequence[Any]:
        return self._run(lambda connection: connection.execute(statement, parameters).all())

    def get_ven(self, ven_id: str) -> VenRecord | None:
        rows = self._read(self._reads.ven, ven_id=ven_id)
        return serialize.loads(rows[0][0]) if rows else None

    def get_ven_by_fingerprint(self, fingerprint: str) -> VenRecord | None:
        wanted = normalize_fingerprint(fingerprint)
        if wanted is None:
            return None
        rows = self._read(self._reads.ven_by_fingerprint, fingerprint=wanted)
        return serialize.loads(rows[0][0]) if rows else None

    def put_ven(self, ven: VenRecord) -> None:
        values = {
            "ven_id": ven_id_of(ven),
            "fingerprint": normalize_fingerprint(ven.get("fingerprint")),
            "data": serialize.dumps(ven),
        }
        self._write(lambda c: self._upsert(c, self.tables.vens, values, ["fingerprint", "data"]))

    def list_vens(self) -> list[VenRecord]:
        vens = self.tables.vens
        rows = self._rows(sa.select(vens.c.data).order_by(vens.c.ven_id))
        return [serialize.loads(data) for (data,) in rows]

    def delete_event_responses(self, event_id: str) -> None:
        table = self.tables.event_responses
        self._write(lambda c: c.execute(sa.delete(table).where(table.c.event_id == event_id)))

    # -- events --------------------------------------------------------------------------------

    def put_event(self, event: dict[str, Any]) -> None:
        event_id = event_id_of(event)
        text = serialize.dumps(event)
        events = self.tables.events

        def work(connection: sa.Connection) -> None:
            # A replaced event keeps its position; a new one goes after every other.
            position = self._next_position(connection, events)
            values = {"event_id": event_id, "position": position, "data": text}
            self._upsert(connection, events, values, ["data"])

        self._write(work)

    def get_event(self, event_id: str) -> dict[str, Any] | None:
        events = self.tables.events
        rows = self._rows(sa.select(events.c.data).where(events.c.event_id == event_id))
        return serialize.loads(rows[0][0]) if rows else None

    def get_events(self, event_ids: list[str]) -> dict[str, dict[str, Any]]:
        events = self.tables.events
        return self._load_many(events, events.c.event_id, event_ids)

    def _load_many(self, table: sa.Table, key: sa.Column[Any],
                   keys: list[str]) -> dict[str, dict[str, Any]]:
        """The decoded ``data`` of the rows of ``table`` whose ``key`` column is one of ``keys``
        (missing ones left out), read MANY_CHUNK keys a statement."""
        found: dict[str, dict[str, Any]] = {}
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), MANY_CHUNK):
            chunk = unique[start:start + MANY_CHUNK]
            for found_key, data in self._rows(sa.select(key, table.c.data).where(key.in_(chunk))):
                found[found_key] = serialize.loads(data)
        return found

    def list_events(self) -> list[dict[str, Any]]:
        events = self.tables.events
        rows = self._rows(sa.select(events.c.data).order_by(events.c.position))
        return [serialize.loads(data) for (data,) in rows]

    def delete_event(self, event_id: str) -> None:
        events = self.tables.events
        self._write(lambda c: c.execute(sa.delete(events).where(events.c.event_id == event_id)))

    # -- delivery state ------------------------------------------------------------------------

    def get_delivered(self, ven_id: str) -> dict[str, int]:
        rows = self._read(self._reads.delivered, ven_id=ven_id)
        return serialize.loads(rows[0][0]) if rows else {}

    def set_delivered(self, ven_id: str, delivered: dict[str, int]) -> None:
        if not isinstance(delivered, dict):
            raise TypeError(f"delivered must be a dict of event_id -> int, got {delivered!r}")
        table = self.tables.delivered
        if not delivered:
            self._write(lambda c: c.execute(sa.delete(table).where(table.c.ven_id == ven_id)))
            return
        values = {"ven_id": ven_id, "data": serialize.dumps(delivered)}
        self._write(lambda c: self._upsert(c, table, values, ["data"]))

    def get_delivered_many(self, ven_ids: list[str]) -> dict[str, dict[str, Any]]:
        table = self.tables.delivered
        found: dict[str, dict[str, Any]] = {ven_id: {} for ven_id in ven_ids}
        found.update(self._load_many(table, table.c.ven_id, ven_ids))
        return found

    def set_delivered_many(self, delivered: dict[str, dict[str, Any]]) -> None:
        for value in delivered.values():
            check_delivered(value)
        table = self.tables.delivered
        gone = [ven_id for ven_id, value in delivered.items() if not value]
        kept = [{"ven_id": ven_id, "data": serialize.dumps(value)}
                for ven_id, value in delivered.items() if value]

        def write(connection: sa.Connection) -> None:
            for start in range(0, len(gone), MANY_CHUNK):
                connection.execute(sa.delete(table).where(
                    table.c.ven_id.in_(gone[start:start + MANY_CHUNK])))
            if not kept:
                return
            if self.features().upsert == "on_conflict":
                # One statement, many rows: a few round trips for thousands of VENs.
                statement = _dialect_module(self.backend).insert(table)
                statement = statement.on_conflict_do_update(
                    index_elements=["ven_id"], set_={"data": statement.excluded["data"]})
                for start in range(0, len(kept), MANY_CHUNK):
                    connection.execute(statement, kept[start:start + MANY_CHUNK])
            else:
                for values in kept:
                    self._upsert(connection, table, values, ["data"])

        self._write(write)

    # -- event responses -----------------------------------------------------------------------

    def put_event_response(self, response: EventResponseRecord) -> None:
        ven_id, event_id, modification_number = event_response_key(response)
        values = {
            "ven_id": ven_id,
            "event_id": event_id,
            "modification_number": modification_number,
            "received_at": received_at_text(response),
            "data": serialize.dumps(response),
        }
        table = self.tables.event_responses
        self._write(lambda c: self._upsert(c, table, values, ["received_at", "data"]))

    def list_event_responses(self, event_id: str) -> list[EventResponseRecord]:
        table = self.tables.event_responses
        # A missing received_at sorts first, as in the other stores; PostgreSQL would put NULL
        # last and MySQL does not know NULLS FIRST, so say it with a CASE.
        rows = self._rows(
            sa.select(table.c.data)
            .where(table.c.event_id == event_id)
            .order_by(
                sa.case((table.c.received_at.is_(None), 0), else_=1),
                table.c.received_at,
                table.c.ven_id,
                table.c.modification_number,
            )
        )
        return [serialize.loads(data) for (data,) in rows]

    # -- outbox --------------------------------------------------------------------------------

    def push_outbox(self, ven_id: str, item: OutboxItem) -> None:
        values = {"ven_id": ven_id, "priority": outbox_priority(item),
                  "data": serialize.dumps(item)}
        outbox = self.tables.outbox
        self._write(lambda c: c.execute(sa.insert(outbox).values(values)))

    def _next_item(self, ven_id: str, max_priority: int | None) -> Any:
        outbox = self.tables.outbox
        query = sa.select(outbox.c.id).where(outbox.c.ven_id == ven_id)
        if max_priority is not None:
            query = query.where(outbox.c.priority <= max_priority)
        return query.order_by(outbox.c.priority, outbox.c.id).limit(1)

    def pop_outbox(self, ven_id: str, max_priority: int | None = None) -> OutboxItem | None:
        check_max_priority(max_priority)
        outbox = self.tables.outbox
        if self.features().pop_in_one_statement:
            # One statement: the subquery locks the next row that no other transaction has
            # locked (SQLite has one writer at a time and no FOR UPDATE), the DELETE takes it.
            chosen = self._next_item(ven_id, max_priority).with_for_update(skip_locked=True)
            statement = (
                sa.delete(outbox)
                .where(outbox.c.id == chosen.scalar_subquery())
                .returning(outbox.c.data)
            )
            rows = self._run(lambda c: c.execute(statement).all())
            return serialize.loads(rows[0][0]) if rows else None

        # Under the writer lock: nobody pops between the read and the delete.
        def work(connection: sa.Connection) -> str | None:
            chosen = self._next_item(ven_id, max_priority).add_columns(outbox.c.data)
            row = connection.execute(chosen).first()
            if row is None:
                return None
            connection.execute(sa.delete(outbox).where(outbox.c.id == row.id))
            data: str = row.data  # the column's declared type is Text
            return data

        text = self._write(work)
        return None if text is None else serialize.loads(text)

    def list_outbox(self, ven_id: str) -> list[OutboxItem]:
        rows = self._read(self._reads.outbox, ven_id=ven_id)
        return [serialize.loads(data) for (data,) in rows]

    def get_poll_state(self, ven_id: str, kind: str) -> PollState:
        """See :meth:`flask_openadr.store.base.Store.get_poll_state`: one statement."""
        self._record_key(kind, ven_id, "")
        state: PollState = {"delivered": {}, "records": [], "outbox": []}
        for part, _, _, data in self._read(self._reads.poll_state, ven_id=ven_id, kind=kind):
            if part == 0:
                state["delivered"] = serialize.loads(data)
            else:
                state["records" if part == 1 else "outbox"].append(serialize.loads(data))
        return state

    def clear_outbox(self, ven_id: str) -> None:
        outbox = self.tables.outbox
        self._write(lambda c: c.execute(sa.delete(outbox).where(outbox.c.ven_id == ven_id)))

    # -- records -------------------------------------------------------------------------------

    @staticmethod
    def _record_key(kind: str, ven_id: str, key: str) -> None:
        for name, value in (("kind", kind), ("ven_id", ven_id), ("key", key)):
            if not isinstance(value, str):
                raise ValueError(f"a record's {name} must be a str, got {value!r}")

    def put_record(self, kind: str, ven_id: str, key: str, record: dict[str, Any]) -> None:
        self._record_key(kind, ven_id, key)
        if not isinstance(record, dict):
            raise TypeError(f"a record must be a dict, got {record!r}")
        text = serialize.dumps(record)
        records = self.tables.records

        def work(connection: sa.Connection) -> None:
            position = self._next_position(
                connection, records, records.c.kind == kind, records.c.ven_id == ven_id
            )
            values = {"kind": kind, "ven_id": ven_id, "key": key, "position": position,
                      "data": text}
            self._upsert(connection, records, values, ["data"])

        self._write(work)

    def _record_where(self, kind: str, ven_id: str, key: str | None = None) -> list[Any]:
        records = self.tables.records
        where = [records.c.kind == kind, records.c.ven_id == ven_id]
        if key is not None:
            where.append(records.c.key == key)
        return where

    def get_record(self, kind: str, ven_id: str, key: str) -> dict[str, Any] | None:
        self._record_key(kind, ven_id, key)
        rows = self._read(self._reads.record, kind=kind, ven_id=ven_id, key=key)
        return serialize.loads(rows[0][0]) if rows else None

    def list_records(self, kind: str, ven_id: str) -> list[dict[str, Any]]:
        self._record_key(kind, ven_id, "")
        rows = self._read(self._reads.records, kind=kind, ven_id=ven_id)
        return [serialize.loads(data) for (data,) in rows]

    def delete_record(self, kind: str, ven_id: str, key: str) -> None:
        where = self._record_where(kind, ven_id, key)
        self._write(lambda c: c.execute(sa.delete(self.tables.records).where(*where)))

    def clear_records(self, kind: str, ven_id: str) -> None:
        where = self._record_where(kind, ven_id)
        self._write(lambda c: c.execute(sa.delete(self.tables.records).where(*where)))

    # -- liveness ------------------------------------------------------------------------------
    # Every transition is one compare-and-set statement keyed on the VEN's epoch (which names
    # its state: it goes up by one per transition), so no lock is needed and exactly one caller
    # wins.

    def _bind_time(self, value: datetime) -> datetime:
        """A UTC datetime as the column takes it: aware for timestamptz, naive UTC for the
        dialects whose DATETIME has no zone."""
        return value if self.backend in ("postgresql", "oracle", "mssql") else value.replace(
            tzinfo=None
        )

    @overload
    @staticmethod
    def _read_time(value: datetime) -> datetime: ...

    @overload
    @staticmethod
    def _read_time(value: None) -> None: ...

    @staticmethod
    def _read_time(value: datetime | None) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    def record_seen(self, ven_id: str, now: datetime, offline_at: datetime,
                    lease_until: datetime, nonce: str | None = None,
                    nonce_expires_at: datetime | None = None) -> Transition | None:
        if not isinstance(ven_id, str):
            raise ValueError(f"ven_id must be a str, got {ven_id!r}")
        check_seen_nonce(nonce, now, nonce_expires_at)
        seen_at = now
        now = self._bind_time(_aware("now", now))
        offline_at = self._bind_time(_aware("offline_at", offline_at))
        lease_until = self._bind_time(_aware("lease_until", lease_until))
        one_statement = self.features().seen_in_one_statement
        if nonce is not None and nonce_expires_at is not None:
            expires_at = self._bind_time(_aware("nonce_expires_at", nonce_expires_at))

            def signed(connection: sa.Connection) -> Transition | None:
                if not self._take_nonce(connection, nonce, now, expires_at):
                    raise NonceUsed(nonce)  # the block rolls back: nothing was written
                return self._seen(connection, ven_id, now, offline_at, lease_until)

            # One transaction for both. With ON CONFLICT the row locks decide (a VEN's own
            # block is enough); without, the nonce's read-then-write needs the writer lock.
            with self.atomic(ven_id if one_statement else None):
                transition = self._run(signed)
            self._purge_nonces(seen_at)
            return transition
        if one_statement:
            return self._run(lambda c: self._seen(c, ven_id, now, offline_at, lease_until))
        return self._write(lambda c: self._seen_in_steps(c, ven_id, now, offline_at, lease_until))

    def _seen(self, connection: sa.Connection, ven_id: str, now: datetime, offline_at: datetime,
              lease_until: datetime) -> Transition | None:
        """record_seen's liveness update on ``connection``, in one statement when it can."""
        if not self.features().seen_in_one_statement:
            return self._seen_in_steps(connection, ven_id, now, offline_at, lease_until)
        parameters = {"ven_id": ven_id, "now": now, "offline_at": offline_at,
                      "lease_until": lease_until}
        row = connection.execute(self._seen_statement, parameters).one()
        if not row.went_online:
            return None
        return {"ven_id": ven_id, "kind": _ONLINE, "epoch": row.epoch}

    @functools.cached_property
    def _seen_statement(self) -> Any:
        """INSERT ... ON CONFLICT DO UPDATE ... RETURNING: one round trip per VEN message.

        The SET expressions read the conflicting row as it is when the statement locks it, so
        two processes seeing the same VEN at once make one transition between them. Built once
        with bound parameters: it runs on every VEN message, and building the construct costs
        more than executing it."""
        table = self.tables.liveness
        statement = _dialect_module(self.backend).insert(table).values(
            ven_id=sa.bindparam("ven_id"), state=_ONLINE, epoch=1,
            last_seen=sa.bindparam("now"), offline_at=sa.bindparam("offline_at"),
            pending_kind=_ONLINE, pending_epoch=1, lease_until=sa.bindparam("lease_until"),
            went_online=True,
        )
        stays = sa.func.coalesce(table.c.state, "") == _literal(_ONLINE)

        def unless_online(new: Any, kept: Any) -> Any:
            return sa.case((stays, kept), else_=new)

        return statement.on_conflict_do_update(
            index_elements=["ven_id"],
            set_={
                "last_seen": statement.excluded.last_seen,
                "offline_at": statement.excluded.offline_at,
                "state": _ONLINE,
                "epoch": unless_online(table.c.epoch + 1, table.c.epoch),
                "pending_kind": unless_online(_literal(_ONLINE), table.c.pending_kind),
                "pending_epoch": unless_online(table.c.epoch + 1, table.c.pending_epoch),
                "lease_until": unless_online(statement.excluded.lease_until, table.c.lease_until),
                "went_online": unless_online(sa.true(), sa.false()),
            },
        ).returning(table.c.epoch, table.c.went_online)

    def _seen_in_steps(self, connection: sa.Connection, ven_id: str, now: datetime,
                       offline_at: datetime, lease_until: datetime) -> Transition | None:
        """record_seen where one statement cannot do it: read, then compare-and-set on the
        epoch (the liveness CAS calls do not take the writer lock, so they may come between)."""
        table = self.tables.liveness
        while True:
            row = connection.execute(
                sa.select(table.c.state, table.c.epoch).where(table.c.ven_id == ven_id)
            ).first()
            if row is None:
                connection.execute(sa.insert(table).values(
                    ven_id=ven_id, state=_ONLINE, epoch=1, last_seen=now, offline_at=offline_at,
                    pending_kind=_ONLINE, pending_epoch=1, lease_until=lease_until,
                    went_online=True,
                ))
                return {"ven_id": ven_id, "kind": _ONLINE, "epoch": 1}
            where = [table.c.ven_id == ven_id, table.c.epoch == row.epoch]
            values: dict[str, Any] = {"last_seen": now, "offline_at": offline_at}
            went_online = row.state != _ONLINE
            if went_online:
                values.update(state=_ONLINE, epoch=row.epoch + 1, pending_kind=_ONLINE,
                              pending_epoch=row.epoch + 1, lease_until=lease_until)
            values["went_online"] = went_online
            if connection.execute(sa.update(table).where(*where).values(values)).rowcount:
                if not went_online:
                    return None
                return {"ven_id": ven_id, "kind": _ONLINE, "epoch": row.epoch + 1}

    def due_offline(self, now: datetime, limit: int) -> list[tuple[str, int]]:
        rows = self._rows(self._due_offline_query(now, limit))
        return [(ven_id, epoch) for ven_id, epoch in rows]

    def _due_offline_query(self, now: datetime, limit: int) -> Any:
        # The same predicate as the partial index liveness_due, with the same literal.
        table = self.tables.liveness
        now = self._bind_time(_aware("now", now))
        return (
            sa.select(table.c.ven_id, table.c.epoch)
            .where(table.c.state == _literal(_ONLINE), table.c.offline_at <= now)
            .order_by(table.c.offline_at, table.c.ven_id)
            .limit(_limit(limit))
        )

    def _changed(self, statement: Any) -> bool:
        return self._run(lambda c: c.execute(statement).rowcount) == 1

    def claim_offline(self, ven_id: str, epoch: int, now: datetime,
                      lease_until: datetime) -> Transition | None:
        table = self.tables.liveness
        epoch = _epoch(epoch)
        now = self._bind_time(_aware("now", now))
        lease_until = self._bind_time(_aware("lease_until", lease_until))
        # Bound values, not epoch + 1 in SQL: MySQL evaluates SET left to right.
        statement = (
            sa.update(table)
            .where(table.c.ven_id == ven_id, table.c.state == _literal(_ONLINE),
                   table.c.epoch == epoch, table.c.offline_at <= now)
            .values(state=_OFFLINE, epoch=epoch + 1, pending_kind=_OFFLINE,
                    pending_epoch=epoch + 1, lease_until=lease_until)
        )
        if not self._changed(statement):
            return None
        return {"ven_id": ven_id, "kind": _OFFLINE, "epoch": epoch + 1}

    def complete_transition(self, ven_id: str, epoch: int) -> None:
        table = self.tables.liveness
        epoch = _epoch(epoch)
        self._changed(
            sa.update(table)
            .where(table.c.ven_id == ven_id, table.c.pending_kind.is_not(None),
                   table.c.pending_epoch == epoch)
            .values(pending_kind=None, pending_epoch=None, lease_until=None)
        )

    # -- replay nonces ---------------------------------------------------------------------------

    def remember_nonce(self, nonce: str, now: datetime, expires_at: datetime) -> bool:
        if not isinstance(nonce, str) or not nonce:
            raise ValueError(f"nonce must be a non-empty str, got {nonce!r}")
        seen_at = now
        now = self._bind_time(_aware("now", now))
        expires_at = self._bind_time(_aware("expires_at", expires_at))
        if self.features().seen_in_one_statement:  # ON CONFLICT and RETURNING
            won = self._run(lambda c: self._take_nonce(c, nonce, now, expires_at))
        else:
            won = self._write(lambda c: self._take_nonce(c, nonce, now, expires_at))
        if won:
            self._purge_nonces(seen_at)
        return won

    def _take_nonce(self, connection: sa.Connection, nonce: str, now: datetime,
                    expires_at: datetime) -> bool:
        """remember_nonce's write on ``connection`` (under the writer lock without ON
        CONFLICT); the times are bound already."""
        if not self.features().seen_in_one_statement:
            return self._remember_in_steps(connection, nonce, now, expires_at)
        table = self.tables.nonces
        # One statement: insert a new nonce, take over an expired one, leave an unexpired
        # one alone; the row lock of the conflict makes exactly one caller change a row,
        # and RETURNING (rowcount is not reliable here) says whether this one did.
        statement = _dialect_module(self.backend).insert(table).values(
            nonce=nonce, expires_at=expires_at)
        statement = statement.on_conflict_do_update(
            index_elements=["nonce"], set_={"expires_at": statement.excluded.expires_at},
            where=table.c.expires_at <= now,
        ).returning(table.c.nonce)
        return connection.execute(statement).first() is not None

    def _purge_nonces(self, now: datetime) -> None:
        """The lazy purge of expired nonces, once every so many new ones: a round trip less
        on most messages."""
        self._nonce_calls += 1
        if self._nonce_calls % _NONCE_PURGE_EVERY == 1:
            table = self.tables.nonces
            now = self._bind_time(now)
            self._run(lambda c: c.execute(sa.delete(table).where(table.c.expires_at <= now)))

    def _remember_in_steps(self, connection: sa.Connection, nonce: str, now: datetime,
                           expires_at: datetime) -> bool:
        """remember_nonce without ON CONFLICT, under the writer lock."""
        table = self.tables.nonces
        current = connection.execute(
            sa.select(table.c.expires_at).where(table.c.nonce == nonce)).first()
        if current is None:
            connection.execute(sa.insert(table).values(nonce=nonce, expires_at=expires_at))
            return True
        if self._read_time(current.expires_at) > self._read_time(now):
            return False
        connection.execute(sa.update(table).where(table.c.nonce == nonce)
                           .values(expires_at=expires_at))
        return True

    def stale_transitions(self, now: datetime, limit: int) -> list[Transition]:
        rows = self._rows(self._stale_query(now, limit))
        return [{"ven_id": ven_id, "kind": kind, "epoch": epoch} for ven_id, kind, epoch in rows]

    def _stale_query(self, now: datetime, limit: int) -> Any:
        # The same predicate as the partial index liveness_stale.
        table = self.tables.liveness
        now = self._bind_time(_aware("now", now))
        return (
            sa.select(table.c.ven_id, table.c.pending_kind, table.c.pending_epoch)
            .where(table.c.pending_kind.is_not(None), table.c.lease_until <= now)
            .order_by(table.c.lease_until, table.c.ven_id)
            .limit(_limit(limit))
        )

    def reclaim_transition(self, ven_id: str, epoch: int, now: datetime,
                           lease_until: datetime) -> bool:
        table = self.tables.liveness
        epoch = _epoch(epoch)
        now = self._bind_time(_aware("now", now))
        lease_until = self._bind_time(_aware("lease_until", lease_until))
        return self._changed(
            sa.update(table)
            .where(table.c.ven_id == ven_id, table.c.pending_kind.is_not(None),
                   table.c.pending_epoch == epoch, table.c.lease_until <= now)
            .values(lease_until=lease_until)
        )

    def _liveness(self, row: Any) -> Liveness:
        pending = None
        if row.pending_kind is not None:
            pending = {"kind": row.pending_kind, "epoch": row.pending_epoch,
                       "lease_until": self._read_time(row.lease_until)}
        return {"ven_id": row.ven_id, "state": row.state, "epoch": row.epoch,
                "last_seen": self._read_time(row.last_seen),
                "offline_at": self._read_time(row.offline_at), "pending": pending}

    def _liveness_query(self) -> Any:
        table = self.tables.liveness
        return sa.select(table.c.ven_id, table.c.state, table.c.epoch, table.c.last_seen,
                         table.c.offline_at, table.c.pending_kind, table.c.pending_epoch,
                         table.c.lease_until)

    def get_liveness(self, ven_id: str) -> Liveness | None:
        table = self.tables.liveness
        rows = self._rows(self._liveness_query().where(table.c.ven_id == ven_id))
        return self._liveness(rows[0]) if rows else None

    def list_liveness(self) -> dict[str, Liveness]:
        table = self.tables.liveness
        rows = self._rows(self._liveness_query().order_by(table.c.ven_id))
        return {row.ven_id: self._liveness(row) for row in rows}



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


def _dialect_module(backend: str) -> Any:
    """The dialect whose ``insert()`` knows ON CONFLICT: postgresql or sqlite."""
    if backend == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql
    from sqlalchemy.dialects import sqlite

    return sqlite
