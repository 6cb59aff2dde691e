"""The application the worker-kill tests serve with gunicorn (tests/test_faults_gunicorn.py).

A VTN on the store named by FT_STORE_URI whose request path can be stopped at a named point: when
the file FT_DIR/<point> exists, the worker that reaches the point writes FT_DIR/<point>.paused
(its pid) and sleeps, so the test can SIGKILL it while it is inside the request. The points:

* ``poll``: in ``on_poll``, before the poll reads or writes anything;
* ``created_event``: in ``on_created_event``, after the answers are checked, before they are
  written;
* ``update_report``: in ``on_update_report``, before the report data is written;
* ``sent-<payloadName>``: in a ``message_sent`` receiver, after the reply's store writes are
  committed and before the reply leaves (a delivery in flight);
* ``add_event``: inside a store transaction that has stored an event (``POST /add_event``), so
  the kill lands between the write and the commit.

The liveness handlers and the report data are appended as JSON lines to FT_DIR/log.jsonl.
"""
from __future__ import annotations

import json
import os
import time
from datetime import datetime, timedelta, timezone
from typing import Callable

from flask import Flask, request

from flask_openadr import VTN, signals

PAUSE_SECONDS = 60  # far longer than a test waits: the test kills the worker before


def log(kind: str, **data) -> None:
    line = json.dumps({"kind": kind, "pid": os.getpid(), **data}) + "\n"
    with open(os.path.join(os.environ["FT_DIR"], "log.jsonl"), "a", encoding="utf-8") as fh:
        fh.write(line)


def log_reports_and_liveness(vtn: VTN, log: Callable[..., None],
                             before_report: Callable[[], None] = lambda: None) -> None:
    """The handlers the gunicorn test apps share: ask for rid-1 of every METADATA report (so the
    VEN has a request to send data for), and log each report and liveness transition."""

    @vtn.on_register_report
    def on_register_report(ven_id, report):
        return [{"r_id": "rid-1", "granularity": timedelta(minutes=1),
                 "report_back_duration": timedelta(minutes=1)}]

    @vtn.on_update_report
    def on_update_report(ven_id, report):
        before_report()
        log("report", ven_id=ven_id)

    @vtn.on_ven_online
    def online(ven_id, epoch):
        log("online", ven_id=ven_id, epoch=epoch)

    @vtn.on_ven_offline
    def offline(ven_id, epoch):
        log("offline", ven_id=ven_id, epoch=epoch)


def pause_at(point: str) -> None:
    flag = os.path.join(os.environ["FT_DIR"], point)
    if os.path.exists(flag):
        # Written under another name and renamed, so the test never reads half a pid.
        with open(flag + ".tmp", "w") as fh:
            fh.write(str(os.getpid()))
        os.replace(flag + ".tmp", flag + ".paused")
        time.sleep(PAUSE_SECONDS)


def create_app() -> Flask:
    app = Flask("faults_vtn", instance_path=os.path.join(os.environ["FT_DIR"], "instance"))
    app.config.update(
        OPENADR_STORE_URI=os.environ["FT_STORE_URI"],
        # Polls every 60 s by the VTN's reckoning: no VEN goes offline during a test, so every
        # liveness decision logged comes from the messages the test sends.
        OPENADR_POLL_FREQUENCY=60,
        OPENADR_REDELIVERY_AFTER=1,
        # Plain HTTP on loopback, no client certificates: VENs are known by venID alone.
        OPENADR_REQUIRE_CLIENT_CERT=False,
    )
    vtn = VTN(app)

    @vtn.on_poll
    def on_poll(ven_id):
        pause_at("poll")
        return None

    @vtn.on_created_event
    def on_created_event(payload):
        pause_at("created_event")

    log_reports_and_liveness(vtn, log, before_report=lambda: pause_at("update_report"))

    @signals.message_sent.connect_via(app)
    def sent(sender, payload_name, **data):
        pause_at("sent-" + payload_name)

    @app.post("/add_event")
    def add_event():
        start = datetime.now(timezone.utc) + timedelta(hours=1)
        store = app.extensions["openadr"].context.store
        with store.atomic():
            event_id = vtn.add_event(request.args["ven_id"], event_id=request.args["event_id"],
                                     signal_name="SIMPLE", signal_type="level",
                                     intervals=[{"dtstart": start,
                                                 "duration": timedelta(minutes=30),
                                                 "signal_payload": 1.0}])
            pause_at("add_event")
        return event_id

    @app.get("/health")
    def health():
        return "ok"

    return app
