"""The example portal: its operator endpoints and its VEN allow-list, against the real VTN."""
from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone

import pytest
from openleadr.messaging import create_message, parse_message

from example_app.app import create_app, vtn
from flask_openadr.testing import make_certificate

PREFIX = "/OpenADR2/Simple/2.0b"


@pytest.fixture
def portal(tmp_path):
    # The default store: SQLite in the instance folder, here a temporary one.
    return create_app({"TESTING": True}, instance_path=str(tmp_path / "instance"))


@pytest.fixture
def client(portal):
    client = portal.test_client()
    # The portal runs with client certificates required (the default); this client is one VEN
    # with a certificate of its own, passed the way Werkzeug's TLS server passes it on.
    client.environ_base["SSL_CLIENT_CERT"] = make_certificate("example-ven").pem
    return client


def tomorrow_at_five() -> datetime:
    day = datetime.now(timezone.utc) + timedelta(days=1)
    return day.replace(hour=17, minute=0, second=0, microsecond=0)


def post_openadr(client, service: str, payload_name: str, **fields):
    response = client.post(f"{PREFIX}/{service}", data=create_message(payload_name, **fields),
                           content_type="application/xml")
    assert response.status_code == 200, response.get_data(as_text=True)
    return parse_message(response.get_data())


def register(client, ven_name: str):
    return post_openadr(
        client, "EiRegisterParty", "oadrCreatePartyRegistration", request_id="req-1",
        ven_name=ven_name, profile_name="2.0b", transport_name="simpleHttp", report_only=False,
        xml_signature=False, http_pull_model=True,
    )


def test_the_store_is_sqlite_in_the_instance_folder(portal, client):
    register(client, "north-substation-ven")
    assert os.path.exists(os.path.join(portal.instance_path, "openadr.sqlite3"))
    assert portal.config["OPENADR_VTN_ID"] == "EXAMPLE-UTILITY-VTN"


def test_operator_creates_lists_and_cancels_an_event(portal, client):
    start = tomorrow_at_five()
    response = client.post("/events", json={
        "group_id": "north", "start": start.isoformat().replace("+00:00", "Z"),
        "duration_minutes": 90, "level": 2,
    })
    assert response.status_code == 201
    created = response.get_json()
    event_id = created["event_id"]
    assert created["status"] == "far"
    assert created["modification_number"] == 0
    assert created["group_ids"] == ["north"]
    assert created["levels"] == [2.0]
    assert created["duration_minutes"] == 90
    assert created["market_context"] == "http://utility.example/programs/peak-saver"
    assert client.get("/events").get_json() == [created]

    with portal.app_context():
        [stored] = vtn.events()
    assert stored["event_descriptor"]["event_id"] == event_id
    assert stored["active_period"]["dtstart"] == start
    assert stored["active_period"]["duration"] == timedelta(minutes=90)
    assert stored["target"]["group_ids"] == ["north"]
    assert stored["event_signals"][0]["signal_name"] == "SIMPLE"

    response = client.post(f"/events/{event_id}/cancel")
    assert response.status_code == 200
    cancelled = response.get_json()
    assert cancelled["status"] == "cancelled"
    assert cancelled["modification_number"] == 1
    with portal.app_context():
        [stored] = vtn.events()
    assert stored["event_descriptor"]["event_status"] == "cancelled"
    assert stored["event_descriptor"]["modification_number"] == 1

    assert client.get(f"/events/{event_id}/responses").get_json() == []


def test_an_event_for_one_ven_with_its_own_market_context(portal, client):
    response = client.post("/events", json={
        "ven_id": "ven-7", "start": "2026-12-01T17:00:00+01:00", "duration_minutes": 30,
        "level": 0.5, "signal_name": "LOAD_DISPATCH", "signal_type": "setpoint",
        "market_context": "http://utility.example/programs/dispatch",
    })
    assert response.status_code == 201
    created = response.get_json()
    assert created["ven_ids"] == ["ven-7"]
    assert created["start"] == "2026-12-01T16:00:00+00:00"
    assert created["market_context"] == "http://utility.example/programs/dispatch"


@pytest.mark.parametrize(
    "body, message",
    [
        ({"start": "2026-12-01T17:00:00Z", "duration_minutes": 60, "level": 1},
         "exactly one of ven_id and group_id"),
        ({"group_id": "north", "start": "2026-12-01T17:00:00", "duration_minutes": 60,
          "level": 1}, "no time zone"),
        ({"group_id": "north", "start": "tomorrow", "duration_minutes": 60, "level": 1},
         "not an ISO 8601 date-time"),
        ({"group_id": "north", "start": "2026-12-01T17:00:00Z", "duration_minutes": 0,
          "level": 1}, "duration_minutes must be a positive number"),
        ({"group_id": "north", "start": "2026-12-01T17:00:00Z", "duration_minutes": 60,
          "level": 7}, "rule 9"),
    ],
)
def test_bad_event_requests_are_refused(portal, client, body, message):
    response = client.post("/events", json=body)
    assert response.status_code == 400
    assert message in response.get_json()["error"]
    with portal.app_context():
        assert vtn.events() == []


def test_unknown_event_is_404(client):
    assert client.post("/events/nope/cancel").status_code == 404
    assert client.get("/events/nope/responses").status_code == 404


def test_allowed_ven_registers_and_gets_its_group_events(portal, client):
    name, reply = register(client, "north-substation-ven")
    assert name == "oadrCreatedPartyRegistration"
    assert int(reply["response"]["response_code"]) == 200
    assert reply["vtn_id"] == "EXAMPLE-UTILITY-VTN"
    ven_id = reply["ven_id"]
    assert ven_id and reply["registration_id"]

    with portal.app_context():
        [ven] = vtn.vens()
    assert ven["ven_id"] == ven_id
    assert ven["ven_name"] == "north-substation-ven"
    assert ven["group_ids"] == ["north"]
    [listed] = client.get("/vens").get_json()
    assert listed["registered"] is True and listed["group_ids"] == ["north"]

    client.post("/events", json={"group_id": "north", "duration_minutes": 60, "level": 1,
                                 "start": tomorrow_at_five().isoformat()})
    client.post("/events", json={"group_id": "south", "duration_minutes": 60, "level": 1,
                                 "start": tomorrow_at_five().isoformat()})
    north_event = [e for e in client.get("/events").get_json() if e["group_ids"] == ["north"]]

    name, _ = post_openadr(client, "OadrPoll", "oadrPoll", ven_id=ven_id)
    assert name == "oadrRegisterReport"
    name, distribute = post_openadr(client, "OadrPoll", "oadrPoll", ven_id=ven_id)
    assert name == "oadrDistributeEvent"
    assert [e["event_descriptor"]["event_id"] for e in distribute["events"]] == [
        north_event[0]["event_id"]
    ]


def test_a_ven_answer_is_logged_and_listed(portal, client, caplog):
    ven_id = register(client, "water-plant-ven")[1]["ven_id"]
    event_id = client.post("/events", json={
        "group_id": "pumps", "start": tomorrow_at_five().isoformat(), "duration_minutes": 45,
        "level": 1,
    }).get_json()["event_id"]
    post_openadr(client, "OadrPoll", "oadrPoll", ven_id=ven_id)  # the register report
    name, distribute = post_openadr(client, "OadrPoll", "oadrPoll", ven_id=ven_id)
    assert name == "oadrDistributeEvent"

    with caplog.at_level("INFO", logger=portal.logger.name):
        name, reply = post_openadr(
            client, "EiEvent", "oadrCreatedEvent", ven_id=ven_id,
            response={"response_code": 200, "response_description": "OK",
                      "request_id": distribute["request_id"]},
            event_responses=[{"response_code": 200, "response_description": "OK",
                              "request_id": distribute["request_id"], "event_id": event_id,
                              "modification_number": 0, "opt_type": "optOut"}],
        )
    assert name == "oadrResponse"
    assert int(reply["response"]["response_code"]) == 200
    assert f"VEN {ven_id} answered event {event_id} (modification 0): optOut" in caplog.text

    [answer] = client.get(f"/events/{event_id}/responses").get_json()
    assert answer["ven_id"] == ven_id
    assert answer["opt_type"] == "optOut"
    assert answer["modification_number"] == 0
    with portal.app_context():
        [recorded] = vtn.event_responses(event_id)
    assert recorded["request_id"] == distribute["request_id"]


def test_unknown_ven_is_rejected(portal, client):
    name, reply = register(client, "stranger-ven")
    assert name == "oadrCreatedPartyRegistration"
    assert int(reply["response"]["response_code"]) == 463
    assert "allow-list" in reply["response"]["response_description"]
    assert not reply.get("registration_id")
    with portal.app_context():
        assert vtn.vens() == []


def test_index_page_lists_vens_and_events(client):
    register(client, "south-campus-ven")
    event_id = client.post("/events", json={
        "group_id": "south", "start": tomorrow_at_five().isoformat(), "duration_minutes": 60,
        "level": 3,
    }).get_json()["event_id"]
    page = client.get("/")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "south-campus-ven" in html
    assert event_id in html
    assert "EXAMPLE-UTILITY-VTN" in html


def test_the_portal_requires_client_certificates_by_default(portal):
    response = portal.test_client().post(
        f"{PREFIX}/EiRegisterParty", content_type="application/xml",
        data=create_message("oadrQueryRegistration", request_id="q"))
    assert response.status_code == 403


def test_the_development_run_without_tls_turns_certificates_off(tmp_path, monkeypatch, caplog):
    # `python -m example_app` passes this config; `flask run` users set the environment.
    monkeypatch.setenv("FLASK_OPENADR_REQUIRE_CLIENT_CERT", "false")
    with caplog.at_level("WARNING", logger="flask_openadr"):
        app = create_app({"TESTING": True}, instance_path=str(tmp_path / "instance"))
    assert app.config["OPENADR_REQUIRE_CLIENT_CERT"] is False
    assert any("OPENADR_REQUIRE_CLIENT_CERT is off" in r.getMessage() for r in caplog.records)
    name, reply = register(app.test_client(), "north-substation-ven")
    assert int(reply["response"]["response_code"]) == 200
