"""The operator's pages and JSON endpoints, over the VTN's public API.

Pages: ``/vens`` (the fleet), ``/vens/<ven_id>`` (one VEN), ``/events`` (events and the create
form), ``/events/<event_id>/edit``. Each page refreshes itself: ``portal.js`` asks the same URL
with ``?partial=1`` and gets its live sections re-rendered in JSON. The JSON API is under
``/api/``. Every write, form or JSON, carries the CSRF token (``X-CSRFToken`` for JSON).
"""
from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from typing import Any

from flask import Blueprint, abort, current_app, flash, jsonify, redirect, render_template, \
    request, url_for
from flask_wtf.csrf import CSRFError, CSRFProtect

from flask_openadr.extension import OPEN_STATUSES

from . import chart, operations
from .auth import login_required, operator, refuse_anonymous, safe_next
from .forms import EventForm, EventTimingForm
from .operations import InputError, vtn

bp = Blueprint("portal", __name__)
csrf = CSRFProtect()

LIVENESS_LABELS = {"online": "online", "offline": "offline",
                   "stale": "offline (deadline passed, not yet swept)", None: "never seen"}
SORT_KEYS = ("name", "ven_id", "state", "last_seen", "open_events")
STATE_FILTERS = ("online", "offline", "stale", "never")


@bp.before_app_request
def protect_writes() -> Any:
    # Only the portal's own routes: the OpenADR endpoints take XML from VENs, not forms.
    if request.blueprint not in ("portal", "auth"):
        return None
    # Every page of this blueprint needs a login; asking here too (views say so as well) means a
    # view added without the decorator still fails closed, and an anonymous caller gets 403.
    if request.blueprint == "portal" and operator() is None:
        return refuse_anonymous()
    if request.method not in ("GET", "HEAD", "OPTIONS"):
        csrf.protect()
    return None


def csrf_failed(error: CSRFError):
    if request.path.startswith("/api/"):
        return jsonify(error=f"CSRF check failed: {error.description.rstrip('.')}; send the token from "
                             "GET /api/session as X-CSRFToken"), 400
    return render_template("message.html", title="Form expired",
                           message=f"{error.description} Go back, reload the page and try "
                                   "again."), 400


# -- what the pages show ------------------------------------------------------------------------


def utc(value: datetime | None) -> str:
    return "-" if value is None else value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def iso(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(timezone.utc).isoformat()


def ago(value: datetime | None) -> str:
    if value is None:
        return ""
    seconds = int((operations.now() - value).total_seconds())
    if seconds < 120:
        return f"{seconds} s ago"
    if seconds < 7200:
        return f"{seconds // 60} min ago"
    return f"{seconds // 3600} h ago"


def registration_state(ven: dict[str, Any]) -> str:
    if not ven.get("registration_id"):
        return "not registered"
    return "cancel requested" if ven.get("cancel_requested") else "registered"


def ven_row(ven: dict[str, Any], open_events: list[str]) -> dict[str, Any]:
    return {
        "ven_id": ven["ven_id"],
        "ven_name": ven.get("ven_name") or "",
        "fingerprint": ven.get("fingerprint") or "",
        "group_ids": ven.get("group_ids") or [],
        # Push delivery is not built yet; the VEN's choice is shown as it registered.
        "transport": "pull" if ven.get("http_pull_model", True) else "push",
        "registration": registration_state(ven),
        "registration_id": ven.get("registration_id"),
        "liveness": ven["liveness"] or "never",
        "liveness_label": LIVENESS_LABELS[ven["liveness"]],
        "last_seen": iso(ven["last_seen"]),
        "last_seen_text": utc(ven["last_seen"]),
        "last_seen_ago": ago(ven["last_seen"]),
        "offline_at": iso(ven["offline_at"]),
        "open_events": len(open_events),
    }


def fleet(args: Any) -> dict[str, Any]:
    """The VENs page's rows: filtered by ``q`` (name, venID or group) and ``state``, sorted by
    ``sort``/``order``, page ``page`` of PORTAL_PAGE_SIZE."""
    query = (args.get("q") or "").strip().lower()
    state = args.get("state") or ""
    sort = args.get("sort") if args.get("sort") in SORT_KEYS else "name"
    descending = args.get("order") == "desc"
    by_ven = vtn().open_events_by_ven()
    rows = [ven_row(ven, by_ven.get(ven["ven_id"], [])) for ven in vtn().vens()]
    if query:
        rows = [r for r in rows if query in r["ven_name"].lower() or query in r["ven_id"].lower()
                or any(query in g.lower() for g in r["group_ids"])]
    if state in STATE_FILTERS:
        rows = [r for r in rows if r["liveness"] == state]
    key = {"name": lambda r: (r["ven_name"], r["ven_id"]), "ven_id": lambda r: r["ven_id"],
           "state": lambda r: (r["liveness"], r["ven_name"]),
           "last_seen": lambda r: r["last_seen"] or "",
           "open_events": lambda r: (r["open_events"], r["ven_name"])}[sort]
    rows.sort(key=key, reverse=descending)
    size = int(current_app.config["PORTAL_PAGE_SIZE"])
    pages = max(1, -(-len(rows) // size))
    try:
        page = min(max(1, int(args.get("page", 1))), pages)
    except ValueError:
        page = 1
    return {"rows": rows[(page - 1) * size: page * size], "total": len(rows), "page": page,
            "pages": pages, "q": args.get("q") or "", "state": state, "sort": sort,
            "order": "desc" if descending else "asc",
            # Where an action on a row returns to: this page, without ?partial.
            "back": url_for("portal.vens_page", q=args.get("q") or None, state=state or None,
                            sort=sort, order="desc" if descending else "asc", page=page)}


def answer_counts(answers: dict[str, Any]) -> dict[str, int]:
    counts = {"optIn": 0, "optOut": 0, "none": 0}
    for answer in answers.values():
        counts["none" if answer is None else answer["opt_type"]] += 1
    return counts


def event_row(event: dict[str, Any], answers: dict[str, Any] | None = None) -> dict[str, Any]:
    descriptor = event["event_descriptor"]
    period = event["active_period"]
    signal = event["event_signals"][0]
    target = event.get("target") or {}
    if answers is None:
        answers = vtn().event_answers(descriptor["event_id"])
    return {
        "event_id": descriptor["event_id"],
        "modification_number": descriptor["modification_number"],
        "status": descriptor["event_status"],
        "market_context": descriptor["market_context"],
        "ven_ids": target.get("ven_ids") or [],
        "group_ids": target.get("group_ids") or [],
        "signal_name": signal["signal_name"],
        "signal_type": signal["signal_type"],
        "levels": [interval["signal_payload"] for interval in signal["intervals"]],
        "start": iso(period["dtstart"]),
        "start_text": utc(period["dtstart"]),
        "duration_minutes": period["duration"].total_seconds() / 60,
        "responses": answer_counts(answers),
        "open": descriptor["event_status"] in OPEN_STATUSES,
    }


def all_events() -> list[dict[str, Any]]:
    answers = vtn().answers_by_event()
    rows = [event_row(event, answers.get(event["event_descriptor"]["event_id"], {}))
            for event in vtn().events()]
    return sorted(rows, key=lambda row: (row["start"], row["event_id"]), reverse=True)


def ven_detail(ven_id: str) -> dict[str, Any]:
    """Everything the VEN page shows about one VEN."""
    listed = [ven for ven in vtn().vens() if ven["ven_id"] == ven_id]
    if not listed:
        abort(404, f"no VEN has venID {ven_id!r}")
    ven = listed[0]
    events = []
    for event in vtn().events_for_ven(ven_id):
        mine = [r for r in vtn().event_responses(event["event_descriptor"]["event_id"])
                if r["ven_id"] == ven_id]
        row = event_row(event, answers={})
        row["answers"] = [{"modification_number": r["modification_number"],
                           "opt_type": r["opt_type"], "received_at": utc(r["received_at"])}
                          for r in sorted(mine, key=lambda r: r["modification_number"])]
        events.append(row)
    reports = vtn().ven_reports(ven_id)
    units = {}
    registered = []
    for report in reports:
        points = []
        for description in report.get("report_descriptions") or []:
            unit = chart.unit_of(description)
            units[(report["report_specifier_id"], description["r_id"])] = unit
            item = (description.get("item_base") or {}).get("kind") or ""
            points.append(f"{description['r_id']} ({item} {unit})".replace(" )", ")"))
        registered.append({"report_specifier_id": report["report_specifier_id"],
                           "report_name": report.get("report_name"), "points": points})
    now = operations.now()
    hours = float(current_app.config["PORTAL_REPORT_HOURS"])
    since = now - timedelta(hours=hours)
    series = current_app.extensions["portal_history"].report_series(ven_id, since)
    by_unit: dict[str, list[dict[str, Any]]] = {}
    for (spec, r_id), values in sorted(series.items()):
        by_unit.setdefault(units.get((spec, r_id), ""), []).append(
            {"label": r_id, "points": values})
    charts = [chart.line_chart(lines, chart.window(lines, since, now), now, unit)
              for unit, lines in by_unit.items()]
    return {
        "ven": ven_row(ven, [e["event_id"] for e in events if e["open"]]),
        "events": events,
        "reports": registered,
        "report_requests": [{"report_request_id": r["report_request_id"],
                             "report_specifier_id": r["report_specifier_id"],
                             "r_ids": r.get("r_ids", []), "state": r["state"]}
                            for r in vtn().report_requests(ven_id)],
        "charts": charts,
        "chart_hours": hours,
        "latest_values": [{"r_id": r_id, "at": iso(values[-1][0]), "value": values[-1][1],
                           "unit": units.get((spec, r_id), "")}
                          for (spec, r_id), values in sorted(series.items())],
        "opts": [{"opt_id": o["opt_id"], "opt_type": o["opt_type"], "opt_reason": o["opt_reason"],
                  "market_context": o.get("market_context"),
                  "event_id": (o.get("qualified_event_id") or {}).get("event_id"),
                  "windows": [f"{utc(w['dtstart'])} for {w['duration']}"
                              for w in o.get("availability") or []],
                  "received_at": utc(o.get("received_at"))}
                 for o in vtn().opts(ven_id)],
        "history": [{"epoch": t["epoch"], "kind": t["kind"], "at": utc(t["at"])}
                    for t in current_app.extensions["portal_history"].transitions(ven_id)],
    }


def page(template: str, sections: dict[str, str], **context: Any):
    """Render a page, or with ``?partial=1`` only its live sections, as JSON for portal.js."""
    if request.args.get("partial"):
        return jsonify(sections={name: render_template(partial, **context)
                                 for name, partial in sections.items()},
                       generated_at=iso(operations.now()))
    return render_template(template, **context)


def prefilled_start() -> datetime:
    """Five minutes from now, to the minute: a start the VENs can still prepare for."""
    return (operations.now() + timedelta(minutes=5)).replace(second=0, microsecond=0,
                                                              tzinfo=None)


# -- pages ------------------------------------------------------------------------------------


@bp.get("/")
@login_required
def home():
    return redirect(url_for("portal.vens_page"))


@bp.get("/vens")
@login_required
def vens_page():
    return page("vens.html", {"vens-live": "_vens_table.html"}, fleet=fleet(request.args))


@bp.get("/vens/<ven_id>")
@login_required
def ven_page(ven_id: str):
    return page("ven.html", {"ven-live": "_ven_live.html"}, detail=ven_detail(ven_id))


def _ven_action(ven_id: str, action: str) -> str:
    """Run a VEN action; returns the message to show."""
    if action == "cancel-registration":
        vtn().cancel_registration(ven_id)
        return f"VEN {ven_id} is asked to cancel its registration on its next poll."
    if action == "reregister":
        vtn().request_reregistration(ven_id)
        return f"VEN {ven_id} is asked to register again on its next poll."
    if action == "request-report":
        request_id = operations.request_telemetry(ven_id)
        return f"Telemetry requested from VEN {ven_id} (reportRequestID {request_id})."
    abort(404)


@bp.post("/vens/<ven_id>/<action>")
@login_required
def ven_action(ven_id: str, action: str):
    try:
        flash(_ven_action(ven_id, action), "ok")
    except InputError as error:
        flash(error.errors["form"], "error")
    except (LookupError, ValueError) as error:
        flash(str(error), "error")
    back = request.form.get("back")
    return redirect(safe_next(back) if back else url_for("portal.ven_page", ven_id=ven_id))


def _show_errors(form: Any, error: InputError) -> None:
    for field, message in error.errors.items():
        target = getattr(form, field, None)
        if target is not None and hasattr(target, "errors"):
            target.errors = list(target.errors) + [message]
        else:
            form.form_errors.append(message)


def _events_page(form: EventForm, status: int = 200):
    targets = sorted(operations.known_groups()) + sorted(
        v.get("ven_name") or v["ven_id"] for v in vtn().vens() if v.get("registration_id"))
    return page("events.html", {"events-live": "_events_table.html"}, events=all_events(),
                form=form, targets=targets), status


@bp.get("/events")
@login_required
def events_page():
    form = EventForm(formdata=None, start=prefilled_start(), duration_minutes=60, level=1)
    return _events_page(form)


@bp.post("/events")
@login_required
def create_event_form():
    form = EventForm()
    if form.validate():
        name, type_ = form.signal.data.split("/")
        try:
            event_id = operations.add_event(
                operations.resolve_target(target=form.target.data), form.start_utc(),
                timedelta(minutes=form.duration_minutes.data), form.level.data,
                signal_name=name, signal_type=type_)
        except InputError as error:
            _show_errors(form, error)
        else:
            flash(f"Event {event_id} created.", "ok")
            return redirect(url_for("portal.events_page"))
    return _events_page(form, 400)


@bp.route("/events/<event_id>/edit", methods=["GET", "POST"])
@login_required
def edit_event(event_id: str):
    try:
        event = operations.get_event(event_id)
    except LookupError as error:
        abort(404, str(error))
    row = event_row(event)
    if request.method == "GET":
        form = EventTimingForm(formdata=None,
                               start=event["active_period"]["dtstart"].replace(tzinfo=None),
                               duration_minutes=int(row["duration_minutes"]),
                               level=row["levels"][0])
    else:
        form = EventTimingForm()
        if form.validate():
            try:
                operations.modify_event(event_id, start=form.start_utc(),
                                        duration=timedelta(minutes=form.duration_minutes.data),
                                        level=form.level.data)
            except InputError as error:
                _show_errors(form, error)
            else:
                flash(f"Event {event_id} modified.", "ok")
                return redirect(url_for("portal.events_page"))
    return render_template("event_edit.html", form=form, event=row), \
        (400 if form.errors or form.form_errors else 200)


@bp.post("/events/<event_id>/cancel")
@login_required
def cancel_event_form(event_id: str):
    try:
        operations.cancel_event(event_id)
    except LookupError as error:
        abort(404, str(error))
    except InputError as error:
        flash(error.errors["form"], "error")
    else:
        flash(f"Event {event_id} cancelled.", "ok")
    return redirect(url_for("portal.events_page"))


# -- JSON API ---------------------------------------------------------------------------------


def bad_request(error: InputError | str):
    if isinstance(error, InputError):
        return jsonify(error=str(error), errors=error.errors), 400
    return jsonify(error=error), 400


@bp.get("/api/vens")
@login_required
def api_vens():
    return jsonify(fleet(request.args))


@bp.get("/api/vens/<ven_id>")
@login_required
def api_ven(ven_id: str):
    if not any(ven["ven_id"] == ven_id for ven in vtn().vens()):
        return jsonify(error=f"no VEN has venID {ven_id!r}; GET /api/vens lists them"), 404
    detail = ven_detail(ven_id)
    detail.pop("charts")  # drawing data; the values are in latest_values and the page
    return jsonify(detail)


@bp.post("/api/vens/<ven_id>/<action>")
@login_required
def api_ven_action(ven_id: str, action: str):
    try:
        return jsonify(message=_ven_action(ven_id, action))
    except InputError as error:
        return bad_request(error)
    except (LookupError, ValueError) as error:
        return bad_request(str(error))


@bp.get("/api/events")
@login_required
def api_events():
    return jsonify(all_events())


def _number(data: dict[str, Any], key: str, *, positive: bool = False) -> float:
    value = data.get(key)
    # Python's JSON reader takes NaN and Infinity, which are no numbers a VEN can act on.
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or (positive and value <= 0):
        kind = "a positive number" if positive else "a number"
        raise InputError({key: f"{key} must be {kind}, not {value!r}"})
    return float(value)


def parse_start(value: Any) -> datetime:
    if not isinstance(value, str):
        raise InputError({"start": f"start must be an ISO 8601 date-time string, not {value!r}"})
    try:
        # fromisoformat reads a trailing "Z" only from Python 3.11 on.
        start = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InputError({"start": f"start {value!r} is not an ISO 8601 date-time"}) from None
    if start.utcoffset() is None:
        raise InputError({"start": f"start {value!r} has no time zone; add Z or an offset such "
                                   "as +01:00"})
    try:
        return start.astimezone(timezone.utc)
    except OverflowError:  # 0001-01-01T00:00+14:00 is before the first UTC date Python has
        raise InputError({"start": f"start {value!r} is out of range"}) from None


@bp.post("/api/events")
@login_required
def api_create_event():
    """Add a one-interval event. JSON: ``ven_id`` or ``group_id``; ``start`` (ISO 8601 with a
    time zone); ``duration_minutes``; ``level``; optional ``signal_name`` (SIMPLE),
    ``signal_type`` (level) and ``market_context`` (OPENADR_MARKET_CONTEXT)."""
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        return bad_request("send a JSON object")
    if ("ven_id" in data) == ("group_id" in data):
        return bad_request("give exactly one of ven_id and group_id")
    try:
        for key in ("ven_id", "group_id", "signal_name", "signal_type", "market_context"):
            if key in data and not isinstance(data[key], str):
                raise InputError({key: f"{key} must be a string, not {data[key]!r}"})
        start = parse_start(data.get("start"))
        duration = operations.duration_of(_number(data, "duration_minutes", positive=True))
        level = _number(data, "level")
        target = operations.resolve_target(ven_id=data.get("ven_id"),
                                           group_id=data.get("group_id"))
        event_id = operations.add_event(
            target, start, duration, level, signal_name=data.get("signal_name", "SIMPLE"),
            signal_type=data.get("signal_type", "level"),
            market_context=data.get("market_context"), fields=operations.JSON_FIELDS)
    except InputError as error:
        return bad_request(error)
    return jsonify(event_row(vtn().get_event(event_id))), 201


@bp.post("/api/events/<event_id>/modify")
@login_required
def api_modify_event(event_id: str):
    """Change ``start``, ``duration_minutes`` and/or ``level`` of a one-interval event."""
    data = request.get_json(silent=True)
    if not isinstance(data, dict) or not {"start", "duration_minutes", "level"} & set(data):
        return bad_request("send a JSON object with start, duration_minutes and/or level")
    try:
        operations.get_event(event_id)
    except LookupError as error:
        return jsonify(error=str(error)), 404
    try:
        start = parse_start(data["start"]) if "start" in data else None
        duration = (operations.duration_of(_number(data, "duration_minutes", positive=True))
                    if "duration_minutes" in data else None)
        level = _number(data, "level") if "level" in data else None
        operations.modify_event(event_id, start=start, duration=duration, level=level,
                                fields=operations.JSON_FIELDS)
    except InputError as error:
        return bad_request(error)
    return jsonify(event_row(vtn().get_event(event_id)))


@bp.post("/api/events/<event_id>/cancel")
@login_required
def api_cancel_event(event_id: str):
    try:
        operations.cancel_event(event_id)
    except LookupError as error:
        return jsonify(error=str(error)), 404
    except InputError as error:
        return bad_request(error)
    return jsonify(event_row(vtn().get_event(event_id)))


@bp.get("/api/events/<event_id>/responses")
@login_required
def api_event_responses(event_id: str):
    try:
        operations.get_event(event_id)
    except LookupError as error:
        return jsonify(error=str(error)), 404
    return jsonify([
        {"ven_id": r["ven_id"], "modification_number": r["modification_number"],
         "opt_type": r["opt_type"], "response_code": r["response_code"],
         "received_at": iso(r["received_at"])}
        for r in vtn().event_responses(event_id)
    ])


__all__ = ["bp", "csrf", "csrf_failed"]
