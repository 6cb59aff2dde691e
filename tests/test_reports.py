"""EiReport with the VEN as producer: METADATA, report requests, data, cancels, METADATA requests.

Every reply is checked against the official XSD by the ValidatingVEN client (tests/support/vens.py).
"""
from __future__ import annotations

from datetime import timedelta

import pytest
from flask import Flask

from flask_openadr import VTN, Rejection, codec
from flask_openadr.errors import ConfigurationError
from flask_openadr.services import registration
from flask_openadr.testing import data_point, data_report, metadata_report
from tests.support.clock import T0
from tests.support.vens import make_ven

POWER_REAL = {"kind": "powerReal", "item_description": "RealPower", "item_units": "W",
              "si_scale_code": "k", "power_attributes": {"hertz": 60.0, "voltage": 120.0,
                                                         "ac": True}}
USAGE = metadata_report("spec-usage", "TELEMETRY_USAGE", [
    data_point("rid-power", min_period=timedelta(seconds=10), max_period=timedelta(minutes=1),
               item_base=POWER_REAL),
    data_point("rid-energy", min_period=timedelta(seconds=30), max_period=timedelta(minutes=5)),
])
STATUS = metadata_report("spec-status", "TELEMETRY_STATUS", [
    data_point("rid-status", report_type="x-resourceStatus", reading_type="x-notApplicable"),
])
HISTORY = metadata_report("spec-history", "HISTORY_USAGE", [
    data_point("rid-history", min_period=None, item_base=POWER_REAL),
], duration=timedelta(days=1))
CUSTOM = metadata_report("spec-custom", "x-batteryTemperature", [
    data_point("rid-temp", report_type="x-temperature", reading_type="x-RMS"),
])


def code(reply):
    return reply["response"]["response_code"]


def point(r_id, granularity, report_back_duration, **extra):
    return {"r_id": r_id, "granularity": granularity, "report_back_duration": report_back_duration,
            **extra}


def make_app(tmp_path, store_uri, clock, **config) -> Flask:
    app = Flask("reports_app", instance_path=str(tmp_path / "instance"))
    app.config.update(TESTING=True, OPENADR_STORE_URI=store_uri, OPENADR_VTN_ID="TEST-VTN",
                      **config)
    app.extensions["test_vtn"] = VTN(app, clock=clock)
    return app


@pytest.fixture
def policy_app(tmp_path, store_uri, clock) -> Flask:
    return make_app(tmp_path, store_uri, clock, OPENADR_REPORT_POLICY="telemetry")


def registered(app):
    ven = make_ven(app)
    assert code(ven.register()[1]) == 200
    name, _ = ven.poll()
    assert name == "oadrRegisterReport"
    return ven


def subscribe(app, vtn, reports=(USAGE,), points=None):
    """Register ``reports`` with an on_register_report handler requesting ``points`` (by
    reportSpecifierID) and acknowledge every request; returns (ven, request records by rID)."""
    points = points if points is not None else {
        "spec-usage": [point("rid-power", timedelta(seconds=10), timedelta(seconds=10))]}

    @vtn.on_register_report
    def register(ven_id, report):
        return points.get(report["report_specifier_id"])

    ven = registered(app)
    name, reply = ven.register_report(list(reports))
    assert name == "oadrRegisteredReport" and code(reply) == 200
    ids = [r["report_request_id"] for r in reply["report_requests"]]
    assert code(ven.created_report(reply["response"]["request_id"], ids)[1]) == 200
    with app.app_context():
        records = vtn.report_requests(ven.ven_id)
    return ven, {r_id: r for r in records for r_id in r["r_ids"]}


# ---------------------------------------------------------------------------------------------
# METADATA from the VEN


def test_register_report_stores_capabilities_and_answers_with_requests(app, vtn):
    seen = []

    @vtn.on_register_report
    def register(ven_id, report):
        seen.append((ven_id, report["report_specifier_id"], report["report_name"]))
        if report["report_specifier_id"] == "spec-usage":
            return [point("rid-power", timedelta(seconds=10), timedelta(minutes=1))]
        return None

    ven = registered(app)
    name, reply = ven.register_report([USAGE, STATUS])
    assert name == "oadrRegisteredReport" and code(reply) == 200
    assert reply["ven_id"] == ven.ven_id
    assert seen == [(ven.ven_id, "spec-usage", "METADATA_TELEMETRY_USAGE"),
                    (ven.ven_id, "spec-status", "METADATA_TELEMETRY_STATUS")]
    [request] = reply["report_requests"]
    assert request["report_specifier"]["report_specifier_id"] == "spec-usage"
    assert [p["r_id"] for p in request["report_specifier"]["specifier_payloads"]] == ["rid-power"]
    with app.app_context():
        assert [r["report_specifier_id"] for r in vtn.ven_reports(ven.ven_id)] == [
            "spec-usage", "spec-status"]
        [record] = vtn.report_requests(ven.ven_id)
    assert record["report_request_id"] == request["report_request_id"]
    assert record["state"] == "requested" and record["report_name"] == "TELEMETRY_USAGE"


def test_new_metadata_replaces_the_old_and_cancels_requests_for_removed_rids(app, vtn):
    wanted = {
        "spec-usage": [point("rid-power", timedelta(seconds=10), timedelta(seconds=10)),
                       point("rid-energy", timedelta(seconds=30), timedelta(seconds=30))],
        "spec-status": [point("rid-status", timedelta(seconds=10), timedelta(seconds=10))]}
    ven, requests = subscribe(app, vtn, reports=[USAGE, STATUS], points=wanted)
    wanted.clear()
    shrunk = metadata_report("spec-usage", "TELEMETRY_USAGE", [
        data_point("rid-energy", min_period=timedelta(seconds=30),
                   max_period=timedelta(minutes=5))])
    name, reply = ven.register_report([shrunk])
    assert code(reply) == 200 and reply["report_requests"] == []  # the handler asks nothing new
    with app.app_context():
        assert [r["report_specifier_id"] for r in vtn.ven_reports(ven.ven_id)] == ["spec-usage"]
        states = {r["r_ids"][0]: r["state"] for r in vtn.report_requests(ven.ven_id)}
    assert states == {"rid-power": "cancelling", "rid-energy": "active",
                      "rid-status": "cancelling"}
    name, cancel = ven.poll()
    assert name == "oadrCancelReport" and cancel["report_to_follow"] is False
    assert sorted(cancel["report_request_ids"]) == sorted(
        [requests["rid-power"]["report_request_id"], requests["rid-status"]["report_request_id"]])
    assert code(ven.canceled_report(cancel["request_id"])[1]) == 200
    with app.app_context():
        assert [r["r_ids"] for r in vtn.report_requests(ven.ven_id)] == [["rid-energy"]]


@pytest.mark.parametrize("field, value", [
    ("dtstart", T0),
    ("intervals", [{"report_payloads": [{"r_id": "rid-power", "value": 1.0}]}]),
    ("report_id", "report-1"),
])
def test_metadata_with_data_fields_is_refused(app, vtn, field, value):
    ven = registered(app)
    name, reply = ven.register_report([dict(USAGE, **{field: value})])
    assert name == "oadrRegisteredReport" and code(reply) == 459
    assert reply["response"]["request_id"]
    with app.app_context():
        assert vtn.ven_reports(ven.ven_id) == []


def test_duplicate_report_specifier_or_rid_is_refused(app, vtn):
    ven = registered(app)
    assert code(ven.register_report([USAGE, USAGE])[1]) == 452
    twice = metadata_report("spec-x", "x-custom", [data_point("rid-a"), data_point("rid-a")])
    assert code(ven.register_report([twice])[1]) == 452
    with app.app_context():
        assert vtn.ven_reports(ven.ven_id) == []


def test_register_report_from_an_unregistered_ven_gets_463(app):
    ven = registered(app)
    ven.cancel_registration()
    name, reply = ven.register_report([USAGE])
    assert name == "oadrRegisteredReport" and code(reply) == 463


def test_handler_rejection_refuses_the_metadata(app, vtn):
    @vtn.on_register_report
    def register(ven_id, report):
        raise Rejection(461, "we do not take custom reports")

    ven = registered(app)
    name, reply = ven.register_report([CUSTOM])
    assert code(reply) == 461
    with app.app_context():
        assert vtn.ven_reports(ven.ven_id) == []


def test_handler_returning_a_granularity_below_the_minimum_is_a_bug(app, vtn):
    @vtn.on_register_report
    def register(ven_id, report):
        return [point("rid-power", timedelta(seconds=5), timedelta(seconds=5))]

    ven = registered(app)
    response = ven.post("EiReport", codec.encode("oadrRegisterReport", {
        "request_id": "r1", "reports": [USAGE], "ven_id": ven.ven_id}))
    assert response.status_code == 500
    with app.app_context():
        assert vtn.ven_reports(ven.ven_id) == []


# ---------------------------------------------------------------------------------------------
# The request-generation rules


def test_generated_requests_follow_the_conformance_rules(app, vtn, clock):
    @vtn.on_register_report
    def register(ven_id, report):
        if report["report_specifier_id"] == "spec-usage":
            return [point("rid-power", timedelta(seconds=10), timedelta(minutes=1)),
                    point("rid-energy", timedelta(seconds=30), timedelta(minutes=1))]
        if report["report_specifier_id"] == "spec-history":
            return [point("rid-history", timedelta(minutes=15), timedelta(0),
                          report_interval={"dtstart": T0 - timedelta(days=1),
                                           "duration": timedelta(days=1)})]
        return None

    ven = registered(app)
    response = ven.post("EiReport", codec.encode("oadrRegisterReport", {
        "request_id": "r1", "reports": [USAGE, HISTORY], "ven_id": ven.ven_id}))
    assert response.status_code == 200
    body = response.get_data()
    assert b"itemBase" not in body and b"powerReal" not in body  # rule 321
    _, reply = codec.decode(body)
    requests = reply["report_requests"]
    ids = [r["report_request_id"] for r in requests]
    assert len(ids) == 3 and len(set(ids)) == 3 and "0" not in ids and "" not in ids
    by_spec = {}
    for request in requests:
        specifier = request["report_specifier"]
        assert {p["reading_type"] for p in specifier["specifier_payloads"]} == {"x-notApplicable"}
        assert all(set(p) == {"r_id", "reading_type"} for p in specifier["specifier_payloads"])
        by_spec.setdefault(specifier["report_specifier_id"], []).append(specifier)
    # One request per timing: the two usage rIDs differ in granularity.
    usage = {s["specifier_payloads"][0]["r_id"]: s for s in by_spec["spec-usage"]}
    assert usage["rid-power"]["granularity"] == timedelta(seconds=10)
    assert usage["rid-energy"]["granularity"] == timedelta(seconds=30)
    for specifier in usage.values():
        # Periodic: a reportInterval from now, open-ended, with nothing but dtstart and duration.
        assert specifier["report_back_duration"] == timedelta(minutes=1)
        assert specifier["report_interval"] == {"dtstart": clock.now, "duration": timedelta(0)}
    [history] = by_spec["spec-history"]
    assert history["report_back_duration"] == timedelta(0)
    assert history["report_interval"] == {"dtstart": T0 - timedelta(days=1),
                                          "duration": timedelta(days=1)}


def test_one_shot_request_without_interval_has_none(app, vtn):
    ven, requests = subscribe(app, vtn, reports=[HISTORY], points={
        "spec-history": [point("rid-history", timedelta(0), timedelta(0))]})
    assert requests["rid-history"]["report_interval"] is None


def test_request_report_checks_granularity_against_the_sampling_rate(app, vtn):
    ven, _ = subscribe(app, vtn, points={})
    with app.app_context():
        with pytest.raises(ValueError, match=r"rID 'rid-power'.*below its oadrMinPeriod 0:00:10"):
            vtn.request_report(ven.ven_id, "spec-usage", ["rid-power"],
                               granularity=timedelta(seconds=5), report_back_duration=timedelta(0))
        with pytest.raises(ValueError, match=r"rID 'rid-energy'.*above its oadrMaxPeriod"):
            vtn.request_report(ven.ven_id, "spec-usage", ["rid-energy"],
                               granularity=timedelta(minutes=10), report_back_duration=timedelta(0))
        with pytest.raises(ValueError, match=r"rID 'rid-nope' is not in report 'spec-usage'"):
            vtn.request_report(ven.ven_id, "spec-usage", ["rid-nope"],
                               granularity=timedelta(seconds=30), report_back_duration=timedelta(0))
        with pytest.raises(LookupError, match="offers no report 'spec-nope'"):
            vtn.request_report(ven.ven_id, "spec-nope", ["rid-power"],
                               granularity=timedelta(seconds=30), report_back_duration=timedelta(0))
        with pytest.raises(ValueError, match="one request has one granularity"):
            vtn.request_report(ven.ven_id, "spec-usage", [
                point("rid-power", timedelta(seconds=10), timedelta(0)),
                point("rid-energy", timedelta(seconds=30), timedelta(0))])
        with pytest.raises(TypeError, match="needs granularity and report_back_duration"):
            vtn.request_report(ven.ven_id, "spec-usage", ["rid-power"])
        # A data point dict without its rID is named in the error (it used to reach the request
        # as an rID None).
        with pytest.raises(TypeError, match=r"data point \{'granularity'.*has no 'r_id'"):
            vtn.request_report(ven.ven_id, "spec-usage", [{"granularity": timedelta(0)}],
                               report_back_duration=timedelta(0))
        with pytest.raises(ValueError, match="rule 321"):
            vtn.request_report(ven.ven_id, "spec-usage", ["rid-power"],
                               granularity=timedelta(seconds=30), report_back_duration=timedelta(0),
                               report_interval={"dtstart": T0, "duration": timedelta(hours=1),
                                                "ramp_up": timedelta(minutes=5)})
        # Granularity 0 ("as registered") is always allowed; nothing was queued by the failures.
        vtn.request_report(ven.ven_id, "spec-usage", ["rid-power", "rid-energy"],
                           granularity=timedelta(0), report_back_duration=timedelta(0))
        assert [r["r_ids"] for r in vtn.report_requests(ven.ven_id)] == [
            ["rid-power", "rid-energy"]]
    assert ven.poll()[0] == "oadrCreateReport"
    assert ven.poll()[0] == "oadrResponse"


def test_request_report_is_sent_on_poll_and_acknowledged(app, vtn, clock):
    created = []

    @vtn.on_created_report
    def on_created(ven_id, payload):
        created.append((ven_id, payload))

    ven, _ = subscribe(app, vtn, reports=[USAGE, STATUS], points={})
    created.clear()
    with app.app_context():
        report_request_id = vtn.request_report(
            ven.ven_id, "spec-status", ["rid-status"], granularity=timedelta(seconds=10),
            report_back_duration=timedelta(seconds=30))
    name, create = ven.poll()
    assert name == "oadrCreateReport" and create["ven_id"] == ven.ven_id
    [request] = create["report_requests"]
    assert request["report_request_id"] == report_request_id
    assert request["report_specifier"]["report_interval"] == {"dtstart": clock.now,
                                                              "duration": timedelta(0)}
    name, ack = ven.created_report(create["request_id"], [report_request_id, "rr-unknown"])
    assert name == "oadrResponse" and code(ack) == 200
    assert ack["response"]["request_id"] == create["request_id"]
    assert created == [(ven.ven_id, {
        "request_id": create["request_id"], "response_code": 200, "response_description": "OK",
        "pending_reports": [report_request_id, "rr-unknown"], "accepted": [report_request_id],
        "refused": [], "unknown": ["rr-unknown"]})]
    with app.app_context():
        assert [r["state"] for r in vtn.report_requests(ven.ven_id)] == ["active"]


def test_requests_missing_from_the_pending_list_are_refused(app, vtn):
    @vtn.on_register_report
    def register(ven_id, report):
        return [point("rid-power", timedelta(seconds=10), timedelta(seconds=10)),
                point("rid-energy", timedelta(seconds=30), timedelta(seconds=30))]

    ven = registered(app)
    _, reply = ven.register_report([USAGE])
    power, energy = (r["report_request_id"] for r in reply["report_requests"])
    ven.created_report(reply["response"]["request_id"], [power])
    with app.app_context():
        assert [(r["report_request_id"], r["state"]) for r in vtn.report_requests(ven.ven_id)] == [
            (power, "active")]
    _, reply = ven.update_report([data_report(energy, "spec-usage", "TELEMETRY_USAGE", [
        {"report_payloads": [{"r_id": "rid-energy", "value": 1.0}]}], dtstart=T0)])
    assert code(reply) == 452


def test_an_error_code_refuses_every_carried_request(app, vtn):
    @vtn.on_register_report
    def register(ven_id, report):
        return [point("rid-power", timedelta(seconds=10), timedelta(seconds=10))]

    ven = registered(app)
    _, reply = ven.register_report([USAGE])
    ids = [r["report_request_id"] for r in reply["report_requests"]]
    ven.created_report(reply["response"]["request_id"], ids, code=452)
    with app.app_context():
        assert vtn.report_requests(ven.ven_id) == []


# ---------------------------------------------------------------------------------------------
# The default policy


def test_telemetry_policy_requests_every_telemetry_rid_at_its_minimum_period(policy_app):
    vtn = policy_app.extensions["test_vtn"]
    no_rate = metadata_report("spec-status-2", "TELEMETRY_STATUS", [
        data_point("rid-status-2", report_type="x-resourceStatus", reading_type="x-notApplicable",
                   min_period=None)])
    ven = registered(policy_app)
    _, reply = ven.register_report([USAGE, STATUS, HISTORY, CUSTOM, no_rate])
    requested = {p["r_id"]: r["report_specifier"] for r in reply["report_requests"]
                 for p in r["report_specifier"]["specifier_payloads"]}
    assert set(requested) == {"rid-power", "rid-energy", "rid-status"}
    for r_id, period in (("rid-power", 10), ("rid-energy", 30), ("rid-status", 10)):
        assert requested[r_id]["granularity"] == timedelta(seconds=period)
        assert requested[r_id]["report_back_duration"] == timedelta(seconds=period)
        assert requested[r_id]["report_interval"]["duration"] == timedelta(0)
    # The same METADATA again: what is subscribed already is not asked twice.
    _, again = ven.register_report([USAGE, STATUS])
    assert again["report_requests"] == []
    with policy_app.app_context():
        assert len(vtn.report_requests(ven.ven_id)) == 3


def test_without_policy_or_handler_nothing_is_requested(app, vtn):
    ven = registered(app)
    _, reply = ven.register_report([USAGE, STATUS])
    assert code(reply) == 200 and reply["report_requests"] == []


def test_a_handler_takes_precedence_over_the_policy(policy_app):
    vtn = policy_app.extensions["test_vtn"]

    @vtn.on_register_report
    def register(ven_id, report):
        return None

    ven = registered(policy_app)
    assert ven.register_report([USAGE])[1]["report_requests"] == []


@pytest.mark.parametrize("value, expected", [(None, "none"), ("none", "none"),
                                             ("telemetry", "telemetry")])
def test_report_policy_setting(tmp_path, clock, value, expected):
    app = make_app(tmp_path, "memory://", clock, OPENADR_REPORT_POLICY=value)
    assert app.extensions["openadr"].context.settings.report_policy == expected


def test_unknown_report_policy_is_a_configuration_error(tmp_path, clock):
    with pytest.raises(ConfigurationError, match="OPENADR_REPORT_POLICY must be 'none' or "
                                                 "'telemetry'"):
        make_app(tmp_path, "memory://", clock, OPENADR_REPORT_POLICY="everything")


# ---------------------------------------------------------------------------------------------
# Data: oadrUpdateReport


def test_telemetry_usage_data_reaches_the_handler_with_absolute_times(app, vtn):
    received = []

    @vtn.on_update_report
    def update(ven_id, report):
        received.append((ven_id, report))

    ven, requests = subscribe(app, vtn)
    report_request_id = requests["rid-power"]["report_request_id"]
    ten = timedelta(seconds=10)
    name, reply = ven.update_report([data_report(report_request_id, "spec-usage",
                                                 "TELEMETRY_USAGE", [
        {"duration": ten, "uid": "0", "report_payloads": [
            {"r_id": "rid-power", "confidence": 90, "accuracy": 0.5, "value": 1.5,
             "data_quality": "Quality Good - Non Specific"}]},
        {"duration": ten, "uid": "1", "report_payloads": [{"r_id": "rid-power", "value": 2.5}]},
        {"report_payloads": [{"r_id": "rid-power", "value": 3.5}]},
        {"dtstart": T0 + timedelta(minutes=5),
         "report_payloads": [{"r_id": "rid-power", "value": 4.5}]},
    ], dtstart=T0, report_id="report-7")])
    assert name == "oadrUpdatedReport" and code(reply) == 200
    assert reply["ven_id"] == ven.ven_id and "cancel_report" not in reply
    [(ven_id, report)] = received
    assert ven_id == ven.ven_id
    assert {k: v for k, v in report.items() if k != "intervals"} == {
        "report_request_id": report_request_id, "report_specifier_id": "spec-usage",
        "report_name": "TELEMETRY_USAGE", "report_id": "report-7",
        "created_date_time": report["created_date_time"], "dtstart": T0, "duration": None}
    assert report["intervals"] == [
        {"dtstart": T0, "duration": ten, "uid": "0", "values": [
            {"r_id": "rid-power", "confidence": 90, "accuracy": 0.5, "value": 1.5,
             "data_quality": "Quality Good - Non Specific"}]},
        {"dtstart": T0 + ten, "duration": ten, "uid": "1",
         "values": [{"r_id": "rid-power", "value": 2.5}]},
        # No duration: the next start follows from the requested granularity (10 s).
        {"dtstart": T0 + 2 * ten, "duration": None,
         "values": [{"r_id": "rid-power", "value": 3.5}]},
        {"dtstart": T0 + timedelta(minutes=5), "duration": None,
         "values": [{"r_id": "rid-power", "value": 4.5}]},
    ]
    with app.app_context():  # periodic: the subscription goes on
        assert vtn.report_requests(ven.ven_id)[0]["state"] == "active"


def test_telemetry_status_data_carries_resource_status(app, vtn):
    received = []

    @vtn.on_update_report
    def update(ven_id, report):
        received.append(report)

    ven, requests = subscribe(app, vtn, reports=[STATUS], points={
        "spec-status": [point("rid-status", timedelta(seconds=10), timedelta(seconds=10))]})
    status = {"online": True, "manual_override": False, "load_control_state": {
        "capacity": {"current": 0.5}, "set_point": {"min": 18.0, "max": 24.0, "current": 21.0}}}
    _, reply = ven.update_report([data_report(
        requests["rid-status"]["report_request_id"], "spec-status", "TELEMETRY_STATUS",
        [{"dtstart": T0, "report_payloads": [{"r_id": "rid-status", "resource_status": status,
                                              "confidence": 100}]}], dtstart=T0)])
    assert code(reply) == 200
    assert received[0]["intervals"] == [{"dtstart": T0, "duration": None, "values": [
        {"r_id": "rid-status", "confidence": 100, "resource_status": status}]}]


def test_history_usage_one_shot_is_delivered_once(app, vtn):
    received = []

    @vtn.on_update_report
    def update(ven_id, report):
        received.append(report)

    window = {"dtstart": T0 - timedelta(hours=1), "duration": timedelta(hours=1)}
    ven, requests = subscribe(app, vtn, reports=[HISTORY], points={
        "spec-history": [point("rid-history", timedelta(minutes=15), timedelta(0),
                               report_interval=window)]})
    report_request_id = requests["rid-history"]["report_request_id"]
    quarter = timedelta(minutes=15)
    history = data_report(report_request_id, "spec-history", "HISTORY_USAGE", [
        {"duration": quarter, "uid": str(i), "report_payloads": [
            {"r_id": "rid-history", "value": float(i)}]} for i in range(4)],
        dtstart=window["dtstart"], duration=timedelta(hours=1))
    assert code(ven.update_report([history])[1]) == 200
    assert [i["dtstart"] for i in received[0]["intervals"]] == [
        window["dtstart"] + n * quarter for n in range(4)]
    assert received[0]["duration"] == timedelta(hours=1)
    with app.app_context():
        assert vtn.report_requests(ven.ven_id) == []  # a one-shot request is fulfilled
    assert code(ven.update_report([history])[1]) == 452
    assert len(received) == 1


def test_data_for_a_request_not_yet_acknowledged_is_accepted(app, vtn):
    received = []

    @vtn.on_register_report
    def register(ven_id, report):
        return [point("rid-power", timedelta(seconds=10), timedelta(seconds=10))]

    @vtn.on_update_report
    def update(ven_id, report):
        received.append(report)

    ven = registered(app)
    _, reply = ven.register_report([USAGE])
    report_request_id = reply["report_requests"][0]["report_request_id"]
    # Some VENs (openleadr) send the first data before their oadrCreatedReport.
    _, updated = ven.update_report([data_report(report_request_id, "spec-usage",
                                                "TELEMETRY_USAGE", [
        {"report_payloads": [{"r_id": "rid-power", "value": 1.0}]}], dtstart=T0)])
    assert code(updated) == 200 and len(received) == 1


@pytest.mark.parametrize("case", ["unknown request", "unrequested rid", "other specifier",
                                  "metadata request"])
def test_invalid_ids_in_data_get_452_and_nothing_reaches_the_handler(app, vtn, case):
    received = []

    @vtn.on_update_report
    def update(ven_id, report):
        received.append(report)

    ven, requests = subscribe(app, vtn, reports=[USAGE, STATUS], points={
        "spec-usage": [point("rid-power", timedelta(seconds=10), timedelta(seconds=10))]})
    report_request_id = requests["rid-power"]["report_request_id"]
    good = data_report(report_request_id, "spec-usage", "TELEMETRY_USAGE", [
        {"report_payloads": [{"r_id": "rid-power", "value": 1.0}]}], dtstart=T0)
    if case == "unknown request":
        bad = dict(good, report_request_id="rr-never-sent")
        expected = "'rr-never-sent' names no report request"
    elif case == "unrequested rid":
        # rid-energy is offered but was not requested: the whole report (and message) is refused.
        bad = dict(good, intervals=[{"report_payloads": [
            {"r_id": "rid-power", "value": 1.0}, {"r_id": "rid-energy", "value": 2.0}]}])
        expected = "rID 'rid-energy' was not requested"
    elif case == "other specifier":
        bad = dict(good, report_specifier_id="spec-status")
        expected = "reportSpecifierID 'spec-status' is not the one requested"
    else:
        with app.app_context():
            metadata_id = vtn.request_metadata(ven.ven_id)
        bad = dict(good, report_request_id=metadata_id, report_specifier_id="METADATA")
        expected = "asked for METADATA"
    name, reply = ven.update_report([good, bad])
    assert name == "oadrUpdatedReport" and code(reply) == 452
    assert expected in reply["response"]["response_description"]
    assert reply["ven_id"] == ven.ven_id and reply["response"]["request_id"]
    assert received == []
    assert code(ven.update_report([good])[1]) == 200 and len(received) == 1


def test_an_interval_whose_start_cannot_be_computed_gets_454(app, vtn):
    ven, requests = subscribe(app, vtn, points={
        "spec-usage": [point("rid-power", timedelta(0), timedelta(seconds=10))]})
    _, reply = ven.update_report([data_report(
        requests["rid-power"]["report_request_id"], "spec-usage", "TELEMETRY_USAGE", [
            {"dtstart": T0, "report_payloads": [{"r_id": "rid-power", "value": 1.0}]},
            {"report_payloads": [{"r_id": "rid-power", "value": 2.0}]}])])
    assert code(reply) == 454
    assert "intervals[1] has no dtstart" in reply["response"]["response_description"]


def test_update_report_xml_from_a_raw_document(app, vtn):
    """A hand-written oadrUpdateReport, as a VEN would send it (no envelope prefixes from us)."""
    received = []

    @vtn.on_update_report
    def update(ven_id, report):
        received.append(report)

    ven, requests = subscribe(app, vtn)
    report_request_id = requests["rid-power"]["report_request_id"]
    body = f"""<?xml version="1.0" encoding="UTF-8"?>
<oadr:oadrPayload xmlns:oadr="http://openadr.org/oadr-2.0b/2012/07">
 <oadr:oadrSignedObject>
  <oadr:oadrUpdateReport ei:schemaVersion="2.0b"
      xmlns:ei="http://docs.oasis-open.org/ns/energyinterop/201110"
      xmlns:pyld="http://docs.oasis-open.org/ns/energyinterop/201110/payloads"
      xmlns:xcal="urn:ietf:params:xml:ns:icalendar-2.0"
      xmlns:strm="urn:ietf:params:xml:ns:icalendar-2.0:stream">
   <pyld:requestID>upd-1</pyld:requestID>
   <oadr:oadrReport>
    <xcal:dtstart><xcal:date-time>2026-12-01T12:00:00Z</xcal:date-time></xcal:dtstart>
    <strm:intervals>
     <ei:interval>
      <xcal:duration><xcal:duration>PT10S</xcal:duration></xcal:duration>
      <oadr:oadrReportPayload>
       <ei:rID>rid-power</ei:rID>
       <ei:payloadFloat><ei:value>42.5</ei:value></ei:payloadFloat>
      </oadr:oadrReportPayload>
     </ei:interval>
     <ei:interval>
      <xcal:duration><xcal:duration>PT10S</xcal:duration></xcal:duration>
      <oadr:oadrReportPayload>
       <ei:rID>rid-power</ei:rID>
       <ei:payloadFloat><ei:value>43.5</ei:value></ei:payloadFloat>
      </oadr:oadrReportPayload>
     </ei:interval>
    </strm:intervals>
    <ei:eiReportID>rep-1</ei:eiReportID>
    <ei:reportRequestID>{report_request_id}</ei:reportRequestID>
    <ei:reportSpecifierID>spec-usage</ei:reportSpecifierID>
    <ei:reportName>TELEMETRY_USAGE</ei:reportName>
    <ei:createdDateTime>2026-12-01T12:00:21Z</ei:createdDateTime>
   </oadr:oadrReport>
   <ei:venID>{ven.ven_id}</ei:venID>
  </oadr:oadrUpdateReport>
 </oadr:oadrSignedObject>
</oadr:oadrPayload>""".encode()
    response = ven.post("EiReport", body)
    assert response.status_code == 200
    name, reply = codec.decode(response.get_data())
    assert name == "oadrUpdatedReport" and reply["response"]["request_id"] == "upd-1"
    assert [(i["dtstart"], i["values"][0]["value"]) for i in received[0]["intervals"]] == [
        (T0, 42.5), (T0 + timedelta(seconds=10), 43.5)]


# ---------------------------------------------------------------------------------------------
# Cancelling


def test_cancel_is_delivered_on_poll_and_acknowledged(app, vtn):
    canceled = []

    @vtn.on_canceled_report
    def on_canceled(ven_id, payload):
        canceled.append((ven_id, payload))

    ven, requests = subscribe(app, vtn)
    report_request_id = requests["rid-power"]["report_request_id"]
    with app.app_context():
        cancel_id = vtn.cancel_report(ven.ven_id, report_request_id)
        with pytest.raises(LookupError, match="already cancelled"):
            vtn.cancel_report(ven.ven_id, report_request_id)
    name, cancel = ven.poll()
    assert name == "oadrCancelReport"
    assert cancel == {"request_id": cancel_id, "report_request_ids": [report_request_id],
                      "report_to_follow": False, "ven_id": ven.ven_id}
    name, reply = ven.canceled_report(cancel_id)
    assert name == "oadrResponse" and code(reply) == 200
    assert reply["response"]["request_id"] == cancel_id
    assert canceled == [(ven.ven_id, {
        "request_id": cancel_id, "response_code": 200, "response_description": "OK",
        "report_request_ids": [report_request_id], "report_to_follow": False,
        "pending_reports": []})]
    with app.app_context():
        assert vtn.report_requests(ven.ven_id) == []
    _, late = ven.update_report([data_report(report_request_id, "spec-usage", "TELEMETRY_USAGE", [
        {"report_payloads": [{"r_id": "rid-power", "value": 1.0}]}], dtstart=T0)])
    assert code(late) == 452


def test_a_cancel_made_while_the_ven_acknowledges_the_request_is_not_undone(app, vtn):
    # The operator cancels a request while the VTN processes the VEN's oadrCreatedReport for
    # it (here from the handler, which runs between the VTN's read of the requests and its
    # write): the acknowledgement must not write the request back as active, or the
    # oadrCancelReport is dropped as superseded and never sent (seen with push on PostgreSQL).
    armed, cancels = [], []

    @vtn.on_created_report
    def cancel_meanwhile(ven_id, payload):
        for report_request_id in armed:
            cancels.append(vtn.cancel_report(ven_id, report_request_id))

    ven, _ = subscribe(app, vtn, reports=[USAGE, STATUS], points={})
    with app.app_context():
        report_request_id = vtn.request_report(
            ven.ven_id, "spec-status", ["rid-status"], granularity=timedelta(seconds=10),
            report_back_duration=timedelta(seconds=30))
    armed.append(report_request_id)
    name, create = ven.poll()
    assert name == "oadrCreateReport"
    assert code(ven.created_report(create["request_id"], [report_request_id])[1]) == 200
    with app.app_context():
        assert [r["state"] for r in vtn.report_requests(ven.ven_id)] == ["cancelling"]
    name, cancel = ven.poll()
    assert name == "oadrCancelReport" and cancel["request_id"] == cancels[0]


def test_cancel_is_piggy_backed_on_data_sent_before_the_next_poll(app, vtn):
    received = []

    @vtn.on_update_report
    def update(ven_id, report):
        received.append(report)

    ven, requests = subscribe(app, vtn, reports=[USAGE, STATUS], points={
        "spec-usage": [point("rid-power", timedelta(seconds=10), timedelta(seconds=10))],
        "spec-status": [point("rid-status", timedelta(seconds=10), timedelta(seconds=10))]})
    power = requests["rid-power"]["report_request_id"]
    status = requests["rid-status"]["report_request_id"]
    with app.app_context():
        cancel_id = vtn.cancel_report(ven.ven_id, power)
    reports = [
        data_report(power, "spec-usage", "TELEMETRY_USAGE", [
            {"report_payloads": [{"r_id": "rid-power", "value": 1.0}]}], dtstart=T0),
        data_report(status, "spec-status", "TELEMETRY_STATUS", [
            {"report_payloads": [{"r_id": "rid-status", "resource_status": {
                "online": True, "manual_override": False}}]}], dtstart=T0)]
    name, reply = ven.update_report(reports)
    # The data is still accepted (the VEN has not seen the cancel), and the reply carries the
    # cancel, naming only the cancelled request among those delivered.
    assert code(reply) == 200 and len(received) == 2
    assert reply["cancel_report"] == {"request_id": cancel_id, "report_request_ids": [power],
                                      "report_to_follow": False, "ven_id": ven.ven_id}
    _, reply = ven.update_report(reports[1:])
    assert "cancel_report" not in reply  # the status report is not being cancelled
    assert code(ven.canceled_report(cancel_id)[1]) == 200
    # The queued oadrCancelReport is dropped: the VEN acknowledged the piggy-backed one.
    name, _ = ven.poll()
    assert name == "oadrResponse"
    assert code(ven.update_report(reports[:1])[1]) == 452


def test_report_to_follow_accepts_one_final_report(app, vtn):
    ven, requests = subscribe(app, vtn)
    report_request_id = requests["rid-power"]["report_request_id"]
    with app.app_context():
        vtn.cancel_report(ven.ven_id, report_request_id, report_to_follow=True)
    name, cancel = ven.poll()
    assert cancel["report_to_follow"] is True
    ven.canceled_report(cancel["request_id"], [report_request_id])
    with app.app_context():
        assert vtn.report_requests(ven.ven_id)[0]["state"] == "final_report"
    final = data_report(report_request_id, "spec-usage", "TELEMETRY_USAGE", [
        {"report_payloads": [{"r_id": "rid-power", "value": 1.0}]}], dtstart=T0)
    _, reply = ven.update_report([final])
    assert code(reply) == 200 and "cancel_report" not in reply
    assert code(ven.update_report([final])[1]) == 452


def test_canceled_report_for_no_cancel_is_out_of_sequence(app, vtn):
    ven, _ = subscribe(app, vtn)
    name, reply = ven.canceled_report("no-such-cancel")
    assert name == "oadrResponse" and code(reply) == 450


def test_cancel_of_an_unknown_request_raises(app, vtn):
    ven, _ = subscribe(app, vtn)
    with app.app_context(), pytest.raises(LookupError, match="no report request 'rr-x'"):
        vtn.cancel_report(ven.ven_id, "rr-x")


# ---------------------------------------------------------------------------------------------
# METADATA requests


def test_metadata_request_and_the_vens_answer(app, vtn):
    @vtn.on_register_report
    def register(ven_id, report):
        return None

    ven, _ = subscribe(app, vtn, points={})
    with app.app_context():
        metadata_id = vtn.request_metadata(ven.ven_id)
    name, create = ven.poll()
    assert name == "oadrCreateReport"
    assert create["report_requests"] == [{"report_request_id": metadata_id, "report_specifier": {
        "report_specifier_id": "METADATA", "granularity": timedelta(0),
        "report_back_duration": timedelta(0),
        "specifier_payloads": [{"r_id": "0", "reading_type": "x-notApplicable"}]}}]
    assert code(ven.created_report(create["request_id"], [metadata_id])[1]) == 200
    # An oadrRegisterReport naming another reportRequestID is refused ...
    name, reply = ven.register_report([USAGE, STATUS], report_request_id="rr-other")
    assert name == "oadrRegisteredReport" and code(reply) == 452
    # ... the one echoing the request answers it.
    name, reply = ven.register_report([USAGE, STATUS], report_request_id=metadata_id)
    assert code(reply) == 200
    with app.app_context():
        assert vtn.report_requests(ven.ven_id) == []
        assert len(vtn.ven_reports(ven.ven_id)) == 2
    # Answered once: the same ID again names nothing. "0" counts as absent (lenient).
    assert code(ven.register_report([USAGE], report_request_id=metadata_id)[1]) == 452
    assert code(ven.register_report([USAGE], report_request_id="0")[1]) == 200


# ---------------------------------------------------------------------------------------------
# Persistence and registration


def test_subscription_survives_a_restart(tmp_path, clock):
    """The app restarts (a new process on the same SQLite file) between the request and the
    first data: the data is routed by the stored subscription."""
    uri = "sqlite:///" + str(tmp_path / "restart.sqlite3")
    first = make_app(tmp_path, uri, clock, OPENADR_REPORT_POLICY="telemetry")
    ven = registered(first)
    _, reply = ven.register_report([USAGE])
    ids = {r["report_specifier"]["specifier_payloads"][0]["r_id"]: r["report_request_id"]
           for r in reply["report_requests"]}
    first.extensions["openadr"].context.store.close()
    del first

    second = make_app(tmp_path, uri, clock)
    received = []

    @second.extensions["test_vtn"].on_update_report
    def update(ven_id, report):
        received.append((ven_id, report["report_request_id"], report["intervals"]))

    ven.client = second.test_client()
    _, ack = ven.created_report(reply["response"]["request_id"], list(ids.values()))
    assert code(ack) == 200
    _, updated = ven.update_report([data_report(ids["rid-power"], "spec-usage",
                                                "TELEMETRY_USAGE", [
        {"duration": timedelta(seconds=10), "report_payloads": [
            {"r_id": "rid-power", "value": 7.0}]}], dtstart=T0)])
    assert code(updated) == 200
    assert received == [(ven.ven_id, ids["rid-power"], [
        {"dtstart": T0, "duration": timedelta(seconds=10),
         "values": [{"r_id": "rid-power", "value": 7.0}]}])]


def test_ending_or_renewing_a_registration_clears_report_and_opt_state(app, vtn):
    ven, _ = subscribe(app, vtn)
    ven.create_opt("opt-1", windows=[(T0, timedelta(hours=1))])
    store_of = app.extensions["openadr"].context.store

    def kinds():
        return {kind for kind in registration.RECORD_KINDS
                if store_of.list_records(kind, ven.ven_id)}

    # The VEN took the VTN's METADATA and never answered it: it awaits its acknowledgement.
    assert kinds() == {"ven_report", "report_request", "opt", "outbox_awaiting"}
    ven.register(renew=True)  # renewal keeps everything
    assert kinds() == {"ven_report", "report_request", "opt", "outbox_awaiting"}
    ven.cancel_registration()
    assert kinds() == set()
    ven.register()
    _, metadata = ven.poll()
    ven.registered_report(metadata)
    ven.register_report([USAGE])
    assert kinds() == {"ven_report", "report_request"}
    ven.registration_id = None
    ven.register()  # a new registration (no registrationID) starts afresh
    assert kinds() == set()
