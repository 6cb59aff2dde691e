"""At-least-once delivery on the wire: every queued message the VEN must acknowledge is sent
again after OPENADR_REDELIVERY_AFTER until it does, superseded messages are dropped, and
repeated requests queue one message."""
from __future__ import annotations

from datetime import timedelta

import pytest

from flask_openadr.testing import data_point, metadata_report
from tests.support.clock import T0
from tests.support.vens import make_ven

#: The default redelivery time: two poll intervals of the default 10 s.
AGAIN = timedelta(seconds=20)
US = timedelta(microseconds=1)
USAGE = metadata_report("spec-usage", "TELEMETRY_USAGE", [
    data_point("rid-power", min_period=timedelta(seconds=10), max_period=timedelta(minutes=1))])


def code(reply):
    return reply["response"]["response_code"]


@pytest.fixture
def registered(app):
    """A registered VEN that has not polled yet."""
    ven = make_ven(app)
    assert code(ven.register()[1]) == 200
    return ven


def test_the_vtn_metadata_is_sent_again_until_the_ven_acknowledges_it(registered, clock):
    name, first = registered.poll()
    assert name == "oadrRegisterReport"
    assert registered.poll()[0] == "oadrResponse"  # not due yet
    clock.advance(AGAIN - US)
    assert registered.poll()[0] == "oadrResponse"
    clock.advance(US)
    name, again = registered.poll()
    assert (name, again["request_id"]) == ("oadrRegisterReport", first["request_id"])
    assert registered.poll()[0] == "oadrResponse"  # sent now, so due again only later
    assert code(registered.registered_report(again)[1]) == 200
    clock.advance(10 * AGAIN)
    assert registered.poll()[0] == "oadrResponse"


def test_a_sent_message_keeps_its_place_before_events(app, vtn, registered, clock):
    registered.poll()  # the METADATA, not acknowledged
    with app.app_context():
        vtn.add_event(ven_id=registered.ven_id, signal_name="SIMPLE", signal_type="level",
                      response_required="never", intervals=[
                          {"dtstart": T0 + timedelta(hours=1), "duration": timedelta(hours=1),
                           "signal_payload": 1.0}])
    clock.advance(AGAIN)
    # Due again, the register report (priority 2) goes before the event distribution.
    assert registered.poll()[0] == "oadrRegisterReport"
    assert registered.poll()[0] == "oadrDistributeEvent"
    assert registered.poll()[0] == "oadrResponse"


def test_repeated_reregistration_requests_queue_one_message(app, vtn, registered, clock):
    registered.registered_report(registered.poll()[1])
    with app.app_context():
        vtn.request_reregistration(registered.ven_id)
        vtn.request_reregistration(registered.ven_id)
        assert len(vtn.store.list_outbox(registered.ven_id)) == 1
    assert registered.poll()[0] == "oadrRequestReregistration"
    assert registered.poll()[0] == "oadrResponse"
    with app.app_context():
        vtn.request_reregistration(registered.ven_id)  # sent, unacknowledged: still one
    assert registered.poll()[0] == "oadrResponse"
    clock.advance(AGAIN)
    assert registered.poll()[0] == "oadrRequestReregistration"
    assert code(registered.respond("EiRegisterParty")[1]) == 200
    clock.advance(AGAIN)
    assert registered.poll()[0] == "oadrResponse"
    with app.app_context():  # acknowledged: a new request is a new message
        vtn.request_reregistration(registered.ven_id)
    assert registered.poll()[0] == "oadrRequestReregistration"


def test_a_cancel_registration_is_sent_until_the_ven_answers(app, vtn, registered, clock):
    registered.registered_report(registered.poll()[1])
    with app.app_context():
        vtn.cancel_registration(registered.ven_id)
        vtn.cancel_registration(registered.ven_id)
    name, cancel = registered.poll()
    assert name == "oadrCancelPartyRegistration"
    assert registered.poll()[0] == "oadrResponse"
    clock.advance(AGAIN)
    name, again = registered.poll()
    assert (name, again["request_id"]) == ("oadrCancelPartyRegistration", cancel["request_id"])
    # A VEN that refuses has still answered: it is not asked again and again.
    assert code(registered.canceled_registration(cancel["request_id"], code=500)[1]) == 200
    clock.advance(AGAIN)
    assert registered.poll()[0] == "oadrResponse"


def report_requested(app, vtn, registered):
    """The VEN registered USAGE; returns the reportRequestID the VTN then asked for."""
    registered.registered_report(registered.poll()[1])
    registered.register_report([USAGE])
    with app.app_context():
        return vtn.request_report(registered.ven_id, "spec-usage", ["rid-power"],
                                  granularity=timedelta(seconds=10),
                                  report_back_duration=timedelta(seconds=10))


def test_a_report_request_is_sent_until_the_ven_creates_it(app, vtn, registered, clock):
    report_request_id = report_requested(app, vtn, registered)
    name, create = registered.poll()
    assert name == "oadrCreateReport"
    clock.advance(AGAIN)
    name, again = registered.poll()
    assert (name, again["request_id"]) == ("oadrCreateReport", create["request_id"])
    registered.created_report(create["request_id"], [report_request_id])
    clock.advance(AGAIN)
    assert registered.poll()[0] == "oadrResponse"


def test_a_cancel_replaces_the_create_it_cancels(app, vtn, registered, clock):
    report_request_id = report_requested(app, vtn, registered)
    with app.app_context():
        vtn.cancel_report(registered.ven_id, report_request_id)
    name, cancel = registered.poll()  # never both: the queued create is dropped
    assert (name, cancel["report_request_ids"]) == ("oadrCancelReport", [report_request_id])
    clock.advance(AGAIN)
    assert registered.poll()[0] == "oadrCancelReport"
    registered.canceled_report(cancel["request_id"])
    clock.advance(AGAIN)
    assert registered.poll()[0] == "oadrResponse"


def test_a_sent_create_is_not_sent_again_once_cancelled(app, vtn, registered, clock):
    report_request_id = report_requested(app, vtn, registered)
    assert registered.poll()[0] == "oadrCreateReport"  # sent, never answered
    with app.app_context():
        vtn.cancel_report(registered.ven_id, report_request_id)
    assert registered.poll()[0] == "oadrCancelReport"
    clock.advance(AGAIN)
    assert registered.poll()[0] == "oadrCancelReport"  # the cancel, not the create


def test_an_event_is_sent_again_until_the_ven_answers_it(app, vtn, registered, clock):
    registered.registered_report(registered.poll()[1])
    with app.app_context():
        vtn.add_event(ven_id=registered.ven_id, signal_name="SIMPLE", signal_type="level",
                      intervals=[{"dtstart": T0 + timedelta(hours=1),
                                  "duration": timedelta(hours=1), "signal_payload": 1.0}])
    name, first = registered.poll()
    assert name == "oadrDistributeEvent"
    assert registered.poll()[0] == "oadrResponse"
    clock.advance(AGAIN)
    name, again = registered.poll()
    assert name == "oadrDistributeEvent"
    assert again["events"][0]["event_descriptor"]["modification_number"] == 0
    assert code(registered.created_event(again)[1]) == 200
    clock.advance(AGAIN)
    assert registered.poll()[0] == "oadrResponse"
