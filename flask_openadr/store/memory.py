"""The in-memory store (``memory://``): one process only, for tests, notebooks and ``flask run``.

Nothing is shared between processes: under gunicorn with several workers each worker would be a
VTN of its own, with its own VENs and events. Use ``sqlite:///...`` there.

Records are kept as the JSON text of :mod:`flask_openadr.store.serialize`, exactly as the SQLite
backend keeps them. That makes every value going in and out a deep copy, refuses the same values
the other backends refuse, and gives back the same values (datetimes in UTC), so code tested
against this store behaves the same on a shared one.
"""
from __future__ import annotations

import contextlib
import os
import threading
import warnings
from typing import Any, Iterator

from ..errors import ConfigurationError
from . import serialize
from .base import (
    EventResponseRecord,
    OutboxItem,
    VenRecord,
    check_max_priority,
    event_id_of,
    event_response_key,
    normalize_fingerprint,
    outbox_priority,
    received_at_text,
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


class MemoryStore:
    """A :class:`~flask_openadr.store.base.Store` in this process's memory.

    Thread-safe: one re-entrant lock guards all state, and :meth:`atomic` holds it for the whole
    block, so blocks in different threads run one after the other. The outermost block takes a
    snapshot of the (shallow, immutable-text) state and restores it when the block raises.
    """

    def __init__(self) -> None:
        self._pid = os.getpid()
        self._lock = threading.RLock()
        self._depth = 0  # nesting of atomic() in the thread that holds the lock
        self._snapshot: tuple[Any, ...] | None = None
        self._vens: dict[str, tuple[str | None, str]] = {}  # ven_id -> (fingerprint key, text)
        self._events: dict[str, str] = {}  # insertion order is list_events() order
        self._delivered: dict[str, str] = {}
        # event_id -> (ven_id, modification_number) -> (received_at text, record text)
        self._responses: dict[str, dict[tuple[str, int], tuple[str | None, str]]] = {}
        self._outbox: dict[str, list[tuple[int, int, str]]] = {}  # (priority, seq, text)
        self._next_seq = 0

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
            self._snapshot = None
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
    def atomic(self) -> Iterator[None]:
        """See :meth:`flask_openadr.store.base.Store.atomic`."""
        with self._guard():
            outermost = self._depth == 0
            if outermost:
                self._snapshot = self._take_snapshot()
            self._depth += 1
            try:
                yield
            except BaseException:
                if outermost:
                    self._restore(self._snapshot)
                raise
            finally:
                self._depth -= 1
                if outermost:
                    self._snapshot = None

    def _take_snapshot(self) -> tuple[Any, ...]:
        # The values are immutable text, so copying the containers is enough.
        return (
            dict(self._vens),
            dict(self._events),
            dict(self._delivered),
            {event_id: dict(by_ven) for event_id, by_ven in self._responses.items()},
            {ven_id: list(items) for ven_id, items in self._outbox.items()},
        )

    def _restore(self, snapshot: tuple[Any, ...] | None) -> None:
        assert snapshot is not None
        (self._vens, self._events, self._delivered, self._responses, self._outbox) = snapshot

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
            self._vens[ven_id] = (key, text)

    def list_vens(self) -> list[VenRecord]:
        with self._guard():
            texts = [text for _, (_, text) in sorted(self._vens.items())]
        return [serialize.loads(text) for text in texts]

    # -- events --------------------------------------------------------------------------------

    def put_event(self, event: dict[str, Any]) -> None:
        event_id = event_id_of(event)
        text = serialize.dumps(event)
        with self._guard():
            self._events[event_id] = text  # an existing key keeps its position

    def get_event(self, event_id: str) -> dict[str, Any] | None:
        with self._guard():
            text = self._events.get(event_id)
        return None if text is None else serialize.loads(text)

    def list_events(self) -> list[dict[str, Any]]:
        with self._guard():
            texts = list(self._events.values())
        return [serialize.loads(text) for text in texts]

    def delete_event(self, event_id: str) -> None:
        with self._guard():
            self._events.pop(event_id, None)

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
                self._delivered[ven_id] = text
            else:
                self._delivered.pop(ven_id, None)

    # -- event responses -----------------------------------------------------------------------

    def put_event_response(self, response: EventResponseRecord) -> None:
        ven_id, event_id, modification_number = event_response_key(response)
        received_at = received_at_text(response)
        text = serialize.dumps(response)
        with self._guard():
            by_ven = self._responses.setdefault(event_id, {})
            by_ven[(ven_id, modification_number)] = (received_at, text)

    def list_event_responses(self, event_id: str) -> list[EventResponseRecord]:
        with self._guard():
            entries = list(self._responses.get(event_id, {}).items())
        # The SQL backends' order: received_at with missing ones first, then the key.
        entries.sort(key=lambda e: (e[1][0] is not None, e[1][0] or "", e[0]))
        return [serialize.loads(text) for _, (_, text) in entries]

    # -- outbox --------------------------------------------------------------------------------

    def push_outbox(self, ven_id: str, item: OutboxItem) -> None:
        priority = outbox_priority(item)
        text = serialize.dumps(item)
        with self._guard():
            seq = self._next_seq  # gaps after a rollback are harmless; only the order matters
            self._next_seq += 1
            self._outbox.setdefault(ven_id, []).append((priority, seq, text))

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
            text = items.pop(index)[2]
            if not items:
                del self._outbox[ven_id]
        return serialize.loads(text)

    def list_outbox(self, ven_id: str) -> list[OutboxItem]:
        with self._guard():
            items = sorted(self._outbox.get(ven_id, ()))
        return [serialize.loads(text) for _, _, text in items]

    def clear_outbox(self, ven_id: str) -> None:
        with self._guard():
            self._outbox.pop(ven_id, None)
