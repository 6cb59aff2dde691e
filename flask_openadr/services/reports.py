"""EiReport with the VEN as producer: its METADATA, the VTN's report requests, data and cancels.

State lives in store records (one collection per kind, per VEN), so any worker, before or after
a restart, routes a VEN's data the same way:

``ven_report``
    the VEN's METADATA reports (its capabilities), keyed by reportSpecifierID;
``report_request``
    the VTN's requests for VEN reports, keyed by reportRequestID, with a ``state``:
    ``requested`` (sent or queued), ``active`` (the VEN listed it as pending), ``cancelling``
    (the VTN cancelled it; the VEN has not acknowledged yet) or ``final_report`` (cancelled with
    reportToFollow: one more data report is accepted).

The VTN as producer (its own METADATA and the VEN's requests for VTN reports) is in
:mod:`.vtn_reports`. Rules decided here are documented in ``docs/reports.rst``.
"""
from __future__ import annotations

import collections
import copy
import logging
from datetime import datetime, timedelta
from typing import Any, Iterable, Mapping, Sequence

from ..errors import ComplianceError, InvalidData, InvalidID, OutOfSequence
from ..protocol import is_aware, is_registered, is_success, reply_name
from ..store.base import VenRecord
from . import bounds, outbox, removals
from .context import Context
from .replies import response

logger = logging.getLogger("flask_openadr")

VEN_REPORT = "ven_report"
REPORT_REQUEST = "report_request"
#: Record kinds this module keeps per VEN (cleared when a registration ends).
RECORD_KINDS = (VEN_REPORT, REPORT_REQUEST)

METADATA = "METADATA"
#: The readingType of every specifierPayload the VTN sends (harness requirement, notes 3.3).
READING_TYPE = "x-notApplicable"
#: States in which a request still produces data the VTN accepts.
LIVE_STATES = frozenset({"requested", "active", "cancelling", "final_report"})
#: Report names (without the ``METADATA_`` prefix) the "telemetry" policy requests.
TELEMETRY_NAMES = frozenset({"TELEMETRY_USAGE", "TELEMETRY_STATUS"})
_ZERO = timedelta(0)
_SECOND = timedelta(seconds=1)


def plain_name(report_name: str | None) -> str | None:
    """A report name without its ``METADATA_`` prefix: the name data reports carry."""
    if report_name and report_name.startswith("METADATA_"):
        return report_name[len("METADATA_"):]
    return report_name


# ---------------------------------------------------------------------------------------------
# Building report requests (the rules of notes 3.3 and 5.3.4 live here).


def _duration(name: str, value: object) -> timedelta:
    if not isinstance(value, timedelta):
        raise TypeError(f"{name} must be a timedelta, not {value!r}")
    if value < _ZERO or value % _SECOND:
        raise ValueError(f"{name} must be a non-negative whole number of seconds, not {value}")
    return value


def _report_interval(value: object, report_back_duration: timedelta,
                     now: datetime) -> dict[str, Any] | None:
    """The reportInterval of a request: dtstart and duration only (rule 321); a periodic request
    (reportBackDuration > 0) always gets one, by default from now, open-ended (duration 0)."""
    if value is None:
        if report_back_duration > _ZERO:
            return {"dtstart": now, "duration": _ZERO}
        return None
    if not isinstance(value, Mapping):
        raise TypeError(f"report_interval must be a dict with 'dtstart' and 'duration', not "
                        f"{value!r}")
    extra = set(value) - {"dtstart", "duration"}
    if extra:
        raise ValueError(f"report_interval takes only 'dtstart' and 'duration' (rule 321 forbids "
                         f"tolerance and notification fields), not {sorted(extra)}")
    dtstart = value.get("dtstart")
    if not is_aware(dtstart):
        raise ValueError(f"report_interval['dtstart'] must be an aware datetime, not {dtstart!r}")
    return {"dtstart": dtstart, "duration": _duration("report_interval['duration']",
                                                      value.get("duration", _ZERO))}


def _check_granularity(report: Mapping[str, Any], r_id: str, granularity: timedelta) -> None:
    """Granularity 0 means "as registered"; otherwise it lies within the rID's sampling rate."""
    if granularity == _ZERO:
        return
    description = descriptions_of(report)[r_id]
    sampling = description.get("sampling_rate")
    if not sampling:
        return
    minimum, maximum = sampling["min_period"], sampling["max_period"]
    if granularity < minimum:
        raise ValueError(f"granularity {granularity} for rID {r_id!r} of report "
                         f"{report['report_specifier_id']!r} is below its oadrMinPeriod "
                         f"{minimum}; use at least {minimum}")
    if maximum > _ZERO and granularity > maximum:
        raise ValueError(f"granularity {granularity} for rID {r_id!r} of report "
                         f"{report['report_specifier_id']!r} is above its oadrMaxPeriod "
                         f"{maximum}; use at most {maximum}")


def descriptions_of(report: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """rID -> report description of a METADATA report."""
    return {d["r_id"]: d for d in report.get("report_descriptions") or []}


def new_request(ctx: Context, report: Mapping[str, Any], r_ids: list[str], *,
                granularity: object, report_back_duration: object, report_interval: object = None,
                message_request_id: str = "") -> dict[str, Any]:
    """A ``report_request`` record for some rIDs of one of the VEN's METADATA reports.

    :raises ValueError: for an rID the report does not offer, or a granularity outside an rID's
        sampling rate (the message names both); :class:`TypeError` for values of the wrong type.
    """
    spec_id = report["report_specifier_id"]
    if not r_ids:
        raise ValueError(f"a request for report {spec_id!r} needs at least one rID")
    offered = descriptions_of(report)
    granularity = _duration("granularity", granularity)
    report_back_duration = _duration("report_back_duration", report_back_duration)
    for r_id in r_ids:
        if not isinstance(r_id, str):
            raise TypeError(f"an rID is a str, not {r_id!r}")
        if r_id not in offered:
            raise ValueError(f"rID {r_id!r} is not in report {spec_id!r}; it offers "
                             f"{sorted(offered)}")
        _check_granularity(report, r_id, granularity)
    if len(set(r_ids)) != len(r_ids):
        raise ValueError(f"rIDs {r_ids} name a data point twice")
    now = ctx.now()
    return {
        "report_request_id": ctx.new_id(),  # uuid hex: unique, never "0" or empty
        "report_specifier_id": spec_id,
        "report_name": plain_name(report.get("report_name")),
        "r_ids": list(r_ids),
        "granularity": granularity,
        "report_back_duration": report_back_duration,
        "report_interval": _report_interval(report_interval, report_back_duration, now),
        "state": "requested",
        "message_request_id": message_request_id,
        "created_at": now,
        "cancel": None,
    }


def metadata_request(ctx: Context, message_request_id: str) -> dict[str, Any]:
    """A request for the VEN's METADATA: reportSpecifierID METADATA, one rID "0" (notes 5.3.1)."""
    return {
        "report_request_id": ctx.new_id(),
        "report_specifier_id": METADATA,
        "report_name": METADATA,
        "r_ids": ["0"],
        "granularity": _ZERO,
        "report_back_duration": _ZERO,
        "report_interval": None,
        "state": "requested",
        "message_request_id": message_request_id,
        "created_at": ctx.now(),
        "cancel": None,
    }


def wire_request(record: Mapping[str, Any]) -> dict[str, Any]:
    """The oadrReportRequest of a request record: readingType x-notApplicable, no itemBase."""
    specifier: dict[str, Any] = {
        "report_specifier_id": record["report_specifier_id"],
        "granularity": record["granularity"],
        "report_back_duration": record["report_back_duration"],
        "specifier_payloads": [{"r_id": r_id, "reading_type": READING_TYPE}
                               for r_id in record["r_ids"]],
    }
    if record.get("report_interval"):
        specifier["report_interval"] = dict(record["report_interval"])
    return {"report_request_id": record["report_request_id"], "report_specifier": specifier}


def _points(result: Any, where: str) -> list[dict[str, Any]]:
    """Normalise a list of data points ``{"r_id", "granularity", "report_back_duration",
    "report_interval"?}`` (what on_register_report returns)."""
    if result is None:
        return []
    if not isinstance(result, (list, tuple)):
        raise TypeError(f"{where} must return None or a list of data point dicts, not {result!r}")
    points = []
    for point in result:
        if not isinstance(point, Mapping):
            raise TypeError(f"{where}: a data point is a dict with 'r_id', 'granularity' and "
                            f"'report_back_duration', not {point!r}")
        missing = {"r_id", "granularity", "report_back_duration"} - set(point)
        extra = set(point) - {"r_id", "granularity", "report_back_duration", "report_interval"}
        if missing or extra:
            raise ValueError(f"{where}: data point {dict(point)!r} "
                             + (f"lacks {sorted(missing)}" if missing else
                                f"has unknown key(s) {sorted(extra)}"))
        points.append(dict(point))
    return points


def group_requests(ctx: Context, report: Mapping[str, Any], points: list[dict[str, Any]],
                   message_request_id: str) -> list[dict[str, Any]]:
    """One request per distinct (granularity, reportBackDuration, reportInterval): an
    oadrReportRequest has a single timing for all its rIDs."""
    groups: dict[tuple[Any, ...], list[str]] = {}
    intervals: dict[tuple[Any, ...], Any] = {}
    for point in points:
        interval = point.get("report_interval")
        key = (point["granularity"], point["report_back_duration"],
               tuple(sorted(interval.items())) if isinstance(interval, Mapping) else interval)
        groups.setdefault(key, []).append(point["r_id"])
        intervals[key] = interval
    return [new_request(ctx, report, r_ids, granularity=key[0], report_back_duration=key[1],
                        report_interval=intervals[key], message_request_id=message_request_id)
            for key, r_ids in groups.items()]


def policy_points(policy: str, report: Mapping[str, Any],
                  covered: set[tuple[str, str]]) -> list[dict[str, Any]]:
    """The data points the configured OPENADR_REPORT_POLICY requests from one METADATA report.

    ``"telemetry"``: every rID of TELEMETRY_USAGE and TELEMETRY_STATUS reports at its
    oadrMinPeriod (its oadrMaxPeriod when the minimum is 0), reported back at that period. rIDs
    without a sampling rate, and rIDs a live request already covers (``covered`` holds
    ``(reportSpecifierID, rID)``), are skipped, so a VEN that registers again is not asked twice.
    """
    if policy != "telemetry" or plain_name(report.get("report_name")) not in TELEMETRY_NAMES:
        return []
    points = []
    for description in report.get("report_descriptions") or []:
        if (report["report_specifier_id"], description["r_id"]) in covered:
            continue
        sampling = description.get("sampling_rate")
        period = (sampling["min_period"] or sampling["max_period"]) if sampling else _ZERO
        if period <= _ZERO:
            logger.info("report policy: rID %r of report %r has no sampling period; not requested",
                        description["r_id"], report["report_specifier_id"])
            continue
        points.append({"r_id": description["r_id"], "granularity": period,
                       "report_back_duration": period})
    return points


# ---------------------------------------------------------------------------------------------
# oadrRegisterReport from the VEN.


def _check_metadata(reports: list[dict[str, Any]]) -> None:
    """The METADATA rules of notes 5.3.5 the VTN relies on: no data fields, unique IDs."""
    seen: set[str] = set()
    for index, report in enumerate(reports):
        spec_id = report["report_specifier_id"]
        where = f"METADATA report {spec_id!r}"
        for key, element in (("dtstart", "dtstart"), ("intervals", "intervals"),
                             ("report_id", "eiReportID")):
            if report.get(key):
                raise ComplianceError(description=f"{where} carries {element}; METADATA reports "
                                      "must not (only data reports do)")
        if spec_id in seen:
            raise InvalidID(description=f"reportSpecifierID {spec_id!r} appears twice; each "
                            "offered report needs its own")
        seen.add(spec_id)
        descriptions = report.get("report_descriptions") or []
        counts = collections.Counter(d["r_id"] for d in descriptions)
        duplicates = sorted(r for r, count in counts.items() if count > 1)
        if duplicates:
            raise InvalidID(description=f"{where} lists rID(s) {duplicates[:5]} more than once")
        for description in descriptions:
            _check_sampling_rate(where, description)


def _check_sampling_rate(where: str, description: Mapping[str, Any]) -> None:
    """454 for an oadrSamplingRate whose oadrMinPeriod is above a non-zero oadrMaxPeriod: the
    schema allows it, but no granularity lies between them, so no request could be made."""
    sampling = description.get("sampling_rate")
    if not sampling:
        return
    minimum, maximum = sampling["min_period"], sampling["max_period"]
    if minimum < _ZERO or maximum < _ZERO:
        raise InvalidData(description=f"{where}, rID {description['r_id']!r}: oadrSamplingRate "
                          f"periods must not be negative (oadrMinPeriod {minimum}, "
                          f"oadrMaxPeriod {maximum})")
    if maximum > _ZERO and minimum > maximum:
        raise InvalidData(description=f"{where}, rID {description['r_id']!r}: oadrMinPeriod "
                          f"{minimum} is above oadrMaxPeriod {maximum}; send a minimum at most "
                          "the maximum (or a maximum of 0 for none)")


def register_report(ctx: Context, ven: VenRecord, payload: dict[str, Any]
                    ) -> tuple[str, dict[str, Any]]:
    """oadrRegisterReport: store the VEN's capabilities and answer oadrRegisteredReport with the
    reports the VTN wants (from ``on_register_report``, else the configured policy)."""
    ven_id = ven["ven_id"]
    reports = payload.get("reports") or []
    _check_metadata(reports)
    answered = payload.get("report_request_id")
    if answered in ("0", ""):
        answered = None  # some VENs send "0" where the element should be absent
    requests = {r["report_request_id"]: r for r in ctx.store.list_records(REPORT_REQUEST, ven_id)}
    if answered is not None:
        asked = requests.get(answered)
        if asked is None or asked["report_specifier_id"] != METADATA:
            raise InvalidID(description=f"reportRequestID {answered!r} names no METADATA request "
                            "the VTN sent to this VEN")

    offered = {r["report_specifier_id"]: r for r in reports}
    invalid = [r for r in requests.values() if _invalidated(r, offered)]
    covered = {(r["report_specifier_id"], r_id) for r in requests.values()
               if r["state"] in ("requested", "active") and r not in invalid
               for r_id in r["r_ids"]}
    handler = ctx.handler("on_register_report")
    new: list[dict[str, Any]] = []
    for report in reports:
        if handler is not None:
            points = _points(handler(ven_id, copy.deepcopy(report)), "on_register_report")
        else:
            points = policy_points(ctx.settings.report_policy, report, covered)
        new.extend(group_requests(ctx, report, points, payload["request_id"]))

    with ctx.store.atomic():
        ctx.store.clear_records(VEN_REPORT, ven_id)
        for report in reports:
            ctx.store.put_record(VEN_REPORT, ven_id, report["report_specifier_id"], report)
        if answered is not None:
            ctx.store.delete_record(REPORT_REQUEST, ven_id, answered)
            # The METADATA itself answers the oadrCreateReport that asked for it.
            outbox.acknowledge(ctx, ven_id, requests[answered]["message_request_id"])
        live = [r for r in invalid if r["state"] in ("requested", "active")]
        if live:
            # Their rIDs are gone: the VTN cancels them so that both sides forget them.
            _start_cancel(ctx, ven_id, live, report_to_follow=False)
        for record in new:
            ctx.store.put_record(REPORT_REQUEST, ven_id, record["report_request_id"], record)
    return reply_name("oadrRegisterReport"), {"response": response(payload["request_id"]),
                                    "report_requests": [wire_request(r) for r in new],
                                    "ven_id": ven_id}


def _invalidated(record: Mapping[str, Any], offered: Mapping[str, Mapping[str, Any]]) -> bool:
    """Whether a request names a report or rID the VEN's new METADATA no longer offers."""
    if record["report_specifier_id"] == METADATA:
        return False
    report = offered.get(record["report_specifier_id"])
    if report is None:
        return True
    return not set(record["r_ids"]) <= set(descriptions_of(report))


# ---------------------------------------------------------------------------------------------
# oadrCreatedReport and oadrCanceledReport from the VEN: its pending lists.


def created_report(ctx: Context, ven: VenRecord, payload: dict[str, Any]
                   ) -> tuple[str, dict[str, Any]]:
    """oadrCreatedReport: the VEN acknowledges requests (from oadrRegisteredReport, matched by
    the register requestID, or from oadrCreateReport, by its requestID).

    Requests carried by the acknowledged message become ``active`` when the VEN lists them as
    pending and the code is 2xx, and are dropped (refused) otherwise. Other known IDs in the list
    are confirmed; IDs the VTN does not know are logged and passed to the handler as
    ``unknown``. Requests neither carried nor listed are left alone: some VENs (openleadr) list
    only the requests of the message they answer.
    """
    ven_id = ven["ven_id"]
    eiresponse = payload["response"]
    request_id = eiresponse["request_id"]
    ok = is_success(eiresponse["response_code"])
    pending = list(payload.get("pending_reports") or [])
    records = {r["report_request_id"]: r for r in ctx.store.list_records(REPORT_REQUEST, ven_id)}
    carried = [i for i, r in records.items()
               if request_id and r["message_request_id"] == request_id]
    listed = set(pending)
    accepted = [i for i in records if i in listed and ok]
    refused = [i for i in carried if not ok or i not in listed]
    unknown = [i for i in pending if i not in records]
    if unknown:
        logger.warning("VEN %s lists pending report request(s) %s the VTN does not know", ven_id,
                       unknown)
    handler = ctx.handler("on_created_report")
    if handler is not None:
        handler(ven_id, {"request_id": request_id, "response_code": eiresponse["response_code"],
                         "response_description": eiresponse.get("response_description"),
                         "pending_reports": pending, "accepted": accepted, "refused": refused,
                         "unknown": unknown})
    with ctx.store.atomic(ven_id):
        outbox.acknowledge(ctx, ven_id, request_id)
        for report_request_id in refused:
            ctx.store.delete_record(REPORT_REQUEST, ven_id, report_request_id)
        # Read again inside the transaction (one read for them all): the VTN may have
        # cancelled a request since the read above, and writing that stale copy back as
        # active would undo the cancellation, so that its oadrCancelReport is dropped unsent.
        current = {r["report_request_id"]: r
                   for r in ctx.store.list_records(REPORT_REQUEST, ven_id)} if accepted else {}
        for report_request_id in accepted:
            record = current.get(report_request_id)
            if record is not None and record["state"] == "requested":
                record["state"] = "active"
                ctx.store.put_record(REPORT_REQUEST, ven_id, report_request_id, record)
    return reply_name("oadrCreatedReport"), {"response": response(request_id), "ven_id": ven_id}


def canceled_report(ctx: Context, ven: VenRecord, payload: dict[str, Any]
                    ) -> tuple[str, dict[str, Any]]:
    """oadrCanceledReport: the VEN acknowledges the VTN's oadrCancelReport (echoing its requestID).

    Whatever its code, the cancelled requests end (a VEN that answers 452 no longer has them);
    those cancelled with reportToFollow accept one more data report first. The pending list is
    informational: a cancelled ID the VEN still lists without reportToFollow is logged.
    """
    ven_id = ven["ven_id"]
    eiresponse = payload["response"]
    request_id = eiresponse["request_id"]
    pending = list(payload.get("pending_reports") or [])
    ended = [r for r in ctx.store.list_records(REPORT_REQUEST, ven_id)
             if r.get("cancel") and r["cancel"]["request_id"] == request_id]
    if not ended:
        raise OutOfSequence(description=f"requestID {request_id!r} names no oadrCancelReport "
                            "the VTN is waiting for")
    to_follow = bool(ended[0]["cancel"]["report_to_follow"])
    still = [r["report_request_id"] for r in ended if r["report_request_id"] in pending]
    if still and not to_follow:
        logger.warning("VEN %s still lists cancelled report request(s) %s as pending", ven_id,
                       still)
    handler = ctx.handler("on_canceled_report")
    if handler is not None:
        handler(ven_id, {"request_id": request_id, "response_code": eiresponse["response_code"],
                         "response_description": eiresponse.get("response_description"),
                         "report_request_ids": [r["report_request_id"] for r in ended],
                         "report_to_follow": to_follow, "pending_reports": pending})
    with ctx.store.atomic(ven_id):
        outbox.acknowledge(ctx, ven_id, request_id)
        for record in ended:
            if record["cancel"]["report_to_follow"]:
                record["state"] = "final_report"
                ctx.store.put_record(REPORT_REQUEST, ven_id, record["report_request_id"], record)
                # Removed after the retention period if the promised report never comes.
                removals.add(ctx, REPORT_REQUEST, ven_id, record["report_request_id"], ctx.now())
            else:
                ctx.store.delete_record(REPORT_REQUEST, ven_id, record["report_request_id"])
    return reply_name("oadrCanceledReport"), {"response": response(request_id), "ven_id": ven_id}


# ---------------------------------------------------------------------------------------------
# oadrUpdateReport from the VEN: the data.


def update_report(ctx: Context, ven: VenRecord, payload: dict[str, Any]
                  ) -> tuple[str, dict[str, Any]]:
    """oadrUpdateReport: check every report against its request, pass each to
    ``on_update_report(ven_id, report)`` and answer oadrUpdatedReport.

    A report naming an unknown reportRequestID, a METADATA request, another reportSpecifierID or
    an rID that was not requested is answered 452, and nothing of the message reaches the
    handler. Requests the VTN is cancelling get the cancel piggy-backed on the reply.
    """
    ven_id = ven["ven_id"]
    reports = payload.get("reports") or []
    checked = []
    # One read for all the VEN's requests, however many reports the message carries.
    records = ({r["report_request_id"]: r for r in ctx.store.list_records(REPORT_REQUEST, ven_id)}
               if reports else {})
    for index, report in enumerate(reports):
        record = _check_data(report, records.get(report["report_request_id"]), index)
        checked.append((record, handler_report(report, record, index)))
    handler = ctx.handler("on_update_report")
    if handler is not None:
        for _, data in checked:
            handler(ven_id, data)
    # Several reports may answer one request: it ends once.
    done = list({record["report_request_id"]: record for record, _ in checked
                 if record["state"] == "final_report"
                 or record["report_back_duration"] == _ZERO}.values())
    if done:
        with ctx.store.atomic(ven_id):
            for record in done:
                # A one-shot request (reportBackDuration 0) is fulfilled by its report, and a
                # cancelled one with reportToFollow by its final report.
                ctx.store.delete_record(REPORT_REQUEST, ven_id, record["report_request_id"])
    reply: dict[str, Any] = {"response": response(payload["request_id"]), "ven_id": ven_id}
    cancel = _piggy_back(ven_id, [record for record, _ in checked if record not in done])
    if cancel is not None:
        reply["cancel_report"] = cancel
    return reply_name("oadrUpdateReport"), reply


def _check_data(report: Mapping[str, Any], record: dict[str, Any] | None,
                index: int) -> dict[str, Any]:
    """The request ``report`` (the message's ``index``-th) answers, its record being ``record``
    (None: no such request); refused when the report does not fit it."""
    report_request_id = report["report_request_id"]
    if record is None:
        raise InvalidID(description=f"reports[{index}]: reportRequestID {report_request_id!r} "
                        "names no report request of this VTN (never sent, or ended)")
    if record["report_specifier_id"] == METADATA:
        raise InvalidID(description=f"reports[{index}]: reportRequestID {report_request_id!r} "
                        "asked for METADATA; answer it with oadrRegisterReport")
    if report["report_specifier_id"] != record["report_specifier_id"]:
        raise InvalidID(description=f"reports[{index}]: reportSpecifierID "
                        f"{report['report_specifier_id']!r} is not the one requested by "
                        f"{report_request_id!r} ({record['report_specifier_id']!r})")
    if report.get("report_descriptions"):
        raise ComplianceError(description=f"reports[{index}]: a data report carries no "
                              "oadrReportDescription (that is METADATA)")
    return record


def handler_report(report: Mapping[str, Any], record: Mapping[str, Any],
                   index: int) -> dict[str, Any]:
    """The form ``on_update_report`` receives (see docs/reports.rst): each interval with an
    absolute ``dtstart`` (its own, else the previous start plus the previous duration, or the
    report's dtstart for the first) and its ``values``, the decoded report payloads."""
    requested = record["r_ids"]
    step_default = record["granularity"] if record["granularity"] > _ZERO else None
    cursor = report.get("dtstart")
    intervals = []
    for position, interval in enumerate(report.get("intervals") or ()):
        start = interval.get("dtstart")
        if start is None:
            if cursor is None:
                raise InvalidData(description=f"reports[{index}].intervals[{position}] has no "
                                  "dtstart, and none follows from the report dtstart and the "
                                  "durations before it")
            start = cursor
        duration = interval.get("duration")
        step = duration if duration is not None else step_default
        cursor = (bounds.end_of(start, step, f"reports[{index}].intervals[{position}]")
                  if step is not None else None)
        values = interval["report_payloads"]
        for value in values:
            if value["r_id"] not in requested:
                raise InvalidID(description=f"reports[{index}].intervals[{position}]: rID "
                                f"{value['r_id']!r} was not requested by "
                                f"{record['report_request_id']!r} (requested: {requested})")
        item = {"dtstart": start, "duration": duration, "values": values}
        if "uid" in interval:
            item["uid"] = interval["uid"]
        intervals.append(item)
    data = {
        "report_request_id": report["report_request_id"],
        "report_specifier_id": report["report_specifier_id"],
        "report_name": report.get("report_name"),
        "created_date_time": report["created_date_time"],
        "dtstart": report.get("dtstart"),
        "duration": report.get("duration"),
        "intervals": intervals,
    }
    if "report_id" in report:
        data["report_id"] = report["report_id"]
    return data


def _piggy_back(ven_id: str, records: Iterable[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The oadrCancelReport for delivered requests the VTN is cancelling (only IDs contained in
    the delivered reports, as the harness requires); the first pending cancel if several."""
    cancelling = [r for r in records if r["state"] == "cancelling"]
    if not cancelling:
        return None
    cancel = cancelling[0]["cancel"]
    ids = []
    for record in cancelling:
        if (record["cancel"]["request_id"] == cancel["request_id"]
                and record["report_request_id"] not in ids):
            ids.append(record["report_request_id"])
    return {"request_id": cancel["request_id"], "report_request_ids": ids,
            "report_to_follow": cancel["report_to_follow"], "ven_id": ven_id}


# ---------------------------------------------------------------------------------------------
# The VTN's own actions (the Python API).


def _registered(ctx: Context, ven_id: str) -> None:
    ven = ctx.store.get_ven(ven_id)
    if not is_registered(ven):
        raise LookupError(f"VEN {ven_id!r} has no active registration")


def ven_report(ctx: Context, ven_id: str, report_specifier_id: str) -> dict[str, Any]:
    report = ctx.store.get_record(VEN_REPORT, ven_id, report_specifier_id)
    if report is None:
        offered = [r["report_specifier_id"] for r in ctx.store.list_records(VEN_REPORT, ven_id)]
        raise LookupError(f"VEN {ven_id!r} offers no report {report_specifier_id!r}; it offers "
                          f"{offered}")
    return report


def request_report(ctx: Context, ven_id: str, report_specifier_id: str,
                   r_ids: Sequence[str | Mapping[str, Any]], *,
                   granularity: timedelta | None = None,
                   report_back_duration: timedelta | None = None,
                   report_interval: Mapping[str, Any] | None = None) -> str:
    """Queue oadrCreateReport with one request for rIDs of a report the VEN offers.

    ``r_ids`` holds rID strings, or data point dicts whose ``granularity`` and
    ``report_back_duration`` (when given) must equal the others: one request has one timing.
    """
    _registered(ctx, ven_id)
    report = ven_report(ctx, ven_id, report_specifier_id)
    if isinstance(r_ids, str):
        raise TypeError(f"r_ids must be a list of rIDs, not the string {r_ids!r}")
    names: list[str] = []
    for item in r_ids:
        if isinstance(item, Mapping):
            for key, value in (("granularity", granularity),
                               ("report_back_duration", report_back_duration)):
                if key in item and value is not None and item[key] != value:
                    raise ValueError(f"data point {item.get('r_id')!r} has {key} {item[key]} but "
                                     f"another has {value}; one request has one {key}: call "
                                     "request_report once per timing")
            if "r_id" not in item:
                raise TypeError(f"data point {dict(item)!r} has no 'r_id'; a data point is a "
                                "dict with 'r_id' and, optionally, 'granularity' and "
                                "'report_back_duration'")
            granularity = item.get("granularity", granularity)
            report_back_duration = item.get("report_back_duration", report_back_duration)
            names.append(item["r_id"])
        else:
            names.append(item)
    if granularity is None or report_back_duration is None:
        raise TypeError("request_report needs granularity and report_back_duration (as "
                        "keywords, or in every data point)")
    create_id = ctx.new_id()
    record = new_request(ctx, report, names, granularity=granularity,
                         report_back_duration=report_back_duration,
                         report_interval=report_interval, message_request_id=create_id)
    return _queue_create(ctx, ven_id, create_id, record)


def request_named_report(ctx: Context, ven_id: str, report_name: str, *,
                         report_back_duration: timedelta = _ZERO) -> str:
    """Queue a request for every data point of the first report named ``report_name``
    (``TELEMETRY_USAGE``; with or without ``METADATA_``) the VEN registered, sampled at the
    largest oadrMinPeriod among them: one granularity serves every rID of a request, and none may
    be sampled faster than it allows (0, "as registered", when no sampling rate is given)."""
    _registered(ctx, ven_id)
    offered = ctx.store.list_records(VEN_REPORT, ven_id)
    wanted = plain_name(report_name)
    for report in offered:
        if plain_name(report.get("report_name")) == wanted:
            break
    else:
        raise LookupError(f"VEN {ven_id!r} registered no {wanted} report; it registered "
                          f"{sorted(str(plain_name(r.get('report_name'))) for r in offered)}")
    descriptions = report.get("report_descriptions") or []
    periods = [d["sampling_rate"]["min_period"] for d in descriptions
               if d.get("sampling_rate") and d["sampling_rate"].get("min_period")]
    return request_report(ctx, ven_id, report["report_specifier_id"],
                          [d["r_id"] for d in descriptions],
                          granularity=max(periods) if periods else _ZERO,
                          report_back_duration=report_back_duration)


def request_metadata(ctx: Context, ven_id: str) -> str:
    """Queue oadrCreateReport asking the VEN to send its METADATA again (oadrRegisterReport)."""
    _registered(ctx, ven_id)
    create_id = ctx.new_id()
    record = metadata_request(ctx, create_id)
    return _queue_create(ctx, ven_id, create_id, record)


def _queue_create(ctx: Context, ven_id: str, create_id: str, record: dict[str, Any]) -> str:
    """Store the request ``record`` and queue the oadrCreateReport ``create_id`` carrying it;
    returns its reportRequestID."""
    report_request_id: str = record["report_request_id"]
    with ctx.store.atomic():
        ctx.store.put_record(REPORT_REQUEST, ven_id, report_request_id, record)
        outbox.push(ctx, ven_id, "oadrCreateReport", {
            "request_id": create_id, "report_requests": [wire_request(record)], "ven_id": ven_id})
    return report_request_id


def cancel_report(ctx: Context, ven_id: str, report_request_id: str,
                  report_to_follow: bool = False) -> str:
    """Cancel a request: oadrCancelReport on the VEN's next poll, and piggy-backed on the
    oadrUpdatedReport of any data the VEN sends for it before it acknowledges.

    :returns: the requestID of the oadrCancelReport (the VEN's oadrCanceledReport echoes it).
    """
    if not isinstance(report_to_follow, bool):
        raise TypeError(f"report_to_follow must be a bool, not {report_to_follow!r}")
    with ctx.store.atomic():
        record = ctx.store.get_record(REPORT_REQUEST, ven_id, report_request_id)
        if record is None:
            raise LookupError(f"VEN {ven_id!r} has no report request {report_request_id!r}")
        if record["state"] not in ("requested", "active"):
            raise LookupError(f"report request {report_request_id!r} of VEN {ven_id!r} is "
                              f"already cancelled ({record['state']})")
        return _start_cancel(ctx, ven_id, [record], report_to_follow)


def _start_cancel(ctx: Context, ven_id: str, records: list[dict[str, Any]],
                  report_to_follow: bool) -> str:
    cancel_id = ctx.new_id()
    for record in records:
        record["state"] = "cancelling"
        record["cancel"] = {"request_id": cancel_id, "report_to_follow": report_to_follow}
        ctx.store.put_record(REPORT_REQUEST, ven_id, record["report_request_id"], record)
    outbox.push(ctx, ven_id, "oadrCancelReport", {
        "request_id": cancel_id,
        "report_request_ids": [r["report_request_id"] for r in records],
        "report_to_follow": report_to_follow, "ven_id": ven_id})
    return cancel_id


def superseded(ctx: Context, ven_id: str, item: Mapping[str, Any]) -> bool:
    """Whether a queued (or sent, unacknowledged) report message is no longer needed: an
    oadrCreateReport none of whose requests still waits for the VEN's answer (the VTN cancelled
    them, so the cancel replaces the create; or the VEN answered another way), or an
    oadrCancelReport the VEN already acknowledged (it got it piggy-backed on an
    oadrUpdatedReport)."""
    if item["payload_name"] == "oadrCreateReport":
        for request in item["payload"]["report_requests"]:
            record = ctx.store.get_record(REPORT_REQUEST, ven_id, request["report_request_id"])
            if record and record["state"] == "requested":
                return False
        return True
    if item["payload_name"] != "oadrCancelReport":
        return False
    cancel_id = item["payload"]["request_id"]
    for report_request_id in item["payload"]["report_request_ids"]:
        record = ctx.store.get_record(REPORT_REQUEST, ven_id, report_request_id)
        if (record and record["state"] == "cancelling"
                and record["cancel"]["request_id"] == cancel_id):
            return False
    return True
