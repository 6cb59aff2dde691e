"""The store backends the test suites run against, and how each gets a fresh, isolated URI.

A backend joins by adding a function ``name(tmp_path) -> uri`` to URI_FACTORIES (and its name to
SHARED when several processes see it as one store). Backends that need a server call
``require_server(...)``: the test skips, naming the server, unless CI=true, where a missing
server fails the run.

The servers are the local ones unless the environment names others (README.md, "Run the
tests"): OPENADR_TEST_POSTGRESQL_URI (default postgresql+psycopg://postgres@127.0.0.1:5432/test)
and OPENADR_TEST_REDIS_URI (default redis://127.0.0.1:6379/0). Each test gets tables or keys of
its own under a prefix, so several runs, and the pytest-xdist workers of one run, share them.
"""
from __future__ import annotations

import atexit
import hashlib
import os
import uuid
from urllib.parse import urlsplit

import pytest


def require_server(name: str, reachable: bool, detail: str = "") -> None:
    """Skip (locally) or fail (in CI) when the real server a backend needs is not there."""
    if reachable:
        return
    message = f"needs a running {name}{': ' + detail if detail else ''}"
    if os.environ.get("CI") == "true":
        pytest.fail(message + " (CI=true: backends are required)")
    pytest.skip(message)


def server_name(kind: str, uri: str) -> str:
    """``kind at host:port/database`` for messages: where ``uri`` points, without credentials."""
    parts = urlsplit(uri)
    return f"{kind} at {parts.netloc.rpartition('@')[2]}{parts.path}"


def memory_uri(tmp_path) -> str:
    return "memory://"


def sqlite_uri(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'vtn.sqlite'}"


#: The PostgreSQL the tests use (trust auth); OPENADR_TEST_POSTGRESQL_URI points elsewhere.
POSTGRESQL_URI = os.environ.get(
    "OPENADR_TEST_POSTGRESQL_URI", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
POSTGRESQL_SERVER = server_name("PostgreSQL", POSTGRESQL_URI)
_postgresql_state: dict[str, object] = {}  # "reachable": (bool, detail); "prefixes": set


def postgresql_reachable() -> tuple[bool, str]:
    """Whether the test PostgreSQL answers (asked once per test session), and if not, why."""
    if "reachable" not in _postgresql_state:
        try:
            import psycopg
            import sqlalchemy  # noqa: F401 - the store needs it too
        except ImportError as exc:
            state = (False, f"{exc.name} is not installed (pip install -e '.[test]')")
        else:
            try:
                psycopg.connect(_libpq_uri(), connect_timeout=3).close()
                state = (True, "")
            except psycopg.Error as exc:
                state = (False, str(exc).strip().splitlines()[0])
        _postgresql_state["reachable"] = state
    return _postgresql_state["reachable"]


def _libpq_uri() -> str:
    return "postgresql://" + POSTGRESQL_URI.partition("://")[2]


def postgresql_uri(tmp_path) -> str:
    """The test PostgreSQL with tables of this test's own (a table prefix made from tmp_path,
    so two calls in one test name one store, as two sqlite_uri calls do). The tables are
    dropped when the test session ends."""
    reachable, detail = postgresql_reachable()
    require_server(f"{POSTGRESQL_SERVER} (OPENADR_TEST_POSTGRESQL_URI)", reachable, detail)
    prefix = "t" + hashlib.sha1(str(tmp_path).encode()).hexdigest()[:12] + "_"
    prefixes = _postgresql_state.setdefault("prefixes", set())
    if not prefixes:
        atexit.register(drop_postgresql_tables, prefixes, os.getpid())
    if prefix not in prefixes:
        drop_postgresql_tables({prefix})  # left over from an interrupted session
        prefixes.add(prefix)
    return f"{POSTGRESQL_URI}?table_prefix={prefix}&connect_timeout=5"


def drop_postgresql_tables(prefixes, pid=None) -> None:
    """Drop every table whose name starts with one of the prefixes (in the process ``pid``
    only, so that a forked child leaving through atexit drops nothing)."""
    if not prefixes or (pid is not None and pid != os.getpid()):
        return
    import psycopg

    patterns = [prefix.replace("_", r"\_") + "%" for prefix in prefixes]
    with psycopg.connect(_libpq_uri(), connect_timeout=5, autocommit=True) as connection:
        connection.execute("SET lock_timeout = '10s'")
        names = [name for (name,) in connection.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() "
            "AND tablename LIKE ANY(%s)", (patterns,)
        )]
        if names:
            quoted = ", ".join(f'"{name}"' for name in names)
            connection.execute(f"DROP TABLE IF EXISTS {quoted} CASCADE")


#: The Redis the tests share; each test's keys live under a prefix of its own.
REDIS_URI = os.environ.get("OPENADR_TEST_REDIS_URI", "redis://127.0.0.1:6379/0")
REDIS_SERVER = server_name("Redis", REDIS_URI)
# One run's prefixes all start with this, so its keys are found (and deleted) together and never
# touch another run's on the same server.
REDIS_RUN_PREFIX = f"flask-openadr-test:{uuid.uuid4().hex[:12]}:"
_redis_state: dict[str, object] = {}  # "reachable": (bool, detail); "cleanup": registered


def redis_reachable() -> tuple[bool, str]:
    """Whether the test Redis answers (asked once per test session), and if not, why."""
    if "reachable" not in _redis_state:
        try:
            import redis
        except ImportError as exc:
            state = (False, f"{exc.name} is not installed (pip install -e '.[test]')")
        else:
            try:
                client = redis.Redis.from_url(REDIS_URI, socket_connect_timeout=3,
                                              socket_timeout=3)
                client.ping()
                client.close()
                state = (True, "")
            except redis.RedisError as exc:
                state = (False, str(exc))
        _redis_state["reachable"] = state
    return _redis_state["reachable"]


def redis_uri(tmp_path) -> str:
    """The test Redis with a key prefix of this test's own (made from tmp_path, so two calls in
    one test name one store, as two sqlite_uri calls do). The keys are deleted when the test
    session ends."""
    reachable, detail = redis_reachable()
    require_server(f"{REDIS_SERVER} (OPENADR_TEST_REDIS_URI)", reachable, detail)
    if "cleanup" not in _redis_state:
        atexit.register(delete_redis_keys, REDIS_RUN_PREFIX, os.getpid())
        _redis_state["cleanup"] = True
    prefix = REDIS_RUN_PREFIX + hashlib.sha1(str(tmp_path).encode()).hexdigest()[:12] + ":"
    separator = "&" if "?" in REDIS_URI else "?"
    return f"{REDIS_URI}{separator}prefix={prefix}&socket_timeout=10&socket_connect_timeout=5"


def delete_redis_keys(prefix: str, pid: int | None = None) -> None:
    """Delete every key that starts with ``prefix`` (in the process ``pid`` only, so that a
    forked child leaving through atexit deletes nothing)."""
    if pid is not None and pid != os.getpid():
        return
    import redis

    client = redis.Redis.from_url(REDIS_URI, socket_connect_timeout=5, socket_timeout=10)
    try:
        pattern = "".join("\\" + c if c in "*?[]\\" else c for c in prefix) + "*"
        batch = []
        for key in client.scan_iter(match=pattern, count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                client.unlink(*batch)
                batch = []
        if batch:
            client.unlink(*batch)
    except redis.RedisError:  # the server went away; its keys are not this run's worry now
        pass
    finally:
        client.close()


URI_FACTORIES = {
    "memory": memory_uri,
    "sqlite": sqlite_uri,
    "postgresql": postgresql_uri,
    "redis": redis_uri,
}

#: Backends that several processes see as one store.
SHARED = ["sqlite", "postgresql", "redis"]
