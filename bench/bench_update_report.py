"""Benchmark: oadrUpdateReport handling with 10, 100 and 1,000 data points per report.

Runs in one process through the Flask test client (no sockets, no HTTP server): each request
goes through the whole VTN pipeline - blueprint view, hardened parse, schema-driven decode,
authentication, the report service, an ``on_update_report`` handler that reads every value, and
the encoding of the oadrUpdatedReport reply. The bodies are encoded once beforehand, so the
client side costs little; CPU is ``time.process_time`` of this process (client and server
together, so an upper bound for the server). ``--direct`` calls the WSGI application itself, as
a server would, which leaves out the test client's own work.

A data point is one ``oadrReportPayload``: the report has N intervals, each with its own
dtstart, duration, uid and one payloadFloat value, the layout telemetry reports from VENs use.

    python bench/bench_update_report.py                  # memory:// and sqlite, 10/100/1000
    python bench/bench_update_report.py --store sqlite --points 100 --seconds 5
    python bench/bench_update_report.py --direct         # the VTN's own CPU, no test client
    python bench/bench_update_report.py --profile 100    # cProfile of the 100-point case
"""
from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from flask import Flask  # noqa: E402
from werkzeug.test import EnvironBuilder  # noqa: E402

from flask_openadr import VTN, codec  # noqa: E402
from flask_openadr.testing import VENTestClient, data_point, metadata_report  # noqa: E402

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)
STEP = timedelta(seconds=10)


def setup(store_uri: str, instance: str):
    """An app whose VEN registered a TELEMETRY_USAGE report the VTN subscribed to."""
    app = Flask("bench", instance_path=instance)
    app.config.update(OPENADR_STORE_URI=store_uri, OPENADR_REPORT_POLICY="telemetry",
                      OPENADR_BACKGROUND="off")
    vtn = VTN(app)
    totals = {"points": 0}

    @vtn.on_update_report
    def update(ven_id, report):
        points = 0
        for interval in report["intervals"]:
            for value in interval["values"]:
                points += 1 if value["value"] is not None else 0
        totals["points"] += points

    ven = VENTestClient(app.test_client(), ven_name="bench-ven")
    ven.register()
    ven.poll()
    meta = metadata_report("spec-usage", "TELEMETRY_USAGE", [
        data_point("rid-power", min_period=STEP, max_period=STEP)])
    _, reply = ven.register_report([meta])
    [request] = reply["report_requests"]
    ven.created_report(reply["response"]["request_id"], [request["report_request_id"]])
    return app, ven, request["report_request_id"], totals


def body(ven_id: str, report_request_id: str, points: int) -> bytes:
    intervals = [{"dtstart": T0 + i * STEP, "duration": STEP, "uid": str(i),
                  "report_payloads": [{"r_id": "rid-power", "value": 1000.0 + i * 0.25}]}
                 for i in range(points)]
    return codec.encode("oadrUpdateReport", {
        "request_id": "bench", "ven_id": ven_id,
        "reports": [{"dtstart": T0, "duration": points * STEP, "intervals": intervals,
                     "report_id": "r-1", "report_request_id": report_request_id,
                     "report_specifier_id": "spec-usage", "report_name": "TELEMETRY_USAGE",
                     "created_date_time": T0 + points * STEP}]})


def post(ven, data: bytes) -> None:
    response = ven.post("EiReport", data)
    if response.status_code != 200 or b"<ei:responseCode>200<" not in response.get_data():
        raise SystemExit(f"unexpected reply: {response.status_code} {response.get_data()[:300]!r}")


def direct_poster(app, ven, data: bytes):
    """A post() that calls the WSGI application as a server would, without the test client:
    a fresh environ and body stream per request, the response body read and checked. What it
    measures is the VTN's own work (Flask, the pipeline, the store)."""
    # The VEN's client certificate as a TLS server would pass it on: identifying the caller is
    # part of the VTN's work.
    base = EnvironBuilder(path=f"{ven.url_prefix}/EiReport", method="POST", data=data,
                          content_type="application/xml",
                          environ_base={"SSL_CLIENT_CERT": ven.certificate.pem}).get_environ()

    def start_response(status, headers, exc_info=None):
        if not status.startswith("200"):
            raise SystemExit(f"unexpected status {status}")

    def post_direct(_ven, body: bytes) -> None:
        environ = dict(base, **{"wsgi.input": io.BytesIO(body)})
        reply = b"".join(app(environ, start_response))
        if b"<ei:responseCode>200<" not in reply:
            raise SystemExit(f"unexpected reply: {reply[:300]!r}")

    return post_direct


def measure(ven, data: bytes, seconds: float, send=post) -> tuple[int, float, float]:
    """(requests, wall seconds, CPU seconds) over at least ``seconds`` of wall time."""
    for _ in range(5):
        send(ven, data)  # warm-up
    count = 0
    wall0, cpu0 = time.perf_counter(), time.process_time()
    while True:
        for _ in range(10):
            send(ven, data)
        count += 10
        wall = time.perf_counter() - wall0
        if wall >= seconds:
            return count, wall, time.process_time() - cpu0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", choices=["memory", "sqlite", "both"], default="both")
    parser.add_argument("--points", type=int, nargs="*", default=[10, 100, 1000])
    parser.add_argument("--seconds", type=float, default=3.0, help="wall time per measurement")
    parser.add_argument("--repeat", type=int, default=3, help="measurements per case (best)")
    parser.add_argument("--direct", action="store_true",
                        help="call the WSGI app directly instead of through the test client, "
                             "so the figures are the VTN's own CPU")
    parser.add_argument("--profile", type=int, metavar="POINTS",
                        help="profile this many points per report instead of measuring")
    args = parser.parse_args()
    stores = ["memory", "sqlite"] if args.store == "both" else [args.store]

    with tempfile.TemporaryDirectory() as tmp:
        if args.profile:
            app, ven, rr_id, _ = setup("memory://", tmp)
            data = body(ven.ven_id, rr_id, args.profile)
            profiler = cProfile.Profile()
            profiler.enable()
            for _ in range(200):
                post(ven, data)
            profiler.disable()
            pstats.Stats(profiler).sort_stats("cumulative").print_stats(30)
            return
        print(f"{'store':8} {'points':>7} {'req/s':>9} {'ms/req':>8} {'CPU ms/req':>11} "
              f"{'CPU us/point':>13} {'points/s':>10}")
        for store in stores:
            uri = "memory://" if store == "memory" else f"sqlite:///{tmp}/bench-{store}.sqlite3"
            app, ven, rr_id, totals = setup(uri, tmp)
            for points in args.points:
                data = body(ven.ven_id, rr_id, points)
                send = direct_poster(app, ven, data) if args.direct else post
                runs = [measure(ven, data, args.seconds, send) for _ in range(args.repeat)]
                # Best of the runs, as timeit does: other processes only ever slow a run down.
                rate = max(n / wall for n, wall, _ in runs)
                cpu = min(c / n for n, _, c in runs)
                print(f"{store:8} {points:7d} {rate:9.0f} {1000 / rate:8.2f} {cpu * 1000:11.2f} "
                      f"{cpu * 1e6 / points:13.1f} {rate * points:10.0f}")
            assert totals["points"] > 0


if __name__ == "__main__":
    main()
