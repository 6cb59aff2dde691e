"""Delivery at scale: an empty poll in a crowded store against an empty one, the same poll
against a Flask app that answers a fixed oadrResponse, and one event for a 100,000-VEN group.

Polls: gunicorn with one sync worker serves bench/poll_app.py; 200 pollers register through it
(and acknowledge the VTN's METADATA), so each later poll finds nothing to send. For the crowded
run, this process then fills the same store with ``--vens`` more registered VENs and
``--events`` events aimed at them (95% over, 5% still to come), written straight into the store.
Client threads poll random pollers for ``--seconds``; reported is the worker's own CPU time per
poll (read from the worker before and after, so the load generator is not counted). The same
load against bench/fixed_app.py gives the floor of Flask and gunicorn alone. ``--floor`` also
measures bench/floor_app.py, which does only what any VTN must do per poll (parse and decode the
XML, read the VEN, record it as seen in one SQLite transaction, look for pending messages).

Fan-out: ``--group-vens`` VENs in one group, then one ``add_event`` for that group, timed.

    python bench/bench_delivery.py                               # every reachable backend
    python bench/bench_delivery.py --backends sqlite --vens 20000 --events 20000

Targets (issue 8): crowded within 1.2x of empty on SQLite, PostgreSQL and Redis; SQLite empty
poll at most 1.3x the fixed app; the group event under 10 s on SQLite and PostgreSQL.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

from bench_poll_sweep import (  # noqa: E402
    SERVER_PORTS,
    backend_uris,
    free_port,
    reachable,
    request,
    run_load,
)

from flask_openadr import codec  # noqa: E402
from flask_openadr.services import events  # noqa: E402
from flask_openadr.config import Settings  # noqa: E402
from flask_openadr.services.context import Context  # noqa: E402
from flask_openadr.store import open_store  # noqa: E402

POLL_PATH = "/OpenADR2/Simple/2.0b/OadrPoll"
CHUNK = 2000


class Server:
    """gunicorn with one sync worker serving ``module:create_app()`` on a free port."""

    def __init__(self, module: str, uri: str | None, tmp: str):
        self.port = free_port()
        env = dict(os.environ, BENCH_INSTANCE=os.path.join(tmp, "instance"), PYTHONPATH=ROOT)
        if uri is not None:
            env["BENCH_STORE_URI"] = uri
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--workers", "1", "--timeout", "600",
             "--bind", f"127.0.0.1:{self.port}", "--chdir", HERE, "--log-level", "warning",
             f"{module}:create_app()"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while not reachable(self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("gunicorn did not start")
            time.sleep(0.1)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def remove(uri: str) -> None:
    """Drop what a run wrote under its own table prefix or key prefix (a shared server keeps
    nothing of the benchmark). SQLite files go with the temporary directory."""
    if uri.startswith("postgresql"):
        import psycopg

        prefix = uri.partition("table_prefix=")[2].partition("&")[0]
        libpq = "postgresql://" + uri.partition("://")[2].partition("?")[0]
        with psycopg.connect(libpq, autocommit=True) as connection:
            names = [name for (name,) in connection.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() "
                "AND starts_with(tablename, %s)", (prefix,))]
            if names:
                connection.execute("DROP TABLE IF EXISTS "
                                   + ", ".join(f'"{name}"' for name in names) + " CASCADE")
    elif uri.startswith("redis"):
        import redis

        prefix = uri.partition("prefix=")[2].partition("&")[0]
        client = redis.Redis.from_url(uri.partition("?")[0])
        try:
            for key in client.scan_iter(match=prefix + "*", count=1000):
                client.unlink(key)
        finally:
            client.close()


def load(port: int, bodies: list[bytes], seconds: float, threads: int) -> dict:
    for body in bodies[:20]:  # warm up
        request(port, "POST", POLL_PATH, body)
    rngs = [random.Random(slot) for slot in range(threads)]

    def send(slot: int) -> None:
        reply = request(port, "POST", POLL_PATH, rngs[slot].choice(bodies))
        assert b"oadrResponse" in reply, reply[:200]

    total, wall, cpu = run_load(port, threads, seconds, send)
    return {"polls_per_s": total / wall, "cpu_ms_per_poll": cpu * 1000 / total}


def fill(uri: str, vens: int, events_count: int) -> float:
    """Write ``vens`` registered VENs and ``events_count`` events aimed at them (95% over, 5% to
    come) straight into the store; the seconds it took."""
    store = open_store(uri)
    now = datetime.now(timezone.utc)
    started = time.monotonic()
    try:
        for start in range(0, vens, CHUNK):
            with store.atomic():
                for n in range(start, min(vens, start + CHUNK)):
                    store.put_ven({"ven_id": f"crowd-{n:06d}", "registration_id": f"reg-{n}",
                                   "report_only": False, "group_ids": ["crowd"],
                                   "resource_ids": [], "party_ids": [],
                                   "http_pull_model": True})
        for start in range(0, events_count, CHUNK):
            with store.atomic():
                for n in range(start, min(events_count, start + CHUNK)):
                    begins = now + timedelta(days=1) if n % 20 == 0 else \
                        now - timedelta(days=1 + n % 300)
                    store.put_event(events.build_event(
                        event_id=f"crowd-event-{n:06d}", ven_id=f"crowd-{n % max(vens, 1):06d}",
                        signal_name="SIMPLE", signal_type="level",
                        market_context="http://bench.example", intervals=[
                            {"dtstart": begins, "duration": timedelta(hours=1),
                             "signal_payload": 1.0}]))
    finally:
        store.close()
    return time.monotonic() - started


def bench_polls(name: str, tmp: str, args: argparse.Namespace) -> dict:
    row: dict = {}
    for label in ("empty", "crowded"):
        uri = backend_uris(tmp)[name]
        server = Server("poll_app", uri, tmp)
        try:
            ven_ids = json.loads(request(server.port, "POST",
                                         f"/bench/setup?n={args.pollers}"))["ven_ids"]
            if label == "crowded":
                row["fill_s"] = fill(uri, args.vens, args.events)
            bodies = [codec.encode("oadrPoll", {"ven_id": v}) for v in ven_ids]
            result = load(server.port, bodies, args.seconds, args.threads)
        finally:
            server.stop()
            remove(uri)
        row[f"{label}_cpu_ms"] = result["cpu_ms_per_poll"]
        row[f"{label}_polls_per_s"] = result["polls_per_s"]
    row["crowded/empty"] = row["crowded_cpu_ms"] / row["empty_cpu_ms"]
    return row


def bench_fixed(tmp: str, args: argparse.Namespace, module: str = "fixed_app") -> dict:
    server = Server(module, None, tmp)
    try:
        bodies = [codec.encode("oadrPoll", {"ven_id": f"v{n}"})
                  for n in range(min(args.pollers, 200))]  # floor_app knows v0 ... v199
        return load(server.port, bodies, args.seconds, args.threads)
    finally:
        server.stop()


def bench_group(name: str, tmp: str, group_vens: int) -> dict:
    uri = backend_uris(tmp)[name]
    store = open_store(uri)
    try:
        for start in range(0, group_vens, CHUNK):
            with store.atomic():
                for n in range(start, min(group_vens, start + CHUNK)):
                    store.put_ven({"ven_id": f"group-{n:06d}", "registration_id": f"reg-{n}",
                                   "report_only": False, "group_ids": ["north"],
                                   "resource_ids": [], "party_ids": []})
        ctx = Context(settings=Settings(), store=store)
        start = datetime.now(timezone.utc) + timedelta(hours=1)
        started = time.perf_counter()
        events.add_event(ctx, events.build_event(
            event_id="group-event", targets={"group_ids": ["north"]}, signal_name="SIMPLE",
            signal_type="level", market_context="http://bench.example", intervals=[
                {"dtstart": start, "duration": timedelta(hours=1), "signal_payload": 1.0}]))
        elapsed = time.perf_counter() - started
        due = store.get_delivered_many([f"group-{n:06d}" for n in range(0, group_vens, 997)])
        assert all("group-event" in record["events"] for record in due.values())
    finally:
        store.close()
        remove(uri)
    return {"group_vens": group_vens, "group_event_s": elapsed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default="sqlite,postgresql,redis")
    parser.add_argument("--vens", type=int, default=100_000, help="VENs in the crowded store")
    parser.add_argument("--events", type=int, default=100_000, help="events in the crowded store")
    parser.add_argument("--pollers", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--group-vens", type=int, default=100_000)
    parser.add_argument("--skip-polls", action="store_true")
    parser.add_argument("--skip-group", action="store_true")
    parser.add_argument("--floor", action="store_true",
                        help="also measure bench/floor_app.py (what any VTN must do per poll)")
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_polls:
            results["fixed"] = bench_fixed(tmp, args)
            print("fixed", json.dumps({k: round(v, 4) for k, v in results["fixed"].items()}),
                  flush=True)
            if args.floor:
                results["floor"] = bench_fixed(tmp, args, "floor_app")
                print("floor", json.dumps({k: round(v, 4) for k, v in results["floor"].items()}),
                      flush=True)
        for name in args.backends.split(","):
            if name in SERVER_PORTS and not reachable(SERVER_PORTS[name]):
                print(f"{name}: skipped, no server on 127.0.0.1:{SERVER_PORTS[name]}", flush=True)
                continue
            row = {}
            if not args.skip_polls:
                row.update(bench_polls(name, tmp, args))
            if not args.skip_group and name in ("sqlite", "postgresql", "redis"):
                row.update(bench_group(name, tmp, args.group_vens))
            results[name] = row
            print(name, json.dumps({k: round(v, 4) if isinstance(v, float) else v
                                    for k, v in row.items()}), flush=True)
    if "fixed" in results and "empty_cpu_ms" in results.get("sqlite", {}):
        ratio = results["sqlite"]["empty_cpu_ms"] / results["fixed"]["cpu_ms_per_poll"]
        print(f"sqlite empty poll / fixed app CPU: {ratio:.2f}x (target <= 1.3x)")
    if "fixed" in results and "floor" in results:
        ratio = results["floor"]["cpu_ms_per_poll"] / results["fixed"]["cpu_ms_per_poll"]
        print(f"floor app (what any VTN must do) / fixed app CPU: {ratio:.2f}x")


if __name__ == "__main__":
    main()
