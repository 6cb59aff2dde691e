"""The ``flask openadr`` command group: what an operator does from the shell.

init-db, monitor, vens, events, fingerprint; ``event add|modify|cancel``,
``ven cancel|reregister`` and ``report request``. Every command goes through the VTN's public API.
"""
from __future__ import annotations

import os
import time
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Protocol, Sequence

import click
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from flask import current_app
from flask.cli import AppGroup

from . import push, runtime
from .config import resolve_store_uri
from .errors import EventError, UnknownEvent
from .protocol import is_aware
from .security.fingerprint import fingerprint_from_der, fingerprint_from_pem
from .store import redact

if TYPE_CHECKING:  # the extension imports this module to register the commands
    from .extension import VTN
    from .services.context import Context

#: The longest --duration accepted (about 19 years): longer ones overflow date arithmetic.
MAX_MINUTES = 10_000_000

openadr = AppGroup("openadr", help="Manage the OpenADR VTN of this application.")


class AppState(Protocol):
    """What the commands use of the VTN's per-app state (``app.extensions["openadr"]``)."""

    @property
    def vtn(self) -> VTN: ...
    @property
    def context(self) -> Context: ...
    @property
    def pusher(self) -> push.Pusher: ...


def _state() -> AppState:
    state: AppState | None = current_app.extensions.get("openadr")
    if state is None:
        raise click.ClickException(
            f"the app {current_app.name!r} has no VTN; did you call vtn.init_app(app)?"
        )
    return state


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    lines = [header, *rows]
    return "\n".join(
        "  ".join(str(cell).ljust(width) for cell, width in zip(line, widths)).rstrip()
        for line in lines
    )


def _when(value: datetime | None) -> str:
    return "-" if value is None else value.isoformat(timespec="seconds")


def _minutes(value: timedelta) -> str:
    minutes = value.total_seconds() / 60
    return f"{minutes:g} min"


def store_location(state: AppState) -> str:
    """Where the store keeps its data: the absolute file of a SQLite store, else the URI
    (password hidden)."""
    path = getattr(state.context.store, "path", None)
    if isinstance(path, str):
        return os.path.abspath(path)
    return redact(resolve_store_uri(state.context.settings))


@openadr.command("init-db")
def init_db() -> None:
    """Create the store's tables and indexes (idempotent)."""
    state = _state()
    state.context.store.create_schema()
    click.echo(f"created the schema of the store at {store_location(state)}")


def _describe(transition: dict[str, Any], names: dict[str, str]) -> str:
    ven_id = transition["ven_id"]
    name = names.get(ven_id)
    who = f"VEN {ven_id}" + (f" ({name})" if name else "")
    text = f"{who} went {transition['kind']} (epoch {transition['epoch']})"
    if transition["rerun"]:
        text += ", callback re-run after its lease ended"
    if not transition["completed"]:
        text += "; its callback raised and runs again after the lease"
    return text


@openadr.command("monitor")
@click.option("--once", is_flag=True, help="Run one pass and exit (for cron or tests).")
@click.option("--interval", type=click.FloatRange(min=0.1), default=None,
              help="Seconds between passes; OPENADR_SWEEP_INTERVAL by default. With --once, "
                   "the cron period, so that a longer gap counts as an outage of the VTN.")
def monitor(once: bool, interval: float | None) -> None:
    """Run the liveness sweep in the foreground until Ctrl-C, naming each VEN that goes offline
    (with the periodic VTN reports that are due, and, once a minute, the event retention
    sweep).

    For deployments with OPENADR_BACKGROUND = "off", where no worker runs the sweeper thread.
    Running it beside sweeping workers is harmless: each transition is still decided once.
    """
    state = _state()
    ctx = state.context
    # A looping monitor knows its schedule, so its passes record that the VTN is watching. A
    # --once pass knows its cron period only from --interval; without it, it records nothing
    # (a period it never promised would look like an outage at every run).
    scheduled = not once or interval is not None
    if interval is None:
        interval = ctx.settings.sweep_interval.total_seconds()
    maintenance = runtime.Maintenance(ctx, timedelta(seconds=interval) if scheduled else None)
    try:
        while True:
            try:
                ran = maintenance.run()
            except Exception as exc:  # a pass that failed (store down): report it, keep going
                if once:
                    raise
                click.echo(f"sweep failed: {exc!r}; retrying in {interval:g} s", err=True)
            else:
                if ran or once:
                    names = {ven["ven_id"]: ven.get("ven_name") or ""
                             for ven in state.vtn.vens()} if ran else {}
                    stamp = _when(ctx.now())
                    for transition in ran:
                        click.echo(f"{stamp}: {_describe(transition, names)}")
                    click.echo(f"{stamp}: {len(ran)} transition(s)")
            if once:
                return
            time.sleep(interval)
    except KeyboardInterrupt:
        click.echo("stopped")


@openadr.command("push")
@click.option("--once", is_flag=True,
              help="Push what is due now, wait for those pushes to end, and exit.")
def push_command(once: bool) -> None:
    """Run the HTTP push sender in the foreground until Ctrl-C.

    For deployments with OPENADR_BACKGROUND = "off", where no worker runs the sender thread.
    Running it beside sending workers is harmless: a lease in the store lets one sender at a
    time push to each VEN.
    """
    state = _state()
    try:
        while True:
            try:
                started = state.pusher.run_pass()
            except Exception as exc:  # a pass that failed (store down): report it, keep going
                if once:
                    raise
                click.echo(f"push pass failed: {exc!r}; retrying", err=True)
            else:
                if once:
                    state.pusher.wait_idle()
                    click.echo(f"{_when(state.context.now())}: pushed to {started} VEN(s)")
                    return
            time.sleep(push.PASS_INTERVAL)
    except KeyboardInterrupt:
        click.echo("stopped")


@openadr.command("vens")
def vens() -> None:
    """List the VENs with their registration and liveness now.

    STATE is derived from each VEN's deadline: "stale" means the store still holds it online but
    its deadline (OFFLINE AT) has passed and no sweep has recorded it (is a sweeper running?).
    """
    state = _state()
    rows = []
    for ven in state.vtn.vens():
        rows.append((ven["ven_id"], ven.get("ven_name") or "-",
                     ven.get("registration_id") or "(not registered)",
                     ven["liveness"] or "never-seen", _when(ven["last_seen"]),
                     _when(ven["offline_at"])))
    if not rows:
        click.echo("no VENs")
        return
    click.echo(_table(("VEN ID", "NAME", "REGISTRATION", "STATE", "LAST SEEN", "OFFLINE AT"),
                      rows))


def _targets(event: dict[str, Any]) -> str:
    parts = []
    for key, values in sorted((event.get("target") or {}).items()):
        if values:
            values = values if isinstance(values, list) else [values]
            parts.append(f"{key}={','.join(str(v) for v in values)}")
    return " ".join(parts) or "every VEN"


def answer_counts(answers: dict[str, Any]) -> dict[str, int]:
    """optIn / optOut / none (no answer yet) counts from :meth:`VTN.event_answers`."""
    counts = {"optIn": 0, "optOut": 0, "none": 0}
    for answer in answers.values():
        counts["none" if answer is None else answer["opt_type"]] += 1
    return counts


def _levels(event: dict[str, Any]) -> str:
    signal = event["event_signals"][0]
    levels = [f"{interval['signal_payload']:g}" for interval in signal["intervals"]]
    return ",".join(levels)


@openadr.command("events")
def events() -> None:
    """List the events: status now, start, duration, signal, level(s), modification number,
    targets and the VENs' answers (optIn / optOut / no answer yet)."""
    state = _state()
    listed = sorted(state.vtn.events(), key=lambda e: e["active_period"]["dtstart"])
    if not listed:
        click.echo("no events")
        return
    answers = state.vtn.answers_by_event()
    rows = []
    for event in listed:
        descriptor = event["event_descriptor"]
        signal = event["event_signals"][0]
        counts = answer_counts(answers.get(descriptor["event_id"], {}))
        rows.append((descriptor["event_id"], descriptor["event_status"],
                     _when(event["active_period"]["dtstart"]),
                     _minutes(event["active_period"]["duration"]).replace(" ", ""),
                     f"{signal['signal_name']}/{signal['signal_type']}", _levels(event),
                     str(descriptor["modification_number"]), _targets(event),
                     str(counts["optIn"]), str(counts["optOut"]), str(counts["none"])))
    click.echo(_table(("EVENT ID", "STATUS", "START", "DURATION", "SIGNAL", "LEVEL", "MOD",
                       "TARGETS", "OPTIN", "OPTOUT", "NO-ANSWER"), rows))


# -- operator actions -----------------------------------------------------------------------


if TYPE_CHECKING:  # click.ParamType is generic only in newer clicks
    _StartParam = click.ParamType[datetime | timedelta]
else:
    _StartParam = click.ParamType


class StartTime(_StartParam):
    """An ISO 8601 date-time with a time zone, or ``now``/``+15m``/``+2h`` from now."""

    name = "start"

    def convert(self, value: object, param: click.Parameter | None,
                ctx: click.Context | None) -> datetime | timedelta:
        # A relative start stays a timedelta here: parameters are converted before the command
        # has an app context, so before the VTN's clock can be read (see _start).
        if isinstance(value, (datetime, timedelta)):
            return value
        text = str(value).strip()
        if text == "now":
            return timedelta(0)
        if text.startswith("+") and text[-1:] in ("m", "h") and text[1:-1].isdigit():
            amount = int(text[1:-1])
            return timedelta(minutes=amount) if text[-1] == "m" else timedelta(hours=amount)
        try:
            start = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            self.fail(f"{text!r} is not an ISO 8601 date-time; give e.g. 2026-12-01T17:00:00Z, "
                      "now or +15m", param, ctx)
        if not is_aware(start):
            self.fail(f"{text!r} has no time zone; add Z or an offset such as +01:00", param, ctx)
        try:
            return start.astimezone(timezone.utc)
        except OverflowError:
            self.fail(f"{text!r} is out of range", param, ctx)


def _start(value: datetime | timedelta) -> datetime:
    """A --start as a date-time: one relative to now is read from the VTN's clock."""
    if isinstance(value, timedelta):
        return _state().context.now() + value
    return value


def _known_ven(ven_id: str) -> dict[str, Any]:
    for ven in _state().vtn.vens():
        if ven["ven_id"] == ven_id:
            return ven
    raise click.BadParameter(f"no VEN has venID {ven_id!r}; see 'flask openadr vens'",
                             param_hint="VEN_ID / --ven")


def _check_group(group: str, any_group: bool) -> None:
    if any_group:
        return
    if not any(group in (ven.get("group_ids") or []) for ven in _state().vtn.vens()):
        raise click.BadParameter(
            f"no VEN is in group {group!r}; check the name, or pass --any-group to target it "
            "before its VENs register", param_hint="--group")


@openadr.group("event")
def event_group() -> None:
    """Add, modify or cancel an event."""


@event_group.command("add")
@click.option("--ven", "ven_id", help="The venID to target.")
@click.option("--group", "group_id", help="The group to target (every VEN in it).")
@click.option("--any-group", is_flag=True, help="Allow a group no VEN is in yet.")
@click.option("--start", type=StartTime(), required=True,
              help="ISO 8601 with a time zone, or now, +15m, +2h.")
@click.option("--duration", type=click.FloatRange(min=0, min_open=True, max=MAX_MINUTES), required=True,
              help="Minutes.")
@click.option("--level", type=float, required=True, help="The signal payload, e.g. 1 for SIMPLE.")
@click.option("--signal-name", default="SIMPLE", show_default=True)
@click.option("--signal-type", default="level", show_default=True)
@click.option("--market-context", default=None, help="OPENADR_MARKET_CONTEXT by default.")
def event_add(ven_id: str | None, group_id: str | None, any_group: bool,
              start: datetime | timedelta, duration: float, level: float, signal_name: str,
              signal_type: str, market_context: str | None) -> None:
    """Add a one-interval event for a VEN or a group; prints its eventID."""
    state = _state()
    start = _start(start)
    options: dict[str, Any] = {}
    if ven_id is not None and group_id is None:
        _known_ven(ven_id)
        options["ven_id"] = ven_id
    elif group_id is not None and ven_id is None:
        _check_group(group_id, any_group)
        options["targets"] = {"group_ids": [group_id]}
    else:
        raise click.UsageError("give exactly one of --ven and --group")
    if market_context:
        options["market_context"] = market_context
    length = timedelta(minutes=duration)
    if start <= state.context.now() - length:
        raise click.BadParameter(f"an event from {_when(start)} for {duration:g} min has already "
                                 "ended; give a later start", param_hint="--start")
    try:
        event_id = state.vtn.add_event(
            signal_name=signal_name, signal_type=signal_type,
            intervals=[{"dtstart": start, "duration": length, "signal_payload": level}],
            **options)
    except EventError as exc:
        raise click.ClickException(str(exc)) from None
    except OverflowError:
        raise click.BadParameter(f"{_when(start)} plus {duration:g} min ends after the year "
                                 "9999", param_hint="--start") from None
    click.echo(event_id)


@event_group.command("modify")
@click.argument("event_id")
@click.option("--start", type=StartTime(), default=None, help="A new start.")
@click.option("--duration", type=click.FloatRange(min=0, min_open=True, max=MAX_MINUTES), default=None,
              help="A new duration in minutes.")
@click.option("--level", type=float, default=None, help="A new level.")
def event_modify(event_id: str, start: datetime | timedelta | None, duration: float | None,
                 level: float | None) -> None:
    """Change the start, duration or level of a one-interval event (its modificationNumber goes
    up by one and the VENs get it again)."""
    state = _state()
    event = _get_event(event_id)
    start = None if start is None else _start(start)
    intervals = event["event_signals"][0]["intervals"]
    if len(intervals) != 1:
        raise click.ClickException(f"event {event_id!r} has {len(intervals)} intervals; this "
                                   "command changes one-interval events only (use the API)")
    if start is None and duration is None and level is None:
        raise click.UsageError("give at least one of --start, --duration and --level")
    dtstart: datetime = start or event["active_period"]["dtstart"]
    length: timedelta = (timedelta(minutes=duration) if duration is not None
                         else event["active_period"]["duration"])
    new = {"dtstart": dtstart, "duration": length,
           "signal_payload": level if level is not None else intervals[0]["signal_payload"]}
    try:
        updated = state.vtn.modify_event(event_id, intervals=[new])
    except EventError as exc:
        raise click.ClickException(str(exc)) from None
    except OverflowError:
        raise click.BadParameter(f"{_when(dtstart)} plus {length} ends after "
                                 "the year 9999", param_hint="--start") from None
    click.echo(f"event {event_id} is now modification "
               f"{updated['event_descriptor']['modification_number']}")


@event_group.command("cancel")
@click.argument("event_id")
def event_cancel(event_id: str) -> None:
    """Cancel an event; the VENs it targets are told on their next poll."""
    state = _state()
    _get_event(event_id)
    try:
        cancelled = state.vtn.cancel_event(event_id)
    except EventError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"event {event_id} cancelled (modification "
               f"{cancelled['event_descriptor']['modification_number']})")


def _get_event(event_id: str) -> dict[str, Any]:
    try:
        return _state().vtn.get_event(event_id)
    except UnknownEvent:
        raise click.BadParameter(f"no event has eventID {event_id!r}; see 'flask openadr "
                                 "events'", param_hint="EVENT_ID") from None


@openadr.group("ven")
def ven_group() -> None:
    """Ask a VEN to cancel its registration or to register again."""


@ven_group.command("cancel")
@click.argument("ven_id")
def ven_cancel(ven_id: str) -> None:
    """Send the VEN oadrCancelPartyRegistration on its next poll."""
    _known_ven(ven_id)
    try:
        _state().vtn.cancel_registration(ven_id)
    except (LookupError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"VEN {ven_id} is asked to cancel its registration on its next poll")


@ven_group.command("reregister")
@click.argument("ven_id")
def ven_reregister(ven_id: str) -> None:
    """Send the VEN oadrRequestReregistration on its next poll."""
    _known_ven(ven_id)
    try:
        _state().vtn.request_reregistration(ven_id)
    except (LookupError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"VEN {ven_id} is asked to register again on its next poll")


@openadr.group("report")
def report_group() -> None:
    """Ask a VEN for report data."""


@report_group.command("request")
@click.argument("ven_id")
@click.option("--report-name", default="TELEMETRY_USAGE", show_default=True,
              help="The name of the report the VEN registered.")
@click.option("--report-back", type=click.FloatRange(min=0), default=0, show_default=True,
              help="Seconds between reports; 0 for one report.")
def report_request(ven_id: str, report_name: str, report_back: float) -> None:
    """Request every data point of a report the VEN registered (its telemetry by default);
    prints the reportRequestID its data will carry."""
    state = _state()
    _known_ven(ven_id)
    try:
        request_id = state.vtn.request_named_report(
            ven_id, report_name, report_back_duration=timedelta(seconds=report_back))
    except (LookupError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(request_id)


@openadr.command("fingerprint", with_appcontext=False)
@click.argument("cert", required=False,
                type=click.Path(exists=True, dir_okay=False, allow_dash=True))
def fingerprint(cert: str | None) -> None:
    """Print the OpenADR fingerprint of the certificate CERT (PEM, or DER).

    CERT "-", or no CERT with a pipe on standard input, reads a PEM certificate from standard
    input: ``openssl s_client ... | flask openadr fingerprint``.
    """
    if cert is None:
        if click.get_text_stream("stdin").isatty():
            raise click.UsageError("give a certificate file, or pipe a PEM certificate in "
                                   "(CERT '-' reads standard input)")
        cert = "-"
    if cert == "-":
        name, data = "standard input", click.get_binary_stream("stdin").read()
    else:
        with open(cert, "rb") as fh:
            name, data = cert, fh.read()
    try:
        if b"-----BEGIN" in data:
            click.echo(fingerprint_from_pem(data))
        else:
            # Validate before hashing: any bytes have a SHA-256, not only certificates.
            click.echo(fingerprint_from_der(
                x509.load_der_x509_certificate(data).public_bytes(Encoding.DER)))
    except ValueError as exc:
        raise click.ClickException(f"{name} holds no PEM or DER certificate: {exc}") from None


__all__ = ["openadr"]
