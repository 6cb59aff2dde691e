"""The baseline bench_delivery.py compares polls with: a Flask app that answers every oadrPoll
with the same oadrResponse, built once, and does nothing else (no parsing, no store)."""
from __future__ import annotations

import os
import time

from flask import Flask, Response, jsonify

from flask_openadr import codec


def create_app() -> Flask:
    app = Flask("bench_fixed")
    body = codec.encode("oadrResponse", {
        "response": {"response_code": 200, "response_description": "OK", "request_id": ""},
        "ven_id": "fixed"})

    @app.post("/OpenADR2/Simple/2.0b/OadrPoll")
    def poll():
        return Response(body, content_type="application/xml")

    @app.get("/bench/cpu")
    def cpu():
        return jsonify(cpu=time.process_time(), pid=os.getpid())

    return app
