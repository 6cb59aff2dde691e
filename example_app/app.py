"""An example utility portal that embeds an OpenADR 2.0b VTN.

Run it from the repository root with ``python -m example_app`` (Flask's development server, plain
HTTP, so VEN client certificates are not required: see ``__main__.py``) and log in at
http://127.0.0.1:5000/ (see ``config.yaml``). VENs talk OpenADR at ``/OpenADR2/Simple/2.0b/...``;
operators use the pages (``/vens``, ``/events``) or the JSON API under ``/api/``. Settings come
from ``config.yaml`` and the environment (see :mod:`example_app.settings`); the VTN keeps its
state in ``openadr.sqlite3`` in the instance folder unless ``OPENADR_STORE_URI`` says otherwise.
"""
from __future__ import annotations

import logging
import os
from datetime import timedelta, timezone
from typing import Any

from flask import Flask, current_app

from flask_openadr import VTN, Rejection

from . import auth, settings, views
from .history import History

# One VTN object for every app the factory makes; each app keeps its own store and settings.
vtn = VTN()


def create_app(test_config: dict[str, Any] | None = None,
               instance_path: str | None = None) -> Flask:
    """Make the portal.

    :param test_config: config values that win over the environment and ``config.yaml``.
    :param instance_path: where the SQLite files live; Flask's default instance folder if None.
    """
    app = Flask(__name__, instance_path=instance_path, instance_relative_config=True)
    os.makedirs(app.instance_path, exist_ok=True)
    settings.configure(app, test_config)
    app.logger.setLevel(logging.INFO)  # show the VENs' answers logged below
    vtn.init_app(app)
    database = os.path.join(app.instance_path, app.config["PORTAL_DATABASE"])
    app.extensions["portal_history"] = History(
        database, keep=timedelta(hours=float(app.config["PORTAL_REPORT_HOURS"])))
    views.csrf.init_app(app)
    app.register_error_handler(views.CSRFError, views.csrf_failed)
    app.register_blueprint(auth.bp)
    app.register_blueprint(views.bp)
    app.cli.add_command(auth.portal_cli)
    app.jinja_env.globals["refresh_seconds"] = app.config["PORTAL_REFRESH_SECONDS"]
    app.jinja_env.filters["utc"] = views.utc
    return app


# -- OpenADR handlers ---------------------------------------------------------------------


@vtn.on_create_party_registration
def register(payload: dict[str, Any]) -> dict[str, Any]:
    """Accept only the VENs on the allow-list, and put each in its groups."""
    allowed = current_app.config["ALLOWED_VENS"]
    ven_name = payload["ven_name"]
    if ven_name not in allowed:
        raise Rejection(463, f"VEN name {ven_name!r} is not on this portal's allow-list")
    # No ven_id or registration_id: the VTN keeps a pre-allocated venID or makes the IDs.
    return {"group_ids": allowed[ven_name]}


@vtn.on_created_event
def created_event(payload: dict[str, Any]) -> None:
    """Log each optIn/optOut; the VTN records them too (the events page counts them)."""
    for response in payload["event_responses"]:
        qualified = response["qualified_event_id"]
        current_app.logger.info(
            "VEN %s answered event %s (modification %s): %s",
            payload["ven_id"], qualified["event_id"], qualified["modification_number"],
            response["opt_type"],
        )


@vtn.on_update_report
def update_report(ven_id: str, report: dict[str, Any]) -> None:
    """Keep the report's values for the VEN page's plot: the VTN passes data on, never keeps it."""
    current_app.extensions["portal_history"].add_report(ven_id, report)


def _record_transition(kind: str, ven_id: str, epoch: int) -> None:
    # The transition's own time is not passed; the callback runs as it is decided (or, after a
    # crash, a lease later), which is close enough for a history table.
    at = current_app.extensions["openadr"].context.now().astimezone(timezone.utc)
    current_app.extensions["portal_history"].add_transition(ven_id, epoch, kind, at)


@vtn.on_ven_online
def ven_online(ven_id: str, epoch: int) -> None:
    _record_transition("online", ven_id, epoch)


@vtn.on_ven_offline
def ven_offline(ven_id: str, epoch: int) -> None:
    _record_transition("offline", ven_id, epoch)
