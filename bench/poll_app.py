"""The application bench_poll_sweep.py serves with gunicorn: a VTN plus two bench-only routes.

``POST /bench/setup?n=N`` registers N VENs through the app's own test client (so the memory
store, which lives in the worker, gets them too), drains their first poll and returns the venIDs.
``GET /bench/cpu`` returns this worker's CPU time, which the bench reads before and after a load,
and ``workers_cpu``, the CPU time of every worker of its gunicorn (all their threads).
``POST /bench/events`` (an operator's endpoint, for bench_push.py) adds one event for each venID
of its JSON list and returns their eventIDs, when the adds began and ended and the adding
thread's own CPU time; ``POST /bench/cancel`` cancels the events of its list and answers alike.

``BENCH_PROFILE`` (any value) samples the stacks of this worker's threads (requests, push and sweeper) every
5 ms; ``GET /bench/profile`` returns the functions seen most, on top of the stack (self) and
anywhere in it (inclusive), for the worker that answers.

``BENCH_CONFIG`` (a JSON object) adds to or overrides the app's config, such as
``{"OPENADR_BACKGROUND": "thread"}`` for a VTN whose workers run the push sender.
"""
from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections import Counter
from datetime import datetime, timedelta, timezone

from flask import Flask, jsonify, request

from flask_openadr import VTN
from flask_openadr.testing import VENTestClient


def create_app() -> Flask:
    app = Flask("bench_vtn", instance_path=os.environ["BENCH_INSTANCE"])
    app.config.update(OPENADR_STORE_URI=os.environ["BENCH_STORE_URI"], OPENADR_VTN_ID="BENCH-VTN",
                      OPENADR_BACKGROUND="off",
                      # The bench load comes over plain HTTP on loopback, without TLS, so there
                      # are no client certificates: VENs are told apart by venID alone.
                      OPENADR_REQUIRE_CLIENT_CERT=False)
    if os.environ.get("BENCH_SIGNING_CERT"):  # bench_signature.py: a VTN that signs
        app.config.update(OPENADR_SIGNING_CERT=os.environ["BENCH_SIGNING_CERT"],
                          OPENADR_SIGNING_KEY=os.environ["BENCH_SIGNING_KEY"])
    app.config.update(json.loads(os.environ.get("BENCH_CONFIG", "{}")))
    vtn = VTN(app)

    @app.post("/bench/setup")
    def setup():
        client = app.test_client()
        ven_ids = []
        for i in range(int(request.args["n"])):
            # No certificate, like the load that polls for these VENs later.
            ven = VENTestClient(client, ven_name=f"bench-{i}", certificate=None)
            ven.register()
            _, metadata = ven.poll()  # the METADATA report, acknowledged: later polls find
            ven.registered_report(metadata)  # nothing pending (nor anything to send again)
            ven_ids.append(ven.ven_id)
        return jsonify(ven_ids=ven_ids)

    @app.get("/bench/cpu")
    def cpu():
        return jsonify(cpu=time.process_time(), pid=os.getpid(), workers_cpu=workers_cpu())

    if os.environ.get("BENCH_PROFILE"):
        sampler = Sampler()

        @app.before_request
        def start_sampler():
            sampler.start()  # in the worker, after the fork

        @app.get("/bench/profile")
        def profile():
            return jsonify({"pid": os.getpid(), **sampler.top()})

    @app.post("/bench/events")
    def add_events():
        # Each event an hour from now, for one VEN: the sender pushes it as soon as it is added.
        start = datetime.now(timezone.utc) + timedelta(hours=1)
        ven_ids = request.get_json()
        cpu_before, began = time.thread_time(), time.monotonic()
        event_ids = [vtn.add_event(ven_id, signal_name="SIMPLE", signal_type="level", intervals=[{
            "dtstart": start, "duration": timedelta(minutes=30), "signal_payload": 1.0}])
            for ven_id in ven_ids]
        return jsonify(began=began, ended=time.monotonic(), event_ids=event_ids,
                       cpu=time.thread_time() - cpu_before)

    @app.post("/bench/cancel")
    def cancel_events():
        # Each cancellation is pushed to the event's VEN, as an addition is.
        cpu_before, began = time.thread_time(), time.monotonic()
        for event_id in request.get_json():
            vtn.cancel_event(event_id)
        return jsonify(began=began, ended=time.monotonic(), cpu=time.thread_time() - cpu_before)

    return app


def workers_cpu() -> float:
    """CPU seconds (user and system, every thread) of all workers of this worker's gunicorn
    master, from /proc: a request reaches one worker, the push sender runs in all of them."""
    master = os.getppid()
    with open(f"/proc/{master}/task/{master}/children", encoding="ascii") as fh:
        pids = [int(pid) for pid in fh.read().split()]
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue  # a worker that just exited
        total += int(fields[11]) + int(fields[12])  # utime and stime, in clock ticks
    return total / os.sysconf("SC_CLK_TCK")


#: Where a thread waits for work (the top Python frame while it blocks in C).
IDLE = {("thread.py", "_worker"), ("sync.py", "wait"), ("selectors.py", "select")}


class Sampler:
    """A sampling profiler of the busy threads of this process, built on sys._current_frames
    (cProfile follows one thread; the sender runs on several)."""

    INTERVAL = 0.005

    def __init__(self) -> None:
        self.samples = 0
        self.self_counts: Counter = Counter()
        self.inclusive: Counter = Counter()
        self._pid: int | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        if self._pid != os.getpid():
            self._pid = os.getpid()
            threading.Thread(target=self._run, daemon=True, name="bench-sampler").start()

    def _run(self) -> None:
        while True:
            time.sleep(self.INTERVAL)
            names = {t.ident: t.name for t in threading.enumerate()}
            with self._lock:
                self._sample(names)

    def _sample(self, names: dict) -> None:
        for ident, frame in sys._current_frames().items():
            if names.get(ident) == "bench-sampler":
                continue
            if (os.path.basename(frame.f_code.co_filename), frame.f_code.co_name) in IDLE or \
                    os.path.basename(frame.f_code.co_filename) in ("threading.py", "queue.py"):
                continue  # an idle thread, waiting for work
            self.samples += 1
            seen = set()
            top = True
            while frame is not None:
                code = frame.f_code
                key = f"{os.path.basename(code.co_filename)}:{code.co_name}"
                if top:
                    self.self_counts[key] += 1
                    top = False
                if key not in seen:
                    seen.add(key)
                    self.inclusive[key] += 1
                frame = frame.f_back

    def top(self, n: int = 25) -> dict:
        with self._lock:
            return {"samples": self.samples, "self": self.self_counts.most_common(n),
                    "inclusive": self.inclusive.most_common(n)}
