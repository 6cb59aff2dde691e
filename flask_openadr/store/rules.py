"""The store's rules written once, above a small backend interface a custom store implements.

:class:`RulesStore` is a whole :class:`~flask_openadr.store.base.Store` (every method the
services call) built on a :class:`Backend` of ten methods. It holds every rule of the store
contract: the encoding and validation of values, put-keeps-its-place ordering of events and
records, the outbox's priority-then-FIFO order, the order of event responses, the liveness
compare-and-set transitions and the expiry of replay nonces. A backend only keeps text.

**What a backend implements** (:class:`Backend`):

- ``transaction(lock)``: a re-entrant context manager; everything inside takes effect together
  or not at all (a nested one joins the outermost). ``lock`` is a venID for blocks that write
  only that VEN's data, which need only wait for blocks of the same VEN and for VTN-wide ones,
  or None for a VTN-wide block, which waits for every other block. A backend with one writer
  at a time may treat every block as VTN-wide.
- ``session()``: hold what one request needs (a pooled connection) until it ends; re-entrant;
  may do nothing. ``close()``: release this process's resources. ``create_schema()``: create
  tables or whatever the backend needs, idempotently (the backend also does it on first use).
- Rows: a table holds rows by key (unique in the table), each in a *partition* (a string the
  key's row never leaves) with a text value and a version that goes up by one on every put.
  ``get(table, keys)`` returns ``{key: Row(version, value)}`` for the keys that exist;
  ``scan(table, partition)`` returns ``[(key, Row)]`` of a partition in the order the keys were
  first put (a put of an existing key keeps its place; a key put again after its deletion goes
  last); ``put(table, key, value, partition=..., expect=...)`` writes a row and returns True,
  or, when ``expect`` is given and the row's version is not ``expect`` (0: the row must not
  exist), writes nothing and returns False (this is the compare-and-set every liveness
  transition and nonce is); ``delete(table, keys)`` removes rows (absent ones are ignored).
  A compare-and-set holds against every process whatever ``lock`` its block holds: of two
  blocks that put the same key with the same ``expect``, at most one commits. The backend may
  make the second wait until the first ends (as a unique index does) and then return False, or
  let it go on and raise :class:`Conflict` when it commits, which rolls that block back (the
  store retries the blocks it runs itself; a nonce is written in the VEN's block, not in a
  VTN-wide one, so that signed messages of different VENs never wait for each other).
- An index of due items: ``index_set(index, member, score)`` files a member under a text score
  (None removes it); ``index_range(index, upto, limit)`` returns up to ``limit``
  ``(member, score)`` with ``score <= upto``, by score, then member (code point order). Scores
  here are UTC instants as :func:`~flask_openadr.store.base.utc_text`, which sort by time. The
  rules keep their own indexes there (liveness, nonces) and the services' indexes of
  :meth:`~flask_openadr.store.base.Store.set_due`, each of those under the prefix ``due:``,
  which no name of the rules' own starts with.

A backend whose data only the process holding it sees says so on a subclass of
:class:`RulesStore` with ``single_process = True`` (see
:attr:`~flask_openadr.store.base.Store.single_process`), as :class:`MemoryStore
<flask_openadr.store.memory.MemoryStore>` does.

Wrap it with ``RulesStore(backend)`` and plug it in with
:func:`flask_openadr.store.register_backend`. The memory store is built this way
(:mod:`flask_openadr.store.memory`), and so are the SQLite, SQL and Redis stores, each of
which overrides a few methods on the path of every VEN message (``record_seen``,
``get_poll_state``, ...) with a statement or script of its own where a benchmark showed it
pays; an override keeps exactly the method's rules (docs/stores.rst says which and why).
"""
from __future__ import annotations

import contextlib
import json
import uuid
from datetime import datetime, timezone
from typing import Any, Callable, ClassVar, Iterable, NamedTuple, Protocol, cast

from . import serialize
from .base import (
    OFFLINE,
    ONLINE,
    EventResponseRecord,
    Liveness,
    NonceUsed,
    OutboxItem,
    PollState,
    Store,
    Transition,
    VenRecord,
    check_delivered,
    check_due_names,
    check_int,
    check_max_priority,
    check_nonce,
    check_record,
    check_seen_nonce,
    check_record_key,
    event_id_of,
    event_response_key,
    from_utc_text,
    liveness_from_row,
    normalize_fingerprint,
    outbox_priority,
    read_poll_state,
    received_at_text,
    utc_text,
    ven_id_of,
)

__all__ = ["Backend", "Conflict", "Row", "RulesStore"]


class Row(NamedTuple):
    """A stored row: its version (1 after the first put, one more per put) and its text."""

    version: int
    value: str


class Backend(Protocol):
    """What a custom store implements; see the module documentation for each method."""

    def transaction(self, lock: str | None = None) -> contextlib.AbstractContextManager[None]: ...

    def session(self) -> contextlib.AbstractContextManager[None]: ...

    def close(self) -> None: ...

    def create_schema(self) -> None: ...

    def get(self, table: str, keys: Iterable[str]) -> dict[str, Row]: ...

    def scan(self, table: str, partition: str) -> list[tuple[str, Row]]: ...

    def put(self, table: str, key: str, value: str, *, partition: str = "",
            expect: int | None = None) -> bool: ...

    def delete(self, table: str, keys: Iterable[str]) -> None: ...

    def index_set(self, index: str, member: str, score: str | None) -> None: ...

    def index_range(self, index: str, upto: str, limit: int) -> list[tuple[str, str]]: ...


# Tables and indexes. Composite keys are JSON arrays, which no id can make ambiguous.
VENS, VEN_FINGERPRINTS, EVENTS, DELIVERED = "vens", "ven_fingerprints", "events", "delivered"
RESPONSES, OUTBOX, RECORDS, LIVENESS, NONCES = (
    "event_responses", "outbox", "records", "liveness", "nonces")
#: Online VENs by offline_at; pending transitions by lease_until; nonces by expiry.
DUE_OFFLINE, STALE, NONCE_EXPIRY = "liveness_due", "liveness_stale", "nonce_expiry"
# How many expired nonces remember_nonce removes, at most (the lazy purge), and how many one
# block of maintain() removes.
_NONCE_PURGE = 10
_NONCE_BATCH = 1000
#: The backend index of a service's due index (Store.set_due) is its name after this prefix,
#: which none of the rules' own index names above starts with.
_DUE = "due:"


def _key(*parts: Any) -> str:
    return json.dumps(parts, ensure_ascii=False, separators=(",", ":"))


class RulesStore:
    """A :class:`~flask_openadr.store.base.Store` whose rules are all here, on ``backend``."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    #: Whether only this process sees the store's data (see
    #: :attr:`~flask_openadr.store.base.Store.single_process`): a subclass for a backend that
    #: shares nothing with other processes says True, as the memory store does.
    single_process: ClassVar[bool] = False

    # -- transactions --------------------------------------------------------------------------

    def atomic(self, ven_id: str | None = None) -> contextlib.AbstractContextManager[None]:
        """See :meth:`flask_openadr.store.base.Store.atomic`."""
        return self.backend.transaction(ven_id)

    def session(self) -> contextlib.AbstractContextManager[None]:
        return self.backend.session()

    def close(self) -> None:
        self.backend.close()

    def maintain(self, now: datetime | None = None) -> None:
        """Remove the replay nonces expired at ``now``, in bounded VTN-wide blocks (see
        :meth:`~flask_openadr.store.base.Store.maintain`).

        A signed message's nonce is written in its VEN's block (:meth:`record_seen`), which
        cannot safely delete other nonces: a block of another VEN may be putting the same
        expired nonce back at that moment. A VTN-wide block excludes every other block.
        """
        now_text = utc_text(now or datetime.now(timezone.utc), "now")
        # Looked at first without a block: most passes find nothing expired, and a VTN-wide
        # block would hold every VEN's block back for nothing.
        if not self.backend.index_range(NONCE_EXPIRY, now_text, 1):
            return
        while True:
            with self.backend.transaction():
                expired = self.backend.index_range(NONCE_EXPIRY, now_text, _NONCE_BATCH)
                for old, _ in expired:
                    self.backend.index_set(NONCE_EXPIRY, old, None)
                self.backend.delete(NONCES, [old for old, _ in expired])
            if len(expired) < _NONCE_BATCH:
                return

    def create_schema(self) -> None:
        self.backend.create_schema()

    def _one(self, table: str, key: str) -> Row | None:
        return self.backend.get(table, [key]).get(key)

    def _value(self, table: str, key: str) -> Any:
        row = self._one(table, key)
        return None if row is None else serialize.loads(row.value)

    def _scan(self, table: str, partition: str) -> list[Any]:
        return [serialize.loads(row.value) for _, row in self.backend.scan(table, partition)]

    # -- VENs ----------------------------------------------------------------------------------
    # Each write validates and encodes before its transaction, so a refused value writes nothing.

    def get_ven(self, ven_id: str) -> VenRecord | None:
        return cast("VenRecord | None", self._value(VENS, ven_id))

    def get_ven_by_fingerprint(self, fingerprint: str) -> VenRecord | None:
        wanted = normalize_fingerprint(fingerprint)
        if wanted is None:
            return None
        for ven_id in sorted(row.value for _, row in self.backend.scan(VEN_FINGERPRINTS, wanted)):
            ven = self.get_ven(ven_id)
            # Checked again: the VEN may have changed between the two reads.
            if ven is not None and normalize_fingerprint(ven.get("fingerprint")) == wanted:
                return ven
        return None

    def put_ven(self, ven: VenRecord) -> None:
        ven_id = ven_id_of(ven)
        fingerprint = normalize_fingerprint(ven.get("fingerprint"))
        text = serialize.dumps(ven)
        with self.backend.transaction():
            old = self.get_ven(ven_id)
            before = normalize_fingerprint(old.get("fingerprint")) if old is not None else None
            if before is not None and before != fingerprint:
                self.backend.delete(VEN_FINGERPRINTS, [_key(before, ven_id)])
            if fingerprint is not None and before != fingerprint:
                self.backend.put(VEN_FINGERPRINTS, _key(fingerprint, ven_id), ven_id,
                                 partition=fingerprint)
            self.backend.put(VENS, ven_id, text)

    def list_vens(self) -> list[VenRecord]:
        rows = sorted(self.backend.scan(VENS, ""))
        return [serialize.loads(row.value) for _, row in rows]

    # -- events --------------------------------------------------------------------------------

    def put_event(self, event: dict[str, Any]) -> None:
        event_id = event_id_of(event)
        text = serialize.dumps(event)
        with self.backend.transaction():
            self.backend.put(EVENTS, event_id, text)  # a replaced event keeps its place

    def get_event(self, event_id: str) -> dict[str, Any] | None:
        return cast("dict[str, Any] | None", self._value(EVENTS, event_id))

    def get_events(self, event_ids: list[str]) -> dict[str, dict[str, Any]]:
        return {event_id: serialize.loads(row.value)
                for event_id, row in self.backend.get(EVENTS, event_ids).items()}

    def list_events(self) -> list[dict[str, Any]]:
        return self._scan(EVENTS, "")

    def delete_event(self, event_id: str) -> None:
        with self.backend.transaction():
            self.backend.delete(EVENTS, [event_id])

    # -- delivery state ------------------------------------------------------------------------

    def get_delivered(self, ven_id: str) -> dict[str, Any]:
        return self._value(DELIVERED, ven_id) or {}

    def set_delivered(self, ven_id: str, delivered: dict[str, Any]) -> None:
        if not isinstance(delivered, dict):
            raise TypeError(f"delivered must be a dict of event_id -> int, got {delivered!r}")
        self.set_delivered_many({ven_id: delivered})

    def get_delivered_many(self, ven_ids: list[str]) -> dict[str, dict[str, Any]]:
        found = self.backend.get(DELIVERED, ven_ids)
        return {ven_id: serialize.loads(found[ven_id].value) if ven_id in found else {}
                for ven_id in ven_ids}

    def set_delivered_many(self, delivered: dict[str, dict[str, Any]]) -> None:
        for value in delivered.values():
            check_delivered(value)
        texts = {ven_id: serialize.dumps(value) if value else None
                 for ven_id, value in delivered.items()}
        lock = next(iter(texts)) if len(texts) == 1 else None
        with self.backend.transaction(lock):
            self.backend.delete(DELIVERED, [v for v, text in texts.items() if text is None])
            self._put_delivered({v: text for v, text in texts.items() if text is not None})

    def _put_delivered(self, texts: dict[str, str]) -> None:
        """Put each VEN's encoded delivery record, inside set_delivered_many's block: the one
        step a store with a batch statement overrides (a 100,000-VEN group writes 100,000)."""
        for ven_id, text in texts.items():
            self.backend.put(DELIVERED, ven_id, text)

    # -- event responses -----------------------------------------------------------------------

    def put_event_response(self, response: EventResponseRecord) -> None:
        ven_id, event_id, modification_number = event_response_key(response)
        received_at_text(response)  # refused before anything is written
        text = serialize.dumps(response)
        with self.backend.transaction(ven_id):
            self.backend.put(RESPONSES, _key(event_id, ven_id, modification_number), text,
                             partition=event_id)

    def list_event_responses(self, event_id: str) -> list[EventResponseRecord]:
        responses = self._scan(RESPONSES, event_id)
        # The SQL backends' order: received_at with missing ones first, then the key.
        texts = [received_at_text(r) for r in responses]
        order = sorted(range(len(responses)), key=lambda i: (
            texts[i] is not None, texts[i] or "", responses[i]["ven_id"],
            responses[i]["modification_number"]))
        return [responses[i] for i in order]

    def delete_event_responses(self, event_id: str) -> None:
        with self.backend.transaction():
            self.backend.delete(RESPONSES, [key for key, _ in self.backend.scan(RESPONSES,
                                                                                 event_id)])

    # -- outbox --------------------------------------------------------------------------------
    # A VEN's outbox is a partition in first-put (FIFO) order; the priority order is a stable
    # sort of it, so FIFO holds within one priority.

    def push_outbox(self, ven_id: str, item: OutboxItem) -> None:
        priority = outbox_priority(item)
        text = serialize.dumps(item)
        with self.backend.transaction(ven_id):
            self.backend.put(OUTBOX, _key(ven_id, priority, uuid.uuid4().hex), text,
                             partition=ven_id)

    def _outbox(self, ven_id: str) -> list[tuple[int, str, str]]:
        """The VEN's items as (priority, key, text), in the order they are popped."""
        rows = self.backend.scan(OUTBOX, ven_id)
        return sorted(((json.loads(key)[1], key, row.value) for key, row in rows),
                      key=lambda entry: entry[0])

    def pop_outbox(self, ven_id: str, max_priority: int | None = None) -> OutboxItem | None:
        check_max_priority(max_priority)
        with self.backend.transaction(ven_id):  # so two processes never take the same item
            for priority, key, text in self._outbox(ven_id):
                if max_priority is not None and priority > max_priority:
                    return None
                self.backend.delete(OUTBOX, [key])
                return cast(OutboxItem, serialize.loads(text))
        return None

    def list_outbox(self, ven_id: str) -> list[OutboxItem]:
        return [serialize.loads(text) for _, _, text in self._outbox(ven_id)]

    def clear_outbox(self, ven_id: str) -> None:
        with self.backend.transaction(ven_id):
            self.backend.delete(OUTBOX, [key for key, _ in self.backend.scan(OUTBOX, ven_id)])

    def get_poll_state(self, ven_id: str, kind: str) -> PollState:
        """See :meth:`flask_openadr.store.base.Store.get_poll_state`."""
        return read_poll_state(cast(Store, self), ven_id, kind)

    # -- records -------------------------------------------------------------------------------

    def put_record(self, kind: str, ven_id: str, key: str, record: dict[str, Any]) -> None:
        check_record_key(kind, ven_id, key)
        check_record(record)
        text = serialize.dumps(record)
        with self.backend.transaction(ven_id):
            self.backend.put(RECORDS, _key(kind, ven_id, key), text, partition=_key(kind, ven_id))

    def get_record(self, kind: str, ven_id: str, key: str) -> dict[str, Any] | None:
        return cast("dict[str, Any] | None", self._value(RECORDS, _key(kind, ven_id, key)))

    def list_records(self, kind: str, ven_id: str) -> list[dict[str, Any]]:
        return self._scan(RECORDS, _key(kind, ven_id))

    def delete_record(self, kind: str, ven_id: str, key: str) -> None:
        with self.backend.transaction(ven_id):
            self.backend.delete(RECORDS, [_key(kind, ven_id, key)])

    def clear_records(self, kind: str, ven_id: str) -> None:
        with self.backend.transaction(ven_id):
            rows = self.backend.scan(RECORDS, _key(kind, ven_id))
            self.backend.delete(RECORDS, [key for key, _ in rows])

    # -- due items -----------------------------------------------------------------------------
    # A service's index is a backend index of its own (see _DUE); a member has one score, so a
    # set replaces the instant it had.

    def set_due(self, index: str, member: str, at: datetime | None) -> None:
        """See :meth:`flask_openadr.store.base.Store.set_due`. Outside a block, a VTN-wide
        block of its own (nested in a block, it joins it)."""
        check_due_names(index, member)
        score = None if at is None else utc_text(at, "at")
        with self.backend.transaction():
            self.backend.index_set(_DUE + index, member, score)

    def list_due(self, index: str, upto: datetime, limit: int) -> list[tuple[str, datetime]]:
        """See :meth:`flask_openadr.store.base.Store.list_due`."""
        check_due_names(index)
        upto_text = utc_text(upto, "upto")
        check_int(limit, "limit", minimum=0)
        due = self.backend.index_range(_DUE + index, upto_text, limit) if limit else []
        return [(member, cast(datetime, from_utc_text(score))) for member, score in due]

    # -- liveness ------------------------------------------------------------------------------
    # A row is the JSON of _LIVENESS_FIELDS, datetimes as utc_text. Each transition reads the
    # row and writes it back with expect=<the version read>, inside the VEN's transaction (which
    # also keeps the row and its index entries together): of any number of processes, exactly
    # one changes a given version. The indexes hold online VENs (by offline_at) and pending
    # transitions (by lease_until), so the sweeps cost what they return.

    def _liveness(self, ven_id: str) -> tuple[int, dict[str, Any]] | None:
        row = self._one(LIVENESS, ven_id)
        return None if row is None else (row.version, json.loads(row.value))

    def _save(self, ven_id: str, version: int, live: dict[str, Any]) -> bool:
        if not self.backend.put(LIVENESS, ven_id, json.dumps(live), expect=version):
            return False
        self.backend.index_set(DUE_OFFLINE, ven_id,
                               live["offline_at"] if live["state"] == ONLINE else None)
        self.backend.index_set(STALE, ven_id, live["lease_until"])
        return True

    def record_seen(self, ven_id: str, now: datetime, offline_at: datetime,
                    lease_until: datetime, nonce: str | None = None,
                    nonce_expires_at: datetime | None = None) -> Transition | None:
        now_text = utc_text(now, "now")
        offline_text = utc_text(offline_at, "offline_at")
        lease_text = utc_text(lease_until, "lease_until")
        nonce_texts = check_seen_nonce(nonce, now, nonce_expires_at)
        while True:
            try:
                # The VEN's block: the nonce's compare-and-set holds against every process
                # whatever lock a block holds (see Backend), so no VTN-wide block is needed.
                with self.backend.transaction(ven_id):
                    if nonce is not None and nonce_texts is not None \
                            and not self._take_nonce(nonce, *nonce_texts):
                        raise NonceUsed(nonce)  # and the block writes nothing
                    return self._seen(ven_id, now_text, offline_text, lease_text)
            except (_Conflict, Conflict):
                # Another process changed the row (or took the nonce) first and the block
                # rolled back: run it again, which sees what that process wrote.
                continue

    def _seen(self, ven_id: str, now_text: str, offline_text: str,
              lease_text: str) -> Transition | None:
        """record_seen's compare-and-set, inside its block; raises _Conflict when the row
        changed since it was read, so that the block (and a nonce in it) rolls back."""
        found = self._liveness(ven_id)
        version, live = found if found is not None else (0, None)
        if live is not None and live["state"] == ONLINE:
            if not self._save(ven_id, version, dict(live, last_seen=now_text,
                                                    offline_at=offline_text)):
                raise _Conflict
            return None
        epoch = 1 if live is None else live["epoch"] + 1
        if not self._save(ven_id, version, {
                "state": ONLINE, "epoch": epoch, "last_seen": now_text,
                "offline_at": offline_text, "pending_kind": ONLINE,
                "pending_epoch": epoch, "lease_until": lease_text}):
            raise _Conflict
        return {"ven_id": ven_id, "kind": ONLINE, "epoch": epoch}

    def _rows_of(self, members: list[tuple[str, str]]) -> list[tuple[str, dict[str, Any]]]:
        found = self.backend.get(LIVENESS, [member for member, _ in members])
        return [(member, json.loads(found[member].value)) for member, _ in members
                if member in found]

    def due_offline(self, now: datetime, limit: int) -> list[tuple[str, int]]:
        now_text = utc_text(now, "now")
        check_int(limit, "limit", minimum=0)
        due = self.backend.index_range(DUE_OFFLINE, now_text, limit) if limit else []
        return [(ven_id, live["epoch"]) for ven_id, live in self._rows_of(due)
                if live["state"] == ONLINE and live["offline_at"] <= now_text]

    def _change_liveness(self, ven_id: str,
                         change: Callable[[dict[str, Any]], dict[str, Any] | None]) -> bool:
        """Compare-and-set the VEN's row to ``change(row)``, unless there is no row or
        ``change`` returns None; True when it was changed."""
        with self.backend.transaction(ven_id):
            found = self._liveness(ven_id)
            if found is None:
                return False
            version, live = found
            changed = change(live)
            return changed is not None and self._save(ven_id, version, changed)

    def claim_offline(self, ven_id: str, epoch: int, now: datetime,
                      lease_until: datetime) -> Transition | None:
        check_int(epoch, "epoch")
        now_text = utc_text(now, "now")
        lease_text = utc_text(lease_until, "lease_until")

        def offline(live: dict[str, Any]) -> dict[str, Any] | None:
            if live["state"] != ONLINE or live["epoch"] != epoch or live["offline_at"] > now_text:
                return None
            return dict(live, state=OFFLINE, epoch=epoch + 1, pending_kind=OFFLINE,
                        pending_epoch=epoch + 1, lease_until=lease_text)

        if not self._change_liveness(ven_id, offline):
            return None
        return {"ven_id": ven_id, "kind": OFFLINE, "epoch": epoch + 1}

    def complete_transition(self, ven_id: str, epoch: int) -> None:
        check_int(epoch, "epoch")
        self._change_liveness(ven_id, lambda live: dict(
            live, pending_kind=None, pending_epoch=None, lease_until=None)
            if live["pending_kind"] is not None and live["pending_epoch"] == epoch else None)

    def stale_transitions(self, now: datetime, limit: int) -> list[Transition]:
        now_text = utc_text(now, "now")
        check_int(limit, "limit", minimum=0)
        stale = self.backend.index_range(STALE, now_text, limit) if limit else []
        return [{"ven_id": ven_id, "kind": live["pending_kind"], "epoch": live["pending_epoch"]}
                for ven_id, live in self._rows_of(stale)
                if live["pending_kind"] is not None and live["lease_until"] <= now_text]

    def reclaim_transition(self, ven_id: str, epoch: int, now: datetime,
                           lease_until: datetime) -> bool:
        check_int(epoch, "epoch")
        now_text = utc_text(now, "now")
        lease_text = utc_text(lease_until, "lease_until")
        return self._change_liveness(ven_id, lambda live: dict(live, lease_until=lease_text)
                                     if live["pending_kind"] is not None
                                     and live["pending_epoch"] == epoch
                                     and live["lease_until"] <= now_text else None)

    def get_liveness(self, ven_id: str) -> Liveness | None:
        found = self._liveness(ven_id)
        return None if found is None else _liveness_of(ven_id, found[1])

    def list_liveness(self) -> dict[str, Liveness]:
        rows = sorted(self.backend.scan(LIVENESS, ""))
        return {ven_id: _liveness_of(ven_id, json.loads(row.value)) for ven_id, row in rows}

    # -- replay nonces -------------------------------------------------------------------------

    def remember_nonce(self, nonce: str, now: datetime, expires_at: datetime) -> bool:
        now_text, expires_text = check_nonce(nonce, now, expires_at)
        with self.backend.transaction():
            return self._remember(nonce, now_text, expires_text)

    def _remember(self, nonce: str, now_text: str, expires_text: str) -> bool:
        """remember_nonce inside a VTN-wide block (it purges a few expired nonces first)."""
        for old, _ in self.backend.index_range(NONCE_EXPIRY, now_text, _NONCE_PURGE):
            self.backend.index_set(NONCE_EXPIRY, old, None)
            self.backend.delete(NONCES, [old])
        return self._take_nonce(nonce, now_text, expires_text)

    def _take_nonce(self, nonce: str, now_text: str, expires_text: str) -> bool:
        """Put the nonce unless it is held and unexpired: a compare-and-set, so of any
        number of processes exactly one takes a given nonce."""
        current = self._one(NONCES, nonce)
        if current is not None and current.value > now_text:
            return False
        won = self.backend.put(NONCES, nonce, expires_text,
                               expect=0 if current is None else current.version)
        if won:
            self.backend.index_set(NONCE_EXPIRY, nonce, expires_text)
        return won


class _Conflict(Exception):
    """A compare-and-set inside a block lost to another process: roll the block back, retry."""


class Conflict(Exception):
    """Raised by a backend when a block cannot commit because a compare-and-set in it lost
    to another process's block (see :class:`Backend`); the block wrote nothing."""


def _liveness_of(ven_id: str, live: dict[str, Any]) -> Liveness:
    return liveness_from_row(ven_id, live["state"], live["epoch"], live["last_seen"],
                             live["offline_at"], live["pending_kind"], live["pending_epoch"],
                             live["lease_until"])
