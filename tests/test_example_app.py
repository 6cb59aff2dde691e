"""The example portal against the real VTN: login, CSRF, its JSON API and pages, its settings.

The same portal in a real browser with a real VEN is tests/test_example_browser.py.
"""
from __future__ import annotations

import os
import re
import time
from datetime import datetime, timedelta, timezone

import pytest
from openleadr.messaging import create_message, parse_message

from example_app import settings
from example_app.app import create_app, vtn
from flask_openadr.testing import (VENTestClient, data_point, data_report, make_certificate,
                                   metadata_report)
from tests.support.backends import URI_FACTORIES

PREFIX = "/OpenADR2/Simple/2.0b"


@pytest.fixture
def portal(tmp_path, monkeypatch):
    # The environment of whoever runs the tests must not configure the portal under test.
    for name in list(os.environ):
        if name.startswith(("OPENADR_", "PORTAL_")) and not name.startswith("OPENADR_TEST_"):
            monkeypatch.delenv(name)
    # The default store: SQLite in the instance folder, here a temporary one.
    return create_app({"TESTING": True}, instance_path=str(tmp_path / "instance"))


@pytest.fixture
def anonymous(portal):
    """Not logged in to the portal; on the OpenADR side a VEN with a client certificate."""
    client = portal.test_client()
    client.environ_base["SSL_CLIENT_CERT"] = make_certificate("anonymous-ven").pem
    return client


@pytest.fixture
def client(portal):
    """A test client logged in as the operator, sending the CSRF token with every JSON write."""
    client = portal.test_client()
    token = client.get("/api/session").get_json()["csrf_token"]
    reply = client.post("/api/login", json={"user": "operator", "password": "openadr-demo"},
                        headers={"X-CSRFToken": token})
    assert reply.status_code == 200, reply.get_data(as_text=True)
    client.environ_base["HTTP_X_CSRFTOKEN"] = reply.get_json()["csrf_token"]
    # The portal runs with client certificates required (the default); the OpenADR messages this
    # client sends come from one VEN with a certificate of its own, passed the way Werkzeug's TLS
    # server passes it on.
    client.environ_base["SSL_CLIENT_CERT"] = make_certificate("example-ven").pem
    return client


def in_a_while(minutes: int = 60) -> datetime:
    return (datetime.now(timezone.utc) + timedelta(minutes=minutes)).replace(microsecond=0)


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


def form_token(html: str) -> str:
    found = (re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', html)
             or re.search(r'type="hidden" name="csrf_token" value="([^"]+)"', html))
    return found.group(1)


# -- login and CSRF ---------------------------------------------------------------------------


def test_pages_and_api_need_a_login(anonymous):
    page = anonymous.get("/vens")
    assert page.status_code == 302 and page.location.startswith("/login?next=/vens")
    assert anonymous.get("/api/vens").status_code == 403
    refused = anonymous.post("/api/events", json={"group_id": "north"})
    assert refused.status_code == 403 and "log in first" in refused.get_json()["error"]


def test_the_openadr_endpoints_need_no_login_and_no_csrf_token(portal, anonymous):
    name, reply = register(anonymous, "north-substation-ven")
    assert name == "oadrCreatedPartyRegistration"
    assert int(reply["response"]["response_code"]) == 200


def test_login_form_with_csrf_then_logout(anonymous):
    page = anonymous.get("/login")
    token = form_token(page.get_data(as_text=True))
    no_token = anonymous.post("/login", data={"user": "operator", "password": "openadr-demo"})
    assert no_token.status_code == 400 and "CSRF" in no_token.get_data(as_text=True)
    wrong = anonymous.post("/login", data={"csrf_token": token, "user": "operator",
                                           "password": "guess"})
    assert wrong.status_code == 400 and "wrong user or password" in wrong.get_data(as_text=True)
    good = anonymous.post("/login?next=//evil.example/x", data={
        "csrf_token": token, "user": "operator", "password": "openadr-demo"})
    assert good.status_code == 302 and good.location == "/vens"  # never off-site
    token = form_token(anonymous.get("/vens").get_data(as_text=True))
    assert anonymous.post("/logout", data={"csrf_token": token}).status_code == 302
    token = form_token(anonymous.get("/login").get_data(as_text=True))
    again = anonymous.post("/login?next=/\\evil.example/x", data={
        "csrf_token": token, "user": "operator", "password": "openadr-demo"})
    assert again.status_code == 302 and again.location == "/vens"
    back = anonymous.post("/login?next=/events%3Fx%3D1", data={
        "csrf_token": form_token(anonymous.get("/login").get_data(as_text=True)),
        "user": "operator", "password": "openadr-demo"})
    assert back.location == "/events?x=1"
    assert anonymous.get("/vens").status_code == 200
    token = form_token(anonymous.get("/vens").get_data(as_text=True))
    assert anonymous.post("/logout", data={"csrf_token": token}).status_code == 302
    assert anonymous.get("/vens").status_code == 302


def test_without_a_password_hash_nobody_logs_in(tmp_path):
    app = create_app({"TESTING": True, "PORTAL_PASSWORD_HASH": None},
                     instance_path=str(tmp_path / "instance"))
    client = app.test_client()
    assert "No operator password is configured" in client.get("/login").get_data(as_text=True)
    token = client.get("/api/session").get_json()["csrf_token"]
    reply = client.post("/api/login", json={"user": "operator", "password": ""},
                        headers={"X-CSRFToken": token})
    assert reply.status_code == 403


def test_json_writes_need_the_csrf_token(portal, client):
    del client.environ_base["HTTP_X_CSRFTOKEN"]
    reply = client.post("/api/events", json={"group_id": "north", "level": 1,
                                             "start": in_a_while().isoformat(),
                                             "duration_minutes": 60})
    assert reply.status_code == 400 and "CSRF" in reply.get_json()["error"]
    with portal.app_context():
        assert vtn.events() == []


# -- settings -----------------------------------------------------------------------------------


def test_the_store_is_sqlite_in_the_instance_folder(portal, anonymous):
    register(anonymous, "north-substation-ven")
    assert os.path.exists(os.path.join(portal.instance_path, "openadr.sqlite3"))
    assert portal.config["OPENADR_VTN_ID"] == "EXAMPLE-UTILITY-VTN"
    # A session key was made once and kept for the other workers.
    with open(os.path.join(portal.instance_path, "secret_key"), encoding="ascii") as fh:
        assert fh.read() == portal.config["SECRET_KEY"]


def test_the_environment_wins_over_the_yaml_file(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("OPENADR_STORE_URI", f"sqlite:///{tmp_path / 'elsewhere.sqlite3'}")
    monkeypatch.setenv("OPENADR_POLL_FREQUENCY", "30")
    monkeypatch.setenv("ALLOWED_VENS", '{"env-ven": ["east"]}')
    monkeypatch.setenv("PORTAL_USER", "alice")
    monkeypatch.setenv("OPENADR_POLL_FREQUENCE", "5")
    with caplog.at_level("WARNING", logger="example_app"):
        app = create_app({"TESTING": True}, instance_path=str(tmp_path / "instance"))
    assert app.config["OPENADR_POLL_FREQUENCY"] == 30
    assert app.config["OPENADR_VTN_ID"] == "EXAMPLE-UTILITY-VTN"  # from the file still
    assert app.config["ALLOWED_VENS"] == {"env-ven": ["east"]}
    assert app.config["PORTAL_USER"] == "alice"
    assert "OPENADR_POLL_FREQUENCE is not a setting" in caplog.text
    ven = VENTestClient(app.test_client(), ven_name="env-ven")
    assert ven.register()[1]["response"]["response_code"] == 200
    assert os.path.exists(tmp_path / "elsewhere.sqlite3")
    assert not os.path.exists(tmp_path / "instance" / "openadr.sqlite3")


@pytest.mark.parametrize("value", ["secret", "md5$a$b", "scrypt:1$a$b"])
def test_a_password_setting_that_is_no_hash_stops_the_start(tmp_path, value):
    with pytest.raises(ValueError, match="PORTAL_PASSWORD_HASH .*hash-password"):
        create_app({"TESTING": True, "PORTAL_PASSWORD_HASH": value},
                   instance_path=str(tmp_path / "instance"))


def test_hash_password_makes_a_hash_the_login_accepts(tmp_path):
    app = create_app({"TESTING": True}, instance_path=str(tmp_path / "instance"))
    result = app.test_cli_runner().invoke(args=["portal", "hash-password"],
                                          input="s3cret-pass\ns3cret-pass\n")
    assert result.exit_code == 0, result.output
    made = result.output.strip().splitlines()[-1]
    other = create_app({"TESTING": True, "PORTAL_PASSWORD_HASH": made, "PORTAL_USER": "ops"},
                       instance_path=str(tmp_path / "instance"))
    client = other.test_client()
    token = client.get("/api/session").get_json()["csrf_token"]
    assert client.post("/api/login", json={"user": "ops", "password": "openadr-demo"},
                       headers={"X-CSRFToken": token}).status_code == 403
    assert client.post("/api/login", json={"user": "ops", "password": "s3cret-pass"},
                       headers={"X-CSRFToken": token}).status_code == 200


def test_the_secret_key_and_cookie_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("SECRET_KEY", "from-the-environment")
    monkeypatch.setenv("SESSION_COOKIE_SECURE", "true")
    app = create_app({"TESTING": True}, instance_path=str(tmp_path / "instance"))
    assert app.config["SECRET_KEY"] == "from-the-environment"
    assert app.config["SESSION_COOKIE_SECURE"] is True
    assert app.config["SESSION_COOKIE_SAMESITE"] == "Lax"
    assert not os.path.exists(tmp_path / "instance" / "secret_key")


def test_environment_values_are_json_or_text():
    found = settings.environment({"OPENADR_POLL_FREQUENCY": "10", "PORTAL_USER": "bob",
                                  "OPENADR_BACKGROUND": "off", "HOME": "/x",
                                  "PORTAL_REFRESH_SECONDS": "2.5"})
    assert found == {"OPENADR_POLL_FREQUENCY": 10, "PORTAL_USER": "bob",
                     "OPENADR_BACKGROUND": "off", "PORTAL_REFRESH_SECONDS": 2.5}


# -- the JSON API ---------------------------------------------------------------------------------


def test_operator_creates_modifies_lists_and_cancels_an_event(portal, client):
    register(client, "north-substation-ven")
    start = in_a_while()
    response = client.post("/api/events", json={
        "group_id": "north", "start": start.isoformat().replace("+00:00", "Z"),
        "duration_minutes": 90, "level": 2,
    })
    assert response.status_code == 201, response.get_json()
    created = response.get_json()
    event_id = created["event_id"]
    assert created["status"] == "far"
    assert created["modification_number"] == 0
    assert created["group_ids"] == ["north"]
    assert created["levels"] == [2.0]
    assert created["duration_minutes"] == 90
    assert created["market_context"] == "http://utility.example/programs/peak-saver"
    assert created["responses"] == {"optIn": 0, "optOut": 0, "none": 1}
    assert client.get("/api/events").get_json() == [created]
    with portal.app_context():
        [stored] = vtn.events()
    assert stored["active_period"]["dtstart"] == start
    assert stored["target"]["group_ids"] == ["north"]

    modified = client.post(f"/api/events/{event_id}/modify", json={"level": 3})
    assert modified.status_code == 200, modified.get_json()
    assert modified.get_json()["levels"] == [3.0]
    assert modified.get_json()["modification_number"] == 1

    response = client.post(f"/api/events/{event_id}/cancel")
    assert response.status_code == 200
    cancelled = response.get_json()
    assert cancelled["status"] == "cancelled"
    assert cancelled["modification_number"] == 2
    assert client.get(f"/api/events/{event_id}/responses").get_json() == []


def test_an_event_for_one_ven_with_its_own_market_context(portal, client):
    ven_id = register(client, "south-campus-ven")[1]["ven_id"]
    start = in_a_while(30)
    response = client.post("/api/events", json={
        "ven_id": ven_id, "start": start.astimezone(timezone(timedelta(hours=1))).isoformat(),
        "duration_minutes": 30, "level": 0.5, "signal_name": "LOAD_DISPATCH",
        "signal_type": "setpoint", "market_context": "http://utility.example/programs/dispatch",
    })
    assert response.status_code == 201, response.get_json()
    created = response.get_json()
    assert created["ven_ids"] == [ven_id]
    assert created["start"] == start.isoformat()
    assert created["market_context"] == "http://utility.example/programs/dispatch"


@pytest.mark.parametrize(
    "body, field, message",
    [
        ({"duration_minutes": 60, "level": 1}, None, "exactly one of ven_id and group_id"),
        ({"group_id": "north", "start": "2030-12-01T17:00:00", "duration_minutes": 60,
          "level": 1}, "start", "no time zone"),
        ({"group_id": "north", "start": "tomorrow", "duration_minutes": 60, "level": 1},
         "start", "not an ISO 8601 date-time"),
        ({"group_id": "north", "duration_minutes": 0, "level": 1}, "duration_minutes",
         "duration_minutes must be a positive number"),
        ({"group_id": "north", "duration_minutes": 60, "level": 7}, "level", "rule 9"),
        ({"group_id": "west", "duration_minutes": 60, "level": 1}, "group_id",
         "no group is named 'west'"),
        ({"ven_id": "ven-7", "duration_minutes": 60, "level": 1}, "ven_id",
         "no VEN has venID 'ven-7'"),
        ({"group_id": "north", "start": "2026-01-01T17:00:00Z", "duration_minutes": 60,
          "level": 1}, "start", "is in the past"),
        ({"group_id": "north", "start": "9999-12-31T23:59:00Z", "duration_minutes": 60,
          "level": 1}, "start", "days ahead; check the year"),
        ({"group_id": "north", "start": "0001-01-01T00:00:00+14:00", "duration_minutes": 60,
          "level": 1}, "start", "is out of range"),
        ({"group_id": "north", "duration_minutes": 1e308, "level": 1}, "duration_minutes",
         "at most 10080 (a week)"),
        ({"group_id": "north", "duration_minutes": 60, "level": float("nan")}, "level",
         "level must be a number, not nan"),
        ({"group_id": ["north"], "duration_minutes": 60, "level": 1}, "group_id",
         "group_id must be a string"),
        ({"group_id": "north", "duration_minutes": 60, "level": 1, "signal_name": "BOGUS"},
         "signal_name", "signalName"),
    ],
)
def test_bad_event_requests_are_refused(portal, client, body, field, message):
    body = dict(body)
    if "start" not in body and field != "start":
        body["start"] = in_a_while().isoformat()
    response = client.post("/api/events", json=body)
    assert response.status_code == 400
    assert message in response.get_json()["error"]
    if field:
        assert message in response.get_json()["errors"][field]
    with portal.app_context():
        assert vtn.events() == []


def test_unknown_event_or_ven_is_404(client):
    assert client.get("/api/vens/nope").get_json()["error"].startswith("no VEN has venID 'nope'")
    assert client.get("/vens/nope").status_code == 404
    assert client.get("/events/nope/edit").status_code == 404
    assert client.post("/api/events/nope/cancel").status_code == 404
    assert client.post("/api/events/nope/modify", json={"level": 1}).status_code == 404
    assert client.get("/api/events/nope/responses").status_code == 404


def test_allowed_ven_registers_and_gets_its_group_events(portal, client):
    name, reply = register(client, "north-substation-ven")
    assert name == "oadrCreatedPartyRegistration"
    assert int(reply["response"]["response_code"]) == 200
    assert reply["vtn_id"] == "EXAMPLE-UTILITY-VTN"
    ven_id = reply["ven_id"]
    [listed] = client.get("/api/vens").get_json()["rows"]
    assert listed["registration"] == "registered" and listed["group_ids"] == ["north"]
    assert listed["liveness"] == "online" and listed["transport"] == "pull"

    for group in ("north", "south"):
        client.post("/api/events", json={"group_id": group, "duration_minutes": 60, "level": 1,
                                         "start": in_a_while().isoformat()})
    north = [e for e in client.get("/api/events").get_json() if e["group_ids"] == ["north"]]
    assert client.get("/api/vens").get_json()["rows"][0]["open_events"] == 1

    name, _ = post_openadr(client, "OadrPoll", "oadrPoll", ven_id=ven_id)
    assert name == "oadrRegisterReport"
    name, distribute = post_openadr(client, "OadrPoll", "oadrPoll", ven_id=ven_id)
    assert name == "oadrDistributeEvent"
    assert [e["event_descriptor"]["event_id"] for e in distribute["events"]] == [
        north[0]["event_id"]]


def test_a_ven_answer_is_logged_counted_and_listed(portal, client, caplog):
    ven_id = register(client, "water-plant-ven")[1]["ven_id"]
    event_id = client.post("/api/events", json={
        "group_id": "pumps", "start": in_a_while().isoformat(), "duration_minutes": 45,
        "level": 1,
    }).get_json()["event_id"]
    post_openadr(client, "OadrPoll", "oadrPoll", ven_id=ven_id)  # the register report
    name, distribute = post_openadr(client, "OadrPoll", "oadrPoll", ven_id=ven_id)
    assert name == "oadrDistributeEvent"
    with caplog.at_level("INFO", logger=portal.logger.name):
        post_openadr(
            client, "EiEvent", "oadrCreatedEvent", ven_id=ven_id,
            response={"response_code": 200, "response_description": "OK",
                      "request_id": distribute["request_id"]},
            event_responses=[{"response_code": 200, "response_description": "OK",
                              "request_id": distribute["request_id"], "event_id": event_id,
                              "modification_number": 0, "opt_type": "optOut"}])
    assert f"VEN {ven_id} answered event {event_id} (modification 0): optOut" in caplog.text
    [answer] = client.get(f"/api/events/{event_id}/responses").get_json()
    assert (answer["ven_id"], answer["opt_type"]) == (ven_id, "optOut")
    [row] = client.get("/api/events").get_json()
    assert row["responses"] == {"optIn": 0, "optOut": 1, "none": 0}
    detail = client.get(f"/api/vens/{ven_id}").get_json()
    assert detail["events"][0]["answers"][0]["opt_type"] == "optOut"


def test_unknown_ven_is_rejected(portal, anonymous):
    name, reply = register(anonymous, "stranger-ven")
    assert int(reply["response"]["response_code"]) == 463
    assert "allow-list" in reply["response"]["response_description"]
    with portal.app_context():
        assert vtn.vens() == []


def test_ven_actions_queue_the_messages(portal, client):
    ven = VENTestClient(client, ven_name="south-campus-ven")
    ven.register()
    ven.poll()  # the METADATA register-report
    reply = client.post(f"/api/vens/{ven.ven_id}/reregister")
    assert reply.status_code == 200, reply.get_json()
    assert ven.poll()[0] == "oadrRequestReregistration"
    reply = client.post(f"/api/vens/{ven.ven_id}/cancel-registration")
    assert reply.status_code == 200
    assert ven.poll()[0] == "oadrCancelPartyRegistration"
    assert client.get("/api/vens").get_json()["rows"][0]["registration"] == "cancel requested"
    missing = client.post(f"/api/vens/{ven.ven_id}/request-report")
    assert missing.status_code == 400
    assert "registered no TELEMETRY_USAGE report" in missing.get_json()["error"]


def test_report_values_are_kept_and_plotted(portal, client):
    ven = VENTestClient(client, ven_name="north-substation-ven")
    ven.register()
    ven.poll()
    power = data_point("rid-power", min_period=timedelta(seconds=10),
                       item_base={"kind": "powerReal", "item_description": "RealPower",
                                  "item_units": "W", "si_scale_code": "k",
                                  "power_attributes": {"hertz": 50.0, "voltage": 230.0,
                                                       "ac": True}})
    name, registered = ven.register_report([metadata_report("spec-usage", "TELEMETRY_USAGE",
                                                            [power])])
    # OPENADR_REPORT_POLICY "telemetry" in config.yaml asks for it at once.
    [request] = registered["report_requests"]
    report_request_id = request["report_request_id"]
    now = datetime.now(timezone.utc).replace(microsecond=0)
    values = [12.5, 14.0, 9.75]
    intervals = [{"dtstart": now - timedelta(minutes=10 * (3 - i)),
                  "duration": timedelta(seconds=10),
                  "report_payloads": [{"r_id": "rid-power", "value": value,
                                       "confidence": 100, "accuracy": 0.0}]}
                 for i, value in enumerate(values)]
    name, reply = ven.update_report([data_report(report_request_id, "spec-usage",
                                                 "TELEMETRY_USAGE", intervals)])
    assert name == "oadrUpdatedReport" and reply["response"]["response_code"] == 200
    detail = client.get(f"/api/vens/{ven.ven_id}").get_json()
    assert detail["latest_values"] == [{"r_id": "rid-power", "value": 9.75, "unit": "kW",
                                        "at": intervals[-1]["dtstart"].isoformat()}]
    html = client.get(f"/vens/{ven.ven_id}").get_data(as_text=True)
    assert 'data-r-id="rid-power" data-points="3"' in html
    assert ">kW</text>" in html and "time (UTC)" in html

    requested = client.post(f"/api/vens/{ven.ven_id}/request-report")
    assert requested.status_code == 200, requested.get_json()
    assert "reportRequestID" in requested.get_json()["message"]


def test_pages_render_and_refresh_in_json(portal, client):
    register(client, "south-campus-ven")
    event_id = client.post("/api/events", json={
        "group_id": "south", "start": in_a_while().isoformat(), "duration_minutes": 60,
        "level": 3,
    }).get_json()["event_id"]
    vens = client.get("/vens").get_data(as_text=True)
    assert "south-campus-ven" in vens and "EXAMPLE-UTILITY-VTN" in vens
    events = client.get("/events").get_data(as_text=True)
    assert event_id in events
    partial = client.get("/events?partial=1").get_json()
    assert event_id in partial["sections"]["events-live"]
    assert "<form" not in partial["sections"]["events-live"].split("<table")[0]


def test_the_vens_page_filters_sorts_and_pages_a_large_fleet(tmp_path):
    names = {f"ven-{n:04d}": ["north" if n % 2 else "south"] for n in range(120)}
    app = create_app({"TESTING": True, "ALLOWED_VENS": names, "PORTAL_PAGE_SIZE": 50,
                      "OPENADR_STORE_URI": "memory://"},
                     instance_path=str(tmp_path / "instance"))
    client = app.test_client()
    for name in names:
        VENTestClient(client, ven_name=name).register()
    token = client.get("/api/session").get_json()["csrf_token"]
    client.post("/api/login", json={"user": "operator", "password": "openadr-demo"},
                headers={"X-CSRFToken": token})
    first = client.get("/api/vens").get_json()
    assert (first["total"], first["pages"], len(first["rows"])) == (120, 3, 50)
    assert first["rows"][0]["ven_name"] == "ven-0000"
    last = client.get("/api/vens?page=3&sort=name&order=desc").get_json()
    assert [r["ven_name"] for r in last["rows"]][-1] == "ven-0000"
    assert len(last["rows"]) == 20
    north = client.get("/api/vens?q=north").get_json()
    assert north["total"] == 60
    assert client.get("/api/vens?state=offline").get_json()["total"] == 0
    page = client.get("/vens?page=2").get_data(as_text=True)
    assert "page 2 / 3" in page and 'rel="next"' in page


@pytest.mark.parametrize("backend", ["sqlite", "redis", "postgresql"])
def test_the_environment_points_the_example_at_each_shared_store(tmp_path, monkeypatch, backend):
    uri = URI_FACTORIES[backend](tmp_path)
    monkeypatch.setenv("OPENADR_STORE_URI", uri)
    app = create_app({"TESTING": True}, instance_path=str(tmp_path / "instance"))
    other = create_app({"TESTING": True}, instance_path=str(tmp_path / "other"))
    try:
        ven = VENTestClient(app.test_client(), ven_name="north-substation-ven")
        assert ven.register()[1]["response"]["response_code"] == 200
        # A second app on the same URI (another worker or host) sees the VEN: one shared store.
        with other.app_context():
            [listed] = vtn.vens()
        assert listed["ven_id"] == ven.ven_id and listed["group_ids"] == ["north"]
    finally:
        for each in (app, other):
            each.extensions["openadr"].context.store.close()


def test_the_ven_page_shows_opt_schedules(portal, client):
    ven = VENTestClient(client, ven_name="water-plant-ven")
    ven.register()
    start = in_a_while(120)
    name, reply = ven.create_opt("opt-maintenance", "optOut", opt_reason="outageRunStatus",
                                 windows=[(start, timedelta(hours=2))],
                                 market_context="http://utility.example/programs/peak-saver")
    assert reply["response"]["response_code"] == 200
    [opt] = client.get(f"/api/vens/{ven.ven_id}").get_json()["opts"]
    assert (opt["opt_id"], opt["opt_type"], opt["opt_reason"]) == ("opt-maintenance", "optOut",
                                                                    "outageRunStatus")
    assert opt["windows"] == [f"{start:%Y-%m-%d %H:%M:%S} for 2:00:00"]
    html = client.get(f"/vens/{ven.ven_id}").get_data(as_text=True)
    assert "opt-maintenance" in html and "outageRunStatus" in html


def test_a_silent_ven_shows_offline_before_and_after_the_sweep(tmp_path):
    # A deadline of 1 s (one missed poll of 1 s, no grace) so that the test can wait for it.
    app = create_app({"TESTING": True, "OPENADR_STORE_URI": "memory://",
                      "OPENADR_POLL_FREQUENCY": 1, "OPENADR_OFFLINE_AFTER_MISSED_POLLS": 1,
                      "OPENADR_OFFLINE_GRACE": 0},
                     instance_path=str(tmp_path / "instance"))
    client = app.test_client()
    ven = VENTestClient(client, ven_name="south-campus-ven")
    ven.register()
    token = client.get("/api/session").get_json()["csrf_token"]
    client.post("/api/login", json={"user": "operator", "password": "openadr-demo"},
                headers={"X-CSRFToken": token})
    [row] = client.get("/api/vens").get_json()["rows"]
    assert row["liveness"] == "online"
    time.sleep(1.1)
    # No sweeper has run: the page reads the deadline, not the stored state alone.
    [row] = client.get("/api/vens").get_json()["rows"]
    assert row["liveness"] == "stale"
    assert "deadline passed, not yet swept" in client.get("/vens").get_data(as_text=True)
    assert client.get("/api/vens?state=stale").get_json()["total"] == 1
    with app.app_context():
        assert vtn.sweep() == 1
    [row] = client.get("/api/vens").get_json()["rows"]
    assert row["liveness"] == "offline"
    history = client.get(f"/api/vens/{ven.ven_id}").get_json()["history"]
    assert [(t["epoch"], t["kind"]) for t in history] == [(2, "offline"), (1, "online")]


def test_the_portal_requires_client_certificates_by_default(portal):
    response = portal.test_client().post(
        f"{PREFIX}/EiRegisterParty", content_type="application/xml",
        data=create_message("oadrQueryRegistration", request_id="q"))
    assert response.status_code == 403


def test_the_development_run_without_tls_turns_certificates_off(tmp_path, monkeypatch, caplog):
    # `python -m example_app` passes this setting; `flask run` users set it in the environment.
    monkeypatch.setenv("OPENADR_REQUIRE_CLIENT_CERT", "false")
    with caplog.at_level("WARNING", logger="flask_openadr"):
        app = create_app({"TESTING": True}, instance_path=str(tmp_path / "instance"))
    assert app.config["OPENADR_REQUIRE_CLIENT_CERT"] is False
    assert any("OPENADR_REQUIRE_CLIENT_CERT is off" in r.getMessage() for r in caplog.records)
    name, reply = register(app.test_client(), "north-substation-ven")
    assert int(reply["response"]["response_code"]) == 200
