"""VEN liveness: online/offline transitions decided once in the store, their callbacks, the sweep.

A transition is decided by one compare-and-set in the store (:meth:`Store.record_seen` for going
online, :meth:`Store.claim_offline` for going offline), so among any number of processes exactly
one wins it. The winner holds a lease on the transition while it runs the user's callback and
then completes it. A process that dies (or a callback that raises) leaves the transition pending;
when the lease ends, the next sweep in any process claims it again and re-runs the callback. The
decision is exactly-once, the callback at-least-once; ``(ven_id, epoch)`` names one transition
so that a handler can make itself idempotent. See ``docs/liveness.rst``.

Like every service, this module knows nothing about Flask: it works on a
:class:`~flask_openadr.services.context.Context`. The thread that runs a sweep pass on a
schedule, in an application context, is :mod:`flask_openadr.runtime`'s.
"""
from __future__ import annotations

import inspect
import logging
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Callable

from ..config import Settings
from ..protocol import is_registered
from ..store.base import Liveness, Transition, VenRecord
from .context import Context

if TYPE_CHECKING:
    from ..security.replay import Nonce

__all__ = [
    "LivenessHandler",
    "offline_after",
    "offline_deadline",
    "presence",
    "retire",
    "run_transition",
    "seen",
    "sweep",
    "sweep_transitions",
    "unreachable",
    "watch",
    "watching_since",
]

logger = logging.getLogger("flask_openadr")

#: The handler and the signal of each kind of transition.
HANDLER_OF = {"online": "on_ven_online", "offline": "on_ven_offline"}
SIGNAL_OF = {"online": "ven_online", "offline": "ven_offline"}


def offline_after(ven: VenRecord | None, settings: Settings) -> timedelta:
    """How long a VEN may stay silent before it counts as offline: the poll frequency the VTN gave
    it, times ``OPENADR_OFFLINE_AFTER_MISSED_POLLS``, plus ``OPENADR_OFFLINE_GRACE``.

    A push VEN does not poll: its silence says nothing, so it never goes offline by silence;
    it goes offline when pushes to it keep failing (:func:`unreachable`)."""
    if (ven or {}).get("http_pull_model") is False:
        return PUSH_SILENCE
    frequency = (ven or {}).get("poll_frequency") or settings.poll_frequency
    return frequency * settings.offline_after_missed_polls + settings.offline_grace


#: How long a push VEN's silence is allowed: for ever, in practice (see :func:`offline_after`).
PUSH_SILENCE = timedelta(days=365 * 100)


def unreachable(ctx: Context, ven_id: str) -> Transition | None:
    """A push VEN that pushes have failed to reach for ``OPENADR_OFFLINE_AFTER_MISSED_POLLS``
    poll intervals goes offline now: the same compare-and-set on its epoch as a sweep's, so of
    any number of senders one wins. Returns the transition this process won (run its callback
    with :func:`run_transition`), or None."""
    row = ctx.store.get_liveness(ven_id)
    if row is None or row["state"] != "online":
        return None
    return ctx.store.claim_offline(ven_id, row["epoch"], _END_OF_TIME,
                                   _lease_until(ctx, ctx.now()))


#: A VEN the store holds as online whose deadline has passed, before any sweep recorded it.
STALE = "stale"


def presence(row: Liveness | None, now: datetime,
             deadline: datetime | None = None) -> str | None:
    """A VEN's liveness as it is at ``now``, from its store row: "online", "offline", "stale" or
    None (never seen since it registered).

    "stale" means the store still says online but its deadline has passed: the VEN *is*
    offline, and no sweep has taken the transition (and run ``on_ven_offline``) yet. Screens and
    commands read this, not the stored state alone, so that they are right when no sweeper runs.

    :param deadline: the VEN's deadline as :func:`offline_deadline` gives it (which counts an
        outage of the VTN); the row's ``offline_at`` when not given.
    """
    if row is None or row["state"] is None:
        return None
    if deadline is None:
        deadline = row["offline_at"]
    if row["state"] == "online" and deadline is not None and deadline <= now:
        return STALE
    return row["state"]


# -- outages: a VEN's silence counts only while the VTN was watching --------------------------
#
# During an outage (the store down, or every worker stopped) the VENs' messages get 503 or no
# answer, so the store does not see them; their deadlines pass all the same. The VTN therefore
# keeps one VTN-wide record, written by every scheduled sweep pass of any process: when it last
# watched, and by when the next pass promised to come. A pass that finds that promise broken
# knows the VTN was not watching in between, and records the end of that outage (``since``). A
# VEN's silence is then counted from ``since`` at the earliest: it is offline one deadline after
# the VTN came back, not at the first sweep after. See docs/liveness.rst, "Outages".

#: The store record of the VTN's watch: (kind, venID, key). "*" is no VEN: the record is the
#: VTN's own, and the kind is no registration's, so ending one never clears it.
WATCH_RECORD = ("liveness", "*", "watch")


def watch(ctx: Context, interval: timedelta) -> datetime:
    """Record that the VTN watches now, from a sweep pass that runs every ``interval``: the next
    pass of some process is due within twice ``interval`` plus ``OPENADR_OFFLINE_GRACE`` (the
    slack covers a pass's own run time). When the previous record's promise has passed, the VTN
    was not watching since that record: log it and make now the end of an outage.

    The first record ever also counts as the end of an outage, since nothing says the VTN was
    watching before it (the safe side: a late offline, never a false one).

    :returns: the end of the last outage (``since`` for :func:`offline_deadline`).
    """
    now = ctx.now()
    kind, owner, key = WATCH_RECORD
    # One VTN-wide block: two passes reading the same record must not both write it, or an
    # outage one of them saw could be overwritten by the other's older view.
    with ctx.store.atomic():
        record = ctx.store.get_record(kind, owner, key)
        if record is None:
            since = now
            logger.info("liveness watch starts at %s: VENs' silence counts from now", now)
        elif now > record["next_by"]:
            since = now
            logger.warning(
                "no liveness sweep ran from %s to %s (the store or every worker was down): "
                "VENs that were silent meanwhile are given one full deadline from now before "
                "they count as offline", record["watched_at"], now)
        else:
            since = record["since"]
        ctx.store.put_record(kind, owner, key, {
            "watched_at": now,
            "next_by": now + 2 * interval + ctx.settings.offline_grace,
            "since": since,
        })
    return since


def watching_since(ctx: Context) -> datetime | None:
    """The end of the VTN's last outage as the latest :func:`watch` recorded it, or None when no
    scheduled sweep pass ever ran on this store."""
    kind, owner, key = WATCH_RECORD
    record = ctx.store.get_record(kind, owner, key)
    return None if record is None else record["since"]


def offline_deadline(offline_at: datetime, ven: VenRecord | None, settings: Settings,
                     since: datetime | None) -> datetime:
    """When a VEN counts as offline: the deadline its last message set (``offline_at`` of its
    liveness row), but never before one full deadline (:func:`offline_after`) after the end of
    the VTN's last outage ``since``. The one rule that both the sweep and :func:`presence` use."""
    if since is None:
        return offline_at
    return max(offline_at, since + offline_after(ven, settings))


def seen(ctx: Context, ven_id: str, ven: VenRecord | None = None,
         nonce: Nonce | None = None) -> Transition | None:
    """Record that the VEN sent an authenticated message now.

    :param ven: the VEN's record when the caller already has it (saves one read).
    :param nonce: the replay nonce of the message's signature, remembered in the same atomic
        step as the liveness update (see :meth:`~flask_openadr.store.base.Store.record_seen`).
    :raises ~flask_openadr.store.base.NonceUsed: the nonce was used before; nothing was written.
    :returns: the online transition this process won (the VEN was offline or not seen since it
        registered), whose callback the caller runs with :func:`run_transition`; or None.
    """
    if ven is None:
        ven = ctx.store.get_ven(ven_id)
    now = ctx.now()
    if nonce is None:  # the call a store written before record_seen took nonces knows too
        return ctx.store.record_seen(ven_id, now, now + offline_after(ven, ctx.settings),
                                     now + ctx.settings.callback_lease)
    return ctx.store.record_seen(ven_id, now, now + offline_after(ven, ctx.settings),
                                 now + ctx.settings.callback_lease, nonce=nonce.key,
                                 nonce_expires_at=nonce.expires_at)


class LivenessHandler:
    """A user's ``on_ven_online`` / ``on_ven_offline`` function, with its signature checked once:
    it is called ``fn(ven_id)``, or ``fn(ven_id, epoch=epoch)`` when it declares ``epoch`` (or
    ``**kwargs``)."""

    def __init__(self, fn: Callable[..., Any], name: str = "on_ven_online/on_ven_offline"):
        self.fn = fn
        self.wants_epoch = _wants_epoch(fn)
        try:
            signature = inspect.signature(fn)
        except (TypeError, ValueError):  # a builtin without a signature: trust it
            return
        try:
            signature.bind("ven", **({"epoch": 1} if self.wants_epoch else {}))
        except TypeError:
            raise TypeError(
                f"the {name} handler {getattr(fn, '__qualname__', fn)!r} cannot be called with "
                f"the venID alone; its signature is {signature}, expected (ven_id) or "
                "(ven_id, epoch)"
            ) from None

    def __call__(self, ven_id: str, epoch: int) -> Any:
        if self.wants_epoch:
            return self.fn(ven_id, epoch=epoch)
        return self.fn(ven_id)

    def __repr__(self) -> str:
        return f"<LivenessHandler {self.fn!r} epoch={self.wants_epoch}>"


def _wants_epoch(fn: Callable[..., Any]) -> bool:
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(
        (p.name == "epoch" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))
        or p.kind == p.VAR_KEYWORD
        for p in parameters
    )


def run_transition(ctx: Context, transition: Transition) -> bool:
    """Run the callback of a transition this process won (or reclaimed), then complete it.

    Calls the ``on_ven_online`` / ``on_ven_offline`` handler (with ``epoch`` when it asks for
    it), then sends the ``ven_online`` / ``ven_offline`` signal. An exception from either is
    logged and swallowed, and the transition is *not* completed: its lease runs out and a later
    sweep (in any process) runs the callback again. Store errors propagate.

    :returns: True when the callback finished and the transition was completed.
    """
    if not _callback(ctx, transition):
        return False
    ctx.store.complete_transition(transition["ven_id"], transition["epoch"])
    return True


def _callback(ctx: Context, transition: Transition) -> bool:
    """The handler and the signal of a transition; False (logged) when either raised."""
    ven_id, kind, epoch = transition["ven_id"], transition["kind"], transition["epoch"]
    handler = ctx.handler(HANDLER_OF[kind])
    try:
        if handler is not None:
            if not isinstance(handler, LivenessHandler):
                handler = LivenessHandler(handler, HANDLER_OF[kind])
            handler(ven_id, epoch)
        ctx.emit(SIGNAL_OF[kind], ven_id=ven_id, epoch=epoch)
    except Exception:
        logger.exception(
            "the %s callback for VEN %r (epoch %d) raised; it runs again after the lease of "
            "%s ends", kind, ven_id, epoch, ctx.settings.callback_lease,
        )
        return False
    logger.info("VEN %r is %s (epoch %d)", ven_id, kind, epoch)
    return True


#: Due VENs claimed in one store transaction. One commit per chunk instead of one per VEN is
#: what keeps a sweep of a thousand VENs fast on SQL stores (each commit is a log flush); the
#: chunk's leases start together, so it stays small next to what the lease allows.
CLAIM_CHUNK = 50


def sweep(ctx: Context, now: datetime | None = None, limit: int = 1000,
          interval: timedelta | None = None) -> int:
    """One pass: take offline the VENs that missed their polls, then re-run stale callbacks.

    Due VENs are claimed with compare-and-sets, :data:`CLAIM_CHUNK` of them in one transaction,
    so a pass that several processes make at once runs each callback once; the chunk's
    callbacks run after its claims commit, and their leases start at the claim. Batches of
    ``limit`` are fetched until one comes back short; the cost is proportional to the number of
    VENs that changed, not to all VENs.

    A VEN is due when its :func:`offline_deadline` has passed: its silence counts only from the
    end of the VTN's last outage. A pass that runs on a schedule gives its ``interval``, and
    records first that the VTN is watching (:func:`watch`), which is how outages are noticed;
    an unscheduled pass (``interval`` None) uses the outages recorded by the scheduled ones.

    :param now: the time to sweep at; the context's clock by default.
    :param interval: the time between this caller's passes, when it runs them on a schedule.
    :returns: how many transitions this pass ran the callback of (whether or not it succeeded).
    """
    return len(sweep_transitions(ctx, now, limit, interval))


def sweep_transitions(ctx: Context, now: datetime | None = None, limit: int = 1000,
                      interval: timedelta | None = None) -> list[dict[str, Any]]:
    """:func:`sweep`, returning what it did: one ``{"ven_id", "kind", "epoch", "completed",
    "rerun"}`` per transition whose callback it ran. ``completed`` is False when the callback
    raised (it runs again after its lease); ``rerun`` is True for a callback another process
    left unfinished. ``flask openadr monitor`` prints these."""
    since = watching_since(ctx) if interval is None else watch(ctx, interval)
    now = ctx.now() if now is None else now
    ran: list[dict[str, Any]] = []
    while True:
        # VENs the last outage still covers stay in the due set (their stored deadline has
        # passed) until they poll again or their extended deadline passes; they cost a read per
        # pass meanwhile. When more than ``limit`` of them come first, later ones wait for the
        # next passes: a late offline (bounded by the longest deadline), never a false one.
        due = ctx.store.due_offline(now, limit)
        progress = 0
        for start in range(0, len(due), CLAIM_CHUNK):
            claimed, retired = _claim_chunk(ctx, due[start:start + CLAIM_CHUNK], now, since)
            progress += len(claimed) + retired
            # The claims are committed before any callback runs: a callback never acts on a
            # transition another process could still win.
            outcomes = [(t, _callback(ctx, t)) for t in claimed]
            with ctx.store.atomic():
                for transition, ok in outcomes:
                    if ok:
                        ctx.store.complete_transition(transition["ven_id"], transition["epoch"])
            ran.extend(dict(t, completed=ok, rerun=False) for t, ok in outcomes)
        # A full batch where nothing changed means other processes hold these rows; stop rather
        # than fetch the same rows again.
        if len(due) < limit or progress == 0:
            break
    while True:
        stale = ctx.store.stale_transitions(now, limit)
        reclaimed = 0
        for transition in stale:
            if ctx.store.reclaim_transition(transition["ven_id"], transition["epoch"], now,
                                            _lease_until(ctx, now)):
                reclaimed += 1
                logger.warning("re-running the %s callback of VEN %r (epoch %d): the process "
                               "that ran it did not complete it within its lease",
                               transition["kind"], transition["ven_id"], transition["epoch"])
                ok = run_transition(ctx, transition)
                ran.append(dict(transition, completed=ok, rerun=True))
        if len(stale) < limit or reclaimed == 0:
            break
    return ran


def _claim_chunk(ctx: Context, due: list[tuple[str, int]], now: datetime,
                 since: datetime | None) -> tuple[list[Transition], int]:
    """Claim the offline transitions of some due VENs in one transaction: (won, retired). A VEN
    whose stored deadline passed during an outage but whose :func:`offline_deadline` has not
    is left alone."""
    claimed: list[Transition] = []
    retired = 0
    lease_until = _lease_until(ctx, now)
    with ctx.store.atomic():
        for ven_id, epoch in due:
            ven = ctx.store.get_ven(ven_id)
            if not is_registered(ven):
                # Its registration ended while it was online (a message raced the cancellation):
                # it left on purpose, so it is not reported offline.
                retired += _silent_offline(ctx, ven_id, epoch, now)
                continue
            # due_offline found its stored deadline passed, so the outage rule alone decides.
            if offline_deadline(now, ven, ctx.settings, since) > now:
                continue
            transition = ctx.store.claim_offline(ven_id, epoch, now, lease_until)
            if transition is not None:
                claimed.append(transition)
    return claimed, retired


def retire(ctx: Context, ven_id: str) -> None:
    """The VEN's registration ended: stop sweeping it, without an ``on_ven_offline`` call (it
    left on purpose).

    This is the offline transition a sweep would make, completed at once instead of running the
    callback, so the row stays and the epoch keeps counting up: ``(ven_id, epoch)`` names one
    transition even across registrations.
    """
    for _ in range(3):  # a message racing the cancellation can win the row once or twice
        row = ctx.store.get_liveness(ven_id)
        if row is None or row["state"] != "online":
            return
        if _silent_offline(ctx, ven_id, row["epoch"], _END_OF_TIME):
            return


# A moment no offline deadline comes after: with it claim_offline takes a VEN offline at once.
_END_OF_TIME = datetime(9999, 12, 31, tzinfo=timezone.utc)


def _silent_offline(ctx: Context, ven_id: str, epoch: int, now: datetime) -> bool:
    transition = ctx.store.claim_offline(ven_id, epoch, now, _lease_until(ctx, ctx.now()))
    if transition is None:
        return False
    ctx.store.complete_transition(ven_id, transition["epoch"])
    return True


def _lease_until(ctx: Context, now: datetime) -> datetime:
    # Earlier chunks of a pass took time: the lease runs from the clock now, not the pass start.
    return max(now, ctx.now()) + ctx.settings.callback_lease
