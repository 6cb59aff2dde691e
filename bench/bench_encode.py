"""Encoding cost: codec.encode (the compiled writer) against the generic engine, per message.

For an oadrDistributeEvent of 1 event of 1 interval and of 10 events of 24 intervals (as a push
sends them: no eiResponse, intervals as the VTN stores them, a target of one venID), an oadrResponse (a poll's empty reply, and one
answering a request) and an oadrRegisteredReport (with and without a report request), the time
of one call of:

* ``generic``: ``etree.tostring(encode_element(...))``, the tree path (what ``codec.encode``
  did for every payload but a poll's oadrResponse before the compiled writer);
* ``encode``: ``codec.encode``.

Each round times both in turn (interleaved, so both see the same load), for ``--rounds`` rounds;
the best round of each is printed, in microseconds per call, with the load average.

    python bench/bench_encode.py
    python bench/bench_encode.py --rounds 9 --seconds 0.3
    python bench/bench_encode.py --only distribute-10x24 --calls 1000  # one function, for callgrind
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # this checkout's flask_openadr

from lxml import etree  # noqa: E402

from flask_openadr import codec  # noqa: E402
from flask_openadr.codec.convert import encode_element  # noqa: E402

T0 = datetime(2026, 7, 1, 12, 0, tzinfo=timezone.utc)


def distribute(events: int, intervals: int) -> dict[str, Any]:
    return {"request_id": "9f1c2e7a4b6d8e0f", "vtn_id": "vtn-1", "events": [{
        "event_descriptor": {
            "event_id": f"event-{n}", "modification_number": 2, "modification_date_time": T0,
            "priority": 1, "market_context": "http://market.example/program-1",
            "created_date_time": T0 + timedelta(seconds=n), "event_status": "far",
            "test_event": "false", "vtn_comment": ""},
        "active_period": {"dtstart": T0 + timedelta(hours=1),
                          "duration": timedelta(hours=intervals),
                          "notification": timedelta(days=1)},
        "event_signals": [{
            "intervals": [{"duration": timedelta(hours=1), "uid": str(i),
                           "signal_payload": 1.0 + i % 3} for i in range(intervals)],
            "signal_name": "SIMPLE", "signal_type": "level", "signal_id": f"signal-{n}",
            "current_value": 0.0}],
        "target": {"ven_ids": ["ven-0001"]}, "response_required": "always"}
        for n in range(events)]}


PAYLOADS: dict[str, tuple[str, dict[str, Any]]] = {
    "distribute-1x1": ("oadrDistributeEvent", distribute(1, 1)),
    "distribute-10x24": ("oadrDistributeEvent", distribute(10, 24)),
    "response-poll": ("oadrResponse", {"response": {
        "response_code": 200, "response_description": "OK", "request_id": ""},
        "ven_id": "ven-0001"}),
    "response": ("oadrResponse", {"response": {
        "response_code": 200, "response_description": "OK", "request_id": "req-42"},
        "ven_id": "ven-0001"}),
    "registered-report": ("oadrRegisteredReport", {"response": {
        "response_code": 200, "response_description": "OK", "request_id": "req-7"},
        "ven_id": "ven-0001"}),
    "registered-report-request": ("oadrRegisteredReport", {
        "response": {"response_code": 200, "response_description": "OK",
                     "request_id": "req-7"},
        "report_requests": [{"report_request_id": "rr-1", "report_specifier": {
            "report_specifier_id": "TELEMETRY_USAGE", "granularity": timedelta(minutes=15),
            "report_back_duration": timedelta(minutes=15),
            "report_interval": {"dtstart": T0, "duration": timedelta(hours=2)},
            "specifier_payloads": [{"r_id": f"r{n}", "reading_type": "Direct Read"}
                                   for n in range(3)]}}],
        "ven_id": "ven-0001"}),
}


def generic(name: str, payload: dict[str, Any]) -> bytes:
    return etree.tostring(encode_element(name, payload), xml_declaration=True, encoding="UTF-8")


def per_call(function: Callable[[str, dict[str, Any]], bytes], name: str,
             payload: dict[str, Any], seconds: float) -> float:
    """Microseconds per call over about ``seconds``."""
    calls = 1
    while True:
        start = time.perf_counter()
        for _ in range(calls):
            function(name, payload)
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return elapsed / calls * 1e6
        calls *= 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=0.2, help="per timing")
    parser.add_argument("--only", choices=sorted(PAYLOADS),
                        help="just call codec.encode on this payload --calls times (no timing)")
    parser.add_argument("--engine", choices=("encode", "generic"), default="encode")
    parser.add_argument("--calls", type=int, default=1000)
    args = parser.parse_args()
    if args.only:
        name, payload = PAYLOADS[args.only]
        function = codec.encode if args.engine == "encode" else generic
        function(name, payload)
        for _ in range(args.calls):
            function(name, payload)
        return
    for label, (name, payload) in PAYLOADS.items():
        assert codec.encode(name, payload) == generic(name, payload), label
    print(f"load average before: {os.getloadavg()}")
    print(f"{'payload':28} {'bytes':>7} {'generic us':>11} {'encode us':>10} {'ratio':>6}")
    for label, (name, payload) in PAYLOADS.items():
        best = {"generic": float("inf"), "encode": float("inf")}
        for _ in range(args.rounds):
            for engine, function in (("generic", generic), ("encode", codec.encode)):
                best[engine] = min(best[engine], per_call(function, name, payload, args.seconds))
        size = len(codec.encode(name, payload))
        print(f"{label:28} {size:7d} {best['generic']:11.1f} {best['encode']:10.1f} "
              f"{best['generic'] / best['encode']:6.1f}")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
