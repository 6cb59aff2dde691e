"""The VTN extension object: init_app, handler decorators and the public API."""
from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, Callable, TypeVar

from flask import Flask, current_app

from . import signals
from .errors import UnknownEvent
from .config import load_settings, options_to_keys, resolve_store_uri
from .services import events, registration
from .services.context import Context, utcnow
from .store import open_store
from .store.base import VenRecord
from .views import create_blueprint

logger = logging.getLogger("flask_openadr")

F = TypeVar("F", bound=Callable[..., Any])

#: Handlers called in this release.
HANDLERS = (
    "on_query_registration",
    "on_create_party_registration",
    "on_cancel_party_registration",
    "on_poll",
    "on_request_event",
    "on_created_event",
)
#: Handler names reserved for the report, opt and liveness services of the next releases. They
#: can be registered now, but are not called yet.
LATER_HANDLERS = (
    "on_register_report",
    "on_update_report",
    "on_created_report",
    "on_canceled_report",
    "on_create_opt",
    "on_cancel_opt",
    "on_ven_online",
    "on_ven_offline",
)


class _AppState:
    """What one app keeps in ``app.extensions["openadr"]``."""

    def __init__(self, vtn: VTN, context: Context):
        self.vtn = vtn
        self.context = context
        self._seen_request = False

    def first_request(self, environ: dict[str, Any]) -> None:
        if self._seen_request:
            return
        self._seen_request = True
        self.vtn._started = True
        if environ.get("wsgi.multiprocess") and self.context.store.__class__.__name__ == "MemoryStore":
            logger.warning(
                "OPENADR_STORE_URI is memory:// under a multi-process server: every worker "
                "keeps its own VENs and events. Use sqlite:///... or a shared store."
            )


class VTN:
    """An OpenADR 2.0b VTN embedded in a Flask application.

    :param app: the application; or call :meth:`init_app` later (application factories).
    :param clock: a function returning the current aware UTC datetime; for tests.
    :param options: configuration keys without the ``OPENADR_`` prefix, in lower case
        (``vtn_id="MY-VTN"``, ``poll_frequency=30``); they win over ``app.config``.
    """

    def __init__(self, app: Flask | None = None, *, clock: Callable[[], datetime] | None = None,
                 **options: Any):
        self._options = options_to_keys(options)
        self._handlers: dict[str, Callable[..., Any]] = {}
        self._clock = clock or utcnow
        self._started = False
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Read the configuration, open the store and register the OpenADR blueprint."""
        if "openadr" in app.extensions:
            raise RuntimeError(
                "A VTN is already registered on this app; an app has exactly one VTN, "
                "so call init_app once per app."
            )
        settings = load_settings(app.config, self._options)
        store = open_store(resolve_store_uri(settings), instance_path=app.instance_path)

        def emit(signal_name: str, **data: Any) -> None:
            signals.BY_NAME[signal_name].send(app, **data)

        context = Context(settings=settings, store=store, handlers=self._handlers,
                          clock=self._clock, emit=emit)
        app.extensions["openadr"] = _AppState(self, context)
        app.register_blueprint(create_blueprint(settings.url_prefix))

    # -- handlers -------------------------------------------------------------------------

    def handler(self, name: str) -> Callable[[F], F]:
        """Register the function as the handler ``name``; the named decorators call this."""
        if name not in HANDLERS and name not in LATER_HANDLERS:
            raise ValueError(f"unknown handler name {name!r}; known names are "
                             f"{', '.join(HANDLERS + LATER_HANDLERS)}")

        def decorator(fn: F) -> F:
            if self._started:
                raise RuntimeError(
                    f"the handler {name} was registered after the VTN handled its first "
                    "request; register every handler before the application starts serving"
                )
            self._handlers[name] = fn
            return fn

        return decorator

    def on_query_registration(self, fn: F) -> F:
        """``fn(payload) -> None | dict``: see :doc:`handlers`."""
        return self.handler("on_query_registration")(fn)

    def on_create_party_registration(self, fn: F) -> F:
        """``fn(payload) -> registration_id | (ven_id, registration_id) | dict | None``."""
        return self.handler("on_create_party_registration")(fn)

    def on_cancel_party_registration(self, fn: F) -> F:
        """``fn(ven_id, payload) -> None``; raise :class:`~flask_openadr.Rejection` to refuse."""
        return self.handler("on_cancel_party_registration")(fn)

    def on_poll(self, fn: F) -> F:
        """``fn(ven_id) -> None | (payload_name, payload)``; None lets the outbox answer."""
        return self.handler("on_poll")(fn)

    def on_request_event(self, fn: F) -> F:
        """``fn(ven_id) -> None | list of event dicts``; None sends the built-in event set."""
        return self.handler("on_request_event")(fn)

    def on_created_event(self, fn: F) -> F:
        """``fn(payload) -> None``; the VEN's opt answers to events."""
        return self.handler("on_created_event")(fn)

    def on_register_report(self, fn: F) -> F:
        """Reserved for the report service of the next release; not called yet."""
        return self.handler("on_register_report")(fn)

    def on_update_report(self, fn: F) -> F:
        """Reserved for the report service of the next release; not called yet."""
        return self.handler("on_update_report")(fn)

    def on_created_report(self, fn: F) -> F:
        """Reserved for the report service of the next release; not called yet."""
        return self.handler("on_created_report")(fn)

    def on_canceled_report(self, fn: F) -> F:
        """Reserved for the report service of the next release; not called yet."""
        return self.handler("on_canceled_report")(fn)

    def on_create_opt(self, fn: F) -> F:
        """Reserved for the opt service of the next release; not called yet."""
        return self.handler("on_create_opt")(fn)

    def on_cancel_opt(self, fn: F) -> F:
        """Reserved for the opt service of the next release; not called yet."""
        return self.handler("on_cancel_opt")(fn)

    def on_ven_online(self, fn: F) -> F:
        """Reserved for VEN liveness in the next release; not called yet."""
        return self.handler("on_ven_online")(fn)

    def on_ven_offline(self, fn: F) -> F:
        """Reserved for VEN liveness in the next release; not called yet."""
        return self.handler("on_ven_offline")(fn)

    # -- public API ----------------------------------------------------------------------

    def _context(self) -> Context:
        try:
            app = current_app._get_current_object()  # type: ignore[attr-defined]
        except RuntimeError:
            raise RuntimeError(
                "VTN methods act on the current app: call them in a request or inside "
                "'with app.app_context():'"
            ) from None
        state = app.extensions.get("openadr")
        if state is None or state.vtn is not self:
            raise RuntimeError(
                "this VTN is not initialised on the current app; did you call vtn.init_app(app)?"
            )
        return state.context

    @property
    def store(self):
        """The current app's store (see :mod:`flask_openadr.store.base`)."""
        return self._context().store

    def add_event(self, ven_id: str | None = None, *, event: dict[str, Any] | None = None,
                  **fields: Any) -> str:
        """Add an event and return its eventID; it reaches the targeted VENs on their next poll.

        Either the convenience form (``ven_id`` or ``targets``, ``signal_name``,
        ``signal_type``, ``intervals`` and optional timing fields) or ``event=`` with a full
        event dict. See :doc:`events`.

        :raises flask_openadr.errors.EventError: the event breaks a conformance rule.
        """
        ctx = self._context()
        if event is not None:
            if ven_id is not None or fields:
                raise TypeError("add_event(event=...) takes no other arguments")
            stored = events.normalize_full_event(
                event, event_id_factory=ctx.new_id, default_market_context=ctx.settings.market_context
            )
        else:
            fields.setdefault("market_context", ctx.settings.market_context)
            fields.setdefault("event_id", ctx.new_id())
            stored = events.build_event(ven_id=ven_id, **fields)
        return events.add_event(ctx, stored)

    def modify_event(self, event_id: str, **changes: Any) -> dict[str, Any]:
        """Change an event: its modificationNumber goes up by one and it is redistributed."""
        return events.modify_event(self._context(), event_id, **changes)

    def cancel_event(self, event_id: str) -> dict[str, Any]:
        """Cancel an event; the cancellation is announced on each targeted VEN's next poll."""
        return events.cancel_event(self._context(), event_id)

    def events(self) -> list[dict[str, Any]]:
        """Every stored event, with ``event_descriptor["event_status"]`` as it is now."""
        ctx = self._context()
        return [_with_status(event, ctx.now()) for event in ctx.store.list_events()]

    def get_event(self, event_id: str) -> dict[str, Any]:
        """One stored event, with its ``event_status`` as it is now.

        :raises flask_openadr.errors.UnknownEvent: for an eventID the store does not hold.
        """
        ctx = self._context()
        event = ctx.store.get_event(event_id)
        if event is None:
            raise UnknownEvent(event_id)
        return _with_status(event, ctx.now())

    def event_responses(self, event_id: str) -> list[dict[str, Any]]:
        """The VENs' opt answers to an event: one per VEN and modification number."""
        return events.event_responses(self._context(), event_id)

    def cancel_registration(self, ven_id: str) -> None:
        """Ask the VEN to cancel its registration (oadrCancelPartyRegistration on its next poll).

        The registration ends when the VEN acknowledges with oadrCanceledPartyRegistration.
        """
        registration.request_cancel(self._context(), ven_id)

    def request_reregistration(self, ven_id: str) -> None:
        """Ask the VEN to register again (oadrRequestReregistration on its next poll)."""
        registration.request_reregistration(self._context(), ven_id)

    def update_ven(self, ven_id: str, *, group_ids: list[str] | None = None,
                   resource_ids: list[str] | None = None,
                   party_ids: list[str] | None = None) -> VenRecord:
        """Set which groups, resources and parties a VEN belongs to, for event targeting."""
        ctx = self._context()
        with ctx.store.atomic():
            ven = ctx.store.get_ven(ven_id)
            if ven is None:
                raise LookupError(f"VEN {ven_id!r} is not known to this VTN")
            for key, value in (("group_ids", group_ids), ("resource_ids", resource_ids),
                               ("party_ids", party_ids)):
                if value is not None:
                    if isinstance(value, str):
                        raise TypeError(f"{key} must be a list of strings, not the string {value!r}")
                    ven[key] = list(value)
            ctx.store.put_ven(ven)
        return ven

    def vens(self) -> list[VenRecord]:
        """Every VEN the VTN knows, registered or not."""
        return self._context().store.list_vens()


def _with_status(event: dict[str, Any], now: datetime) -> dict[str, Any]:
    descriptor = dict(event["event_descriptor"], event_status=events.event_status(event, now))
    return dict(event, event_descriptor=descriptor)
