"""OadrPoll: the user's on_poll first, then the outbox in protocol order, then oadrResponse."""
from __future__ import annotations

from datetime import timedelta

from conftest import T0, make_ven


def add_event(app, vtn, ven_id):
    with app.app_context():
        return vtn.add_event(ven_id=ven_id, signal_name="SIMPLE", signal_type="level", intervals=[
            {"dtstart": T0 + timedelta(hours=1), "duration": timedelta(hours=1),
             "signal_payload": 1.0}])


def test_empty_outbox_answers_oadr_response_with_the_ven_id(app, registered_ven):
    name, reply = registered_ven.poll()
    assert name == "oadrResponse"
    assert reply["response"] == {"response_code": 200, "response_description": "OK",
                                 "request_id": ""}
    assert reply["ven_id"] == registered_ven.ven_id


def test_outbox_order_follows_the_protocol_notes(app, vtn):
    ven = make_ven(app)
    ven.register()  # queues the VTN's METADATA oadrRegisterReport (priority 2)
    add_event(app, vtn, ven.ven_id)  # a pending distribution (between 2 and 4)
    with app.app_context():
        vtn.request_reregistration(ven.ven_id)  # priority 1, queued last but sent first
    names = [ven.poll()[0] for _ in range(4)]
    assert names == ["oadrRequestReregistration", "oadrRegisterReport", "oadrDistributeEvent",
                     "oadrResponse"]


def test_on_poll_is_asked_first_and_none_lets_the_outbox_answer(app, vtn):
    asked = []
    answers = iter([("oadrRequestReregistration", {"ven_id": "custom"}), None])

    @vtn.on_poll
    def poll(ven_id):
        asked.append(ven_id)
        return next(answers)

    ven = make_ven(app)
    ven.register()
    name, reply = ven.poll()
    assert (name, reply) == ("oadrRequestReregistration", {"ven_id": "custom"})
    name, _ = ven.poll()
    assert name == "oadrRegisterReport"  # the handler's None: the outbox, still intact
    assert asked == [ven.ven_id, ven.ven_id]


def test_a_new_registration_drops_what_was_queued_for_the_old_one(app, vtn):
    ven = make_ven(app, ven_id="ven-7")
    ven.register()
    with app.app_context():
        vtn.request_reregistration(ven.ven_id)
    ven.register()  # a fresh registration (no registrationID): starts afresh
    names = [ven.poll()[0] for _ in range(2)]
    assert names == ["oadrRegisterReport", "oadrResponse"]
