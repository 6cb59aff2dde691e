"""VEN liveness: online/offline transitions, exactly-once decisions, retried callbacks, the sweeper.

Time is a FrozenClock moved by hand; no test sleeps to make a VEN go offline. The store-level
tests run on every backend of tests/support/backends.py; the HTTP tests on the ``app`` fixture.
"""
from __future__ import annotations

import gc
import logging
import os
import subprocess
import sys
import threading
import warnings
from datetime import timedelta

import pytest
from flask import Flask

from flask_openadr import VTN, runtime, signals
from flask_openadr import gunicorn as gunicorn_hooks
from flask_openadr.config import Settings, load_settings
from flask_openadr.errors import ConfigurationError
from flask_openadr.services import liveness
from flask_openadr.services.context import Context
from flask_openadr.store import open_store
from flask_openadr.store.memory import MemoryStore
from tests.support.backends import SHARED, URI_FACTORIES
from tests.support.clock import T0, FrozenClock
from tests.support.vens import make_ven

POLL = timedelta(seconds=10)
# 3 missed polls of 10 s plus the default grace of 5 s.
THRESHOLD = timedelta(seconds=35)
LEASE = timedelta(seconds=60)
TINY = timedelta(microseconds=1)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Calls:
    """The handlers of a test: they record what they were called with."""

    def __init__(self):
        self.online: list[tuple[str, int]] = []
        self.offline: list[tuple[str, int]] = []

    def handlers(self):
        def on_ven_online(ven_id, epoch):
            self.online.append((ven_id, epoch))

        def on_ven_offline(ven_id, epoch):
            self.offline.append((ven_id, epoch))

        return {"on_ven_online": on_ven_online, "on_ven_offline": on_ven_offline}


def registered(ven_id, **fields):
    ven = {"ven_id": ven_id, "registration_id": f"reg-{ven_id}", "poll_frequency": POLL,
           "group_ids": [], "resource_ids": [], "party_ids": []}
    ven.update(fields)
    return ven


@pytest.fixture(params=list(URI_FACTORIES))
def backend_uri(request, tmp_path):
    return URI_FACTORIES[request.param](tmp_path)


@pytest.fixture
def calls():
    return Calls()


@pytest.fixture
def ctx(backend_uri, clock, calls):
    store = open_store(backend_uri)
    store.put_ven(registered("ven-1"))
    yield Context(settings=Settings(), store=store, handlers=calls.handlers(), clock=clock)
    store.close()


# -- the transitions, on every backend ---------------------------------------------------------


def test_first_message_goes_online_once(ctx, calls):
    transition = liveness.seen(ctx, "ven-1")
    assert transition == {"ven_id": "ven-1", "kind": "online", "epoch": 1}
    assert liveness.run_transition(ctx, transition) is True
    assert liveness.seen(ctx, "ven-1") is None
    assert calls.online == [("ven-1", 1)]
    row = ctx.store.get_liveness("ven-1")
    assert row["state"] == "online" and row["pending"] is None
    assert row["last_seen"] == T0 and row["offline_at"] == T0 + THRESHOLD


def test_offline_exactly_at_the_threshold_and_not_before(ctx, calls, clock):
    liveness.run_transition(ctx, liveness.seen(ctx, "ven-1"))
    clock.advance(THRESHOLD - TINY)
    assert liveness.sweep(ctx) == 0
    assert calls.offline == []
    clock.advance(TINY)
    assert liveness.sweep(ctx) == 1
    assert calls.offline == [("ven-1", 2)]
    clock.advance(THRESHOLD * 10)
    assert liveness.sweep(ctx) == 0
    assert calls.offline == [("ven-1", 2)]
    assert ctx.store.get_liveness("ven-1")["state"] == "offline"


def test_each_message_moves_the_threshold(ctx, calls, clock):
    liveness.run_transition(ctx, liveness.seen(ctx, "ven-1"))
    for _ in range(5):
        clock.advance(THRESHOLD - TINY)
        assert liveness.seen(ctx, "ven-1") is None
        assert liveness.sweep(ctx) == 0
    assert calls.offline == []


def test_back_online_after_offline_gets_a_new_epoch(ctx, calls, clock):
    liveness.run_transition(ctx, liveness.seen(ctx, "ven-1"))
    clock.advance(THRESHOLD)
    liveness.sweep(ctx)
    clock.advance(timedelta(hours=1))
    assert liveness.sweep(ctx) == 0
    transition = liveness.seen(ctx, "ven-1")
    assert transition == {"ven_id": "ven-1", "kind": "online", "epoch": 3}
    liveness.run_transition(ctx, transition)
    clock.advance(THRESHOLD)
    liveness.sweep(ctx)
    assert calls.online == [("ven-1", 1), ("ven-1", 3)]
    assert calls.offline == [("ven-1", 2), ("ven-1", 4)]


def test_threshold_follows_the_poll_frequency_given_to_the_ven(ctx, calls, clock):
    ctx.settings = Settings(offline_after_missed_polls=2, offline_grace=timedelta(0))
    ctx.store.put_ven(registered("slow", poll_frequency=timedelta(minutes=1)))
    liveness.run_transition(ctx, liveness.seen(ctx, "slow"))
    liveness.run_transition(ctx, liveness.seen(ctx, "ven-1"))
    clock.advance(timedelta(seconds=20))
    liveness.sweep(ctx)
    assert calls.offline == [("ven-1", 2)]
    clock.advance(timedelta(seconds=100) - TINY)
    liveness.sweep(ctx)
    assert calls.offline == [("ven-1", 2)]
    clock.advance(TINY)
    liveness.sweep(ctx)
    assert calls.offline == [("ven-1", 2), ("slow", 2)]


def test_offline_after():
    settings = Settings(poll_frequency=timedelta(seconds=30), offline_after_missed_polls=4,
                        offline_grace=timedelta(seconds=7))
    assert liveness.offline_after({"poll_frequency": timedelta(seconds=5)}, settings) == \
        timedelta(seconds=27)
    # A VEN record without a poll frequency (or none at all) gets the VTN's.
    assert liveness.offline_after({}, settings) == timedelta(seconds=127)
    assert liveness.offline_after(None, settings) == timedelta(seconds=127)


def test_a_failing_callback_is_logged_and_retried_after_its_lease(ctx, calls, clock, caplog):
    liveness.run_transition(ctx, liveness.seen(ctx, "ven-1"))
    attempts = []

    def flaky_offline(ven_id, epoch):
        attempts.append(epoch)
        if len(attempts) == 1:
            raise RuntimeError("pager service down")

    ctx.handlers["on_ven_offline"] = flaky_offline
    clock.advance(THRESHOLD)
    with caplog.at_level(logging.ERROR, logger="flask_openadr"):
        assert liveness.sweep(ctx) == 1
    assert attempts == [2]
    assert "pager service down" in caplog.text and "'ven-1'" in caplog.text
    pending = ctx.store.get_liveness("ven-1")["pending"]
    assert pending["kind"] == "offline" and pending["epoch"] == 2
    clock.advance(LEASE - TINY)
    assert liveness.sweep(ctx) == 0
    assert attempts == [2]
    clock.advance(TINY)
    assert liveness.sweep(ctx) == 1
    assert attempts == [2, 2]
    assert ctx.store.get_liveness("ven-1")["pending"] is None
    clock.advance(LEASE * 5)
    assert liveness.sweep(ctx) == 0
    assert attempts == [2, 2]


def test_a_process_that_died_in_the_callback_is_replaced_after_the_lease(ctx, calls, clock):
    liveness.run_transition(ctx, liveness.seen(ctx, "ven-1"))
    clock.advance(THRESHOLD)
    # Another process won the transition and died before completing it.
    [(ven_id, epoch)] = ctx.store.due_offline(clock(), 10)
    won = ctx.store.claim_offline(ven_id, epoch, clock(), clock() + LEASE)
    assert won == {"ven_id": "ven-1", "kind": "offline", "epoch": 2}
    assert liveness.sweep(ctx) == 0
    clock.advance(LEASE - TINY)
    assert liveness.sweep(ctx) == 0
    assert calls.offline == []
    clock.advance(TINY)
    assert liveness.sweep(ctx) == 1
    assert calls.offline == [("ven-1", 2)]
    clock.advance(LEASE * 2)
    assert liveness.sweep(ctx) == 0
    assert calls.offline == [("ven-1", 2)]


def test_an_online_callback_lost_with_its_request_is_rerun_by_a_sweep(ctx, calls, clock):
    # The worker that recorded the message died before it ran the callback.
    assert liveness.seen(ctx, "ven-1")["epoch"] == 1
    clock.advance(LEASE / 2)
    assert liveness.seen(ctx, "ven-1") is None  # its next poll leaves the pending callback alone
    assert liveness.sweep(ctx) == 0
    clock.advance(LEASE / 2)
    assert liveness.sweep(ctx) == 1
    assert calls.online == [("ven-1", 1)]
    assert ctx.store.get_liveness("ven-1")["pending"] is None


def test_a_newer_transition_supersedes_an_unfinished_one(ctx, calls, clock):
    liveness.run_transition(ctx, liveness.seen(ctx, "ven-1"))
    clock.advance(THRESHOLD)
    [(ven_id, epoch)] = ctx.store.due_offline(clock(), 10)
    ctx.store.claim_offline(ven_id, epoch, clock(), clock() + LEASE)  # and dies
    clock.advance(timedelta(seconds=1))
    back = liveness.seen(ctx, "ven-1")
    assert back["epoch"] == 3
    liveness.run_transition(ctx, back)
    clock.advance(LEASE * 2)
    liveness.seen(ctx, "ven-1")
    liveness.sweep(ctx)
    assert calls.offline == []
    assert calls.online == [("ven-1", 1), ("ven-1", 3)]


def test_a_ven_whose_registration_ended_is_not_reported_offline(ctx, calls, clock):
    liveness.run_transition(ctx, liveness.seen(ctx, "ven-1"))
    # A message that raced the cancellation recorded the VEN after its row was forgotten.
    ctx.store.put_ven(registered("ven-1", registration_id=None))
    clock.advance(THRESHOLD)
    assert liveness.sweep(ctx) == 0
    assert calls.offline == []
    row = ctx.store.get_liveness("ven-1")
    assert (row["state"], row["epoch"], row["pending"]) == ("offline", 2, None)


def test_a_sweep_takes_every_due_ven_in_batches(ctx, calls, clock):
    ven_ids = [f"ven-{n:02d}" for n in range(7)]
    for ven_id in ven_ids:
        ctx.store.put_ven(registered(ven_id))
        liveness.run_transition(ctx, liveness.seen(ctx, ven_id))
    clock.advance(THRESHOLD)
    assert liveness.sweep(ctx, limit=2) == 7
    assert sorted(v for v, _ in calls.offline) == ven_ids


def test_sweep_at_an_explicit_time(ctx, calls, clock):
    liveness.run_transition(ctx, liveness.seen(ctx, "ven-1"))
    assert liveness.sweep(ctx, now=T0 + THRESHOLD - TINY) == 0
    assert liveness.sweep(ctx, now=T0 + THRESHOLD) == 1


def test_handler_without_epoch_and_signals(ctx, clock):
    online, offline, sent = [], [], []
    ctx.handlers = {"on_ven_online": online.append,
                    "on_ven_offline": lambda ven_id: offline.append(ven_id)}
    ctx.emit = lambda name, **data: sent.append((name, data))
    liveness.run_transition(ctx, liveness.seen(ctx, "ven-1"))
    clock.advance(THRESHOLD)
    liveness.sweep(ctx)
    assert online == ["ven-1"] and offline == ["ven-1"]
    assert sent == [("ven_online", {"ven_id": "ven-1", "epoch": 1}),
                    ("ven_offline", {"ven_id": "ven-1", "epoch": 2})]


# -- several processes' views of one store -----------------------------------------------------


@pytest.fixture(params=SHARED)
def shared_uri(request, tmp_path):
    return URI_FACTORIES[request.param](tmp_path)


def test_concurrent_sweeps_on_one_store_run_each_transition_once(shared_uri, clock):
    """Eight store objects (as eight workers would open) sweep at once: one callback per VEN."""
    ven_ids = [f"ven-{n:02d}" for n in range(20)]
    calls = Calls()
    stores = [open_store(shared_uri) for _ in range(8)]
    try:
        contexts = [Context(settings=Settings(), store=s, handlers=calls.handlers(), clock=clock)
                    for s in stores]
        for ven_id in ven_ids:
            stores[0].put_ven(registered(ven_id))
            liveness.run_transition(contexts[0], liveness.seen(contexts[0], ven_id))
        clock.advance(THRESHOLD)
        barrier = threading.Barrier(len(contexts))
        ran, errors = [], []

        def worker(context):
            try:
                barrier.wait(timeout=10)
                ran.append(liveness.sweep(context))
            except Exception as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(c,)) for c in contexts]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert errors == []
        assert sum(ran) == len(ven_ids)
        assert sorted(calls.offline) == [(ven_id, 2) for ven_id in ven_ids]
    finally:
        for s in stores:
            s.close()


# -- outages: a VEN's silence counts only while the VTN was watching ------------------------------

SWEEP = timedelta(seconds=5)  # the default OPENADR_SWEEP_INTERVAL
# The longest gap between two scheduled passes that is no outage: twice the interval plus grace.
SLACK = 2 * SWEEP + timedelta(seconds=5)


def watched(ctx, calls, clock, length, ven_ids=(), step=SWEEP):
    """Scheduled passes every ``step``, from now to ``length`` later (both included), each
    after the VENs in ``ven_ids`` polled. Returns how many transitions the passes ran."""
    ran = 0
    end = clock.now + length
    while True:
        for ven_id in ven_ids:
            liveness.seen(ctx, ven_id)
        ran += liveness.sweep(ctx, interval=SWEEP)
        if clock.now >= end:
            return ran
        clock.advance(min(step, end - clock.now))


def test_a_ven_silenced_by_an_outage_is_not_declared_offline(ctx, calls, clock):
    liveness.run_transition(ctx, liveness.seen(ctx, "ven-1"))
    assert watched(ctx, calls, clock, timedelta(seconds=20), ["ven-1"]) == 0
    last_poll = clock.now
    clock.advance(timedelta(minutes=10))  # the store is down: no pass, no message recorded
    back = clock.now
    assert liveness.sweep(ctx, interval=SWEEP) == 0  # its stored deadline passed long ago
    assert ctx.store.get_liveness("ven-1")["offline_at"] == last_poll + THRESHOLD
    assert liveness.watching_since(ctx) == back
    clock.advance(POLL)
    assert liveness.seen(ctx, "ven-1") is None  # still online: no transition either way
    assert watched(ctx, calls, clock, THRESHOLD * 3, ["ven-1"]) == 0
    assert calls.offline == [] and calls.online == [("ven-1", 1)]


def test_a_ven_really_gone_goes_offline_one_deadline_after_the_vtn_came_back(ctx, calls, clock):
    liveness.run_transition(ctx, liveness.seen(ctx, "ven-1"))
    watched(ctx, calls, clock, timedelta(seconds=10), ["ven-1"])
    clock.advance(timedelta(minutes=10))
    back = clock.now
    assert watched(ctx, calls, clock, THRESHOLD - TINY) == 0
    assert calls.offline == []
    assert clock.now == back + THRESHOLD - TINY
    clock.advance(TINY)
    assert liveness.sweep(ctx, interval=SWEEP) == 1
    assert watched(ctx, calls, clock, THRESHOLD * 2) == 0
    assert calls.offline == [("ven-1", 2)]


def test_a_gap_up_to_the_slack_is_no_outage(ctx, calls, clock):
    liveness.run_transition(ctx, liveness.seen(ctx, "ven-1"))
    liveness.sweep(ctx, interval=SWEEP)
    clock.advance(SLACK)  # a slow pass: late, but within what the previous one promised
    assert liveness.sweep(ctx, interval=SWEEP) == 0
    assert liveness.watching_since(ctx) == T0  # the first pass began the watch
    watched(ctx, calls, clock, THRESHOLD - SLACK)
    assert calls.offline == [("ven-1", 2)]  # at its own deadline: nothing was extended


def test_a_gap_longer_than_the_slack_is_an_outage(ctx, calls, clock, caplog):
    liveness.run_transition(ctx, liveness.seen(ctx, "ven-1"))
    liveness.sweep(ctx, interval=SWEEP)
    clock.advance(SLACK + TINY)
    with caplog.at_level(logging.WARNING, logger="flask_openadr"):
        assert liveness.sweep(ctx, interval=SWEEP) == 0
    assert "no liveness sweep ran from 2026-12-01 12:00:00" in caplog.text
    assert liveness.watching_since(ctx) == clock.now
    watched(ctx, calls, clock, THRESHOLD - SLACK)
    assert calls.offline == []  # its stored deadline passed, its extended one has not


def test_an_unscheduled_sweep_applies_the_recorded_outage_and_records_none(ctx, calls, clock):
    liveness.run_transition(ctx, liveness.seen(ctx, "ven-1"))
    assert liveness.sweep(ctx) == 0 and liveness.watching_since(ctx) is None
    liveness.sweep(ctx, interval=SWEEP)
    clock.advance(timedelta(minutes=10))
    liveness.sweep(ctx, interval=SWEEP)  # notices the outage
    back = clock.now
    record = ctx.store.get_record(*liveness.WATCH_RECORD)
    clock.advance(THRESHOLD - TINY)
    assert liveness.sweep(ctx) == 0  # a cron job's vtn.sweep(), say
    assert ctx.store.get_record(*liveness.WATCH_RECORD) == record
    clock.advance(TINY)
    assert liveness.sweep(ctx) == 1
    assert calls.offline == [("ven-1", 2)] and liveness.watching_since(ctx) == back


def test_the_outage_extension_follows_each_vens_deadline(ctx, calls, clock):
    ctx.store.put_ven(registered("ven-slow", poll_frequency=timedelta(seconds=60)))
    for ven_id in ("ven-1", "ven-slow"):
        liveness.run_transition(ctx, liveness.seen(ctx, ven_id))
    liveness.sweep(ctx, interval=SWEEP)
    clock.advance(timedelta(minutes=10))
    back = clock.now
    watched(ctx, calls, clock, THRESHOLD)
    assert calls.offline == [("ven-1", 2)]
    slow = liveness.offline_after(ctx.store.get_ven("ven-slow"), ctx.settings)
    assert slow == timedelta(seconds=185)
    watched(ctx, calls, clock, back + slow - clock.now - TINY)
    assert calls.offline == [("ven-1", 2)]
    watched(ctx, calls, clock, TINY)
    assert calls.offline == [("ven-1", 2), ("ven-slow", 2)]


def test_presence_and_offline_deadline_count_the_outage(ctx, clock):
    liveness.run_transition(ctx, liveness.seen(ctx, "ven-1"))
    ven = ctx.store.get_ven("ven-1")
    row = ctx.store.get_liveness("ven-1")
    back = T0 + timedelta(minutes=10)
    assert liveness.offline_deadline(row["offline_at"], ven, ctx.settings, None) == T0 + THRESHOLD
    assert liveness.offline_deadline(row["offline_at"], ven, ctx.settings,
                                     back) == back + THRESHOLD
    early = T0 + timedelta(seconds=1)  # an outage that ended before it was last seen
    assert liveness.offline_deadline(T0 + timedelta(minutes=20), ven, ctx.settings,
                                     early) == T0 + timedelta(minutes=20)
    later = back + THRESHOLD - TINY
    assert liveness.presence(row, later) == liveness.STALE
    assert liveness.presence(row, later, back + THRESHOLD) == "online"
    assert liveness.presence(row, back + THRESHOLD, back + THRESHOLD) == liveness.STALE


def test_processes_share_one_watch_and_decide_each_offline_once(shared_uri, clock):
    """Two workers sweep on one store; one of them dies, the other keeps the watch; the store
    goes down for both; after it the outage is seen once and each gone VEN goes offline once."""
    calls = Calls()
    stores = [open_store(shared_uri) for _ in range(2)]
    try:
        a, b = (Context(settings=Settings(), store=s, handlers=calls.handlers(), clock=clock)
                for s in stores)
        for n in range(3):
            a.store.put_ven(registered(f"ven-{n}"))
            liveness.run_transition(a, liveness.seen(a, f"ven-{n}"))
        liveness.sweep(a, interval=SWEEP)
        liveness.sweep(b, interval=SWEEP)
        for _ in range(4):  # only b sweeps from here: a died, the VTN still watches
            clock.advance(SWEEP)
            liveness.sweep(b, interval=SWEEP)
        assert liveness.watching_since(a) == T0
        clock.advance(timedelta(minutes=5))  # the store is down for both
        back = clock.now
        liveness.seen(b, "ven-0")  # a VEN's first poll after the outage
        assert liveness.sweep(a, interval=SWEEP) == 0  # a restarted worker notices the outage
        clock.advance(SWEEP)
        assert liveness.sweep(b, interval=SWEEP) == 0
        assert liveness.watching_since(b) == back  # b saw a's record: no second outage
        while clock.now < back + THRESHOLD * 2:
            clock.advance(SWEEP)
            liveness.seen(a, "ven-0")
            for context in (a, b):
                liveness.sweep(context, interval=SWEEP)
        assert sorted(calls.offline) == [("ven-1", 2), ("ven-2", 2)]
        assert calls.online == [("ven-0", 1), ("ven-1", 1), ("ven-2", 1)]
    finally:
        for s in stores:
            s.close()


def test_vens_shows_the_extended_deadline(app, vtn, registered_ven, clock):
    with app.app_context():
        vtn.sweep(interval=5)
    clock.advance(timedelta(minutes=10))
    with app.app_context():
        assert vtn.sweep(interval=timedelta(seconds=5)) == 0
        [listed] = vtn.vens()
    assert listed["liveness"] == "online" and listed["online"] is True
    assert listed["offline_at"] == clock.now + THRESHOLD
    assert listed["last_seen"] == T0


# -- through the VTN and HTTP --------------------------------------------------------------------


@pytest.fixture
def recorded(vtn):
    calls = Calls()
    for name, fn in calls.handlers().items():
        vtn.handler(name)(fn)
    return calls


def test_poll_stop_sweep_poll(app, vtn, recorded, registered_ven, clock):
    ven_id = registered_ven.ven_id
    assert recorded.online == [(ven_id, 1)]  # the registration was the first sight
    for _ in range(3):
        clock.advance(POLL)
        registered_ven.poll()
    assert recorded.online == [(ven_id, 1)]
    clock.advance(THRESHOLD - TINY)
    with app.app_context():
        assert vtn.sweep() == 0
    clock.advance(TINY)
    with app.app_context():
        assert vtn.sweep() == 1
        assert vtn.sweep() == 0
        [listed] = vtn.vens()
    assert recorded.offline == [(ven_id, 2)]
    assert listed["online"] is False and listed["epoch"] == 2
    clock.advance(timedelta(minutes=5))
    name, reply = registered_ven.poll()
    assert name == "oadrResponse" and reply["response"]["response_code"] == 200
    registered_ven.poll()
    assert recorded.online == [(ven_id, 1), (ven_id, 3)]
    assert recorded.offline == [(ven_id, 2)]
    with app.app_context():
        [listed] = vtn.vens()
    assert listed["online"] is True and listed["last_seen"] == clock.now


def test_every_authenticated_message_updates_last_seen(app, vtn, registered_ven, clock):
    def last_seen():
        with app.app_context():
            return vtn.vens()[0]["last_seen"]

    assert last_seen() == T0
    clock.advance(timedelta(seconds=1))
    registered_ven.request_event()
    assert last_seen() == clock.now
    clock.advance(timedelta(seconds=1))
    # Rejected by the service (no such event), but it came from the registered VEN.
    registered_ven.send("EiEvent", "oadrCreatedEvent", {
        "response": {"response_code": 200, "response_description": "OK", "request_id": ""},
        "event_responses": [{"response_code": 200, "response_description": "OK",
                             "request_id": "r", "opt_type": "optIn",
                             "qualified_event_id": {"event_id": "nope",
                                                    "modification_number": 0}}],
        "ven_id": registered_ven.ven_id})
    assert last_seen() == clock.now
    clock.advance(timedelta(seconds=1))
    registered_ven.register(renew=True)
    assert last_seen() == clock.now


def test_a_message_that_is_not_authenticated_does_not_count(app, vtn, registered_ven, clock):
    clock.advance(timedelta(seconds=1))
    impostor = make_ven(app, ven_id="somebody-else")
    name, reply = impostor.poll()
    assert reply["response"]["response_code"] == 452
    with app.app_context():
        assert vtn.store.get_liveness("somebody-else") is None
        assert vtn.vens()[0]["last_seen"] == T0


def test_a_failing_online_handler_does_not_change_the_reply(app, vtn, ven, clock, caplog):
    attempts = []

    @vtn.on_ven_online
    def online(ven_id):
        attempts.append(ven_id)
        raise RuntimeError("CRM down")

    with caplog.at_level(logging.ERROR, logger="flask_openadr"):
        name, reply = ven.register()
    assert name == "oadrCreatedPartyRegistration"
    assert reply["response"]["response_code"] == 200 and reply["registration_id"]
    assert "CRM down" in caplog.text
    name, reply = ven.poll()
    assert name == "oadrRegisterReport"
    assert attempts == [ven.ven_id]
    clock.advance(LEASE)
    ven.poll()  # still online: the poll does not retry it, the sweep does
    assert attempts == [ven.ven_id]
    with app.app_context():
        assert vtn.sweep() == 1
    assert attempts == [ven.ven_id] * 2


def test_a_cancelled_registration_gets_no_offline_callback(app, vtn, recorded, registered_ven,
                                                           clock):
    name, reply = registered_ven.cancel_registration()
    assert reply["response"]["response_code"] == 200
    with app.app_context():
        # Retired at once: offline without a callback, and never swept again.
        row = vtn.store.get_liveness(registered_ven.ven_id)
        assert (row["state"], row["epoch"], row["pending"]) == ("offline", 2, None)
    clock.advance(THRESHOLD * 10)
    with app.app_context():
        assert vtn.sweep() == 0
        [listed] = vtn.vens()
    assert recorded.offline == []
    assert listed["online"] is False and listed["epoch"] == 2


def test_epochs_keep_counting_across_registrations(app, vtn, recorded, registered_ven, clock):
    """(ven_id, epoch) must name one transition for ever, or a handler that deduplicates on it
    would skip the online call of a VEN that registered again."""
    registered_ven.cancel_registration()
    registered_ven.registration_id = None
    registered_ven.register()
    assert recorded.online == [(registered_ven.ven_id, 1), (registered_ven.ven_id, 3)]
    clock.advance(THRESHOLD)
    with app.app_context():
        assert vtn.sweep() == 1
    assert recorded.offline == [(registered_ven.ven_id, 4)]


def test_a_new_registration_counts_as_seen(app, vtn, recorded, ven, clock):
    ven.register()
    assert recorded.online == [(ven.ven_id, 1)]
    ven.register(renew=True)
    assert recorded.online == [(ven.ven_id, 1)]


def test_the_signals_are_sent_with_the_epoch(app, vtn, clock):
    sent = []

    def receiver(sender, **data):
        sent.append((sender, data))

    with signals.ven_online.connected_to(receiver, app), \
            signals.ven_offline.connected_to(receiver, app):
        ven = make_ven(app)
        ven.register()
        clock.advance(THRESHOLD)
        with app.app_context():
            vtn.sweep()
    assert sent == [(app, {"ven_id": ven.ven_id, "epoch": 1}),
                    (app, {"ven_id": ven.ven_id, "epoch": 2})]
    assert signals.BY_NAME["ven_online"] is signals.ven_online
    assert signals.BY_NAME["ven_offline"] is signals.ven_offline


def test_the_offline_callback_runs_in_an_app_context(app, vtn, ven, clock):
    seen = []

    @vtn.on_ven_offline
    def offline(ven_id):
        from flask import current_app

        seen.append(current_app.name)

    ven.register()
    state = app.extensions["openadr"]
    # Scheduled passes all along (a single jump of the clock would look like an outage).
    for _ in range(8):
        state.sweep_once()
        clock.advance(THRESHOLD / 7)
    assert seen == [app.name]


# -- handler signatures ---------------------------------------------------------------------------


def test_handlers_that_declare_epoch_get_it(tmp_path):
    vtn = VTN(plain_app(tmp_path))
    got = []

    def keyword_only(ven_id, *, epoch):
        got.append(("kw", ven_id, epoch))

    def var_keyword(ven_id, **extra):
        got.append(("extra", ven_id, extra))

    def plain(ven_id):
        got.append(("plain", ven_id))

    for fn in (keyword_only, var_keyword, plain):
        assert vtn.on_ven_online(fn) is fn
        vtn._handlers["on_ven_online"]("v", 4)
    assert got == [("kw", "v", 4), ("extra", "v", {"epoch": 4}), ("plain", "v")]


def test_a_handler_that_cannot_take_the_ven_id_is_refused_at_registration(tmp_path):
    vtn = VTN(plain_app(tmp_path))
    with pytest.raises(TypeError, match="on_ven_offline.*venID"):
        vtn.on_ven_offline(lambda: None)
    with pytest.raises(TypeError, match="on_ven_online"):
        vtn.on_ven_online(lambda ven_id, reason: None)


# -- configuration -----------------------------------------------------------------------------


def test_liveness_defaults():
    config = {}
    settings = load_settings(config, {})
    assert config["OPENADR_BACKGROUND"] is None and settings.background is None
    assert settings.offline_grace == timedelta(seconds=5)
    assert settings.sweep_interval == timedelta(seconds=5)
    assert settings.callback_lease == timedelta(seconds=60)


@pytest.mark.parametrize("key, value, expected", [
    ("OPENADR_BACKGROUND", "off", "off"),
    ("OPENADR_BACKGROUND", "thread", "thread"),
    ("OPENADR_OFFLINE_GRACE", 0, timedelta(0)),
    ("OPENADR_OFFLINE_GRACE", 2.5, timedelta(seconds=2.5)),
    ("OPENADR_SWEEP_INTERVAL", 0.1, timedelta(seconds=0.1)),
    ("OPENADR_SWEEP_INTERVAL", timedelta(minutes=1), timedelta(minutes=1)),
    ("OPENADR_CALLBACK_LEASE", 300, timedelta(minutes=5)),
])
def test_liveness_keys(key, value, expected):
    from flask_openadr.config import KEYS

    field = KEYS[key][0]
    assert getattr(load_settings({key: value}, {}), field) == expected


@pytest.mark.parametrize("key, value", [
    ("OPENADR_BACKGROUND", "process"),
    ("OPENADR_BACKGROUND", True),
    ("OPENADR_OFFLINE_GRACE", -1),
    ("OPENADR_OFFLINE_GRACE", "5"),
    ("OPENADR_SWEEP_INTERVAL", 0.05),
    ("OPENADR_SWEEP_INTERVAL", float("nan")),
    ("OPENADR_CALLBACK_LEASE", 0.5),
    ("OPENADR_CALLBACK_LEASE", float("inf")),
    ("OPENADR_CALLBACK_LEASE", True),
])
def test_bad_liveness_values_name_the_key(key, value):
    with pytest.raises(ConfigurationError, match=key):
        load_settings({key: value}, {})


# -- the sweeper thread ---------------------------------------------------------------------------


def sweeper_threads(app_name=""):
    """The live sweeper threads (of the app named ``app_name``)."""
    prefix = f"flask-openadr-sweeper[{app_name}" + ("]" if app_name else "")
    return [t for t in threading.enumerate() if t.name.startswith(prefix)]


def plain_app(tmp_path, name="live", **config):
    """An app that is not TESTING, so the background default is "thread"."""
    app = Flask(name, instance_path=str(tmp_path / name))
    app.config.update(OPENADR_STORE_URI="memory://", OPENADR_SWEEP_INTERVAL=0.1, **config)
    return app


@pytest.fixture(autouse=True)
def stop_sweepers():
    yield
    gc.collect()
    gunicorn_hooks.stop_sweepers()
    # A sweeper whose app was already collected ends on its next pass.
    for thread in sweeper_threads():
        thread.join(timeout=10)
    assert sweeper_threads() == []


class FlakyStore(MemoryStore):
    """A memory store whose first due_offline fails, as a store that lost its connection would."""

    def __init__(self):
        super().__init__()
        self.failures = 1

    def due_offline(self, now, limit):
        if self.failures:
            self.failures -= 1
            raise ConnectionError("store went away")
        return super().due_offline(now, limit)


def test_the_sweeper_survives_a_failing_pass_and_stops_cleanly(clock, caplog):
    store = FlakyStore()
    store.put_ven(registered("ven-1"))
    went_offline = threading.Event()
    ctx = Context(settings=Settings(), store=store, clock=clock,
                  handlers={"on_ven_offline": lambda ven_id: went_offline.set()})
    liveness.run_transition(ctx, liveness.seen(ctx, "ven-1"))
    clock.advance(THRESHOLD)
    passes = []

    def run_pass():
        passes.append(1)
        liveness.sweep(ctx)

    sweeper = runtime.Sweeper(run_pass, 0.1, name="flask-openadr-sweeper[test]")
    with caplog.at_level(logging.ERROR, logger="flask_openadr"):
        assert sweeper.start() is True
        assert sweeper.start() is False  # idempotent
        assert went_offline.wait(timeout=10)
    assert store.failures == 0 and len(passes) >= 2
    assert "liveness sweeper pass failed" in caplog.text and "store went away" in caplog.text
    assert sweeper.running
    assert sweeper.stop(timeout=10) is True
    assert not sweeper.running and sweeper_threads() == []
    assert sweeper.stop() is True  # stopping twice is harmless
    count = len(passes)
    went_offline.clear()
    assert not went_offline.wait(timeout=0.3)
    assert len(passes) == count


def test_init_app_starts_no_thread(tmp_path):
    before = set(threading.enumerate())
    app = plain_app(tmp_path)
    vtn = VTN(app)
    with app.app_context():
        vtn.vens()
    assert set(threading.enumerate()) == before
    assert not app.extensions["openadr"].sweeper.running


def test_the_first_request_starts_one_sweeper(tmp_path):
    app = plain_app(tmp_path, "first-request")
    VTN(app)
    ven = make_ven(app)
    ven.register()
    [thread] = sweeper_threads("first-request")
    assert thread.daemon
    ven.poll()
    ven.poll()
    assert sweeper_threads("first-request") == [thread]


def test_background_off_starts_no_thread(tmp_path):
    app = plain_app(tmp_path, "off", OPENADR_BACKGROUND="off")
    VTN(app)
    make_ven(app).register()
    assert sweeper_threads("off") == []


def test_testing_apps_default_to_no_thread_unless_asked(tmp_path):
    app = plain_app(tmp_path, "t1", TESTING=True)
    VTN(app)
    make_ven(app).register()
    assert sweeper_threads("t1") == []
    asked = plain_app(tmp_path, "t2", TESTING=True, OPENADR_BACKGROUND="thread")
    VTN(asked)
    make_ven(asked).register()
    assert len(sweeper_threads("t2")) == 1


def test_the_sweeper_thread_sweeps_in_an_app_context(tmp_path):
    clock = FrozenClock()
    app = plain_app(tmp_path)
    vtn = VTN(app, clock=clock)
    went_offline = threading.Event()
    names = []

    @vtn.on_ven_offline
    def offline(ven_id):
        from flask import current_app

        names.append(current_app.name)
        went_offline.set()

    make_ven(app).register()
    # The thread sweeps every 0.1 s; the clock moves in steps well inside the slack its passes
    # allow (twice the interval plus the 5 s of grace), so no step looks like an outage.
    for _ in range(400):
        if went_offline.wait(timeout=0.02):
            break
        clock.advance(timedelta(seconds=0.5))
    assert went_offline.is_set()
    assert names == [app.name]


def test_the_gunicorn_hooks_start_and_stop_the_sweepers_of_loaded_apps(tmp_path):
    gc.collect()
    apps = [plain_app(tmp_path, "hook-a"), plain_app(tmp_path, "hook-b", OPENADR_BACKGROUND="off")]
    for app in apps:
        VTN(app)
    gunicorn_hooks.post_fork(None, None)
    [thread] = sweeper_threads("hook-a")
    assert sweeper_threads("hook-b") == []
    gunicorn_hooks.post_worker_init(None)
    assert sweeper_threads("hook-a") == [thread]
    gunicorn_hooks.worker_exit(None, None)
    assert sweeper_threads() == []


def test_stop_background_stops_every_sweeper_of_the_process(tmp_path):
    app = plain_app(tmp_path, "stop-all")
    VTN(app)
    make_ven(app).register()
    other = runtime.Sweeper(lambda: None, 0.1, name="flask-openadr-sweeper[loose]")
    other.start()
    assert len(sweeper_threads("stop-all")) == 1 and len(sweeper_threads("loose")) == 1
    runtime.stop_background()
    assert sweeper_threads() == []


EXITING = """
import logging, sys
from flask import Flask
from flask_openadr import VTN
from flask_openadr.testing import VENTestClient
logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(message)s")
app = Flask("exiting", instance_path=sys.argv[1])
app.config.update(OPENADR_STORE_URI="memory://")
VTN(app)
VENTestClient(app.test_client()).register()
print("serving", flush=True)
"""


def test_interpreter_exit_stops_the_sweeper_cleanly(tmp_path):
    done = subprocess.run([sys.executable, "-c", EXITING, str(tmp_path)], capture_output=True,
                          text=True, timeout=60, env=dict(os.environ, PYTHONPATH=ROOT))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    started = [n for n, line in enumerate(lines) if line.startswith("liveness sweeper started")]
    stopped = [n for n, line in enumerate(lines) if line.startswith("liveness sweeper stopped")]
    assert started and stopped and stopped[0] > lines.index("serving") > started[0]
    # The push sender is the same thread class: its lines name it, not the liveness sweeper.
    pushers = [line for line in lines if line.startswith("push sender")]
    assert any(line.startswith("push sender started") for line in pushers), lines
    assert len(started) == 1, lines


def test_a_sweeper_of_a_discarded_app_ends(tmp_path):
    app = plain_app(tmp_path, "discarded")
    VTN(app)
    make_ven(app).register()
    [thread] = sweeper_threads("discarded")
    del app
    gc.collect()
    thread.join(timeout=10)
    assert not thread.is_alive()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_sweeper_inherited_over_fork_is_not_running_in_the_child():
    sweeper = runtime.Sweeper(lambda: None, 0.1, name="flask-openadr-sweeper[fork]")
    sweeper.start()
    read_end, write_end = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork() with threads, 3.12+
        pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            result = f"{int(sweeper.running)}{int(sweeper.start())}{int(sweeper.running)}"
            sweeper.stop(timeout=5)
            os.write(write_end, result.encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as fh:
        result = fh.read().decode()
    os.waitpid(pid, 0)
    assert result == "011"  # not running after the fork; starts a thread of its own
    assert sweeper.running
    sweeper.stop()
