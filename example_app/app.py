"""An example utility portal that embeds an OpenADR 2.0b VTN.

Run it from the repository root with ``python -m example_app`` (Flask's development server, plain
HTTP, client certificates not required). VENs talk OpenADR at ``/OpenADR2/Simple/2.0b/...``;
operators use the JSON endpoints (``/vens``, ``/events``) or the overview page at ``/``. The VTN
keeps its state in ``openadr.sqlite3`` in the instance folder.

Settings also come from ``FLASK_``-prefixed environment variables (Flask's
``from_prefixed_env``), so ``FLASK_OPENADR_REQUIRE_CLIENT_CERT=false flask --app example_app.app
run`` is the same local run under the ``flask`` command.
"""
from __future__ import annotations

import logging
import os
from datetime import datetime, timedelta, timezone
from typing import Any

import yaml
from flask import Blueprint, Flask, current_app, jsonify, render_template, request

from flask_openadr import VTN, EventError, Rejection, UnknownEvent

CONFIG_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "config.yaml")

# One VTN object for every app the factory makes; each app keeps its own store and settings.
vtn = VTN()
portal = Blueprint("portal", __name__)


def create_app(test_config: dict[str, Any] | None = None,
               instance_path: str | None = None) -> Flask:
    """Make the portal.

    :param test_config: config values that win over ``example_app/config.yaml``.
    :param instance_path: where the SQLite store lives; Flask's default instance folder if None.
    """
    app = Flask(__name__, instance_path=instance_path, instance_relative_config=True)
    # The VTN reads the OPENADR_* keys of the YAML file itself; ALLOWED_VENS is ours.
    app.config["OPENADR_CONFIG_FILE"] = CONFIG_FILE
    app.config["ALLOWED_VENS"] = load_allowed_vens(CONFIG_FILE)
    app.config.from_prefixed_env()
    if test_config:
        app.config.from_mapping(test_config)
    app.logger.setLevel(logging.INFO)  # show the VENs' answers logged below
    os.makedirs(app.instance_path, exist_ok=True)
    vtn.init_app(app)
    app.register_blueprint(portal)
    return app


def load_allowed_vens(path: str) -> dict[str, list[str]]:
    """The allow-list: VEN name -> the groups the VEN belongs to."""
    with open(path, encoding="utf-8") as fh:
        data = yaml.safe_load(fh) or {}
    allowed = data.get("ALLOWED_VENS") or {}
    if not isinstance(allowed, dict):
        raise ValueError(f"{path}: ALLOWED_VENS must map VEN names to lists of groups")
    return {str(name): [str(group) for group in groups or []] for name, groups in allowed.items()}


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
    """Log each optIn/optOut; the VTN records them too (see ``/events/<id>/responses``)."""
    for response in payload["event_responses"]:
        qualified = response["qualified_event_id"]
        current_app.logger.info(
            "VEN %s answered event %s (modification %s): %s",
            payload["ven_id"], qualified["event_id"], qualified["modification_number"],
            response["opt_type"],
        )


# -- Operator pages and JSON endpoints --------------------------------------------------------


def iso(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(timezone.utc).isoformat()


def ven_summary(ven: dict[str, Any]) -> dict[str, Any]:
    return {
        "ven_id": ven["ven_id"],
        "ven_name": ven.get("ven_name"),
        "registered": bool(ven.get("registration_id")),
        "registration_id": ven.get("registration_id"),
        "group_ids": ven.get("group_ids", []),
        "registered_at": iso(ven.get("registered_at")),
    }


def event_summary(event: dict[str, Any]) -> dict[str, Any]:
    descriptor = event["event_descriptor"]
    period = event["active_period"]
    signal = event["event_signals"][0]
    target = event["target"]
    return {
        "event_id": descriptor["event_id"],
        "modification_number": descriptor["modification_number"],
        "status": descriptor["event_status"],
        "market_context": descriptor["market_context"],
        "ven_ids": target.get("ven_ids", []),
        "group_ids": target.get("group_ids", []),
        "signal_name": signal["signal_name"],
        "signal_type": signal["signal_type"],
        "levels": [interval["signal_payload"] for interval in signal["intervals"]],
        "start": iso(period["dtstart"]),
        "duration_minutes": period["duration"].total_seconds() / 60,
    }


def all_events() -> list[dict[str, Any]]:
    summaries = [event_summary(event) for event in vtn.events()]
    return sorted(summaries, key=lambda summary: (summary["start"], summary["event_id"]))


def find_event(event_id: str) -> dict[str, Any] | None:
    try:
        return vtn.get_event(event_id)
    except UnknownEvent:
        return None


def bad_request(message: str):
    return jsonify(error=message), 400


@portal.get("/")
def index():
    vens = [ven_summary(ven) for ven in vtn.vens()]
    return render_template("index.html", vens=vens, events=all_events(),
                           allowed=current_app.config["ALLOWED_VENS"])


@portal.get("/vens")
def list_vens():
    return jsonify([ven_summary(ven) for ven in vtn.vens()])


@portal.get("/events")
def list_events():
    return jsonify(all_events())


@portal.post("/events")
def create_event():
    """Add a single-interval event for one VEN or one group.

    JSON body: ``ven_id`` or ``group_id``; ``start`` (ISO 8601 with a time zone);
    ``duration_minutes``; ``level``; optional ``signal_name`` (SIMPLE), ``signal_type`` (level)
    and ``market_context`` (the configured default).
    """
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        return bad_request("send a JSON object")
    if ("ven_id" in data) == ("group_id" in data):
        return bad_request("give exactly one of ven_id and group_id")
    try:
        start = parse_start(data.get("start"))
        duration = timedelta(minutes=positive_number(data, "duration_minutes"))
    except ValueError as error:
        return bad_request(str(error))
    level = data.get("level")
    if isinstance(level, bool) or not isinstance(level, (int, float)):
        return bad_request(f"level must be a number, not {level!r}")

    options: dict[str, Any] = {}
    if "ven_id" in data:
        options["ven_id"] = data["ven_id"]
    else:
        options["targets"] = {"group_ids": [data["group_id"]]}
    if data.get("market_context"):
        options["market_context"] = data["market_context"]  # else OPENADR_MARKET_CONTEXT
    try:
        event_id = vtn.add_event(
            signal_name=data.get("signal_name", "SIMPLE"),
            signal_type=data.get("signal_type", "level"),
            intervals=[{"dtstart": start, "duration": duration, "signal_payload": float(level)}],
            **options,
        )
    except EventError as error:
        return bad_request(str(error))
    event = find_event(event_id)
    return jsonify(event_summary(event)), 201


def parse_start(value: Any) -> datetime:
    if not isinstance(value, str):
        raise ValueError(f"start must be an ISO 8601 date-time string, not {value!r}")
    try:
        # fromisoformat reads a trailing "Z" only from Python 3.11 on.
        start = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"start {value!r} is not an ISO 8601 date-time") from None
    if start.utcoffset() is None:
        raise ValueError(f"start {value!r} has no time zone; add Z or an offset such as +01:00")
    return start.astimezone(timezone.utc)


def positive_number(data: dict[str, Any], key: str) -> float:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ValueError(f"{key} must be a positive number, not {value!r}")
    return float(value)


@portal.post("/events/<event_id>/cancel")
def cancel_event(event_id: str):
    if find_event(event_id) is None:
        return jsonify(error=f"event {event_id!r} is not known"), 404
    event = vtn.cancel_event(event_id)
    return jsonify(event_summary(event))


@portal.get("/events/<event_id>/responses")
def event_responses(event_id: str):
    if find_event(event_id) is None:
        return jsonify(error=f"event {event_id!r} is not known"), 404
    return jsonify([
        {
            "ven_id": response["ven_id"],
            "modification_number": response["modification_number"],
            "opt_type": response["opt_type"],
            "response_code": response["response_code"],
            "received_at": iso(response["received_at"]),
        }
        for response in vtn.event_responses(event_id)
    ])
