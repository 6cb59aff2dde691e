"""Shared fixtures: an app with a VTN on a store of its own, a frozen clock, a VEN client.

Helpers and constants (T0, make_ven, the servers...) are in tests/support/, not here."""
from __future__ import annotations

import os

import pytest
from flask import Flask

from flask_openadr import VTN
from tests.support.backends import POSTGRESQL_SERVER, REDIS_SERVER
from tests.support.clock import FrozenClock
from tests.support.vens import ValidatingVEN, make_ven

#: The stores the ``store_uri`` fixture (and so ``app``, ``vtn``, ``ven``) runs a test on: one.
#: What a store does is the conformance suite's business (tests/test_store.py, on every backend):
#: the feature tests check the protocol, which reaches any store through the same methods. SQLite
#: rather than memory://, because it serialises every record, as the shared stores do.
#:
#: The tests that prove a path of their own per backend name their stores themselves, not through
#: this fixture: test_extension (the memory:// warning under a multi-process server), the
#: multi-process tests on the shared stores (test_liveness_gunicorn, test_faults_gunicorn,
#: test_push's gunicorn, test_store_*'s forks), test_liveness's store-level transitions and
#: test_locking (per-VEN transactions, whose locking is each backend's own), and test_example_app
#: (the portal's backend settings). A new one may ask for more stores with
#: ``@pytest.mark.parametrize("store_uri", ["memory", "sqlite"], indirect=True)``.
FEATURE_STORES = ["sqlite"]


def pytest_report_header(config) -> list[str]:
    # Say which servers the run uses, so that it never writes to one silently.
    return [f"test servers: {POSTGRESQL_SERVER} (OPENADR_TEST_POSTGRESQL_URI), "
            f"{REDIS_SERVER} (OPENADR_TEST_REDIS_URI)"]


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture(params=FEATURE_STORES)
def store_uri(request, tmp_path) -> str:
    """A new store: ``memory://`` or a SQLite file of this test's own."""
    if request.param == "memory":
        return "memory://"
    return "sqlite:///" + os.path.join(str(tmp_path), "vtn.sqlite3")


def _vtn_app(name, tmp_path, store_uri, clock, **config) -> Flask:
    app = Flask(name, instance_path=str(tmp_path / "instance"))
    app.config.update(TESTING=True, OPENADR_STORE_URI=store_uri, OPENADR_VTN_ID="TEST-VTN",
                      **config)
    app.extensions["test_vtn"] = VTN(app, clock=clock)
    return app


@pytest.fixture
def app(tmp_path, store_uri, clock) -> Flask:
    return _vtn_app("vtn_test_app", tmp_path, store_uri, clock)


@pytest.fixture
def telemetry_app(tmp_path, store_uri, clock) -> Flask:
    """An app whose VTN requests telemetry reports by its report policy."""
    return _vtn_app("telemetry_app", tmp_path, store_uri, clock,
                    OPENADR_REPORT_POLICY="telemetry")


@pytest.fixture
def vtn(app) -> VTN:
    return app.extensions["test_vtn"]


@pytest.fixture
def ven(app) -> ValidatingVEN:
    return make_ven(app)


@pytest.fixture
def registered_ven(app, ven) -> ValidatingVEN:
    """A VEN that registered, took the VTN's METADATA register report off its outbox and
    acknowledged it (so it is not sent again)."""
    name, reply = ven.register()
    assert reply["response"]["response_code"] == 200
    name, reply = ven.poll()
    assert name == "oadrRegisterReport"
    name, ack = ven.registered_report(reply)
    assert ack["response"]["response_code"] == 200
    return ven


@pytest.fixture(scope="session")
def pki(tmp_path_factory):
    """The test PKI (tests/support/pki.py): roots, VTN and VEN certificates, made once per
    session."""
    from tests.support.pki import TestPKI

    return TestPKI(str(tmp_path_factory.mktemp("pki")))
