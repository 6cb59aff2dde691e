"""The application the liveness process tests serve (gunicorn, ``flask run --reload``).

A VTN with second-scale liveness settings on the store named by LV_STORE_URI. Its liveness
handlers, the sweeper's start/stop log lines and every app creation are appended as JSON lines
(with the pid) to the file named by LV_LOG, so the test process can count what all the processes
did.
"""
from __future__ import annotations

import json
import logging
import os
import time

from flask import Flask

from flask_openadr import VTN


def log(kind: str, **data) -> None:
    # One write() of one line per record: the file is opened in append mode, so lines from
    # several processes do not interleave.
    line = json.dumps({"kind": kind, "pid": os.getpid(), **data}) + "\n"
    with open(os.environ["LV_LOG"], "a", encoding="utf-8") as fh:
        fh.write(line)


class SweeperLog(logging.Handler):
    """Copies the sweeper's start and stop messages, and errors, to the JSON-lines log."""

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("liveness sweeper"):
            log("sweeper", message=message.split(" in process")[0])
        elif record.levelno >= logging.ERROR:
            log("error", message=message, exc=repr(record.exc_info and record.exc_info[1]))


def create_app() -> Flask:
    app = Flask("liveness_vtn", instance_path=os.environ["LV_INSTANCE"])
    app.config.update(
        OPENADR_STORE_URI=os.environ["LV_STORE_URI"],
        OPENADR_POLL_FREQUENCY=1,
        OPENADR_OFFLINE_AFTER_MISSED_POLLS=1,
        OPENADR_OFFLINE_GRACE=0.5,
        OPENADR_SWEEP_INTERVAL=0.2,
        OPENADR_CALLBACK_LEASE=30,
        # gunicorn and `flask run` serve these tests over plain HTTP on loopback, without TLS:
        # there are no client certificates, so VENs are identified by venID alone.
        OPENADR_REQUIRE_CLIENT_CERT=False,
    )
    if os.environ.get("LV_BACKGROUND"):
        app.config["OPENADR_BACKGROUND"] = os.environ["LV_BACKGROUND"]
    logger = logging.getLogger("flask_openadr")
    logger.setLevel(logging.INFO)
    if not any(isinstance(h, SweeperLog) for h in logger.handlers):
        logger.addHandler(SweeperLog())
    vtn = VTN(app)

    @vtn.on_ven_online
    def online(ven_id, epoch):
        log("online", ven_id=ven_id, epoch=epoch)

    @vtn.on_ven_offline
    def offline(ven_id, epoch):
        # A handler that takes a while (a notification, say): sweeps in other processes run
        # meanwhile, on the same due VENs.
        time.sleep(float(os.environ.get("LV_HANDLER_DELAY", "0")))
        log("offline", ven_id=ven_id, epoch=epoch)

    @app.get("/health")
    def health():
        return "ok"

    @app.after_request
    def tag(response):
        response.headers["X-Worker-Pid"] = str(os.getpid())
        return response

    log("app_created")
    return app
