"""Poll cost and offline-sweep time per store backend.

Polls: gunicorn with one sync worker serves bench/poll_app.py; 1,000 VENs are registered; client
threads in this process send oadrPoll for random VENs (nothing pending, the common case) for a
fixed time. Reported: requests per second, and the worker's CPU time per request (read from the
worker itself before and after, so the load generator's CPU is not counted).

Sweep: 100,000 VENs are marked seen, 1% of them with an offline deadline in the past; one call
of liveness.sweep() must find and switch exactly those 1,000, and is timed.

    python bench/bench_poll_sweep.py                      # every backend that is reachable
    python bench/bench_poll_sweep.py --backends sqlite --sweep-vens 10000

Targets (issue 3): the sweep over 100,000 VENs under 1 s on SQLite and PostgreSQL; SQLite polls
at most 1.5x the CPU of memory polls.
"""
from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta, timezone

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from flask import Flask  # noqa: E402

from flask_openadr import VTN, codec  # noqa: E402
from flask_openadr.services import liveness  # noqa: E402


def backend_uris(tmp: str) -> dict[str, str]:
    """Fresh, empty stores: a new file, key prefix or table prefix at each call."""
    tag = uuid.uuid4().hex[:8]
    return {
        "memory": "memory://",
        "sqlite": f"sqlite:///{tmp}/bench-{tag}.sqlite3",
        "redis": f"redis://127.0.0.1:6379/0?prefix=bench-{tag}:",
        "postgresql": f"postgresql+psycopg://postgres@127.0.0.1:5432/test?table_prefix=bench_{tag}_",
    }


def reachable(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


SERVER_PORTS = {"redis": 6379, "postgresql": 5432}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(port: int, method: str, path: str, body: bytes | None = None,
            content_type: str = "application/xml") -> bytes:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": content_type})
        response = conn.getresponse()
        data = response.read()
        if response.status != 200:
            raise RuntimeError(f"{method} {path}: HTTP {response.status}: {data[:200]!r}")
        return data
    finally:
        conn.close()


@contextlib.contextmanager
def serve_poll_app(uri: str, tmp: str, *, workers: int = 1, gunicorn_args: Sequence[str] = (),
                   **env: str) -> Iterator[int]:
    """gunicorn with ``workers`` sync workers serving bench/poll_app.py on ``uri``; yields its
    port.

    ``gunicorn_args``: more command-line arguments of gunicorn (such as ``-c hooks.py``).
    ``env``: more BENCH_* settings of poll_app (such as BENCH_SIGNING_CERT)."""
    port = free_port()
    env = dict(os.environ, BENCH_STORE_URI=uri, BENCH_INSTANCE=os.path.join(tmp, "instance"),
               PYTHONPATH=ROOT, **env)
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--workers", str(workers), "--bind", f"127.0.0.1:{port}",
         "--chdir", HERE, "--log-level", "warning", *gunicorn_args, "poll_app:create_app()"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        start_new_session=True)  # its own process group, to stop workers that hang
    try:
        deadline = time.monotonic() + 30
        while not reachable(port):
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("gunicorn did not start")
            time.sleep(0.1)
        yield port
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:  # a worker still busy with a request
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=10)


def bench_polls(uri: str, tmp: str, vens: int, seconds: float, threads: int) -> dict:
    with serve_poll_app(uri, tmp) as port:
        ven_ids = json.loads(request(port, "POST", f"/bench/setup?n={vens}"))["ven_ids"]
        bodies = [codec.encode("oadrPoll", {"ven_id": v}) for v in ven_ids]
        path = "/OpenADR2/Simple/2.0b/OadrPoll"
        for body in bodies[:20]:  # warm up
            request(port, "POST", path, body)
        rngs = [random.Random(slot) for slot in range(threads)]

        def send(slot: int) -> None:
            reply = request(port, "POST", path, rngs[slot].choice(bodies))
            assert b"oadrResponse" in reply

        total, wall, cpu = run_load(port, threads, seconds, send)
        return {"polls": total, "polls_per_s": total / wall, "cpu_ms_per_poll": cpu * 1000 / total}


def run_load(port: int, threads: int, seconds: float,
             send: Callable[[int], None]) -> tuple[int, float, float]:
    """Call ``send(slot)`` in a loop in each of ``threads`` client threads for ``seconds``;
    returns (requests sent, wall seconds, the poll_app worker's own CPU seconds meanwhile)."""
    counts = [0] * threads
    stop_at = time.monotonic() + seconds
    before = json.loads(request(port, "GET", "/bench/cpu"))["cpu"]

    def load(slot: int) -> None:
        while time.monotonic() < stop_at:
            send(slot)
            counts[slot] += 1

    workers = [threading.Thread(target=load, args=(i,)) for i in range(threads)]
    started = time.monotonic()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    wall = time.monotonic() - started
    after = json.loads(request(port, "GET", "/bench/cpu"))["cpu"]
    return sum(counts), wall, after - before


def bench_sweep(uri: str, tmp: str, vens: int, quiet_share: float) -> dict:
    app = Flask("bench_sweep", instance_path=os.path.join(tmp, "sweep-instance"))
    app.config.update(OPENADR_STORE_URI=uri, OPENADR_BACKGROUND="off")
    offline = []
    vtn = VTN(app)
    vtn.on_ven_offline(lambda ven_id: offline.append(ven_id))
    t0 = datetime(2030, 1, 1, tzinfo=timezone.utc)
    quiet = int(vens * quiet_share)
    with app.app_context():
        ctx = app.extensions["openadr"].context
        store = ctx.store
        fill_started = time.monotonic()
        for i in range(vens):
            ven_id = f"sweep-{i:06d}"
            # Registered, or the sweep retires it silently instead of calling on_ven_offline.
            store.put_ven({"ven_id": ven_id, "registration_id": f"reg-{i}",
                           "poll_frequency": timedelta(seconds=10), "group_ids": [],
                           "resource_ids": [], "party_ids": []})
            # The quiet ones are due 10 s after t0; the rest an hour later.
            offline_at = t0 + (timedelta(seconds=10) if i < quiet else timedelta(hours=1))
            transition = store.record_seen(ven_id, t0, offline_at, t0 + timedelta(seconds=60))
            store.complete_transition(ven_id, transition["epoch"])
        fill = time.monotonic() - fill_started
        started = time.perf_counter()
        switched = liveness.sweep(ctx, now=t0 + timedelta(seconds=30))
        elapsed = time.perf_counter() - started
        states = store.list_liveness() if vens <= 20000 else None
    if switched != quiet or len(offline) != quiet:
        raise AssertionError(f"the sweep switched {switched} VENs and called on_ven_offline "
                             f"{len(offline)} times, expected {quiet}")
    if states is not None:
        offline = sum(1 for row in states.values() if row["state"] == "offline")
        assert offline == quiet, (offline, quiet)
    return {"sweep_vens": vens, "went_quiet": quiet, "sweep_s": elapsed, "fill_s": fill}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default="memory,sqlite,redis,postgresql")
    parser.add_argument("--vens", type=int, default=1000, help="registered VENs for the polls")
    parser.add_argument("--seconds", type=float, default=5.0, help="poll load duration")
    parser.add_argument("--threads", type=int, default=4, help="concurrent pollers")
    parser.add_argument("--sweep-vens", type=int, default=100_000)
    parser.add_argument("--quiet-share", type=float, default=0.01)
    parser.add_argument("--skip-polls", action="store_true")
    parser.add_argument("--skip-sweep", action="store_true")
    args = parser.parse_args()
    results = {}
    for name in args.backends.split(","):
        if name in SERVER_PORTS and not reachable(SERVER_PORTS[name]):
            print(f"{name}: skipped, no server on 127.0.0.1:{SERVER_PORTS[name]}", flush=True)
            continue
        with tempfile.TemporaryDirectory() as tmp:
            uris = backend_uris(tmp)
            row = {}
            if not args.skip_polls:
                row.update(bench_polls(uris[name], tmp, args.vens, args.seconds, args.threads))
            if not args.skip_sweep:
                uris = backend_uris(tmp)  # a fresh namespace for the sweep
                row.update(bench_sweep(uris[name], tmp, args.sweep_vens, args.quiet_share))
            results[name] = row
            print(name, json.dumps({k: round(v, 4) if isinstance(v, float) else v
                                    for k, v in row.items()}), flush=True)
    if "memory" in results and "sqlite" in results and "cpu_ms_per_poll" in results["memory"]:
        ratio = results["sqlite"]["cpu_ms_per_poll"] / results["memory"]["cpu_ms_per_poll"]
        print(f"sqlite/memory CPU per poll: {ratio:.2f}x (target <= 1.5x)")
    for name in ("sqlite", "postgresql"):
        if name in results and "sweep_s" in results[name]:
            verdict = "ok" if results[name]["sweep_s"] < 1.0 else "MISSED"
            print(f"{name} sweep over {results[name]['sweep_vens']} VENs: "
                  f"{results[name]['sweep_s']:.3f} s (target < 1 s: {verdict})")


if __name__ == "__main__":
    main()
