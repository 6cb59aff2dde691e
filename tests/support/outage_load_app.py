"""The application tests/test_outage_load.py serves with gunicorn while it stops the store.

A VTN on the store named by OL_STORE_URI with second-scale liveness (a VEN is offline 5 s after
its last message; sweeps every 0.5 s), asking every VEN for the rid-1 data of its METADATA
reports. The liveness callbacks, the report data it takes and the outages the sweepers notice
are appended as JSON lines (with the time) to OL_DIR/log.jsonl.
"""
from __future__ import annotations

import json
import logging
import os
import time

from flask import Flask

from flask_openadr import VTN
from tests.support.faults_app import log_reports_and_liveness

#: The liveness settings, which the test reads too: offline 2 x 2 s + 1 s after the last message.
POLL_FREQUENCY = 2.0
MISSED_POLLS = 2
GRACE = 1.0
DEADLINE = POLL_FREQUENCY * MISSED_POLLS + GRACE
SWEEP_INTERVAL = 0.5


def log(kind: str, **data) -> None:
    # One write() of one line in append mode: lines of several workers do not interleave.
    line = json.dumps({"kind": kind, "pid": os.getpid(), "at": time.time(), **data}) + "\n"
    with open(os.path.join(os.environ["OL_DIR"], "log.jsonl"), "a", encoding="utf-8") as fh:
        fh.write(line)


class OutageLog(logging.Handler):
    """Copies the sweepers' "no liveness sweep ran" warnings to the JSON-lines log."""

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("no liveness sweep ran"):
            log("outage", message=record.getMessage())


def create_app() -> Flask:
    app = Flask("outage_load_vtn", instance_path=os.path.join(os.environ["OL_DIR"], "instance"))
    app.config.update(
        OPENADR_STORE_URI=os.environ["OL_STORE_URI"],
        OPENADR_POLL_FREQUENCY=POLL_FREQUENCY,
        OPENADR_OFFLINE_AFTER_MISSED_POLLS=MISSED_POLLS,
        OPENADR_OFFLINE_GRACE=GRACE,
        OPENADR_SWEEP_INTERVAL=SWEEP_INTERVAL,
        # Plain HTTP on loopback, no client certificates: VENs are known by venID alone.
        OPENADR_REQUIRE_CLIENT_CERT=False,
    )
    logger = logging.getLogger("flask_openadr")
    if not any(isinstance(h, OutageLog) for h in logger.handlers):
        logger.addHandler(OutageLog())
    vtn = VTN(app)

    log_reports_and_liveness(vtn, log)

    @app.get("/health")
    def health():
        return "ok"

    return app
