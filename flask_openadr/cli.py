"""The ``flask openadr`` command group: init-db, monitor, vens, events, fingerprint."""
from __future__ import annotations

import time
from datetime import datetime
from typing import Any, Sequence

import click
from flask import current_app
from flask.cli import AppGroup

from . import liveness
from .services import retention

#: Seconds between two retention passes of ``flask openadr monitor``.
RETENTION_EVERY = 60.0
from .security.fingerprint import fingerprint_from_pem

openadr = AppGroup("openadr", help="Manage the OpenADR VTN of this application.")


def _state() -> Any:
    state = current_app.extensions.get("openadr")
    if state is None:
        raise click.ClickException(
            f"the app {current_app.name!r} has no VTN; did you call vtn.init_app(app)?"
        )
    return state


def _table(header: Sequence[str], rows: list[Sequence[str]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    lines = [header, *rows]
    return "\n".join(
        "  ".join(str(cell).ljust(width) for cell, width in zip(line, widths)).rstrip()
        for line in lines
    )


def _when(value: datetime | None) -> str:
    return "-" if value is None else value.isoformat(timespec="seconds")


@openadr.command("init-db")
def init_db() -> None:
    """Create the store's tables and indexes (idempotent)."""
    state = _state()
    state.context.store.create_schema()
    click.echo(f"created the schema of {state.context.store!r}")


@openadr.command("monitor")
@click.option("--once", is_flag=True, help="Run one pass and exit (for cron or tests).")
@click.option("--interval", type=click.FloatRange(min=0.1), default=None,
              help="Seconds between passes; OPENADR_SWEEP_INTERVAL by default.")
def monitor(once: bool, interval: float | None) -> None:
    """Run the liveness sweep (and, once a minute, the event retention sweep) in the
    foreground until Ctrl-C.

    For deployments with OPENADR_BACKGROUND = "off", where no worker runs the sweeper thread.
    Running it beside sweeping workers is harmless: each transition is still decided once.
    """
    state = _state()
    ctx = state.context
    if interval is None:
        interval = ctx.settings.sweep_interval.total_seconds()
    retained_at = None
    try:
        while True:
            try:
                ran = liveness.sweep(ctx)
                if retained_at is None or time.monotonic() - retained_at >= RETENTION_EVERY:
                    retained_at = time.monotonic()
                    retention.sweep(ctx)
            except Exception as exc:  # a pass that failed (store down): report it, keep going
                if once:
                    raise
                click.echo(f"sweep failed: {exc!r}; retrying in {interval:g} s", err=True)
            else:
                if ran or once:
                    click.echo(f"{_when(ctx.now())}: {ran} transition(s)")
            if once:
                return
            time.sleep(interval)
    except KeyboardInterrupt:
        click.echo("stopped")


@openadr.command("vens")
def vens() -> None:
    """List the VENs with their registration and liveness."""
    state = _state()
    listed = state.vtn.vens()
    rows = []
    for ven in listed:
        online = {True: "online", False: "offline", None: "-"}[ven["online"]]
        rows.append((ven["ven_id"], ven.get("ven_name") or "-",
                     ven.get("registration_id") or "(not registered)", online,
                     _when(ven["last_seen"])))
    if not rows:
        click.echo("no VENs")
        return
    click.echo(_table(("VEN ID", "NAME", "REGISTRATION", "STATE", "LAST SEEN"), rows))


def _targets(event: dict[str, Any]) -> str:
    parts = []
    for key, values in sorted((event.get("target") or {}).items()):
        if values:
            values = values if isinstance(values, list) else [values]
            parts.append(f"{key}={','.join(str(v) for v in values)}")
    return " ".join(parts) or "-"


@openadr.command("events")
def events() -> None:
    """List the events with their status now, modification number and targets."""
    state = _state()
    listed = state.vtn.events()
    if not listed:
        click.echo("no events")
        return
    rows = []
    for event in listed:
        descriptor = event["event_descriptor"]
        rows.append((descriptor["event_id"], descriptor["event_status"],
                     str(descriptor["modification_number"]), _targets(event)))
    click.echo(_table(("EVENT ID", "STATUS", "MOD", "TARGETS"), rows))


@openadr.command("fingerprint", with_appcontext=False)
@click.argument("cert", type=click.Path(exists=True, dir_okay=False))
def fingerprint(cert: str) -> None:
    """Print the OpenADR fingerprint of the PEM certificate CERT."""
    with open(cert, "rb") as fh:
        pem = fh.read()
    try:
        click.echo(fingerprint_from_pem(pem))
    except ValueError as exc:
        raise click.ClickException(f"{cert} is not a PEM certificate: {exc}") from None


__all__ = ["openadr"]
