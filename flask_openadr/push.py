"""The HTTP push sender: POSTs what each push VEN's outbox holds to its transport address, and
processes the VEN's answer as if the VEN had sent it.

It runs on a background thread of each serving process, started after fork as the liveness
sweeper is (see :mod:`flask_openadr.runtime`). Every pass looks for push VENs with something due,
claims each with a lease in the shared store (see :mod:`flask_openadr.services.push`), so that
one sender in any process on any host pushes to a VEN at a time (which keeps its order), and
queues it for a small pool of threads: a slow VEN holds one thread, never the others.

The HTTP client is urllib3: a well-kept synchronous client with a pool of keep-alive
connections per host, separate connect and read timeouts, and client certificates; the
standard library's http.client has no pool and its timeouts are one socket timeout.
"""
from __future__ import annotations

import logging
import math
import os
import random
import socket
import ssl
import threading
import time
import uuid
from collections import OrderedDict
from datetime import datetime, timedelta
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, ContextManager, NamedTuple
from urllib.parse import urlsplit

import urllib3
import urllib3.connection
from urllib3.util.ssltransport import SSLTransport

from . import codec, services
from .errors import MalformedMessage, Rejection
from .protocol import is_success
from .security import replay, signature
from .security.fingerprint import fingerprint_from_der
from .services import liveness, outbox, push_due
from .services import push as rules
from .services.context import Context
from .store.base import Transition, VenRecord

logger = logging.getLogger("flask_openadr")

#: Seconds between two passes of the sender: a message queued is pushed within about this.
PASS_INTERVAL = 0.2
#: The most hinted VENs one pass reads (the earliest due first); more wait for the next pass.
HINTS_PER_PASS = 10_000
#: Seconds a sweep of every push VEN takes at least. Besides the hinted VENs, each pass looks
#: at a slice of the push VENs, reading what each has pending, so that a sweep goes through
#: them all in about this time: it finds what no hint announced (state written by a version
#: without hints, a hint lost to a bug) and bounds how late a missing hint makes a push.
SWEEP_INTERVAL = 10.0
#: The most push VENs one pass sweeps: a pass costs about the same with 1,000 push VENs or
#: 100,000 (whose sweep then takes 200 seconds, not 10). Sweeping every VEN in one pass cost
#: 0.1 s of CPU per 1,000 push VENs, every ten seconds in every process.
SWEEP_PER_PASS = 100
#: Messages pushed to one VEN per claim, before its thread goes to another VEN.
MESSAGES_PER_CLAIM = 50
#: Pinned connection pools (one per https VEN with a bound certificate) kept open by one
#: process; the least recently used is closed beyond this.
MAX_PINNED_POOLS = 1000
#: The share of their time the push threads may spend waiting for their VENs (to connect, to
#: take the message, to answer) before a pass starts more of them. One thread takes the queue
#: while VENs answer at once: threads that all run Python share one GIL and one SQLite writer,
#: and more of them only add switches and lock waits (bench/bench_push.py: eight threads cost a
#: fifth more CPU per push than one). Threads waiting on slow VENs (far away, busy or hanging)
#: leave the CPU idle, and more of them push to the VENs queued meanwhile.
WAITING_SHARE = 0.5
#: The shortest time over which a pass measures that share (a shorter one says little).
SHARE_SPAN = 0.05


#: The headers of every push (urllib3 copies them per request; built once here).
_HEADERS = {"Content-Type": "application/xml"}


class _Target(NamedTuple):
    """Where one push URL goes, worked out once per URL: the origin's pool key and the path."""

    scheme: str
    host: str
    port: int
    path: str


class _Queued(NamedTuple):
    """A VEN a pass queued for the push threads, and when the pass read that it was due."""

    ven_id: str
    read_at: datetime


class Pusher:
    """One app's push sender in this process. :meth:`run_pass` is what its thread calls.

    :param ctx: the VTN context.
    :param signer: the VTN's signing key (pushes to VENs that registered with XML signatures
        are signed), or None.
    :param app_context: returns a context manager that makes the app current (user handlers
        run while the VEN's answers are processed).
    """

    def __init__(self, ctx: Context, signer: signature.Signer | None,
                 app_context: Callable[[], ContextManager[object]]) -> None:
        self.ctx = ctx
        self.signer = signer
        self._app_context = app_context
        self._pid: int | None = None

    def _resources(self) -> None:
        # After fork the parent's pool, threads and owner name are not this process's.
        if self._pid == os.getpid():
            return
        settings = self.ctx.settings
        self._pid = os.getpid()
        self.owner = f"{socket.gethostname()}:{self._pid}:{uuid.uuid4().hex}"
        self._lock = threading.Lock()
        # The VENs being pushed to, those queued for the push threads (in the order queued),
        # and how many push threads are taking the queue.
        self._busy: set[str] = set()
        self._queued: OrderedDict[str, _Queued] = OrderedDict()
        self._runners = 0
        # Push thread -> when the POST it is in began (monotonic); the seconds the push threads
        # waited for their VENs in POSTs that ended since the pass last counted them, and when
        # it did (see _threads_to_start).
        self._posting: dict[int, float] = {}
        self._waited = 0.0
        self._counted_at = time.monotonic()
        # The push VENs this process's sweep has yet to look at, how many it began with, and
        # when the next sweep may begin (the first pass begins one).
        self._sweep: list[str] = []
        self._sweep_size = 0
        self._next_sweep = time.monotonic()
        self._executor = ThreadPoolExecutor(settings.push_concurrency,
                                            thread_name_prefix="flask-openadr-push")
        seconds = settings.push_timeout.total_seconds()
        # Built once: urllib3 takes these objects as they are (it clones the timeout per
        # request, and a Retry object is used as given, where False would build one per call).
        self._timeout = urllib3.Timeout(connect=seconds, read=seconds)
        self._retries = urllib3.Retry(False, redirect=False)
        self._tls: dict[str, Any] = {
            "cert_reqs": "CERT_REQUIRED", "ca_certs": settings.push_ca,
            "cert_file": settings.push_cert, "key_file": settings.push_key}
        # Connection pools, the least recently used first. One per origin (scheme, host,
        # port), with as many kept-alive connections as pushes can run at once (several VENs
        # may share a host, such as an aggregator's gateway), up to four per push thread; and
        # one per https VEN with a bound certificate, pinned to that certificate (key: the
        # origin, the venID and the fingerprint), up to MAX_PINNED_POOLS.
        self._pools: OrderedDict[tuple[str, ...], urllib3.HTTPConnectionPool] = OrderedDict()
        self._pinned: OrderedDict[tuple[str, ...], urllib3.HTTPConnectionPool] = OrderedDict()
        self._max_pools = max(10, 4 * settings.push_concurrency)
        # Push URL -> where it goes, parsed once (bounded: cleared when it grows past
        # MAX_PINNED_POOLS entries, which a VTN of that many push VENs refills in a turn each).
        self._targets: dict[str, _Target | None] = {}

    @property
    def lease(self) -> timedelta:
        # Long enough for a connect and a read, and the processing of the answer.
        return 2 * self.ctx.settings.push_timeout + self.ctx.settings.callback_lease

    def run_pass(self) -> int:
        """Queue each push VEN that has something due for the push threads, which take the
        queued VENs one after another: each checks that the VEN is not leased or backing off
        and claims its lease as it takes the first message (so a VEN another process claimed
        first costs that thread one transaction). Returns how many VENs were queued.

        A pass looks at the VENs hinted as due at its instant (see
        :mod:`~flask_openadr.services.push_due`), one read of the store's due index for all
        of them, and at a slice of this process's sweep of every push VEN (at most
        ``SWEEP_PER_PASS``), reading what each of those has pending. A VEN already queued or
        being pushed to is not queued again."""
        self._resources()
        ctx = self.ctx
        queued: list[_Queued] = []
        with self._app_context(), ctx.store.session():
            read_at = ctx.now()
            ven_ids = push_due.hinted(ctx, read_at, HINTS_PER_PASS)
            # In an order of this process's own: senders of other processes read the same
            # hints, and in the same order they would reach each VEN at about the same time.
            random.shuffle(ven_ids)
            hinted = set(ven_ids)
            for ven_id in self._sweep_slice(time.monotonic()):
                if ven_id not in hinted and ven_id not in self._busy \
                        and ven_id not in self._queued and self._due(ven_id, ctx.now()):
                    ven_ids.append(ven_id)
            for ven_id in ven_ids:
                if ven_id in self._busy or ven_id in self._queued:
                    continue
                queued.append(_Queued(ven_id, read_at))
        with self._lock:
            # (Checked again under the lock: one thread at a time pushes to a VEN.)
            queued = [entry for entry in queued
                      if entry.ven_id not in self._busy and entry.ven_id not in self._queued]
            for entry in queued:
                self._queued[entry.ven_id] = entry
            start = self._threads_to_start()
            self._runners += start
        for _ in range(start):
            self._executor.submit(self._run)
        return len(queued)

    def _threads_to_start(self) -> int:
        """How many push threads to start for the queue, under the lock: one when none runs.
        More, up to ``OPENADR_PUSH_CONCURRENCY``, only when the running threads spent more
        than ``WAITING_SHARE`` of their time since the last count waiting for their VENs: as
        many as keep a thread's worth of them running Python (with threads that wait nine
        tenths of the time, ten). A thread that waits on a hanging VEN counts as waiting all
        along, so the VENs queued behind it get threads of their own at the next pass."""
        if not self._queued:
            return 0
        now = time.monotonic()
        if not self._runners:
            self._waited, self._counted_at = 0.0, now
            return 1
        if now - self._counted_at < SHARE_SPAN:
            return 0
        waited = self._waited + sum(now - max(began, self._counted_at)
                                    for began in self._posting.values())
        share = waited / ((now - self._counted_at) * self._runners)
        self._waited, self._counted_at = 0.0, now
        if share <= WAITING_SHARE:
            return 0
        wanted = min(self.ctx.settings.push_concurrency,
                     math.ceil(self._runners / (1.0 - min(share, 0.95))))
        return max(0, min(wanted - self._runners, len(self._queued)))

    def _run(self) -> None:
        """One push thread's work: take the queued VENs, oldest first, one at a time, until
        the queue is empty. A thread that has pushed to one VEN goes on to the next itself, so
        a push costs no hand-over between threads."""
        ctx = self.ctx
        ended = False
        try:
            while True:
                with self._lock:
                    # (Under the lock with the check: a pass that queues after it starts a
                    # thread of its own.)
                    if not self._queued:
                        self._runners -= 1
                        ended = True
                        return
                    ven_id, entry = self._queued.popitem(last=False)
                    self._busy.add(ven_id)
                try:
                    with self._app_context(), ctx.store.session():
                        # The pass read the VEN's hint at ``read_at``: a turn of another
                        # sender that ended since left a newer one (services.push.waiting).
                        skip = rules.waiting(ctx, ven_id, ctx.now(), since=entry.read_at)
                except Exception:
                    logger.exception("could not read the push state of VEN %r; the next "
                                     "pass tries again", ven_id)
                    skip = True
                if skip:
                    with self._lock:
                        self._busy.discard(ven_id)
                    continue
                self._deliver(ven_id)
        finally:
            if not ended:  # (a thread that dies leaves its place to a new one)
                with self._lock:
                    self._runners -= 1

    def drop_queue(self) -> int:
        """Forget the VENs queued and not yet taken; returns how many. The push threads end
        after the VEN each is pushing to, instead of going through the queue: the sender is
        stopping (at exit, a thread that goes on would hold the process up). Nothing is lost:
        a queued VEN's hint stays in the store, and the next pass of any sender reads it."""
        self._resources()
        with self._lock:
            dropped = len(self._queued)
            self._queued.clear()
        return dropped

    def _sweep_slice(self, clock: float) -> list[str]:
        """The push VENs this pass sweeps: as many as take the sweep through every push VEN
        in ``SWEEP_INTERVAL``, at most ``SWEEP_PER_PASS``. A sweep that ended begins again
        (one read of the index of push VENs) once ``SWEEP_INTERVAL`` has passed since the last
        one began."""
        if not self._sweep:
            if clock < self._next_sweep:
                return []
            self._next_sweep = clock + SWEEP_INTERVAL
            self._sweep = rules.push_ven_ids(self.ctx)
            random.shuffle(self._sweep)  # (another process sweeps in another order)
            self._sweep_size = len(self._sweep)
        count = max(1, min(SWEEP_PER_PASS,
                           math.ceil(self._sweep_size * PASS_INTERVAL / SWEEP_INTERVAL)))
        taken, self._sweep = self._sweep[-count:], self._sweep[:-count]
        return taken

    def _due(self, ven_id: str, now: datetime) -> bool:
        # What the sweep reads of a VEN: whether it is a push VEN with something pending that
        # is neither leased nor backing off (its turn would end at once). Most have nothing.
        ctx = self.ctx
        ven = ctx.store.get_ven(ven_id)
        return ven is not None and push_due.is_push(ven) and not services.poll.nothing_pending(
            ctx, ven_id, now, outbox.redelivery_after(ctx, ven)) \
            and not rules.waiting(ctx, ven_id, now)

    def wait_idle(self, timeout: float = 60.0) -> bool:
        """Wait until this process pushes to no VEN and has none queued (``flask openadr push
        --once``); True when it is idle, False when ``timeout`` seconds passed first."""
        self._resources()
        deadline = time.monotonic() + timeout
        while self._runners:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    def _deliver(self, ven_id: str) -> None:
        """Push the VEN's due messages one at a time, in order, while this process holds its
        lease; a failure stops and backs off. Each message is one write transaction (claim
        and take), and the turn ends with one more (the last liveness write and the release),
        see :func:`~flask_openadr.services.push.advance`."""
        ctx = self.ctx
        held = False
        reached: VenRecord | None = None  # the VEN the last push reached: it counts as seen
        undo_taken: rules.Taken | None = None  # the message whose push failed, to put back
        lease: rules.Held | None = None  # what the last step's claim wrote
        try:
            with self._app_context(), ctx.store.session():
                for n in range(MESSAGES_PER_CLAIM + 1):
                    step = self._step(ven_id, reached, held=held, undo_taken=undo_taken,
                                      failed=undo_taken is not None,
                                      more=n < MESSAGES_PER_CLAIM, lease_held=lease)
                    reached, lease = None, step.held
                    if step.taken is None or step.ven is None:
                        held = False
                        self._after_release(ven_id, step)
                        break
                    held = True
                    if self._send(step.ven, step.taken):
                        reached = step.ven
                    else:
                        undo_taken = step.taken
        except Exception:
            logger.exception("pushing to VEN %r failed; it is retried after a back-off", ven_id)
            if held:
                try:
                    with self._app_context(), ctx.store.session():
                        self._after_release(ven_id, self._step(
                            ven_id, reached, held=True, undo_taken=undo_taken, failed=True,
                            lease_held=lease))
                except Exception:  # the lease then runs out by itself
                    logger.exception("could not release the push lease of VEN %r", ven_id)
        finally:
            with self._lock:
                self._busy.discard(ven_id)

    def _step(self, ven_id: str, reached: VenRecord | None, *, held: bool,
              undo_taken: rules.Taken | None, failed: bool, more: bool = True,
              lease_held: rules.Held | None = None) -> rules.Step:
        """:func:`~flask_openadr.services.push.advance`, with the VEN recorded as seen in the
        same transaction when the last push reached it (a push the VEN took counts as a sign
        of life, as a message from it does); the online callback runs after it."""
        ctx = self.ctx
        with ctx.store.atomic(ven_id):
            transition = liveness.seen(ctx, ven_id, reached) if reached is not None else None
            step = rules.advance(ctx, ven_id, self.owner, ctx.now(), self.lease, held=held,
                                 undo_taken=undo_taken, failed=failed, more=more,
                                 lease_held=lease_held)
        _run_transition(ctx, transition)
        return step

    def _after_release(self, ven_id: str, step: rules.Step) -> None:
        # Pushes that failed for long enough take the VEN offline, as missed polls would.
        ctx = self.ctx
        if step.ven is not None and rules.failing_too_long(ctx, step.ven, step.state,
                                                           ctx.now()):
            with self._app_context():
                _run_transition(ctx, liveness.unreachable(ctx, ven_id))

    def _target(self, url: str) -> _Target | None:
        """Where ``url`` goes, or None when it has no host (a push to it fails and is logged)."""
        target = self._targets.get(url)
        if target is None and url not in self._targets:
            parts = urlsplit(url)
            if parts.hostname and parts.scheme in ("http", "https"):
                port = parts.port or (443 if parts.scheme == "https" else 80)
                target = _Target(parts.scheme, parts.hostname, port, parts.path or "/")
            if len(self._targets) >= MAX_PINNED_POOLS:
                self._targets.clear()
            self._targets[url] = target
        return target

    def _pool_for(self, ven: VenRecord, target: _Target) -> urllib3.HTTPConnectionPool:
        """The pool to POST to ``target`` through. An https VEN with a bound certificate
        fingerprint gets a pool of its own whose connections check that the server presents
        that certificate before anything is sent (protocol notes 1.6)."""
        fingerprint = ven.get("fingerprint")
        pinned = target.scheme == "https" and bool(fingerprint)
        origin = (target.scheme, target.host, str(target.port))
        key: tuple[str, ...] = (*origin, ven["ven_id"], str(fingerprint)) if pinned else origin
        pools, limit = (self._pinned, MAX_PINNED_POOLS) if pinned \
            else (self._pools, self._max_pools)
        with self._lock:
            pool = pools.get(key)
            if pool is not None:
                pools.move_to_end(key)
                return pool
            if target.scheme == "http":
                pool = urllib3.HTTPConnectionPool(
                    target.host, target.port, maxsize=self.ctx.settings.push_concurrency,
                    block=False, timeout=self._timeout, retries=self._retries)
            else:
                # A pinned pool has one connection: its VEN gets one push at a time.
                pool = urllib3.HTTPSConnectionPool(
                    target.host, target.port,
                    maxsize=1 if pinned else self.ctx.settings.push_concurrency,
                    block=False, timeout=self._timeout, retries=self._retries, **self._tls)
                if pinned:
                    pool.ConnectionCls = _pinned_connection(str(fingerprint))
            pools[key] = pool
            while len(pools) > limit:
                pools.popitem(last=False)[1].close()
        return pool

    def _send(self, ven: VenRecord, taken: rules.Taken) -> bool:
        """POST one message; True when the VEN took it (HTTP 200). A message it did not take
        is put back by the caller's next step."""
        ctx = self.ctx
        ven_id = ven["ven_id"]
        body = taken.body or codec.encode(taken.payload_name, taken.payload)
        if ven.get("xml_signature") and self.signer is not None:
            # A VEN that registered with signatures rejects unsigned messages (notes 2.3).
            # Signed from the codec's bytes, as the views sign their replies.
            body = signature.sign_message(body, self.signer, now=ctx.now())
        url = rules.url_for(ctx, ven, taken.payload_name)
        try:
            target = self._target(url)
            if target is None:
                raise urllib3.exceptions.LocationValueError(f"no host in the URL {url!r}")
            pool = self._pool_for(ven, target)
            thread, cpu = threading.get_ident(), time.thread_time()
            with self._lock:  # (a pass counts how long the push threads wait for VENs)
                self._posting[thread] = began = time.monotonic()
            try:
                # urlopen is urllib3's lowest public call: no URL parsing, no redirect
                # handling (a redirect is a failed push), the timeout and Retry objects given
                # as built.
                response = pool.urlopen(
                    "POST", target.path, body=body, headers=_HEADERS, retries=self._retries,
                    redirect=False, assert_same_host=False, timeout=self._timeout,
                    preload_content=False)
                try:
                    answer = response.read(ctx.settings.max_message_bytes + 1)
                finally:
                    response.release_conn()
            finally:
                # What the POST did not spend running this thread, it waited for the VEN (or
                # for the GIL, which is short beside a VEN worth more threads).
                cpu = time.thread_time() - cpu
                with self._lock:
                    del self._posting[thread]
                    ended = time.monotonic()
                    self._waited += max(0.0, ended - max(began, self._counted_at) - cpu)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            logger.warning("could not push %s to VEN %r at %s: %s", taken.payload_name, ven_id,
                           url, exc)
            return False
        if response.status != 200:
            logger.warning("VEN %r answered the push of %s to %s with HTTP %d", ven_id,
                           taken.payload_name, url, response.status)
            return False
        ctx.emit("message_sent", ven_id=ven_id, payload_name=taken.payload_name,
                 payload=taken.payload)
        self._answer(ven, taken, answer)
        return True

    def _answer(self, ven: VenRecord, taken: rules.Taken, data: bytes) -> None:
        """Process the VEN's synchronous answer as if it had POSTed it to the VTN."""
        ctx = self.ctx
        ven_id = ven["ven_id"]
        expected = outbox.ACKNOWLEDGED_BY.get(taken.payload_name, "oadrResponse")
        if not data.strip():
            if taken.payload_name != "oadrDistributeEvent":
                # Without its acknowledgement the message is sent again after
                # OPENADR_REDELIVERY_AFTER, as for a pull VEN that does not answer.
                logger.warning("VEN %r answered the push of %s with an empty body, not %s",
                               ven_id, taken.payload_name, expected)
            return  # the VEN's oadrCreatedEvent comes later, on EiEvent
        try:
            root = codec.parse(data, max_bytes=ctx.settings.max_message_bytes)
            signed = signature.is_signed(root)
            if signed:
                # The signer must be the VEN's certificate bound at registration.
                verified = signature.verify(root, client_fingerprint=ven.get("fingerprint"))
                replay.check(ctx.store, verified, now=ctx.now(),
                             window=ctx.settings.replay_window)
                root = verified.payload
            name, payload = codec.decode_element(root)
        except (MalformedMessage, Rejection) as exc:
            logger.warning("VEN %r answered the push of %s with a message the VTN refuses: %s",
                           ven_id, taken.payload_name, exc)
            return
        if name == "oadrResponse" and (expected != "oadrResponse"
                                       or taken.payload_name == "oadrDistributeEvent"):
            code = payload["response"]["response_code"]
            if not is_success(code):
                logger.warning("VEN %r answered the push of %s with %s %s; it is not sent "
                               "again", ven_id, taken.payload_name, code,
                               payload["response"].get("response_description"))
                rules.answered(ctx, ven_id, taken)
            return
        if name != expected:
            logger.warning("VEN %r answered the push of %s with %s, not %s", ven_id,
                           taken.payload_name, name, expected)
            return
        # The answer came on the connection the VTN opened to the VEN's registered address:
        # it is that VEN's, even when it leaves its optional venID out.
        payload.setdefault("ven_id", ven_id)
        ctx.emit("message_received", ven_id=ven_id, payload_name=name, payload=payload)
        outcome = services.handle(ctx, services.SERVICE_OF[name], name, payload,
                                  ven.get("fingerprint"), signed=signed)
        response = outcome.payload.get("response") or {}
        if not is_success(response.get("response_code", 200)):
            logger.warning("the VTN refused VEN %r's %s answering a push: %s %s", ven_id, name,
                           response.get("response_code"), response.get("response_description"))


def _pinned_connection(fingerprint: str) -> type:
    """An https connection class that refuses a server whose certificate does not have the
    OpenADR ``fingerprint``: the check runs right after the handshake, before the request."""

    class PinnedConnection(urllib3.connection.HTTPSConnection):
        def connect(self) -> None:
            super().connect()
            sock = self.sock
            der = (sock.getpeercert(binary_form=True)
                   if isinstance(sock, (ssl.SSLSocket, SSLTransport)) else None)
            found = fingerprint_from_der(der) if der else None
            if found != fingerprint:
                self.close()
                raise urllib3.exceptions.SSLError(
                    f"the VEN's server certificate has fingerprint {found}, not {fingerprint} "
                    "bound at its registration; the VEN must serve the certificate it "
                    "registered with")

    return PinnedConnection


def _run_transition(ctx: Context, transition: Transition | None) -> None:
    # Runs the callback of an online or offline transition this process won.
    if transition is None:
        return
    try:
        liveness.run_transition(ctx, transition)
    except Exception:
        logger.exception("could not complete the liveness transition of VEN %r",
                         transition["ven_id"])
