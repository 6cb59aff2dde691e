"""Events through the VTN API and the wire: distribution on poll, changes, targeting, replies."""
from __future__ import annotations

from datetime import timedelta

import pytest

from flask_openadr import EventError, signals
from flask_openadr.services import delivery
from tests.support.clock import T0
from tests.support.events import add, intervals
from tests.support.vens import make_ven


PRICE_UNIT = {"kind": "currencyPerKWh", "item_description": "currencyPerKWh",
              "item_units": "USD", "si_scale_code": "none"}


def code(reply):
    return reply["response"]["response_code"]


def test_event_reaches_the_ven_on_its_next_poll(app, vtn, registered_ven, clock):
    event_id = add(app, vtn, ven_id=registered_ven.ven_id, ramp_up_period=timedelta(minutes=15),
                   priority=1, market_context="http://utility.example/peak")
    name, dist = registered_ven.poll()
    assert name == "oadrDistributeEvent"
    assert dist["vtn_id"] == "TEST-VTN" and dist["request_id"]
    assert code(dist) == 200 and dist["response"]["request_id"] == ""
    (event,) = dist["events"]
    d = event["event_descriptor"]
    assert d["event_id"] == event_id and d["modification_number"] == 0
    assert d["created_date_time"] == T0 and d["event_status"] == "far"
    assert d["market_context"] == "http://utility.example/peak" and d["priority"] == 1
    assert event["active_period"]["dtstart"] == T0 + timedelta(hours=1)
    assert event["active_period"]["duration"] == timedelta(hours=1)
    (signal,) = event["event_signals"]
    assert [i["uid"] for i in signal["intervals"]] == ["0", "1"]
    assert all("dtstart" not in i for i in signal["intervals"])
    assert signal["current_value"] == 0.0
    assert event["target"]["ven_ids"] == [registered_ven.ven_id]
    assert event["response_required"] == "always"
    # Delivered: the next poll has nothing new.
    assert registered_ven.poll()[0] == "oadrResponse"


def test_status_and_current_value_follow_the_clock(app, vtn, registered_ven, clock):
    add(app, vtn, ven_id=registered_ven.ven_id, ramp_up_period=timedelta(minutes=15))
    registered_ven.poll()
    clock.advance(timedelta(minutes=50))
    _, dist = registered_ven.request_event()
    assert dist["events"][0]["event_descriptor"]["event_status"] == "near"
    assert dist["events"][0]["event_descriptor"]["created_date_time"] == clock.now
    clock.advance(timedelta(minutes=40))  # 30 min into the event: second interval
    _, dist = registered_ven.request_event()
    assert dist["events"][0]["event_descriptor"]["event_status"] == "active"
    assert dist["events"][0]["event_signals"][0]["current_value"] == 2.0
    clock.advance(timedelta(hours=1))
    _, dist = registered_ven.request_event()
    # Asked for, an event that just completed is still shown, until the retention sweep
    # removes it; a poll never sends it again for that.
    assert [e["event_descriptor"]["event_status"] for e in dist["events"]] == ["completed"]
    assert registered_ven.poll()[0] == "oadrResponse"


def test_modify_bumps_once_and_redistributes(app, vtn, registered_ven):
    event_id = add(app, vtn, ven_id=registered_ven.ven_id)
    registered_ven.poll()
    with app.app_context():
        vtn.modify_event(event_id, intervals=intervals(payloads=(3.0,)))
    name, dist = registered_ven.poll()
    assert name == "oadrDistributeEvent"
    d = dist["events"][0]["event_descriptor"]
    assert d["modification_number"] == 1
    assert [i["signal_payload"] for i in dist["events"][0]["event_signals"][0]["intervals"]] == [3.0]
    assert registered_ven.poll()[0] == "oadrResponse"


def test_cancel_is_announced_once(app, vtn, registered_ven):
    event_id = add(app, vtn, ven_id=registered_ven.ven_id)
    registered_ven.poll()
    with app.app_context():
        vtn.cancel_event(event_id)
        vtn.cancel_event(event_id)  # no second bump
    name, dist = registered_ven.poll()
    d = dist["events"][0]["event_descriptor"]
    assert (d["event_status"], d["modification_number"]) == ("cancelled", 1)
    assert registered_ven.poll()[0] == "oadrResponse"


def test_group_targets_reach_every_ven_in_the_group(app, vtn):
    north1, north2, south = (make_ven(app, ven_name=n) for n in ("n1", "n2", "s1"))
    for v in (north1, north2, south):
        v.register()
        v.poll()
    with app.app_context():
        vtn.update_ven(north1.ven_id, group_ids=["north"])
        vtn.update_ven(north2.ven_id, group_ids=["north", "all"])
        vtn.update_ven(south.ven_id, group_ids=["south"])
    add(app, vtn, targets={"group_ids": ["north"]})
    for v in (north1, north2):
        name, dist = v.poll()
        assert name == "oadrDistributeEvent"
        assert dist["events"][0]["target"]["group_ids"] == ["north"]
        assert dist["events"][0]["target"]["ven_ids"] == []
    assert south.poll()[0] == "oadrResponse"


def test_several_ven_ids_never_share_one_target(app, vtn):
    a, b = make_ven(app, ven_name="a"), make_ven(app, ven_name="b")
    for v in (a, b):
        v.register()
        v.poll()
    add(app, vtn, targets=[{"ven_id": a.ven_id}, {"ven_id": b.ven_id}])
    for v in (a, b):
        _, dist = v.poll()
        assert dist["events"][0]["target"]["ven_ids"] == [v.ven_id]


def test_request_event_honours_reply_limit_and_echoes_request_id(app, vtn, registered_ven):
    for hours in (3, 1, 2):
        add(app, vtn, ven_id=registered_ven.ven_id,
            intervals=intervals(start=T0 + timedelta(hours=hours)))
    name, dist = registered_ven.request_event()
    starts = [e["active_period"]["dtstart"] for e in dist["events"]]
    assert starts == sorted(starts) and len(starts) == 3
    name, dist = registered_ven.request_event(reply_limit=1)
    assert len(dist["events"]) == 1
    assert dist["events"][0]["active_period"]["dtstart"] == T0 + timedelta(hours=1)
    assert dist["response"]["request_id"] != ""


def test_request_event_handler_supplies_the_events(app, vtn):
    calls = []

    @vtn.on_request_event
    def supply(ven_id):
        calls.append(ven_id)
        return []

    ven = make_ven(app)
    ven.register()
    add(app, vtn, ven_id=ven.ven_id)
    _, dist = ven.request_event()
    assert calls == [ven.ven_id] and dist["events"] == []


def test_created_event_records_opt_state_and_calls_the_handler(app, vtn):
    seen, signalled = [], []

    @vtn.on_created_event
    def created(payload):
        seen.append(payload)

    ven = make_ven(app)
    ven.register()
    ven.poll()
    event_id = add(app, vtn, ven_id=ven.ven_id)
    _, dist = ven.poll()
    with signals.event_response_received.connected_to(
            lambda sender, **kw: signalled.append(kw), app):
        name, reply = ven.created_event(dist, "optIn")
        assert name == "oadrResponse" and code(reply) == 200 and reply["ven_id"] == ven.ven_id
        ven.created_event(dist, "optOut")  # a later optOut is accepted (rule 17)
    assert [p["event_responses"][0]["opt_type"] for p in seen] == ["optIn", "optOut"]
    assert [s["opt_type"] for s in signalled] == ["optIn", "optOut"]
    with app.app_context():
        (state,) = vtn.event_responses(event_id)
    assert (state["ven_id"], state["opt_type"], state["modification_number"]) == \
        (ven.ven_id, "optOut", 0)


def test_created_event_for_an_unknown_event_is_452(app, vtn, registered_ven):
    event_id = add(app, vtn, ven_id=registered_ven.ven_id)
    _, dist = registered_ven.poll()
    dist["events"][0]["event_descriptor"]["event_id"] = "no-such-event"
    name, reply = registered_ven.created_event(dist)
    assert name == "oadrResponse" and code(reply) == 452
    with app.app_context():
        assert vtn.event_responses(event_id) == []


@pytest.mark.parametrize("kwargs, rule", [
    ({"intervals": intervals(payloads=(4.0,))}, "rule 9"),
    ({"intervals": [intervals()[0], intervals()[0]]}, "interval"),
    ({"signal_type": "bogus"}, "signalType"),
    # An int too large for a float: float() raised OverflowError, not EventError.
    ({"intervals": intervals(payloads=(10**400,))},
     r"intervals\[0\]\.signal_payload is about 10\*\*400, beyond a float's range"),
])
def test_conformance_rules_are_checked_at_creation(app, vtn, registered_ven, kwargs, rule):
    with pytest.raises(EventError, match=rule):
        add(app, vtn, ven_id=registered_ven.ven_id, **kwargs)
    with app.app_context():
        assert vtn.events() == []


def test_full_event_form_with_two_signals(app, vtn, registered_ven):
    event = {
        "event_descriptor": {"priority": 2},
        "active_period": {"dtstart": T0 + timedelta(hours=1), "duration": timedelta(hours=1)},
        "event_signals": [
            {"intervals": [{"duration": timedelta(hours=1), "uid": "0", "signal_payload": 1.0}],
             "signal_name": "SIMPLE", "signal_type": "level", "signal_id": "s0"},
            {"intervals": [{"duration": timedelta(hours=1), "uid": "0", "signal_payload": 0.25}],
             "signal_name": "ELECTRICITY_PRICE", "signal_type": "price", "signal_id": "s1",
             "item_base": PRICE_UNIT},
        ],
        "target": {"ven_ids": [registered_ven.ven_id]},
        "response_required": "never",
    }
    with app.app_context():
        event_id = vtn.add_event(event=event)
    _, dist = registered_ven.poll()
    (sent,) = dist["events"]
    assert sent["event_descriptor"]["event_id"] == event_id
    assert [s["signal_id"] for s in sent["event_signals"]] == ["s0", "s1"]
    assert sent["response_required"] == "never"


def test_events_and_get_event_show_the_status_now(app, vtn, registered_ven, clock):
    from flask_openadr import UnknownEvent

    event_id = add(app, vtn, ven_id=registered_ven.ven_id)
    with app.app_context():
        assert vtn.get_event(event_id)["event_descriptor"]["event_status"] == "far"
        clock.advance(timedelta(hours=1, minutes=5))
        assert [e["event_descriptor"]["event_status"] for e in vtn.events()] == ["active"]
        with pytest.raises(UnknownEvent):
            vtn.get_event("nope")


def test_add_event_refuses_what_could_never_be_sent(app, vtn, registered_ven):
    with pytest.raises(EventError, match="fraction of a second"):
        add(app, vtn, ven_id=registered_ven.ven_id, intervals=[
            {"dtstart": T0 + timedelta(hours=1), "duration": timedelta(seconds=0.5),
             "signal_payload": 1.0}])
    with pytest.raises(EventError, match="control characters"):
        add(app, vtn, ven_id=registered_ven.ven_id, vtn_comment="line\x0bfeed")
    with app.app_context():
        assert vtn.events() == []
    assert registered_ven.poll()[0] == "oadrResponse"


def test_a_reply_that_cannot_be_built_swallows_no_event(app, vtn, registered_ven):
    good = add(app, vtn, ven_id=registered_ven.ven_id)
    with app.app_context():
        # An event written around the API's checks (an older release, a hand edit).
        bad = vtn.get_event(good)
        bad["event_descriptor"].update(event_id="bad", event_status=None)
        bad["event_descriptor"].pop("event_status")
        bad["event_descriptor"]["vtn_comment"] = "\x00"
        vtn.store.put_event(bad)
        ctx = app.extensions["openadr"].context
        delivery.fan_out(ctx, bad, None, ctx.now())
        before = vtn.store.get_delivered(registered_ven.ven_id)
        assert set(before["events"]) == {good, "bad"}
    response = registered_ven.post("OadrPoll", registered_ven_poll_body(registered_ven))
    assert response.status_code == 500
    with app.app_context():
        assert vtn.store.get_delivered(registered_ven.ven_id) == before  # rolled back
        vtn.store.delete_event("bad")
    name, dist = registered_ven.poll()
    assert name == "oadrDistributeEvent"
    assert [e["event_descriptor"]["event_id"] for e in dist["events"]] == [good]


def registered_ven_poll_body(ven):
    from flask_openadr import codec

    return codec.encode("oadrPoll", {"ven_id": ven.ven_id})
