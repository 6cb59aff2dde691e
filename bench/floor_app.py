"""The least any VTN must do per empty poll, as a Flask app: bench_delivery.py --floor compares
it with bench/fixed_app.py under the same gunicorn, to show what the 1.3x target leaves.

Per oadrPoll it does only what no VTN can leave out, each with this library's own building
blocks or SQLite directly: the hardened parse and the decode of the body (codec.parse and
codec.decode_element), reading the VEN's record by the venID, recording that the VEN was seen
(one write transaction on a SQLite file in WAL mode, ``synchronous = NORMAL``, as the SQLite
store opens it), reading whether anything is pending for it, and answering the prepared
oadrResponse. No authentication rules, no services, no store layer, no handlers: a floor, not
a VTN. 200 VENs ``v0`` ... ``v199`` are known (bench_delivery's fixed-app bodies name them).
"""
from __future__ import annotations

import json
import os
import sqlite3
import tempfile
import threading
import time
from datetime import datetime, timezone

from flask import Flask, Response, jsonify, request

from flask_openadr import codec

VENS = 200


def _database() -> sqlite3.Connection:
    path = os.path.join(tempfile.mkdtemp(), "floor.sqlite3")
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    connection.execute("PRAGMA journal_mode = WAL")
    connection.execute("PRAGMA synchronous = NORMAL")
    connection.execute("CREATE TABLE rows (key TEXT PRIMARY KEY, value TEXT NOT NULL) "
                       "WITHOUT ROWID")
    rows = []
    for n in range(VENS):
        ven_id = f"v{n}"
        rows.append((f"ven:{ven_id}", json.dumps({"ven_id": ven_id, "registration_id": f"r{n}",
                                                  "group_ids": [], "fingerprint": None,
                                                  "xml_signature": False})))
        rows.append((f"seen:{ven_id}", json.dumps({"state": "online", "last_seen": None})))
    connection.executemany("INSERT INTO rows VALUES (?, ?)", rows)
    return connection


def create_app() -> Flask:
    app = Flask("bench_floor")
    local = threading.local()
    body_of = {f"v{n}": codec.encode("oadrResponse", {
        "response": {"response_code": 200, "response_description": "OK", "request_id": ""},
        "ven_id": f"v{n}"}) for n in range(VENS)}

    @app.post("/OpenADR2/Simple/2.0b/OadrPoll")
    def poll() -> Response:
        connection = getattr(local, "connection", None)
        if connection is None:
            connection = local.connection = _database()  # in the worker, after the fork
        data = request.environ["wsgi.input"].read(int(request.environ["CONTENT_LENGTH"]))
        name, payload = codec.decode_element(codec.parse(data, max_bytes=1 << 20))
        ven_id = payload["ven_id"]
        row = connection.execute("SELECT value FROM rows WHERE key = ?",
                                 (f"ven:{ven_id}",)).fetchone()
        if name != "oadrPoll" or row is None or json.loads(row[0])["ven_id"] != ven_id:
            return Response("unknown VEN\n", status=400)
        connection.execute("BEGIN IMMEDIATE")
        connection.execute("UPDATE rows SET value = json_set(value, '$.last_seen', ?) "
                           "WHERE key = ?", (datetime.now(timezone.utc).isoformat(),
                                             f"seen:{ven_id}"))
        connection.execute("COMMIT")
        pending = connection.execute("SELECT value FROM rows WHERE key = ?",
                                     (f"pending:{ven_id}",)).fetchall()
        assert not pending  # an empty poll
        return Response(body_of[ven_id], content_type="application/xml")

    @app.get("/bench/cpu")
    def cpu() -> Response:
        return jsonify(cpu=time.process_time(), pid=os.getpid())

    return app
