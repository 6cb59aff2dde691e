"""The application bench_locks.py serves with gunicorn: a VTN whose store reports, per request,
how long the request waited for the store's locks (``X-Lock-Wait``) and how long it took
(``X-Server-Time``), both in seconds.

The waits are timed by wrapping, in this benchmark process only, the store's lock acquisition:
the PostgreSQL store's ``_lock_writers`` (the advisory-lock statement, which blocks while another
transaction holds a conflicting lock) and the Redis backend's ``_pause`` (the sleep between two
attempts to take a lock, or to commit, while another block holds the lock).
"""
from __future__ import annotations

import os
import threading
import time

from flask import Flask, g, jsonify, request

from flask_openadr import VTN
from flask_openadr.testing import VENTestClient

_waited = threading.local()


def _timed(function):
    def wrapper(*args, **kwargs):
        started = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            _waited.seconds = getattr(_waited, "seconds", 0.0) + time.perf_counter() - started

    return wrapper


def _instrument() -> None:
    try:
        from flask_openadr.store import sqlalchemy as sql_store

        sql_store.SQLBackend._lock_writers = _timed(sql_store.SQLBackend._lock_writers)
    except ImportError:
        pass
    try:
        from flask_openadr.store import redis as redis_store

        redis_store.RedisBackend._pause = _timed(redis_store.RedisBackend._pause)
    except ImportError:
        pass


def create_app() -> Flask:
    _instrument()
    app = Flask("bench_locks", instance_path=os.environ["BENCH_INSTANCE"])
    app.config.update(OPENADR_STORE_URI=os.environ["BENCH_STORE_URI"], OPENADR_VTN_ID="BENCH-VTN",
                      OPENADR_BACKGROUND="off",
                      # Plain HTTP on loopback, without TLS, as in poll_app.py: VENs are told
                      # apart by venID alone (every poll was refused 403 without this).
                      OPENADR_REQUIRE_CLIENT_CERT=False)
    VTN(app)

    @app.before_request
    def start():
        _waited.seconds = 0.0
        g.started = time.perf_counter()

    @app.after_request
    def report(response):
        response.headers["X-Lock-Wait"] = f"{getattr(_waited, 'seconds', 0.0):.9f}"
        response.headers["X-Server-Time"] = f"{time.perf_counter() - g.started:.9f}"
        return response

    @app.post("/bench/setup")
    def setup():
        client = app.test_client()
        ven_ids = []
        for i in range(int(request.args["n"])):
            ven = VENTestClient(client, ven_name=f"bench-{i}")
            ven.register()
            _, metadata = ven.poll()
            ven.registered_report(metadata)
            ven_ids.append(ven.ven_id)
        return jsonify(ven_ids=ven_ids)

    return app
