"""Several VENs through a store outage (the Redis and PostgreSQL outage tests share it).

The VENs register, each gets an event, the store goes down: every VEN message gets HTTP 503
quickly, an operator call and a liveness sweep raise StoreError and change nothing. The store
comes back, in the same process (no restart of the app): every VEN is sent its event, its
answer is recorded, no VEN is declared offline (the outage was far shorter than the poll
interval: only the store was down, not the VENs), and each went online exactly once.
"""
from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest
from flask import Flask

from flask_openadr import VTN, codec
from flask_openadr.errors import StoreError
from flask_openadr.testing import VENTestClient

FLEET = 4


def outage_app(tmp_path, store_uri) -> Flask:
    app = Flask("outage_load_app", instance_path=str(tmp_path / "instance"))
    app.config.update(TESTING=True, OPENADR_STORE_URI=store_uri, OPENADR_VTN_ID="TEST-VTN",
                      # The test sweeps itself (vtn.sweep()), at the moments it chooses.
                      OPENADR_BACKGROUND="off", OPENADR_POLL_FREQUENCY=60)
    app.extensions["test_vtn"] = VTN(app)
    return app


def _add_event(vtn: VTN, ven_id: str, event_id: str) -> str:
    start = datetime.now(timezone.utc) + timedelta(hours=1)
    return vtn.add_event(ven_id, event_id=event_id, signal_name="SIMPLE", signal_type="level",
                         intervals=[{"dtstart": start, "duration": timedelta(minutes=30),
                                     "signal_payload": 1.0}])


def _quiet(ven: VENTestClient) -> None:
    for _ in range(5):
        name, payload = ven.poll()
        if name == "oadrResponse":
            return
        if name == "oadrRegisterReport":
            ven.registered_report(payload)
    raise AssertionError("the VTN kept sending")


def several_vens_through_an_outage(app: Flask, stop, start) -> None:
    try:
        _through_an_outage(app, stop, start)
    finally:
        with app.app_context():
            app.extensions["test_vtn"].store.close()


def _through_an_outage(app: Flask, stop, start) -> None:
    vtn = app.extensions["test_vtn"]
    online, offline = [], []
    vtn.on_ven_online(lambda ven_id, epoch: online.append((ven_id, epoch)))
    vtn.on_ven_offline(lambda ven_id, epoch: offline.append((ven_id, epoch)))
    fleet = [VENTestClient(app.test_client(), ven_name=f"outage-ven-{n}") for n in range(FLEET)]
    for ven in fleet:
        assert ven.register()[1]["response"]["response_code"] == 200
        _quiet(ven)
    with app.app_context():
        for n, ven in enumerate(fleet):
            _add_event(vtn, ven.ven_id, f"before-{n}")

    stop()
    for ven in fleet:
        for service, name, payload in [
            ("OadrPoll", "oadrPoll", {"ven_id": ven.ven_id}),
            ("EiEvent", "oadrRequestEvent", {"request_id": "r-1", "ven_id": ven.ven_id}),
        ]:
            started = time.monotonic()
            response = ven.post(service, codec.encode(name, payload))
            assert response.status_code == 503, response.get_data(as_text=True)
            assert time.monotonic() - started < 10, "a dead store must fail fast"
    with app.app_context():
        with pytest.raises(StoreError):
            _add_event(vtn, fleet[0].ven_id, "during")
        with pytest.raises(StoreError):
            vtn.sweep()
    start()

    # No restart of the app: the same VTN, the same store object, working again.
    for n, ven in enumerate(fleet):
        name, distribute = ven.poll()
        assert name == "oadrDistributeEvent"
        assert [e["event_descriptor"]["event_id"] for e in distribute["events"]] == [f"before-{n}"]
        assert ven.created_event(distribute, "optIn")[1]["response"]["response_code"] == 200
    with app.app_context():
        assert vtn.sweep() == 0
        assert [e["event_descriptor"]["event_id"] for e in vtn.events()] == [
            f"before-{n}" for n in range(FLEET)]  # nothing lost, nothing from the outage
        for n, ven in enumerate(fleet):
            assert [(r["ven_id"], r["opt_type"]) for r in vtn.store.list_event_responses(
                f"before-{n}")] == [(ven.ven_id, "optIn")]
        assert {v["ven_id"]: v["liveness"] for v in vtn.vens()} == {
            ven.ven_id: "online" for ven in fleet}
    assert offline == []
    assert sorted(online) == sorted((ven.ven_id, 1) for ven in fleet)
