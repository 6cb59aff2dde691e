"""A gunicorn worker killed with SIGKILL in the middle of a request loses nothing (issue 10).

gunicorn (one worker, restarted by its master after each kill) serves tests/support/faults_app.py on
SQLite and PostgreSQL. The test app stops a request at a named point when the test asks (a flag
file); the test then SIGKILLs the worker while it is inside the request, waits for the new
worker and checks the store: nothing half-written (an event and its delivery state appear
together or not at all, an answer is recorded or not), nothing lost (a delivery that was in
flight is sent again on a later poll once OPENADR_REDELIVERY_AFTER, 1 s here, has passed; a
message whose reply never came is accepted when the VEN sends it again), and each liveness
decision made once (one online callback for the VEN, however many of its requests died).
"""
from __future__ import annotations

import json
import os
import signal
import threading
import time
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone

import pytest

from flask_openadr.store import open_store
from flask_openadr.testing import VENTestClient, data_point, data_report, metadata_report
from tests.support.backends import URI_FACTORIES
from tests.support.servers import Gunicorn, wait_until_serving

REDELIVERY_AFTER = 1.0  # seconds (OPENADR_REDELIVERY_AFTER in tests/support/faults_app.py)


class HttpResponse:
    def __init__(self, status: int, body: bytes):
        self.status_code = status
        self._body = body

    def get_data(self, as_text=False):
        return self._body.decode("utf-8", "replace") if as_text else self._body


class HttpClient:
    """What VENTestClient needs of a Flask test client, over real HTTP to ``base``."""

    def __init__(self, base: str):
        self.base = base

    def post(self, path, data, content_type, environ_base=None):
        request = urllib.request.Request(self.base + path, data=data,
                                         headers={"Content-Type": content_type})
        try:
            with urllib.request.urlopen(request, timeout=20) as response:
                return HttpResponse(response.status, response.read())
        except urllib.error.HTTPError as exc:
            return HttpResponse(exc.code, exc.read())


class Faults:
    """The server, its flag directory and a store handle of the test's own."""

    def __init__(self, tmp_path, store_uri):
        self.dir = tmp_path / "ft"
        self.dir.mkdir()
        self.server = Gunicorn("tests.support.faults_app:create_app()", tmp_path,
                               args=["--graceful-timeout", "5", "--timeout", "120"],
                               env={"FT_DIR": str(self.dir), "FT_STORE_URI": store_uri})
        self.store = open_store(store_uri)

    def close(self):
        self.server.stop()
        self.store.close()

    def killed_at(self, point: str, request) -> Exception | None:
        """Run ``request()`` in a thread until the worker pauses at ``point``, SIGKILL the
        worker, wait for its replacement; return what ``request()`` raised (it must fail)."""
        flag = self.dir / point
        flag.write_text("")
        outcome: dict[str, object] = {}

        def run():
            try:
                outcome["result"] = request()
            except Exception as exc:  # the connection dies with the worker
                outcome["error"] = exc

        thread = threading.Thread(target=run)
        thread.start()
        paused = self.dir / (point + ".paused")
        deadline = time.monotonic() + 20
        while not paused.exists():
            assert time.monotonic() < deadline, f"no worker paused at {point}"
            assert thread.is_alive(), f"the request finished without pausing at {point}: " \
                                      f"{outcome}"
            time.sleep(0.02)
        pid = int(paused.read_text())
        assert pid != self.server.master_pid
        flag.unlink()
        paused.unlink()
        os.kill(pid, signal.SIGKILL)
        thread.join(timeout=20)
        assert not thread.is_alive()
        assert "result" not in outcome, f"the killed request got a reply: {outcome}"
        wait_until_serving(self.server.base, self.server.proc, "gunicorn after the kill")
        return outcome.get("error")

    def log(self, kind: str) -> list[dict]:
        path = self.dir / "log.jsonl"
        if not path.exists():
            return []
        return [entry for entry in map(json.loads, path.read_text().splitlines())
                if entry["kind"] == kind]

    def add_event(self, ven_id: str, event_id: str) -> str:
        request = urllib.request.Request(
            f"{self.server.base}/add_event?ven_id={ven_id}&event_id={event_id}", data=b"",
            method="POST")
        with urllib.request.urlopen(request, timeout=20) as response:
            return response.read().decode()


@pytest.fixture(params=["sqlite", "postgresql"])
def faults(request, tmp_path):
    harness = Faults(tmp_path, URI_FACTORIES[request.param](tmp_path))
    yield harness
    harness.close()


def code(reply) -> int:
    return reply[1]["response"]["response_code"]


def poll_until_quiet(ven: VENTestClient) -> list[str]:
    """Poll, acknowledging what needs it, until the VTN has nothing to send; the names seen."""
    seen = []
    for _ in range(10):
        name, payload = ven.poll()
        seen.append(name)
        if name == "oadrResponse":
            return seen
        if name == "oadrRegisterReport":
            ven.registered_report(payload)
    raise AssertionError(f"the VTN kept sending: {seen}")


def delivered(store, ven_id: str, event_id: str) -> dict | None:
    return (store.get_delivered(ven_id).get("events") or {}).get(event_id)


def test_a_worker_killed_mid_request_loses_nothing_and_leaves_nothing_half_written(faults):
    store = faults.store
    ven = VENTestClient(HttpClient(faults.server.base), certificate=None, ven_name="faulty")
    assert code(ven.register()) == 200
    ven_id = ven.ven_id

    # A poll killed before it did anything: the next poll is answered as if it never was.
    faults.killed_at("poll", ven.poll)
    assert poll_until_quiet(ven)[-1] == "oadrResponse"

    # An operator's add_event killed between its writes and their commit: no event, no
    # delivery state naming it; the same eventID can be added again and reaches the VEN.
    faults.killed_at("add_event", lambda: faults.add_event(ven_id, "ev-1"))
    assert store.get_event("ev-1") is None
    assert delivered(store, ven_id, "ev-1") is None
    assert ven.poll()[0] == "oadrResponse"
    assert faults.add_event(ven_id, "ev-1") == "ev-1"

    # The oadrDistributeEvent in flight (recorded as sent, the reply not yet out) when the
    # worker dies: sent again on a poll once the redelivery time has passed.
    faults.killed_at("sent-oadrDistributeEvent", ven.poll)
    assert delivered(store, ven_id, "ev-1") is not None
    assert not delivered(store, ven_id, "ev-1").get("acknowledged")
    time.sleep(REDELIVERY_AFTER + 0.2)
    name, distribute = ven.poll()
    assert name == "oadrDistributeEvent"
    assert [e["event_descriptor"]["event_id"] for e in distribute["events"]] == ["ev-1"]

    # The answer killed before it was written: nothing recorded, the event still redelivered.
    faults.killed_at("created_event", lambda: ven.created_event(distribute, "optOut"))
    assert store.list_event_responses("ev-1") == []
    assert not delivered(store, ven_id, "ev-1").get("acknowledged")
    time.sleep(REDELIVERY_AFTER + 0.2)
    name, distribute = ven.poll()
    assert name == "oadrDistributeEvent"
    # The answer killed after its commit, before the reply: recorded once; the VEN, which got
    # no reply, sends it again and it is still recorded once.
    faults.killed_at("sent-oadrResponse", lambda: ven.created_event(distribute, "optOut"))
    assert [r["opt_type"] for r in store.list_event_responses("ev-1")] == ["optOut"]
    assert code(ven.created_event(distribute, "optOut")) == 200
    assert [(r["ven_id"], r["opt_type"]) for r in store.list_event_responses("ev-1")] == [
        (ven_id, "optOut")]
    assert delivered(store, ven_id, "ev-1").get("acknowledged")
    time.sleep(REDELIVERY_AFTER + 0.2)
    assert ven.poll()[0] == "oadrResponse"  # answered: not sent again

    # Report data killed before it was handled: not taken; sent again, it is taken once.
    name, registered = ven.register_report([metadata_report("spec-1", "TELEMETRY_USAGE",
                                                            [data_point("rid-1")])])
    assert code((name, registered)) == 200
    report_request = registered["report_requests"][0]["report_request_id"]
    assert code(ven.created_report("", [report_request])) == 200
    report = data_report(report_request, "spec-1", "TELEMETRY_USAGE",
                         [{"duration": timedelta(minutes=1),
                           "report_payloads": [{"r_id": "rid-1", "value": 1.0}]}],
                         dtstart=datetime.now(timezone.utc) - timedelta(minutes=1))
    faults.killed_at("update_report", lambda: ven.update_report([report]))
    assert faults.log("report") == []
    assert code(ven.update_report([report])) == 200
    assert len(faults.log("report")) == 1

    # Six requests of the VEN died; it went online once, and never offline.
    assert [(e["ven_id"], e["epoch"]) for e in faults.log("online")] == [(ven_id, 1)]
    assert faults.log("offline") == []
    assert store.get_liveness(ven_id)["epoch"] == 1
