"""No VTN-wide lock on the per-VEN paths: while one VEN's transaction is open, other VENs'
polls, event responses and report data complete, and VTN-wide writes still wait for it (PostgreSQL, Redis)."""
from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest

from flask_openadr.config import Settings
from flask_openadr.services import events, handle
from flask_openadr.services.context import Context
from flask_openadr.store import open_store
from flask_openadr.testing import data_report
from tests.support.backends import URI_FACTORIES
from tests.support.clock import T0

VENS = ("ven-a", "ven-b", "ven-c")


@pytest.fixture(params=["postgresql", "redis"])
def ctx(request, tmp_path):
    store = open_store(URI_FACTORIES[request.param](tmp_path))
    context = Context(settings=Settings(), store=store, clock=lambda: T0)
    for ven_id in VENS:
        store.put_ven({"ven_id": ven_id, "registration_id": f"reg-{ven_id}",
                       "report_only": False, "group_ids": [], "resource_ids": [],
                       "party_ids": []})
    events.add_event(context, events.build_event(
        event_id="e1", signal_name="SIMPLE", signal_type="level",
        market_context="http://x.example", intervals=[
            {"dtstart": T0 + timedelta(hours=1), "duration": timedelta(hours=1),
             "signal_payload": 1.0}]))
    yield context
    store.close()


class Held:
    """A thread that opens ``store.atomic(ven_id)`` and keeps it open until released."""

    def __init__(self, store, ven_id=None):
        self.entered = threading.Event()
        self.release = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(store, ven_id), daemon=True)
        self.thread.start()
        assert self.entered.wait(10), "the block did not open"

    def _run(self, store, ven_id):
        with store.atomic(ven_id):
            store.get_delivered(ven_id or "ven-a")
            self.entered.set()
            self.release.wait(30)

    def stop(self):
        self.release.set()
        self.thread.join(10)


def within(seconds, work):
    """Run ``work`` in a thread; its result, or a failure if it did not finish in time."""
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault("value", work()), daemon=True)
    thread.start()
    thread.join(seconds)
    assert "value" in result, f"did not complete within {seconds} s"
    return result["value"]


def test_other_vens_poll_answer_and_report_while_one_ven_block_is_open(ctx):
    ctx.store.put_record("report_request", "ven-b", "rr-b", {
        "report_request_id": "rr-b", "report_specifier_id": "spec-usage",
        "report_name": "TELEMETRY_USAGE", "r_ids": ["power"], "granularity": timedelta(0),
        "report_back_duration": timedelta(0), "report_interval": None, "state": "active",
        "message_request_id": "create-1", "created_at": T0, "cancel": None})
    held = Held(ctx.store, "ven-a")
    try:
        for ven_id in ("ven-b", "ven-c"):
            outcome = within(5, lambda: handle(ctx, "OadrPoll", "oadrPoll", {"ven_id": ven_id}))
            assert outcome.payload_name == "oadrDistributeEvent"
            answer = {"response": {"response_code": 200, "request_id": ""},
                      "ven_id": ven_id, "event_responses": [{
                          "response_code": 200, "request_id": outcome.payload["request_id"],
                          "qualified_event_id": {"event_id": "e1", "modification_number": 0},
                          "opt_type": "optIn"}]}
            reply = within(5, lambda: handle(ctx, "EiEvent", "oadrCreatedEvent", answer))
            assert reply.payload["response"]["response_code"] == 200
        # Report data: a one-shot request (stored above), which the data fulfils, a write in
        # ven-b's block.
        data = {"request_id": "update-1", "ven_id": "ven-b", "reports": [data_report(
            "rr-b", "spec-usage", "TELEMETRY_USAGE", [
                {"dtstart": T0, "duration": timedelta(seconds=10),
                 "report_payloads": [{"r_id": "power", "value": 1.5}]}])]}
        reply = within(5, lambda: handle(ctx, "EiReport", "oadrUpdateReport", data))
        assert reply.payload["response"]["response_code"] == 200
        assert ctx.store.get_record("report_request", "ven-b", "rr-b") is None
        # The held VEN's own poll waits for its block, and completes once it ends.
        started = time.monotonic()
        waiting = threading.Thread(
            target=lambda: handle(ctx, "OadrPoll", "oadrPoll", {"ven_id": "ven-a"}),
            daemon=True)
        waiting.start()
        waiting.join(0.5)
        assert waiting.is_alive()
    finally:
        held.stop()
    waiting.join(10)
    assert not waiting.is_alive() and time.monotonic() - started >= 0.5
    assert {r["ven_id"] for r in ctx.store.list_event_responses("e1")} == {"ven-b", "ven-c"}


def test_a_vtn_wide_write_still_waits_for_an_open_ven_block(ctx):
    held = Held(ctx.store, "ven-a")
    done = threading.Event()

    def modify():
        events.modify_event(ctx, "e1", priority=1)
        done.set()

    writer = threading.Thread(target=modify, daemon=True)
    try:
        writer.start()
        assert not done.wait(0.5)  # the fan-out must not change ven-a's record under its block
    finally:
        held.stop()
    assert done.wait(10)
    assert ctx.store.get_event("e1")["event_descriptor"]["modification_number"] == 1
