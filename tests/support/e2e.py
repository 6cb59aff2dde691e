"""gunicorn serving tests/support/e2e_app.py for the end-to-end tests (a real VEN client over
HTTP), and an operator's separate view of the same store, as a portal process would have."""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

from flask import Flask

from flask_openadr import VTN
from tests.support.servers import Gunicorn


class E2EGunicorn(Gunicorn):
    """gunicorn serving tests/support/e2e_app.py on ``store_uri``, its handlers logging to
    ``log_path``.

    ``args``, ``env`` (E2E_CONFIG: app config as JSON) and ``ssl_context`` as for
    :class:`tests.support.servers.Gunicorn`.
    """

    def __init__(self, tmp_path, store_uri, log_path, workers, *, args=(), env=None,
                 ssl_context=None):
        super().__init__("tests.support.e2e_app:create_app()", tmp_path, workers=workers,
                         args=args, env={"E2E_STORE_URI": store_uri, "E2E_LOG": str(log_path),
                              "E2E_INSTANCE": str(tmp_path / "instance"), **(env or {})},
                         ssl_context=ssl_context)


@contextlib.contextmanager
def serving(tmp_path, env=None) -> Iterator[tuple[str, str, Path]]:
    """gunicorn with two workers serving tests/support/e2e_app.py on a new SQLite file, with more
    ``env`` settings; yields (base URL, store URI, handler log) and stops it."""
    store_uri = "sqlite:///" + str(tmp_path / "vtn.sqlite3")
    log_path = tmp_path / "handlers.jsonl"
    server = E2EGunicorn(tmp_path, store_uri, log_path, workers=2, env=env)
    try:
        yield server.base, store_uri, log_path
    finally:
        server.stop()


def operator_app(tmp_path, store_uri) -> tuple[Flask, VTN]:
    """A separate VTN process-side view of the same store, as an operator's portal would have."""
    app = Flask("operator", instance_path=str(tmp_path / "operator"))
    app.config.update(OPENADR_STORE_URI=store_uri, OPENADR_VTN_ID="E2E-VTN")
    return app, VTN(app)


def read_log(path) -> list[dict]:
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


async def wait_for(predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.1)


async def stop_client(client) -> None:
    """Stop a real openleadr VEN so that it leaves no open connection behind.

    ``OpenADRClient.stop`` shuts its scheduler down and closes its HTTP session, but a job that
    was running (a poll, a report) goes on: it may open a new session, and ``asyncio.run`` only
    cancels it afterwards, so its connection's transport is closed on a turn of the loop that
    never comes. Garbage collection then warns about the unclosed transport during whatever test
    runs next in the same process, where ``filterwarnings = error`` makes it that test's error.
    So: stop, cancel the client's other tasks and wait for them, close a session opened
    meanwhile, and let the loop run the transports' closing."""
    await client.stop()
    current = asyncio.current_task()
    others = [task for task in asyncio.all_tasks() if task is not current]
    for task in others:
        task.cancel()
    await asyncio.gather(*others, return_exceptions=True)
    session = getattr(client, "client_session", None)
    if session is not None and not session.closed:
        await session.close()
    await asyncio.sleep(0.05)  # connection_lost callbacks run on the next turns of the loop
