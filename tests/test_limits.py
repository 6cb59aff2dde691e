"""The limits of docs/limits.rst: values the schema allows but the VTN cannot honour get the paired
reply with 454 and change nothing; long lists are refused the same way.

Each case was an HTTP 500, a 400 the VEN could not act on, or a record that broke the operator
API later. Every request goes through tests/support/hostile.py's post_checked (no 500, under a
second, XSD-valid replies, the store unchanged when refused).
"""
from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pytest

from flask_openadr import codec
from flask_openadr.codec.convert import MAX_REPEATED
from flask_openadr.services import bounds
from flask_openadr.testing import data_point, data_report, metadata_report
from tests.support.clock import T0
from tests.support.hostile import post_checked, snapshot
from tests.support.vens import make_ven


def send(ven, store, service, payload_name, payload, replace=None):
    """Encode and post; ``replace`` swaps bytes of the encoded message (values the codec would
    never write, such as P1M). Returns the decoded reply."""
    body = codec.encode(payload_name, payload)
    for old, new in (replace or {}).items():
        assert body.count(old) == 1, (old, body)
        body = body.replace(old, new)
    response = post_checked(ven, store, service, body)
    assert response.status_code == 200, response.get_data(as_text=True)
    return codec.decode(response.get_data())


def store_of(app):
    return app.extensions["openadr"].context.store


def code(reply) -> int:
    return reply["response"]["response_code"]


def registered(app):
    ven = make_ven(app)
    assert code(ven.register()[1]) == 200
    assert ven.poll()[0] == "oadrRegisterReport"
    return ven


def register_report_payload(ven, reports):
    return {"request_id": uuid.uuid4().hex, "ven_id": ven.ven_id, "reports": reports}


@pytest.mark.parametrize("duration", [b"P1M", b"P2Y", b"P1Y2M3D"])
def test_a_calendar_duration_gets_454_in_the_paired_reply(telemetry_app, duration):
    vtn, app = telemetry_app.extensions["test_vtn"], telemetry_app
    ven = registered(app)
    report = metadata_report("spec-1", "TELEMETRY_USAGE", [data_point("rid-1")],
                             duration=timedelta(hours=7))
    name, reply = send(ven, store_of(app), "EiReport", "oadrRegisterReport",
                       register_report_payload(ven, [report]), {b"PT7H": duration})
    assert name == "oadrRegisteredReport"
    assert code(reply) == 454
    assert duration.decode() in reply["response"]["response_description"]
    assert "days" in reply["response"]["response_description"]  # says what would be right
    assert reply["ven_id"] == ven.ven_id
    with app.app_context():
        assert vtn.ven_reports(ven.ven_id) == []


def test_a_calendar_duration_with_a_malformed_value_after_it_is_still_a_400(app, vtn,
                                                                             registered_ven):
    report = metadata_report("spec-1", "x-custom", [data_point("rid-1")],
                             duration=timedelta(hours=7))
    body = codec.encode("oadrRegisterReport", register_report_payload(registered_ven, [report]))
    body = body.replace(b"PT7H", b"P1M").replace(b"<ei:rID>rid-1</ei:rID>",
                                                 b"<ei:rID>rid-1</ei:rID><ei:bogus/>")
    response = post_checked(registered_ven, store_of(app), "EiReport", body)
    assert response.status_code == 400


def test_min_period_above_max_period_gets_454_under_the_telemetry_policy(telemetry_app):
    vtn, app = telemetry_app.extensions["test_vtn"], telemetry_app
    ven = registered(app)
    report = metadata_report("spec-1", "TELEMETRY_USAGE", [
        data_point("rid-1", min_period=timedelta(minutes=5), max_period=timedelta(minutes=1))])
    name, reply = send(ven, store_of(app), "EiReport", "oadrRegisterReport",
                       register_report_payload(ven, [report]))
    assert name == "oadrRegisteredReport" and code(reply) == 454
    assert "oadrMinPeriod" in reply["response"]["response_description"]
    with app.app_context():
        assert vtn.report_requests(ven.ven_id) == [] and vtn.ven_reports(ven.ven_id) == []


def subscribed(app, vtn, seen):
    """A VEN with one acknowledged periodic request for rid-1 of spec-1 (data reports go to
    ``seen``); returns (ven, request)."""
    vtn.on_update_report(lambda ven_id, report: seen.append(report))

    @vtn.on_register_report
    def register(ven_id, report):
        return [{"r_id": "rid-1", "granularity": timedelta(minutes=1),
                 "report_back_duration": timedelta(minutes=1)}]

    ven = registered(app)
    name, reply = ven.register_report([metadata_report("spec-1", "TELEMETRY_USAGE",
                                                       [data_point("rid-1")])])
    assert code(reply) == 200
    request = reply["report_requests"][0]["report_request_id"]
    assert code(ven.created_report(reply["request_id"] if "request_id" in reply else "",
                                   [request])[1]) == 200
    return ven, request


def test_an_interval_running_past_9999_gets_454(app, vtn):
    seen = []
    ven, request = subscribed(app, vtn, seen)
    intervals = [{"duration": timedelta(days=1),
                  "report_payloads": [{"r_id": "rid-1", "value": 1.0}]}] * 2
    report = data_report(request, "spec-1", "TELEMETRY_USAGE", intervals,
                         dtstart=datetime(9999, 12, 31, 0, 0, tzinfo=timezone.utc))
    name, reply = send(ven, store_of(app), "EiReport", "oadrUpdateReport",
                       {"request_id": "u-1", "ven_id": ven.ven_id, "reports": [report]})
    assert name == "oadrUpdatedReport" and code(reply) == 454
    assert "9999-12-31" in reply["response"]["response_description"]
    assert seen == []


def test_an_opt_window_past_9999_gets_454_and_opted_out_still_works(app, vtn, registered_ven):
    payload = {"opt_id": "opt-1", "opt_type": "optOut", "opt_reason": "x-schedule",
               "ven_id": registered_ven.ven_id, "created_date_time": T0, "request_id": "r-1",
               "target": {}, "vavailability": {"available": [
                   {"dtstart": T0, "duration": timedelta(days=7)}]}}
    name, reply = send(registered_ven, store_of(app), "EiOpt", "oadrCreateOpt", payload,
                       {b"P7D": b"P999999999D"})
    assert name == "oadrCreatedOpt" and code(reply) == 454
    with app.app_context():
        assert vtn.opts(registered_ven.ven_id) == []
        assert vtn.opted_out(registered_ven.ven_id, T0, T0 + timedelta(hours=1)) == []


def test_a_long_opt_window_that_fits_is_stored_and_found(app, vtn, registered_ven):
    name, reply = registered_ven.create_opt("opt-1", windows=[(T0, timedelta(days=99999))])
    assert code(reply) == 200
    with app.app_context():
        found = vtn.opted_out(registered_ven.ven_id, T0 + timedelta(days=9000),
                              T0 + timedelta(days=9001))
    assert [record["opt_id"] for record in found] == ["opt-1"]


def test_the_bounds_of_the_date_range():
    assert bounds.end_of(T0, timedelta(days=1), "x") == T0 + timedelta(days=1)
    with pytest.raises(Exception) as caught:
        bounds.end_of(bounds.LATEST, timedelta(seconds=1), "reports[0].intervals[2]")
    assert caught.value.response_code == 454
    assert "reports[0].intervals[2]" in caught.value.description
    assert bounds.clamped_end(bounds.LATEST, timedelta(days=1)) == bounds.LATEST
    assert bounds.clamped_end(bounds.EARLIEST, -timedelta(days=1)) == bounds.EARLIEST


@pytest.mark.parametrize("count, expected", [(MAX_REPEATED, 452), (MAX_REPEATED + 1, 454)])
def test_a_list_longer_than_the_limit_gets_454(app, vtn, registered_ven, count, expected):
    ids = [f"rr-{n}" for n in range(count)]
    before = snapshot(store_of(app))
    name, reply = send(registered_ven, store_of(app), "EiReport", "oadrCancelReport",
                       {"request_id": "c-1", "report_request_ids": ids,
                        "report_to_follow": False, "ven_id": registered_ven.ven_id})
    assert name == "oadrCanceledReport" and code(reply) == expected
    description = reply["response"]["response_description"]
    if expected == 454:
        assert f"{count} ei:reportRequestID" in description and str(MAX_REPEATED) in description
    assert len(description) < 300  # the unknown IDs are not all repeated back
    assert snapshot(store_of(app)) == before


def test_oversized_lists_of_event_responses_are_refused(app, vtn, registered_ven):
    responses = [{"response_code": 200, "request_id": "r", "opt_type": "optIn",
                  "qualified_event_id": {"event_id": f"ev-{n}", "modification_number": 0}}
                 for n in range(MAX_REPEATED + 1)]
    name, reply = send(registered_ven, store_of(app), "EiEvent", "oadrCreatedEvent",
                       {"response": {"response_code": 200, "request_id": "r"},
                        "event_responses": responses, "ven_id": registered_ven.ven_id})
    assert name == "oadrResponse" and code(reply) == 454


def test_a_negative_availability_window_gets_454(app, vtn, registered_ven):
    payload = {"opt_id": "opt-1", "opt_type": "optOut", "opt_reason": "x-schedule",
               "ven_id": registered_ven.ven_id, "created_date_time": T0, "request_id": "r-1",
               "target": {}, "vavailability": {"available": [
                   {"dtstart": T0, "duration": -timedelta(hours=1)}]}}
    name, reply = send(registered_ven, store_of(app), "EiOpt", "oadrCreateOpt", payload)
    assert name == "oadrCreatedOpt" and code(reply) == 454
    assert "negative" in reply["response"]["response_description"]
    with app.app_context():
        assert vtn.opts(registered_ven.ven_id) == []
