"""The thread and process lifecycle: each app's state, its background threads, and the functions
that start them in a serving process (after fork) and stop them.

Every app with a VTN keeps an :class:`AppState` in ``app.extensions["openadr"]``; this module
also remembers them (weakly), so that server hooks such as :mod:`flask_openadr.gunicorn` can
start the threads of apps that were loaded before the fork. Each app has two threads, both a
:class:`Sweeper` (a loop that runs one pass every interval): the liveness sweeper, which runs a
:class:`Maintenance` pass (:func:`flask_openadr.services.liveness.sweep_transitions` and the
periodic work beside it), and the push sender (:class:`flask_openadr.push.Pusher`).

Internal: applications use :mod:`flask_openadr.gunicorn` or the first request, not this module.
"""
from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import weakref
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Callable

from . import push
from .security.identity import ClientIdentifier
from .services import liveness, retention, vtn_reports
from .services.context import Context

if TYPE_CHECKING:
    from flask import Flask
    from flask.ctx import AppContext

    from .extension import VTN
    from .security.signature import Signer

__all__ = ["AppState", "Maintenance", "Sweeper", "SweeperDone", "has_served",
           "start_background", "states", "stop_background"]

logger = logging.getLogger("flask_openadr")

#: Seconds between two retention passes of one process's sweeper (or ``flask openadr monitor``).
RETENTION_EVERY = 60.0

# Every app state of this process, so that start_background() can start their threads in a
# worker (apps loaded with --preload exist before the fork). Weak: a discarded app goes away.
_STATES: weakref.WeakSet[AppState] = weakref.WeakSet()


class Maintenance:
    """The periodic work of one VTN in one process, as the sweeper thread and
    ``flask openadr monitor`` run it: a liveness pass, the VTN reports that are due, and a
    retention pass when :data:`RETENTION_EVERY` has passed since this object's last."""

    def __init__(self, context: Context, interval: timedelta | None):
        """:param interval: the time between passes, when they run on a schedule (the liveness
            pass then records that the VTN is watching, see
            :func:`flask_openadr.services.liveness.watch`); None for passes at unknown times."""
        self.context = context
        self.interval = interval
        self._retention_at: float | None = None

    def run(self) -> list[dict[str, Any]]:
        """One pass; returns the liveness transitions it ran the callback of (see
        :func:`flask_openadr.services.liveness.sweep_transitions`)."""
        ran = liveness.sweep_transitions(self.context, interval=self.interval)
        vtn_reports.send_due(self.context)
        now = time.monotonic()
        if self._retention_at is None or now - self._retention_at >= RETENTION_EVERY:
            # Less often than liveness: the pass reads every stored event.
            self._retention_at = now
            retention.sweep(self.context)
            # After the deletions, which are what makes SQLite's WAL grow.
            self.context.store.maintain(self.context.now())
        return ran


class SweeperDone(Exception):
    """Raised by a sweeper's pass to end its thread (the app it sweeps for is gone)."""


# Every Sweeper of this process, so that a forked child starts from a clean slate.
_SWEEPERS: weakref.WeakSet[Sweeper] = weakref.WeakSet()


class Sweeper:
    """A daemon thread that calls ``run_pass()`` every ``interval`` seconds until stopped.

    An exception from a pass is logged and the loop goes on. :meth:`start` is idempotent. A
    Sweeper inherited over ``fork()`` is not running in the child (its thread stayed in the
    parent), so the child's :meth:`start` starts a thread of its own.
    """

    def __init__(self, run_pass: Callable[[], Any], interval: float,
                 name: str = "flask-openadr-sweeper", what: str = "liveness sweeper",
                 on_stop: Callable[[], Any] | None = None):
        """:param what: what the thread is, in its log lines ("liveness sweeper", "push
            sender"): one class runs both, and an operator reading the log must tell them
            apart.
        :param on_stop: called when :meth:`stop` asks the thread to stop, and again once it
            has ended (the push sender drops the VENs it queued for its push threads)."""
        self._run_pass = run_pass
        self._on_stop = on_stop
        self.interval = float(interval)
        self.name = name
        self.what = what
        self._reset()
        _SWEEPERS.add(self)

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid: int | None = None

    @property
    def running(self) -> bool:
        """True when this process has the sweeper's thread and it is alive."""
        thread = self._thread
        return thread is not None and self._pid == os.getpid() and thread.is_alive()

    def start(self) -> bool:
        """Start the thread unless it runs already; True when this call started it."""
        with self._lock:
            if self.running:
                return False
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._loop, args=(self._stop,),
                                            name=self.name, daemon=True)
            self._pid = os.getpid()
            self._thread.start()
        logger.info("%s started in process %d (every %s s)", self.what, self._pid,
                    self.interval)
        return True

    def stop(self, timeout: float | None = 10.0) -> bool:
        """Ask the thread to stop after its current pass and wait up to ``timeout`` seconds.

        :returns: True when no thread of this sweeper runs in this process any more.
        """
        with self._lock:
            thread, stop = self._thread, self._stop
            if thread is None or self._pid != os.getpid():
                return True
            stop.set()
        self._stopping()
        if thread is not threading.current_thread():
            thread.join(timeout)
            self._stopping()  # and what the pass that was running when asked left
        stopped = not thread.is_alive()
        if stopped:
            logger.info("%s stopped in process %d", self.what, os.getpid())
        return stopped

    def _stopping(self) -> None:
        if self._on_stop is None:
            return
        try:
            self._on_stop()
        except Exception:  # stopping goes on: the thread is asked to stop all the same
            logger.exception("%s: could not prepare to stop", self.what)

    def _loop(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self._run_pass()
            except SweeperDone:
                logger.info("%s of a discarded app stopped in process %d", self.what,
                            os.getpid())
                return
            except Exception:
                logger.exception("%s pass failed; the next pass runs in %s s", self.what,
                                 self.interval)
            stop.wait(self.interval)


class AppState:
    """What one app keeps in ``app.extensions["openadr"]``: its VTN, the services' context, how
    callers are identified, the signing key, and this process's background threads."""

    def __init__(self, vtn: VTN, context: Context, app: Flask,
                 signer: Signer | None = None) -> None:
        self.vtn = vtn
        self.context = context
        self.identifier = ClientIdentifier.from_settings(context.settings)
        # The VTN's signing key and certificate (security.signature.Signer), parsed once here,
        # or None when OPENADR_SIGNING_CERT/KEY are not set.
        self.signer = signer
        self._served = False
        self._maintenance = Maintenance(context, context.settings.sweep_interval)
        self._app = weakref.ref(app)
        # The thread holds this state weakly, so a running sweeper does not keep a discarded app
        # (and its store) alive: its next pass finds the app gone and stops.
        state = weakref.ref(self)

        def run_pass() -> None:
            alive = state()
            if alive is None:
                raise SweeperDone
            alive.sweep_once()

        self.sweeper = Sweeper(run_pass, context.settings.sweep_interval.total_seconds(),
                               name=f"flask-openadr-sweeper[{app.name}]")
        self.pusher = push.Pusher(context, signer, lambda: self._app_context())

        def run_push_pass() -> None:
            alive = state()
            if alive is None:
                raise SweeperDone
            alive.pusher.run_pass()

        def drop_push_queue() -> None:
            alive = state()
            if alive is not None:
                alive.pusher.drop_queue()

        # The push sender's own thread: a liveness pass must not delay a push, nor the reverse.
        self.push_sender = Sweeper(run_push_pass, push.PASS_INTERVAL,
                                   name=f"flask-openadr-push[{app.name}]", what="push sender",
                                   on_stop=drop_push_queue)
        _STATES.add(self)

    @property
    def served(self) -> bool:
        """Whether this app's VTN has handled a request in this process."""
        return self._served

    def sweep_once(self) -> int:
        """One :class:`Maintenance` pass in an application context, as the sweeper thread runs
        it; returns how many liveness transitions had their callback run."""
        with self._app_context():
            return len(self._maintenance.run())

    def _app_context(self) -> AppContext:
        app = self._app()
        if app is None:
            raise SweeperDone
        return app.app_context()

    def background_mode(self) -> str:
        """``OPENADR_BACKGROUND``, with the default decided now: "off" while the app is TESTING."""
        if self.context.settings.background is not None:
            return self.context.settings.background
        app = self._app()
        return "off" if app is None or app.testing else "thread"

    def start_background(self) -> bool:
        """Start this app's sweeper and push sender threads in this process unless
        OPENADR_BACKGROUND is off (or they run already); True when one was started now."""
        if self.background_mode() == "off":
            return False
        pushing = self.push_sender.start()
        return self.sweeper.start() or pushing

    def first_request(self, environ: dict[str, Any]) -> None:
        """Called by the view on every request; acts on this process's first."""
        if self._served:
            return
        self._served = True
        if environ.get("wsgi.multiprocess") and getattr(self.context.store, "single_process", False):
            logger.warning(
                "OPENADR_STORE_URI is memory:// under a multi-process server: every worker "
                "keeps its own VENs and events. Use sqlite:///... or a shared store."
            )
        # This process serves requests, so it sweeps. Never in init_app: that also runs in the
        # gunicorn master with --preload, in Werkzeug's reloader parent (which only watches files
        # and serves no request) and in CLI commands.
        try:
            self.start_background()
        except Exception:  # no thread is no reason to fail a VEN's message
            logger.exception("could not start the liveness sweeper; VENs are not reported "
                             "offline by this process")


def states() -> list[AppState]:
    """The app states of this process that are still alive."""
    return list(_STATES)


def has_served(vtn: VTN) -> bool:
    """Whether ``vtn`` has handled a request in this process, on any of its apps."""
    return any(state.served for state in states() if state.vtn is vtn)


def start_background() -> int:
    """Start the background threads of every VTN app of this process (unless its
    OPENADR_BACKGROUND is off), as a server hook does after fork; returns how many apps had a
    thread started now."""
    return sum(state.start_background() for state in states())


def stop_background(timeout: float | None = 10.0) -> None:
    """Stop every background thread of this process (sweepers and push senders, at exit, in
    gunicorn's ``worker_exit``), letting a pass in progress finish; each gets up to ``timeout``
    seconds."""
    for sweeper in list(_SWEEPERS):
        sweeper.stop(timeout)


# Daemon threads would die at exit anyway, but possibly inside a store transaction or a callback;
# stopping them first lets the current pass finish.
atexit.register(stop_background, 5.0)


def _after_fork_in_child() -> None:
    # The parent's threads do not exist in the child, and a lock held by one of them at the
    # moment of the fork would stay locked forever.
    for sweeper in list(_SWEEPERS):
        sweeper._reset()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
