"""The certification harness's sequences, replayed as it runs them: raw OpenADR messages over
HTTP to the VTN served by gunicorn (two workers, one SQLite file), the operator's actions done
through the public API of another process on the same store.

Each test is named after what the harness checks, so that a regression names the case
certification would fail. The harness's minutes are seconds here: the served app runs the
certification profile (docs/conformance.rst) scaled down, with redelivery after 1 s, a refresh
after 2 s and a sweeper pass every 0.2 s.
"""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from flask import Flask

from flask_openadr import VTN, EventError, codec
from tests.support.e2e import stop_client
from tests.support.servers import Gunicorn

PREFIX = "/OpenADR2/Simple/2.0b"
PROFILE = {"OPENADR_POLL_FREQUENCY": 1, "OPENADR_REDELIVERY_AFTER": 1,
           "OPENADR_EVENT_REFRESH": 2, "OPENADR_SWEEP_INTERVAL": 0.2}

# One pytest-xdist worker runs this whole module (setup.cfg: --dist loadgroup), so that its
# module-scoped gunicorn server start once, not once per worker.
pytestmark = pytest.mark.xdist_group("certification-harness")


@pytest.fixture(scope="module")
def vtn_server(tmp_path_factory):
    """gunicorn serving tests/support/e2e_app.py with the scaled-down profile; yields (base URL, an
    operator's VTN on the same store, its app)."""
    tmp_path = tmp_path_factory.mktemp("harness")
    store_uri = "sqlite:///" + str(tmp_path / "vtn.sqlite3")
    server = Gunicorn("tests.support.e2e_app:create_app()", tmp_path, workers=2, env={
        "E2E_STORE_URI": store_uri, "E2E_LOG": str(tmp_path / "handlers.jsonl"),
        "E2E_INSTANCE": str(tmp_path / "instance"), "E2E_CONFIG": json.dumps(PROFILE)})
    try:
        app = Flask("operator", instance_path=str(tmp_path / "operator"))
        app.config.update(OPENADR_STORE_URI=store_uri, OPENADR_VTN_ID="E2E-VTN",
                          OPENADR_BACKGROUND="off", **PROFILE)
        yield server.base, VTN(app), app
    finally:
        server.stop()


class HarnessVEN:
    """The harness's side: raw messages, the venID it was given, nothing remembered else."""

    def __init__(self, base: str):
        self.base = base
        self.ven_id: str | None = None
        self.registration_id: str | None = None

    def post(self, service: str, payload_name: str, payload: dict):
        """(HTTP status, decoded reply or the text of a non-200 answer)."""
        request = urllib.request.Request(
            f"{self.base}{PREFIX}/{service}", data=codec.encode(payload_name, payload),
            headers={"Content-Type": "application/xml"})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, codec.decode(response.read())
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode("utf-8", "replace")

    def send(self, service: str, payload_name: str, payload: dict):
        status, reply = self.post(service, payload_name, payload)
        assert status == 200, reply
        return reply

    def register(self):
        name, reply = self.send("EiRegisterParty", "oadrCreatePartyRegistration", {
            "request_id": uuid.uuid4().hex, "profile_name": "2.0b",
            "transport_name": "simpleHttp", "report_only": False, "xml_signature": False,
            "ven_name": "harness-" + uuid.uuid4().hex[:8], "http_pull_model": True})
        assert reply["response"]["response_code"] == 200
        self.ven_id, self.registration_id = reply["ven_id"], reply["registration_id"]
        # The VTN's METADATA comes first; acknowledge it.
        name, metadata = self.poll()
        assert name == "oadrRegisterReport"
        self.ack_metadata(metadata)
        return self

    def ack_metadata(self, metadata):
        self.send("EiReport", "oadrRegisteredReport", {
            "response": ok(metadata["request_id"]), "report_requests": [],
            "ven_id": self.ven_id})

    def poll(self):
        return self.send("OadrPoll", "oadrPoll", {"ven_id": self.ven_id})

    def poll_until(self, payload_name: str, timeout: float = 10):
        deadline = time.monotonic() + timeout
        while True:
            name, reply = self.poll()
            if name == payload_name:
                return reply
            assert time.monotonic() < deadline, f"no {payload_name} within {timeout} s"
            time.sleep(0.1)

    def request_event(self, **extra):
        return self.send("EiEvent", "oadrRequestEvent",
                         {"request_id": uuid.uuid4().hex, "ven_id": self.ven_id, **extra})

    def created_event(self, dist, opt_type="optIn"):
        return self.send("EiEvent", "oadrCreatedEvent", {
            "response": ok(""), "ven_id": self.ven_id, "event_responses": [
                {"response_code": 200, "response_description": "OK",
                 "request_id": dist["request_id"], "opt_type": opt_type,
                 "qualified_event_id": {
                     "event_id": e["event_descriptor"]["event_id"],
                     "modification_number": e["event_descriptor"]["modification_number"]}}
                for e in dist["events"]]})


def ok(request_id: str) -> dict:
    return {"response_code": 200, "response_description": "OK", "request_id": request_id}


def code(reply) -> int:
    return reply["response"]["response_code"]


def add_event(operator, ven_id, start=None, duration=timedelta(minutes=30), **extra):
    vtn, app = operator
    start = start or datetime.now(timezone.utc) + timedelta(hours=1)
    with app.app_context():
        return vtn.add_event(ven_id=ven_id, signal_name="SIMPLE", signal_type="level",
                             intervals=[{"dtstart": start, "duration": duration,
                                         "signal_payload": 1.0}], **extra)


@pytest.fixture
def harness(vtn_server):
    return HarnessVEN(vtn_server[0])


@pytest.fixture
def operator(vtn_server):
    return vtn_server[1], vtn_server[2]


def test_unregistered_oadr_poll_with_empty_ven_id_gets_no_openadr_payload(harness):
    status, text = harness.post("OadrPoll", "oadrPoll", {"ven_id": ""})
    assert status == 403
    assert "oadr" not in text and "register" in text


def test_registered_ven_sending_a_wrong_case_ven_id_gets_452(harness):
    harness.register()
    wrong = harness.ven_id.swapcase() if harness.ven_id.swapcase() != harness.ven_id \
        else harness.ven_id + "X"
    name, reply = harness.send("OadrPoll", "oadrPoll", {"ven_id": wrong})
    assert (name, code(reply)) == ("oadrResponse", 452)


def test_oadr_response_to_canceled_party_registration_after_vtn_cancel_has_no_ven_id(
        harness, operator):
    harness.register()
    vtn, app = operator
    with app.app_context():
        vtn.cancel_registration(harness.ven_id)
    cancel = harness.poll_until("oadrCancelPartyRegistration")
    name, reply = harness.send("EiRegisterParty", "oadrCanceledPartyRegistration", {
        "response": ok(cancel["request_id"]), "registration_id": harness.registration_id,
        "ven_id": harness.ven_id})
    assert (name, code(reply)) == ("oadrResponse", 200)
    assert "ven_id" not in reply


def test_event_level_opt_in_beats_a_later_created_event_opt_out(harness, operator):
    harness.register()
    event_id = add_event(operator, harness.ven_id)
    dist = harness.poll_until("oadrDistributeEvent")
    name, opted = harness.send("EiOpt", "oadrCreateOpt", {
        "opt_id": "harness-opt", "opt_type": "optIn", "opt_reason": "participating",
        "ven_id": harness.ven_id, "created_date_time": datetime.now(timezone.utc),
        "request_id": uuid.uuid4().hex, "target": {},
        "qualified_event_id": {"event_id": event_id, "modification_number": 0}})
    assert (name, code(opted)) == ("oadrCreatedOpt", 200)
    name, reply = harness.created_event(dist, opt_type="optOut")
    assert (name, code(reply)) == ("oadrResponse", 200)
    vtn, app = operator
    with app.app_context():
        (answer,) = vtn.event_responses(event_id)
    assert (answer["opt_type"], answer["opt_id"]) == ("optIn", "harness-opt")


def test_request_event_with_reply_limit_zero_returns_no_events(harness, operator):
    harness.register()
    now = datetime.now(timezone.utc)
    for hours in (1, 2, 3):
        add_event(operator, harness.ven_id, start=now + timedelta(hours=hours))
    name, dist = harness.request_event(reply_limit=0)
    assert (name, code(dist), dist["events"]) == ("oadrDistributeEvent", 200, [])


def test_operator_cannot_add_an_event_overlapping_another_for_the_same_ven(harness, operator):
    harness.register()
    first = add_event(operator, harness.ven_id)
    with pytest.raises(EventError, match=first):
        add_event(operator, harness.ven_id,
                  start=datetime.now(timezone.utc) + timedelta(hours=1, minutes=10))


def test_cancel_and_response_required_never_in_one_modification(harness, operator):
    harness.register()
    event_id = add_event(operator, harness.ven_id)
    harness.created_event(harness.poll_until("oadrDistributeEvent"))
    vtn, app = operator
    with app.app_context():
        vtn.cancel_event(event_id, response_required="never")
    (event,) = harness.poll_until("oadrDistributeEvent")["events"]
    assert (event["event_descriptor"]["modification_number"],
            event["event_descriptor"]["event_status"],
            event["response_required"]) == (1, "cancelled", "never")


def test_cancelled_event_is_resent_until_the_ven_acknowledges_it(harness, operator):
    harness.register()
    event_id = add_event(operator, harness.ven_id)
    harness.created_event(harness.poll_until("oadrDistributeEvent"))
    vtn, app = operator
    with app.app_context():
        vtn.cancel_event(event_id)
    for _ in range(3):  # withheld acknowledgement: sent again after each redelivery period
        (event,) = harness.poll_until("oadrDistributeEvent", timeout=3)["events"]
        assert event["event_descriptor"]["event_status"] == "cancelled"
    harness.created_event({"request_id": "", "events": [event]})
    time.sleep(1.5)
    assert harness.poll()[0] == "oadrResponse"


def test_request_event_lists_a_just_completed_event_as_completed(harness, operator):
    harness.register()
    start = datetime.now(timezone.utc) + timedelta(seconds=2)
    event_id = add_event(operator, harness.ven_id, start=start,
                         duration=timedelta(seconds=1))
    harness.created_event(harness.poll_until("oadrDistributeEvent"))
    time.sleep(max(0.0, (start - datetime.now(timezone.utc)).total_seconds()) + 2)
    _, dist = harness.request_event()
    assert [(e["event_descriptor"]["event_id"], e["event_descriptor"]["event_status"])
            for e in dist["events"]] == [(event_id, "completed")]


def test_acknowledged_events_are_distributed_again_unchanged(harness, operator):
    harness.register()
    now = datetime.now(timezone.utc)
    first = add_event(operator, harness.ven_id, start=now + timedelta(hours=1))
    second = add_event(operator, harness.ven_id, start=now + timedelta(hours=2))
    harness.created_event(harness.poll_until("oadrDistributeEvent"))
    assert harness.poll()[0] == "oadrResponse"
    again = harness.poll_until("oadrDistributeEvent", timeout=5)
    assert [e["event_descriptor"]["event_id"] for e in again["events"]] == [first, second]


def test_periodic_metadata_request_is_listed_sent_on_schedule_and_cancellable(harness):
    harness.register()
    name, created = harness.send("EiReport", "oadrCreateReport", {
        "request_id": uuid.uuid4().hex, "ven_id": harness.ven_id, "report_requests": [{
            "report_request_id": "harness-meta", "report_specifier": {
                "report_specifier_id": "METADATA", "granularity": timedelta(seconds=1),
                "report_back_duration": timedelta(seconds=1),
                "specifier_payloads": [{"r_id": "0", "reading_type": "x-notApplicable"}]}}]})
    assert (name, code(created), created["pending_reports"]) == ("oadrCreatedReport", 200,
                                                                 ["harness-meta"])
    for _ in range(3):  # the answer, then one a second from the sweeper
        metadata = harness.poll_until("oadrRegisterReport", timeout=5)
        assert metadata["report_request_id"] == "harness-meta"
        harness.ack_metadata(metadata)
    name, cancelled = harness.send("EiReport", "oadrCancelReport", {
        "request_id": uuid.uuid4().hex, "report_request_ids": ["harness-meta"],
        "report_to_follow": False, "ven_id": harness.ven_id})
    assert (name, code(cancelled), cancelled["pending_reports"]) == ("oadrCanceledReport",
                                                                     200, [])
    time.sleep(1.5)
    assert all(harness.poll()[0] == "oadrResponse" for _ in range(3))


# -- The same behaviour as the real openleadr VEN sees it --------------------------------------


async def eventually(predicate, timeout=15.0):
    import asyncio

    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.1)


def with_openleadr_ven(base, scenario, answer="optIn"):
    """Run ``scenario(client, received)`` with a running openleadr VEN whose event handlers
    record what they get and answer ``answer``."""
    import asyncio

    openleadr = pytest.importorskip("openleadr")

    async def main():
        client = openleadr.OpenADRClient(ven_name="openleadr-" + uuid.uuid4().hex[:8],
                                         vtn_url=base + PREFIX, allow_jitter=False)
        received: list[dict] = []

        async def on_event(event):
            received.append(event)
            return answer

        client.add_handler("on_event", on_event)
        client.add_handler("on_update_event", on_event)
        await client.run()
        try:
            return await scenario(client, received)
        finally:
            await stop_client(client)

    return asyncio.run(main())


def test_openleadr_ven_opted_in_by_create_opt_stays_in_after_its_created_event_opt_out(
        vtn_server, operator):
    vtn, app = operator

    def responses(event_id):
        with app.app_context():
            return vtn.event_responses(event_id)

    async def scenario(client, received):
        event_id = add_event(operator, client.ven_id)
        await eventually(lambda: [r["opt_type"] for r in responses(event_id)] == ["optOut"])
        opt_id = await client.create_opt("optIn", "participating",
                                         targets=[{"ven_id": client.ven_id}],
                                         event_id=event_id, modification_number=0,
                                         opt_id="openleadr-opt")
        assert opt_id == "openleadr-opt"
        await client.created_event(request_id="again", event_id=event_id, opt_type="optOut")
        return event_id

    event_id = with_openleadr_ven(vtn_server[0], scenario, answer="optOut")
    (answer,) = responses(event_id)
    assert (answer["opt_type"], answer["opt_id"]) == ("optIn", "openleadr-opt")


def test_openleadr_ven_accepts_the_reply_without_ven_id_after_a_vtn_cancel(vtn_server,
                                                                           operator):
    vtn, app = operator

    def registration_of(ven_id):
        with app.app_context():
            return next(v for v in vtn.vens() if v["ven_id"] == ven_id)["registration_id"]

    async def scenario(client, received):
        with app.app_context():
            vtn.cancel_registration(client.ven_id)
        await eventually(lambda: registration_of(client.ven_id) is None)
        return client.ven_id

    ven_id = with_openleadr_ven(vtn_server[0], scenario)
    assert registration_of(ven_id) is None


def test_openleadr_ven_gets_only_the_signals_aimed_at_it(vtn_server, operator):
    vtn, app = operator

    async def scenario(client, received):
        start = datetime.now(timezone.utc) + timedelta(hours=1)
        with app.app_context():
            vtn.add_event(event={
                "event_descriptor": {},
                "active_period": {"dtstart": start, "duration": timedelta(hours=1)},
                "event_signals": [
                    {"intervals": [{"duration": timedelta(hours=1), "signal_payload": level}],
                     "signal_name": "SIMPLE", "signal_type": "level", "signal_id": signal_id,
                     "target": {"ven_ids": [ven_id]}}
                    for signal_id, ven_id, level in (("theirs", "another-ven", 3.0),
                                                     ("mine", client.ven_id, 1.0))],
                "target": {"ven_ids": [client.ven_id, "another-ven"]}})
        await eventually(lambda: received)
        return received[0]

    event = with_openleadr_ven(vtn_server[0], scenario)
    assert [s["signal_id"] for s in event["event_signals"]] == ["mine"]
