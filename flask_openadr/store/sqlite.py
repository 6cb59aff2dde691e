"""The SQLite store (``sqlite:///path``): the embedded default, shared by every worker on one host.

One database file holds the whole VTN, so any number of gunicorn workers (and threads in them)
act as one VTN. It runs in WAL mode, where readers never block the writer and the writer never
blocks readers; writers queue on ``BEGIN IMMEDIATE`` with a busy timeout, which is what makes
:meth:`SQLiteStore.atomic` read-modify-write blocks safe across processes. The file must live on
a local filesystem (WAL needs shared memory; network filesystems do not provide it), and every
process must be on the same host. For several hosts use a server store (``redis://`` or
``postgresql://``, with the ``[redis]`` and ``[sqlalchemy]`` extras).

Connections are per process *and* per thread. A connection must never cross ``fork()`` (SQLite
says so: the child would share the parent's file locks and can corrupt the database), so a
connection is found by ``(os.getpid(), thread)``: a worker forked from a gunicorn master that
had already opened the store opens its own connection, and never uses or closes the master's.

Liveness is one row per VEN with its datetimes as sortable UTC text, so SQL compares instants.
The sweeps read partial indexes that hold only online VENs (by ``offline_at``) and only pending
transitions (by ``lease_until``), so a sweep costs what it returns, not what the table holds.
Every liveness compare-and-set is one ``UPDATE ... WHERE <expected state>`` whose row count says
who won, except the rare going-online path of :meth:`SQLiteStore.record_seen`, which reads and
writes inside ``BEGIN IMMEDIATE``.
"""
from __future__ import annotations

import contextlib
import itertools
import os
import sqlite3
import threading
import time
import weakref
from datetime import datetime
from typing import Any, ClassVar, Iterator

from ..errors import ConfigurationError, StoreError
from . import serialize
from .base import (
    PollState,
    read_poll_state,
    OFFLINE,
    ONLINE,
    EventResponseRecord,
    Liveness,
    NonceUsed,
    OutboxItem,
    Transition,
    VenRecord,
    MANY_CHUNK,
    check_delivered,
    check_int,
    check_nonce,
    check_max_priority,
    check_record,
    check_record_key,
    check_seen_nonce,
    event_id_of,
    event_response_key,
    liveness_from_row,
    normalize_fingerprint,
    outbox_priority,
    received_at_text,
    utc_text,
    ven_id_of,
)

__all__ = ["SQLiteStore", "from_uri", "SCHEMA_VERSION"]

#: The schema this code writes, kept in ``PRAGMA user_version``; 0 means a new, empty file.
SCHEMA_VERSION = 3

# One entry per version; _MIGRATIONS[n] takes a database from version n to n + 1.
_MIGRATIONS: list[tuple[str, ...]] = [
    (
        """CREATE TABLE IF NOT EXISTS vens (
            ven_id TEXT PRIMARY KEY,
            fingerprint TEXT,  -- normalize_fingerprint(data.fingerprint), NULL when none
            data TEXT NOT NULL
        )""",
        "CREATE INDEX IF NOT EXISTS vens_fingerprint ON vens (fingerprint)",
        # position, not rowid: VACUUM may renumber the rowids of a table with a TEXT key.
        """CREATE TABLE IF NOT EXISTS events (
            event_id TEXT PRIMARY KEY,
            position INTEGER NOT NULL,
            data TEXT NOT NULL
        )""",
        "CREATE INDEX IF NOT EXISTS events_position ON events (position)",
        """CREATE TABLE IF NOT EXISTS delivered (
            ven_id TEXT PRIMARY KEY,
            data TEXT NOT NULL
        )""",
        """CREATE TABLE IF NOT EXISTS event_responses (
            ven_id TEXT NOT NULL,
            event_id TEXT NOT NULL,
            modification_number INTEGER NOT NULL,
            received_at TEXT,  -- UTC ISO text with microseconds, so it sorts by time
            data TEXT NOT NULL,
            PRIMARY KEY (ven_id, event_id, modification_number)
        )""",
        """CREATE INDEX IF NOT EXISTS event_responses_by_event
            ON event_responses (event_id, received_at, ven_id, modification_number)""",
        # AUTOINCREMENT so an id is never reused, which keeps FIFO order strict.
        """CREATE TABLE IF NOT EXISTS outbox (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            ven_id TEXT NOT NULL,
            priority INTEGER NOT NULL,
            data TEXT NOT NULL
        )""",
        "CREATE INDEX IF NOT EXISTS outbox_next ON outbox (ven_id, priority, id)",
    ),
    # 1 -> 2: per-VEN records and liveness.
    (
        """CREATE TABLE IF NOT EXISTS records (
            kind TEXT NOT NULL,
            ven_id TEXT NOT NULL,
            key TEXT NOT NULL,
            position INTEGER NOT NULL,  -- list_records() order; a replacement keeps its own
            data TEXT NOT NULL,
            PRIMARY KEY (kind, ven_id, key)
        )""",
        "CREATE INDEX IF NOT EXISTS records_order ON records (kind, ven_id, position)",
        # WITHOUT ROWID: the row lives in the ven_id B-tree, so record_seen, which runs on every
        # message, updates one B-tree (and the due index) rather than a table and its key index.
        # Datetimes are UTC text with six fractional digits, so they compare as instants.
        """CREATE TABLE IF NOT EXISTS liveness (
            ven_id TEXT PRIMARY KEY,
            state TEXT NOT NULL,
            epoch INTEGER NOT NULL,
            last_seen TEXT NOT NULL,
            offline_at TEXT NOT NULL,
            pending_kind TEXT,  -- NULL when no transition is pending
            pending_epoch INTEGER,
            lease_until TEXT
        ) WITHOUT ROWID""",
        # Partial indexes: only online VENs are due, only pending transitions are stale, so
        # the sweeps read just the rows they return. ven_id makes the order total.
        """CREATE INDEX IF NOT EXISTS liveness_due ON liveness (offline_at, ven_id)
            WHERE state = 'online'""",
        """CREATE INDEX IF NOT EXISTS liveness_stale ON liveness (lease_until, ven_id)
            WHERE pending_kind IS NOT NULL""",
    ),
    # 2 -> 3: replay nonces (remember_nonce).
    (
        """CREATE TABLE IF NOT EXISTS nonces (
            nonce TEXT PRIMARY KEY,
            expires_at TEXT NOT NULL  -- UTC text with six fractional digits: sorts by time
        ) WITHOUT ROWID""",
        "CREATE INDEX IF NOT EXISTS nonces_expiry ON nonces (expires_at)",
    ),
]
assert len(_MIGRATIONS) == SCHEMA_VERSION


def from_uri(uri: str, *, instance_path: str | None = None) -> SQLiteStore:
    """Open the store named by a ``sqlite:`` URI, read the way SQLAlchemy reads it.

    - ``sqlite:///vtn.sqlite``: a relative path, under ``instance_path`` when given (Flask's
      instance folder), else under the current directory; resolved once, here, so a later
      ``chdir`` does not move the database;
    - ``sqlite:////var/lib/vtn/vtn.sqlite``: an absolute path (four slashes).

    The database's directory is created if it does not exist. ``sqlite://`` and
    ``sqlite:///:memory:`` are refused: an in-memory database is private to one connection, and
    a VTN's workers and threads must share one file. Query options are refused too, rather than
    silently ignored.

    :raises ConfigurationError: for a URI that does not name a database file.
    """
    scheme, _, rest = uri.partition("://")
    if scheme.lower() != "sqlite":
        raise ConfigurationError(f"{uri!r} is not a sqlite:// URI")
    if rest in ("", "/") or rest == "/:memory:":
        raise ConfigurationError(
            f"the store URI {uri!r} names an in-memory SQLite database, which each connection "
            "sees on its own; name a file that every worker shares, such as "
            "'sqlite:///openadr.sqlite' (in the instance folder) or 'sqlite:////var/lib/vtn.sqlite'"
        )
    if not rest.startswith("/"):
        raise ConfigurationError(
            f"the store URI {uri!r} has a host part; SQLite URIs take none: write "
            "'sqlite:///relative/path' or 'sqlite:////absolute/path'"
        )
    if "?" in rest:
        raise ConfigurationError(
            f"the store URI {uri!r} has query options, which the SQLite store does not take; "
            "remove everything from '?'"
        )
    path = rest[1:]
    # os.path.join keeps an absolute path (four slashes, or C:\... on Windows) as it is.
    path = os.path.abspath(os.path.join(instance_path or os.getcwd(), path))
    return SQLiteStore(path, uri=uri)


class _Connection:
    """One thread's connection in one process, with that thread's ``atomic()`` nesting depth."""

    __slots__ = ("sqlite", "thread", "depth")

    def __init__(self, connection: sqlite3.Connection, thread: threading.Thread):
        self.sqlite = connection
        self.thread = weakref.ref(thread)
        self.depth = 0


class SQLiteStore:
    """A :class:`~flask_openadr.store.base.Store` in one SQLite database file.

    :param path: the database file; created, with its schema, on first use.
    :param uri: the URI the store was opened with, for messages (default: built from ``path``).
    :param timeout: seconds a writer waits for another writer before :class:`StoreError`.
    """

    #: Shared by every process that opens the same URI (see :attr:`Store.single_process`).
    single_process: ClassVar[bool] = False

    def __init__(self, path: str, *, uri: str | None = None, timeout: float = 30.0):
        self.path = path
        self.uri = uri or f"sqlite:///{path}"
        self.timeout = timeout
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._schema_ready = False
        self._nonce_calls = itertools.count()  # remember_nonce purges every so many calls
        # (pid, thread ident) -> connection. Entries of other pids were inherited over fork and
        # are kept, unused and open, so that garbage collection never closes them in the child.
        self._connections: dict[tuple[int, int], _Connection] = {}

    def __repr__(self) -> str:
        return f"SQLiteStore({self.uri!r})"

    # -- connections ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """Turn driver errors into StoreError naming the database."""
        try:
            yield
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite store {self.uri} ({self.path}): {exc}") from exc

    def _process_lock(self) -> threading.Lock:
        # A child of fork() gets the lock in the state the parent's threads left it, possibly
        # held by a thread that does not exist here; a fresh one cannot deadlock.
        pid = os.getpid()
        if pid != self._pid:
            self._lock = threading.Lock()
            self._schema_ready = False
            self._pid = pid
        return self._lock

    def _connection(self) -> _Connection:
        """This thread's connection in this process, opened (and the schema made) on first use."""
        key = (os.getpid(), threading.get_ident())
        thread = threading.current_thread()
        conn = self._connections.get(key)
        if conn is not None and conn.thread() is thread:
            return conn
        with self._process_lock():
            self._close_dead_threads(key[0])
            connection = self._connect()
            if not self._schema_ready:
                try:
                    self._ensure_schema(connection)
                except BaseException:
                    connection.close()
                    raise
                self._schema_ready = True
            conn = self._connections[key] = _Connection(connection, thread)
        return conn

    def _connect(self) -> sqlite3.Connection:
        directory = os.path.dirname(self.path)
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"SQLite store {self.uri}: cannot create the directory {directory!r}: {exc}"
            ) from exc
        with self._errors():
            # isolation_level=None: no implicit transactions; atomic() issues BEGIN itself.
            # check_same_thread=False only so close() may close other threads' connections;
            # in use, a connection never leaves its thread.
            connection = sqlite3.connect(
                self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False
            )
            try:
                connection.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
                connection.execute("PRAGMA synchronous = NORMAL")
                connection.execute("PRAGMA foreign_keys = ON")
                # Per connection: whenever a checkpoint resets the WAL, the file is cut back to
                # this size instead of staying as large as it ever grew.
                connection.execute(f"PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT}")
            except sqlite3.Error:
                connection.close()
                raise
        return connection

    def _ensure_schema(self, connection: sqlite3.Connection) -> None:
        with self._errors():
            self._use_wal(connection)
            if connection.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION:
                return
            connection.execute("BEGIN IMMEDIATE")  # another process may be migrating too
            try:
                version = connection.execute("PRAGMA user_version").fetchone()[0]
                if version > SCHEMA_VERSION:
                    raise StoreError(
                        f"SQLite store {self.uri}: {self.path} has schema version {version}, "
                        f"written by a newer flask-openadr; this one knows up to {SCHEMA_VERSION}"
                    )
                for number in range(version, SCHEMA_VERSION):
                    for statement in _MIGRATIONS[number]:
                        connection.execute(statement)
                connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                connection.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    connection.execute("ROLLBACK")
                raise

    def _use_wal(self, connection: sqlite3.Connection) -> None:
        """Switch the file to WAL (a setting stored in the file, so this happens once)."""
        if connection.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal":
            return
        deadline = time.monotonic() + self.timeout
        delay = 0.001
        while True:
            try:
                # Outside any transaction: SQLite cannot switch journal mode inside one.
                (mode,) = connection.execute("PRAGMA journal_mode = WAL").fetchone()
                break
            except sqlite3.OperationalError as exc:
                # The switch needs the file to itself and does not wait on the busy timeout,
                # so when several workers open a new file at once all but one see "locked".
                busy = _is_busy(exc)
                if not busy or time.monotonic() >= deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 0.05)
        if str(mode).lower() != "wal":
            raise StoreError(
                f"SQLite store {self.uri}: {self.path} cannot use WAL journal mode "
                f"(it stays in {mode!r}); put the database on a local filesystem"
            )

    def _close_dead_threads(self, pid: int) -> None:
        """Close this process's connections whose thread has ended (a server that starts a
        thread per request would otherwise collect one open connection per request)."""
        for key, conn in list(self._connections.items()):
            if key[0] != pid:
                continue
            thread = conn.thread()
            if thread is None or not thread.is_alive():
                del self._connections[key]
                with contextlib.suppress(sqlite3.Error):
                    conn.sqlite.close()

    def close(self) -> None:
        """Close every connection this process opened (in any thread). Connections inherited
        from a parent process are left alone. The store reconnects if used again."""
        pid = os.getpid()
        with self._process_lock():
            for key in [key for key in self._connections if key[0] == pid]:
                conn = self._connections.pop(key)
                with self._errors():
                    conn.sqlite.close()

    def maintain(self, now: datetime | None = None) -> None:
        """Checkpoint the WAL and truncate it (see :meth:`Store.maintain`).

        Readers are almost always active under load, so SQLite's automatic checkpoints copy
        pages back but never find a moment to restart the WAL from its beginning, and the file
        only grows. A ``TRUNCATE`` checkpoint waits for those readers, and while it waits new
        writers wait too, so it waits only :data:`CHECKPOINT_WAIT` seconds: on a busy file it
        gives up and the next pass tries again, rather than hold requests back."""
        conn = self._connection()
        if conn.depth:
            raise RuntimeError("maintain() checkpoints the WAL; call it outside atomic() blocks")
        with self._errors():
            conn.sqlite.execute(f"PRAGMA busy_timeout = {int(CHECKPOINT_WAIT * 1000)}")
            try:
                conn.sqlite.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            finally:
                conn.sqlite.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")

    # -- transactions --------------------------------------------------------------------------

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        """See :meth:`flask_openadr.store.base.Store.session`; nothing to hold here."""
        yield

    @contextlib.contextmanager
    def atomic(self, ven_id: str | None = None) -> Iterator[None]:
        """See :meth:`flask_openadr.store.base.Store.atomic`; every block is VTN-wide (SQLite
        has one writer at a time, so blocks are kept short instead).

        The outermost block runs ``BEGIN IMMEDIATE``, which takes the database's write lock at
        once: a second writer (any thread, any process) waits there, before it has read
        anything, so what a block reads is still true when it writes.
        """
        conn = self._connection()
        if conn.depth:
            conn.depth += 1
            try:
                yield
            finally:
                conn.depth -= 1
            return
        with self._errors():
            conn.sqlite.execute("BEGIN IMMEDIATE")
        conn.depth = 1
        try:
            yield
        except BaseException:
            conn.depth = 0
            # The block's own exception is the one to see; a failed rollback only adds to it.
            with contextlib.suppress(sqlite3.Error):
                conn.sqlite.execute("ROLLBACK")
            raise
        conn.depth = 0
        try:
            with self._errors():
                conn.sqlite.execute("COMMIT")
        except StoreError:
            with contextlib.suppress(sqlite3.Error):
                if conn.sqlite.in_transaction:
                    conn.sqlite.execute("ROLLBACK")
            raise

    def _read(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Rows of one SELECT; outside atomic() it sees one consistent snapshot on its own."""
        conn = self._connection()
        with self._errors():
            return conn.sqlite.execute(sql, params).fetchall()

    def _write(self, sql: str, params: tuple[Any, ...] = ()) -> None:
        """One statement, in its own transaction unless inside atomic()."""
        with self.atomic():
            conn = self._connection()
            with self._errors():
                conn.sqlite.execute(sql, params)

    def _change(self, sql: str, params: tuple[Any, ...]) -> int:
        """Run one writing statement as its own transaction, or as part of the open atomic()
        block; the number of rows it changed. No BEGIN around it: a single statement is atomic
        on its own and takes the write lock before it reads, and the two round trips that
        BEGIN and COMMIT cost matter on the paths that run for every message."""
        conn = self._connection()
        with self._errors():
            return conn.sqlite.execute(sql, params).rowcount

    def create_schema(self) -> None:
        """Create the tables and indexes, or migrate an older file; idempotent. The first use
        of the store does the same, so calling this is optional (``flask openadr init-db``)."""
        conn = self._connection()
        with self._process_lock():
            self._ensure_schema(conn.sqlite)
            self._schema_ready = True

    # -- VENs ----------------------------------------------------------------------------------
    # Values are validated and encoded before the statement runs, so a refused value writes
    # nothing.

    def get_ven(self, ven_id: str) -> VenRecord | None:
        rows = self._read("SELECT data FROM vens WHERE ven_id = ?", (ven_id,))
        return serialize.loads(rows[0][0]) if rows else None

    def get_ven_by_fingerprint(self, fingerprint: str) -> VenRecord | None:
        wanted = normalize_fingerprint(fingerprint)
        if wanted is None:
            return None
        rows = self._read(
            "SELECT data FROM vens WHERE fingerprint = ? ORDER BY ven_id LIMIT 1", (wanted,)
        )
        return serialize.loads(rows[0][0]) if rows else None

    def put_ven(self, ven: VenRecord) -> None:
        ven_id = ven_id_of(ven)
        key = normalize_fingerprint(ven.get("fingerprint"))
        text = serialize.dumps(ven)
        self._write(
            "INSERT INTO vens (ven_id, fingerprint, data) VALUES (?, ?, ?) "
            "ON CONFLICT (ven_id) DO UPDATE SET fingerprint = excluded.fingerprint, "
            "data = excluded.data",
            (ven_id, key, text),
        )

    def list_vens(self) -> list[VenRecord]:
        rows = self._read("SELECT data FROM vens ORDER BY ven_id")
        return [serialize.loads(data) for (data,) in rows]

    # -- events --------------------------------------------------------------------------------

    def put_event(self, event: dict[str, Any]) -> None:
        event_id = event_id_of(event)
        text = serialize.dumps(event)
        # A replaced event keeps its position; a new one goes after every other.
        self._write(
            "INSERT INTO events (event_id, position, data) "
            "VALUES (?, (SELECT COALESCE(MAX(position), 0) + 1 FROM events), ?) "
            "ON CONFLICT (event_id) DO UPDATE SET data = excluded.data",
            (event_id, text),
        )

    def get_event(self, event_id: str) -> dict[str, Any] | None:
        rows = self._read("SELECT data FROM events WHERE event_id = ?", (event_id,))
        return serialize.loads(rows[0][0]) if rows else None

    def get_events(self, event_ids: list[str]) -> dict[str, dict[str, Any]]:
        return self._load_many("events", "event_id", event_ids)

    def _load_many(self, table: str, key: str, keys: list[str]) -> dict[str, dict[str, Any]]:
        """The decoded ``data`` of the rows of ``table`` whose ``key`` is one of ``keys``
        (missing ones left out), read MANY_CHUNK keys a statement. Table and column names
        are this module's own constants, never input."""
        found: dict[str, dict[str, Any]] = {}
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), MANY_CHUNK):
            chunk = unique[start:start + MANY_CHUNK]
            rows = self._read(f"SELECT {key}, data FROM {table} WHERE {key} IN "
                              f"({', '.join('?' * len(chunk))})", tuple(chunk))
            for found_key, data in rows:
                found[found_key] = serialize.loads(data)
        return found

    def list_events(self) -> list[dict[str, Any]]:
        rows = self._read("SELECT data FROM events ORDER BY position")
        return [serialize.loads(data) for (data,) in rows]

    def delete_event(self, event_id: str) -> None:
        self._write("DELETE FROM events WHERE event_id = ?", (event_id,))

    # -- delivery state ------------------------------------------------------------------------

    def get_delivered(self, ven_id: str) -> dict[str, int]:
        rows = self._read("SELECT data FROM delivered WHERE ven_id = ?", (ven_id,))
        return serialize.loads(rows[0][0]) if rows else {}

    def set_delivered(self, ven_id: str, delivered: dict[str, int]) -> None:
        if not isinstance(delivered, dict):
            raise TypeError(f"delivered must be a dict of event_id -> int, got {delivered!r}")
        if not delivered:
            self._write("DELETE FROM delivered WHERE ven_id = ?", (ven_id,))
            return
        self._write(
            "INSERT INTO delivered (ven_id, data) VALUES (?, ?) "
            "ON CONFLICT (ven_id) DO UPDATE SET data = excluded.data",
            (ven_id, serialize.dumps(delivered)),
        )

    def get_delivered_many(self, ven_ids: list[str]) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {ven_id: {} for ven_id in ven_ids}
        found.update(self._load_many("delivered", "ven_id", ven_ids))
        return found

    def set_delivered_many(self, delivered: dict[str, dict[str, Any]]) -> None:
        for value in delivered.values():
            check_delivered(value)
        gone = [(ven_id,) for ven_id, value in delivered.items() if not value]
        kept = [(ven_id, serialize.dumps(value)) for ven_id, value in delivered.items() if value]
        with self.atomic():
            conn = self._connection()
            with self._errors():
                conn.sqlite.executemany("DELETE FROM delivered WHERE ven_id = ?", gone)
                conn.sqlite.executemany(
                    "INSERT INTO delivered (ven_id, data) VALUES (?, ?) "
                    "ON CONFLICT (ven_id) DO UPDATE SET data = excluded.data", kept)

    # -- event responses -----------------------------------------------------------------------

    def put_event_response(self, response: EventResponseRecord) -> None:
        ven_id, event_id, modification_number = event_response_key(response)
        received_at = received_at_text(response)
        text = serialize.dumps(response)
        self._write(
            "INSERT INTO event_responses "
            "(ven_id, event_id, modification_number, received_at, data) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (ven_id, event_id, modification_number) DO UPDATE SET "
            "received_at = excluded.received_at, data = excluded.data",
            (ven_id, event_id, modification_number, received_at, text),
        )

    def list_event_responses(self, event_id: str) -> list[EventResponseRecord]:
        # NULL received_at sorts first in SQLite, as it does in the memory store.
        rows = self._read(
            "SELECT data FROM event_responses WHERE event_id = ? "
            "ORDER BY received_at, ven_id, modification_number",
            (event_id,),
        )
        return [serialize.loads(data) for (data,) in rows]

    def delete_event_responses(self, event_id: str) -> None:
        self._write("DELETE FROM event_responses WHERE event_id = ?", (event_id,))

    # -- outbox --------------------------------------------------------------------------------

    def push_outbox(self, ven_id: str, item: OutboxItem) -> None:
        priority = outbox_priority(item)
        self._write(
            "INSERT INTO outbox (ven_id, priority, data) VALUES (?, ?, ?)",
            (ven_id, priority, serialize.dumps(item)),
        )

    def pop_outbox(self, ven_id: str, max_priority: int | None = None) -> OutboxItem | None:
        check_max_priority(max_priority)
        # Select and delete inside one BEGIN IMMEDIATE transaction: no other process can pop
        # between the two, so an item is handed out once. (DELETE ... RETURNING would need
        # SQLite 3.35, newer than some supported systems ship.)
        with self.atomic():
            if max_priority is None:
                rows = self._read(
                    "SELECT id, data FROM outbox WHERE ven_id = ? ORDER BY priority, id LIMIT 1",
                    (ven_id,),
                )
            else:
                rows = self._read(
                    "SELECT id, data FROM outbox WHERE ven_id = ? AND priority <= ? "
                    "ORDER BY priority, id LIMIT 1",
                    (ven_id, max_priority),
                )
            if not rows:
                return None
            item_id, data = rows[0]
            self._write("DELETE FROM outbox WHERE id = ?", (item_id,))
        item: OutboxItem = serialize.loads(data)
        return item

    def list_outbox(self, ven_id: str) -> list[OutboxItem]:
        rows = self._read(
            "SELECT data FROM outbox WHERE ven_id = ? ORDER BY priority, id", (ven_id,)
        )
        return [serialize.loads(data) for (data,) in rows]

    def clear_outbox(self, ven_id: str) -> None:
        self._write("DELETE FROM outbox WHERE ven_id = ?", (ven_id,))

    def get_poll_state(self, ven_id: str, kind: str) -> PollState:
        """See :meth:`flask_openadr.store.base.Store.get_poll_state`."""
        return read_poll_state(self, ven_id, kind)

    # -- records -------------------------------------------------------------------------------

    def put_record(self, kind: str, ven_id: str, key: str, record: dict[str, Any]) -> None:
        check_record_key(kind, ven_id, key)
        check_record(record)
        text = serialize.dumps(record)
        # A replaced record keeps its position; a new one goes after the VEN's others of its kind.
        self._write(
            "INSERT INTO records (kind, ven_id, key, position, data) VALUES (?, ?, ?, "
            "(SELECT COALESCE(MAX(position), 0) + 1 FROM records WHERE kind = ? AND ven_id = ?), "
            "?) ON CONFLICT (kind, ven_id, key) DO UPDATE SET data = excluded.data",
            (kind, ven_id, key, kind, ven_id, text),
        )

    def get_record(self, kind: str, ven_id: str, key: str) -> dict[str, Any] | None:
        rows = self._read(
            "SELECT data FROM records WHERE kind = ? AND ven_id = ? AND key = ?",
            (kind, ven_id, key),
        )
        return serialize.loads(rows[0][0]) if rows else None

    def list_records(self, kind: str, ven_id: str) -> list[dict[str, Any]]:
        rows = self._read(
            "SELECT data FROM records WHERE kind = ? AND ven_id = ? ORDER BY position",
            (kind, ven_id),
        )
        return [serialize.loads(data) for (data,) in rows]

    def delete_record(self, kind: str, ven_id: str, key: str) -> None:
        self._write(
            "DELETE FROM records WHERE kind = ? AND ven_id = ? AND key = ?", (kind, ven_id, key)
        )

    def clear_records(self, kind: str, ven_id: str) -> None:
        self._write("DELETE FROM records WHERE kind = ? AND ven_id = ?", (kind, ven_id))

    # -- liveness ------------------------------------------------------------------------------
    # The WHERE clause of each UPDATE is the compare of the compare-and-set: with any number of
    # processes, exactly one statement finds the row as expected and changes it (rowcount 1).
    # The SQL spells the states out ('online', 'offline', the values of base.ONLINE and
    # base.OFFLINE) because the sweeps' WHERE clauses must repeat the partial indexes'
    # conditions word for word for SQLite to use those indexes.

    def record_seen(
        self, ven_id: str, now: datetime, offline_at: datetime, lease_until: datetime,
        nonce: str | None = None, nonce_expires_at: datetime | None = None,
    ) -> Transition | None:
        seen = (utc_text(now, "now"), utc_text(offline_at, "offline_at"), ven_id)
        lease_text = utc_text(lease_until, "lease_until")
        nonce_texts = check_seen_nonce(nonce, now, nonce_expires_at)
        if nonce is None or nonce_texts is None:
            # Nearly every call finds the VEN online: one statement, no transaction around it.
            if self._change(_TOUCH_ONLINE, seen):
                return None
            return self._go_online(ven_id, seen, lease_text)
        # A signed message: the nonce and the liveness update commit together, or neither.
        with self.atomic():
            if not self._take_nonce(nonce, *nonce_texts):
                raise NonceUsed(nonce)  # atomic() rolls back: nothing was written
            if self._change(_TOUCH_ONLINE, seen):
                return None
            return self._go_online(ven_id, seen, lease_text)

    def _go_online(self, ven_id: str, seen: tuple[str, str, str],
                   lease_text: str) -> Transition | None:
        """record_seen for a VEN that was not found online."""
        # Offline or never seen: decide the transition with the write lock held, so that of all
        # the processes that got here for this VEN, one makes it online and the others touch it.
        with self.atomic():
            rows = self._read("SELECT state, epoch FROM liveness WHERE ven_id = ?", (ven_id,))
            if rows and rows[0][0] == ONLINE:
                self._change(_TOUCH_ONLINE, seen)
                return None
            epoch = rows[0][1] + 1 if rows else 1
            self._change(
                "INSERT INTO liveness (ven_id, state, epoch, last_seen, offline_at, "
                "pending_kind, pending_epoch, lease_until) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (ven_id) DO UPDATE SET state = excluded.state, "
                "epoch = excluded.epoch, last_seen = excluded.last_seen, "
                "offline_at = excluded.offline_at, pending_kind = excluded.pending_kind, "
                "pending_epoch = excluded.pending_epoch, lease_until = excluded.lease_until",
                (ven_id, ONLINE, epoch, seen[0], seen[1], ONLINE, epoch, lease_text),
            )
        return {"ven_id": ven_id, "kind": ONLINE, "epoch": epoch}

    def due_offline(self, now: datetime, limit: int) -> list[tuple[str, int]]:
        now_text = utc_text(now, "now")
        check_int(limit, "limit", minimum=0)
        rows = self._read(
            "SELECT ven_id, epoch FROM liveness WHERE state = 'online' AND offline_at <= ? "
            "ORDER BY offline_at, ven_id LIMIT ?",
            (now_text, limit),
        )
        return [(ven_id, epoch) for ven_id, epoch in rows]

    def claim_offline(
        self, ven_id: str, epoch: int, now: datetime, lease_until: datetime
    ) -> Transition | None:
        check_int(epoch, "epoch")
        now_text = utc_text(now, "now")
        lease_text = utc_text(lease_until, "lease_until")
        claimed = self._change(
            "UPDATE liveness SET state = 'offline', epoch = epoch + 1, "
            "pending_kind = 'offline', pending_epoch = epoch + 1, lease_until = ? "
            "WHERE ven_id = ? AND state = 'online' AND epoch = ? AND offline_at <= ?",
            (lease_text, ven_id, epoch, now_text),
        )
        return {"ven_id": ven_id, "kind": OFFLINE, "epoch": epoch + 1} if claimed else None

    def complete_transition(self, ven_id: str, epoch: int) -> None:
        check_int(epoch, "epoch")
        self._change(
            "UPDATE liveness SET pending_kind = NULL, pending_epoch = NULL, lease_until = NULL "
            "WHERE ven_id = ? AND pending_kind IS NOT NULL AND pending_epoch = ?",
            (ven_id, epoch),
        )

    def stale_transitions(self, now: datetime, limit: int) -> list[Transition]:
        now_text = utc_text(now, "now")
        check_int(limit, "limit", minimum=0)
        rows = self._read(
            "SELECT ven_id, pending_kind, pending_epoch FROM liveness "
            "WHERE pending_kind IS NOT NULL AND lease_until <= ? "
            "ORDER BY lease_until, ven_id LIMIT ?",
            (now_text, limit),
        )
        return [{"ven_id": ven_id, "kind": kind, "epoch": epoch} for ven_id, kind, epoch in rows]

    def reclaim_transition(
        self, ven_id: str, epoch: int, now: datetime, lease_until: datetime
    ) -> bool:
        check_int(epoch, "epoch")
        now_text = utc_text(now, "now")
        lease_text = utc_text(lease_until, "lease_until")
        return bool(
            self._change(
                "UPDATE liveness SET lease_until = ? WHERE ven_id = ? "
                "AND pending_kind IS NOT NULL AND pending_epoch = ? AND lease_until <= ?",
                (lease_text, ven_id, epoch, now_text),
            )
        )

    def get_liveness(self, ven_id: str) -> Liveness | None:
        rows = self._read(f"SELECT {_LIVENESS_COLUMNS} FROM liveness WHERE ven_id = ?", (ven_id,))
        return liveness_from_row(*rows[0]) if rows else None

    def list_liveness(self) -> dict[str, Liveness]:
        rows = self._read(f"SELECT {_LIVENESS_COLUMNS} FROM liveness ORDER BY ven_id")
        return {row[0]: liveness_from_row(*row) for row in rows}


    # -- replay nonces ---------------------------------------------------------------------------

    def remember_nonce(self, nonce: str, now: datetime, expires_at: datetime) -> bool:
        return self._take_nonce(nonce, *check_nonce(nonce, now, expires_at))

    def _take_nonce(self, nonce: str, now_text: str, expires_text: str) -> bool:
        """remember_nonce on its own or inside an atomic() block (record_seen's)."""
        # One statement: a new nonce is inserted, an expired one taken over, and an unexpired
        # one left alone (no row changes), under SQLite's write lock, so one caller wins.
        won = self._change(
            "INSERT INTO nonces (nonce, expires_at) VALUES (?, ?) ON CONFLICT (nonce) "
            "DO UPDATE SET expires_at = excluded.expires_at WHERE nonces.expires_at <= ?",
            (nonce, expires_text, now_text),
        )
        if won and next(self._nonce_calls) % _NONCE_PURGE_EVERY == 0:
            # The lazy purge, once in a while (one write less on most signed messages); the
            # index makes it cost what it deletes.
            self._change("DELETE FROM nonces WHERE expires_at <= ?", (now_text,))
        return bool(won)

#: Bytes the WAL file keeps after a checkpoint reset it (``PRAGMA journal_size_limit``): a
#: little over what SQLite's automatic checkpoint lets it reach (1,000 pages of 4 KiB).
JOURNAL_SIZE_LIMIT = 4 * 1024 * 1024
#: Seconds :meth:`SQLiteStore.maintain` waits for readers and writers before it gives up.
CHECKPOINT_WAIT = 0.2

# How often (in new nonces per process) remember_nonce deletes the expired ones.
_NONCE_PURGE_EVERY = 100

# The hot statement of record_seen: last_seen and offline_at move only if the VEN is online.
_TOUCH_ONLINE = (
    "UPDATE liveness SET last_seen = ?, offline_at = ? WHERE ven_id = ? AND state = 'online'"
)
# In the order of liveness_from_row's arguments.
_LIVENESS_COLUMNS = (
    "ven_id, state, epoch, last_seen, offline_at, pending_kind, pending_epoch, lease_until"
)


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    """Whether SQLite said SQLITE_BUSY ("database is locked"). The error code is on the
    exception from Python 3.11; before that only the message tells."""
    code: int | None = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF == sqlite3.SQLITE_BUSY
    return "database is locked" in str(exc)
