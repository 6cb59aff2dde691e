"""The extension object: init_app, per-app state, handler registration, signals, isolation."""
from __future__ import annotations

import pytest
from flask import Flask

from flask_openadr import VTN, codec, signals
from flask_openadr.testing import make_certificate
from tests.support.vens import make_ven


def make_app(tmp_path, name="ext"):
    app = Flask(name, instance_path=str(tmp_path / name))
    app.config["OPENADR_STORE_URI"] = "memory://"
    return app


def test_factory_pattern_and_per_app_state(tmp_path):
    vtn = VTN()
    app = make_app(tmp_path)
    vtn.init_app(app)
    assert app.extensions["openadr"].vtn is vtn
    assert app.url_map.bind("localhost").match("/OpenADR2/Simple/2.0b/OadrPoll",
                                               method="POST")[0] == "openadr.OadrPoll"


def test_init_twice_on_one_app_is_an_error(tmp_path):
    app = make_app(tmp_path)
    VTN(app)
    with pytest.raises(RuntimeError, match="already registered"):
        VTN(app)


def test_decorators_return_the_function_unchanged(tmp_path):
    vtn = VTN(make_app(tmp_path))

    def on_poll(ven_id):
        return None

    assert vtn.on_poll(on_poll) is on_poll
    assert vtn.handler("on_created_event")(on_poll) is on_poll


def test_unknown_handler_name_is_an_error():
    with pytest.raises(ValueError, match="on_pole"):
        VTN().handler("on_pole")


def test_handlers_cannot_be_registered_after_the_first_request(tmp_path):
    app = make_app(tmp_path)
    vtn = VTN(app)
    make_ven(app).query_registration()
    with pytest.raises(RuntimeError, match="after the VTN handled its first request"):
        vtn.on_poll(lambda ven_id: None)


def test_api_needs_an_app_context_of_its_own_app(tmp_path):
    vtn = VTN(make_app(tmp_path, "one"))
    with pytest.raises(RuntimeError, match="app_context"):
        vtn.vens()
    other = make_app(tmp_path, "two")
    VTN(other)
    with other.app_context(), pytest.raises(RuntimeError, match="init_app"):
        vtn.vens()


def test_two_apps_with_two_vtns_share_nothing(tmp_path):
    app1, app2 = make_app(tmp_path, "a1"), make_app(tmp_path, "a2")
    vtn1, vtn2 = VTN(app1), VTN(app2)
    seen1, seen2 = [], []

    @vtn1.on_create_party_registration
    def reg1(payload):
        seen1.append(payload["ven_name"])

    @vtn2.on_create_party_registration
    def reg2(payload):
        seen2.append(payload["ven_name"])

    make_ven(app1, ven_name="only-one").register()
    assert seen1 == ["only-one"] and seen2 == []
    with app1.app_context():
        assert len(vtn1.vens()) == 1
    with app2.app_context():
        assert vtn2.vens() == []


def test_signals_are_sent_with_the_app_as_sender(tmp_path):
    app, other = make_app(tmp_path, "s1"), make_app(tmp_path, "s2")
    VTN(app), VTN(other)
    got = []

    def receiver(sender, **data):
        got.append((sender, data))

    with signals.message_received.connected_to(receiver, app), \
            signals.message_sent.connected_to(receiver, app), \
            signals.registration_created.connected_to(receiver, app):
        make_ven(app).register()
        make_ven(other).register()
    kinds = [data.get("payload_name", "registration") for sender, data in got]
    assert all(sender is app for sender, _ in got)
    assert kinds == ["oadrCreatePartyRegistration", "registration",
                     "oadrCreatedPartyRegistration"]


def test_update_ven_sets_targeting_membership(tmp_path):
    app = make_app(tmp_path)
    vtn = VTN(app)
    ven = make_ven(app)
    ven.register()
    with app.app_context():
        record = vtn.update_ven(ven.ven_id, group_ids=["north"], resource_ids=["r1"])
        assert vtn.vens()[0]["group_ids"] == ["north"] == record["group_ids"]
        with pytest.raises(LookupError):
            vtn.update_ven("nobody", group_ids=[])
        with pytest.raises(TypeError):
            vtn.update_ven(ven.ven_id, group_ids="north")


@pytest.mark.parametrize("uri, warned", [("memory://", True), ("sqlite", False)])
def test_memory_store_under_a_multiprocess_server_warns_once(tmp_path, caplog, uri, warned):
    app = make_app(tmp_path)
    if uri == "sqlite":
        uri = f"sqlite:///{tmp_path / 'vtn.sqlite3'}"
    app.config["OPENADR_STORE_URI"] = uri
    VTN(app)
    body = codec.encode("oadrQueryRegistration", {"request_id": "q"})
    client = app.test_client()
    certificate = make_certificate("multi")
    for _ in range(2):  # environ_overrides: the test client sets wsgi.multiprocess itself
        response = client.post("/OpenADR2/Simple/2.0b/EiRegisterParty", data=body,
                               content_type="application/xml",
                               environ_overrides={"wsgi.multiprocess": True,
                                                  "SSL_CLIENT_CERT": certificate.pem})
        assert response.status_code == 200
    messages = [r.getMessage() for r in caplog.records if "multi-process" in r.getMessage()]
    assert len(messages) == (1 if warned else 0)
