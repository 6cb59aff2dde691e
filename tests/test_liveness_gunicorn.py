"""Liveness across real processes: each transition's handler runs once across every worker.

gunicorn serves tests/support/liveness_app.py (poll frequency 1 s, offline after 1 missed poll
+ 0.5 s grace, sweeps every 0.2 s) on a store several processes share. These tests use the real
clock: they wait, with bounds, for the handlers' JSON lines, then wait several sweep intervals
more before counting, so that a second call from any process would have been seen.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from flask_openadr import codec
from tests.support.backends import SHARED, URI_FACTORIES
from tests.support.servers import ROOT, Gunicorn, checkout_env, free_port, wait_until_serving

PREFIX = "/OpenADR2/Simple/2.0b"
POLL_EVERY = 0.25  # seconds; the VTN counts a VEN offline 1.5 s after its last message
SETTLE = 1.5  # seconds of waiting (7 sweep intervals of every worker) before counting


def read_log(*paths) -> list[dict]:
    """The JSON lines of the logs (of several server instances, read as one)."""
    lines = []
    for path in paths:
        if os.path.exists(path):
            with open(path, encoding="utf-8") as fh:
                text = fh.read()
            # A line another process is writing may be incomplete: only whole lines count.
            lines += [json.loads(line) for line in text.split("\n")[:-1]]
    return lines


def entries(logs, kind, **match) -> list[dict]:
    """The entries of ``kind`` in ``logs`` (one path or a list of paths) matching ``match``."""
    paths = logs if isinstance(logs, (list, tuple)) else [logs]
    return [e for e in read_log(*paths) if e["kind"] == kind
            and all(e.get(k) == v for k, v in match.items())]


def wait_for(predicate, timeout=20.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout} s")
        time.sleep(0.05)


def process_env(tmp_path, store_uri, log_path, **extra) -> dict[str, str]:
    """The settings of tests/support/liveness_app.py, for a server process's environment."""
    return {"LV_STORE_URI": store_uri, "LV_LOG": str(log_path),
            "LV_INSTANCE": str(tmp_path / "instance"), **extra}


class LivenessGunicorn(Gunicorn):
    """gunicorn serving tests/support/liveness_app.py; ``hooks`` uses
    tests/support/liveness_gunicorn_conf.py."""

    def __init__(self, tmp_path, store_uri, log_path, *, workers, hooks=False, preload=False):
        args = ["--graceful-timeout", "10"]
        if hooks:
            args += ["--config", "python:tests.support.liveness_gunicorn_conf"]
        super().__init__("tests.support.liveness_app:create_app()", tmp_path, workers=workers,
                         args=args,
                         env=process_env(tmp_path, store_uri, log_path,
                                         LV_PRELOAD="1" if preload else "0",
                                         LV_HANDLER_DELAY="0.02"))


class HttpVEN:
    """A pull VEN speaking to one or more servers (round robin) over real HTTP."""

    def __init__(self, *bases):
        self.bases = list(bases)
        self.sent = 0
        self.ven_id = None
        self.pids: set[str] = set()

    def send(self, service, payload_name, payload, base=None):
        base = base or self.bases[self.sent % len(self.bases)]
        self.sent += 1
        request = urllib.request.Request(f"{base}{PREFIX}/{service}",
                                         data=codec.encode(payload_name, payload),
                                         headers={"Content-Type": "application/xml"})
        with urllib.request.urlopen(request, timeout=10) as response:
            self.pids.add(response.headers["X-Worker-Pid"])
            return codec.decode(response.read())

    def register(self, base=None):
        name, reply = self.send("EiRegisterParty", "oadrCreatePartyRegistration", {
            "request_id": "r1", "profile_name": "2.0b", "transport_name": "simpleHttp",
            "report_only": False, "xml_signature": False, "ven_name": "lively",
            "http_pull_model": True}, base)
        assert reply["response"]["response_code"] == 200
        self.ven_id = reply["ven_id"]

    def poll(self):
        name, reply = self.send("OadrPoll", "oadrPoll", {"ven_id": self.ven_id})
        assert name in ("oadrResponse", "oadrRegisterReport")


def keep_polling(fleet, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for ven in fleet:
            ven.poll()
        time.sleep(POLL_EVERY)


def epochs(logs, kind, ven_id):
    return sorted(e["epoch"] for e in entries(logs, kind, ven_id=ven_id))


def calls(logs, kind):
    return len(entries(logs, kind))


def assert_exactly_once_cycles(fleet, logs):
    """The VENs (registered) poll, go silent together, poll again, go silent again: one handler
    call per VEN and transition, with the epochs 1 (online) 2 (offline) 3 (online) 4 (offline).

    They go silent together so that several sweeps (each slowed by the handler's delay) work on
    the same batch of due VENs at once: only the compare-and-set keeps them apart."""
    keep_polling(fleet, 2.5)
    assert (calls(logs, "online"), calls(logs, "offline")) == (len(fleet), 0)
    wait_for(lambda: calls(logs, "offline") >= len(fleet), what="the offline calls")
    time.sleep(SETTLE)
    for ven in fleet:
        assert epochs(logs, "offline", ven.ven_id) == [2]
    keep_polling(fleet, 2.0)  # back: the first poll makes each online
    for ven in fleet:
        assert epochs(logs, "online", ven.ven_id) == [1, 3]
    wait_for(lambda: calls(logs, "offline") >= 2 * len(fleet), what="the second offline calls")
    time.sleep(SETTLE)
    for ven in fleet:
        assert epochs(logs, "online", ven.ven_id) == [1, 3]
        assert epochs(logs, "offline", ven.ven_id) == [2, 4]
    assert entries(logs, "error") == []


FLEET = 12


@pytest.fixture(params=SHARED)
def shared_uri(request, tmp_path):
    return URI_FACTORIES[request.param](tmp_path)


def started_pids(log_path) -> set[int]:
    return {e["pid"] for e in entries(log_path, "sweeper", message="liveness sweeper started")}


def test_three_gunicorn_workers_call_each_handler_once(shared_uri, tmp_path):
    log_path = tmp_path / "liveness.jsonl"
    server = LivenessGunicorn(tmp_path, shared_uri, log_path, workers=3, hooks=True,
                              preload=True)
    try:
        # post_fork started a sweeper in every worker, so three processes race for each
        # transition; the master, which loaded the app (--preload), runs none.
        wait_for(lambda: len(started_pids(log_path)) == 3, what="three sweeping workers")
        [created] = entries(log_path, "app_created")
        assert created["pid"] == server.master_pid
        assert server.master_pid not in started_pids(log_path)
        fleet = [HttpVEN(server.base) for _ in range(FLEET)]
        for ven in fleet:
            ven.register()
        assert_exactly_once_cycles(fleet, log_path)
        served_by = set().union(*(ven.pids for ven in fleet))
        assert len(served_by) >= 2  # the VENs' messages reached several workers
    finally:
        server.stop()
    stopped = {e["pid"] for e in entries(log_path, "sweeper",
                                         message="liveness sweeper stopped")}
    assert stopped == started_pids(log_path)  # worker_exit stopped every one


def test_two_gunicorn_instances_on_one_store_call_each_handler_once(shared_uri, tmp_path):
    log_a, log_b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    # A: the hooks start the sweepers after each worker loads the app (no --preload).
    first = LivenessGunicorn(tmp_path, shared_uri, log_a, workers=2, hooks=True)
    second = None
    try:
        # B: no hooks; a worker starts its sweeper at its first OpenADR request.
        second = LivenessGunicorn(tmp_path, shared_uri, log_b, workers=1)
        wait_for(lambda: len(started_pids(log_a)) == 2, what="A's two sweeping workers")
        assert started_pids(log_a) == {e["pid"] for e in entries(log_a, "app_created")}
        assert started_pids(log_b) == set()  # /health is no OpenADR request
        fleet = [HttpVEN(second.base, first.base) for _ in range(FLEET)]
        for ven in fleet:
            ven.register(second.base)
        assert len(started_pids(log_b)) == 1
        # The handlers may run in either instance: both logs are read as one.
        assert_exactly_once_cycles(fleet, [log_a, log_b])
        assert len(started_pids(log_b)) == 1
    finally:
        first.stop()
        if second is not None:
            second.stop()


def test_the_reloader_parent_never_sweeps(tmp_path):
    """``flask run --reload``: the parent loads the app but only watches files; the child that
    Werkzeug starts with WERKZEUG_RUN_MAIN=true serves, and only it starts a sweeper."""
    log_path = tmp_path / "reload.jsonl"
    port = free_port()
    env = checkout_env(**process_env(tmp_path, "sqlite:///" + str(tmp_path / "reload.sqlite3"),
                                     log_path))
    env.pop("WERKZEUG_RUN_MAIN", None)
    env.pop("WERKZEUG_SERVER_FD", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "flask", "--app", "tests.support.liveness_app:create_app", "run",
         "--reload", "--port", str(port)],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(base, proc, "flask run --reload")
        created = {e["pid"] for e in entries(log_path, "app_created")}
        assert proc.pid in created and len(created) == 2  # the parent loaded the app too
        HttpVEN(base).register()
        [child] = created - {proc.pid}
        assert started_pids(log_path) == {child}
        time.sleep(0.5)
        assert started_pids(log_path) == {child}
    finally:
        # The reloader's child is in the session this test started: end both.
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
