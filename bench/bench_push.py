"""HTTP push throughput: 1,000 events pushed to 1,000 push VENs, and the VTN's CPU per push.

gunicorn with two sync workers serves bench/poll_app.py on SQLite, with the push sender running
in each worker as in production (the flask_openadr.gunicorn hooks). A separate process, the
*peer*, is the 1,000 VENs: one HTTP/1.1 server on loopback whose address for VEN n is
``http://127.0.0.1:<port>/ven/n``; it answers every oadrDistributeEvent at once with an empty
200, and every other push with a valid reply built with the codec (oadrRegisteredReport for the
METADATA oadrRegisterReport). It counts what arrives and reports its own CPU time.

1. 1,000 VENs register for push through the VTN's EiRegisterParty endpoint; each is pushed the
   VTN's METADATA oadrRegisterReport. Those pushes are counted separately and drained first.
2. The sender's idle cost: the workers' CPU over a few seconds with nothing due.
3. 1,000 events, one per VEN, are added through the bench app's operator endpoint (split over
   a few concurrent requests, so both workers add). Measured: every VEN got its event exactly
   once (counted at the peer), the wall time from the first add to the last delivery, pushes per
   second, and the workers' CPU (every thread, read from /proc) per push, without the CPU of the
   requests that added the events (which the endpoint measures on its own thread).

``--floor`` measures instead what any VTN must do per push with urllib3 and SQLite, against the
same peer: two processes (as the two workers) each take a due message in one write
transaction of a SQLite file (WAL, ``synchronous = NORMAL``, as the SQLite store opens it),
POST its body (an oadrDistributeEvent encoded beforehand) through a urllib3 connection pool as
the sender does, and record the push in a second write transaction. No lease rules, no
store layer, no services, no encoding, no liveness: a floor, not a sender.

    python bench/bench_push.py
    python bench/bench_push.py --vens 200 --profile     # where one worker's sender spends time
    python bench/bench_push.py --floor                  # the floor, on the same machine
    python bench/bench_push.py --store postgresql       # or redis: the server's CPU apart

Targets (issue 11): under 1 ms of VTN CPU per push, at least 500 pushes/s on a 2-core machine.
"""
from __future__ import annotations

import argparse
import http.server
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

from bench_poll_sweep import free_port, reachable, request, serve_poll_app  # noqa: E402

from flask_openadr import codec  # noqa: E402

#: The VTN's settings: the sender in every worker; no redelivery during the run (the peer does
#: not send oadrCreatedEvent, so every distribution counted is a first push, not a resend).
PUSH_CONFIG = {"OPENADR_BACKGROUND": "thread", "OPENADR_REDELIVERY_AFTER": 3600,
               "OPENADR_PUSH_TIMEOUT": 5, "OPENADR_PUSH_RETRY_MAX": 1}

_VEN_PATH = re.compile(r"^/ven/(\d+)/OpenADR2/Simple/2\.0b/(\w+)$")


# -- the peer: 1,000 push VENs in one process ---------------------------------------------------

class Peer:
    """What the peer received: per VEN, the pushes to EiEvent (and the events in them) and to
    EiReport; the monotonic times of the first and last event push."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: dict[str, int] = {}        # VEN -> events received
        self.event_pushes: dict[str, int] = {}  # VEN -> oadrDistributeEvent pushes
        self.reports: dict[str, int] = {}       # VEN -> EiReport pushes
        self.other = 0
        self.first_event = self.last_event = None

    def stats(self) -> dict:
        with self.lock:
            return {"event_pushes": sum(self.event_pushes.values()),
                    "event_vens": len(self.event_pushes),
                    "most_pushes_per_ven": max(self.event_pushes.values(), default=0),
                    "events": sum(self.events.values()),
                    "report_pushes": sum(self.reports.values()), "report_vens": len(self.reports),
                    "other": self.other, "first_event": self.first_event,
                    "last_event": self.last_event, "cpu": time.process_time()}


def make_peer_handler(peer: Peer) -> type:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: the VTN's pool reuses its connections
        # A buffered writer, flushed once per request: the status line, headers and body leave
        # in one write. Unbuffered, a reply with a body took two, and the second waited for
        # the VTN's delayed ACK (40 ms on Linux) before it left.
        wbufsize = -1

        def log_message(self, *args) -> None:
            pass

        def _reply(self, body: bytes, content_type: str = "application/xml") -> None:
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            self._reply(json.dumps(peer.stats()).encode(), "application/json")

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            match = _VEN_PATH.match(self.path)
            service = match.group(2) if match else None
            if service == "EiEvent":
                # Counted without a parse: each eventID is an opening and a closing tag.
                now = time.monotonic()
                with peer.lock:
                    ven = match.group(1)
                    peer.event_pushes[ven] = peer.event_pushes.get(ven, 0) + 1
                    peer.events[ven] = peer.events.get(ven, 0) + body.count(b"eventID>") // 2
                    peer.first_event = peer.first_event or now
                    peer.last_event = now
                self._reply(b"")
                return
            name, payload = codec.decode(body)
            ok = {"response_code": 200, "response_description": "OK",
                  "request_id": payload.get("request_id") or ""}
            if name == "oadrRegisterReport":
                with peer.lock:
                    peer.reports[match.group(1)] = peer.reports.get(match.group(1), 0) + 1
                answer = codec.encode("oadrRegisteredReport", {
                    "response": ok, "report_requests": [], "ven_id": payload.get("ven_id")})
            else:
                with peer.lock:
                    peer.other += 1
                answer = codec.encode("oadrResponse", {"response": ok})
            self._reply(answer)

    return Handler


def serve_peer(port: int) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), make_peer_handler(Peer()))
    server.daemon_threads = True
    server.serve_forever()


# -- the benchmark ------------------------------------------------------------------------------

def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def in_threads(count: int, items: list, work) -> list:
    """``work(chunk)`` for ``count`` interleaved chunks of ``items`` at once; their results."""
    chunks = [items[i::count] for i in range(count)]
    results: list = [None] * count
    errors: list = []

    def run(i: int) -> None:
        try:
            results[i] = work(chunks[i])
        except Exception as exc:  # reported below, in this thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results


def register(port: int, peer_port: int, numbers: list[int]) -> list[str]:
    ven_ids = []
    for n in numbers:
        body = codec.encode("oadrCreatePartyRegistration", {
            "request_id": f"reg-{n}", "profile_name": "2.0b", "transport_name": "simpleHttp",
            "report_only": False, "xml_signature": False, "ven_name": f"push-bench-{n}",
            "http_pull_model": False,
            "transport_address": f"http://127.0.0.1:{peer_port}/ven/{n}"})
        name, reply = codec.decode(request(port, "POST", "/OpenADR2/Simple/2.0b/EiRegisterParty",
                                           body))
        if reply["response"]["response_code"] != 200:
            raise AssertionError(f"registration {n} refused: {reply['response']}")
        ven_ids.append(reply["ven_id"])
    return ven_ids


def cpu(port: int) -> float:
    return json.loads(request(port, "GET", "/bench/cpu"))["workers_cpu"]


#: The server process of each store with one (its CPU is the store's share of a push).
SERVER_PROCESS = {"postgresql": "postgres", "redis": "redis-server"}


def server_cpu(store: str) -> float:
    """CPU seconds of the store's server processes on this machine (0 for SQLite), from /proc:
    PostgreSQL's backends serve the workers' connections, which stay open during a run."""
    name = SERVER_PROCESS.get(store)
    total = 0
    for pid in os.listdir("/proc") if name else ():
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
                stat = fh.read()
        except OSError:
            continue  # a process that just exited
        if stat[stat.find("(") + 1:stat.rfind(")")] == name:
            fields = stat.rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def run(vens: int, add_requests: int, idle_seconds: float, profile: bool,
        concurrency: int | None = None, store: str = "sqlite") -> dict:
    from bench_delivery import remove
    from bench_poll_sweep import backend_uris

    with tempfile.TemporaryDirectory() as tmp:
        uri = backend_uris(tmp)[store]
        peer_port = free_port()
        peer = subprocess.Popen([sys.executable, __file__, "--serve-peer", str(peer_port)],
                                env=dict(os.environ, PYTHONPATH=ROOT))
        hooks = os.path.join(tmp, "gunicorn_conf.py")
        with open(hooks, "w", encoding="utf-8") as fh:
            fh.write("from flask_openadr.gunicorn import post_fork, post_worker_init, "
                     "worker_exit  # noqa: F401\n")
        config = dict(PUSH_CONFIG)
        if concurrency is not None:
            config["OPENADR_PUSH_CONCURRENCY"] = concurrency
        env = {"BENCH_CONFIG": json.dumps(config)}
        if profile:
            env["BENCH_PROFILE"] = "1"
        try:
            wait_for(lambda: reachable(peer_port), 30, "the peer to start")

            def peer_stats() -> dict:
                return json.loads(request(peer_port, "GET", "/stats"))

            with serve_poll_app(uri, tmp, workers=2, gunicorn_args=["-c", hooks],
                                **env) as port:
                row: dict = {"vens": vens, "store": store}
                # 1. Registrations, and the METADATA pushes they cause, drained.
                cpu0, peer0, t0 = cpu(port), peer_stats()["cpu"], time.monotonic()
                ven_ids = sum(in_threads(4, list(range(vens)),
                                         lambda chunk: register(port, peer_port, chunk)), [])
                row["register_s"] = time.monotonic() - t0
                wait_for(lambda: peer_stats()["report_vens"] == vens, 120,
                         "every METADATA report push")
                row["metadata_drained_s"] = time.monotonic() - t0
                time.sleep(1.0)  # the last answers are processed after the peer counted them
                stats = peer_stats()
                row["metadata_pushes"] = stats["report_pushes"]
                row["register_phase_vtn_cpu_s"] = cpu(port) - cpu0
                row["register_phase_peer_cpu_s"] = stats["cpu"] - peer0
                # 2. The sender with nothing due: its passes over the push VENs.
                cpu0 = cpu(port)
                time.sleep(idle_seconds)
                row["idle_vtn_cpu_share"] = (cpu(port) - cpu0) / idle_seconds
                # 3. The events.
                cpu0, peer0, server0 = cpu(port), peer_stats()["cpu"], server_cpu(store)

                def add(chunk: list[str]) -> list[dict]:
                    # A few a request: a sync worker's request must end within its timeout.
                    return [json.loads(request(port, "POST", "/bench/events",
                                               json.dumps(chunk[i:i + 10]).encode(),
                                               "application/json"))
                            for i in range(0, len(chunk), 10)]

                try:
                    added = sum(in_threads(add_requests, ven_ids, add), [])
                except Exception:
                    if profile:
                        print(json.dumps(json.loads(request(port, "GET", "/bench/profile")),
                                         indent=1))
                    raise
                wait_for(lambda: peer_stats()["event_pushes"] >= vens, 300,
                         "every event push")
                stats = peer_stats()
                cpu1 = cpu(port)
                began = min(a["began"] for a in added)
                row["adds_s"] = max(a["ended"] for a in added) - began
                row["wall_s"] = stats["last_event"] - began
                row["event_pushes"] = stats["event_pushes"]
                row["event_vens"] = stats["event_vens"]
                row["events_received"] = stats["events"]
                row["most_pushes_per_ven"] = stats["most_pushes_per_ven"]
                row["pushes_per_s"] = stats["event_pushes"] / row["wall_s"]
                row["adds_cpu_s"] = sum(a["cpu"] for a in added)
                row["vtn_cpu_s"] = cpu1 - cpu0
                row["vtn_cpu_ms_per_push"] = (
                    (row["vtn_cpu_s"] - row["adds_cpu_s"]) * 1000 / stats["event_pushes"])
                row["add_cpu_ms_per_event"] = row["adds_cpu_s"] * 1000 / vens
                row["peer_cpu_ms_per_push"] = (stats["cpu"] - peer0) * 1000 / stats["event_pushes"]
                # (the adds' own share of the server's CPU included: it is not told apart)
                row["server_cpu_ms_per_push"] = ((server_cpu(store) - server0) * 1000
                                                 / stats["event_pushes"])
                row["other_pushes"] = stats["other"]
                # Every VEN got its one event, once.
                assert stats["event_vens"] == vens and stats["most_pushes_per_ven"] == 1, stats
                assert stats["event_pushes"] == vens and stats["events"] == vens, stats
                # 4. The cancellations: each is pushed too, and cancel_event is cheap.
                cpu0, peer0, server0 = cpu(port), peer_stats()["cpu"], server_cpu(store)
                event_ids = [e for a in added for e in a["event_ids"]]
                chunks = [event_ids[i:i + 50] for i in range(0, len(event_ids), 50)]
                canceled = sum(in_threads(add_requests, chunks, lambda mine: [json.loads(
                    request(port, "POST", "/bench/cancel", json.dumps(c).encode(),
                            "application/json")) for c in mine]), [])
                wait_for(lambda: peer_stats()["event_pushes"] >= 2 * vens, 300,
                         "every cancellation push")
                stats = peer_stats()
                began = min(a["began"] for a in canceled)
                row["cancel_wall_s"] = stats["last_event"] - began
                row["cancel_pushes"] = stats["event_pushes"] - row["event_pushes"]
                row["cancel_pushes_per_s"] = row["cancel_pushes"] / row["cancel_wall_s"]
                cancels_cpu = sum(a["cpu"] for a in canceled)
                row["cancel_cpu_ms_per_event"] = cancels_cpu * 1000 / vens
                row["cancel_vtn_cpu_ms_per_push"] = (
                    (cpu(port) - cpu0 - cancels_cpu) * 1000 / row["cancel_pushes"])
                row["cancel_peer_cpu_ms_per_push"] = (
                    (stats["cpu"] - peer0) * 1000 / row["cancel_pushes"])
                row["cancel_server_cpu_ms_per_push"] = (
                    (server_cpu(store) - server0) * 1000 / row["cancel_pushes"])
                if profile:
                    row["profile"] = json.loads(request(port, "GET", "/bench/profile"))
                # And then its cancellation, once.
                assert stats["event_vens"] == vens and stats["most_pushes_per_ven"] == 2, stats
                assert stats["event_pushes"] == 2 * vens, stats
                return row
        finally:
            peer.terminate()
            peer.wait(timeout=10)
            remove(uri)


# -- the floor: what any VTN must do per push -----------------------------------------------------

def floor_sender(path: str, peer_port: int) -> None:
    """One floor process: until no message is due, take one (a write transaction), POST it,
    record it as pushed (a second write transaction). Prints its pushes and CPU seconds."""
    import sqlite3

    import urllib3

    connection = sqlite3.connect(path, isolation_level=None, timeout=30)
    connection.execute("PRAGMA synchronous = NORMAL")
    pool = urllib3.HTTPConnectionPool("127.0.0.1", peer_port, maxsize=1, block=False,
                                      timeout=urllib3.Timeout(connect=5, read=5),
                                      retries=urllib3.Retry(False, redirect=False))
    headers = {"Content-Type": "application/xml"}
    pushes, owner = 0, str(os.getpid())
    cpu0 = time.process_time()
    while True:
        connection.execute("BEGIN IMMEDIATE")
        row = connection.execute("SELECT ven, body FROM due WHERE owner IS NULL "
                                 "LIMIT 1").fetchone()
        if row is None:
            connection.execute("COMMIT")
            break
        connection.execute("UPDATE due SET owner = ? WHERE ven = ?", (owner, row[0]))
        connection.execute("COMMIT")
        response = pool.urlopen("POST", f"/ven/{row[0]}/OpenADR2/Simple/2.0b/EiEvent",
                                body=row[1], headers=headers, retries=pool.retries,
                                redirect=False, assert_same_host=False, timeout=pool.timeout,
                                preload_content=False)
        response.read()
        response.release_conn()
        connection.execute("BEGIN IMMEDIATE")
        connection.execute("UPDATE due SET pushed_at = ? WHERE ven = ?",
                           (time.time(), row[0]))
        connection.execute("COMMIT")
        assert response.status == 200
        pushes += 1
    print(json.dumps({"pushes": pushes, "cpu": time.process_time() - cpu0}))


def run_floor(vens: int, senders: int = 2) -> dict:
    import sqlite3
    from datetime import datetime, timedelta, timezone

    with tempfile.TemporaryDirectory() as tmp:
        peer_port = free_port()
        peer = subprocess.Popen([sys.executable, __file__, "--serve-peer", str(peer_port)],
                                env=dict(os.environ, PYTHONPATH=ROOT))
        try:
            wait_for(lambda: reachable(peer_port), 30, "the peer to start")
            path = os.path.join(tmp, "floor.sqlite3")
            connection = sqlite3.connect(path, isolation_level=None)
            connection.execute("PRAGMA journal_mode = WAL")
            connection.execute("CREATE TABLE due (ven TEXT PRIMARY KEY, body BLOB NOT NULL, "
                               "owner TEXT, pushed_at REAL) WITHOUT ROWID")
            start = datetime.now(timezone.utc) + timedelta(hours=1)
            now = datetime.now(timezone.utc)
            for n in range(vens):  # the oadrDistributeEvent the VTN pushes for such an event
                body = codec.encode("oadrDistributeEvent", {
                    "response": {"response_code": 200, "response_description": "OK",
                                 "request_id": f"r{n}"},
                    "request_id": f"r{n}", "vtn_id": "BENCH-VTN", "events": [{
                        "event_descriptor": {
                            "event_id": f"e{n}", "modification_number": 0, "priority": 0,
                            "market_context": "http://MarketContext1", "created_date_time": now,
                            "event_status": "far", "test_event": "false"},
                        "active_period": {"dtstart": start, "duration": timedelta(minutes=30)},
                        "event_signals": [{
                            "signal_name": "SIMPLE", "signal_type": "level", "signal_id": "s0",
                            "intervals": [{"uid": "0", "duration": timedelta(minutes=30),
                                           "signal_payload": 1.0}]}],
                        "target": {"ven_ids": [f"ven-{n}"]},
                        "response_required": "always"}]})
                connection.execute("INSERT INTO due (ven, body) VALUES (?, ?)", (str(n), body))
            connection.close()
            before = json.loads(request(peer_port, "GET", "/stats"))
            t0 = time.monotonic()
            procs = [subprocess.Popen([sys.executable, __file__, "--floor-sender", path,
                                       str(peer_port)], stdout=subprocess.PIPE,
                                      env=dict(os.environ, PYTHONPATH=ROOT))
                     for _ in range(senders)]
            results = [json.loads(p.communicate(timeout=300)[0]) for p in procs]
            wall = time.monotonic() - t0
            stats = json.loads(request(peer_port, "GET", "/stats"))
            pushes = sum(r["pushes"] for r in results)
            assert pushes == vens, results
            assert stats["event_pushes"] - before["event_pushes"] == vens, stats
            assert stats["event_vens"] == vens and stats["most_pushes_per_ven"] == 1, stats
            return {"vens": vens, "floor_pushes": pushes, "floor_wall_s": wall,
                    "floor_cpu_ms_per_push": sum(r["cpu"] for r in results) * 1000 / pushes,
                    "floor_pushes_per_s_incl_start": pushes / wall}
        finally:
            peer.terminate()
            peer.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vens", type=int, default=1000, help="push VENs, one event each")
    parser.add_argument("--add-requests", type=int, default=4,
                        help="concurrent operator requests that add the events")
    parser.add_argument("--idle-seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, metavar="N",
                        help="OPENADR_PUSH_CONCURRENCY of each worker (default: the VTN's, 8)")
    parser.add_argument("--profile", action="store_true",
                        help="sample the push threads' stacks in the workers; print one's")
    parser.add_argument("--store", choices=["sqlite", "postgresql", "redis"], default="sqlite",
                        help="the VTN's store (PostgreSQL and Redis on their default local "
                        "ports; their server's CPU is reported apart)")
    parser.add_argument("--floor", action="store_true",
                        help="measure what any VTN must do per push instead (see above)")
    parser.add_argument("--serve-peer", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--floor-sender", nargs=2, metavar=("PATH", "PORT"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_peer:
        serve_peer(args.serve_peer)
        return
    if args.floor_sender:
        floor_sender(args.floor_sender[0], int(args.floor_sender[1]))
        return
    if args.floor:
        row = run_floor(args.vens)
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v
                          for k, v in row.items()}, indent=1))
        print(f"floor: {row['floor_cpu_ms_per_push']:.2f} ms of CPU per push, "
              f"two processes (target for the VTN: < 1 ms)")
        return
    row = run(args.vens, args.add_requests, args.idle_seconds, args.profile, args.concurrency,
              args.store)
    profile = row.pop("profile", None)
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()},
                     indent=1))
    if profile:
        print(f"worker {profile['pid']}: {profile['samples']} samples of busy push threads")
        for kind in ("self", "inclusive"):
            print(f"  {kind}:")
            for name, count in profile[kind]:
                print(f"    {100 * count / max(1, profile['samples']):5.1f} %  {name}")
    for label, ms, rate in (("adds", "vtn_cpu_ms_per_push", "pushes_per_s"),
                            ("cancels", "cancel_vtn_cpu_ms_per_push", "cancel_pushes_per_s")):
        print(f"{label}: VTN CPU per push {row[ms]:.2f} ms (target < 1 ms: "
              f"{'met' if row[ms] < 1.0 else 'NOT MET'}); {row[rate]:.0f} pushes/s "
              f"(target >= 500: {'met' if row[rate] >= 500 else 'NOT MET'})")


if __name__ == "__main__":
    main()
