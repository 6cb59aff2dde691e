"""The application bench_poll_sweep.py serves with gunicorn: a VTN plus two bench-only routes.

``POST /bench/setup?n=N`` registers N VENs through the app's own test client (so the memory
store, which lives in the worker, gets them too), drains their first poll and returns the venIDs.
``GET /bench/cpu`` returns this worker's CPU time, which the bench reads before and after a load.
"""
from __future__ import annotations

import os
import time

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
    VTN(app)

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
        return jsonify(cpu=time.process_time(), pid=os.getpid())

    return app
