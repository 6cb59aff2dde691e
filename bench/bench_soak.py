"""Soak: 1,000 simulated VENs polling and reporting for a long time against gunicorn on SQLite.

gunicorn (2 gthread workers, the liveness sweeper, retention and periodic reports in each) serves
bench/poll_app.py on a SQLite file, with client certificates off, event retention short
(``--retention``, 3 minutes by default) and the ``telemetry`` report policy, so that the VTN asks
each VEN for its TELEMETRY_USAGE data when the VEN registers its METADATA report.

The VENs are cheap: one object each, driven by a pool of client threads from a schedule (the
VEN whose turn is earliest runs next), over one urllib3 connection pool, with the oadrPoll bodies
built once and the other messages built by :class:`flask_openadr.testing.VENTestClient`. Each VEN
registers (spread over ``--ramp`` seconds), acknowledges the VTN's METADATA report, registers its
own TELEMETRY_USAGE report and confirms the VTN's request for it, then polls every poll interval
the VTN gave it, answers every oadrDistributeEvent with oadrCreatedEvent (optIn) and sends an
oadrUpdateReport each report period. An operator thread, with a VTN of its own on the same file
(as an operator's script would have), adds, modifies and cancels events for batches of 50 VENs.

Recorded every ``--sample-every`` seconds: each worker's RSS, the store's size (file plus WAL)
and row count per table, requests and errors. Every reply must be HTTP 200, parse, and carry the
expected response code; anything else is an error. At the end a summary table; the verdicts:
0 errors, every worker's RSS after the warm-up within 10 % of its value at the end of the
warm-up, the store bounded (no table growing after the warm-up beyond what the retention
explains).

    python bench/bench_soak.py                         # 1,000 VENs for 30 minutes
    python bench/bench_soak.py --duration 240          # a short run
    python bench/bench_soak.py --vens 200 --duration 120 --ramp 20
"""
from __future__ import annotations

import argparse
import heapq
import json
import os
import random
import re
import sqlite3
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from datetime import datetime, timedelta, timezone

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

import urllib3  # noqa: E402
from flask import Flask  # noqa: E402

from bench_poll_sweep import serve_poll_app  # noqa: E402
from flask_openadr import VTN, codec  # noqa: E402
from flask_openadr.errors import EventError  # noqa: E402
from flask_openadr.testing import (  # noqa: E402
    VENTestClient, data_point, data_report, metadata_report,
)

PREFIX = "/OpenADR2/Simple/2.0b"
BATCH = 50  # VENs per operator event
REPORT_PERIOD = timedelta(seconds=60)  # the rID's oadrMinPeriod: the VTN asks for it this often
#: What a VEN may find on a poll, and what it does about it.
EXPECTED_ON_POLL = {"oadrResponse", "oadrDistributeEvent", "oadrRegisterReport",
                    "oadrCreateReport", "oadrCancelReport"}


class Stats:
    """Counters the client threads share."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: Counter = Counter()  # by message sent
        self.replies: Counter = Counter()  # by reply received
        self.errors: Counter = Counter()
        self.error_samples: list[str] = []
        self.late: list[float] = []  # how late each VEN turn started, seconds

    def request(self, name: str) -> None:
        with self.lock:
            self.requests[name] += 1

    def reply(self, name: str) -> None:
        with self.lock:
            self.replies[name] += 1

    def error(self, kind: str, detail: str) -> None:
        with self.lock:
            self.errors[kind] += 1
            if len(self.error_samples) < 20:
                self.error_samples.append(f"{kind}: {detail[:300]}")

    def total(self) -> int:
        with self.lock:
            return sum(self.requests.values())


MESSAGE_NAME = re.compile(rb"<oadr:(oadr\w+)")
ENVELOPE = {b"oadrPayload", b"oadrSignedObject"}


class Response:
    """What VENTestClient needs of a response."""

    def __init__(self, status: int, body: bytes):
        self.status_code = status
        self._body = body

    def get_data(self, as_text: bool = False):
        return self._body.decode("utf-8", "replace") if as_text else self._body


class PoolClient:
    """What VENTestClient needs of a Flask test client, over one shared urllib3 pool."""

    def __init__(self, pool: urllib3.HTTPConnectionPool, stats: Stats):
        self.pool = pool
        self.stats = stats

    def post(self, path, data, content_type, environ_base=None):
        # The message's name, for the per-message counts (the bodies are built by us).
        names = [n for n in MESSAGE_NAME.findall(data[:2000]) if n not in ENVELOPE]
        self.stats.request(names[0].decode() if names else "?")
        # A connection per request, as 1,000 separate VENs would open: reusing pooled
        # connections races gunicorn's keep-alive timeout (a request sent on a connection the
        # server is closing fails although the server did nothing wrong).
        response = self.pool.urlopen("POST", path, body=data,
                                     headers={"Content-Type": content_type,
                                              "Connection": "close"},
                                     retries=False, timeout=urllib3.Timeout(30))
        return Response(response.status, response.data)


class SimulatedVEN:
    """One VEN's state; :meth:`turn` does what it does at one poll."""

    def __init__(self, index: int, client: PoolClient, stats: Stats):
        self.index = index
        self.ven = VENTestClient(client, ven_name=f"soak-{index:04d}", certificate=None)
        self.stats = stats
        self.registered = False
        self.poll_body = b""
        self.poll_every = 10.0
        self.report_request_id: str | None = None
        self.next_report = 0.0

    def check(self, reply, expected_name: str) -> dict:
        name, payload = reply
        self.stats.reply(name)
        if name != expected_name:
            raise AssertionError(f"expected {expected_name}, got {name}")
        code = payload["response"]["response_code"]
        if code != 200:
            raise AssertionError(f"{name} with responseCode {code}: "
                                 f"{payload['response'].get('response_description')}")
        return payload

    def register(self) -> None:
        ven = self.ven
        reply = self.check(ven.register(), "oadrCreatedPartyRegistration")
        self.poll_every = reply["requested_oadr_poll_freq"].total_seconds()
        self.poll_body = codec.encode("oadrPoll", {"ven_id": ven.ven_id})
        registered = self.check(ven.register_report([metadata_report(
            "telemetry-1", "TELEMETRY_USAGE",
            [data_point("rid-1", min_period=REPORT_PERIOD, max_period=REPORT_PERIOD)])]),
            "oadrRegisteredReport")
        requests = registered.get("report_requests") or []
        if len(requests) != 1:
            raise AssertionError(f"the VTN asked for {len(requests)} reports, expected 1")
        self.report_request_id = requests[0]["report_request_id"]
        self.check(ven.created_report("", [self.report_request_id]), "oadrResponse")
        self.next_report = time.monotonic() + REPORT_PERIOD.total_seconds()
        self.registered = True

    def turn(self) -> None:
        if not self.registered:
            self.register()
            return
        ven = self.ven
        if time.monotonic() >= self.next_report:
            self.next_report += REPORT_PERIOD.total_seconds()
            now = datetime.now(timezone.utc)
            report = data_report(self.report_request_id, "telemetry-1", "TELEMETRY_USAGE",
                                 [{"duration": REPORT_PERIOD, "report_payloads": [
                                     {"r_id": "rid-1", "value": random.random() * 10}]}],
                                 dtstart=now - REPORT_PERIOD)
            self.check(ven.update_report([report]), "oadrUpdatedReport")
        response = ven.post("OadrPoll", self.poll_body)
        if response.status_code != 200:
            raise AssertionError(f"poll: HTTP {response.status_code}: "
                                 f"{response.get_data(as_text=True)[:200]}")
        name, payload = ven.decode_reply(response.get_data())
        self.stats.reply(name)
        if name not in EXPECTED_ON_POLL:
            raise AssertionError(f"unexpected {name} on a poll")
        if name == "oadrDistributeEvent":
            answer = [e["event_descriptor"]["event_id"] for e in payload["events"]
                      if e.get("response_required", "always") == "always"]
            if answer:
                self.check(ven.created_event(payload, "optIn", answer), "oadrResponse")
        elif name == "oadrRegisterReport":
            self.check(ven.registered_report(payload), "oadrResponse")
        elif name == "oadrCreateReport":
            ids = [r["report_request_id"] for r in payload["report_requests"]]
            self.check(ven.created_report(payload["request_id"], ids), "oadrResponse")
        elif name == "oadrCancelReport":
            self.check(ven.canceled_report(payload["request_id"]), "oadrResponse")


class Schedule:
    """The VENs' turns, earliest first, run by a pool of client threads."""

    def __init__(self, vens: list[SimulatedVEN], ramp: float, stats: Stats, stop_at: float):
        start = time.monotonic()
        self.heap = [(start + ramp * i / max(1, len(vens)), i) for i in range(len(vens))]
        heapq.heapify(self.heap)
        self.vens = vens
        self.stats = stats
        self.stop_at = stop_at
        self.lock = threading.Lock()

    def run(self) -> None:
        while True:
            with self.lock:
                due, index = heapq.heappop(self.heap)
            now = time.monotonic()
            if due >= self.stop_at:
                return
            if due > now:
                time.sleep(due - now)
            else:
                with self.stats.lock:
                    self.stats.late.append(now - due)
            ven = self.vens[index]
            try:
                ven.turn()
            except Exception as exc:
                kind = type(exc).__name__
                self.stats.error(kind, f"{ven.ven.ven_name}: {exc}")
                if not isinstance(exc, (AssertionError, urllib3.exceptions.HTTPError)):
                    self.stats.error_samples.append(traceback.format_exc(limit=4))
            # The next turn one poll interval after this one was due: a steady rate, and a late
            # turn does not push the later ones back.
            with self.lock:
                heapq.heappush(self.heap, (due + ven.poll_every, index))


class Operator:
    """Adds, modifies and cancels events for batches of VENs, in a VTN of its own on the store.

    Each batch has at most one live event at a time, so no two events overlap for one VEN; a
    batch's event is added a little ahead, then modified (its level) or cancelled or left to run
    and complete. Completed and cancelled events are removed by the workers' retention."""

    def __init__(self, uri: str, tmp: str, vens: list[SimulatedVEN], every: float,
                 stats: Stats, stop_at: float):
        self.app = Flask("soak_operator", instance_path=os.path.join(tmp, "operator"))
        self.app.config.update(OPENADR_STORE_URI=uri, OPENADR_BACKGROUND="off")
        self.vtn = VTN(self.app)
        self.vens = vens
        self.every = every
        self.stats = stats
        self.stop_at = stop_at
        self.ops: Counter = Counter()
        self.live: dict[int, tuple[str, datetime]] = {}  # batch -> (eventID, end)

    def run(self) -> None:
        rng = random.Random(7)
        while time.monotonic() < self.stop_at:
            time.sleep(self.every)
            batches = (len(self.vens) + BATCH - 1) // BATCH
            batch = rng.randrange(batches)
            ven_ids = [v.ven.ven_id for v in self.vens[batch * BATCH:(batch + 1) * BATCH]
                       if v.registered]
            if not ven_ids:
                continue
            now = datetime.now(timezone.utc)
            try:
                with self.app.app_context():
                    self._step(rng, batch, ven_ids, now)
            except Exception as exc:
                self.stats.error(f"operator {type(exc).__name__}", str(exc))

    def _step(self, rng: random.Random, batch: int, ven_ids: list[str], now: datetime) -> None:
        live = self.live.get(batch)
        if live is not None and live[1] <= now:
            del self.live[batch]  # ran to completion
            live = None
        if live is None:
            # Whole seconds: an xcal duration has no fraction.
            start = now.replace(microsecond=0) + timedelta(seconds=rng.randint(20, 60))
            duration = timedelta(seconds=rng.randint(30, 120))
            event_id = self.vtn.add_event(
                targets={"ven_ids": ven_ids}, signal_name="SIMPLE", signal_type="level",
                intervals=[{"dtstart": start, "duration": duration,
                            "signal_payload": float(rng.randint(1, 3))}])
            self.live[batch] = (event_id, start + duration)
            self.ops["add"] += 1
            return
        event_id, end = live
        if rng.random() < 0.5:
            event = self.vtn.store.get_event(event_id)
            [interval] = event["event_signals"][0]["intervals"]
            level = interval["signal_payload"] % 3 + 1
            try:
                self.vtn.modify_event(event_id, intervals=[{
                    "dtstart": event["active_period"]["dtstart"],
                    "duration": interval["duration"], "signal_payload": level}])
            except EventError as exc:
                self.stats.error("operator modify", str(exc))
            self.ops["modify"] += 1
        else:
            self.vtn.cancel_event(event_id)
            del self.live[batch]
            self.ops["cancel"] += 1


def worker_pids(master: int) -> list[int]:
    try:
        with open(f"/proc/{master}/task/{master}/children", encoding="ascii") as fh:
            return sorted(int(pid) for pid in fh.read().split())
    except FileNotFoundError:
        return []


def rss_mib(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except FileNotFoundError:
        return None
    return None


def file_mib(path: str) -> float:
    return os.path.getsize(path) / 2**20 if os.path.exists(path) else 0.0


def store_size(path: str) -> tuple[float, dict[str, int]]:
    """The SQLite store's size in MiB (file, WAL and shared memory) and its rows per table (with
    the database file and the WAL on their own, in KiB, under "file KiB" and "wal KiB")."""
    size = sum(file_mib(path + suffix) for suffix in ("", "-wal", "-shm"))
    rows: dict[str, int] = {"file KiB": int(file_mib(path) * 1024),
                            "wal KiB": int(file_mib(path + "-wal") * 1024)}
    if not os.path.exists(path):
        return 0.0, rows
    # Reads only; a plain connection, since a read-only one cannot open a WAL file's index.
    connection = sqlite3.connect(path, timeout=30)
    try:
        tables = [name for (name,) in connection.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        if "store_rows" in tables:  # the store on the rules: its tables are values of tbl
            for table, count in connection.execute(
                    "SELECT tbl, COUNT(*) FROM store_rows GROUP BY tbl"):
                rows[table] = count
            for index, count in connection.execute(
                    "SELECT idx, COUNT(*) FROM store_index GROUP BY idx"):
                rows[index] = count
            for kind, count in connection.execute(  # a records partition is [kind, venID]
                    "SELECT json_extract(part, '$[0]'), COUNT(*) FROM store_rows "
                    "WHERE tbl = 'records' GROUP BY 1"):
                rows[f"records:{kind}"] = count
            tables = []
        for table in tables:
            rows[table] = connection.execute(f'SELECT COUNT(*) FROM "{table}"').fetchone()[0]
        if "records" in tables:  # the per-VEN records, by kind: which service keeps what
            for kind, count in connection.execute(
                    "SELECT kind, COUNT(*) FROM records GROUP BY kind"):
                rows[f"records:{kind}"] = count
    finally:
        connection.close()
    return size, rows


def sample_loop(master: int, path: str, stats: Stats, every: float, stop_at: float,
                samples: list[dict]) -> None:
    started = time.monotonic()
    while True:
        now = time.monotonic()
        pids = worker_pids(master)
        size, rows = store_size(path)
        with stats.lock:
            requests, errors = sum(stats.requests.values()), sum(stats.errors.values())
        samples.append({"t": now - started, "rss": {pid: rss_mib(pid) for pid in pids},
                        "size": size, "rows": rows, "requests": requests, "errors": errors})
        if now >= stop_at:
            return
        time.sleep(min(every, max(0.0, stop_at - time.monotonic())))


def summarize(samples: list[dict], warmup: float, stats: Stats, ops: Counter,
              duration: float, vens: int) -> bool:
    after = [s for s in samples if s["t"] >= warmup] or samples[-1:]
    first, last = after[0], samples[-1]
    ok = True
    print()
    print(f"timeline (every sample; warm-up ends at {warmup:.0f} s)")
    tables = sorted(t for t in last["rows"] if ":" not in t and "KiB" not in t)
    short = {t: t.replace("openadr_", "")[:10] for t in tables}
    print(f"{'t s':>6} {'req/s':>7} {'err':>4} " + " ".join(
        f"{'rss' + str(n):>7}" for n in range(len(last["rss"]))) + f" {'MiB':>6} "
        + " ".join(f"{short[t]:>10}" for t in tables))
    previous = None
    for s in samples:
        rate = ((s["requests"] - previous["requests"]) / (s["t"] - previous["t"])
                if previous and s["t"] > previous["t"] else 0.0)
        print(f"{s['t']:6.0f} {rate:7.1f} {s['errors']:4d} " + " ".join(
            f"{(v or 0):7.1f}" for v in s["rss"].values()) + f" {s['size']:6.2f} "
            + " ".join(f"{s['rows'].get(t, 0):10d}" for t in tables))
        previous = s
    print()
    total = stats.total()
    print(f"VENs {vens}, {duration:.0f} s, {total} requests, "
          f"{total / max(1e-9, samples[-1]['t']):.1f} req/s overall")
    print("requests: " + ", ".join(f"{k} {v}" for k, v in sorted(stats.requests.items())))
    print("replies:  " + ", ".join(f"{k} {v}" for k, v in sorted(stats.replies.items())))
    print("operator: " + ", ".join(f"{k} {v}" for k, v in sorted(ops.items())))
    late = sorted(stats.late)
    if late:
        print(f"late VEN turns: {len(late)} of {total}, median {late[len(late) // 2]:.2f} s, "
              f"max {late[-1]:.2f} s (the client kept up when these stay small)")
    errors = sum(stats.errors.values())
    print(f"errors: {errors} " + (json.dumps(dict(stats.errors)) if errors else ""))
    for line in stats.error_samples[:10]:
        print("  " + line)
    ok &= errors == 0

    print()
    print(f"{'worker RSS MiB':<22} {'warm-up end':>12} {'min':>8} {'max':>8} {'end':>8} "
          f"{'end vs warm-up':>15}")
    for pid in first["rss"]:
        values = [s["rss"].get(pid) for s in after if s["rss"].get(pid) is not None]
        if not values or first["rss"][pid] is None:
            continue
        growth = (values[-1] - values[0]) / values[0] * 100
        spread = (max(values) - values[0]) / values[0] * 100
        flat = abs(growth) <= 10 and spread <= 10
        ok &= flat
        print(f"{'pid ' + str(pid):<22} {values[0]:12.1f} {min(values):8.1f} {max(values):8.1f} "
              f"{values[-1]:8.1f} {growth:+14.1f}%  {'flat' if flat else 'GROWS'}")
    if set(first["rss"]) != set(last["rss"]):
        print(f"workers changed: {sorted(first['rss'])} -> {sorted(last['rss'])}")
        ok = False

    # Bounded: after the warm-up (longer than the retention plus an event's life) the store is
    # in its steady state, where the event tables rise and fall as events come and the
    # retention removes them. So the mean of the second half of the samples may not exceed the
    # first half's by more than 10 % (plus a little, for tables of a few rows); means, because
    # a maximum depends on where the samples fall in that saw-tooth.
    print()
    half = len(after) // 2
    early, late_half = after[:max(1, half)], after[max(1, half):] or after[-1:]
    print(f"{'store':<28} {'warm-up end':>12} {'mean 1st half':>14} {'mean 2nd half':>14} "
          f"{'max':>10} {'end':>10}")

    def bounded(name: str, values_early: list[float], values_late: list[float],
                fmt: str, slack: float) -> bool:
        mean_early = sum(values_early) / len(values_early)
        mean_late = sum(values_late) / len(values_late)
        flat = mean_late <= mean_early * 1.10 + slack
        print(f"{name:<28} {values_early[0]:12{fmt}} {mean_early:14.1f} {mean_late:14.1f} "
              f"{max(values_early + values_late):10{fmt}} {values_late[-1]:10{fmt}}  "
              f"{'bounded' if flat else 'GROWS'}")
        return flat

    ok &= bounded("size MiB (file+WAL)", [s["size"] for s in early],
                  [s["size"] for s in late_half], ".2f", 0.5)
    for table in sorted(last["rows"]):
        ok &= bounded(table, [s["rows"].get(table, 0) for s in early],
                      [s["rows"].get(table, 0) for s in late_half], "d", 10)
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vens", type=int, default=1000)
    parser.add_argument("--duration", type=float, default=1800.0, help="seconds of load")
    parser.add_argument("--ramp", type=float, default=60.0,
                        help="seconds over which the VENs register")
    parser.add_argument("--warmup", type=float, default=None,
                        help="seconds before RSS and store size must stay flat (default: the "
                             "retention plus 4 minutes, or a quarter of the duration if longer, "
                             "at most half the duration)")
    parser.add_argument("--retention", type=float, default=180.0,
                        help="OPENADR_EVENT_RETENTION, seconds")
    parser.add_argument("--threads", type=int, default=24, help="client threads")
    parser.add_argument("--operator-every", type=float, default=2.0,
                        help="seconds between two operator actions")
    parser.add_argument("--sample-every", type=float, default=15.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--store", default=None, help="SQLite file (a temporary one by default)")
    args = parser.parse_args()
    # Steady state: the first events have lived (up to 3 minutes) and been removed (retention).
    warmup = args.warmup if args.warmup is not None else min(
        args.duration / 2, max(args.duration / 4, args.retention + 240))

    with tempfile.TemporaryDirectory() as tmp:
        path = args.store or os.path.join(tmp, "soak.sqlite3")
        uri = f"sqlite:///{path}"
        config = {"OPENADR_BACKGROUND": "thread", "OPENADR_EVENT_RETENTION": args.retention,
                  "OPENADR_REPORT_POLICY": "telemetry"}
        gunicorn_args = ["--threads", "4", "--timeout", "60"]
        with serve_poll_app(uri, tmp, workers=args.workers, gunicorn_args=gunicorn_args,
                            BENCH_CONFIG=json.dumps(config)) as port:
            master = None
            for pid in map(int, filter(str.isdigit, os.listdir("/proc"))):
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as fh:
                        if f"127.0.0.1:{port}".encode() in fh.read() and worker_pids(pid):
                            master = pid
                            break
                except OSError:
                    continue
            if master is None:
                raise RuntimeError("could not find the gunicorn master")
            stats = Stats()
            pool = urllib3.HTTPConnectionPool("127.0.0.1", port, maxsize=args.threads,
                                              block=True)
            client = PoolClient(pool, stats)
            vens = [SimulatedVEN(i, client, stats) for i in range(args.vens)]
            stop_at = time.monotonic() + args.duration
            schedule = Schedule(vens, args.ramp, stats, stop_at)
            operator = Operator(uri, tmp, vens, args.operator_every, stats, stop_at)
            samples: list[dict] = []
            threads = [threading.Thread(target=schedule.run, daemon=True)
                       for _ in range(args.threads)]
            threads.append(threading.Thread(target=operator.run, daemon=True))
            sampler = threading.Thread(target=sample_loop, daemon=True,
                                       args=(master, path, stats, args.sample_every, stop_at,
                                             samples))
            print(f"soak: {args.vens} VENs, {args.duration:.0f} s, {args.workers} workers, "
                  f"store {path}, retention {args.retention:.0f} s, warm-up {warmup:.0f} s",
                  flush=True)
            for thread in [*threads, sampler]:
                thread.start()
            sampler.join()
            for thread in threads:
                thread.join(timeout=60)
            unregistered = sum(1 for v in vens if not v.registered)
            if unregistered:
                stats.error("unregistered", f"{unregistered} VENs never registered")
        ok = summarize(samples, warmup, stats, operator.ops, args.duration, args.vens)
    print()
    print("verdict:", "ok" if ok else "FAILED (see above)")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
