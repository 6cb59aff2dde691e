"""EiOpt: availability schedules, event-level opts, cancellation and the opt queries."""
from __future__ import annotations

from datetime import timedelta

import pytest

from flask_openadr import Rejection
from tests.support.clock import T0
from tests.support.vens import make_ven

HOUR = timedelta(hours=1)
PROGRAM = "http://utility.example/programs/peak"


def code(reply):
    return reply["response"]["response_code"]


@pytest.fixture
def ven(app):
    ven = make_ven(app)
    ven.register()
    ven.poll()
    return ven


def test_schedule_is_stored_and_answered_with_its_ids(app, vtn, ven):
    name, reply = ven.create_opt("opt-1", "optOut", windows=[(T0, 2 * HOUR)],
                                 market_context=PROGRAM, created_date_time=T0)
    assert name == "oadrCreatedOpt" and code(reply) == 200
    assert reply["opt_id"] == "opt-1" and reply["response"]["request_id"]
    with app.app_context():
        [opt] = vtn.opts(ven.ven_id)
    assert opt["opt_id"] == "opt-1" and opt["opt_type"] == "optOut"
    assert opt["opt_reason"] == "x-schedule" and opt["market_context"] == PROGRAM
    assert opt["availability"] == [{"dtstart": T0, "duration": 2 * HOUR}]
    assert opt["qualified_event_id"] is None and opt["created_date_time"] == T0
    assert opt["ven_id"] == ven.ven_id and opt["request_id"] == reply["response"]["request_id"]


def test_a_repeated_opt_id_replaces_the_schedule(app, vtn, ven):
    ven.create_opt("opt-1", "optOut", windows=[(T0, HOUR)])
    ven.create_opt("opt-2", "optIn", windows=[(T0, HOUR)])
    ven.create_opt("opt-1", "optOut", windows=[(T0 + 5 * HOUR, HOUR), (T0 + 8 * HOUR, HOUR)])
    with app.app_context():
        opts = vtn.opts(ven.ven_id)
    assert [o["opt_id"] for o in opts] == ["opt-1", "opt-2"]
    assert [w["dtstart"] for w in opts[0]["availability"]] == [T0 + 5 * HOUR, T0 + 8 * HOUR]


def test_opted_out_finds_overlapping_opt_out_windows(app, vtn, ven):
    ven.create_opt("out-peak", "optOut", windows=[(T0 + 4 * HOUR, 2 * HOUR)],
                   market_context=PROGRAM)
    ven.create_opt("out-any", "optOut", windows=[(T0 + 10 * HOUR, HOUR)])
    ven.create_opt("in", "optIn", windows=[(T0, 24 * HOUR)])
    ven.create_opt("out-forever", "optOut", windows=[(T0 + 20 * HOUR, timedelta(0))])
    with app.app_context():
        def ids(start, end, **kw):
            return [o["opt_id"] for o in vtn.opted_out(ven.ven_id, start, end, **kw)]

        assert ids(T0, T0 + 4 * HOUR) == []  # ends where the window starts
        assert ids(T0 + 5 * HOUR, T0 + 5 * HOUR + timedelta(minutes=1)) == ["out-peak"]
        assert ids(T0 + 5 * HOUR, T0 + 11 * HOUR) == ["out-peak", "out-any"]
        assert ids(T0 + 5 * HOUR, T0 + 11 * HOUR, market_context="http://other.example/") == [
            "out-any"]
        assert ids(T0 + 5 * HOUR, T0 + 11 * HOUR, market_context=PROGRAM) == [
            "out-peak", "out-any"]
        assert ids(T0 + 100 * HOUR, T0 + 101 * HOUR) == ["out-forever"]  # duration 0: open
        assert ids(T0 + 12 * HOUR, T0 + 13 * HOUR) == []  # the optIn does not count
        with pytest.raises(ValueError, match="end .* must be after start"):
            vtn.opted_out(ven.ven_id, T0, T0)
        with pytest.raises(ValueError, match="aware datetime"):
            vtn.opted_out(ven.ven_id, T0.replace(tzinfo=None), T0 + HOUR)


def test_cancel_opt(app, vtn, ven):
    ven.create_opt("opt-1", windows=[(T0, HOUR)])
    name, reply = ven.cancel_opt("opt-1")
    assert name == "oadrCanceledOpt" and code(reply) == 200 and reply["opt_id"] == "opt-1"
    with app.app_context():
        assert vtn.opts(ven.ven_id) == []
        assert vtn.opted_out(ven.ven_id, T0, T0 + HOUR) == []
    name, reply = ven.cancel_opt("opt-1")  # already cancelled
    assert name == "oadrCanceledOpt" and code(reply) == 452 and reply["opt_id"] == "opt-1"


def test_unknown_or_foreign_opt_id_gets_452(app, vtn, ven):
    other = make_ven(app, ven_name="ven-two")
    other.register()
    other.create_opt("opt-theirs", windows=[(T0, HOUR)])
    name, reply = ven.cancel_opt("opt-theirs")
    assert name == "oadrCanceledOpt" and code(reply) == 452
    assert "optID 'opt-theirs'" in reply["response"]["response_description"]
    assert code(ven.cancel_opt("opt-never")[1]) == 452
    with app.app_context():
        assert [o["opt_id"] for o in vtn.opts(other.ven_id)] == ["opt-theirs"]


def test_same_opt_id_from_two_vens_are_separate(app, vtn, ven):
    other = make_ven(app, ven_name="ven-two")
    other.register()
    ven.create_opt("opt-1", "optOut", windows=[(T0, HOUR)])
    other.create_opt("opt-1", "optIn", windows=[(T0, HOUR)])
    with app.app_context():
        assert vtn.opts(ven.ven_id)[0]["opt_type"] == "optOut"
        assert vtn.opts(other.ven_id)[0]["opt_type"] == "optIn"


def test_schedule_needs_vavailability_with_plain_windows(app, vtn, ven):
    name, reply = ven.create_opt("opt-1")
    assert name == "oadrCreatedOpt" and code(reply) == 459 and reply["opt_id"] == "opt-1"
    name, reply = ven.create_opt("opt-2", vavailability={"available": [
        {"dtstart": T0, "duration": HOUR, "notification": timedelta(minutes=5)}]})
    assert code(reply) == 459 and "only dtstart and duration" in reply["response"][
        "response_description"]
    with app.app_context():
        assert vtn.opts(ven.ven_id) == []


def add_event(app, vtn, ven_id, **extra):
    with app.app_context():
        return vtn.add_event(ven_id=ven_id, signal_name="SIMPLE", signal_type="level",
                             intervals=[{"dtstart": T0 + HOUR, "duration": HOUR,
                                         "signal_payload": 1.0}], **extra)


def test_event_level_opt(app, vtn, ven):
    event_id = add_event(app, vtn, ven.ven_id)
    name, reply = ven.create_opt("opt-ev", "optOut", event_id=event_id, modification_number=0,
                                 opt_reason="participating",
                                 target={"resource_ids": ["pump-2"]})
    assert code(reply) == 200
    with app.app_context():
        [opt] = vtn.opts(ven.ven_id)
        assert opt["qualified_event_id"] == {"event_id": event_id, "modification_number": 0}
        assert opt["target"]["resource_ids"] == ["pump-2"] and opt["availability"] == []
        assert vtn.opted_out(ven.ven_id, T0, T0 + 10 * HOUR) == []  # not a schedule
        assert [o["opt_id"] for o in vtn.opted_out(ven.ven_id, T0, T0 + HOUR,
                                                   event_id=event_id)] == ["opt-ev"]


@pytest.mark.parametrize("case, expected_code", [
    ("unknown event", 452), ("old modification", 452), ("future modification", 452),
    ("event of another VEN", 452), ("with vavailability", 459), ("with market context", 459),
])
def test_event_level_opt_is_checked(app, vtn, ven, case, expected_code):
    event_id = add_event(app, vtn, ven.ven_id)
    kwargs = {"event_id": event_id, "modification_number": 0}
    if case == "unknown event":
        kwargs["event_id"] = "no-such-event"
    elif case == "old modification":
        with app.app_context():
            vtn.modify_event(event_id, intervals=[{"dtstart": T0 + HOUR, "duration": HOUR,
                                                   "signal_payload": 2.0}])
    elif case == "future modification":
        kwargs["modification_number"] = 1
    elif case == "event of another VEN":
        kwargs["event_id"] = add_event(app, vtn, "someone-else")
    elif case == "with vavailability":
        kwargs["windows"] = [(T0, HOUR)]
    else:
        kwargs["market_context"] = PROGRAM
    name, reply = ven.create_opt("opt-ev", "optOut", **kwargs)
    assert name == "oadrCreatedOpt" and code(reply) == expected_code
    with app.app_context():
        assert vtn.opts(ven.ven_id) == []


def test_handlers_see_and_may_refuse_opts(app, vtn):
    seen = []

    @vtn.on_create_opt
    def create(payload):
        seen.append(("create", payload["ven_id"], payload["opt_id"], payload["opt_type"]))
        if payload["opt_reason"] == "economic":
            raise Rejection(451, "the program does not allow economic opt-outs")

    @vtn.on_cancel_opt
    def cancel(payload):
        seen.append(("cancel", payload["ven_id"], payload["opt_id"], payload["opt"]["opt_type"]))
        if payload["opt_id"] == "locked":
            raise Rejection(451, "locked")

    ven = make_ven(app)
    ven.register()
    _, reply = ven.create_opt("opt-1", "optOut", windows=[(T0, HOUR)], opt_reason="economic")
    assert code(reply) == 451
    assert code(ven.create_opt("locked", "optOut", windows=[(T0, HOUR)])[1]) == 200
    assert code(ven.cancel_opt("locked")[1]) == 451
    with app.app_context():
        assert [o["opt_id"] for o in vtn.opts(ven.ven_id)] == ["locked"]
    assert seen == [("create", ven.ven_id, "opt-1", "optOut"),
                    ("create", ven.ven_id, "locked", "optOut"),
                    ("cancel", ven.ven_id, "locked", "optOut")]


def test_opt_from_an_unregistered_ven_gets_463(app, ven):
    ven.cancel_registration()
    name, reply = ven.create_opt("opt-1", windows=[(T0, HOUR)])
    assert name == "oadrCreatedOpt" and code(reply) == 463
    name, reply = ven.cancel_opt("opt-1")
    assert name == "oadrCanceledOpt" and code(reply) == 463
