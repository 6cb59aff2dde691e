"""The store protocol: everything the VTN keeps, behind one small, transactional interface.

Every backend (memory, SQLite now; Redis and SQL later) implements :class:`Store` and passes the
one conformance suite in ``tests/test_store.py``. Records are plain dicts holding str, int, float,
bool, None, lists, dicts, aware ``datetime`` and ``timedelta``; a backend returns equal values to
what it was given and never hands out references to its own state.
"""
from __future__ import annotations

import contextlib
from datetime import datetime, timedelta, timezone
from typing import Any, Protocol, TypedDict


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

    def atomic(self) -> contextlib.AbstractContextManager[None]:
        """Group calls into one transaction: all of them take effect, or (when the block raises)
        none does. Re-entrant: a nested ``atomic()`` joins the outermost block, so its writes are
        committed or rolled back with it (there are no savepoints). While a block is open, other
        writers, in this process or any other, wait for it."""
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

    def list_events(self) -> list[dict[str, Any]]:
        """Every event, in the order they were first put."""
        ...

    def delete_event(self, event_id: str) -> None: ...

    # Per-VEN delivery state: the modificationNumber of each event last sent to the VEN.
    def get_delivered(self, ven_id: str) -> dict[str, int]: ...

    def set_delivered(self, ven_id: str, delivered: dict[str, int]) -> None:
        """Replace the VEN's whole delivery map."""
        ...

    # Event responses (opt state)
    def put_event_response(self, response: EventResponseRecord) -> None:
        """Insert or replace the response for (ven_id, event_id, modification_number)."""
        ...

    def list_event_responses(self, event_id: str) -> list[EventResponseRecord]:
        """The event's responses (every version), ordered by ``received_at``, then ``ven_id``,
        then ``modification_number``."""
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
    if not isinstance(received_at, datetime) or received_at.utcoffset() is None:
        raise ValueError(
            f"an event response's 'received_at' must be an aware datetime, got {received_at!r}"
        )
    return received_at.astimezone(timezone.utc).isoformat(timespec="microseconds")


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
