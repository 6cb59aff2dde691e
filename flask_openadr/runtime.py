"""The thread and process lifecycle: each app's state, its background threads, and the functions
that start them in a serving process (after fork) and stop them.

Every app with a VTN keeps an :class:`AppState` in ``app.extensions["openadr"]``; this module
also remembers them (weakly), so that server hooks such as :mod:`flask_openadr.gunicorn` can
start the threads of apps that were loaded before the fork. The threads themselves are the
liveness sweeper (:class:`flask_openadr.liveness.Sweeper`) and the push sender
(:class:`flask_openadr.push.Pusher`); this module only decides when they run.

Internal: applications use :mod:`flask_openadr.gunicorn` or the first request, not this module.
"""
from __future__ import annotations

import logging
import time
import weakref
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from . import liveness, push
from .security.identity import ClientIdentifier
from .services import retention, vtn_reports
from .services.context import Context

if TYPE_CHECKING:
    from flask import Flask
    from flask.ctx import AppContext

    from .extension import VTN
    from .security.signature import Signer

__all__ = ["AppState", "Maintenance", "has_served", "start_background", "states",
           "stop_background"]

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
            pass then records that the VTN is watching, see :func:`flask_openadr.liveness.watch`);
            None for passes at unknown times."""
        self.context = context
        self.interval = interval
        self._retention_at: float | None = None

    def run(self) -> list[dict[str, Any]]:
        """One pass; returns the liveness transitions it ran the callback of (see
        :func:`flask_openadr.liveness.sweep_transitions`)."""
        ran = liveness.sweep_transitions(self.context, interval=self.interval)
        vtn_reports.send_due(self.context)
        now = time.monotonic()
        if self._retention_at is None or now - self._retention_at >= RETENTION_EVERY:
            # Less often than liveness: the pass reads every stored event.
            self._retention_at = now
            retention.sweep(self.context)
            # After the deletions, which are what makes SQLite's WAL grow. A backend from
            # before Store.maintain existed has none, and needs none.
            maintain = getattr(self.context.store, "maintain", None)
            if maintain is not None:
                maintain()
        return ran


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
                raise liveness.SweeperDone
            alive.sweep_once()

        self.sweeper = liveness.Sweeper(run_pass, context.settings.sweep_interval.total_seconds(),
                                        name=f"flask-openadr-sweeper[{app.name}]")
        self.pusher = push.Pusher(context, signer, lambda: self._app_context())

        def run_push_pass() -> None:
            alive = state()
            if alive is None:
                raise liveness.SweeperDone
            alive.pusher.run_pass()

        # The push sender's own thread: a liveness pass must not delay a push, nor the reverse.
        self.push_sender = liveness.Sweeper(run_push_pass, push.PASS_INTERVAL,
                                            name=f"flask-openadr-push[{app.name}]")
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
            raise liveness.SweeperDone
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


def stop_background(timeout: float = 10.0) -> None:
    """Stop every background thread of this process (sweepers and push senders), letting a
    pass in progress finish; each gets up to ``timeout`` seconds."""
    liveness.stop_all(timeout)
