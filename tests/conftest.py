"""Shared fixtures: an app with a VTN on each embedded store, a frozen clock, a VEN client."""
from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone

import pytest
from flask import Flask

from flask_openadr import VTN
from flask_openadr.testing import VENTestClient

T0 = datetime(2026, 12, 1, 12, 0, 0, tzinfo=timezone.utc)


class FrozenClock:
    """A clock the test moves by hand, so event status changes need no sleeping."""

    def __init__(self, now: datetime = T0):
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture(params=["memory", "sqlite"])
def store_uri(request, tmp_path) -> str:
    if request.param == "memory":
        return "memory://"
    return "sqlite:///" + os.path.join(str(tmp_path), "vtn.sqlite3")


@pytest.fixture
def app(tmp_path, store_uri, clock) -> Flask:
    app = Flask("vtn_test_app", instance_path=str(tmp_path / "instance"))
    app.config.update(TESTING=True, OPENADR_STORE_URI=store_uri, OPENADR_VTN_ID="TEST-VTN")
    app.extensions["test_vtn"] = VTN(app, clock=clock)
    return app


@pytest.fixture
def vtn(app) -> VTN:
    return app.extensions["test_vtn"]


@pytest.fixture
def ven(app) -> VENTestClient:
    return make_ven(app)


@pytest.fixture
def registered_ven(app, ven) -> VENTestClient:
    """A VEN that registered, took the VTN's METADATA register report off its outbox and
    acknowledged it (so it is not sent again)."""
    name, reply = ven.register()
    assert reply["response"]["response_code"] == 200
    name, reply = ven.poll()
    assert name == "oadrRegisterReport"
    name, ack = ven.registered_report(reply)
    assert ack["response"]["response_code"] == 200
    return ven


class ValidatingVEN(VENTestClient):
    """A VEN test client that also checks every 200 reply against the official 2.0b XSD."""

    def post(self, service, body, content_type="application/xml"):
        from xsd import assert_valid

        response = super().post(service, body, content_type)
        if response.status_code == 200:
            assert_valid(response.get_data())
            assert response.headers["Content-Type"].startswith("application/xml")
            assert int(response.headers["Content-Length"]) == len(response.get_data())
        return response


def make_ven(app, ven_name="ven-one", **kwargs) -> ValidatingVEN:
    return ValidatingVEN(app.test_client(), ven_name=ven_name, **kwargs)


@pytest.fixture(scope="session")
def pki(tmp_path_factory):
    """The test PKI (tests/pki.py): roots, VTN and VEN certificates, made once per session."""
    from pki import TestPKI

    return TestPKI(str(tmp_path_factory.mktemp("pki")))
