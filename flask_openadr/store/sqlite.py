"""The SQLite store (``sqlite:///path``): the embedded default, shared by every worker on one host.

One database file holds the whole VTN, so any number of gunicorn workers (and threads in them)
act as one VTN. It runs in WAL mode, where readers never block the writer and the writer never
blocks readers; writers queue on ``BEGIN IMMEDIATE`` with a busy timeout, which is what makes a
transaction's read-modify-write safe across processes. The file must live on a local filesystem
(WAL needs shared memory; network filesystems do not provide it), and every process must be on
the same host. For several hosts use a server store (``redis://`` or ``postgresql://``, with the
``[redis]`` and ``[sqlalchemy]`` extras).

It is :class:`~flask_openadr.store.rules.RulesStore`, which holds every rule of the store, on
:class:`SQLiteBackend`: two tables, ``store_rows`` (the rules' rows, keyed by table and key,
with a ``seq`` that orders a partition's scan) and ``store_index`` (the index of due items, read
by score). :class:`SQLiteStore` overrides the calls of every poll with statements of its own
(``record_seen``, ``get_ven``, ``get_poll_state``), and ``pop_outbox`` and
``set_delivered_many`` (docs/stores.rst gives the figure for each); they keep the rules'
behaviour exactly, which the conformance suite checks.

SQLite has one writer at a time, so every write block is VTN-wide whatever its ``lock``, and is
kept short. A compare-and-set (``put(..., expect=)``) runs under the write lock, so it never
needs :class:`~flask_openadr.store.rules.Conflict`.

Connections are per process *and* per thread. A connection must never cross ``fork()`` (SQLite
says so: the child would share the parent's file locks and can corrupt the database), so a
connection is found by ``(os.getpid(), thread)``: a worker forked from a gunicorn master that
had already opened the store opens its own connection, and never uses or closes the master's.
"""
from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
import weakref
from datetime import datetime
from typing import Any, ClassVar, Iterable, Iterator, cast

from ..errors import ConfigurationError, StoreError
from . import serialize
from .base import (
    MANY_CHUNK,
    NonceUsed,
    OutboxItem,
    PollState,
    Transition,
    VenRecord,
    check_max_priority,
    check_seen_nonce,
    utc_text,
)
from .rules import (
    DELIVERED,
    DUE_OFFLINE,
    LIVENESS,
    NONCE_EXPIRY,
    NONCES,
    OUTBOX,
    RECORDS,
    VENS,
    Row,
    RulesStore,
)
from .rules import _key as rules_key

__all__ = ["SQLiteBackend", "SQLiteStore", "from_uri", "SCHEMA_VERSION"]

#: The layout this code writes, kept in ``PRAGMA user_version``; 0 means a new, empty file.
SCHEMA_VERSION = 4
#: The versions of the layout before the store was built on the rules (a table per kind of
#: record). 0.1.0 is unreleased, so they are refused, not migrated.
OLD_LAYOUTS = range(1, 4)

_SCHEMA = (
    # Every table of the rules in one: WITHOUT ROWID, so a read by key (the VEN, its liveness,
    # its delivery record) is one B-tree search. seq is the row's place in its partition (its
    # first put), which a put of the same key keeps; scan reads the partition by it.
    """CREATE TABLE IF NOT EXISTS store_rows (
        tbl TEXT NOT NULL,
        key TEXT NOT NULL,
        part TEXT NOT NULL,
        seq INTEGER NOT NULL,
        version INTEGER NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (tbl, key)
    ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS store_rows_scan ON store_rows (tbl, part, seq)",
    # The index of due items, read by score (UTC text sorts by time; BINARY collation compares
    # UTF-8 bytes, which is code point order), so index_range costs what it returns.
    """CREATE TABLE IF NOT EXISTS store_index (
        idx TEXT NOT NULL,
        member TEXT NOT NULL,
        score TEXT NOT NULL,
        PRIMARY KEY (idx, member)
    ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS store_index_due ON store_index (idx, score, member)",
)

#: Bytes the WAL file keeps after a checkpoint reset it (``PRAGMA journal_size_limit``): a
#: little over what SQLite's automatic checkpoint lets it reach (1,000 pages of 4 KiB).
JOURNAL_SIZE_LIMIT = 4 * 1024 * 1024
#: Seconds :meth:`SQLiteStore.maintain` waits for readers and writers before it gives up.
CHECKPOINT_WAIT = 0.2


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
    """One thread's connection in one process, with that thread's transaction nesting depth."""

    __slots__ = ("sqlite", "thread", "depth", "open")

    def __init__(self, connection: sqlite3.Connection, thread: threading.Thread):
        self.sqlite = connection
        self.thread = weakref.ref(thread)
        self.depth = 0
        #: False once closed: a thread's cached slot (see SQLiteBackend.connection) is stale.
        self.open = True


#: How many times this process was forked into (0 in the process that imported the module):
#: a child's threads must not use the connections the parent opened, and a thread-local slot
#: survives fork in the thread that forked.
_forks = 0


def _forked() -> None:
    global _forks
    _forks += 1


if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork
    os.register_at_fork(after_in_child=_forked)


class SQLiteBackend:
    """A :class:`~flask_openadr.store.rules.Backend` in one SQLite database file.

    :param path: the database file; created, with its tables, on first use.
    :param uri: the URI the store was opened with, for messages (default: built from ``path``).
    :param timeout: seconds a writer waits for another writer before :class:`StoreError`.
    """

    def __init__(self, path: str, *, uri: str | None = None, timeout: float = 30.0):
        self.path = path
        self.uri = uri or f"sqlite:///{path}"
        self.timeout = timeout
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._schema_ready = False
        # (pid, thread ident) -> connection. Entries of other pids were inherited over fork and
        # are kept, unused and open, so that garbage collection never closes them in the child.
        self._connections: dict[tuple[int, int], _Connection] = {}
        self._local = threading.local()  # this thread's connection, see connection()

    def __repr__(self) -> str:
        return f"SQLiteBackend({self.uri!r})"

    # -- connections ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def errors(self) -> Iterator[None]:
        """Turn driver errors into StoreError naming the database."""
        try:
            yield
        except sqlite3.Error as exc:
            raise self._error(exc) from exc

    def _error(self, exc: sqlite3.Error) -> StoreError:
        return StoreError(f"SQLite store {self.uri} ({self.path}): {exc}")

    def _process_lock(self) -> threading.Lock:
        # A child of fork() gets the lock in the state the parent's threads left it, possibly
        # held by a thread that does not exist here; a fresh one cannot deadlock.
        pid = os.getpid()
        if pid != self._pid:
            self._lock = threading.Lock()
            self._schema_ready = False
            self._pid = pid
        return self._lock

    def connection(self) -> _Connection:
        """This thread's connection in this process, opened (and the tables made) on first use.

        Every store call asks for it, several times per message, so the answer is kept in a
        thread-local slot, valid while the process has not forked since (see
        :func:`_forked`) and the connection is open: no system call per call."""
        local = self._local
        conn: _Connection | None = getattr(local, "conn", None)
        if conn is not None and local.forks == _forks and conn.open:
            return conn
        conn = self._open_connection()
        local.conn, local.forks = conn, _forks
        return conn

    def _open_connection(self) -> _Connection:
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
        with self.errors():
            # isolation_level=None: no implicit transactions; transaction() issues BEGIN itself.
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
        with self.errors():
            self._use_wal(connection)
            if connection.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION:
                return
            connection.execute("BEGIN IMMEDIATE")  # another process may be creating it too
            try:
                version = connection.execute("PRAGMA user_version").fetchone()[0]
                self._refuse(version)
                if version != SCHEMA_VERSION:
                    for statement in _SCHEMA:
                        connection.execute(statement)
                    connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                connection.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    connection.execute("ROLLBACK")
                raise

    def _refuse(self, version: int) -> None:
        """StoreError for a file this code must not read (and leaves as it is)."""
        if version in OLD_LAYOUTS:
            raise StoreError(
                f"SQLite store {self.uri}: {self.path} has schema version {version}, the layout "
                "of a development version of flask-openadr before 0.1.0, which this one does not "
                "read (it left the file untouched); move the file away, let the VTN create a "
                "new one, and register the VENs again"
            )
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"SQLite store {self.uri}: {self.path} has schema version {version}, written by "
                f"a newer flask-openadr; this one knows up to {SCHEMA_VERSION}"
            )

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
                conn.open = False
                with contextlib.suppress(sqlite3.Error):
                    conn.sqlite.close()

    def close(self) -> None:
        """Close every connection this process opened (in any thread). Connections inherited
        from a parent process are left alone. The store reconnects if used again."""
        pid = os.getpid()
        with self._process_lock():
            for key in [key for key in self._connections if key[0] == pid]:
                conn = self._connections.pop(key)
                conn.open = False
                with self.errors():
                    conn.sqlite.close()

    def checkpoint(self) -> None:
        """Checkpoint the WAL and truncate it, waiting at most :data:`CHECKPOINT_WAIT` (see
        :meth:`SQLiteStore.maintain`)."""
        conn = self.connection()
        if conn.depth:
            raise RuntimeError("maintain() checkpoints the WAL; call it outside atomic() blocks")
        with self.errors():
            conn.sqlite.execute(f"PRAGMA busy_timeout = {int(CHECKPOINT_WAIT * 1000)}")
            try:
                conn.sqlite.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            finally:
                conn.sqlite.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")

    def create_schema(self) -> None:
        """Create the tables and indexes; idempotent. The first use of the store does the same,
        so calling this is optional (``flask openadr init-db``)."""
        conn = self.connection()
        with self._process_lock():
            self._ensure_schema(conn.sqlite)
            self._schema_ready = True

    # -- transactions --------------------------------------------------------------------------

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        """Nothing to hold: a thread keeps its connection."""
        yield

    @contextlib.contextmanager
    def transaction(self, lock: str | None = None) -> Iterator[None]:
        """Every block is VTN-wide, whatever ``lock`` (SQLite has one writer at a time, so
        blocks are kept short instead).

        The outermost block runs ``BEGIN IMMEDIATE``, which takes the database's write lock at
        once: a second writer (any thread, any process) waits there, before it has read
        anything, so what a block reads is still true when it writes, and a compare-and-set in
        it never loses at commit.
        """
        conn = self.connection()
        if conn.depth:
            conn.depth += 1
            try:
                yield
            finally:
                conn.depth -= 1
            return
        with self.errors():
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
            with self.errors():
                conn.sqlite.execute("COMMIT")
        except StoreError:
            with contextlib.suppress(sqlite3.Error):
                if conn.sqlite.in_transaction:
                    conn.sqlite.execute("ROLLBACK")
            raise

    def touch_online(self, now_text: str, offline_text: str, ven_id: str,
                     nonce: tuple[str, str, str] | None = None) -> bool:
        """The liveness update of a VEN found online: its row and its due entry, and a signed
        message's nonce ``(nonce, now, expires_at)`` with its expiry entry. Outside a block
        they are one transaction, which writes nothing when the VEN is not online (False);
        inside one they join it (the nonce stays taken when the VEN is not online). Raises
        :class:`NonceUsed` when the nonce was taken before (outside a block nothing is
        written; inside, the block's rollback undoes it).

        The statements are run on the connection directly: this runs once per message, and
        the context manager, the connection lookups and the error wrapping per statement of
        :meth:`transaction` and :meth:`change` cost more than the statements themselves."""
        conn = self.connection()
        connection = conn.sqlite
        try:
            if conn.depth:
                return self._touch(connection, now_text, offline_text, ven_id, nonce)
            connection.execute("BEGIN IMMEDIATE")
            try:
                touched = self._touch(connection, now_text, offline_text, ven_id, nonce)
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    if connection.in_transaction:
                        connection.execute("ROLLBACK")
                raise
            connection.execute("COMMIT" if touched else "ROLLBACK")
            return touched
        except sqlite3.Error as exc:
            raise self._error(exc) from exc

    @staticmethod
    def _touch(connection: sqlite3.Connection, now_text: str, offline_text: str, ven_id: str,
               nonce: tuple[str, str, str] | None) -> bool:
        if nonce is not None:
            if not connection.execute(_TAKE_NONCE, (nonce[0], nonce[2], nonce[1])).rowcount:
                raise NonceUsed(nonce[0])
            connection.execute(_INDEX_SET, (NONCE_EXPIRY, nonce[0], nonce[2]))
        if not connection.execute(_TOUCH_ONLINE, (now_text, offline_text, ven_id)).rowcount:
            return False
        connection.execute(_TOUCH_DUE, (offline_text, ven_id))
        return True

    def read(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        """Rows of one SELECT; outside a transaction it sees one consistent snapshot on its
        own, so reads need no BEGIN."""
        conn = self.connection()
        try:  # not errors(): a try costs nothing, a context manager a call on every read
            return conn.sqlite.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise self._error(exc) from exc

    def change(self, sql: str, params: tuple[Any, ...]) -> int:
        """Run one writing statement, as its own transaction or as part of the open block; the
        number of rows it changed. A single statement is atomic on its own and takes the write
        lock before it reads, so it needs no BEGIN around it."""
        conn = self.connection()
        try:
            return conn.sqlite.execute(sql, params).rowcount
        except sqlite3.Error as exc:
            raise self._error(exc) from exc

    def change_many(self, sql: str, params: Iterable[tuple[Any, ...]]) -> None:
        """:meth:`change` once per parameter tuple, in one call (a fan-out's writes)."""
        conn = self.connection()
        try:
            conn.sqlite.executemany(sql, params)
        except sqlite3.Error as exc:
            raise self._error(exc) from exc

    # -- rows ----------------------------------------------------------------------------------

    def get(self, table: str, keys: Iterable[str]) -> dict[str, Row]:
        unique = list(dict.fromkeys(keys))
        if len(unique) == 1:  # the common case, with a statement of its own that stays cached
            rows = self.read("SELECT key, version, value FROM store_rows "
                             "WHERE tbl = ? AND key = ?", (table, unique[0]))
        else:
            rows = []
            for start in range(0, len(unique), MANY_CHUNK):
                chunk = unique[start:start + MANY_CHUNK]
                rows += self.read("SELECT key, version, value FROM store_rows WHERE tbl = ? "
                                  f"AND key IN ({', '.join('?' * len(chunk))})",
                                  (table, *chunk))
        return {key: Row(version, value) for key, version, value in rows}

    def scan(self, table: str, partition: str) -> list[tuple[str, Row]]:
        rows = self.read("SELECT key, version, value FROM store_rows "
                         "WHERE tbl = ? AND part = ? ORDER BY seq", (table, partition))
        return [(key, Row(version, value)) for key, version, value in rows]

    def put(self, table: str, key: str, value: str, *, partition: str = "",
            expect: int | None = None) -> bool:
        if expect is not None and expect > 0:
            return bool(self.change(
                "UPDATE store_rows SET version = version + 1, value = ? "
                "WHERE tbl = ? AND key = ? AND version = ?", (value, table, key, expect)))
        # A new key goes after its partition's others; a put of an existing one keeps its seq
        # and its partition (a key never leaves it).
        conflict = ("DO NOTHING" if expect == 0 else
                    "DO UPDATE SET version = version + 1, value = excluded.value")
        return bool(self.change(
            "INSERT INTO store_rows (tbl, key, part, seq, version, value) VALUES (?1, ?2, ?3, "
            "(SELECT COALESCE(MAX(seq), 0) + 1 FROM store_rows WHERE tbl = ?1 AND part = ?3), "
            f"1, ?4) ON CONFLICT (tbl, key) {conflict}", (table, key, partition, value)))

    def delete(self, table: str, keys: Iterable[str]) -> None:
        unique = list(dict.fromkeys(keys))
        if not unique:
            return
        with self.transaction():  # several statements for many keys: all of them or none
            for start in range(0, len(unique), MANY_CHUNK):
                chunk = unique[start:start + MANY_CHUNK]
                self.change("DELETE FROM store_rows WHERE tbl = ? "
                            f"AND key IN ({', '.join('?' * len(chunk))})", (table, *chunk))

    # -- the index of due items ----------------------------------------------------------------

    def index_set(self, index: str, member: str, score: str | None) -> None:
        if score is None:
            self.change("DELETE FROM store_index WHERE idx = ? AND member = ?", (index, member))
            return
        self.change(_INDEX_SET, (index, member, score))

    def index_range(self, index: str, upto: str, limit: int) -> list[tuple[str, str]]:
        rows = self.read("SELECT member, score FROM store_index WHERE idx = ? AND score <= ? "
                         "ORDER BY score, member LIMIT ?", (index, upto, limit))
        return [(member, score) for member, score in rows]


# record_seen of an online VEN (every unsigned message): the row of the rules' _seen, as SQL.
# json_set keeps the other fields and their order; the version goes up as with any put.
_TOUCH_ONLINE = (
    "UPDATE store_rows SET version = version + 1, "
    "value = json_set(value, '$.last_seen', ?1, '$.offline_at', ?2) "
    f"WHERE tbl = '{LIVENESS}' AND key = ?3 AND json_extract(value, '$.state') = 'online'"
)
# ... and its entry in the index of due VENs, in the same transaction.
_TOUCH_DUE = f"UPDATE store_index SET score = ? WHERE idx = '{DUE_OFFLINE}' AND member = ?"
# The rules' nonce compare-and-set in one statement: a new nonce is inserted, an expired one
# taken over (its version goes up, as a put's does), an unexpired one left alone (no row).
_TAKE_NONCE = (
    "INSERT INTO store_rows (tbl, key, part, seq, version, value) "
    f"VALUES ('{NONCES}', ?1, '', (SELECT COALESCE(MAX(seq), 0) + 1 FROM store_rows "
    f"WHERE tbl = '{NONCES}' AND part = ''), 1, ?2) ON CONFLICT (tbl, key) "
    "DO UPDATE SET version = version + 1, value = excluded.value WHERE value <= ?3"
)
# index_set of a score: an unchanged score writes nothing (the liveness rules set both
# indexes on every save).
_INDEX_SET = (
    "INSERT INTO store_index (idx, member, score) VALUES (?, ?, ?) "
    "ON CONFLICT (idx, member) DO UPDATE SET score = excluded.score "
    "WHERE score != excluded.score"
)
_GET_VEN = f"SELECT value FROM store_rows WHERE tbl = '{VENS}' AND key = ?"
# set_delivered_many: the rules' put of each VEN's delivery record, for executemany.
_PUT_DELIVERED = (
    "INSERT INTO store_rows (tbl, key, part, seq, version, value) "
    f"VALUES ('{DELIVERED}', ?1, '', (SELECT COALESCE(MAX(seq), 0) + 1 FROM store_rows "
    f"WHERE tbl = '{DELIVERED}' AND part = ''), 1, ?2) ON CONFLICT (tbl, key) "
    "DO UPDATE SET version = version + 1, value = excluded.value"
)
# get_poll_state: the VEN's delivery record, its records of a kind and its outbox, each in
# its partition's order, in one statement. INDEXED BY: without statistics (no ANALYZE has run
# on a VTN's file) SQLite plans the partitions of a literal table name as a range of the
# primary key, every row of the table (every VEN's records), not the partition's index.
_POLL_STATE = (
    f"SELECT 0, seq, key, value FROM store_rows WHERE tbl = '{DELIVERED}' AND key = ?1 "
    "UNION ALL SELECT 1, seq, key, value FROM store_rows INDEXED BY store_rows_scan "
    f"WHERE tbl = '{RECORDS}' AND part = ?2 "
    "UNION ALL SELECT 2, seq, key, value FROM store_rows INDEXED BY store_rows_scan "
    f"WHERE tbl = '{OUTBOX}' AND part = ?1 "
    "ORDER BY 1, 2"
)

# pop_outbox: the item the rules pop first (priority, the second part of the key, then first
# put), found by SQLite in the VEN's partition (INDEXED BY: see _POLL_STATE).
_NEXT_OUT = (
    "SELECT json_extract(key, '$[1]') AS priority, key, value FROM store_rows "
    f"INDEXED BY store_rows_scan WHERE tbl = '{OUTBOX}' AND part = ? "
    "ORDER BY priority, seq LIMIT 1"
)


class SQLiteStore(RulesStore):
    """The ``sqlite:///path`` store: :class:`~flask_openadr.store.rules.RulesStore` on a
    :class:`SQLiteBackend` (same arguments), with the poll's two calls as tuned statements.
    """

    #: Shared by every process that opens the same URI (see :attr:`Store.single_process`).
    single_process: ClassVar[bool] = False
    backend: SQLiteBackend

    def __init__(self, path: str, *, uri: str | None = None, timeout: float = 30.0):
        super().__init__(SQLiteBackend(path, uri=uri, timeout=timeout))
        # Whether SQLite has its JSON functions (built in since 3.38, and in nearly every
        # build before): without them record_seen takes the rules' path. None: not asked yet.
        self._json: bool | None = None

    def __repr__(self) -> str:
        return f"SQLiteStore({self.uri!r})"

    @property
    def path(self) -> str:
        return self.backend.path

    @property
    def uri(self) -> str:
        return self.backend.uri

    @property
    def timeout(self) -> float:
        return self.backend.timeout

    def maintain(self, now: datetime | None = None) -> None:
        """Remove the expired nonces (see :meth:`RulesStore.maintain`), then checkpoint the WAL
        and truncate it.

        Readers are almost always active under load, so SQLite's automatic checkpoints copy
        pages back but never find a moment to restart the WAL from its beginning, and the file
        only grows. A ``TRUNCATE`` checkpoint waits for those readers, and while it waits new
        writers wait too, so it waits only :data:`CHECKPOINT_WAIT` seconds: on a busy file it
        gives up and the next pass tries again, rather than hold requests back."""
        if self.backend.connection().depth:
            raise RuntimeError("maintain() checkpoints the WAL; call it outside atomic() blocks")
        super().maintain(now)
        self.backend.checkpoint()

    # -- fast paths: the calls of every poll ---------------------------------------------------

    def record_seen(self, ven_id: str, now: datetime, offline_at: datetime,
                    lease_until: datetime, nonce: str | None = None,
                    nonce_expires_at: datetime | None = None) -> Transition | None:
        """The rules' :meth:`~RulesStore.record_seen` (one transaction), with statements of its
        own for a VEN found online, which is all but the first message of each VEN: its row and
        its due entry in two ``UPDATE`` statements, and a nonce in one ``INSERT``
        (:meth:`SQLiteBackend.touch_online`). A VEN going online takes the rules' path, in the
        same transaction as the nonce."""
        now_text = utc_text(now, "now")
        offline_text = utc_text(offline_at, "offline_at")
        utc_text(lease_until, "lease_until")  # refused before anything is written
        nonce_texts = check_seen_nonce(nonce, now, nonce_expires_at)
        if not self._has_json():
            return super().record_seen(ven_id, now, offline_at, lease_until, nonce,
                                       nonce_expires_at)
        backend = self.backend
        in_block = bool(backend.connection().depth)
        taken = None if nonce is None or nonce_texts is None else (nonce, *nonce_texts)
        if backend.touch_online(now_text, offline_text, ven_id, taken):
            return None
        # Offline or never seen: the rules' transition. Inside a block it joins the block,
        # which holds the nonce already; outside, nothing was written and the rules take the
        # nonce in the transition's transaction.
        if in_block:
            return super().record_seen(ven_id, now, offline_at, lease_until)
        return super().record_seen(ven_id, now, offline_at, lease_until, nonce, nonce_expires_at)

    def get_ven(self, ven_id: str) -> VenRecord | None:
        """The rules' :meth:`~RulesStore.get_ven` in one statement that reads the value only
        (every VEN message reads its VEN)."""
        rows = self.backend.read(_GET_VEN, (ven_id,))
        return cast(VenRecord, serialize.loads(rows[0][0])) if rows else None

    def _put_delivered(self, texts: dict[str, str]) -> None:
        """The puts of :meth:`~RulesStore.set_delivered_many` in one ``executemany`` (an event
        for a group of 100,000 VENs writes 100,000 records)."""
        self.backend.change_many(_PUT_DELIVERED, list(texts.items()))

    def _has_json(self) -> bool:
        if self._json is None:
            probe = sqlite3.connect(":memory:")  # the same library as the file's connections
            try:
                probe.execute("SELECT json_set('{}', '$.a', 1)")
                self._json = True
            except sqlite3.OperationalError:  # no such function
                self._json = False
            finally:
                probe.close()
        return self._json

    def pop_outbox(self, ven_id: str, max_priority: int | None = None) -> OutboxItem | None:
        """The rules' :meth:`~RulesStore.pop_outbox` with SQLite choosing the item: the rules
        read and sort the VEN's whole outbox in Python while they hold the write lock, which
        every other writer waits for."""
        if not self._has_json():
            return super().pop_outbox(ven_id, max_priority)
        check_max_priority(max_priority)
        with self.backend.transaction(ven_id):
            rows = self.backend.read(_NEXT_OUT, (ven_id,))
            if not rows or (max_priority is not None and rows[0][0] > max_priority):
                return None
            self.backend.delete(OUTBOX, [rows[0][1]])
        return cast(OutboxItem, serialize.loads(rows[0][2]))

    def get_poll_state(self, ven_id: str, kind: str) -> PollState:
        """See :meth:`flask_openadr.store.base.Store.get_poll_state`: the rules' three reads in
        one statement, with the rules' outbox order (by priority, first put first)."""
        rows = self.backend.read(_POLL_STATE, (ven_id, rules_key(kind, ven_id)))
        delivered: dict[str, Any] = {}
        records: list[dict[str, Any]] = []
        outbox: list[tuple[int, str]] = []
        for which, _, key, value in rows:
            if which == 0:
                delivered = serialize.loads(value)
            elif which == 1:
                records.append(serialize.loads(value))
            else:
                outbox.append((json.loads(key)[1], value))
        outbox.sort(key=lambda entry: entry[0])  # stable: FIFO within a priority
        return {"delivered": delivered, "records": records,
                "outbox": [serialize.loads(value) for _, value in outbox]}


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    """Whether SQLite said SQLITE_BUSY ("database is locked"). The error code is on the
    exception from Python 3.11; before that only the message tells."""
    code: int | None = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF == sqlite3.SQLITE_BUSY
    return "database is locked" in str(exc)
