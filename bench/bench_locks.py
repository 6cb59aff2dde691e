"""How much of a poll's time goes to waiting for the store's locks, with 4 gunicorn workers and
64 concurrent VENs (issue 8: under 5% of request time, so that more cores and hosts add
throughput).

gunicorn (4 sync workers) serves bench/lock_app.py, whose store times every wait for a lock
and reports it per request (``X-Lock-Wait``) beside the request's own time (``X-Server-Time``).
64 client threads, one VEN each, poll as fast as they are answered for ``--seconds``; every
``--event-every`` seconds an event for all VENs is added, so polls distribute and VENs answer
(oadrCreatedEvent) as well as find nothing. Reported per backend: requests per second and the
share of server time spent waiting for locks (measured in the worker around each lock
acquisition, which on PostgreSQL includes the lock statement's own round trip) and, on
PostgreSQL, the share of the VTN's active statements that the server shows waiting for a lock
(sampled from pg_stat_activity).

    python bench/bench_locks.py                          # postgresql and redis, when reachable
    python bench/bench_locks.py --backends postgresql --seconds 20
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta, timezone

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

from bench_delivery import remove  # noqa: E402
from bench_poll_sweep import SERVER_PORTS, backend_uris, free_port, reachable, request  # noqa: E402

from flask import Flask  # noqa: E402

from flask_openadr import VTN, codec  # noqa: E402

PREFIX = "/OpenADR2/Simple/2.0b"
#: The application_name of this run's PostgreSQL sessions, so that the sampler counts them only
#: (other programs may use the same server).
APPLICATION_NAME = f"bench-locks-{os.getpid()}"


def post(port: int, path: str, body: bytes) -> tuple[bytes, float, float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": "application/xml"})
        response = conn.getresponse()
        data = response.read()
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}: {data[:200]!r}")
        return (data, float(response.headers["X-Lock-Wait"]),
                float(response.headers["X-Server-Time"]))
    finally:
        conn.close()


def sample_postgresql(uri: str, stop_at: float, sampled: dict) -> None:
    """Every 5 ms, count this run's PostgreSQL sessions that are working on a statement and
    those of them that wait for a lock (wait_event_type 'Lock'): the share of statement time
    spent waiting for locks, as the server sees it (the client-side figure also counts the lock
    statement's own round trip)."""
    import psycopg

    libpq = "postgresql://" + uri.partition("://")[2].partition("?")[0]
    with psycopg.connect(libpq, autocommit=True) as connection:
        while time.monotonic() < stop_at:
            for wait_type, wait_event in connection.execute(
                    "SELECT wait_event_type, wait_event FROM pg_stat_activity "
                    "WHERE application_name = %s AND state = 'active'", (APPLICATION_NAME,)):
                sampled["busy"] += 1
                sampled["lock"] += wait_type == "Lock"
                if wait_type == "Lock":
                    kinds = sampled.setdefault("kinds", {})
                    kinds[wait_event] = kinds.get(wait_event, 0) + 1
            time.sleep(0.005)


def run(name: str, uri: str, tmp: str, args: argparse.Namespace) -> dict:
    port = free_port()
    env = dict(os.environ, BENCH_STORE_URI=uri, BENCH_INSTANCE=os.path.join(tmp, "instance"),
               PYTHONPATH=ROOT)
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--workers", str(args.workers), "--timeout", "600",
         "--bind", f"127.0.0.1:{port}", "--chdir", HERE, "--log-level", "warning",
         "--backlog", "256", "lock_app:create_app()"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while not reachable(port):
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("gunicorn did not start")
            time.sleep(0.1)
        ven_ids = json.loads(request(port, "POST", f"/bench/setup?n={args.vens}"))["ven_ids"]
        operator = Flask("operator", instance_path=os.path.join(tmp, "operator"))
        operator.config.update(OPENADR_STORE_URI=uri, OPENADR_BACKGROUND="off")
        vtn = VTN(operator)
        totals = {"requests": 0, "wait": 0.0, "server": 0.0}
        lock = threading.Lock()
        stop_at = time.monotonic() + args.seconds

        def ven_loop(ven_id: str) -> None:
            poll = codec.encode("oadrPoll", {"ven_id": ven_id})
            requests = wait = spent = 0.0
            while time.monotonic() < stop_at:
                body, waited, took = post(port, PREFIX + "/OadrPoll", poll)
                requests, wait, spent = requests + 1, wait + waited, spent + took
                name_, payload = codec.decode(body)
                if name_ == "oadrDistributeEvent" and payload["events"]:
                    answer = codec.encode("oadrCreatedEvent", {
                        "response": {"response_code": 200, "response_description": "OK",
                                     "request_id": ""}, "ven_id": ven_id,
                        "event_responses": [{
                            "response_code": 200, "response_description": "OK",
                            "request_id": payload["request_id"], "opt_type": "optIn",
                            "qualified_event_id": {
                                "event_id": e["event_descriptor"]["event_id"],
                                "modification_number":
                                    e["event_descriptor"]["modification_number"]}}
                            for e in payload["events"]]})
                    _, waited, took = post(port, PREFIX + "/EiEvent", answer)
                    requests, wait, spent = requests + 1, wait + waited, spent + took
            with lock:
                totals["requests"] += requests
                totals["wait"] += wait
                totals["server"] += spent

        threads = [threading.Thread(target=ven_loop, args=(v,)) for v in ven_ids]
        sampled = {"busy": 0, "lock": 0}
        if name == "postgresql":
            threads.append(threading.Thread(target=sample_postgresql,
                                            args=(uri, stop_at, sampled)))
        started = time.monotonic()
        for thread in threads:
            thread.start()
        added = 0
        while time.monotonic() < stop_at:
            time.sleep(args.event_every)
            with operator.app_context():
                start = datetime.now(timezone.utc) + timedelta(hours=1)
                # A program per event: events for one VEN and program must not overlap.
                vtn.add_event(signal_name="SIMPLE", signal_type="level",
                              market_context=f"http://bench.example/program-{added}",
                              intervals=[{"dtstart": start, "duration": timedelta(hours=1),
                                          "signal_payload": 1.0}])
            added += 1
        for thread in threads:
            thread.join()
        wall = time.monotonic() - started
        row = {"requests_per_s": totals["requests"] / wall, "events_added": added,
               "lock_wait_share": totals["wait"] / totals["server"],
               "server_ms_per_request": totals["server"] * 1000 / totals["requests"]}
        if sampled["busy"]:
            row["pg_lock_wait_share"] = sampled["lock"] / sampled["busy"]
            row["pg_lock_waits"] = sampled.get("kinds", {})
        return row
    finally:
        server.terminate()
        server.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default="postgresql,redis")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--vens", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--event-every", type=float, default=2.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.backends.split(","):
            if name in SERVER_PORTS and not reachable(SERVER_PORTS[name]):
                print(f"{name}: skipped, no server on 127.0.0.1:{SERVER_PORTS[name]}")
                continue
            uri = backend_uris(tmp)[name]
            if name == "postgresql":
                uri += f"&application_name={APPLICATION_NAME}"
            try:
                row = run(name, uri, tmp, args)
            finally:
                remove(uri)
            print(name, json.dumps({k: round(v, 4) if isinstance(v, float) else v
                                    for k, v in row.items()}), flush=True)


if __name__ == "__main__":
    main()
