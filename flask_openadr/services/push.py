"""HTTP push on dicts: push addresses, which service a pushed payload goes to, the per-VEN lease
that lets one sender at a time push to a VEN, and what a failed push undoes.

The HTTP side (connections, the sender thread, decoding the VEN's answer) lives in
:mod:`flask_openadr.push`; this module knows no HTTP and no XML.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Mapping, NamedTuple
from urllib.parse import urlsplit

from ..errors import InvalidData
from ..protocol import EI_EVENT, EI_REGISTER_PARTY, EI_REPORT
from ..store.base import OutboxItem, VenRecord
from . import delivery, events, outbox, push_due, reports
from .context import Context
from .push_due import is_push

#: The service endpoint each VTN-originated payload is pushed to (protocol notes 1.3).
PUSH_SERVICE = {
    "oadrDistributeEvent": EI_EVENT,
    "oadrRegisterReport": EI_REPORT,
    "oadrCreateReport": EI_REPORT,
    "oadrCancelReport": EI_REPORT,
    "oadrUpdateReport": EI_REPORT,
    "oadrCancelPartyRegistration": EI_REGISTER_PARTY,
    "oadrRequestReregistration": EI_REGISTER_PARTY,
}

#: Store record kind of the push state of each VEN, one record under the key ``"push"``:
#: ``{"owner", "lease_until", "failures", "next_attempt"}``.
PUSH_STATE = "push_state"
_KEY = "push"


def normalise_address(address: object) -> str:
    """The transport address a push VEN registered with, without trailing slashes (the harness
    re-registers with and without one: it is the same VEN). Raises
    :class:`~flask_openadr.errors.InvalidData` (454) for anything but an http(s) URL."""
    if not isinstance(address, str) or not address.strip():
        raise InvalidData(description="oadrTransportAddress is required with oadrHttpPullModel "
                          "false: the URL the VTN pushes to, such as https://ven.example:8443")
    text = address.strip()
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname \
            or parts.query or parts.fragment:
        raise InvalidData(description=f"oadrTransportAddress {text[:100]!r} is not an http(s) "
                          "URL without query or fragment; send one such as "
                          "https://ven.example:8443")
    return text.rstrip("/")


#: Store record kind of the index of push VENs: under the owner ``"*"``, one record
#: ``{"ven_id"}`` per VEN registered for push, so that a sender pass reads one list, not every
#: VEN (a VTN of pull VENs pays one read per pass). An entry may outlive its registration by a
#: moment; the sender checks the VEN record itself.
PUSH_VENS = "push_ven"
_ALL = "*"


def index(ctx: Context, ven: Mapping[str, Any]) -> None:
    """Keep the VEN's entry in the push index right after its record changed; inside the
    (VTN-wide) transaction that stores the record."""
    if is_push(ven):
        ctx.store.put_record(PUSH_VENS, _ALL, ven["ven_id"], {"ven_id": ven["ven_id"]})
    else:
        ctx.store.delete_record(PUSH_VENS, _ALL, ven["ven_id"])


def push_ven_ids(ctx: Context) -> list[str]:
    """The venIDs in the push index."""
    return [record["ven_id"] for record in ctx.store.list_records(PUSH_VENS, _ALL)]


def url_for(ctx: Context, ven: Mapping[str, Any], payload_name: str) -> str:
    """Where ``payload_name`` is POSTed: ``<address><OPENADR_PUSH_PATH>/<service>``."""
    return f"{ven['transport_address']}{ctx.settings.push_path}/{PUSH_SERVICE[payload_name]}"


# ---------------------------------------------------------------------------------------------
# The lease: one sender at a time per VEN, in any process on any host.


class Held(NamedTuple):
    """The push state an owner's claim wrote, and until when that owner may take it as the
    stored one without reading it: while its lease runs no other sender writes it, and half
    the lease leaves room for the clock of another host that runs ahead of this one's."""

    state: dict[str, Any]
    trusted_until: datetime


def _state(ctx: Context, ven_id: str, owner: str, now: datetime,
           held: Held | None) -> dict[str, Any]:
    if held is not None and held.state.get("owner") == owner and now < held.trusted_until:
        return dict(held.state)
    return ctx.store.get_record(PUSH_STATE, ven_id, _KEY) or {}


def claim(ctx: Context, ven_id: str, owner: str, now: datetime, lease: timedelta, *,
          held: Held | None = None) -> Held | None:
    """Take (or renew, for the same ``owner``) the VEN's push lease until ``now + lease``,
    unless another owner holds one that has not ended or the VEN's back-off has not ended.
    The read and the write share one per-VEN transaction, which the store serialises: of two
    senders claiming at once, one wins. Returns what the claim wrote (pass it as ``held`` to
    the owner's next claim or release, which then need not read it), or None when refused."""
    with ctx.store.atomic(ven_id):
        state = _state(ctx, ven_id, owner, now, held)
        if state.get("owner") not in (None, owner) and state["lease_until"] > now:
            return None
        if state.get("owner") != owner and state.get("next_attempt") \
                and state["next_attempt"] > now:
            return None
        new = dict(state, owner=owner, lease_until=now + lease)
        ctx.store.put_record(PUSH_STATE, ven_id, _KEY, new)
        return Held(new, now + lease / 2)


def release(ctx: Context, ven_id: str, owner: str, *, failed: bool, now: datetime,
            held: Held | None = None) -> dict[str, Any] | None:
    """End ``owner``'s lease. After a failure the next attempt waits a back-off that doubles
    with each failure in a row, from one second up to ``OPENADR_PUSH_RETRY_MAX``; a success
    resets it. Returns the VEN's push state, or None when the lease was no longer ``owner``'s.
    ``held``: what the owner's last claim returned (see :func:`claim`).

    ``failing_since`` is when the failures in a row began (None after a success)."""
    with ctx.store.atomic(ven_id):
        state = _state(ctx, ven_id, owner, now, held)
        if state.get("owner") not in (None, owner):
            return None  # the lease ran out and another sender has it now
        failures = state.get("failures", 0) + 1 if failed else 0
        new = {
            "owner": None, "lease_until": now, "failures": failures,
            "next_attempt": now + backoff(ctx, failures) if failures else None,
            "failing_since": (state.get("failing_since") or now) if failures else None,
        }
        ctx.store.put_record(PUSH_STATE, ven_id, _KEY, new)
        return new


def failing_too_long(ctx: Context, ven: Mapping[str, Any], state: Mapping[str, Any] | None,
                     now: datetime) -> bool:
    """Whether pushes to the VEN have failed for ``OPENADR_OFFLINE_AFTER_MISSED_POLLS`` poll
    intervals in a row: it counts as offline then (a pull VEN that missed as many polls does)."""
    if not state or not state.get("failing_since"):
        return False
    failing_since: datetime = state["failing_since"]
    frequency: timedelta = ven.get("poll_frequency") or ctx.settings.poll_frequency
    return failing_since + frequency * ctx.settings.offline_after_missed_polls <= now


def backoff(ctx: Context, failures: int) -> timedelta:
    """How long a VEN waits after ``failures`` failed pushes in a row."""
    cap = ctx.settings.push_retry_max
    return min(cap, timedelta(seconds=2 ** min(failures - 1, 30)))


def waiting(ctx: Context, ven_id: str, now: datetime, since: datetime | None = None) -> bool:
    """Whether the VEN is in back-off or leased by a sender (a cheap check before a claim),
    or, with ``since``, a sender's turn for it ended after ``since`` (and not after ``now``).

    A sender pass gives ``since`` the instant before it read which VENs are due: a turn that
    ended later left a hint of the VEN's next due time newer than the one the pass read, so
    another turn now would most likely find nothing (the next pass reads the newer hint).
    Two senders reading the same hints would otherwise each take a turn at every VEN. (A
    sender on a host whose clock is ahead can make one seem later for as long as it is ahead.)
    """
    state = ctx.store.get_record(PUSH_STATE, ven_id, _KEY)
    if not state:
        return False
    if state.get("owner"):
        return bool(state["lease_until"] > now)
    if state.get("next_attempt") and state["next_attempt"] > now:
        return True
    # A released lease ends at its release (see release).
    return since is not None and since <= state["lease_until"] <= now


# ---------------------------------------------------------------------------------------------
# What is pushed, and what a failed push puts back.


@dataclass
class Taken:
    """A message taken for pushing, recorded as sent at ``sent_at``; ``body`` is its XML when
    the context encodes. ``item`` is the outbox item (None for an oadrDistributeEvent), and
    ``held`` the VEN's delivery entries before it (to put back if the push fails)."""

    payload_name: str
    payload: dict[str, Any]
    body: bytes | None
    item: OutboxItem | None
    held: dict[str, Any]
    sent_at: datetime


def take(ctx: Context, ven: VenRecord, now: datetime) -> Taken | None:
    """The VEN's next message in the order a poll takes them (protocol notes 5.5), recorded as
    sent, or None when nothing is due. Holders of the VEN's lease call it, one at a time,
    inside the VEN's transaction in which they read ``ven``."""
    ven_id = ven["ven_id"]
    wait = outbox.redelivery_after(ctx, ven)
    with ctx.store.atomic(ven_id):
        # The delivery record, the VEN and its events are read once: the distribution worked
        # out here is the one sent (``ven`` was read in this transaction, see advance). The
        # delivery record, the sent messages awaiting acknowledgement and the outbox come in
        # one read, and an empty outbox is not popped.
        polled = ctx.store.get_poll_state(ven_id, outbox.AWAITING)
        pending = events.pending_distribution(ctx, ven, now, ven_is_current=True,
                                              delivered=polled["delivered"])
        item = outbox.take(ctx, ven_id, now, wait, superseded=reports.superseded,
                           max_priority=outbox.BEFORE_EVENTS if pending else None,
                           awaiting=polled["records"], queued=polled["outbox"])
        if item is not None:
            # (held only matters to a distribution: undo puts an outbox item back whole.)
            name, payload, body = ctx.reply(item["payload_name"], item["payload"])
            return Taken(name, payload, body, item, {}, now)
        if pending is not None:
            held = dict(pending.record["events"])  # before sending records what is sent
            name, payload, body = ctx.reply(
                "oadrDistributeEvent", events.distribute_pending(ctx, pending, now))
            return Taken(name, payload, body, None, held, now)
    return None


@dataclass
class Step:
    """What :func:`advance` did. ``taken`` is the next message to push, under the lease the
    sender now holds; None when the sender does not hold the lease (any more): ``state`` is
    then the VEN's push state after the release, or None when the lease was another's (or
    the VEN is backing off). ``ven`` is the VEN record as the step read it."""

    taken: Taken | None
    state: dict[str, Any] | None
    ven: VenRecord | None
    #: The lease the sender holds while ``taken`` is not None: pass it to the next step.
    held: Held | None = None


def advance(ctx: Context, ven_id: str, owner: str, now: datetime, lease: timedelta, *,
            held: bool = False, undo_taken: Taken | None = None, failed: bool = False,
            more: bool = True, lease_held: Held | None = None) -> Step:
    """One step of a sender, in one per-VEN transaction: put back the message whose push
    failed (``undo_taken``, see :func:`undo`), then claim (or renew) ``owner``'s lease and
    take the VEN's next message (see :func:`take`); when nothing is due, the last push
    failed, or ``more`` is False, end the lease instead (see :func:`release`) and leave the
    VEN's hint of what is next due (see :mod:`~flask_openadr.services.push_due`).

    So a message costs one write transaction to take (the claim included) and a sender's
    turn one more to end (the liveness write of its caller included), where claiming,
    renewing, taking and releasing each took one.

    :param held: the caller holds the lease (it took a message in its last step): the step
        then reads first whether anything is due now (:func:`next_due`), and renews the lease
        and takes only if so. Only the holder of the lease passes ``held``, ``failed`` or
        ``more=False`` (a release by another would end a back-off). The caller may add its
        own writes of the VEN's data to the same transaction by opening
        ``ctx.store.atomic(ven_id)`` around it.
    :param lease_held: the last step's :attr:`Step.held`: the push state it wrote is not read
        again while the lease is young (see :class:`Held`).
    """
    with ctx.store.atomic(ven_id):
        if undo_taken is not None:
            undo(ctx, ven_id, undo_taken, now)
        ven = ctx.store.get_ven(ven_id)
        at, known = None, False
        if more and not failed and ven is not None and is_push(ven):
            at, known = (next_due(ctx, ven, {}, now), True) if held else (now, False)
            if at is not None and at <= now:
                claimed = claim(ctx, ven_id, owner, now, lease, held=lease_held)
                if claimed is None:
                    return Step(None, None, ven)
                lease_held = claimed
                taken = take(ctx, ven, now)
                if taken is not None:
                    return Step(taken, None, ven, claimed)
        state = release(ctx, ven_id, owner, failed=failed, now=now, held=lease_held)
        if state is not None:
            if not known or (at is not None and at <= now):
                # (A release after a success leaves no back-off: an instant read above holds.)
                at = next_due(ctx, ven, state, now)
            push_due.schedule(ctx, ven_id, at)
        return Step(None, state, ven)


def next_due(ctx: Context, ven: VenRecord | None, state: Mapping[str, Any],
             now: datetime) -> datetime | None:
    """When the VEN next has something to push, from its own data: ``now`` while its outbox
    holds a message, else the earliest of its delivery record's ``due_at`` and the redelivery
    of its unacknowledged messages, but not before its back-off ends; None when nothing is
    due or it is no push VEN."""
    if ven is None or not is_push(ven):
        return None
    # The three things it depends on in one read (one statement on the SQL stores, where
    # separate reads were three; every push ends with this read).
    polled = ctx.store.get_poll_state(ven["ven_id"], outbox.AWAITING)
    times = [now] if polled["outbox"] else []
    due_at = delivery.from_stored(polled["delivered"])["due_at"]
    if due_at is not None:
        times.append(due_at)
    wait = outbox.redelivery_after(ctx, ven)
    times.extend(record["sent_at"] + wait for record in polled["records"])
    if not times:
        return None
    at = min(times)
    next_attempt = state.get("next_attempt")
    return max(at, next_attempt) if next_attempt is not None else at


def reschedule(ctx: Context, ven: VenRecord, now: datetime) -> None:
    """The push VEN took a message by polling: leave the hint of when it is next due (see
    :func:`next_due`), as the end of a sender's turn does. Inside the poll's transaction."""
    state = ctx.store.get_record(PUSH_STATE, ven["ven_id"], _KEY) or {}
    push_due.schedule(ctx, ven["ven_id"], next_due(ctx, ven, state, now))


def undo(ctx: Context, ven_id: str, taken: Taken, now: datetime) -> None:
    """The push of ``taken`` failed (no answer, or an HTTP error): make it due again, so the
    next attempt sends it (or, for events, what is current then) before anything queued later."""
    with ctx.store.atomic(ven_id):
        if taken.item is not None:
            key = outbox.acknowledgement_key(taken.payload_name, taken.payload)
            if ctx.store.get_record(outbox.AWAITING, ven_id, key) is not None:
                # Due at once: a sent message is due again once redelivery_after has passed.
                ven = ctx.store.get_ven(ven_id) or {}
                ctx.store.put_record(outbox.AWAITING, ven_id, key, {
                    "item": taken.item,
                    "sent_at": now - outbox.redelivery_after(ctx, ven)})
            return
        record = delivery.load(ctx, ven_id)
        changed = False
        for event in taken.payload.get("events") or []:
            event_id = event["event_descriptor"]["event_id"]
            entry = record["events"].get(event_id)
            if isinstance(entry, dict) and entry.get("sent_at") == taken.sent_at:
                # The VEN holds what it held before; a later distribution did not overwrite it.
                record["events"][event_id] = taken.held.get(event_id, {})
                changed = True
        if changed:
            record["due_at"] = now
            delivery.save(ctx, ven_id, record)


def answered(ctx: Context, ven_id: str, taken: Taken) -> None:
    """The VEN answered ``taken`` with an OpenADR error instead of its paired reply: it is not
    sent again (an error says the VEN got it and will not take it)."""
    if taken.item is not None:
        outbox.acknowledge(ctx, ven_id,
                           outbox.acknowledgement_key(taken.payload_name, taken.payload))
