"""The in-memory store (``memory://``): one process only, for tests, notebooks and ``flask run``.

Nothing is shared between processes: under gunicorn with several workers each worker would be a
VTN of its own, with its own VENs and events. Use ``sqlite:///...`` there.

Records are kept as the JSON text of :mod:`flask_openadr.store.serialize`, exactly as the SQLite
backend keeps them. That makes every value going in and out a deep copy, refuses the same values
the other backends refuse, and gives back the same values (datetimes in UTC), so code tested
against this store behaves the same on a shared one. Liveness datetimes are kept as the same
sortable UTC text the SQLite backend compares, for the same reason.

:meth:`MemoryStore.atomic` keeps an undo log: each write inside a block records what it replaced
(one entry, one small value), and a block that raises puts those back in reverse order. A block
costs what it writes, not what the store holds.

The liveness sweeps (:meth:`MemoryStore.due_offline`, :meth:`MemoryStore.stale_transitions`)
scan every VEN: O(n) per call, which one process with a few thousand VENs does not notice. The
shared backends keep indexes instead.
"""
from __future__ import annotations

import contextlib
import heapq
import os
import threading
import warnings
from datetime import datetime
from typing import Any, Iterator, NamedTuple

from ..errors import ConfigurationError
from . import serialize
from .base import (
    PollState,
    read_poll_state,
    OFFLINE,
    ONLINE,
    EventResponseRecord,
    Liveness,
    OutboxItem,
    Transition,
    VenRecord,
    check_delivered,
    check_int,
    check_nonce,
    check_max_priority,
    check_record,
    check_record_key,
    event_id_of,
    event_response_key,
    liveness_from_row,
    normalize_fingerprint,
    outbox_priority,
    received_at_text,
    utc_text,
    ven_id_of,
)

__all__ = ["MemoryStore", "from_uri"]


def from_uri(uri: str, *, instance_path: str | None = None) -> MemoryStore:
    """Open the store named by ``memory://`` (which takes no host, path or options)."""
    scheme, _, rest = uri.partition("://")
    if scheme.lower() != "memory" or rest not in ("", "/"):
        raise ConfigurationError(
            f"invalid memory store URI {uri!r}: write exactly 'memory://' "
            "(it takes no host, path or options)"
        )
    return MemoryStore()


class _Placed(NamedTuple):
    """A value of an ordered container (events, records): ``seq`` is its place in the order."""

    seq: int
    text: str


_MISSING = object()  # in the undo log: the key was absent


class _Row(NamedTuple):
    """One VEN's liveness, with datetimes as :func:`~flask_openadr.store.base.utc_text`."""

    state: str
    epoch: int
    last_seen: str
    offline_at: str
    pending_kind: str | None
    pending_epoch: int | None
    lease_until: str | None


class MemoryStore:
    """A :class:`~flask_openadr.store.base.Store` in this process's memory.

    Thread-safe: one re-entrant lock guards all state, and :meth:`atomic` holds it for the whole
    block, so blocks in different threads run one after the other. Inside the outermost block
    every write goes through :meth:`_set` or :meth:`_pop`, which log the value they replace, and
    the block undoes the log when it raises.
    """

    #: Nothing is shared with other processes (see :attr:`Store.single_process`).
    single_process = True

    def __init__(self) -> None:
        self._pid = os.getpid()
        self._lock = threading.RLock()
        self._depth = 0  # nesting of atomic() in the thread that holds the lock
        # The open block's undo log: (container, key, replaced value or _MISSING), oldest first;
        # None outside a block.
        self._undo: list[tuple[dict[Any, Any], Any, Any]] | None = None
        self._vens: dict[str, tuple[str | None, str]] = {}  # ven_id -> (fingerprint key, text)
        # event_id -> (seq, text): insertion order is list_events() order; seq is that order
        # too, so a rollback that puts a deleted event back can put it back in its place.
        self._events: dict[str, _Placed] = {}
        self._delivered: dict[str, str] = {}
        # event_id -> (ven_id, modification_number) -> (received_at text, record text)
        self._responses: dict[str, dict[tuple[str, int], tuple[str | None, str]]] = {}
        self._outbox: dict[str, list[tuple[int, int, str]]] = {}  # (priority, seq, text)
        self._next_seq = 0
        # (kind, ven_id) -> key -> (seq, text); dict order (and seq) is list_records() order.
        self._records: dict[tuple[str, str], dict[str, _Placed]] = {}
        # ven_id -> _Row. Rows are immutable tuples, replaced on every change.
        self._liveness: dict[str, _Row] = {}
        # Replay nonces: nonce -> expiry (UTC text), and a heap by expiry for the lazy purge.
        # Not in the undo log: a nonce is remembered at once.
        self._nonces: dict[str, str] = {}
        self._nonce_expiries: list[tuple[str, str]] = []

    def __repr__(self) -> str:
        return "MemoryStore('memory://')"

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
                stacklevel=3,
            )
        return self._lock

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        """See :meth:`flask_openadr.store.base.Store.session`; nothing to hold here."""
        yield

    @contextlib.contextmanager
    def atomic(self, ven_id: str | None = None) -> Iterator[None]:
        """See :meth:`flask_openadr.store.base.Store.atomic`; every block is VTN-wide (one
        process, one lock)."""
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

    def _child(self, container: dict[Any, Any], key: Any) -> dict[Any, Any]:
        """``container[key]``, a dict, created (and logged) when missing."""
        child = container.get(key)
        if child is None:
            child = {}
            self._set(container, key, child)
        return child

    def _take_seq(self) -> int:
        # Gaps after a rollback are harmless; only the order matters.
        seq = self._next_seq
        self._next_seq += 1
        return seq

    def _roll_back(self) -> None:
        """Undo the open block's writes, newest first. A key put back after its deletion goes
        to the end of its dict, so the ordered containers (events and records, whose values
        start with their ``seq``) are then put back in ``seq`` order."""
        assert self._undo is not None
        reordered: dict[int, dict[Any, Any]] = {}
        for container, key, old in reversed(self._undo):
            if old is _MISSING:
                container.pop(key, None)
                continue
            if key not in container and isinstance(old, _Placed):
                reordered[id(container)] = container
            container[key] = old
        for container in reordered.values():
            items = sorted(container.items(), key=lambda item: item[1].seq)
            container.clear()
            container.update(items)
        self._undo = None

    def close(self) -> None:
        """Nothing to release; the data stays for as long as the object lives."""

    # -- VENs ----------------------------------------------------------------------------------
    # Each method validates and encodes before it takes the lock, so a refused value never
    # leaves half a write behind.

    def get_ven(self, ven_id: str) -> VenRecord | None:
        with self._guard():
            entry = self._vens.get(ven_id)
        return None if entry is None else serialize.loads(entry[1])

    def get_ven_by_fingerprint(self, fingerprint: str) -> VenRecord | None:
        wanted = normalize_fingerprint(fingerprint)
        if wanted is None:
            return None
        with self._guard():
            matches = sorted(
                (ven_id, text) for ven_id, (key, text) in self._vens.items() if key == wanted
            )
        return serialize.loads(matches[0][1]) if matches else None

    def put_ven(self, ven: VenRecord) -> None:
        ven_id = ven_id_of(ven)
        key = normalize_fingerprint(ven.get("fingerprint"))
        text = serialize.dumps(ven)
        with self._guard():
            self._set(self._vens, ven_id, (key, text))

    def list_vens(self) -> list[VenRecord]:
        with self._guard():
            texts = [text for _, (_, text) in sorted(self._vens.items())]
        return [serialize.loads(text) for text in texts]

    # -- events --------------------------------------------------------------------------------

    def put_event(self, event: dict[str, Any]) -> None:
        event_id = event_id_of(event)
        text = serialize.dumps(event)
        with self._guard():
            placed = self._events.get(event_id)  # an existing key keeps its place
            seq = placed.seq if placed is not None else self._take_seq()
            self._set(self._events, event_id, _Placed(seq, text))

    def get_event(self, event_id: str) -> dict[str, Any] | None:
        with self._guard():
            placed = self._events.get(event_id)
        return None if placed is None else serialize.loads(placed.text)

    def get_events(self, event_ids: list[str]) -> dict[str, dict[str, Any]]:
        with self._guard():
            found = {event_id: self._events.get(event_id) for event_id in event_ids}
        return {event_id: serialize.loads(placed.text) for event_id, placed in found.items()
                if placed is not None}

    def list_events(self) -> list[dict[str, Any]]:
        with self._guard():
            texts = [placed.text for placed in self._events.values()]
        return [serialize.loads(text) for text in texts]

    def delete_event(self, event_id: str) -> None:
        with self._guard():
            self._pop(self._events, event_id)

    # -- delivery state ------------------------------------------------------------------------

    def get_delivered(self, ven_id: str) -> dict[str, int]:
        with self._guard():
            text = self._delivered.get(ven_id)
        return {} if text is None else serialize.loads(text)

    def set_delivered(self, ven_id: str, delivered: dict[str, int]) -> None:
        if not isinstance(delivered, dict):
            raise TypeError(f"delivered must be a dict of event_id -> int, got {delivered!r}")
        text = serialize.dumps(delivered)
        with self._guard():
            if delivered:
                self._set(self._delivered, ven_id, text)
            else:
                self._pop(self._delivered, ven_id)

    def get_delivered_many(self, ven_ids: list[str]) -> dict[str, dict[str, Any]]:
        with self._guard():
            texts = {ven_id: self._delivered.get(ven_id) for ven_id in ven_ids}
        return {ven_id: {} if text is None else serialize.loads(text)
                for ven_id, text in texts.items()}

    def set_delivered_many(self, delivered: dict[str, dict[str, Any]]) -> None:
        for value in delivered.values():
            check_delivered(value)
        texts = {ven_id: serialize.dumps(value) if value else None
                 for ven_id, value in delivered.items()}
        with self._guard():
            for ven_id, text in texts.items():
                if text is None:
                    self._pop(self._delivered, ven_id)
                else:
                    self._set(self._delivered, ven_id, text)

    # -- event responses -----------------------------------------------------------------------

    def put_event_response(self, response: EventResponseRecord) -> None:
        ven_id, event_id, modification_number = event_response_key(response)
        received_at = received_at_text(response)
        text = serialize.dumps(response)
        with self._guard():
            by_ven = self._child(self._responses, event_id)
            self._set(by_ven, (ven_id, modification_number), (received_at, text))

    def list_event_responses(self, event_id: str) -> list[EventResponseRecord]:
        with self._guard():
            entries = list(self._responses.get(event_id, {}).items())
        # The SQL backends' order: received_at with missing ones first, then the key.
        entries.sort(key=lambda e: (e[1][0] is not None, e[1][0] or "", e[0]))
        return [serialize.loads(text) for _, (_, text) in entries]

    def delete_event_responses(self, event_id: str) -> None:
        with self._guard():
            self._pop(self._responses, event_id)

    # -- outbox --------------------------------------------------------------------------------

    def push_outbox(self, ven_id: str, item: OutboxItem) -> None:
        priority = outbox_priority(item)
        text = serialize.dumps(item)
        with self._guard():
            # A VEN's outbox is a few items, replaced rather than changed in place so that the
            # undo log can keep the old list.
            items = self._outbox.get(ven_id, [])
            self._set(self._outbox, ven_id, [*items, (priority, self._take_seq(), text)])

    def pop_outbox(self, ven_id: str, max_priority: int | None = None) -> OutboxItem | None:
        check_max_priority(max_priority)
        with self._guard():
            items = self._outbox.get(ven_id)
            if not items:
                return None
            eligible = [
                i
                for i, (priority, _, _) in enumerate(items)
                if max_priority is None or priority <= max_priority
            ]
            if not eligible:
                return None
            index = min(eligible, key=lambda i: items[i][:2])
            text = items[index][2]
            rest = items[:index] + items[index + 1:]
            if rest:
                self._set(self._outbox, ven_id, rest)
            else:
                self._pop(self._outbox, ven_id)
        return serialize.loads(text)

    def list_outbox(self, ven_id: str) -> list[OutboxItem]:
        with self._guard():
            items = sorted(self._outbox.get(ven_id, ()))
        return [serialize.loads(text) for _, _, text in items]

    def clear_outbox(self, ven_id: str) -> None:
        with self._guard():
            self._pop(self._outbox, ven_id)

    def get_poll_state(self, ven_id: str, kind: str) -> PollState:
        """See :meth:`flask_openadr.store.base.Store.get_poll_state`."""
        return read_poll_state(self, ven_id, kind)

    # -- records -------------------------------------------------------------------------------

    def put_record(self, kind: str, ven_id: str, key: str, record: dict[str, Any]) -> None:
        check_record_key(kind, ven_id, key)
        check_record(record)
        text = serialize.dumps(record)
        with self._guard():
            # An existing key keeps its place in the dict, hence in list_records().
            by_key = self._child(self._records, (kind, ven_id))
            placed = by_key.get(key)
            seq = placed.seq if placed is not None else self._take_seq()
            self._set(by_key, key, _Placed(seq, text))

    def get_record(self, kind: str, ven_id: str, key: str) -> dict[str, Any] | None:
        with self._guard():
            placed = self._records.get((kind, ven_id), {}).get(key)
        return None if placed is None else serialize.loads(placed.text)

    def list_records(self, kind: str, ven_id: str) -> list[dict[str, Any]]:
        with self._guard():
            texts = [placed.text for placed in self._records.get((kind, ven_id), {}).values()]
        return [serialize.loads(text) for text in texts]

    def delete_record(self, kind: str, ven_id: str, key: str) -> None:
        with self._guard():
            by_key = self._records.get((kind, ven_id))
            if by_key is not None:
                self._pop(by_key, key)
                if not by_key:
                    self._pop(self._records, (kind, ven_id))

    def clear_records(self, kind: str, ven_id: str) -> None:
        with self._guard():
            self._pop(self._records, (kind, ven_id))

    # -- liveness ------------------------------------------------------------------------------
    # Each compare-and-set runs under the lock, which is what makes it one step for every thread
    # of the process (and there is only one process).

    def record_seen(
        self, ven_id: str, now: datetime, offline_at: datetime, lease_until: datetime
    ) -> Transition | None:
        now_text = utc_text(now, "now")
        offline_text = utc_text(offline_at, "offline_at")
        lease_text = utc_text(lease_until, "lease_until")
        with self._guard():
            row = self._liveness.get(ven_id)
            if row is not None and row.state == ONLINE:
                self._set(self._liveness, ven_id,
                          row._replace(last_seen=now_text, offline_at=offline_text))
                return None
            epoch = 1 if row is None else row.epoch + 1
            self._set(self._liveness, ven_id,
                      _Row(ONLINE, epoch, now_text, offline_text, ONLINE, epoch, lease_text))
        return {"ven_id": ven_id, "kind": ONLINE, "epoch": epoch}

    def due_offline(self, now: datetime, limit: int) -> list[tuple[str, int]]:
        now_text = utc_text(now, "now")
        check_int(limit, "limit", minimum=0)
        with self._guard():
            due = [
                (row.offline_at, ven_id, row.epoch)
                for ven_id, row in self._liveness.items()
                if row.state == ONLINE and row.offline_at <= now_text
            ]
        return [(ven_id, epoch) for _, ven_id, epoch in heapq.nsmallest(limit, due)]

    def claim_offline(
        self, ven_id: str, epoch: int, now: datetime, lease_until: datetime
    ) -> Transition | None:
        check_int(epoch, "epoch")
        now_text = utc_text(now, "now")
        lease_text = utc_text(lease_until, "lease_until")
        with self._guard():
            row = self._liveness.get(ven_id)
            if (
                row is None
                or row.state != ONLINE
                or row.epoch != epoch
                or row.offline_at > now_text
            ):
                return None
            self._set(self._liveness, ven_id, row._replace(
                state=OFFLINE,
                epoch=epoch + 1,
                pending_kind=OFFLINE,
                pending_epoch=epoch + 1,
                lease_until=lease_text,
            ))
        return {"ven_id": ven_id, "kind": OFFLINE, "epoch": epoch + 1}

    def complete_transition(self, ven_id: str, epoch: int) -> None:
        check_int(epoch, "epoch")
        with self._guard():
            row = self._liveness.get(ven_id)
            if row is not None and row.pending_kind is not None and row.pending_epoch == epoch:
                self._set(self._liveness, ven_id, row._replace(
                    pending_kind=None, pending_epoch=None, lease_until=None
                ))

    def stale_transitions(self, now: datetime, limit: int) -> list[Transition]:
        now_text = utc_text(now, "now")
        check_int(limit, "limit", minimum=0)
        with self._guard():
            stale = [
                (row.lease_until, ven_id, row.pending_kind, row.pending_epoch)
                for ven_id, row in self._liveness.items()
                if row.pending_kind is not None and row.lease_until <= now_text
            ]
        return [
            {"ven_id": ven_id, "kind": kind, "epoch": epoch}
            for _, ven_id, kind, epoch in heapq.nsmallest(limit, stale)
        ]

    def reclaim_transition(
        self, ven_id: str, epoch: int, now: datetime, lease_until: datetime
    ) -> bool:
        check_int(epoch, "epoch")
        now_text = utc_text(now, "now")
        lease_text = utc_text(lease_until, "lease_until")
        with self._guard():
            row = self._liveness.get(ven_id)
            if (
                row is None
                or row.pending_kind is None
                or row.pending_epoch != epoch
                or row.lease_until > now_text
            ):
                return False
            self._set(self._liveness, ven_id, row._replace(lease_until=lease_text))
        return True

    def get_liveness(self, ven_id: str) -> Liveness | None:
        with self._guard():
            row = self._liveness.get(ven_id)
        return None if row is None else liveness_from_row(ven_id, *row)

    def list_liveness(self) -> dict[str, Liveness]:
        with self._guard():
            rows = sorted(self._liveness.items())
        return {ven_id: liveness_from_row(ven_id, *row) for ven_id, row in rows}

    def remember_nonce(self, nonce: str, now: datetime, expires_at: datetime) -> bool:
        now_text, expires_text = check_nonce(nonce, now, expires_at)
        with self._guard():
            heap = self._nonce_expiries
            while heap and heap[0][0] <= now_text:
                expired, old = heapq.heappop(heap)
                if self._nonces.get(old) == expired:
                    del self._nonces[old]
            current = self._nonces.get(nonce)
            if current is not None and current > now_text:
                return False
            self._nonces[nonce] = expires_text
            heapq.heappush(heap, (expires_text, nonce))
            return True

    def create_schema(self) -> None:
        """Nothing to create: the dicts exist from the start."""

