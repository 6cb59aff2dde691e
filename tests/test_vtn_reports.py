"""EiReport with the VTN as producer: its METADATA, the VENs' requests, VTN report data."""
from __future__ import annotations

from datetime import timedelta

import pytest

from flask_openadr import Rejection, codec
from flask_openadr.services import vtn_reports
from tests.support.clock import T0
from tests.support.vens import make_ven

PRICES = {
    "report_specifier_id": "vtn-prices", "report_name": "x-priceForecast",
    "duration": timedelta(hours=24),
    "report_descriptions": [{
        "r_id": "price", "report_type": "price", "reading_type": "Projected",
        "item_base": {"kind": "currencyPerKWh", "item_description": "currencyPerKWh",
                      "item_units": "USD", "si_scale_code": "none"},
        "sampling_rate": {"min_period": timedelta(hours=1), "max_period": timedelta(hours=1),
                          "on_change": False}}],
}
STATUS = {
    "report_specifier_id": "vtn-status", "report_name": "TELEMETRY_STATUS",
    "duration": timedelta(hours=1),
    "report_descriptions": [{
        "r_id": "feeder", "report_type": "x-resourceStatus", "reading_type": "x-notApplicable",
        "sampling_rate": {"min_period": timedelta(minutes=1), "max_period": timedelta(minutes=5),
                          "on_change": False}}],
}


def code(reply):
    return reply["response"]["response_code"]


def request(report_request_id, spec_id, r_ids, granularity=timedelta(hours=1),
            report_back_duration=timedelta(hours=1)):
    return {"report_request_id": report_request_id, "report_specifier": {
        "report_specifier_id": spec_id, "granularity": granularity,
        "report_back_duration": report_back_duration,
        "report_interval": {"dtstart": T0, "duration": timedelta(0)},
        "specifier_payloads": [{"r_id": r, "reading_type": "x-notApplicable"} for r in r_ids]}}


@pytest.fixture
def offering(app, vtn):
    """The VTN offers PRICES and STATUS to every VEN; handler calls are recorded."""
    calls = []

    @vtn.on_vtn_reports
    def offers(ven_id):
        calls.append(("offers", ven_id))
        return [PRICES, STATUS]

    @vtn.on_vtn_report_request
    def on_request(ven_id, req):
        calls.append(("request", ven_id, req))
        if req["report_specifier_id"] == "vtn-status" and req["granularity"] < timedelta(minutes=1):
            raise Rejection(461, "status is sampled once a minute")

    @vtn.on_vtn_report_cancel
    def on_cancel(ven_id, cancel):
        calls.append(("cancel", ven_id, cancel))

    return calls


def registered_with_metadata(app):
    ven = make_ven(app)
    ven.register()
    name, metadata = ven.poll()
    assert name == "oadrRegisterReport"
    return ven, metadata


def test_the_vtn_metadata_lists_the_offered_reports(app, vtn, clock, offering):
    ven, metadata = registered_with_metadata(app)
    assert offering == [("offers", ven.ven_id)]
    assert "report_request_id" not in metadata  # not answering a METADATA request
    reports = {r["report_specifier_id"]: r for r in metadata["reports"]}
    assert reports["vtn-status"]["report_name"] == "METADATA_TELEMETRY_STATUS"
    assert reports["vtn-prices"]["report_name"] == "x-priceForecast"
    for report in reports.values():
        assert report["report_request_id"] == "0"
        assert report["created_date_time"] == clock.now
        assert "dtstart" not in report and report["intervals"] == []
    assert reports["vtn-prices"]["report_descriptions"][0]["item_base"]["item_units"] == "USD"


def test_registered_report_without_requests_gets_oadr_response(app, offering):
    ven, metadata = registered_with_metadata(app)
    name, reply = ven.registered_report(metadata)
    assert name == "oadrResponse" and code(reply) == 200
    assert reply["response"]["request_id"] == metadata["request_id"]


def test_requests_in_registered_report_get_created_report(app, vtn, offering):
    ven, metadata = registered_with_metadata(app)
    name, reply = ven.send("EiReport", "oadrRegisteredReport", {
        "response": {"response_code": 200, "request_id": metadata["request_id"]},
        "report_requests": [request("ven-rr-1", "vtn-prices", ["price"])], "ven_id": ven.ven_id})
    assert name == "oadrCreatedReport" and code(reply) == 200
    assert reply["response"]["request_id"] == metadata["request_id"]
    assert reply["pending_reports"] == ["ven-rr-1"] and reply["ven_id"] == ven.ven_id
    assert offering[-1] == ("request", ven.ven_id, {
        "report_request_id": "ven-rr-1", "report_specifier_id": "vtn-prices",
        "report_name": "x-priceForecast", "r_ids": ["price"],
        "granularity": timedelta(hours=1), "report_back_duration": timedelta(hours=1),
        "report_interval": {"dtstart": T0, "duration": timedelta(0)}})
    with app.app_context():
        assert [r["report_request_id"] for r in vtn.vtn_report_requests(ven.ven_id)] == [
            "ven-rr-1"]


@pytest.mark.parametrize("spec_id, r_ids, expected", [
    ("vtn-nope", ["price"], "reportSpecifierID 'vtn-nope' is not offered"),
    ("vtn-prices", ["price", "co2"], "rID(s) ['co2'] are not in the VTN's report 'vtn-prices'"),
])
def test_unknown_specifier_or_rid_gets_452_in_created_report(app, vtn, offering, spec_id, r_ids,
                                                              expected):
    ven, _ = registered_with_metadata(app)
    assert code(ven.create_report([request("ven-rr-1", "vtn-prices", ["price"])])[1]) == 200
    name, reply = ven.create_report([request("ven-rr-2", "vtn-status", ["feeder"],
                                             granularity=timedelta(minutes=1)),
                                     request("ven-rr-3", spec_id, r_ids)])
    assert name == "oadrCreatedReport" and code(reply) == 452
    assert expected in reply["response"]["response_description"]
    # Nothing of the refused message is kept; the pending list shows what is still active.
    assert reply["pending_reports"] == ["ven-rr-1"]
    with app.app_context():
        assert [r["report_request_id"] for r in vtn.vtn_report_requests(ven.ven_id)] == [
            "ven-rr-1"]


def test_handler_may_refuse_a_request(app, vtn, offering):
    ven, _ = registered_with_metadata(app)
    name, reply = ven.create_report([request("ven-rr-1", "vtn-status", ["feeder"],
                                             granularity=timedelta(seconds=10))])
    assert code(reply) == 461 and reply["pending_reports"] == []


def test_request_id_zero_is_refused(app, vtn, offering):
    ven, _ = registered_with_metadata(app)
    assert code(ven.create_report([request("0", "vtn-prices", ["price"])])[1]) == 452


def test_ven_asks_for_the_vtn_metadata_again(app, vtn, offering):
    ven, _ = registered_with_metadata(app)
    metadata_request = {"report_request_id": "ven-meta-1", "report_specifier": {
        "report_specifier_id": "METADATA", "granularity": timedelta(0),
        "report_back_duration": timedelta(0),
        "specifier_payloads": [{"r_id": "0", "reading_type": "x-notApplicable"}]}}
    name, reply = ven.create_report([metadata_request])
    assert name == "oadrCreatedReport" and code(reply) == 200
    name, metadata = ven.poll()
    assert name == "oadrRegisterReport"
    assert metadata["report_request_id"] == "ven-meta-1"
    assert [r["report_specifier_id"] for r in metadata["reports"]] == ["vtn-prices", "vtn-status"]
    assert offering.count(("offers", ven.ven_id)) == 2


def test_send_report_delivers_vtn_data_on_poll(app, vtn, offering):
    ven, _ = registered_with_metadata(app)
    ven.create_report([request("ven-rr-1", "vtn-prices", ["price"])])
    intervals = [{"dtstart": T0 + timedelta(hours=h), "duration": timedelta(hours=1),
                  "uid": str(h), "values": [{"r_id": "price", "value": 0.1 + h}]}
                 for h in range(3)]
    with app.app_context():
        request_id = vtn.send_report(ven.ven_id, "ven-rr-1", intervals)
        with pytest.raises(ValueError, match="rID 'co2' was not requested"):
            vtn.send_report(ven.ven_id, "ven-rr-1", [{"dtstart": T0, "values": [
                {"r_id": "co2", "value": 1.0}]}])
        with pytest.raises(ValueError, match=r"value"):
            vtn.send_report(ven.ven_id, "ven-rr-1", [{"dtstart": T0, "values": [
                {"r_id": "price", "value": "cheap"}]}])
        with pytest.raises(LookupError, match="no active request 'ven-rr-9'"):
            vtn.send_report(ven.ven_id, "ven-rr-9", intervals)
    name, update = ven.poll()
    assert name == "oadrUpdateReport" and update["request_id"] == request_id
    [report] = update["reports"]
    assert report["report_request_id"] == "ven-rr-1"
    assert report["report_specifier_id"] == "vtn-prices"
    assert report["report_name"] == "x-priceForecast" and report["dtstart"] == T0
    assert [(i["dtstart"], i["report_payloads"][0]["value"]) for i in report["intervals"]] == [
        (T0 + timedelta(hours=h), pytest.approx(0.1 + h)) for h in range(3)]
    assert ven.poll()[0] == "oadrResponse"  # the failed sends queued nothing
    name, ack = ven.updated_report(request_id)
    assert name == "oadrResponse" and code(ack) == 200
    assert ack["response"]["request_id"] == request_id


def test_ven_cancels_a_vtn_report(app, vtn, offering):
    ven, _ = registered_with_metadata(app)
    ven.create_report([request("ven-rr-1", "vtn-prices", ["price"]),
                       request("ven-rr-2", "vtn-status", ["feeder"],
                               granularity=timedelta(minutes=1))])
    name, reply = ven.cancel_report(["ven-rr-1", "ven-rr-9"])
    assert name == "oadrCanceledReport" and code(reply) == 452
    assert reply["pending_reports"] == ["ven-rr-1", "ven-rr-2"]
    name, reply = ven.cancel_report(["ven-rr-1"])
    assert code(reply) == 200 and reply["pending_reports"] == ["ven-rr-2"]
    assert reply["ven_id"] == ven.ven_id and reply["response"]["request_id"]
    assert offering[-1][0] == "cancel"
    assert offering[-1][2]["report_request_ids"] == ["ven-rr-1"]
    with app.app_context(), pytest.raises(LookupError):
        vtn.send_report(ven.ven_id, "ven-rr-1", [{"dtstart": T0, "values": [
            {"r_id": "price", "value": 1.0}]}])


def test_report_to_follow_allows_one_final_vtn_report(app, vtn, offering):
    ven, _ = registered_with_metadata(app)
    ven.create_report([request("ven-rr-1", "vtn-prices", ["price"])])
    _, reply = ven.cancel_report(["ven-rr-1"], report_to_follow=True)
    assert reply["pending_reports"] == ["ven-rr-1"]
    final = [{"dtstart": T0, "values": [{"r_id": "price", "value": 1.0}]}]
    with app.app_context():
        vtn.send_report(ven.ven_id, "ven-rr-1", final)
        with pytest.raises(LookupError):
            vtn.send_report(ven.ven_id, "ven-rr-1", final)


def test_cancel_piggy_backed_on_updated_report(app, vtn, offering):
    ven, _ = registered_with_metadata(app)
    ven.create_report([request("ven-rr-1", "vtn-prices", ["price"])])
    with app.app_context():
        request_id = vtn.send_report(ven.ven_id, "ven-rr-1", [{"dtstart": T0, "values": [
            {"r_id": "price", "value": 1.0}]}])
    ven.poll()
    name, ack = ven.updated_report(request_id, cancel_report={
        "request_id": "c-1", "report_request_ids": ["ven-rr-1", "ven-rr-x"],
        "report_to_follow": False, "ven_id": ven.ven_id})
    assert name == "oadrResponse" and code(ack) == 200
    with app.app_context():
        assert vtn.vtn_report_requests(ven.ven_id) == []


def test_offers_that_drop_a_report_end_its_subscriptions(app, vtn):
    offered = [PRICES, STATUS]

    @vtn.on_vtn_reports
    def offers(ven_id):
        return offered

    ven, _ = registered_with_metadata(app)
    ven.create_report([request("ven-rr-1", "vtn-prices", ["price"]),
                       request("ven-rr-2", "vtn-status", ["feeder"],
                               granularity=timedelta(minutes=1))])
    offered.remove(PRICES)
    ven.create_report([{"report_request_id": "ven-meta", "report_specifier": {
        "report_specifier_id": "METADATA", "granularity": timedelta(0),
        "report_back_duration": timedelta(0),
        "specifier_payloads": [{"r_id": "0", "reading_type": "x-notApplicable"}]}}])
    with app.app_context():
        assert [r["report_request_id"] for r in vtn.vtn_report_requests(ven.ven_id)] == [
            "ven-rr-2"]


def test_a_bad_offer_is_an_error_of_the_application(app, vtn):
    @vtn.on_vtn_reports
    def offers(ven_id):
        return [dict(PRICES, duration=None)]

    ven = make_ven(app)
    response = ven.post("EiRegisterParty", codec.encode("oadrCreatePartyRegistration", {
        "request_id": "r1", "profile_name": "2.0b", "transport_name": "simpleHttp",
        "report_only": False, "xml_signature": False, "http_pull_model": True}))
    # A registration that cannot announce the VTN's METADATA fails whole (HTTP 500, logged).
    assert response.status_code == 500
    with app.app_context():
        assert vtn.vens() == []
    with pytest.raises(ValueError, match="report 'vtn-prices' needs 'duration'"):
        vtn_reports.offers(app.extensions["openadr"].context, "ven-1")


def test_vtn_report_data_is_sent_again_until_the_ven_acknowledges_it(app, vtn, clock, offering):
    ven, metadata = registered_with_metadata(app)
    ven.registered_report(metadata)
    ven.create_report([request("ven-rr-1", "vtn-prices", ["price"])])
    with app.app_context():
        request_id = vtn.send_report(ven.ven_id, "ven-rr-1", [
            {"dtstart": T0, "duration": timedelta(hours=1), "values": [
                {"r_id": "price", "value": 0.2}]}])
    assert ven.poll()[1]["request_id"] == request_id
    assert ven.poll()[0] == "oadrResponse"
    clock.advance(timedelta(seconds=20))  # two poll intervals
    name, again = ven.poll()
    assert (name, again["request_id"]) == ("oadrUpdateReport", request_id)
    assert code(ven.updated_report(request_id)[1]) == 200
    clock.advance(timedelta(seconds=20))
    assert ven.poll()[0] == "oadrResponse"
