"""The VTN extension object: init_app, handler decorators and the public API."""
from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any, Callable, Mapping, Sequence, TypeVar

from flask import Flask, current_app

from . import cli, codec, runtime, signals
from .config import load_settings, load_signer, options_to_keys, resolve_store_uri
from .services import (event_api, events, liveness, opt, registration, reports, retention,
                       vens, vtn_reports)
from .security.fingerprint import canonical_fingerprint
from .services.context import Context, utcnow
from .store import open_store
from .store.base import EventResponseRecord, Store, VenRecord
from .views import create_blueprint

logger = logging.getLogger("flask_openadr")

F = TypeVar("F", bound=Callable[..., Any])

#: The event statuses in which an event still asks something of its VENs.
OPEN_STATUSES = event_api.OPEN_STATUSES

#: Handlers called in this release.
HANDLERS = (
    "on_query_registration",
    "on_create_party_registration",
    "on_cancel_party_registration",
    "on_poll",
    "on_request_event",
    "on_created_event",
    "on_register_report",
    "on_created_report",
    "on_update_report",
    "on_canceled_report",
    "on_vtn_reports",
    "on_vtn_report_request",
    "on_vtn_report_cancel",
    "on_create_opt",
    "on_cancel_opt",
    "on_ven_online",
    "on_ven_offline",
)
#: Handler names reserved for later releases: they can be registered, but are not called yet.
LATER_HANDLERS: tuple[str, ...] = ()
LIVENESS_HANDLERS = ("on_ven_online", "on_ven_offline")

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
        if not settings.require_client_cert:
            logger.warning(
                "OPENADR_REQUIRE_CLIENT_CERT is off for app %r: a VEN without a client "
                "certificate is identified by the venID in its messages alone, which anyone who "
                "learns it can send. Turn it on wherever VENs connect over a network.", app.name,
            )
        signer = load_signer(settings)
        store = open_store(resolve_store_uri(settings), instance_path=app.instance_path)

        def emit(signal_name: str, **data: Any) -> None:
            signal = signals.BY_NAME[signal_name]
            # Most apps connect no receiver: blinker's send would find none, at a few us a
            # message (two sends per message).
            if signal.receivers:
                signal.send(app, **data)

        context = Context(settings=settings, store=store, handlers=self._handlers,
                          clock=self._clock, emit=emit, check_payload=_check_payload,
                          encode=codec.encode)
        app.extensions["openadr"] = runtime.AppState(self, context, app, signer)
        app.register_blueprint(create_blueprint(settings.url_prefix))
        if cli.openadr.name not in app.cli.commands:
            app.cli.add_command(cli.openadr)

    # -- handlers -------------------------------------------------------------------------

    def handler(self, name: str) -> Callable[[F], F]:
        """Register the function as the handler ``name``; the named decorators call this."""
        if name not in HANDLERS and name not in LATER_HANDLERS:
            raise ValueError(f"unknown handler name {name!r}; known names are "
                             f"{', '.join(HANDLERS + LATER_HANDLERS)}")

        def decorator(fn: F) -> F:
            if runtime.has_served(self):
                raise RuntimeError(
                    f"the handler {name} was registered after the VTN handled its first "
                    "request; register every handler before the application starts serving"
                )
            # A liveness handler's signature is checked once, here: it may take the epoch.
            self._handlers[name] = (liveness.LivenessHandler(fn, name)
                                    if name in LIVENESS_HANDLERS else fn)
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
        """``fn(ven_id, report) -> None | list of data points``: once per METADATA report a VEN
        registers; the data points returned are requested in oadrRegisteredReport. See
        :doc:`reports`."""
        return self.handler("on_register_report")(fn)

    def on_created_report(self, fn: F) -> F:
        """``fn(ven_id, created) -> None``: the VEN acknowledged report requests
        (oadrCreatedReport); ``created`` says which it accepted and refused."""
        return self.handler("on_created_report")(fn)

    def on_update_report(self, fn: F) -> F:
        """``fn(ven_id, report) -> None``: report data from a VEN (oadrUpdateReport), once per
        report, in the form described in :doc:`reports`."""
        return self.handler("on_update_report")(fn)

    def on_canceled_report(self, fn: F) -> F:
        """``fn(ven_id, canceled) -> None``: the VEN acknowledged a cancel (oadrCanceledReport)."""
        return self.handler("on_canceled_report")(fn)

    def on_vtn_reports(self, fn: F) -> F:
        """``fn(ven_id) -> None | list of METADATA report dicts``: the reports the VTN offers this
        VEN, asked whenever the VTN sends its oadrRegisterReport."""
        return self.handler("on_vtn_reports")(fn)

    def on_vtn_report_request(self, fn: F) -> F:
        """``fn(ven_id, request) -> None``: a VEN asks for a VTN report; raise
        :class:`~flask_openadr.Rejection` to refuse. Fill it with :meth:`send_report`."""
        return self.handler("on_vtn_report_request")(fn)

    def on_vtn_report_cancel(self, fn: F) -> F:
        """``fn(ven_id, cancel) -> None``: a VEN cancels requests for VTN reports."""
        return self.handler("on_vtn_report_cancel")(fn)

    def on_create_opt(self, fn: F) -> F:
        """``fn(payload) -> None``: a VEN's oadrCreateOpt (an availability schedule or an
        event-level opt), after the VTN's checks; raise :class:`~flask_openadr.Rejection` to
        refuse it. See :doc:`opt`."""
        return self.handler("on_create_opt")(fn)

    def on_cancel_opt(self, fn: F) -> F:
        """``fn(payload) -> None``: a VEN's oadrCancelOpt for one of its opts (``payload["opt"]``
        is the stored opt); raise :class:`~flask_openadr.Rejection` to refuse."""
        return self.handler("on_cancel_opt")(fn)

    def on_ven_online(self, fn: F) -> F:
        """``fn(ven_id)`` or ``fn(ven_id, epoch)``: a VEN that was offline (or not seen since it
        registered) sent a message. Called once per transition across all processes, at least
        once if a process dies in it: see :doc:`liveness`."""
        return self.handler("on_ven_online")(fn)

    def on_ven_offline(self, fn: F) -> F:
        """``fn(ven_id)`` or ``fn(ven_id, epoch)``: a VEN missed
        ``OPENADR_OFFLINE_AFTER_MISSED_POLLS`` poll intervals. Called by the sweep, once per
        transition across all processes, at least once if a process dies in it: see
        :doc:`liveness`."""
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
        state: runtime.AppState | None = app.extensions.get("openadr")
        if state is None or state.vtn is not self:
            raise RuntimeError(
                "this VTN is not initialised on the current app; did you call vtn.init_app(app)?"
            )
        return state.context

    @property
    def store(self) -> Store:
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
        return events.add_event(ctx, event_api.new_event(ctx, ven_id, event, fields))

    def modify_event(self, event_id: str, **changes: Any) -> dict[str, Any]:
        """Change an event: its modificationNumber goes up by one and it is redistributed."""
        return events.modify_event(self._context(), event_id, **changes)

    def cancel_event(self, event_id: str, *, response_required: str | None = None,
                     modification_reason: str | None = None) -> dict[str, Any]:
        """Cancel an event; the cancellation is announced on each targeted VEN's next poll.

        :param response_required: ``"always"`` or ``"never"``, changed in the same
            modificationNumber step as the cancellation; None keeps it.
        :param modification_reason: why, if the VENs should be told.
        :returns: the cancelled event, with ``event_status`` ``"cancelled"`` (as
            :meth:`get_event` gives it).
        """
        ctx = self._context()
        cancelled = events.cancel_event(ctx, event_id, response_required=response_required,
                                        modification_reason=modification_reason)
        return event_api.with_status(cancelled, ctx.now())

    def events(self) -> list[dict[str, Any]]:
        """Every stored event, with ``event_descriptor["event_status"]`` as it is now."""
        ctx = self._context()
        return [event_api.with_status(event, ctx.now()) for event in ctx.store.list_events()]

    def get_event(self, event_id: str) -> dict[str, Any]:
        """One stored event, with its ``event_status`` as it is now.

        :raises flask_openadr.errors.UnknownEvent: for an eventID the store does not hold.
        """
        ctx = self._context()
        return event_api.with_status(event_api.stored_event(ctx, event_id), ctx.now())

    def event_responses(self, event_id: str) -> list[EventResponseRecord]:
        """The VENs' opt answers to an event: one per VEN and modification number."""
        return events.event_responses(self._context(), event_id)

    def open_events_by_ven(self) -> dict[str, list[str]]:
        """For every VEN the VTN knows, the eventIDs of its open events (far, near or active
        now): one read of the VENs and one of the events, for fleet screens."""
        return event_api.open_events_by_ven(self._context())

    def event_answers(self, event_id: str) -> dict[str, dict[str, Any] | None]:
        """Who has answered an event, for counting optIn / optOut / no answer yet.

        :returns: venID -> the VEN's latest answer (the record of :meth:`event_responses` with the
            highest modification number), or None for a registered VEN the event is aimed at that
            has not answered yet. VENs that answered an earlier version but are no longer
            targeted keep their answer.
        :raises flask_openadr.errors.UnknownEvent: for an eventID the store does not hold.
        """
        ctx = self._context()
        return event_api.answers(ctx, event_api.stored_event(ctx, event_id),
                                 ctx.store.list_vens())

    def answers_by_event(self) -> dict[str, dict[str, dict[str, Any] | None]]:
        """:meth:`event_answers` of every stored event, reading the VENs once: for screens that
        list all events."""
        return event_api.answers_by_event(self._context())

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
                   party_ids: list[str] | None = None,
                   group_names: list[str] | None = None,
                   fingerprint: str | None = None) -> VenRecord:
        """Set which groups (by ID or name), resources and parties a VEN belongs to, for event
        targeting; or bind it to a new client certificate.

        :param fingerprint: the fingerprint of the VEN's new certificate (when its certificate
            is renewed): from now on only that certificate may act for the VEN.
        :raises LookupError: the VEN is not known.
        :raises ValueError: the fingerprint is malformed or belongs to another VEN.
        """
        if fingerprint is not None:
            fingerprint = canonical_fingerprint(fingerprint)
        return vens.update(self._context(), ven_id, group_ids=group_ids,
                           resource_ids=resource_ids, party_ids=party_ids,
                           group_names=group_names, fingerprint=fingerprint)

    def add_ven(self, ven_id: str | None = None, *, fingerprint: str,
                ven_name: str | None = None, group_ids: list[str] | None = None,
                resource_ids: list[str] | None = None,
                party_ids: list[str] | None = None) -> VenRecord:
        """Enroll a VEN before it first connects: its venID bound to its certificate.

        The VEN's first oadrCreatePartyRegistration from that certificate gets this venID
        (whether or not it sends it); the same venID from any other certificate is refused
        with 463. See :doc:`security` for the provisioning recipe.

        :param ven_id: the venID to give it; its fingerprint (in the form below) if None.
        :param fingerprint: the OpenADR fingerprint of the VEN's client certificate
            (``flask openadr fingerprint CERT.pem`` prints it); case and colons do not matter.
        :param ven_name: the name to show until the VEN registers with its own.
        :param group_ids: groups, resources and parties for event targeting, as in
            :meth:`update_ven`.
        :returns: the new, not yet registered VEN record.
        :raises ValueError: the fingerprint is malformed, or the venID or the fingerprint is
            already known to the VTN.
        """
        fingerprint = canonical_fingerprint(fingerprint)
        return vens.enroll(self._context(), fingerprint if ven_id is None else ven_id,
                           fingerprint, ven_name=ven_name, group_ids=group_ids,
                           resource_ids=resource_ids, party_ids=party_ids)

    def vens(self) -> list[dict[str, Any]]:
        """Every VEN the VTN knows, registered or not, with its liveness as it is now:

        - ``liveness``: "online", "offline", "stale" (the store still says online but its
          deadline passed and no sweep has recorded it: offline in fact), or None (not seen since
          it registered); see :func:`flask_openadr.services.liveness.presence`;
        - ``online``: True only for "online", False for "offline" and "stale", None when not seen;
        - ``last_seen``: aware UTC datetime or None;
        - ``offline_at``: when it counts as offline if it sends nothing more (or None); after an
          outage of the VTN, no earlier than one deadline after the VTN came back (see
          :func:`flask_openadr.services.liveness.offline_deadline`);
        - ``epoch``: the number of its last liveness transition, or None;
        - ``cancel_requested``: True while the VTN waits for the VEN to answer the
          cancellation :meth:`cancel_registration` asked for.

        .. versionchanged:: 0.1
           ``online`` is derived from the deadline; ``liveness`` and ``offline_at`` added.
        """
        return vens.listing(self._context())

    def events_for_ven(self, ven_id: str) -> list[dict[str, Any]]:
        """The stored events aimed at one VEN (by venID, group, resource or party, or at every
        VEN), each with its ``event_status`` as it is now, in start order.

        :raises LookupError: for a venID the VTN does not know.
        """
        return event_api.events_for_ven(self._context(), ven_id)

    def sweep(self, interval: timedelta | float | None = None) -> int:
        """Run one liveness pass now (for tests, or a cron job with ``OPENADR_BACKGROUND = "off"``):
        take offline the VENs that missed their polls and re-run callbacks whose lease ended.

        :param interval: when you call this on a schedule (a cron job), its period (a
            ``timedelta`` or seconds). The pass then records that the VTN is watching, so that
            a longer gap between two passes counts as an outage and no VEN is declared offline
            for the silence it caused (see :doc:`liveness`, "Outages"). Without it the pass
            uses the outages the scheduled passes recorded, and records none.
        :returns: how many transitions had their callback run.

        .. versionchanged:: 0.1
           ``interval`` added.
        """
        if interval is not None and not isinstance(interval, timedelta):
            interval = timedelta(seconds=interval)
        return liveness.sweep(self._context(), interval=interval)

    def remove_expired_events(self) -> int:
        """Remove now, in one batch, the completed and cancelled events (and their responses)
        whose :data:`OPENADR_EVENT_RETENTION` has passed, and the report requests that waited
        that long in ``final_report`` for a last report; the sweeper does it once a minute.
        See :doc:`events`.

        :returns: how many events and report requests were removed.
        """
        return retention.sweep(self._context())

    # -- reports and opts (see docs/reports.rst and docs/opt.rst) --------------------------

    def request_report(self, ven_id: str, report_specifier_id: str,
                       r_ids: Sequence[str | Mapping[str, Any]], *,
                       granularity: timedelta | None = None,
                       report_back_duration: timedelta | None = None,
                       report_interval: dict[str, Any] | None = None) -> str:
        """Ask a VEN for data points of a report it registered: one oadrReportRequest, sent in
        oadrCreateReport on the VEN's next poll.

        :param r_ids: rIDs of the report, or data point dicts (``r_id`` with the same
            ``granularity`` and ``report_back_duration`` as the others).
        :param granularity: sampling interval; 0 for "as registered", else within each rID's
            oadrMinPeriod and oadrMaxPeriod.
        :param report_back_duration: how often the VEN reports; 0 for a single report.
        :param report_interval: ``{"dtstart", "duration"}``, the window to report on. A periodic
            request without one gets ``{"dtstart": now, "duration": 0}`` (open-ended).
        :returns: the reportRequestID its data will carry.
        :raises LookupError: the VEN is not registered or did not register that report.
        :raises ValueError: an rID it does not offer, or a granularity outside its sampling rate.
        """
        return reports.request_report(self._context(), ven_id, report_specifier_id, r_ids,
                                      granularity=granularity,
                                      report_back_duration=report_back_duration,
                                      report_interval=report_interval)

    def request_named_report(self, ven_id: str, report_name: str = "TELEMETRY_USAGE", *,
                             report_back_duration: timedelta = timedelta(0)) -> str:
        """Ask a VEN for every data point of the report it registered under ``report_name``,
        at the finest granularity all of them allow: what an operator's "request report" button
        does. One report by default; give ``report_back_duration`` for periodic reports.

        :returns: the reportRequestID its data will carry.
        :raises LookupError: the VEN is not registered or registered no such report.
        """
        return reports.request_named_report(self._context(), ven_id, report_name,
                                            report_back_duration=report_back_duration)

    def republish_metadata(self, ven_id: str | None = None) -> list[str]:
        """Send the VTN's METADATA oadrRegisterReport again (as ``on_vtn_reports`` offers it
        now) on the next poll of one VEN, or of every registered VEN when ``ven_id`` is None.

        :returns: the venIDs it was queued for.
        :raises LookupError: ``ven_id`` has no active registration.
        """
        return vtn_reports.republish_metadata(self._context(), ven_id)

    def send_due_reports(self) -> int:
        """Queue now the periodic VTN reports that are due (a VEN's METADATA request with a
        reportBackDuration); the sweeper does it on every pass. For tests, or a cron job with
        ``OPENADR_BACKGROUND = "off"``.

        :returns: how many reports were queued.
        """
        return vtn_reports.send_due(self._context())

    def request_metadata(self, ven_id: str) -> str:
        """Ask a VEN to register its reports again (oadrCreateReport for METADATA on its next
        poll); returns the reportRequestID its oadrRegisterReport will echo."""
        return reports.request_metadata(self._context(), ven_id)

    def cancel_report(self, ven_id: str, report_request_id: str,
                      report_to_follow: bool = False) -> str:
        """Cancel a report request: oadrCancelReport on the VEN's next poll, also piggy-backed on
        the reply to any data the VEN sends for it before it acknowledges. Returns the
        requestID of the cancel. See :doc:`reports` for when the request ends."""
        return reports.cancel_report(self._context(), ven_id, report_request_id,
                                     report_to_follow)

    def ven_reports(self, ven_id: str) -> list[dict[str, Any]]:
        """The METADATA reports the VEN registered last (its capabilities)."""
        return self._context().store.list_records(reports.VEN_REPORT, ven_id)

    def report_requests(self, ven_id: str) -> list[dict[str, Any]]:
        """The VTN's requests for the VEN's reports, with their ``state``."""
        return self._context().store.list_records(reports.REPORT_REQUEST, ven_id)

    def vtn_report_requests(self, ven_id: str) -> list[dict[str, Any]]:
        """The VEN's requests for VTN reports (to fill with :meth:`send_report`)."""
        return self._context().store.list_records(vtn_reports.VTN_REPORT_REQUEST, ven_id)

    def send_report(self, ven_id: str, report_request_id: str, intervals: list[dict[str, Any]],
                    *, dtstart: datetime | None = None) -> str:
        """Send VTN report data for one of the VEN's requests (oadrUpdateReport on its next
        poll); ``intervals`` take the form ``on_update_report`` receives. Returns the message's
        requestID, which the VEN's oadrUpdatedReport echoes.

        :raises LookupError: the VEN has no such request.
        :raises ValueError: an rID it did not request, or a value that does not fit.
        """
        return vtn_reports.send_report(self._context(), ven_id, report_request_id, intervals,
                                       dtstart)

    def opts(self, ven_id: str) -> list[dict[str, Any]]:
        """The VEN's opts (availability schedules and event-level opts), by optID."""
        return self._context().store.list_records(opt.OPT, ven_id)

    def opted_out(self, ven_id: str, start: datetime, end: datetime, *,
                  market_context: str | None = None,
                  event_id: str | None = None) -> list[dict[str, Any]]:
        """The VEN's optOut opts that concern ``[start, end)``: schedules with an overlapping
        window (for ``market_context`` or for every program) and, with ``event_id``, its
        event-level optOuts of that event. An empty list (falsy) when it has not opted out."""
        return opt.opted_out(self._context(), ven_id, start, end, market_context=market_context,
                             event_id=event_id)


def _check_payload(payload_name: str, payload: dict[str, Any]) -> None:
    """Raise ValueError now, naming the field, for a payload that could not be sent later."""
    codec.encode(payload_name, payload)
