"""What the OpenADR certification harness expects of a VTN (issue 9), through the Flask test
client: each test is named after the behaviour a regression would make certification fail."""
from __future__ import annotations

from datetime import timedelta

import pytest

from conftest import T0, make_ven
from flask_openadr import EventError
from flask_openadr.testing import make_certificate


def code(reply):
    return reply["response"]["response_code"]


def intervals(start=T0 + timedelta(hours=1), payloads=(1.0, 2.0), minutes=30):
    return [{"dtstart": start + timedelta(minutes=minutes * i),
             "duration": timedelta(minutes=minutes), "signal_payload": value}
            for i, value in enumerate(payloads)]


def add(app, vtn, **kwargs):
    kwargs.setdefault("signal_name", "SIMPLE")
    kwargs.setdefault("signal_type", "level")
    kwargs.setdefault("intervals", intervals())
    with app.app_context():
        return vtn.add_event(**kwargs)


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
    _, reply = registered_ven.canceled_registration(cancel["request_id"], code=500)
    assert (code(reply), reply["ven_id"]) == (200, registered_ven.ven_id)
    with app.app_context():
        assert vtn.vens()[0]["registration_id"] == registered_ven.registration_id


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
