"""End to end: the real openleadr VEN client against our VTN served by gunicorn (2 workers).

Events are added through a third process's VTN on the same SQLite file, so this also shows
that several processes sharing one store behave as one VTN.
"""
from __future__ import annotations

import asyncio
import json
import urllib.request
from datetime import datetime, timedelta, timezone

import pytest

from flask_openadr import codec
from tests.support.e2e import E2EGunicorn, operator_app, read_log, serving, stop_client, wait_for

openleadr = pytest.importorskip("openleadr")


@pytest.fixture
def served(tmp_path):
    """gunicorn (two workers) serving tests/support/e2e_app.py; yields (base URL, store URI,
    handler log)."""
    with serving(tmp_path) as served:
        yield served


def test_openleadr_client_registers_receives_events_and_opts_in(served, tmp_path):
    base, store_uri, log_path = served
    app, vtn = operator_app(tmp_path, store_uri)
    received: list[dict] = []
    updated: list[dict] = []

    async def scenario():
        client = openleadr.OpenADRClient(ven_name="ven-e2e",
                                         vtn_url=base + "/OpenADR2/Simple/2.0b",
                                         allow_jitter=False)

        async def on_event(event):
            received.append(event)
            return "optIn"

        async def on_update_event(event):
            updated.append(event)
            return "optIn"

        client.add_handler("on_event", on_event)
        client.add_handler("on_update_event", on_update_event)
        await client.run()
        try:
            assert client.registration_id and client.ven_id
            start = datetime.now(timezone.utc) + timedelta(hours=1)
            with app.app_context():
                event_id = vtn.add_event(
                    ven_id=client.ven_id, signal_name="SIMPLE", signal_type="level",
                    intervals=[{"dtstart": start, "duration": timedelta(minutes=30),
                                "signal_payload": 2.0}],
                    market_context="http://utility.example/peak",
                )
            await wait_for(lambda: received)
            event = received[0]
            assert event["event_descriptor"]["event_id"] == event_id
            assert event["event_descriptor"]["event_status"] == "far"
            assert event["event_signals"][0]["intervals"][0]["signal_payload"] == 2.0
            await wait_for(lambda: any(e["kind"] == "created_event" for e in read_log(log_path)))

            with app.app_context():
                vtn.modify_event(event_id, intervals=[
                    {"dtstart": start, "duration": timedelta(minutes=30), "signal_payload": 3.0}])
            await wait_for(lambda: updated)
            assert updated[0]["event_descriptor"]["modification_number"] == 1
            assert updated[0]["event_signals"][0]["intervals"][0]["signal_payload"] == 3.0

            with app.app_context():
                vtn.cancel_event(event_id)
            await wait_for(lambda: len(updated) >= 2)
            assert updated[1]["event_descriptor"]["event_status"] == "cancelled"
            assert updated[1]["event_descriptor"]["modification_number"] == 2
            return client.ven_id, event_id
        finally:
            await stop_client(client)

    ven_id, event_id = asyncio.run(scenario())
    log = read_log(log_path)
    assert [e["ven_name"] for e in log if e["kind"] == "registration"] == ["ven-e2e"]
    created = [e for e in log if e["kind"] == "created_event"]
    assert created[0] == {**created[0], "ven_id": ven_id, "event_id": event_id,
                          "opt_type": "optIn", "modification_number": 0}
    with app.app_context():
        responses = vtn.event_responses(event_id)
    assert {r["modification_number"] for r in responses} >= {0, 1}
    assert all(r["ven_id"] == ven_id and r["opt_type"] == "optIn" for r in responses)


def post_xml(url, body: bytes):
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/xml"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.headers["X-Worker-Pid"], codec.decode(response.read())


def test_two_gunicorn_servers_on_one_sqlite_file_act_as_one_vtn(tmp_path):
    store_uri = "sqlite:///" + str(tmp_path / "shared.sqlite3")
    first = E2EGunicorn(tmp_path, store_uri, tmp_path / "a.jsonl", workers=1)
    second = E2EGunicorn(tmp_path, store_uri, tmp_path / "b.jsonl", workers=1)
    prefix = "/OpenADR2/Simple/2.0b"
    try:
        # Register through the first server.
        _, (name, reply) = post_xml(first.base + prefix + "/EiRegisterParty", codec.encode(
            "oadrCreatePartyRegistration", {
                "request_id": "r1", "profile_name": "2.0b", "transport_name": "simpleHttp",
                "report_only": False, "xml_signature": False, "ven_name": "shared",
                "http_pull_model": True}))
        ven_id = reply["ven_id"]
        # Put the VEN in a group, then add an event for the group through the first server.
        app, vtn = operator_app(tmp_path, store_uri)
        with app.app_context():
            vtn.update_ven(ven_id, group_ids=["north"])
        request = urllib.request.Request(
            first.base + "/operator/events", data=json.dumps({"group_id": "north",
                                                              "level": 2}).encode(),
            headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            added = json.loads(response.read())
        # Poll through the second server: the METADATA report, then the event.
        poll = codec.encode("oadrPoll", {"ven_id": ven_id})
        pid1, (name1, _) = post_xml(second.base + prefix + "/OadrPoll", poll)
        pid2, (name2, dist) = post_xml(second.base + prefix + "/OadrPoll", poll)
        assert pid1 == pid2 != str(added["pid"])
        assert (name1, name2) == ("oadrRegisterReport", "oadrDistributeEvent")
        assert dist["events"][0]["event_descriptor"]["event_id"] == added["event_id"]
        assert dist["events"][0]["event_signals"][0]["intervals"][0]["signal_payload"] == 2.0
        # Delivered once, for the whole VTN: the first server has nothing more for the VEN.
        _, (name3, reply3) = post_xml(first.base + prefix + "/OadrPoll", poll)
        assert name3 == "oadrResponse" and reply3["response"]["response_code"] == 200
    finally:
        first.stop()
        second.stop()


def test_openleadr_client_hears_of_every_change_that_affects_it(served, tmp_path):
    """Modified into the past, left the group, retargeted away: the real VEN is told each time
    (it ignores a cancellation whose modificationNumber it already holds)."""
    base, store_uri, log_path = served
    app, vtn = operator_app(tmp_path, store_uri)
    received: dict[str, list[dict]] = {}

    def record(event):
        descriptor = event["event_descriptor"]
        received.setdefault(descriptor["event_id"], []).append(
            {"status": descriptor["event_status"], "number": descriptor["modification_number"]})
        return "optIn"

    def versions(event_id):
        return received.get(event_id, [])

    async def scenario():
        client = openleadr.OpenADRClient(ven_name="ven-changes",
                                         vtn_url=base + "/OpenADR2/Simple/2.0b",
                                         allow_jitter=False)

        async def on_event(event):
            return record(event)

        async def on_update_event(event):
            return record(event)

        client.add_handler("on_event", on_event)
        client.add_handler("on_update_event", on_update_event)
        await client.run()
        try:
            ven_id = client.ven_id
            start = datetime.now(timezone.utc) + timedelta(hours=1)
            one = [{"dtstart": start, "duration": timedelta(minutes=30), "signal_payload": 1.0}]
            # One program each: events of one VEN and program must not overlap.
            with app.app_context():
                vtn.update_ven(ven_id, group_ids=["north"])
                past = vtn.add_event(ven_id=ven_id, signal_name="SIMPLE", signal_type="level",
                                     intervals=one, market_context="http://utility.example/a")
                grouped = vtn.add_event(targets={"group_ids": ["north"]}, signal_name="SIMPLE",
                                        signal_type="level", intervals=one,
                                        market_context="http://utility.example/b")
                moved = vtn.add_event(ven_id=ven_id, signal_name="SIMPLE", signal_type="level",
                                      intervals=one, market_context="http://utility.example/c")
            await wait_for(lambda: all(versions(e) for e in (past, grouped, moved)))

            over = datetime.now(timezone.utc) - timedelta(hours=2)
            with app.app_context():
                vtn.modify_event(past, intervals=[{"dtstart": over,
                                                   "duration": timedelta(minutes=30),
                                                   "signal_payload": 1.0}])
                vtn.update_ven(ven_id, group_ids=[])
                vtn.modify_event(moved, ven_id="some-other-ven")
            await wait_for(lambda: len(versions(past)) >= 2 and len(versions(grouped)) >= 2
                           and len(versions(moved)) >= 2)

            def answered_withdrawal():
                with app.app_context():
                    return any(r["ven_id"] == ven_id and r["modification_number"] == 1
                               for r in vtn.event_responses(grouped))

            # The VEN answers the withdrawal (at the number it was sent) after its handler ran.
            await wait_for(answered_withdrawal)
            return ven_id, past, grouped, moved
        finally:
            await stop_client(client)

    ven_id, past, grouped, moved = asyncio.run(scenario())
    assert received[past][:2] == [{"status": "far", "number": 0},
                                  {"status": "completed", "number": 1}]
    # The group event did not change: the VEN that left is sent a number it has not seen.
    assert received[grouped][:2] == [{"status": "far", "number": 0},
                                     {"status": "cancelled", "number": 1}]
    assert received[moved][:2] == [{"status": "far", "number": 0},
                                   {"status": "cancelled", "number": 1}]
    with app.app_context():
        assert vtn.get_event(grouped)["event_descriptor"]["modification_number"] == 0
        # The VEN answered the withdrawal at the number it was sent; the VTN took it.
        answers = {(r["modification_number"], r["opt_type"])
                   for r in vtn.event_responses(grouped) if r["ven_id"] == ven_id}
    assert (1, "optIn") in answers
