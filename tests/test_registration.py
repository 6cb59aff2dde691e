"""EiRegisterParty: query, create, re-register, cancel both ways, reregistration requests."""
from __future__ import annotations

from datetime import timedelta

import pytest
from flask import Flask

from flask_openadr import VTN, Rejection, signals
from flask_openadr.security.fingerprint import fingerprint_from_der
from tests.support.certs import make_certificate
from tests.support.vens import make_ven


def code(reply):
    return reply["response"]["response_code"]


def test_query_before_registering_offers_profiles_and_poll_frequency(app, ven):
    name, reply = ven.query_registration()
    assert name == "oadrCreatedPartyRegistration"
    assert code(reply) == 200
    assert reply["vtn_id"] == "TEST-VTN"
    assert reply["profiles"] == [{"profile_name": "2.0b", "transports": ["simpleHttp"]}]
    assert reply["requested_oadr_poll_freq"] == timedelta(seconds=10)
    assert "ven_id" not in reply and "registration_id" not in reply


def test_query_returns_ids_only_to_the_registered_certificate(app):
    pem, der = make_certificate()
    ven = make_ven(app, environ={"SSL_CLIENT_CERT": pem})
    ven.register()
    name, reply = ven.query_registration()
    assert reply["ven_id"] == ven.ven_id
    assert reply["registration_id"] == ven.registration_id
    other_pem, _ = make_certificate("other")
    name, reply = make_ven(app, environ={"SSL_CLIENT_CERT": other_pem}).query_registration()
    assert "ven_id" not in reply


def test_builtin_policy_mints_ids_and_uses_the_fingerprint_as_ven_id(app, vtn):
    pem, der = make_certificate()
    ven = make_ven(app, environ={"SSL_CLIENT_CERT": pem})
    name, reply = ven.register()
    assert code(reply) == 200
    assert reply["ven_id"] == fingerprint_from_der(der)
    assert reply["registration_id"]
    anonymous = make_ven(app, ven_name="anon")
    name, reply2 = anonymous.register()
    assert reply2["ven_id"] not in (reply["ven_id"], "")
    assert reply2["registration_id"] != reply["registration_id"]
    with app.app_context():
        stored = {v["ven_id"]: v for v in vtn.vens()}
    assert stored[reply["ven_id"]]["fingerprint"] == fingerprint_from_der(der)
    assert stored[reply2["ven_id"]]["ven_name"] == "anon"


def test_preallocated_ven_id_is_echoed(app):
    ven = make_ven(app, ven_id="007")
    name, reply = ven.register()
    assert code(reply) == 200
    assert reply["ven_id"] == "007"


def test_reregistration_with_current_ids_keeps_them(app, vtn):
    ven = make_ven(app)
    _, first = ven.register()
    ven.ven_name = "renamed"
    _, again = ven.register(renew=True)
    assert code(again) == 200
    assert (again["ven_id"], again["registration_id"]) == (first["ven_id"], first["registration_id"])
    with app.app_context():
        assert vtn.vens()[0]["ven_name"] == "renamed"


def test_wrong_registration_id_gets_452_and_changes_nothing(app, vtn):
    ven = make_ven(app)
    _, first = ven.register()
    ven.registration_id = "not-it"
    _, reply = ven.register(renew=True)
    assert code(reply) == 452
    with app.app_context():
        assert vtn.vens()[0]["registration_id"] == first["registration_id"]


@pytest.mark.parametrize("extra, expected", [
    ({"profile_name": "2.0a"}, 459),
    ({"http_pull_model": False, "transport_address": "ftp://ven.example"}, 454),
    ({"http_pull_model": False}, 454),
    ({"xml_signature": True}, 451),
])
def test_unsupported_registrations_are_refused(app, vtn, extra, expected):
    _, reply = make_ven(app).register(**extra)
    assert code(reply) == expected
    assert reply["profiles"]  # mandatory even in an error reply
    with app.app_context():
        assert vtn.vens() == []


def test_handler_return_forms(app, vtn):
    results = iter(["reg-a", ("ven-b", "reg-b"),
                    {"registration_id": "reg-c", "group_ids": ["north"]}])

    @vtn.on_create_party_registration
    def register(payload):
        assert payload["ven_name"].startswith("ven-")
        assert payload["profile_name"] == "2.0b" and payload["http_pull_model"] is True
        return next(results)

    _, a = make_ven(app, ven_name="ven-a").register()
    _, b = make_ven(app, ven_name="ven-b").register()
    _, c = make_ven(app, ven_name="ven-c").register()
    assert a["registration_id"] == "reg-a"
    assert (b["ven_id"], b["registration_id"]) == ("ven-b", "reg-b")
    assert c["registration_id"] == "reg-c"
    with app.app_context():
        groups = {v["ven_id"]: v["group_ids"] for v in vtn.vens()}
    assert groups[c["ven_id"]] == ["north"]


def test_handler_rejection_travels_as_response_code(app, vtn):
    @vtn.on_create_party_registration
    def register(payload):
        raise Rejection(463, "not on the allow-list")

    _, reply = make_ven(app).register()
    assert code(reply) == 463
    assert reply["response"]["response_description"] == "not on the allow-list"
    with app.app_context():
        assert vtn.vens() == []


def test_handler_crash_is_500_and_leaves_no_state(app, vtn, caplog):
    @vtn.on_create_party_registration
    def register(payload):
        raise KeyError("boom")

    ven = make_ven(app)
    from flask_openadr import codec
    response = ven.post("EiRegisterParty", codec.encode("oadrCreatePartyRegistration", {
        "request_id": "r1", "profile_name": "2.0b", "transport_name": "simpleHttp",
        "report_only": False, "xml_signature": False, "http_pull_model": True}))
    assert response.status_code == 500
    assert "boom" in caplog.text
    with app.app_context():
        assert vtn.vens() == []


def test_handler_may_not_replace_a_preallocated_ven_id(app, vtn):
    @vtn.on_create_party_registration
    def register(payload):
        return ("other", "reg")

    ven = make_ven(app, ven_id="mine")
    response = ven.post("EiRegisterParty", __import__("flask_openadr").codec.encode(
        "oadrCreatePartyRegistration", {
            "request_id": "r1", "ven_id": "mine", "profile_name": "2.0b",
            "transport_name": "simpleHttp", "report_only": False, "xml_signature": False,
            "http_pull_model": True}))
    assert response.status_code == 500
    with app.app_context():
        assert vtn.vens() == []


def test_first_poll_after_registering_is_the_vtn_metadata_report(app):
    ven = make_ven(app)
    ven.register()
    name, reply = ven.poll()
    assert name == "oadrRegisterReport"
    assert reply["reports"] == [] and reply["ven_id"] == ven.ven_id
    name, ack = ven.registered_report(reply)
    assert name == "oadrResponse" and code(ack) == 200
    assert ack["response"]["request_id"] == reply["request_id"]
    name, reply = ven.poll()
    assert name == "oadrResponse"


def test_ven_cancels_its_registration(app, vtn):
    ven = make_ven(app)
    ven.register()
    received = []
    signals.registration_cancelled.connect(lambda sender, **kw: received.append(kw), app,
                                           weak=False)
    name, reply = ven.cancel_registration("wrong")
    assert name == "oadrCanceledPartyRegistration" and code(reply) == 452
    name, reply = ven.cancel_registration()
    assert code(reply) == 200
    assert reply["registration_id"] == ven.registration_id and reply["ven_id"] == ven.ven_id
    assert received == [{"ven_id": ven.ven_id, "registration_id": ven.registration_id}]
    name, reply = ven.poll()
    assert name == "oadrResponse" and code(reply) == 463


def test_cancel_handler_can_refuse(app, vtn):
    @vtn.on_cancel_party_registration
    def cancel(ven_id, payload):
        raise Rejection(451, "contract runs until March")

    ven = make_ven(app)
    ven.register()
    _, reply = ven.cancel_registration()
    assert code(reply) == 451
    name, _ = ven.poll()
    assert name == "oadrRegisterReport"  # still registered: the METADATA report is still due


def test_vtn_cancels_a_registration_on_poll(app, vtn):
    ven = make_ven(app)
    ven.register()
    ven.poll()  # METADATA report
    with app.app_context():
        vtn.cancel_registration(ven.ven_id)
    name, cancel = ven.poll()
    assert name == "oadrCancelPartyRegistration"
    assert cancel["registration_id"] == ven.registration_id and cancel["ven_id"] == ven.ven_id
    name, reply = ven.canceled_registration(cancel["request_id"])
    assert name == "oadrResponse" and code(reply) == 200
    assert reply["response"]["request_id"] == cancel["request_id"]
    _, reply = ven.poll()
    assert code(reply) == 463
    with app.app_context():
        assert vtn.vens()[0]["registration_id"] is None
        with pytest.raises(LookupError):
            vtn.cancel_registration(ven.ven_id)


def test_unrequested_cancel_acknowledgement_is_out_of_sequence(app):
    ven = make_ven(app)
    ven.register()
    name, reply = ven.canceled_registration("nothing")
    assert name == "oadrResponse" and code(reply) == 450
    name, _ = ven.poll()
    assert name == "oadrRegisterReport"  # the registration is still active


def test_vtn_requests_reregistration(app, vtn):
    ven = make_ven(app)
    ven.register()
    with app.app_context():
        vtn.request_reregistration(ven.ven_id)
    name, reply = ven.poll()
    assert name == "oadrRequestReregistration" and reply == {"ven_id": ven.ven_id}
    name, reply = ven.respond()
    assert name == "oadrResponse" and code(reply) == 200
    _, reply = ven.register(renew=True)
    assert code(reply) == 200


def test_registrations_survive_a_restart_on_sqlite(tmp_path, clock):
    uri = "sqlite:///" + str(tmp_path / "shared.sqlite3")

    def make_app():
        app = Flask("restart", instance_path=str(tmp_path / "inst"))
        app.config["OPENADR_STORE_URI"] = uri
        VTN(app, clock=clock)
        return app

    ven = make_ven(make_app())
    ven.register()
    ven.client = make_app().test_client()
    name, reply = ven.poll()
    assert name == "oadrRegisterReport"


def test_push_registration_normalises_the_address_and_the_handler_sees_it(app, vtn):
    seen = []

    @vtn.on_create_party_registration
    def register(payload):
        seen.append(payload["transport_address"])
        if "refused" in payload["transport_address"]:
            raise Rejection(452, "that address is not on the allow-list")
        return None

    ven = make_ven(app)
    _, reply = ven.register(http_pull_model=False, transport_address="http://ven.example:8080/")
    assert code(reply) == 200
    _, again = ven.register(renew=True, http_pull_model=False,
                            transport_address="http://ven.example:8080")
    assert code(again) == 200
    _, refused = make_ven(app).register(http_pull_model=False,
                                        transport_address="https://refused.example")
    assert code(refused) == 452
    assert seen == ["http://ven.example:8080", "https://refused.example"]
    with app.app_context():
        (record,) = vtn.vens()
    assert record["transport_address"] == "http://ven.example:8080"
    assert record["http_pull_model"] is False
