"""The application the end-to-end tests serve with gunicorn: a VTN on a shared SQLite file.

Its handlers append what they see to the JSON-lines file named by E2E_LOG, so the test process
can check what the workers did. E2E_CONFIG (a JSON object) adds to or overrides the app's config,
for tests that deploy it differently (behind nginx, with TLS, with a signing key).
"""
from __future__ import annotations

import json
import os

from flask import Flask, jsonify, request

from flask_openadr import VTN, signals


def create_app() -> Flask:
    app = Flask("e2e_vtn", instance_path=os.environ["E2E_INSTANCE"])
    app.config.update(
        OPENADR_STORE_URI=os.environ["E2E_STORE_URI"],
        OPENADR_VTN_ID="E2E-VTN",
        OPENADR_POLL_FREQUENCY=1,
        # gunicorn serves these tests over plain HTTP on loopback, without TLS: there are no
        # client certificates, so VENs are identified by venID alone.
        OPENADR_REQUIRE_CLIENT_CERT=False,
    )
    if os.environ.get("E2E_SIGNING_CERT"):  # PEM file paths of the VTN's signing pair
        app.config.update(OPENADR_SIGNING_CERT=os.environ["E2E_SIGNING_CERT"],
                          OPENADR_SIGNING_KEY=os.environ["E2E_SIGNING_KEY"])
    if os.environ.get("E2E_REPORT_POLICY"):
        app.config["OPENADR_REPORT_POLICY"] = os.environ["E2E_REPORT_POLICY"]
    app.config.update(json.loads(os.environ.get("E2E_CONFIG", "{}")))
    vtn = VTN(app)
    log_path = os.environ["E2E_LOG"]

    def log(kind, **data):
        with open(log_path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"kind": kind, "pid": os.getpid(), **data}) + "\n")

    @vtn.on_create_party_registration
    def register(payload):
        log("registration", ven_name=payload["ven_name"], fingerprint=payload.get("fingerprint"))
        return None  # the built-in IDs

    @vtn.on_created_event
    def created(payload):
        for response in payload["event_responses"]:
            log("created_event", ven_id=payload["ven_id"], opt_type=response["opt_type"],
                event_id=response["qualified_event_id"]["event_id"],
                modification_number=response["qualified_event_id"]["modification_number"])

    @vtn.on_update_report
    def update_report(ven_id, report):
        log("update_report", ven_id=ven_id, report_request_id=report["report_request_id"],
            report_name=report["report_name"],
            points=[[interval["dtstart"].isoformat(), value["r_id"], value.get("value")]
                    for interval in report["intervals"] for value in interval["values"]])

    @signals.message_received.connect_via(app)
    def received(sender, payload_name, **extra):
        if payload_name == "oadrUpdateReport":  # every data message, even one answered 452
            log("received", payload_name=payload_name)

    @vtn.on_canceled_report
    def canceled_report(ven_id, canceled):
        log("canceled_report", ven_id=ven_id, report_request_ids=canceled["report_request_ids"])

    @app.get("/health")
    def health():
        return "ok"

    @app.post("/operator/events")
    def add_event():
        # An operator action handled by whichever process serves it; the tests check that a
        # different server process delivers the event.
        from datetime import datetime, timedelta, timezone

        data = request.get_json()
        start = datetime.now(timezone.utc) + timedelta(hours=1)
        event_id = vtn.add_event(
            targets={"group_ids": [data["group_id"]]}, signal_name="SIMPLE", signal_type="level",
            intervals=[{"dtstart": start, "duration": timedelta(minutes=30),
                        "signal_payload": float(data["level"])}])
        return jsonify(event_id=event_id, pid=os.getpid())

    @app.after_request
    def tag(response):
        response.headers["X-Worker-Pid"] = str(os.getpid())
        return response

    return app
