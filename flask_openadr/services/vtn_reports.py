"""EiReport with the VTN as producer: its METADATA, the VENs' requests for VTN reports, the data.

The application offers reports with an ``on_vtn_reports(ven_id)`` handler, asked whenever the
VTN sends its METADATA oadrRegisterReport (after each new registration, and when a VEN asks for
METADATA). What each VEN was offered, and what it asked for, are store records:

``vtn_report``
    the METADATA reports sent to the VEN, keyed by reportSpecifierID;
``vtn_report_request``
    the VEN's requests for VTN reports, keyed by reportRequestID, ``state`` ``active`` or
    ``final_report`` (the VEN cancelled with reportToFollow: one more report may be sent).
    A periodic request for the VTN's METADATA (reportBackDuration or granularity above zero)
    is one too, with ``report_specifier_id`` "METADATA";
``vtn_report_schedule``
    under the owner "*", one entry per periodic METADATA request of any VEN, with the instant
    it is next due (``next_at``) and its end (``until``, None: until cancelled), so that one
    read finds every due report (:func:`send_due`, run by the sweeper).
"""
from __future__ import annotations

import copy
from datetime import datetime, timedelta
from typing import Any, Mapping, Sequence

from ..errors import InvalidID, Rejection
from ..protocol import is_registered, reply_name, window_end
from ..store.base import VenRecord
from . import outbox, removals
from .context import Context
from .replies import response
from .reports import METADATA, plain_name

VTN_REPORT = "vtn_report"
VTN_REPORT_REQUEST = "vtn_report_request"
VTN_REPORT_SCHEDULE = "vtn_report_schedule"
#: The owner of every schedule entry: the sweeper reads them all at once.
_ALL = "*"
#: Record kinds this module keeps per VEN (cleared when a registration ends).
RECORD_KINDS = (VTN_REPORT, VTN_REPORT_REQUEST)

#: Report names that are registered with a ``METADATA_`` prefix (notes 5.3.5).
WELL_KNOWN = frozenset({"TELEMETRY_USAGE", "TELEMETRY_STATUS", "HISTORY_USAGE",
                        "HISTORY_GREENBUTTON"})


# ---------------------------------------------------------------------------------------------
# The VTN's METADATA.


def offers(ctx: Context, ven_id: str) -> list[dict[str, Any]]:
    """The METADATA reports the application offers this VEN (``on_vtn_reports``; none without
    it), completed: ``METADATA_`` prefix on well-known names, reportRequestID "0", createdDateTime
    now. Call it outside a store transaction: it runs user code.

    :raises TypeError, ValueError: the handler returned something that is not a list of
        METADATA report dicts (the message names the report and the field).
    """
    handler = ctx.handler("on_vtn_reports")
    result = handler(ven_id) if handler is not None else None
    if result is None:
        return []
    if not isinstance(result, (list, tuple)):
        raise TypeError(f"on_vtn_reports must return None or a list of report dicts, not "
                        f"{result!r}")
    now = ctx.now()
    reports = [_offer(report, now) for report in result]
    spec_ids = [r["report_specifier_id"] for r in reports]
    duplicates = sorted({s for s in spec_ids if spec_ids.count(s) > 1})
    if duplicates:
        raise ValueError(f"on_vtn_reports offers reportSpecifierID(s) {duplicates} twice")
    return reports


def _offer(offered: object, now: datetime) -> dict[str, Any]:
    if not isinstance(offered, Mapping):
        raise TypeError(f"on_vtn_reports: a report is a dict, not {offered!r}")
    report: dict[str, Any] = copy.deepcopy(dict(offered))
    spec_id = report.get("report_specifier_id")
    if not isinstance(spec_id, str) or not spec_id or spec_id == METADATA:
        raise ValueError(f"on_vtn_reports: report_specifier_id must be a non-empty str other "
                         f"than 'METADATA', not {spec_id!r}")
    where = f"on_vtn_reports: report {spec_id!r}"
    name = report.get("report_name")
    if not isinstance(name, str):
        raise ValueError(f"{where} needs a report_name such as 'TELEMETRY_USAGE' or 'x-...'")
    if name in WELL_KNOWN:
        name = "METADATA_" + name
    if not isinstance(report.get("duration"), timedelta):
        raise ValueError(f"{where} needs 'duration' (a timedelta: how much history it keeps)")
    for key in ("dtstart", "intervals", "report_id"):
        if report.get(key):
            raise ValueError(f"{where}: METADATA reports carry no {key!r}")
    r_ids = [d.get("r_id") for d in report.get("report_descriptions") or []]
    if len(set(r_ids)) != len(r_ids):
        raise ValueError(f"{where} lists an rID twice: {r_ids}")
    report.pop("intervals", None)
    report.update(report_name=name, report_request_id="0", created_date_time=now)
    report.setdefault("report_descriptions", [])
    return report


def queue_register_report(ctx: Context, ven_id: str, reports: list[dict[str, Any]],
                          report_request_id: str | None = None) -> None:
    """Record what the VEN is offered and queue the VTN's oadrRegisterReport (``report_request_id``
    when it answers the VEN's METADATA request). Subscriptions to reports or rIDs no longer
    offered end."""
    payload: dict[str, Any] = {"request_id": ctx.new_id(), "reports": reports, "ven_id": ven_id}
    if report_request_id is not None:
        payload["report_request_id"] = report_request_id
    ctx.check_payload("oadrRegisterReport", payload)
    offered = {r["report_specifier_id"]: {d["r_id"] for d in r["report_descriptions"]}
               for r in reports}
    with ctx.store.atomic():
        ctx.store.clear_records(VTN_REPORT, ven_id)
        for report in reports:
            ctx.store.put_record(VTN_REPORT, ven_id, report["report_specifier_id"], report)
        for request in ctx.store.list_records(VTN_REPORT_REQUEST, ven_id):
            if not set(request["r_ids"]) <= offered.get(request["report_specifier_id"], set()):
                ctx.store.delete_record(VTN_REPORT_REQUEST, ven_id, request["report_request_id"])
        outbox.push(ctx, ven_id, "oadrRegisterReport", payload)


# ---------------------------------------------------------------------------------------------
# The VEN's requests for VTN reports.


def _pending(ctx: Context, ven_id: str) -> list[str]:
    return [r["report_request_id"] for r in ctx.store.list_records(VTN_REPORT_REQUEST, ven_id)]


def _created(ctx: Context, ven_id: str, request_id: str, code: int = 200,
             description: str | None = None) -> tuple[str, dict[str, Any]]:
    return reply_name("oadrCreateReport"), {"response": response(request_id, code, description),
                                 "pending_reports": _pending(ctx, ven_id), "ven_id": ven_id}


def registered_report(ctx: Context, ven: VenRecord, payload: dict[str, Any]
                      ) -> tuple[str, dict[str, Any]]:
    """oadrRegisteredReport: the VEN acknowledges the VTN's METADATA. Without requests the VTN
    answers oadrResponse; with requests, oadrCreatedReport (the harness expects it)."""
    request_id = payload["response"]["request_id"]
    outbox.acknowledge(ctx, ven["ven_id"], request_id)
    requests = payload.get("report_requests") or []
    if not requests:
        return reply_name("oadrRegisteredReport"), {"response": response(request_id),
                                                    "ven_id": ven["ven_id"]}
    return _accept(ctx, ven, requests, request_id)


def create_report(ctx: Context, ven: VenRecord, payload: dict[str, Any]
                  ) -> tuple[str, dict[str, Any]]:
    """oadrCreateReport: the VEN asks for VTN reports (or for the VTN's METADATA)."""
    return _accept(ctx, ven, payload["report_requests"], payload["request_id"])


def _accept(ctx: Context, ven: VenRecord, requests: list[dict[str, Any]], request_id: str
            ) -> tuple[str, dict[str, Any]]:
    """Check every request, let ``on_vtn_report_request`` see each, store them and answer
    oadrCreatedReport listing every active request. Any unknown reportSpecifierID or rID refuses
    the message with 452 and stores nothing; the pending list then shows what was active."""
    ven_id = ven["ven_id"]
    try:
        records, metadata = _check_requests(ctx, ven_id, requests, request_id)
        handler = ctx.handler("on_vtn_report_request")
        if handler is not None:
            for record in records:
                handler(ven_id, _public(record))
        answers = [offers(ctx, ven_id) for _ in metadata]
    except Rejection as rejection:
        return _created(ctx, ven_id, request_id, rejection.response_code, rejection.description)
    now = ctx.now()
    with ctx.store.atomic():
        for record in records:
            ctx.store.put_record(VTN_REPORT_REQUEST, ven_id, record["report_request_id"], record)
        for (report_request_id, specifier), reports in zip(metadata, answers):
            queue_register_report(ctx, ven_id, reports, report_request_id)
            period = _period(specifier)
            if period is not None:
                _schedule(ctx, ven_id, report_request_id, specifier, period, request_id, now)
    return _created(ctx, ven_id, request_id)


def _period(specifier: Mapping[str, Any]) -> timedelta | None:
    """How often a METADATA request wants the report: its reportBackDuration, else its
    granularity; None (once) when both are zero or absent."""
    for key in ("report_back_duration", "granularity"):
        value = specifier.get(key)
        if isinstance(value, timedelta) and value > timedelta(0):
            return value
    return None


def _schedule(ctx: Context, ven_id: str, report_request_id: str, specifier: Mapping[str, Any],
              period: timedelta, request_id: str, now: datetime) -> None:
    """Keep a periodic METADATA request: listed in oadrPendingReports, cancellable, and sent
    again every ``period`` (the first was queued with the answer) until its reportInterval
    ends."""
    interval = specifier.get("report_interval") or {}
    start, length = interval.get("dtstart"), interval.get("duration")
    until = window_end(start, length) if start is not None and length is not None else None
    ctx.store.put_record(VTN_REPORT_REQUEST, ven_id, report_request_id, {
        "report_request_id": report_request_id, "report_specifier_id": METADATA,
        "report_name": METADATA, "r_ids": [], "granularity": specifier.get("granularity"),
        "report_back_duration": specifier.get("report_back_duration"),
        "report_interval": specifier.get("report_interval"), "state": "active",
        "message_request_id": request_id, "created_at": now})
    ctx.store.put_record(VTN_REPORT_SCHEDULE, _ALL, _schedule_key(ven_id, report_request_id), {
        "ven_id": ven_id, "report_request_id": report_request_id, "period": period,
        "next_at": now + period, "until": until})


def _schedule_key(ven_id: str, report_request_id: str) -> str:
    return f"{len(ven_id)}:{ven_id}:{report_request_id}"


def send_due(ctx: Context, now: datetime | None = None) -> int:
    """Queue the METADATA report of every periodic request that is due (the sweeper runs this
    each pass; ``vtn.send_due_reports()`` runs it by hand). A due time missed by more than one
    period is not made up: the next one follows the period from now.

    :returns: how many reports were queued.
    """
    now = now or ctx.now()
    queued = 0
    for entry in ctx.store.list_records(VTN_REPORT_SCHEDULE, _ALL):
        if entry["next_at"] > now:
            continue
        ven_id, report_request_id = entry["ven_id"], entry["report_request_id"]
        key = _schedule_key(ven_id, report_request_id)
        request = ctx.store.get_record(VTN_REPORT_REQUEST, ven_id, report_request_id)
        expired = entry["until"] is not None and now >= entry["until"]
        if request is None or expired:
            with ctx.store.atomic():
                ctx.store.delete_record(VTN_REPORT_SCHEDULE, _ALL, key)
                if request is not None:
                    ctx.store.delete_record(VTN_REPORT_REQUEST, ven_id, report_request_id)
            continue
        reports = offers(ctx, ven_id)  # user code: outside the transaction
        with ctx.store.atomic():
            current = ctx.store.get_record(VTN_REPORT_SCHEDULE, _ALL, key)
            if current is None or current["next_at"] != entry["next_at"]:
                continue  # another process sent this one
            queue_register_report(ctx, ven_id, reports, report_request_id)
            queued += 1
            if request["state"] == "final_report":
                ctx.store.delete_record(VTN_REPORT_SCHEDULE, _ALL, key)
                ctx.store.delete_record(VTN_REPORT_REQUEST, ven_id, report_request_id)
                continue
            next_at = entry["next_at"] + entry["period"]
            if next_at <= now:
                next_at = now + entry["period"]
            ctx.store.put_record(VTN_REPORT_SCHEDULE, _ALL, key, dict(entry, next_at=next_at))
    return queued


def republish_metadata(ctx: Context, ven_id: str | None = None) -> list[str]:
    """Queue the VTN's METADATA oadrRegisterReport (as ``on_vtn_reports`` offers it now) for
    one registered VEN, or every registered VEN when ``ven_id`` is None.

    :returns: the venIDs it was queued for.
    :raises LookupError: ``ven_id`` has no active registration.
    """
    if ven_id is not None:
        ven = ctx.store.get_ven(ven_id)
        if not is_registered(ven):
            raise LookupError(f"VEN {ven_id!r} has no active registration")
        targets = [ven_id]
    else:
        targets = [v["ven_id"] for v in ctx.store.list_vens() if is_registered(v)]
    for target in targets:
        queue_register_report(ctx, target, offers(ctx, target))
    return targets


def _check_requests(ctx: Context, ven_id: str, requests: list[dict[str, Any]],
                    request_id: str
                    ) -> tuple[list[dict[str, Any]], list[tuple[str, dict[str, Any]]]]:
    offered = {r["report_specifier_id"]: r for r in ctx.store.list_records(VTN_REPORT, ven_id)}
    records, metadata = [], []
    now = ctx.now()
    for request in requests:
        report_request_id = request["report_request_id"]
        if report_request_id in ("", "0"):
            raise InvalidID(description=f"reportRequestID {report_request_id!r} is reserved; "
                            "use a unique, non-zero ID")
        specifier = request["report_specifier"]
        spec_id = specifier["report_specifier_id"]
        r_ids = [p["r_id"] for p in specifier["specifier_payloads"]]
        if spec_id == METADATA:
            metadata.append((report_request_id, specifier))
            continue
        report = offered.get(spec_id)
        if report is None:
            raise InvalidID(description=f"reportSpecifierID {spec_id!r} is not offered by this "
                            f"VTN (offered: {sorted(offered)})")
        known = {d["r_id"] for d in report["report_descriptions"]}
        unknown = [r for r in r_ids if r not in known]
        if unknown:
            raise InvalidID(description=f"rID(s) {unknown} are not in the VTN's report "
                            f"{spec_id!r} (offered: {sorted(known)})")
        records.append({
            "report_request_id": report_request_id,
            "report_specifier_id": spec_id,
            "report_name": plain_name(report["report_name"]),
            "r_ids": r_ids,
            "granularity": specifier["granularity"],
            "report_back_duration": specifier["report_back_duration"],
            "report_interval": specifier.get("report_interval"),
            "state": "active",
            "message_request_id": request_id,
            "created_at": now,
        })
    return records, metadata


def _public(record: Mapping[str, Any]) -> dict[str, Any]:
    keys = ("report_request_id", "report_specifier_id", "report_name", "r_ids", "granularity",
            "report_back_duration", "report_interval")
    return {key: copy.deepcopy(record.get(key)) for key in keys}


def cancel_report(ctx: Context, ven: VenRecord, payload: dict[str, Any]
                  ) -> tuple[str, dict[str, Any]]:
    """oadrCancelReport: the VEN cancels requests for VTN reports; an unknown reportRequestID
    refuses the message with 452. Answered with oadrCanceledReport and the remaining list."""
    ven_id = ven["ven_id"]
    request_id = payload["request_id"]
    try:
        _cancel(ctx, ven_id, payload, strict=True)
    except Rejection as rejection:
        return reply_name("oadrCancelReport"), {
            "response": response(request_id, rejection.response_code, rejection.description),
            "pending_reports": _pending(ctx, ven_id), "ven_id": ven_id}
    return reply_name("oadrCancelReport"), {"response": response(request_id),
                                  "pending_reports": _pending(ctx, ven_id), "ven_id": ven_id}


def _cancel(ctx: Context, ven_id: str, cancel: Mapping[str, Any], strict: bool) -> None:
    ids = list(dict.fromkeys(cancel["report_request_ids"]))  # an ID named twice ends once
    # One read for the VEN's requests, not one per ID the message names (a message may name
    # hundreds of IDs it never got).
    records = {r["report_request_id"]: r
               for r in ctx.store.list_records(VTN_REPORT_REQUEST, ven_id)}
    unknown = [i for i in ids if i not in records]
    if unknown and strict:
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        raise InvalidID(description=f"reportRequestID(s) {unknown[:5]}{more} name no active "
                        "request for VTN reports")
    known = [i for i in ids if i in records]
    handler = ctx.handler("on_vtn_report_cancel")
    if handler is not None and known:
        handler(ven_id, {"request_id": cancel["request_id"], "report_request_ids": known,
                         "report_to_follow": cancel["report_to_follow"]})
    with ctx.store.atomic(ven_id):
        for report_request_id in known:
            if cancel["report_to_follow"]:
                record = records[report_request_id]
                record["state"] = "final_report"
                ctx.store.put_record(VTN_REPORT_REQUEST, ven_id, report_request_id, record)
                # Removed after the retention period if the promised report is never sent.
                removals.add(ctx, VTN_REPORT_REQUEST, ven_id, report_request_id, ctx.now())
            else:
                ctx.store.delete_record(VTN_REPORT_REQUEST, ven_id, report_request_id)


def updated_report(ctx: Context, ven: VenRecord, payload: dict[str, Any]
                   ) -> tuple[str, dict[str, Any]]:
    """oadrUpdatedReport: the VEN acknowledges a VTN report; a piggy-backed oadrCancelReport in
    it is applied (IDs the VTN does not know are ignored, since there is no reply to refuse)."""
    outbox.acknowledge(ctx, ven["ven_id"], payload["response"]["request_id"])
    if payload.get("cancel_report"):
        _cancel(ctx, ven["ven_id"], payload["cancel_report"], strict=False)
    return reply_name("oadrUpdatedReport"), {
        "response": response(payload["response"]["request_id"]), "ven_id": ven["ven_id"]}


# ---------------------------------------------------------------------------------------------
# Sending VTN report data.


def send_report(ctx: Context, ven_id: str, report_request_id: str,
                intervals: Sequence[Mapping[str, Any]], dtstart: datetime | None = None) -> str:
    """Queue oadrUpdateReport with data for one of the VEN's requests; returns its requestID.

    ``intervals`` use the form ``on_update_report`` receives: ``{"dtstart"?, "duration"?,
    "uid"?, "values": [{"r_id", "value" | "resource_status", "confidence"?, "accuracy"?,
    "data_quality"?}]}``.

    :raises LookupError: the VEN has no such request.
    :raises ValueError: an rID the VEN did not request, no start time, or a value that does not
        fit the report shape.
    """
    record = ctx.store.get_record(VTN_REPORT_REQUEST, ven_id, report_request_id)
    if record is None:
        raise LookupError(f"VEN {ven_id!r} has no active request {report_request_id!r} for VTN "
                          "reports")
    wire = []
    for position, interval in enumerate(intervals):
        if not isinstance(interval, Mapping) or "values" not in interval:
            raise ValueError(f"intervals[{position}] must be a dict with 'values', not "
                             f"{interval!r}")
        extra = set(interval) - {"dtstart", "duration", "uid", "values"}
        if extra:
            raise ValueError(f"intervals[{position}] has unknown key(s) {sorted(extra)}")
        for value in interval["values"]:
            if value.get("r_id") not in record["r_ids"]:
                raise ValueError(f"intervals[{position}]: rID {value.get('r_id')!r} was not "
                                 f"requested by {report_request_id!r} ({record['r_ids']})")
        item = {k: v for k, v in interval.items() if k != "values" and v is not None}
        item["report_payloads"] = [dict(v) for v in interval["values"]]
        wire.append(item)
    if dtstart is None and wire:
        dtstart = wire[0].get("dtstart")
    if dtstart is None:
        raise ValueError("send_report needs dtstart, or a dtstart on the first interval")
    report = {"dtstart": dtstart, "intervals": wire, "report_id": ctx.new_id(),
              "report_request_id": report_request_id,
              "report_specifier_id": record["report_specifier_id"],
              "report_name": record["report_name"], "created_date_time": ctx.now()}
    request_id = ctx.new_id()
    payload = {"request_id": request_id, "reports": [report], "ven_id": ven_id}
    ctx.check_payload("oadrUpdateReport", payload)
    with ctx.store.atomic():
        current = ctx.store.get_record(VTN_REPORT_REQUEST, ven_id, report_request_id)
        if current is None:
            raise LookupError(f"VEN {ven_id!r} cancelled request {report_request_id!r}")
        if current["state"] == "final_report":
            ctx.store.delete_record(VTN_REPORT_REQUEST, ven_id, report_request_id)
        outbox.push(ctx, ven_id, "oadrUpdateReport", payload)
    return request_id
