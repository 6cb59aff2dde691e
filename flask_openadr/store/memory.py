"""The in-memory store (``memory://``): one process only, for tests, notebooks and ``flask run``.

Nothing is shared between processes: under gunicorn with several workers each worker would be a
VTN of its own, with its own VENs and events. Use ``sqlite:///...`` there.

It is :class:`~flask_openadr.store.rules.RulesStore`, which holds every rule of the store, on
:class:`MemoryBackend`, the smallest :class:`~flask_openadr.store.rules.Backend`: dicts of rows
under one re-entrant lock. Values are kept as the JSON text of
:mod:`flask_openadr.store.serialize`, as the SQLite backend keeps them, so every value going in
and out is a deep copy, the same values are refused and the same ones come back (datetimes in
UTC): code tested against this store behaves the same on a shared one.

A transaction keeps an undo log: each write inside one records what it replaced (one entry, one
small value), and a transaction that raises puts those back in reverse order. A transaction costs
what it writes, not what the store holds.

The index of due items is a dict scanned per query (O(n) per liveness sweep), which one process
with a few thousand VENs does not notice; the shared backends keep sorted indexes.
"""
from __future__ import annotations

import contextlib
import heapq
import os
import threading
import warnings
from typing import Any, Iterable, Iterator, NamedTuple

from ..errors import ConfigurationError
from .rules import NONCES, Row, RulesStore

__all__ = ["MemoryBackend", "MemoryStore", "from_uri"]


def from_uri(uri: str, *, instance_path: str | None = None) -> MemoryStore:
    """Open the store named by ``memory://`` (which takes no host, path or options)."""
    scheme, _, rest = uri.partition("://")
    if scheme.lower() != "memory" or rest not in ("", "/"):
        raise ConfigurationError(
            f"invalid memory store URI {uri!r}: write exactly 'memory://' "
            "(it takes no host, path or options)"
        )
    return MemoryStore()


class _Entry(NamedTuple):
    """A row as kept: ``seq`` is its place in its partition (first put), never changed by a put
    of the same key."""

    seq: int
    version: int
    partition: str
    value: str


_MISSING = object()  # in the undo log: the key was absent


class MemoryBackend:
    """A :class:`~flask_openadr.store.rules.Backend` in this process's memory.

    Thread-safe: one re-entrant lock guards all state, and :meth:`transaction` holds it for the
    whole block, so blocks in different threads run one after the other (whatever their
    ``lock``). Inside the outermost block every write goes through :meth:`_set` or
    :meth:`_pop`, which log the value they replace, and the block undoes the log when it raises.
    """

    def __init__(self) -> None:
        self._pid = os.getpid()
        self._lock = threading.RLock()
        self._depth = 0  # nesting of transaction() in the thread that holds the lock
        # The open block's undo log: (container, key, replaced value or _MISSING), oldest first;
        # None outside a block.
        self._undo: list[tuple[dict[Any, Any], Any, Any]] | None = None
        self._rows: dict[str, dict[str, _Entry]] = {}  # table -> key -> entry
        # table -> partition -> key -> seq, in first-put order (the scan order); seq puts a key
        # deleted in a rolled back block back in its place.
        self._partitions: dict[str, dict[str, dict[str, int]]] = {}
        self._indexes: dict[str, dict[str, str]] = {}  # index -> member -> score
        self._next_seq = 0

    def __repr__(self) -> str:
        return "MemoryBackend()"

    # -- locking and transactions --------------------------------------------------------------

    def _guard(self) -> threading.RLock:
        """This process's lock.

        After ``fork()`` the child owns a copy of the lock in whatever state the parent's threads
        left it: held by a thread that does not exist in the child, it would never be released and
        the child would hang on its first call. So a child replaces the lock (and forgets any
        open block) the first time it touches the store. The child keeps a copy of the data, which
        from then on is its own; that is why a memory store is for one process only, and why this
        warns.
        """
        pid = os.getpid()
        if pid != self._pid:
            self._lock = threading.RLock()
            self._depth = 0
            self._undo = None
            self._pid = pid
            warnings.warn(
                "a memory:// store is being used in a forked process: from here on this "
                "process's VENs, events and outboxes are its own. Use sqlite:///path (or another "
                "shared store) with more than one worker process.",
                RuntimeWarning,
                stacklevel=4,
            )
        return self._lock

    @contextlib.contextmanager
    def transaction(self, lock: str | None = None) -> Iterator[None]:
        """Every block is VTN-wide (one process, one lock)."""
        with self._guard():
            outermost = self._depth == 0
            if outermost:
                self._undo = []
            self._depth += 1
            try:
                yield
            except BaseException:
                if outermost:
                    self._roll_back()
                raise
            finally:
                self._depth -= 1
                if outermost:
                    self._undo = None

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        yield  # nothing to hold

    def close(self) -> None:
        """Nothing to release; the data stays for as long as the object lives."""

    def create_schema(self) -> None:
        """Nothing to create: the dicts exist from the start."""

    # Every write to the state goes through these two, with the lock held: outside a block they
    # just write; inside one they first log what they replace.

    def _set(self, container: dict[Any, Any], key: Any, value: Any) -> None:
        if self._undo is not None:
            self._undo.append((container, key, container.get(key, _MISSING)))
        container[key] = value

    def _pop(self, container: dict[Any, Any], key: Any) -> None:
        if key not in container:
            return
        if self._undo is not None:
            self._undo.append((container, key, container[key]))
        del container[key]

    def _roll_back(self) -> None:
        """Undo the open block's writes, newest first. A key put back in a partition after its
        deletion goes to the end of its dict, so those partitions are then put back in ``seq``
        order."""
        assert self._undo is not None
        reordered: dict[int, dict[Any, Any]] = {}
        for container, key, old in reversed(self._undo):
            if old is _MISSING:
                container.pop(key, None)
                continue
            if key not in container and isinstance(old, int):  # only partitions hold ints
                reordered[id(container)] = container
            container[key] = old
        for container in reordered.values():
            items = sorted(container.items(), key=lambda item: item[1])
            container.clear()
            container.update(items)
        self._undo = None

    # -- rows ----------------------------------------------------------------------------------

    def get(self, table: str, keys: Iterable[str]) -> dict[str, Row]:
        with self._guard():
            rows = self._rows.get(table, {})
            found = {key: rows.get(key) for key in keys}
        return {key: Row(entry.version, entry.value) for key, entry in found.items()
                if entry is not None}

    def scan(self, table: str, partition: str) -> list[tuple[str, Row]]:
        with self._guard():
            rows = self._rows.get(table, {})
            keys = self._partitions.get(table, {}).get(partition, {})
            return [(key, Row(rows[key].version, rows[key].value)) for key in keys]

    def put(self, table: str, key: str, value: str, *, partition: str = "",
            expect: int | None = None) -> bool:
        with self._guard():
            rows = self._rows.get(table)
            if rows is None:
                rows = self._rows[table] = {}  # an empty table is no state to undo
            old = rows.get(key)
            if expect is not None and (old.version if old is not None else 0) != expect:
                return False
            if old is not None:
                self._set(rows, key, old._replace(version=old.version + 1, value=value))
                return True
            seq = self._next_seq  # gaps after a rollback are harmless; only the order matters
            self._next_seq += 1
            self._set(rows, key, _Entry(seq, 1, partition, value))
            partitions = self._partitions.setdefault(table, {})
            keys = partitions.get(partition)
            if keys is None:
                keys = {}
                self._set(partitions, partition, keys)
            self._set(keys, key, seq)
            return True

    def delete(self, table: str, keys: Iterable[str]) -> None:
        with self._guard():
            rows = self._rows.get(table, {})
            partitions = self._partitions.get(table, {})
            for key in keys:
                entry = rows.get(key)
                if entry is None:
                    continue
                self._pop(rows, key)
                in_partition = partitions[entry.partition]
                self._pop(in_partition, key)
                if not in_partition:
                    self._pop(partitions, entry.partition)

    # -- the index of due items ----------------------------------------------------------------

    def index_set(self, index: str, member: str, score: str | None) -> None:
        with self._guard():
            members = self._indexes.setdefault(index, {})
            if score is None:
                self._pop(members, member)
            elif members.get(member) != score:
                self._set(members, member, score)

    def index_range(self, index: str, upto: str, limit: int) -> list[tuple[str, str]]:
        with self._guard():
            due = [(score, member) for member, score in self._indexes.get(index, {}).items()
                   if score <= upto]
        return [(member, score) for score, member in heapq.nsmallest(limit, due)]


class MemoryStore(RulesStore):
    """The ``memory://`` store: :class:`~flask_openadr.store.rules.RulesStore` on a
    :class:`MemoryBackend`."""

    #: Nothing is shared with other processes (see :attr:`Store.single_process`).
    single_process = True

    def __init__(self) -> None:
        super().__init__(MemoryBackend())

    def __repr__(self) -> str:
        return "MemoryStore('memory://')"

    @property
    def _nonces(self) -> dict[str, str]:
        """The remembered nonces and their expiry (for tests: the lazy purge is not observable
        otherwise)."""
        backend: MemoryBackend = self.backend  # type: ignore[assignment]
        return {key: entry.value for key, entry in backend._rows.get(NONCES, {}).items()}
