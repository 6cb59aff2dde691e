"""What the OpenADR certification harness expects of a VTN (issue 9), through the Flask test
client: each test is named after the behaviour a regression would make certification fail."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from flask_openadr import EventError
from flask_openadr.testing import make_certificate
from tests.support.clock import T0
from tests.support.events import add, intervals
from tests.support.vens import make_ven


def code(reply):
    return reply["response"]["response_code"]


def raw_poll(ven, ven_id):
    return ven.post("OadrPoll", ven.encode("oadrPoll", {"ven_id": ven_id}))


def store_snapshot(app, vtn):
    with app.app_context():
        return vtn.vens(), vtn.events()


# -- Callers that cannot be tied to a registration ---------------------------------------------


def test_an_unregistered_caller_with_an_empty_ven_id_gets_403_and_no_openadr_payload(
        app, vtn, ven):
    before = store_snapshot(app, vtn)
    response = raw_poll(ven, "")
    assert response.status_code == 403
    assert response.mimetype == "text/plain"
    assert "register" in response.get_data(as_text=True)
    assert b"oadr" not in response.get_data()
    assert store_snapshot(app, vtn) == before


def test_a_caller_whose_certificate_lost_its_registration_gets_403_without_a_ven_id(
        app, vtn, registered_ven):
    registered_ven.cancel_registration()
    response = raw_poll(registered_ven, "")
    assert response.status_code == 403


def test_a_caller_with_another_certificate_and_no_ven_id_gets_403(app, vtn, registered_ven):
    stranger = make_ven(app, certificate=make_certificate("stranger"))
    assert raw_poll(stranger, "").status_code == 403


@pytest.mark.parametrize("wrong", ["unknown-ven", "upper"])
def test_a_registered_caller_naming_an_unknown_or_wrong_case_ven_id_gets_452(
        app, registered_ven, wrong):
    ven_id = registered_ven.ven_id.swapcase() if wrong == "upper" else wrong
    assert ven_id != registered_ven.ven_id
    response = raw_poll(registered_ven, ven_id)
    assert response.status_code == 200
    name, reply = registered_ven.decode_reply(response.get_data())
    assert (name, code(reply)) == ("oadrResponse", 452)


def test_a_registered_caller_naming_an_empty_ven_id_gets_452(registered_ven):
    name, reply = registered_ven.decode_reply(raw_poll(registered_ven, "").get_data())
    assert (name, code(reply)) == ("oadrResponse", 452)


# -- VTN-initiated cancellation ----------------------------------------------------------------


def cancel_on_poll(app, vtn, ven):
    with app.app_context():
        vtn.cancel_registration(ven.ven_id)
    name, cancel = ven.poll()
    assert name == "oadrCancelPartyRegistration"
    return cancel


def test_the_reply_to_canceled_party_registration_after_a_vtn_cancel_has_no_ven_id(
        app, vtn, registered_ven):
    cancel = cancel_on_poll(app, vtn, registered_ven)
    name, reply = registered_ven.canceled_registration(cancel["request_id"])
    assert (name, code(reply)) == ("oadrResponse", 200)
    assert "ven_id" not in reply
    with app.app_context():
        assert vtn.vens()[0]["registration_id"] is None


def test_a_canceled_party_registration_with_a_wrong_request_id_is_450_and_ends_nothing(
        app, vtn, registered_ven):
    cancel = cancel_on_poll(app, vtn, registered_ven)
    name, reply = registered_ven.canceled_registration("not-" + cancel["request_id"])
    assert (name, code(reply)) == ("oadrResponse", 450)
    assert "not-" + cancel["request_id"] in reply["response"]["response_description"]
    with app.app_context():
        assert vtn.vens()[0]["registration_id"] == registered_ven.registration_id
    # The right acknowledgement still ends it.
    assert code(registered_ven.canceled_registration(cancel["request_id"])[1]) == 200


def test_a_refused_vtn_cancel_keeps_the_registration_and_names_the_ven(
        app, vtn, registered_ven):
    cancel = cancel_on_poll(app, vtn, registered_ven)
    with app.app_context():
        assert vtn.vens()[0]["cancel_requested"] is True
    _, reply = registered_ven.canceled_registration(cancel["request_id"], code=500)
    assert (code(reply), reply["ven_id"]) == (200, registered_ven.ven_id)
    with app.app_context():
        (ven,) = vtn.vens()
    assert ven["registration_id"] == registered_ven.registration_id
    # Derived from the message, not a stored flag: once refused, nothing is awaited any more
    # (a stored flag stayed True here), and a second answer is out of sequence.
    assert ven["cancel_requested"] is False
    _, again = registered_ven.canceled_registration(cancel["request_id"])
    assert code(again) == 450 and "has not asked" in again["response"]["response_description"]


# -- Events ------------------------------------------------------------------------------------


def test_reply_limit_zero_means_no_events(app, vtn, registered_ven):
    for n in range(3):
        add(app, vtn, ven_id=registered_ven.ven_id,
            intervals=intervals(start=T0 + timedelta(hours=1 + n)))
    name, dist = registered_ven.request_event(reply_limit=0)
    assert (name, code(dist), dist["events"]) == ("oadrDistributeEvent", 200, [])
    _, dist = registered_ven.request_event(reply_limit=2)
    assert len(dist["events"]) == 2
    # What replyLimit 0 kept back is still sent on the next poll.
    name, dist = registered_ven.poll()
    assert name == "oadrDistributeEvent" and len(dist["events"]) == 3


def test_event_level_opt_beats_a_later_created_event(app, vtn, registered_ven):
    event_id = add(app, vtn, ven_id=registered_ven.ven_id)
    _, dist = registered_ven.poll()
    _, opted = registered_ven.create_opt("opt-1", "optIn", event_id=event_id,
                                         opt_reason="participating")
    assert code(opted) == 200
    with app.app_context():
        (record,) = vtn.event_responses(event_id)
    assert (record["opt_type"], record["opt_id"]) == ("optIn", "opt-1")
    name, reply = registered_ven.created_event(dist, opt_type="optOut")
    assert (name, code(reply)) == ("oadrResponse", 200)
    with app.app_context():
        (record,) = vtn.event_responses(event_id)
        answers = vtn.event_answers(event_id)
    assert (record["opt_type"], record["opt_id"]) == ("optIn", "opt-1")
    assert answers[registered_ven.ven_id]["opt_type"] == "optIn"
    # The answer still acknowledged the distribution: it is not sent again.
    assert registered_ven.poll()[0] == "oadrResponse"


def test_after_the_event_level_opt_is_cancelled_created_event_answers_count_again(
        app, vtn, registered_ven):
    event_id = add(app, vtn, ven_id=registered_ven.ven_id)
    _, dist = registered_ven.poll()
    registered_ven.create_opt("opt-1", "optIn", event_id=event_id, opt_reason="participating")
    assert code(registered_ven.cancel_opt("opt-1")[1]) == 200
    registered_ven.created_event(dist, opt_type="optOut")
    with app.app_context():
        (record,) = vtn.event_responses(event_id)
    assert record["opt_type"] == "optOut" and "opt_id" not in record


def test_without_an_event_level_opt_the_created_event_decides(app, vtn, registered_ven):
    event_id = add(app, vtn, ven_id=registered_ven.ven_id)
    _, dist = registered_ven.poll()
    registered_ven.created_event(dist, opt_type="optOut")
    with app.app_context():
        (record,) = vtn.event_responses(event_id)
    assert record["opt_type"] == "optOut" and "opt_id" not in record


def test_created_event_for_an_event_of_another_ven_is_452_and_recorded_nowhere(
        app, vtn, registered_ven):
    other = make_ven(app, ven_name="other")
    other.register()
    theirs = add(app, vtn, ven_id=other.ven_id)
    _, dist = other.poll()
    while dist.get("events") is None:
        _, dist = other.poll()
    name, reply = registered_ven.created_event(dist, opt_type="optOut")
    assert (name, code(reply)) == ("oadrResponse", 452)
    assert theirs in reply["response"]["response_description"]
    with app.app_context():
        assert vtn.event_responses(theirs) == []


def test_add_event_refuses_an_event_overlapping_another_of_the_same_ven_and_program(
        app, vtn, registered_ven):
    first = add(app, vtn, ven_id=registered_ven.ven_id)
    with pytest.raises(EventError, match=repr(first)):
        add(app, vtn, event_id="second", ven_id=registered_ven.ven_id,
            intervals=intervals(start=T0 + timedelta(hours=1, minutes=30)))
    with app.app_context():
        assert [e["event_descriptor"]["event_id"] for e in vtn.events()] == [first]


def test_events_that_do_not_overlap_or_belong_elsewhere_are_accepted(app, vtn, registered_ven):
    other = make_ven(app, ven_name="other")
    other.register()
    first = add(app, vtn, ven_id=registered_ven.ven_id)
    # Back to back, another program, another VEN: none of them overlaps the first.
    add(app, vtn, ven_id=registered_ven.ven_id, intervals=intervals(start=T0 + timedelta(hours=2)))
    add(app, vtn, ven_id=registered_ven.ven_id, market_context="http://other.example/program")
    add(app, vtn, ven_id=other.ven_id)
    # A group event overlaps through a VEN that belongs to the group.
    with app.app_context():
        vtn.update_ven(registered_ven.ven_id, group_ids=["north"])
    with pytest.raises(EventError, match=repr(first)):
        add(app, vtn, targets={"group_ids": ["north"]})
    # The way to replace an event: cancel it, then add the new one.
    with app.app_context():
        vtn.cancel_event(first)
    add(app, vtn, ven_id=registered_ven.ven_id)


def test_cancel_event_sets_response_required_in_the_same_modification(app, vtn, registered_ven):
    event_id = add(app, vtn, ven_id=registered_ven.ven_id)
    _, dist = registered_ven.poll()
    registered_ven.created_event(dist)
    with app.app_context():
        cancelled = vtn.cancel_event(event_id, response_required="never")
    assert cancelled["event_descriptor"]["modification_number"] == 1
    assert cancelled["response_required"] == "never"
    name, dist = registered_ven.poll()
    (event,) = dist["events"]
    assert event["event_descriptor"]["event_status"] == "cancelled"
    assert event["event_descriptor"]["modification_number"] == 1
    assert event["response_required"] == "never"
    with app.app_context(), pytest.raises(EventError, match="response_required"):
        vtn.cancel_event(add(app, vtn, ven_id=registered_ven.ven_id,
                             intervals=intervals(start=T0 + timedelta(hours=5))),
                         response_required="sometimes")


def test_group_name_targets_reach_vens_through_update_ven(app, vtn, registered_ven):
    with app.app_context():
        vtn.update_ven(registered_ven.ven_id, group_names=["feeder-7"])
    event_id = add(app, vtn, targets={"group_names": ["feeder-7"]})
    name, dist = registered_ven.poll()
    assert name == "oadrDistributeEvent"
    assert [e["event_descriptor"]["event_id"] for e in dist["events"]] == [event_id]


def test_group_names_from_the_registration_handler_reach_the_ven(app, vtn):
    @vtn.on_create_party_registration
    def register(payload):
        return {"group_names": ["feeder-9"]}

    ven = make_ven(app)
    ven.register()
    with app.app_context():
        assert vtn.vens()[0]["group_names"] == ["feeder-9"]
    event_id = add(app, vtn, targets={"group_names": ["feeder-9"]})
    names = [ven.poll() for _ in range(2)]
    dists = [reply for name, reply in names if name == "oadrDistributeEvent"]
    assert [e["event_descriptor"]["event_id"] for e in dists[0]["events"]] == [event_id]


# -- Signal rules, device classes, per-signal targets, baselines, time zones -------------------

PRICE_UNIT = {"kind": "currencyPerKWh", "item_description": "currencyPerKWh",
              "item_units": "USD", "si_scale_code": "none"}
POWER_UNIT = {"kind": "powerReal", "item_description": "RealPower", "item_units": "W",
              "si_scale_code": "k", "power_attributes": {"hertz": 60.0, "voltage": 120.0,
                                                         "ac": True}}


@pytest.mark.parametrize("signal_name, signal_type, item_base, message", [
    ("ELECTRICITY_PRICE", "price", None, r"ELECTRICITY_PRICE signal needs an item_base"),
    ("ENERGY_PRICE", "price", POWER_UNIT, r"item_base kind is 'powerReal'.*currency"),
    ("DEMAND_CHARGE", "level", PRICE_UNIT, r"signal_type is 'level'.*'price'"),
    ("LOAD_DISPATCH", "setpoint", None, r"LOAD_DISPATCH signal needs .*'powerReal'"),
    ("LOAD_DISPATCH", "setpoint", PRICE_UNIT, r"kind is 'currencyPerKWh'"),
    ("LOAD_DISPATCH", "price", POWER_UNIT, r"signal_type is 'price'.*'setpoint'"),
    ("SIMPLE", "level", POWER_UNIT, r"SIMPLE signal .* leave item_base out"),
])
def test_add_event_refuses_signal_combinations_the_profile_forbids(
        app, vtn, registered_ven, signal_name, signal_type, item_base, message):
    kwargs = {} if item_base is None else {"item_base": item_base}
    with pytest.raises(EventError, match=message):
        add(app, vtn, ven_id=registered_ven.ven_id, signal_name=signal_name,
            signal_type=signal_type, intervals=intervals(payloads=(1.0,)), **kwargs)


@pytest.mark.parametrize("signal_name, signal_type, item_base", [
    ("ELECTRICITY_PRICE", "price", PRICE_UNIT),
    ("DEMAND_CHARGE", "priceRelative", PRICE_UNIT),
    ("LOAD_DISPATCH", "setpoint", POWER_UNIT),
    ("LOAD_DISPATCH", "delta", POWER_UNIT),
])
def test_allowed_signal_combinations_reach_the_ven_with_their_unit(
        app, vtn, registered_ven, signal_name, signal_type, item_base):
    add(app, vtn, ven_id=registered_ven.ven_id, signal_name=signal_name,
        signal_type=signal_type, item_base=item_base, intervals=intervals(payloads=(1.0,)))
    _, dist = registered_ven.poll()
    (signal,) = dist["events"][0]["event_signals"]
    assert (signal["signal_name"], signal["item_base"]["kind"]) == (signal_name,
                                                                   item_base["kind"])


def full_event(ven_ids, signals, **extra):
    event = {
        "event_descriptor": {},
        "active_period": {"dtstart": T0 + timedelta(hours=1), "duration": timedelta(hours=1)},
        "event_signals": [
            dict({"intervals": [{"duration": timedelta(hours=1), "signal_payload": 1.0}],
                  "signal_name": "SIMPLE", "signal_type": "level", "signal_id": f"s{n}"},
                 **signal)
            for n, signal in enumerate(signals)],
        "target": {"ven_ids": ven_ids},
    }
    event.update(extra)
    return event


def test_device_class_targets_use_the_enumerated_mrids_only(app, vtn, registered_ven):
    with app.app_context(), pytest.raises(EventError, match=r"'Toaster' is not a device class"):
        vtn.add_event(event=full_event([registered_ven.ven_id], [
            {"target": {"end_device_assets": ["Toaster"]}}]))
    with app.app_context():
        vtn.add_event(event=full_event([registered_ven.ven_id], [
            {"target": {"end_device_assets": ["Water_Heater"]}}]))
    _, dist = registered_ven.poll()
    (signal,) = dist["events"][0]["event_signals"]
    assert signal["target"]["end_device_assets"] == ["Water_Heater"]


def test_a_signal_aimed_at_another_ven_is_not_sent_with_an_empty_target(app, vtn,
                                                                        registered_ven):
    other = make_ven(app, ven_name="other")
    other.register()
    with app.app_context():
        vtn.add_event(event=full_event([registered_ven.ven_id, other.ven_id], [
            {"target": {"ven_ids": [other.ven_id]}},
            {"target": {"ven_ids": [registered_ven.ven_id]}},
        ]))
    _, dist = registered_ven.poll()
    (signal,) = dist["events"][0]["event_signals"]
    assert (signal["signal_id"], signal["target"]["ven_ids"]) == ("s1", [registered_ven.ven_id])


def test_an_event_leaving_a_targeted_ven_without_a_signal_is_refused(app, vtn, registered_ven):
    with app.app_context(), pytest.raises(EventError, match="no signal is aimed at venID"):
        vtn.add_event(event=full_event([registered_ven.ven_id, "ven-b"], [
            {"target": {"ven_ids": ["ven-b"]}}]))


def test_event_baseline_interval_uids_are_filled_like_signal_uids(app, vtn, registered_ven):
    baseline = {"dtstart": T0 + timedelta(hours=1), "duration": timedelta(hours=1),
                "baseline_id": "b1", "baseline_name": "typical",
                "intervals": [{"duration": timedelta(minutes=30), "signal_payload": 4.0},
                              {"duration": timedelta(minutes=30), "signal_payload": 5.0}]}
    with app.app_context():
        event_id = vtn.add_event(event=full_event([registered_ven.ven_id], [{}],
                                                  event_baseline=baseline))
        stored = vtn.get_event(event_id)
    assert [i["uid"] for i in stored["event_baseline"]["intervals"]] == ["0", "1"]


def test_intervals_across_a_dst_change_are_checked_in_absolute_time(app, vtn, registered_ven):
    from zoneinfo import ZoneInfo

    berlin = ZoneInfo("Europe/Berlin")
    start = datetime(2027, 3, 28, 1, 0, tzinfo=berlin)  # clocks go 02:00 -> 03:00 CEST
    after = datetime(2027, 3, 28, 3, 0, tzinfo=berlin)  # one real hour after start
    with app.app_context():
        event_id = vtn.add_event(ven_id=registered_ven.ven_id, signal_name="SIMPLE",
                                 signal_type="level", intervals=[
                                     {"dtstart": start, "duration": timedelta(hours=1),
                                      "signal_payload": 1.0},
                                     {"dtstart": after, "duration": timedelta(hours=1),
                                      "signal_payload": 2.0}])
        stored = vtn.get_event(event_id)
        assert stored["active_period"]["dtstart"] == datetime(2027, 3, 28, 0, 0,
                                                              tzinfo=timezone.utc)
        assert stored["active_period"]["duration"] == timedelta(hours=2)
        # A real one-hour gap (04:00 CEST is two hours after the first interval ends) is refused.
        with pytest.raises(EventError, match=r"intervals\[1\]\.dtstart"):
            vtn.add_event(ven_id=registered_ven.ven_id, signal_name="SIMPLE",
                          signal_type="level", market_context="http://other.example/p",
                          intervals=[
                              {"dtstart": start, "duration": timedelta(hours=1),
                               "signal_payload": 1.0},
                              {"dtstart": datetime(2027, 3, 28, 4, 0, tzinfo=berlin),
                               "duration": timedelta(hours=1), "signal_payload": 2.0}])


# -- Redistribution of an unchanged event set --------------------------------------------------


@pytest.fixture
def refreshing(tmp_path, store_uri, clock):
    from flask import Flask

    from flask_openadr import VTN

    app = Flask("refreshing", instance_path=str(tmp_path / "instance"))
    app.config.update(TESTING=True, OPENADR_STORE_URI=store_uri, OPENADR_VTN_ID="TEST-VTN",
                      OPENADR_EVENT_REFRESH=60, OPENADR_REDELIVERY_AFTER=10)
    vtn = VTN(app, clock=clock)
    ven = make_ven(app)
    ven.register()
    ven.registered_report(ven.poll()[1])
    return app, vtn, ven


def test_unchanged_events_are_redistributed_after_the_refresh_period(refreshing, clock):
    # The harness: two events, both acknowledged, a minute's wait, then polls every 3 s for up
    # to a minute expecting both again.
    app, vtn, ven = refreshing
    first = add(app, vtn, ven_id=ven.ven_id)
    second = add(app, vtn, ven_id=ven.ven_id,
                 intervals=intervals(start=T0 + timedelta(hours=3)))
    _, dist = ven.poll()
    assert code(ven.created_event(dist)[1]) == 200
    clock.advance(timedelta(seconds=57))
    assert ven.poll()[0] == "oadrResponse"
    clock.advance(timedelta(seconds=3))
    name, again = ven.poll()
    assert name == "oadrDistributeEvent"
    assert [e["event_descriptor"]["event_id"] for e in again["events"]] == [first, second]
    assert [e["event_descriptor"]["modification_number"] for e in again["events"]] == [0, 0]
    # The refresh counts from that distribution.
    assert ven.poll()[0] == "oadrResponse"
    clock.advance(timedelta(seconds=60))
    assert ven.poll()[0] == "oadrDistributeEvent"


def test_no_refresh_without_live_events_or_without_the_setting(refreshing, app, vtn,
                                                              registered_ven, clock):
    r_app, r_vtn, r_ven = refreshing
    event_id = add(r_app, r_vtn, ven_id=r_ven.ven_id)
    r_ven.created_event(r_ven.poll()[1])
    with r_app.app_context():
        r_vtn.cancel_event(event_id)
    r_ven.created_event(r_ven.poll()[1])
    clock.advance(timedelta(minutes=5))
    assert r_ven.poll()[0] == "oadrResponse"  # only a cancelled event: nothing to refresh
    # The default: no refresh.
    add(app, vtn, ven_id=registered_ven.ven_id)
    registered_ven.created_event(registered_ven.poll()[1])
    clock.advance(timedelta(minutes=30))
    assert registered_ven.poll()[0] == "oadrResponse"


# -- Periodic VTN reports ----------------------------------------------------------------------


def metadata_request(report_request_id, every, for_how_long=None):
    specifier = {"report_specifier_id": "METADATA", "granularity": every,
                 "report_back_duration": every,
                 "specifier_payloads": [{"r_id": "0", "reading_type": "x-notApplicable"}]}
    if for_how_long is not None:
        specifier["report_interval"] = {"dtstart": T0, "duration": for_how_long}
    return {"report_request_id": report_request_id, "report_specifier": specifier}


def test_a_periodic_metadata_request_is_sent_on_schedule_listed_and_cancellable(
        app, vtn, registered_ven, clock):
    ven = registered_ven
    name, created = ven.create_report([metadata_request("meta-every-minute",
                                                        timedelta(minutes=1),
                                                        timedelta(minutes=5))])
    assert (name, code(created)) == ("oadrCreatedReport", 200)
    assert created["pending_reports"] == ["meta-every-minute"]
    name, first = ven.poll()
    assert (name, first["report_request_id"]) == ("oadrRegisterReport", "meta-every-minute")
    ven.registered_report(first)
    with app.app_context():
        assert vtn.send_due_reports() == 0  # not due yet
        sent = []
        for minute in range(1, 7):
            clock.advance(timedelta(minutes=1))
            sent.append(vtn.send_due_reports())
            name, reply = ven.poll()
            if sent[-1]:
                assert (name, reply["report_request_id"]) == ("oadrRegisterReport",
                                                              "meta-every-minute")
                ven.registered_report(reply)
            else:
                assert name == "oadrResponse"
    # Every minute until five minutes after the start, then the request has ended.
    assert sent == [1, 1, 1, 1, 0, 0]
    with app.app_context():
        assert vtn.vtn_report_requests(ven.ven_id) == []


def test_the_ven_cancels_a_periodic_metadata_request(app, vtn, registered_ven, clock):
    ven = registered_ven
    ven.create_report([metadata_request("meta-1", timedelta(minutes=1))])
    ven.registered_report(ven.poll()[1])
    name, cancelled = ven.cancel_report(["meta-1"])
    assert (name, code(cancelled), cancelled["pending_reports"]) == ("oadrCanceledReport",
                                                                      200, [])
    clock.advance(timedelta(minutes=3))
    with app.app_context():
        assert vtn.send_due_reports() == 0
    assert ven.poll()[0] == "oadrResponse"


def test_a_one_shot_metadata_request_is_not_kept(app, vtn, registered_ven):
    _, created = registered_ven.create_report([metadata_request("once", timedelta(0))])
    assert created["pending_reports"] == []
    assert registered_ven.poll()[0] == "oadrRegisterReport"


def test_republish_metadata_to_one_ven_or_all(app, vtn, registered_ven):
    other = make_ven(app, ven_name="other")
    other.register()
    other.registered_report(other.poll()[1])
    with app.app_context():
        assert vtn.republish_metadata(registered_ven.ven_id) == [registered_ven.ven_id]
    assert registered_ven.poll()[0] == "oadrRegisterReport"
    assert other.poll()[0] == "oadrResponse"
    with app.app_context():
        assert sorted(vtn.republish_metadata()) == sorted([registered_ven.ven_id, other.ven_id])
        with pytest.raises(LookupError, match="nobody"):
            vtn.republish_metadata("nobody")
    assert registered_ven.poll()[0] == "oadrRegisterReport"
    assert other.poll()[0] == "oadrRegisterReport"


# -- Redelivery sequences with the certification profile ---------------------------------------


@pytest.fixture
def certification_profile(tmp_path, store_uri, clock):
    from flask import Flask

    from flask_openadr import VTN

    app = Flask("certification", instance_path=str(tmp_path / "instance"))
    app.config.update(TESTING=True, OPENADR_STORE_URI=store_uri, OPENADR_VTN_ID="TEST-VTN",
                      OPENADR_POLL_FREQUENCY=10, OPENADR_REDELIVERY_AFTER=10,
                      OPENADR_EVENT_REFRESH=60)
    vtn = VTN(app, clock=clock)
    ven = make_ven(app)
    ven.register()
    ven.registered_report(ven.poll()[1])
    return app, vtn, ven


def test_a_cancelled_event_is_resent_on_every_poll_until_acknowledged(certification_profile,
                                                                      clock):
    app, vtn, ven = certification_profile
    event_id = add(app, vtn, ven_id=ven.ven_id)
    ven.created_event(ven.poll()[1])
    with app.app_context():
        vtn.cancel_event(event_id)
    for _ in range(12):  # two minutes of polls, every 10 s, without an acknowledgement
        name, dist = ven.poll()
        assert name == "oadrDistributeEvent"
        (event,) = dist["events"]
        assert (event["event_descriptor"]["event_status"],
                event["event_descriptor"]["modification_number"]) == ("cancelled", 1)
        clock.advance(timedelta(seconds=10))
    ven.created_event(dist)
    assert ven.poll()[0] == "oadrResponse"


def test_request_event_lists_a_just_completed_event_as_completed(certification_profile, clock):
    app, vtn, ven = certification_profile
    start = T0 + timedelta(minutes=1)
    event_id = add(app, vtn, ven_id=ven.ven_id, start_after=timedelta(minutes=2),
                   intervals=[{"dtstart": start, "duration": timedelta(minutes=1),
                               "signal_payload": 1.0}])
    ven.created_event(ven.poll()[1])
    clock.now = start + timedelta(minutes=3, seconds=30)
    name, dist = ven.request_event()
    assert name == "oadrDistributeEvent"
    assert [(e["event_descriptor"]["event_id"], e["event_descriptor"]["event_status"])
            for e in dist["events"]] == [(event_id, "completed")]
