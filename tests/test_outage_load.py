"""Redis and PostgreSQL stopped and started again while many VENs poll a gunicorn VTN (issue 10).

gunicorn (2 workers, 4 threads each, the sweepers started by the deployment hooks) serves
tests/support/outage_load_app.py on a private Redis or PostgreSQL (the ones
tests/test_store_redis.py and tests/test_store_sqlalchemy.py start and stop). Thirty simulated VENs poll it over HTTP, each
from a thread of its own, answer their events and send report data; one more VEN goes silent just
before the store stops. The store is down for longer than a VEN's deadline (5 s), then comes
back, with no restart of gunicorn. The test checks that:

- every reply is HTTP 200 or 503, never 500, and none takes long (no hang);
- the VTN recovers by itself: events added before the outage are all delivered and answered,
  report data sent after it is all taken, and an operator adds events again;
- liveness does not flap: no VEN that kept polling through the outage is declared offline, each
  VEN goes online once, and the silent VEN is declared offline once, no sooner than one deadline
  after the store came back (the outage was noticed, see docs/liveness.rst, "Outages").
"""
from __future__ import annotations

import json
import threading
import time
import urllib.error
from datetime import datetime, timedelta, timezone

from flask import Flask

from flask_openadr import VTN
from flask_openadr.testing import VENTestClient, data_point, data_report, metadata_report
from tests.support.outage_load_app import DEADLINE
from tests.support.servers import Gunicorn
from tests.test_faults_gunicorn import HttpClient, poll_until_quiet
from tests.test_store_redis import persistent_redis  # noqa: F401 - a fixture
from tests.test_store_sqlalchemy import private_postgres  # noqa: F401 - a fixture

FLEET = 30
POLL_EVERY = 0.5  # seconds between a VEN's polls, well inside its 5 s deadline
OUTAGE = DEADLINE + 2.0  # seconds the store is down: longer than a VEN's deadline
SLOW = 10.0  # seconds: no reply, 200 or 503, may take this long (the store timeouts are 1-2 s)


class CountingVEN(VENTestClient):
    """A VEN test client that records the status and duration of every request it makes."""

    def __init__(self, client, replies, **kwargs):
        super().__init__(client, certificate=None, **kwargs)
        self.replies = replies

    def post(self, service, body, content_type="application/xml"):
        started = time.monotonic()
        try:
            response = super().post(service, body, content_type)
        except (OSError, urllib.error.URLError) as exc:  # no answer at all
            self.replies.append((repr(exc), time.monotonic() - started))
            raise
        self.replies.append((response.status_code, time.monotonic() - started))
        return response


def unavailable(exc: AssertionError) -> bool:
    return str(exc).startswith("HTTP 503")


class PollingVEN(threading.Thread):
    """One simulated VEN: registers, offers a TELEMETRY_USAGE report, then polls every
    POLL_EVERY seconds, answering each event optIn (again on the next loop after a 503) and,
    once ``report_now`` is set, sending one oadrUpdateReport for the report the VTN asked for."""

    def __init__(self, base, name, replies, stop, report_now):
        super().__init__(name=name, daemon=True)
        self.ven = CountingVEN(HttpClient(base), replies, ven_name=name)
        self.stop, self.report_now = stop, report_now
        self.ready = threading.Event()
        self.silent = threading.Event()
        self.answered: set[str] = set()
        self.reported = False
        self.failure: BaseException | None = None
        self._unanswered = None
        self._report_request_id = None

    def run(self):
        try:
            self._register()
            self.ready.set()
            while not self.stop.is_set() and not self.silent.is_set():
                self._step()
                self.stop.wait(POLL_EVERY)
        except BaseException as exc:  # reported by the test
            self.failure = exc

    def _register(self):
        ven = self.ven
        assert ven.register()[1]["response"]["response_code"] == 200
        poll_until_quiet(ven)
        _, registered = ven.register_report([metadata_report(
            "spec-1", "TELEMETRY_USAGE", [data_point("rid-1")])])
        [request] = registered["report_requests"]
        self._report_request_id = request["report_request_id"]
        assert ven.created_report("", [self._report_request_id])[1]["response"][
            "response_code"] == 200

    def _step(self):
        ven = self.ven
        try:
            if self._unanswered is not None:
                self._answer(self._unanswered)
            if self.report_now.is_set() and not self.reported:
                report = data_report(
                    self._report_request_id, "spec-1", "TELEMETRY_USAGE",
                    [{"duration": timedelta(minutes=1),
                      "report_payloads": [{"r_id": "rid-1", "value": 1.0}]}],
                    dtstart=datetime.now(timezone.utc) - timedelta(minutes=1))
                code = ven.update_report([report])[1]["response"]["response_code"]
                assert code == 200, code
                self.reported = True
            name, payload = ven.poll()
            if name == "oadrDistributeEvent":
                self._answer(payload)
            elif name == "oadrRegisterReport":
                ven.registered_report(payload)
        except AssertionError as exc:
            if not unavailable(exc):
                raise

    def _answer(self, distribute):
        self._unanswered = distribute  # until the answer is taken
        events = [e["event_descriptor"]["event_id"] for e in distribute["events"]]
        reply = self.ven.created_event(distribute, "optIn")
        assert reply[1]["response"]["response_code"] == 200, reply
        self.answered.update(events)
        self._unanswered = None


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.1)


def read_log(directory, kind):
    path = directory / "log.jsonl"
    if not path.exists():
        return []
    return [e for e in map(json.loads, path.read_text().splitlines()) if e["kind"] == kind]


def operator(tmp_path, store_uri) -> tuple[Flask, VTN]:
    """The operator's own VTN on the same store (as a script or another app would open it)."""
    app = Flask("outage_load_operator", instance_path=str(tmp_path / "operator"))
    app.config.update(OPENADR_STORE_URI=store_uri, OPENADR_BACKGROUND="off")
    return app, VTN(app)


def add_event(app, vtn, ven_id, event_id, hours):
    start = datetime.now(timezone.utc) + timedelta(hours=hours)
    with app.app_context():
        vtn.add_event(ven_id, event_id=event_id, signal_name="SIMPLE", signal_type="level",
                      intervals=[{"dtstart": start, "duration": timedelta(minutes=30),
                                  "signal_payload": 1.0}])


def many_vens_through_an_outage(tmp_path, store_uri, stop_store, start_store):
    directory = tmp_path / "ol"
    directory.mkdir()
    server = Gunicorn("tests.support.outage_load_app:create_app()", tmp_path, workers=2,
                      args=["--threads", "4", "--timeout", "60", "--graceful-timeout", "5",
                            "--config", "python:tests.support.liveness_gunicorn_conf"],
                      env={"OL_DIR": str(directory), "OL_STORE_URI": store_uri})
    app, vtn = operator(tmp_path, store_uri)
    replies: list[tuple[object, float]] = []
    stop, report_now = threading.Event(), threading.Event()
    fleet = [PollingVEN(server.base, f"load-ven-{n:02d}", replies, stop, report_now)
             for n in range(FLEET)]
    gone = PollingVEN(server.base, "gone-ven", replies, stop, report_now)
    try:
        for ven in [*fleet, gone]:
            ven.start()
        wait_for(lambda: all(v.ready.is_set() or v.failure for v in [*fleet, gone]), 60,
                 "every VEN registered")
        assert [v.failure for v in [*fleet, gone] if v.failure] == []
        ven_ids = {v.ven.ven_id: n for n, v in enumerate(fleet)}

        # Events added just before the outage: some reach their VEN before it, some after.
        for ven_id, n in ven_ids.items():
            add_event(app, vtn, ven_id, f"before-{n}", 1)
        gone.silent.set()
        gone.join(timeout=30)
        before_outage = len(replies)
        stop_store()
        time.sleep(OUTAGE)
        store_back = time.time()  # the VTN cannot watch again before this moment
        start_store()

        # No restart of gunicorn, nor of the operator's VTN.
        report_now.set()
        wait_for(lambda: all(f"before-{n}" in v.answered and v.reported
                             for n, v in enumerate(fleet)) or any(v.failure for v in fleet),
                 60, "every VEN answered its event and sent its report")
        for ven_id, n in ven_ids.items():
            add_event(app, vtn, ven_id, f"after-{n}", 2)
        wait_for(lambda: all(f"after-{n}" in v.answered for n, v in enumerate(fleet))
                 or any(v.failure for v in fleet), 60, "every VEN answered the later event")
        wait_for(lambda: read_log(directory, "offline"), 30, "the silent VEN went offline")
        time.sleep(DEADLINE)  # a VEN declared offline by mistake would be by now
    finally:
        stop.set()
        for ven in fleet:
            ven.join(timeout=30)
        server.stop()
    assert [v.failure for v in fleet if v.failure] == []

    # Every reply was 200 or 503 (none 500, none missing), none slow; the outage was felt.
    statuses = {status for status, _ in replies}
    assert statuses <= {200, 503}, statuses
    assert max(seconds for _, seconds in replies) < SLOW
    assert sum(1 for status, _ in replies[before_outage:] if status == 503) >= FLEET

    # Nothing lost: the events from before and after the outage, each answered by its VEN, and
    # one VEN's report data per VEN.
    with app.app_context():
        assert sorted(e["event_descriptor"]["event_id"] for e in vtn.events()) == sorted(
            [f"before-{n}" for n in range(FLEET)] + [f"after-{n}" for n in range(FLEET)])
        for ven_id, n in ven_ids.items():
            for event_id in (f"before-{n}", f"after-{n}"):
                assert [(r["ven_id"], r["opt_type"]) for r in vtn.store.list_event_responses(
                    event_id)] == [(ven_id, "optIn")]
        listed = {v["ven_id"]: v["liveness"] for v in vtn.vens()}
        vtn.store.close()
    assert {e["ven_id"] for e in read_log(directory, "report")} == set(ven_ids)

    # No flapping: each VEN online once; only the silent one offline, once, and not before one
    # deadline after the store was back, because a sweeper noticed the outage.
    assert sorted((e["ven_id"], e["epoch"]) for e in read_log(directory, "online")) == sorted(
        [(ven_id, 1) for ven_id in ven_ids] + [(gone.ven.ven_id, 1)])
    [offline] = read_log(directory, "offline")
    assert (offline["ven_id"], offline["epoch"]) == (gone.ven.ven_id, 2)
    assert offline["at"] >= store_back + DEADLINE
    assert read_log(directory, "outage"), "no sweeper logged the outage"
    assert listed == {**{ven_id: "online" for ven_id in ven_ids}, gone.ven.ven_id: "offline"}


def test_many_vens_through_a_redis_outage(persistent_redis, tmp_path):  # noqa: F811
    many_vens_through_an_outage(
        tmp_path, persistent_redis.uri(socket_timeout=1, socket_connect_timeout=1),
        persistent_redis.stop, persistent_redis.start)


def test_many_vens_through_a_postgresql_outage(private_postgres, tmp_path):  # noqa: F811
    many_vens_through_an_outage(tmp_path, private_postgres.uri, private_postgres.stop,
                                private_postgres.start)

