"""The store protocol: everything the VTN keeps, behind one small, transactional interface.

Every backend implements :class:`Store` and passes the one conformance suite in
``tests/test_store.py``: the SQLite, SQL and Redis stores method by method, the memory store (and
any custom one, see docs/stores.rst) as :class:`~flask_openadr.store.rules.RulesStore` over a
ten-method backend. Records are plain dicts holding str, int, float,
bool, None, lists, dicts, aware ``datetime`` and ``timedelta``; a backend returns equal values to
what it was given and never hands out references to its own state.
"""
from __future__ import annotations

import contextlib
from datetime import datetime, timedelta, timezone
from typing import Any, ClassVar, Protocol, TypedDict

from ..protocol import is_aware


class VenRecord(TypedDict, total=False):
    """A VEN the VTN knows. ``registration_id`` is None while it is not registered."""

    ven_id: str
    registration_id: str | None
    ven_name: str | None
    profile_name: str
    transport_name: str
    transport_address: str | None
    report_only: bool
    xml_signature: bool
    http_pull_model: bool
    fingerprint: str | None
    poll_frequency: timedelta
    # What event targets other than venID match this VEN (set by the registration handler
    # or ``vtn.update_ven``).
    group_ids: list[str]
    resource_ids: list[str]
    party_ids: list[str]
    group_names: list[str]
    registered_at: datetime | None
    # Set when the VTN has asked the VEN to cancel and waits for its oadrCanceledPartyRegistration.
    cancel_requested: bool


class OutboxItem(TypedDict):
    """A VTN-originated payload waiting for the VEN's next poll.

    ``priority`` follows the poll order of the protocol notes (lower goes first; FIFO within one
    priority); see :mod:`flask_openadr.services.poll`.
    """

    priority: int
    payload_name: str
    payload: dict[str, Any]


class EventResponseRecord(TypedDict, total=False):
    """A VEN's opt answer to one event version; one per (ven_id, event_id, modification_number)."""

    ven_id: str
    event_id: str
    modification_number: int
    opt_type: str
    response_code: int
    response_description: str | None
    request_id: str
    received_at: datetime
    #: The event-level opt (oadrCreateOpt) that decided this answer, when one did.
    opt_id: str


class PollState(TypedDict):
    """What a poll reads of one VEN to learn whether anything is pending: see
    :meth:`Store.get_poll_state`."""

    delivered: dict[str, Any]
    records: list[dict[str, Any]]
    outbox: list[OutboxItem]


#: The liveness states, which are also the kinds of :class:`Transition`.
ONLINE = "online"
OFFLINE = "offline"


class Transition(TypedDict):
    """A liveness transition one process won: ``kind`` is "online" or "offline"; ``epoch`` is the
    VEN's epoch after the transition (it goes up by one per transition, so it names it)."""

    ven_id: str
    kind: str
    epoch: int


class Liveness(TypedDict):
    """A VEN's liveness row.

    ``state`` is "online", "offline", or None before the VEN was first seen (the backends in
    this package create the row at the first :meth:`Store.record_seen`, so theirs are never
    None). ``offline_at`` is when the VEN counts as offline if it sends nothing more; it keeps its
    last value once the VEN is offline. ``pending`` is the transition whose callback has not been
    completed yet, with the end of the lease of the process running it:
    ``{"kind", "epoch", "lease_until"}``, or None. Datetimes come back in UTC, to the microsecond.
    """

    ven_id: str
    state: str | None
    epoch: int
    last_seen: datetime | None
    offline_at: datetime | None
    pending: dict[str, Any] | None


class Store(Protocol):
    """What every backend implements.

    Each method is atomic on its own; :meth:`atomic` groups several calls so that they all take
    effect or none does (and serialises writers, which read-modify-write paths such as
    ``modify_event`` rely on). Values given to a store are copied (later changes by the caller do
    not reach it) and values returned are fresh copies. A missing record is ``None`` from a
    ``get_*``, ``[]`` from a ``list_*`` and ``{}`` from :meth:`get_delivered`; removing a record
    that is not there is not an error. Values that :func:`flask_openadr.store.serialize.dumps`
    refuses (a naive datetime, a set, ...) raise ``ValueError`` or ``TypeError`` on every backend,
    and nothing is written. Driver failures raise :class:`~flask_openadr.errors.StoreError`.
    """

    #: True for a store that only the process holding it sees (``memory://``): the VTN warns
    #: when such a store runs under a multi-process server. A store without the attribute
    #: counts as shared.
    single_process: ClassVar[bool]

    def atomic(self, ven_id: str | None = None) -> contextlib.AbstractContextManager[None]:
        """Group calls into one transaction: all of them take effect, or (when the block raises)
        none does. Re-entrant: a nested ``atomic()`` joins the outermost block, so its writes are
        committed or rolled back with it (there are no savepoints), whatever its ``ven_id``.

        Without ``ven_id`` the block is VTN-wide: while it is open, other writers, in this
        process or any other, wait for it. With ``ven_id`` the block promises to write only that
        VEN's data (its delivery record, outbox, records and event responses; it may read
        anything): it waits for VTN-wide blocks and for blocks of the same VEN, and VTN-wide
        blocks wait for it, but blocks of other VENs need not wait. A backend that cannot tell
        them apart (one writer at a time, as SQLite) treats every block as VTN-wide."""
        ...

    def session(self) -> contextlib.AbstractContextManager[None]:
        """Hold what one request needs for its whole length: the SQL store takes one pooled
        connection for every call this thread makes until the end (in autocommit outside
        :meth:`atomic` blocks, whose transactions run on it too), instead of one per call. The
        VTN opens one around each OpenADR request. Re-entrant; backends without a connection
        pool do nothing."""
        ...

    def close(self) -> None:
        """Release this process's resources (connections). The store may still be used
        afterwards; it reconnects when needed. Never touches resources inherited over fork. Call it
        when no thread is inside a store call (at shutdown, or in a post-fork hook)."""
        ...

    # VENs and registrations
    def get_ven(self, ven_id: str) -> VenRecord | None: ...

    def get_ven_by_fingerprint(self, fingerprint: str) -> VenRecord | None:
        """The VEN whose ``fingerprint`` matches, ignoring case and colons (see
        :func:`normalize_fingerprint`); the lowest ``ven_id`` if several match."""
        ...

    def put_ven(self, ven: VenRecord) -> None:
        """Insert or replace the VEN ``ven["ven_id"]`` (the whole record)."""
        ...

    def list_vens(self) -> list[VenRecord]:
        """Every VEN, ordered by ``ven_id`` (code point order)."""
        ...

    # Events, keyed by event["event_descriptor"]["event_id"]; the stored dict is the event in the
    # shape of one entry of oadrDistributeEvent["events"], without the fields derived at send time.
    def put_event(self, event: dict[str, Any]) -> None:
        """Insert or replace an event. A replaced event keeps its place in :meth:`list_events`."""
        ...

    def get_event(self, event_id: str) -> dict[str, Any] | None: ...

    def get_events(self, event_ids: list[str]) -> dict[str, dict[str, Any]]:
        """:meth:`get_event` of each eventID the store holds, by eventID (an unknown one is
        absent), in as few round trips as the backend allows: a VEN's message may name up to
        a thousand events, and one read each would make it cost more than its size."""
        ...

    def list_events(self) -> list[dict[str, Any]]:
        """Every event, in the order they were first put."""
        ...

    def delete_event(self, event_id: str) -> None: ...

    # Per-VEN delivery state: what was last sent to the VEN of each event, by eventID. The
    # events service decides the shape of an entry (see flask_openadr.services.events); a store
    # keeps any record value.
    def get_delivered(self, ven_id: str) -> dict[str, Any]: ...

    def set_delivered(self, ven_id: str, delivered: dict[str, Any]) -> None:
        """Replace the VEN's whole delivery map."""
        ...

    def get_delivered_many(self, ven_ids: list[str]) -> dict[str, dict[str, Any]]:
        """:meth:`get_delivered` of each VEN, by venID (``{}`` for one that has none), in as
        few round trips as the backend allows: a change fans out to thousands of VENs."""
        ...

    def set_delivered_many(self, delivered: dict[str, dict[str, Any]]) -> None:
        """:meth:`set_delivered` for each venID of ``delivered``, in as few round trips as the
        backend allows. Every value is checked before anything is written."""
        ...

    # Event responses (opt state)
    def put_event_response(self, response: EventResponseRecord) -> None:
        """Insert or replace the response for (ven_id, event_id, modification_number)."""
        ...

    def list_event_responses(self, event_id: str) -> list[EventResponseRecord]:
        """The event's responses (every version), ordered by ``received_at``, then ``ven_id``,
        then ``modification_number``."""
        ...

    def delete_event_responses(self, event_id: str) -> None:
        """Remove every response to the event (the retention sweep does, with the event)."""
        ...

    # Outbox
    def push_outbox(self, ven_id: str, item: OutboxItem) -> None: ...

    def pop_outbox(self, ven_id: str, max_priority: int | None = None) -> OutboxItem | None:
        """Remove and return the VEN's next item: the lowest ``priority`` number, oldest first
        within one priority, considering only priorities ``<= max_priority`` when given. Two
        processes popping at once never get the same item."""
        ...

    def list_outbox(self, ven_id: str) -> list[OutboxItem]:
        """The VEN's waiting items, in the order :meth:`pop_outbox` would return them."""
        ...

    def clear_outbox(self, ven_id: str) -> None: ...

    def get_poll_state(self, ven_id: str, kind: str) -> PollState:
        """:meth:`get_delivered` of the VEN, its :meth:`list_records` of ``kind`` and its
        :meth:`list_outbox`, read together: most polls find nothing to send, and this is all
        they read, so a server store answers it in one round trip (:func:`read_poll_state`
        is the three calls, for a store in this process)."""
        ...

    # Records: small per-VEN collections the report and opt services keep (a VEN's report
    # capabilities, report subscriptions in both directions, opt schedules). ``kind`` names the
    # collection ("ven_report", "report_request", "opt", ...); ``key`` is unique within
    # (kind, ven_id). Kinds are plain strings so a new service needs no new store method.
    def put_record(self, kind: str, ven_id: str, key: str, record: dict[str, Any]) -> None:
        """Insert or replace; a replaced record keeps its place in :meth:`list_records`, and one
        put again after :meth:`delete_record` goes last. ``ValueError`` when ``kind``, ``ven_id``
        or ``key`` is not a str, ``TypeError`` when ``record`` is not a dict (see
        :func:`check_record_key`, :func:`check_record`)."""
        ...

    def get_record(self, kind: str, ven_id: str, key: str) -> dict[str, Any] | None: ...

    def list_records(self, kind: str, ven_id: str) -> list[dict[str, Any]]:
        """The VEN's records of this kind, in the order they were first put."""
        ...

    def delete_record(self, kind: str, ven_id: str, key: str) -> None: ...

    def clear_records(self, kind: str, ven_id: str) -> None:
        """Remove every record of this kind for the VEN."""
        ...

    # Due items: VTN-wide indexes of what is due when (the push senders' hints, the retention
    # sweep's due removals), so that a pass reads what is due, not everything that will be.
    # ``index`` names the index (a service's own name, such as "push"); a member is in it at
    # most once, with one instant. Like a record, an index is a plain string, so a new service
    # needs no new store method; the store keeps these indexes apart from its own.
    #
    # Locking: each call is atomic on its own; outside :meth:`atomic` a ``set_due`` is a
    # VTN-wide block of its own. Inside ``atomic(ven_id)`` it may set only members that are that
    # VEN's data (its own hint, the entry of one of its records): blocks of other VENs run at
    # the same time, so two blocks of different VENs must never set one member. ``list_due``
    # takes no lock: what it returns may have changed by the time the caller acts on it, so a
    # caller checks each member again, inside the block that acts on it.
    def set_due(self, index: str, member: str, at: datetime | None) -> None:
        """File ``member`` in ``index`` as due at ``at``, replacing the instant it had; None
        removes it (removing a member that is not there is not an error). ``index`` and
        ``member`` are non-empty str without NUL, the index of at most :data:`DUE_INDEX_MAX`
        characters, and ``at`` an aware datetime or None (``ValueError`` otherwise, naming the
        argument, and nothing is written). Instants are kept to the microsecond."""
        ...

    def list_due(self, index: str, upto: datetime, limit: int) -> list[tuple[str, datetime]]:
        """``(member, at)`` of the members of ``index`` due at ``upto`` (``at <= upto``),
        earliest first, then by member (code point order), at most ``limit`` of them; ``at``
        in UTC. Its cost follows what it returns, not the size of the index. ``index`` is
        checked as by :meth:`set_due`, ``upto`` must be aware and ``limit`` an int >= 0
        (``ValueError`` otherwise)."""
        ...

    # Liveness (see flask_openadr.services.liveness). Each transition is one compare-and-set
    # here, so with any number of processes exactly one wins it. The sweep's cost grows with the number of VENs
    # it returns, not with all VENs: backends keep online VENs indexed by offline_at and pending
    # callbacks indexed by lease_until (the memory store, one process only, scans instead).
    #
    # Every datetime must be aware (``ValueError`` otherwise, naming the argument, and nothing is
    # written); instants are compared, whatever their offsets, to the microsecond. Epochs and
    # limits are ints (``ValueError`` otherwise); a limit is >= 0. A transition always becomes the
    # pending one, replacing an older pending transition that was not completed: the state that
    # callback announced has already passed, so it is not run again.
    def record_seen(self, ven_id: str, now: datetime, offline_at: datetime,
                    lease_until: datetime, nonce: str | None = None,
                    nonce_expires_at: datetime | None = None) -> Transition | None:
        """The VEN sent a message. Atomically set ``last_seen=now`` and ``offline_at``; if the
        state was not "online" (offline, or no row yet), make it "online", add one to the epoch
        (a new row starts at epoch 1), make this transition the pending one (with
        ``lease_until``) and return it; otherwise return None and leave ``pending`` alone.

        With a ``nonce`` (the replay nonce of a signed message), the same atomic step also
        remembers it until ``nonce_expires_at``, as :meth:`remember_nonce` does; when it is
        remembered and unexpired it raises :class:`NonceUsed` and writes nothing at all (neither
        the nonce nor the liveness row). Of two processes given the same nonce, exactly one
        proceeds. ``nonce`` and ``nonce_expires_at`` come together (``ValueError`` otherwise).

        Called on every message a VEN sends, so backends keep the usual case (already online) to
        one statement or round trip, and a signed message to one transaction or round trip."""
        ...

    def due_offline(self, now: datetime, limit: int) -> list[tuple[str, int]]:
        """``(ven_id, epoch)`` of online VENs whose ``offline_at <= now``, earliest ``offline_at``
        first (then by ``ven_id``), at most ``limit`` of them."""
        ...

    def claim_offline(self, ven_id: str, epoch: int, now: datetime,
                      lease_until: datetime) -> Transition | None:
        """Compare-and-set: if the VEN is online at this ``epoch`` and ``offline_at <= now``, make
        it "offline", add one to the epoch, make this transition the pending one and return it;
        otherwise (another process won, or the VEN was seen meanwhile) return None."""
        ...

    def complete_transition(self, ven_id: str, epoch: int) -> None:
        """The callback of the transition ``epoch`` finished: clear ``pending`` if it is still
        that transition (a newer one is left alone)."""
        ...

    def stale_transitions(self, now: datetime, limit: int) -> list[Transition]:
        """Pending transitions whose lease ended (``lease_until <= now``): the process running
        their callback died. Oldest lease first (then by ``ven_id``), at most ``limit``."""
        ...

    def reclaim_transition(self, ven_id: str, epoch: int, now: datetime,
                           lease_until: datetime) -> bool:
        """Compare-and-set: if the VEN's pending transition is ``epoch`` and its lease ended,
        give it the new ``lease_until`` and return True (this process runs the callback again)."""
        ...

    def get_liveness(self, ven_id: str) -> Liveness | None: ...

    def list_liveness(self) -> dict[str, Liveness]:
        """Every liveness row, by venID, in ``ven_id`` order."""
        ...

    # Replay protection (see flask_openadr.security.replay).
    def remember_nonce(self, nonce: str, now: datetime, expires_at: datetime) -> bool:
        """Remember ``nonce`` until ``expires_at``: True when it is new (or its earlier use
        expired by ``now``), False when it is remembered and unexpired. One atomic step across
        every process sharing the store, so of two processes given the same nonce exactly one
        gets True. It takes effect at once: call it outside :meth:`atomic` blocks. Expired nonces
        are dropped lazily. Datetimes must be aware and ``nonce`` a str (``ValueError``
        otherwise)."""
        ...

    def create_schema(self) -> None:
        """Create whatever the backend needs (tables, indexes); idempotent. Backends also do this
        on first use; ``flask openadr init-db`` calls it explicitly."""
        ...

    def maintain(self, now: datetime | None = None) -> None:
        """Housekeeping the backend needs now and then, off the request path: the sweeper's
        retention pass calls it (see :class:`flask_openadr.runtime.Maintenance`), with the
        VTN's clock as ``now`` (None: the wall clock). It removes the replay nonces expired at
        ``now`` that :meth:`record_seen` wrote, and SQLite checkpoints and truncates its WAL.
        Call it outside :meth:`atomic` blocks; it must never hold requests back for long."""
        ...


# Helpers every backend shares, so that they agree on keys and validation.


def normalize_fingerprint(fingerprint: str | None) -> str | None:
    """The form fingerprints are compared in: upper case, no colons, no surrounding blanks;
    ``None`` for a missing or empty fingerprint (which matches nothing)."""
    if fingerprint is None:
        return None
    if not isinstance(fingerprint, str):
        raise ValueError(f"a fingerprint must be a str like 'AB:CD:...', got {fingerprint!r}")
    normal = fingerprint.replace(":", "").strip().upper()
    return normal or None


def ven_id_of(ven: VenRecord) -> str:
    """The key of a VEN record, or ``ValueError`` saying what is missing."""
    ven_id = ven.get("ven_id")
    if not isinstance(ven_id, str):
        raise ValueError(f"a VEN record needs a str 'ven_id', got {ven_id!r}")
    return ven_id


def event_id_of(event: dict[str, Any]) -> str:
    """The key of an event, ``event["event_descriptor"]["event_id"]``, or ``ValueError``."""
    descriptor = event.get("event_descriptor")
    event_id = descriptor.get("event_id") if isinstance(descriptor, dict) else None
    if not isinstance(event_id, str):
        raise ValueError(
            f"an event needs a str event['event_descriptor']['event_id'], got {event_id!r}"
        )
    return event_id


def event_response_key(response: EventResponseRecord) -> tuple[str, str, int]:
    """The (ven_id, event_id, modification_number) key of an event response, or ``ValueError``."""
    ven_id = response.get("ven_id")
    event_id = response.get("event_id")
    number = response.get("modification_number")
    if not isinstance(ven_id, str) or not isinstance(event_id, str):
        raise ValueError(
            f"an event response needs str 'ven_id' and 'event_id', got {ven_id!r} and {event_id!r}"
        )
    if not isinstance(number, int) or isinstance(number, bool):
        raise ValueError(f"an event response needs an int 'modification_number', got {number!r}")
    return ven_id, event_id, number


def received_at_text(response: EventResponseRecord) -> str | None:
    """``received_at`` as UTC text that sorts by time (``None`` when absent), the order key of
    :meth:`Store.list_event_responses`; ``ValueError`` when it is not an aware datetime."""
    received_at = response.get("received_at")
    if received_at is None:
        return None
    if not is_aware(received_at):
        raise ValueError(
            f"an event response's 'received_at' must be an aware datetime, got {received_at!r}"
        )
    return received_at.astimezone(timezone.utc).isoformat(timespec="microseconds")


def check_record_key(kind: str, ven_id: str, key: str) -> None:
    """``ValueError`` unless the (kind, ven_id, key) of a record are all str."""
    for name, value in (("kind", kind), ("ven_id", ven_id), ("key", key)):
        if not isinstance(value, str):
            raise ValueError(f"a record's {name} must be a str, got {value!r}")


def check_record(record: dict[str, Any]) -> None:
    """``TypeError`` unless a record is a dict (its contents are checked when it is encoded)."""
    if not isinstance(record, dict):
        raise TypeError(f"a record must be a dict, got {record!r}")


class NonceUsed(Exception):
    """:meth:`Store.record_seen` was given a nonce that is remembered and unexpired (a replay);
    nothing was written."""

    def __init__(self, nonce: str) -> None:
        super().__init__(f"the nonce {nonce!r} was already used")
        self.nonce = nonce


def check_seen_nonce(nonce: str | None, now: datetime,
                     expires_at: datetime | None) -> tuple[str, str] | None:
    """Validate the nonce arguments of :meth:`Store.record_seen`: None without a nonce, else
    the two instants as :func:`utc_text` (see :func:`check_nonce`)."""
    if nonce is None and expires_at is None:
        return None
    if nonce is None or expires_at is None:
        raise ValueError("record_seen takes nonce and nonce_expires_at together, got "
                         f"nonce={nonce!r}, nonce_expires_at={expires_at!r}")
    return check_nonce(nonce, now, expires_at, "nonce_expires_at")


def check_nonce(nonce: str, now: datetime, expires_at: datetime,
                expires_name: str = "expires_at") -> tuple[str, str]:
    """Validate :meth:`Store.remember_nonce`'s arguments; the two instants as :func:`utc_text`."""
    if not isinstance(nonce, str) or not nonce:
        raise ValueError(f"nonce must be a non-empty str, got {nonce!r}")
    return utc_text(now, "now"), utc_text(expires_at, expires_name)


#: The longest index name of :meth:`Store.set_due` (a backend keeps it in a short column).
DUE_INDEX_MAX = 24


def check_due_names(index: str, member: str | None = None) -> None:
    """``ValueError`` unless the index (and the member, when given) of :meth:`Store.set_due`
    are non-empty str without NUL (which PostgreSQL's text refuses, so no backend takes it),
    the index of at most :data:`DUE_INDEX_MAX` characters."""
    named = [("index", index)] if member is None else [("index", index), ("member", member)]
    for name, value in named:
        if not isinstance(value, str) or not value or "\0" in value:
            raise ValueError(f"{name} must be a non-empty str without NUL, got {value!r}")
    if len(index) > DUE_INDEX_MAX:
        raise ValueError(f"index must be at most {DUE_INDEX_MAX} characters, got {index!r}")


def check_int(value: int, name: str, *, minimum: int | None = None) -> None:
    """``ValueError`` unless ``value`` is an int (not a bool), and ``>= minimum`` when given."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{name} must be an int, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")


def utc_text(value: datetime, name: str) -> str:
    """An aware datetime as UTC text that sorts by time, the text of
    :mod:`~flask_openadr.store.serialize`'s ``$dt`` tag (six fractional digits), so that
    backends can compare instants as strings; ``ValueError`` naming ``name`` otherwise."""
    if not is_aware(value):
        raise ValueError(f"{name} must be an aware datetime, got {value!r}")
    try:
        return value.astimezone(timezone.utc).isoformat(timespec="microseconds")
    except OverflowError:
        raise ValueError(f"{name} is {value.isoformat()}, which has no UTC equivalent") from None


def from_utc_text(text: str | None) -> datetime | None:
    """The datetime :func:`utc_text` made (in UTC), or None for None."""
    return None if text is None else datetime.fromisoformat(text).astimezone(timezone.utc)


def liveness_from_row(
    ven_id: str,
    state: str | None,
    epoch: int,
    last_seen: str | None,
    offline_at: str | None,
    pending_kind: str | None,
    pending_epoch: int | None,
    lease_until: str | None,
) -> Liveness:
    """A :class:`Liveness` from the flat columns backends keep (datetimes as :func:`utc_text`)."""
    pending = None
    if pending_kind is not None:
        pending = {
            "kind": pending_kind,
            "epoch": pending_epoch,
            "lease_until": from_utc_text(lease_until),
        }
    return {
        "ven_id": ven_id,
        "state": state,
        "epoch": epoch,
        "last_seen": from_utc_text(last_seen),
        "offline_at": from_utc_text(offline_at),
        "pending": pending,
    }


def read_poll_state(store: Store, ven_id: str, kind: str) -> PollState:
    """:meth:`Store.get_poll_state` as three calls, for stores where a call costs no round
    trip."""
    return {"delivered": store.get_delivered(ven_id),
            "records": store.list_records(kind, ven_id),
            "outbox": store.list_outbox(ven_id)}


def check_delivered(delivered: Any) -> None:
    """``TypeError`` unless a delivery map is a dict."""
    if not isinstance(delivered, dict):
        raise TypeError(f"a delivery map must be a dict, got {delivered!r}")


#: How many keys a backend puts in one ``IN (...)`` list or one multi-key command.
MANY_CHUNK = 500


def check_max_priority(max_priority: int | None) -> None:
    """``ValueError`` unless ``max_priority`` is an int or ``None``."""
    if max_priority is not None and (
        not isinstance(max_priority, int) or isinstance(max_priority, bool)
    ):
        raise ValueError(f"max_priority must be an int or None, got {max_priority!r}")


def outbox_priority(item: OutboxItem) -> int:
    """The priority of an outbox item, or ``ValueError`` when it is not an int."""
    priority = item.get("priority")
    if not isinstance(priority, int) or isinstance(priority, bool):
        raise ValueError(f"an outbox item needs an int 'priority', got {priority!r}")
    return priority
