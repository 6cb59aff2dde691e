"""HTTP push end to end: gunicorn (2 workers, both running the push sender) pushing to real push
VENs (tests/support/push_ven.py) on loopback, on SQLite and on PostgreSQL; and the push rules on
their own (leases, back-off, addresses)."""
from __future__ import annotations

import contextlib
import json
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest
from flask import Flask

from flask_openadr import VTN, push, signals
from flask_openadr.config import Settings
from flask_openadr.errors import InvalidData
from flask_openadr.services import push as rules
from flask_openadr.services.context import Context
from flask_openadr.store import open_store
from flask_openadr.store.memory import MemoryStore
from tests.support.backends import SHARED, URI_FACTORIES, postgresql_uri
from tests.support.servers import Gunicorn

pytest.importorskip("openleadr")
from tests.support.push_ven import PushVEN  # noqa: E402 - needs openleadr

#: Settings of the served VTN: a short back-off and timeout, so that retries happen within a
#: test, and a long redelivery time, so that every message counted arrived by a push, not by a
#: redelivery.
PUSH_CONFIG = {"OPENADR_PUSH_RETRY_MAX": 0.5, "OPENADR_PUSH_TIMEOUT": 1,
               "OPENADR_REDELIVERY_AFTER": 60}


def _sqlite(tmp_path):
    return "sqlite:///" + str(tmp_path / "vtn.sqlite3")


STORES = {"sqlite": _sqlite, "postgresql": postgresql_uri}


@pytest.fixture(params=sorted(STORES))
def served(request, tmp_path):
    """gunicorn, 2 workers with the sender hooks, on a shared store; yields (base, operator
    app, operator VTN, handler log path)."""
    store_uri = STORES[request.param](tmp_path)
    hooks = tmp_path / "gunicorn_conf.py"
    hooks.write_text("from flask_openadr.gunicorn import post_fork, post_worker_init, "
                     "worker_exit  # noqa: F401\n")
    log_path = tmp_path / "handlers.jsonl"
    server = Gunicorn("tests.support.e2e_app:create_app()", tmp_path, workers=2,
                      args=["-c", str(hooks)],
                      env={"E2E_STORE_URI": store_uri, "E2E_LOG": str(log_path),
                           "E2E_INSTANCE": str(tmp_path / "instance"),
                           "E2E_CONFIG": json.dumps(PUSH_CONFIG)})
    # The operator's portal: another process's view of the same store; it serves no request,
    # so it pushes nothing itself.
    app = Flask("operator", instance_path=str(tmp_path / "operator"))
    app.config.update(OPENADR_STORE_URI=store_uri, OPENADR_VTN_ID="E2E-VTN")
    vtn = VTN(app)
    try:
        yield server.base, app, vtn, log_path
    finally:
        server.stop()
        app.extensions["openadr"].context.store.close()


@contextlib.contextmanager
def push_vens(base, count=1):
    vens = [PushVEN(base, name=f"pushy-{n}") for n in range(count)]
    try:
        for ven in vens:
            ven.start()
        yield vens
    finally:
        for ven in vens:
            ven.stop()


def wait_for(predicate, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def add_event(vtn, ven_ids, *, hour: int = 1):
    # Events for one VEN in one market context must not overlap: several go to separate hours.
    start = datetime.now(timezone.utc) + timedelta(hours=hour)
    return vtn.add_event(targets={"ven_ids": list(ven_ids)}, signal_name="SIMPLE",
                         signal_type="level", intervals=[{
                             "dtstart": start, "duration": timedelta(minutes=30),
                             "signal_payload": 1.0}])


def created_events(log_path):
    try:
        with open(log_path, encoding="utf-8") as fh:
            lines = [json.loads(line) for line in fh]
    except FileNotFoundError:
        return []
    return [line for line in lines if line["kind"] == "created_event"]


def distributed(ven):
    """(eventID, modificationNumber, status) of each event of each oadrDistributeEvent."""
    return [[(e["event_descriptor"]["event_id"], e["event_descriptor"]["modification_number"],
              e["event_descriptor"]["event_status"]) for e in payload["events"]]
            for payload, _ in ven.of("oadrDistributeEvent")]


def test_every_message_type_is_pushed_once_and_in_order(served):
    base, app, vtn, log_path = served
    with push_vens(base) as (ven,):
        ven.register()
        # Exactly one METADATA oadrRegisterReport after the registration (the harness checks).
        wait_for(lambda: ven.names() == ["oadrRegisterReport"], what="the METADATA report")
        assert ven.paths == ["/ven/OpenADR2/Simple/2.0b/EiReport"]

        with app.app_context():
            queued = time.monotonic()
            event_id = add_event(vtn, [ven.ven_id])
        wait_for(lambda: ven.of("oadrDistributeEvent"), what="the event")
        assert ven.of("oadrDistributeEvent")[0][1] - queued < 1.0
        # The empty 200 was enough; the VEN's oadrCreatedEvent came later on EiEvent.
        wait_for(lambda: created_events(log_path), what="oadrCreatedEvent")
        assert created_events(log_path)[0]["event_id"] == event_id

        with app.app_context():
            vtn.modify_event(event_id, priority=2)
            vtn.cancel_event(event_id)
        wait_for(lambda: distributed(ven)[-1][0][2] == "cancelled", what="the cancellation")
        numbers = [batch[0][1] for batch in distributed(ven)]
        assert numbers == sorted(numbers) and numbers[0] == 0 and numbers[-1] == 2

        with app.app_context():
            report_request_id = vtn.request_metadata(ven.ven_id)
        wait_for(lambda: ven.of("oadrCreateReport"), what="oadrCreateReport")
        with app.app_context():
            vtn.cancel_report(ven.ven_id, report_request_id)
        wait_for(lambda: ven.of("oadrCancelReport"), what="oadrCancelReport")
        with app.app_context():
            vtn.request_reregistration(ven.ven_id)
        wait_for(lambda: ven.of("oadrRequestReregistration"), what="oadrRequestReregistration")
        with app.app_context():
            vtn.cancel_registration(ven.ven_id)
        wait_for(lambda: ven.of("oadrCancelPartyRegistration"), what="the cancellation")
        # The VEN's oadrCanceledPartyRegistration, answered synchronously, ended it.
        with app.app_context():
            wait_for(lambda: not [v for v in vtn.vens() if v["registration_id"]],
                     what="the registration to end")
        time.sleep(1.5)  # several sender passes: nothing acknowledged comes again
        names = ven.names()
        for name in ("oadrRegisterReport", "oadrCreateReport", "oadrCancelReport",
                     "oadrRequestReregistration", "oadrCancelPartyRegistration"):
            assert names.count(name) == 1, names
        assert ven.most_in_flight == 1  # one push at a time, from either worker
        assert {path.rsplit("/", 1)[1] for path in ven.paths} == {
            "EiReport", "EiEvent", "EiRegisterParty"}


def test_a_ven_that_was_unreachable_gets_everything_when_it_comes_back(served):
    base, app, vtn, log_path = served
    with push_vens(base) as (ven,):
        ven.register()
        wait_for(lambda: ven.names() == ["oadrRegisterReport"], what="the METADATA report")
        ven.stop()
        with app.app_context():
            event_ids = [add_event(vtn, [ven.ven_id], hour=hour) for hour in (1, 2, 3)]
            vtn.request_metadata(ven.ven_id)
        time.sleep(3)  # several failed attempts and back-offs (at most 0.5 s each)
        assert ven.names() == ["oadrRegisterReport"]
        ven.start()  # the same port again
        wait_for(lambda: ven.of("oadrCreateReport") and ven.of("oadrDistributeEvent"),
                 what="the queue after the restart")
        wait_for(lambda: {e["event_id"] for e in created_events(log_path)} == set(event_ids),
                 what="every event acknowledged")
        time.sleep(1.0)
        assert ven.names().count("oadrCreateReport") == 1
        assert {e for batch in distributed(ven) for e, _, _ in batch} == set(event_ids)


def test_a_failing_or_hanging_ven_does_not_hold_up_the_others(served):
    base, app, vtn, log_path = served
    with push_vens(base, count=3) as (failing, hanging, healthy):
        for ven in (failing, hanging, healthy):
            ven.register()
        wait_for(lambda: all(v.names() for v in (failing, hanging, healthy)),
                 what="the METADATA reports")
        failing.mode = "error"
        hanging.mode = "hang"
        with app.app_context():
            queued = time.monotonic()
            event_id = add_event(vtn, [failing.ven_id, hanging.ven_id, healthy.ven_id])
        wait_for(lambda: healthy.of("oadrDistributeEvent"), what="the healthy VEN's event")
        assert healthy.of("oadrDistributeEvent")[0][1] - queued < 1.0
        # A pull VEN beside them polls as always and gets the event too.
        name, reply = healthy.send(
            "EiRegisterParty", "oadrCreatePartyRegistration", request_id="pull-1",
            ven_name="puller", profile_name="2.0b", transport_name="simpleHttp",
            report_only=False, xml_signature=False, http_pull_model=True)
        puller = reply["ven_id"]
        with app.app_context():
            pulled_event = add_event(vtn, [puller])
        seen = set()
        for _ in range(5):
            name, reply = healthy.send("OadrPoll", "oadrPoll", ven_id=puller)
            if name == "oadrDistributeEvent":
                seen |= {e["event_descriptor"]["event_id"] for e in reply["events"]}
        assert pulled_event in seen
        time.sleep(2)  # retried (HTTP 500) and timed out (hang) meanwhile
        assert not failing.of("oadrDistributeEvent") and not hanging.of("oadrDistributeEvent")
        failing.mode = hanging.mode = "ok"
        wait_for(lambda: failing.of("oadrDistributeEvent") and hanging.of("oadrDistributeEvent"),
                 timeout=15, what="the event after recovery")
        for ven in (failing, hanging):
            assert distributed(ven)[0][0][0] == event_id


# ---------------------------------------------------------------------------------------------
# The rules on their own.


@pytest.mark.parametrize("address", ["ftp://ven.example", "ven.example", "", None,
                                     "http://", "http://ven.example/?a=1"])
def test_addresses_that_are_not_http_urls_are_refused(address):
    with pytest.raises(InvalidData) as caught:
        rules.normalise_address(address)
    assert "oadrTransportAddress" in caught.value.description


def test_address_normalisation_and_urls():
    assert rules.normalise_address(" https://ven.example:8443/base// ") == \
        "https://ven.example:8443/base"
    ctx = Context(Settings(push_path="/OpenADR2/Simple/2.0b"), MemoryStore())
    ven = {"transport_address": "https://ven.example:8443/base"}
    assert rules.url_for(ctx, ven, "oadrDistributeEvent") == \
        "https://ven.example:8443/base/OpenADR2/Simple/2.0b/EiEvent"
    assert rules.url_for(ctx, ven, "oadrCreateReport").endswith("/EiReport")
    assert rules.url_for(ctx, ven, "oadrRequestReregistration").endswith("/EiRegisterParty")


@pytest.fixture(params=sorted(URI_FACTORIES))
def any_store(request, tmp_path):
    opened = open_store(URI_FACTORIES[request.param](tmp_path))
    yield opened
    opened.close()


def test_one_lease_holder_at_a_time_and_a_capped_backoff(any_store):
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    ctx = Context(Settings(push_retry_max=timedelta(seconds=5)), any_store)
    lease = timedelta(seconds=10)
    assert rules.claim(ctx, "v", "a", t0, lease)
    assert not rules.claim(ctx, "v", "b", t0 + timedelta(seconds=9), lease)
    assert rules.claim(ctx, "v", "a", t0 + timedelta(seconds=9), lease)  # renewal
    # A lease that ran out (its holder died) goes to the next claimant.
    assert rules.claim(ctx, "v", "b", t0 + timedelta(seconds=20), lease)
    rules.release(ctx, "v", "a", failed=True, now=t0 + timedelta(seconds=21))  # not a's any more
    assert not rules.claim(ctx, "v", "a", t0 + timedelta(seconds=21), lease)
    waits = []
    now = t0 + timedelta(seconds=30)
    for _ in range(5):
        rules.release(ctx, "v", "b", failed=True, now=now)
        state = ctx.store.get_record(rules.PUSH_STATE, "v", "push")
        waits.append((state["next_attempt"] - now).total_seconds())
        assert not rules.claim(ctx, "v", "b", now, lease)  # backing off
        now = state["next_attempt"]
        assert rules.claim(ctx, "v", "b", now, lease)
    assert waits == [1, 2, 4, 5, 5]
    rules.release(ctx, "v", "b", failed=False, now=now)
    assert rules.claim(ctx, "v", "c", now, lease)


def test_a_sender_step_claims_and_takes_at_once_puts_back_a_failure_and_releases(any_store):
    from flask_openadr.services import outbox

    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    ctx = Context(Settings(push_retry_max=timedelta(seconds=5)), any_store)
    lease = timedelta(seconds=10)
    ctx.store.put_ven({"ven_id": "v", "registration_id": "r", "http_pull_model": False,
                       "transport_address": "http://ven.example"})
    outbox.push(ctx, "v", "oadrRequestReregistration", {"ven_id": "v"})
    outbox.push(ctx, "v", "oadrCancelPartyRegistration",
                {"request_id": "q", "registration_id": "r", "ven_id": "v"})

    first = rules.advance(ctx, "v", "a", t0, lease)
    assert first.taken.payload_name == "oadrRequestReregistration"
    assert ctx.store.get_record(rules.PUSH_STATE, "v", "push")["owner"] == "a"
    # Another sender gets nothing while "a" holds the lease, and takes nothing.
    assert rules.advance(ctx, "v", "b", t0, lease) == rules.Step(None, None, first.ven)
    assert [i["payload_name"] for i in ctx.store.list_outbox("v")] == [
        "oadrCancelPartyRegistration"]
    # The push failed: put back and released with a back-off, in one step.
    failed = rules.advance(ctx, "v", "a", t0, lease, undo_taken=first.taken, failed=True)
    assert failed.taken is None and failed.state["failures"] == 1 and failed.state["owner"] is None
    assert rules.advance(ctx, "v", "a", t0 + timedelta(seconds=0.5), lease).taken is None
    # After the back-off, the message that failed goes first, then the next, then the release.
    now = failed.state["next_attempt"]
    taken = []
    while (step := rules.advance(ctx, "v", "b", now, lease)).taken is not None:
        taken.append(step.taken.payload_name)
    assert taken == ["oadrRequestReregistration", "oadrCancelPartyRegistration"]
    assert step.state["owner"] is None and step.state["failures"] == 0
    assert rules.claim(ctx, "v", "c", now, lease)


def test_changes_hint_the_senders_and_a_turn_leaves_the_hint_of_what_is_next_due(any_store):
    from flask_openadr.services import events, outbox, push_due

    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    now = [t0]
    ctx = Context(Settings(redelivery_after=timedelta(minutes=2)), any_store,
                  clock=lambda: now[0])
    lease = timedelta(seconds=10)
    for ven_id, pull in (("v", False), ("p", True)):
        ctx.store.put_ven({"ven_id": ven_id, "registration_id": f"r-{ven_id}",
                           "http_pull_model": pull, "transport_address": "http://ven.example"})
    assert push_due.hinted(ctx, t0, 10) == []
    events.add_event(ctx, events.build_event(
        event_id="e", targets={"ven_ids": ["v", "p"]}, signal_name="SIMPLE",
        signal_type="level", market_context="http://mc.example", intervals=[
            {"dtstart": t0 + timedelta(hours=1), "duration": timedelta(hours=1),
             "signal_payload": 1.0}]))
    assert push_due.hinted(ctx, t0, 10) == ["v"]  # the pull VEN polls: no hint
    step = rules.advance(ctx, "v", "a", t0, lease)
    assert step.taken.payload_name == "oadrDistributeEvent"
    assert rules.advance(ctx, "v", "a", t0, lease).taken is None
    # Unanswered, the event is due again after the redelivery time: the hint is for then.
    assert push_due.hinted(ctx, t0 + timedelta(minutes=2) - timedelta(microseconds=1), 10) == []
    assert push_due.hinted(ctx, t0 + timedelta(minutes=2), 10) == ["v"]
    outbox.push(ctx, "p", "oadrRequestReregistration", {"ven_id": "p"})
    outbox.push(ctx, "v", "oadrRequestReregistration", {"ven_id": "v"})
    assert push_due.hinted(ctx, t0, 10) == ["v"]
    # A failed push leaves the hint at the end of the back-off, none before it.
    taken = rules.advance(ctx, "v", "a", t0, lease).taken
    assert taken.payload_name == "oadrRequestReregistration"
    failed = rules.advance(ctx, "v", "a", t0, lease, undo_taken=taken, failed=True)
    assert push_due.hinted(ctx, failed.state["next_attempt"] - timedelta(microseconds=1),
                           10) == []
    assert push_due.hinted(ctx, failed.state["next_attempt"], 10) == ["v"]
    # A VEN that no longer registers for push loses its hint at its next turn.
    ctx.store.put_ven({"ven_id": "v", "registration_id": None, "http_pull_model": False,
                       "transport_address": "http://ven.example"})
    rules.advance(ctx, "v", "b", failed.state["next_attempt"], lease)
    assert push_due.hinted(ctx, t0 + timedelta(days=1), 10) == []


def test_a_push_ven_that_polls_leaves_the_hint_of_what_it_took(any_store):
    # A push VEN may poll too: what it takes there waits for its acknowledgement like a push,
    # and the senders must learn when it is due again without sweeping every VEN.
    from flask_openadr.services import events, push_due
    from flask_openadr.services.poll import poll

    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    ctx = Context(Settings(redelivery_after=timedelta(minutes=2)), any_store, clock=lambda: t0)
    ven = {"ven_id": "v", "registration_id": "r-v", "http_pull_model": False,
           "transport_address": "http://ven.example"}
    ctx.store.put_ven(ven)
    events.add_event(ctx, events.build_event(
        event_id="e", targets={"ven_ids": ["v"]}, signal_name="SIMPLE", signal_type="level",
        market_context="http://mc.example", intervals=[
            {"dtstart": t0 + timedelta(hours=1), "duration": timedelta(hours=1),
             "signal_payload": 1.0}]))
    assert push_due.hinted(ctx, t0, 10) == ["v"]  # the add's hint: due now
    name, payload, _ = poll(ctx, ven, {"ven_id": "v"})
    assert name == "oadrDistributeEvent"
    # Taken by the poll, unanswered: due again after the redelivery time, not now.
    assert push_due.hinted(ctx, t0 + timedelta(minutes=2) - timedelta(microseconds=1), 10) == []
    assert push_due.hinted(ctx, t0 + timedelta(minutes=2), 10) == ["v"]


def test_the_sweep_finds_push_vens_without_a_hint_a_bounded_slice_each_pass(tmp_path,
                                                                              monkeypatch):
    # Should a hint be missing, the sweep of every push VEN finds what is due: a slice each
    # pass (at most SWEEP_PER_PASS), so a pass costs the same with many push VENs.
    from flask_openadr.services import push_due

    # A sweep in two passes' time, at most four VENs a pass: 10 push VENs take three passes.
    monkeypatch.setattr(push, "SWEEP_PER_PASS", 4)
    monkeypatch.setattr(push, "SWEEP_INTERVAL", 2 * push.PASS_INTERVAL)
    with sender_and_peers(tmp_path, "swept", 10) as (app, vtn, pusher, peers, ven_ids):
        with app.app_context():
            ctx = app.extensions["openadr"].context
            assert sorted(push_due.hinted(ctx, ctx.now(), 100)) == sorted(ven_ids)
            for ven_id in ven_ids:  # the METADATA reports are due, but no hint says so
                vtn.store.set_due(push_due.INDEX, ven_id, None)
        counts = []
        while len(counts) < 5:
            counts.append(pusher.run_pass())
            assert pusher.wait_idle()
        assert counts == [4, 4, 2, 0, 0]  # (a later sweep finds nothing left)
        assert [peer.names() for peer in peers] == [["oadrRegisterReport"]] * 10


def test_a_pass_reads_the_hints_due_earliest_first_up_to_its_limit(any_store):
    # A hint filed later (a redelivery) is not read before its instant; of the due hints, the
    # earliest come first, so a backlog beyond the limit waits, in order, for the next pass.
    from flask_openadr.services import push_due

    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    ctx = Context(Settings(), any_store, clock=lambda: t0)
    for n, ven_id in enumerate(["c", "a", "b"]):
        push_due.schedule(ctx, ven_id, t0 + timedelta(seconds=n))
    push_due.schedule(ctx, "d", t0 - timedelta(seconds=1))
    assert push_due.hinted(ctx, t0 + timedelta(seconds=2), 10) == ["d", "c", "a", "b"]
    assert push_due.hinted(ctx, t0 + timedelta(seconds=2), 2) == ["d", "c"]
    assert push_due.hinted(ctx, t0, 10) == ["d", "c"]
    push_due.schedule(ctx, "d", None)
    push_due.schedule(ctx, "b", t0)  # moved earlier: one hint per VEN
    assert push_due.hinted(ctx, t0 + timedelta(seconds=2), 10) == ["b", "c", "a"]


def test_a_step_that_pushes_an_event_reads_each_record_once():
    # What makes a push cheap: the step that takes an oadrDistributeEvent reads the VEN, its
    # delivery record and the event once each, and sends the distribution it worked out. The
    # delivery record comes in one read with the outbox (empty: not popped) and the messages
    # awaiting acknowledgement.
    from flask_openadr.services import events
    from tests.support.counting import CountingStore

    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    counting = CountingStore(MemoryStore())
    ctx = Context(Settings(), counting, clock=lambda: t0)
    counting.put_ven({"ven_id": "v", "registration_id": "r", "http_pull_model": False,
                      "transport_address": "http://ven.example"})
    events.add_event(ctx, events.build_event(
        event_id="e", targets={"ven_ids": ["v"]}, signal_name="SIMPLE", signal_type="level",
        market_context="http://mc.example", intervals=[
            {"dtstart": t0 + timedelta(hours=1), "duration": timedelta(hours=1),
             "signal_payload": 1.0}]))
    counting.calls.clear()
    step = rules.advance(ctx, "v", "a", t0, timedelta(seconds=10))
    assert [e["event_descriptor"]["event_id"] for e in step.taken.payload["events"]] == ["e"]
    assert step.taken.held == {"e": {}}  # what undo puts back: the VEN held nothing yet
    reads = ("get_ven", "get_poll_state", "get_delivered", "list_outbox", "list_records",
             "pop_outbox", "get_event")
    assert {name: counting.calls.count(name) for name in reads} == {
        "get_ven": 1, "get_poll_state": 1, "get_delivered": 0, "list_outbox": 0,
        "list_records": 0, "pop_outbox": 0, "get_event": 1}
    assert counting.get_delivered("v")["events"]["e"]["sent_at"] == t0


def test_a_turn_reads_its_push_state_once_while_its_lease_is_young_and_again_after(any_store):
    # The claim's write is what the owner's next step takes as the stored push state while
    # less than half the lease has passed (no other sender writes it then); later it reads.
    from flask_openadr.services import outbox
    from tests.support.counting import CountingStore

    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    counting = CountingStore(any_store)
    ctx = Context(Settings(), counting, clock=lambda: t0)
    lease = timedelta(seconds=10)
    counting.put_ven({"ven_id": "v", "registration_id": "r", "http_pull_model": False,
                      "transport_address": "http://ven.example"})
    outbox.push(ctx, "v", "oadrRequestReregistration", {"ven_id": "v"})
    outbox.push(ctx, "v", "oadrCancelPartyRegistration",
                {"request_id": "q", "registration_id": "r", "ven_id": "v"})

    def state_reads(step_call):
        counting.calls.clear()
        step = step_call()
        return step, counting.calls.count("get_record")

    first, reads = state_reads(lambda: rules.advance(ctx, "v", "a", t0, lease))
    assert first.taken is not None and first.held is not None and reads == 1
    # Renewed and the next message taken, with the held state: no read of it.
    second, reads = state_reads(lambda: rules.advance(
        ctx, "v", "a", t0 + timedelta(seconds=1), lease, held=True, lease_held=first.held))
    assert second.taken is not None and reads == 0
    assert ctx.store.get_record(rules.PUSH_STATE, "v", "push")["lease_until"] == \
        t0 + timedelta(seconds=11)
    # Past half the renewed lease the state is read again, and the release still writes.
    end, reads = state_reads(lambda: rules.advance(
        ctx, "v", "a", t0 + timedelta(seconds=7), lease, held=True, more=False,
        lease_held=second.held))
    assert end.taken is None and end.state["owner"] is None and reads == 1
    assert ctx.store.get_record(rules.PUSH_STATE, "v", "push")["owner"] is None
    # What another owner's claim wrote is never taken as one's own.
    assert rules.claim(ctx, "v", "b", t0 + timedelta(seconds=8), lease)
    assert rules.release(ctx, "v", "a", failed=True, now=t0 + timedelta(seconds=8),
                         held=second.held) is None
    assert ctx.store.get_record(rules.PUSH_STATE, "v", "push")["owner"] == "b"


def test_a_pass_skips_a_ven_whose_turn_ended_after_it_read_the_hints(any_store):
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    ctx = Context(Settings(), any_store)
    lease = timedelta(seconds=10)
    assert not rules.waiting(ctx, "v", t0, since=t0)  # never pushed to
    assert rules.claim(ctx, "v", "a", t0, lease)
    assert rules.waiting(ctx, "v", t0 + timedelta(seconds=1))  # leased
    rules.release(ctx, "v", "a", failed=False, now=t0 + timedelta(seconds=2))
    # Released after the pass read the hints (since): that turn left a newer hint.
    assert rules.waiting(ctx, "v", t0 + timedelta(seconds=3), since=t0 + timedelta(seconds=1))
    # Released before: the hint the pass read is the newer one.
    assert not rules.waiting(ctx, "v", t0 + timedelta(seconds=3),
                             since=t0 + timedelta(seconds=2, microseconds=1))
    assert not rules.waiting(ctx, "v", t0 + timedelta(seconds=3))
    # A release this process's clock puts in its future is not taken as a newer turn.
    assert not rules.waiting(ctx, "v", t0 + timedelta(seconds=1), since=t0)


def test_a_push_ven_goes_offline_once_when_pushes_keep_failing_not_when_silent():
    from flask_openadr.services import liveness

    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    now = [t0]
    calls = []
    ctx = Context(Settings(poll_frequency=timedelta(seconds=10), offline_after_missed_polls=3),
                  MemoryStore(), clock=lambda: now[0],
                  handlers={"on_ven_offline": liveness.LivenessHandler(calls.append)})
    ven = {"ven_id": "v", "registration_id": "r", "http_pull_model": False,
           "transport_address": "http://ven.example", "poll_frequency": timedelta(seconds=10)}
    ctx.store.put_ven(ven)
    liveness.run_transition(ctx, liveness.seen(ctx, "v", ven))
    now[0] = t0 + timedelta(days=30)
    assert liveness.sweep(ctx) == 0 and calls == []  # silence: still online

    state = rules.release(ctx, "v", "a", failed=True, now=now[0])
    assert not rules.failing_too_long(ctx, ven, state, now[0] + timedelta(seconds=29))
    later = now[0] + timedelta(seconds=30)
    state = rules.release(ctx, "v", "a", failed=True, now=later)
    assert rules.failing_too_long(ctx, ven, state, later)
    transition = liveness.unreachable(ctx, "v")
    assert transition is not None and transition["kind"] == "offline"
    liveness.run_transition(ctx, transition)
    assert calls == ["v"]
    assert liveness.unreachable(ctx, "v") is None  # once
    state = rules.release(ctx, "v", "a", failed=False, now=later)
    assert state["failing_since"] is None and not rules.failing_too_long(ctx, ven, state, later)


def test_flask_openadr_push_once_pushes_what_is_due_and_processes_the_answer(app, vtn):
    from tests.support.vens import make_ven

    peer = PushVEN("http://127.0.0.1:9")  # it never calls the VTN in this test
    peer.start()
    try:
        _, reply = make_ven(app).register(http_pull_model=False, transport_address=peer.address)
        assert reply["response"]["response_code"] == 200
        runner = app.test_cli_runner()
        result = runner.invoke(args=["openadr", "push", "--once"])
        assert result.exit_code == 0, result.output
        assert "pushed to 1 VEN(s)" in result.output
        assert peer.names() == ["oadrRegisterReport"]
        # The peer left its optional venID out of oadrRegisteredReport: the answer is still
        # the VEN's (it came back on the VTN's own connection), so it acknowledged the report.
        from flask_openadr.services import outbox

        with app.app_context():
            assert vtn.store.list_records(outbox.AWAITING, reply["ven_id"]) == []
        result = runner.invoke(args=["openadr", "push", "--once"])
        assert "pushed to 0 VEN(s)" in result.output
        assert peer.names() == ["oadrRegisterReport"]
    finally:
        peer.stop()


@pytest.mark.parametrize("backend", SHARED)
def test_of_senders_claiming_at_once_through_separate_handles_one_wins(backend, tmp_path):
    uri = URI_FACTORIES[backend](tmp_path)
    stores = [open_store(uri) for _ in range(6)]
    try:
        now = datetime.now(timezone.utc)
        start = threading.Barrier(len(stores))
        won = []

        def contend(n, store):
            ctx = Context(Settings(), store)
            start.wait()
            if rules.claim(ctx, "v", f"sender-{n}", now, timedelta(seconds=30)):
                won.append(n)

        threads = [threading.Thread(target=contend, args=(n, s)) for n, s in enumerate(stores)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert len(won) == 1
        state = stores[0].get_record(rules.PUSH_STATE, "v", "push")
        assert state["owner"] == f"sender-{won[0]}"
    finally:
        for store in stores:
            store.close()


@pytest.mark.parametrize("ven_signs", [True, False])
def test_a_ven_registered_with_signatures_gets_signed_pushes_and_must_sign_its_answers(
        tmp_path, ven_signs):
    from flask_openadr import codec
    from flask_openadr.security.signature import load_signer, verify
    from flask_openadr.services import outbox
    from flask_openadr.testing import VENTestClient, make_certificate

    vtn_cert = make_certificate("vtn")
    ven_cert = make_certificate("signing-ven")
    app = Flask("signing_vtn", instance_path=str(tmp_path / "instance"))
    app.config.update(TESTING=True, OPENADR_STORE_URI="sqlite:///" + str(tmp_path / "s.db"),
                      OPENADR_SIGNING_CERT=vtn_cert.pem, OPENADR_SIGNING_KEY=vtn_cert.key_pem())
    vtn = VTN(app)
    peer = PushVEN("http://127.0.0.1:9")
    if ven_signs:
        peer.signer = load_signer(ven_cert.pem, ven_cert.key_pem())
    peer.start()
    state = app.extensions["openadr"]
    try:
        ven = VENTestClient(app.test_client(), ven_name="signing-ven", certificate=ven_cert,
                            signing_cert=ven_cert.pem, signing_key=ven_cert.key_pem(),
                            vtn_fingerprint=vtn_cert.fingerprint)
        _, reply = ven.register(http_pull_model=False, transport_address=peer.address,
                                xml_signature=True)
        assert reply["response"]["response_code"] == 200
        assert state.pusher.run_pass() == 1 and state.pusher.wait_idle()
        (body,) = peer.bodies
        verified = verify(codec.parse(body))  # signed by the VTN's key
        assert verified.fingerprint == vtn_cert.fingerprint
        assert codec.decode_element(verified.payload)[0] == "oadrRegisterReport"
        with app.app_context():
            awaiting = vtn.store.list_records(outbox.AWAITING, reply["ven_id"])
        # A signed answer acknowledges the report; an unsigned one from a VEN that registered
        # with signatures is refused (459), so the report still waits for its acknowledgement.
        assert len(awaiting) == (0 if ven_signs else 1)
    finally:
        peer.stop()
        state.context.store.close()


def test_an_openadr_error_in_the_answer_is_logged_and_the_message_not_sent_again(
        app, vtn, caplog):
    from tests.support.vens import make_ven

    from flask_openadr.services import outbox

    peer = PushVEN("http://127.0.0.1:9")
    peer.mode = "refuse"
    peer.start()
    try:
        _, reply = make_ven(app).register(http_pull_model=False, transport_address=peer.address)
        runner = app.test_cli_runner()
        assert runner.invoke(args=["openadr", "push", "--once"]).exit_code == 0
        assert peer.names() == ["oadrRegisterReport"]
        assert any("452" in r.getMessage() and "not sent again" in r.getMessage()
                   for r in caplog.records)
        with app.app_context():
            assert vtn.store.list_records(outbox.AWAITING, reply["ven_id"]) == []
            assert vtn.store.list_outbox(reply["ven_id"]) == []
    finally:
        peer.stop()


@contextlib.contextmanager
def sender_and_peers(tmp_path, name, count, **config):
    """A TESTING app (its sender runs only when the test calls it) on SQLite, and ``count``
    PushVENs registered for push with it; yields (app, vtn, pusher, peers, ven_ids)."""
    from tests.support.vens import make_ven

    app = Flask(f"{name}_vtn", instance_path=str(tmp_path / "instance"))
    app.config.update(TESTING=True, OPENADR_STORE_URI=_sqlite(tmp_path), **config)
    vtn = VTN(app)
    peers = [PushVEN("http://127.0.0.1:9", name=f"{name}-{n}") for n in range(count)]
    for peer in peers:
        peer.start()
    try:
        ven_ids = []
        for peer in peers:
            _, reply = make_ven(app, ven_name=peer.name).register(
                http_pull_model=False, transport_address=peer.address)
            assert reply["response"]["response_code"] == 200
            ven_ids.append(reply["ven_id"])
        yield app, vtn, app.extensions["openadr"].pusher, peers, ven_ids
    finally:
        for peer in peers:
            peer.stop()
        app.extensions["openadr"].context.store.close()


def test_one_push_thread_takes_the_queued_vens_one_after_another(tmp_path):
    # With one push thread, a pass queues every VEN due and the thread pushes to each in turn
    # (it goes on to the next VEN itself), one push at a time; a VEN queued is not queued
    # again, and the next pass finds nothing due.
    with sender_and_peers(tmp_path, "queued", 3, OPENADR_PUSH_CONCURRENCY=1) as (
            app, vtn, pusher, peers, ven_ids):
        assert pusher.run_pass() == 3 and pusher.wait_idle()
        assert [peer.names() for peer in peers] == [["oadrRegisterReport"]] * 3
        assert [peer.most_in_flight for peer in peers] == [1, 1, 1]
        assert pusher.run_pass() == 0 and pusher.wait_idle()
        assert [len(peer.bodies) for peer in peers] == [1, 1, 1]


def test_a_stopping_sender_drops_its_queue_and_a_later_pass_finds_it_again(tmp_path):
    # The push threads go through the queue one VEN after another; a sender that stops (at
    # exit, say) must not keep them going through the rest. The VENs dropped keep their hints
    # in the store: the next pass (of any sender) queues them again.
    with sender_and_peers(tmp_path, "dropped", 3, OPENADR_PUSH_CONCURRENCY=1,
                          OPENADR_PUSH_TIMEOUT=5) as (app, vtn, pusher, peers, ven_ids):
        for peer in peers:
            peer.mode, peer.hang_seconds = "hang", 0.5  # each push takes half a second, then 500
        state = app.extensions["openadr"]
        assert pusher.run_pass() == 3
        time.sleep(0.2)  # the one push thread is at its first VEN
        assert pusher.drop_queue() == 2
        assert pusher.wait_idle(timeout=5)
        assert sum(peer.in_flight for peer in peers) == 0
        reached = [peer for peer in peers if peer.most_in_flight]
        assert len(reached) == 1  # the other two were dropped before their push
        for peer in peers:
            peer.mode = "ok"
        assert pusher.run_pass() == 2  # the dropped ones, found again by their hints
        assert pusher.wait_idle(timeout=10)
        assert all(peer.names() == ["oadrRegisterReport"] for peer in peers if peer not in reached)
        # Stopping the sender's thread drops the queue too: an event for each VEN, the first
        # push hanging while the sender is stopped; the other two VENs get nothing.
        for peer in peers:
            peer.mode = "hang"
        with app.app_context():
            for ven_id in ven_ids:
                vtn.add_event(ven_id, signal_name="SIMPLE", signal_type="level", intervals=[{
                    "dtstart": datetime.now(timezone.utc) + timedelta(hours=1),
                    "duration": timedelta(minutes=30), "signal_payload": 1.0}])
        before = [len(peer.paths) for peer in peers]
        for peer in peers:
            peer.most_in_flight = 0
        assert state.push_sender.start()
        deadline = time.monotonic() + 5
        while not any(peer.in_flight for peer in peers) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert state.push_sender.stop(5)
        assert pusher.wait_idle(timeout=5)
        assert sum(len(peer.paths) for peer in peers) == sum(before)  # hangs are not recorded
        assert sum(peer.most_in_flight for peer in peers) == 1  # one push thread, one VEN


def test_one_push_thread_takes_the_queue_while_vens_answer_at_once(tmp_path):
    # Threads that all run Python share one GIL and one SQLite writer: while the VENs answer at
    # once, one push thread takes the whole queue, whatever OPENADR_PUSH_CONCURRENCY allows.
    threads: list[int] = []

    def sent(sender, **extra):
        threads.append(threading.get_ident())

    with sender_and_peers(tmp_path, "prompt", 6, OPENADR_PUSH_CONCURRENCY=8) as (
            app, vtn, pusher, peers, ven_ids):
        with signals.message_sent.connected_to(sent, app):
            assert pusher.run_pass() == 6 and pusher.wait_idle()
        assert [peer.names() for peer in peers] == [["oadrRegisterReport"]] * 6
        assert len(threads) == 6 and len(set(threads)) == 1


def test_a_pass_starts_more_push_threads_while_every_one_waits_on_a_slow_ven(tmp_path):
    # One push thread waiting on a VEN that hangs: the next pass starts more (up to
    # OPENADR_PUSH_CONCURRENCY) for the VENs queued behind it, so they are pushed at once.
    with sender_and_peers(tmp_path, "slow", 4, OPENADR_PUSH_CONCURRENCY=3,
                          OPENADR_PUSH_TIMEOUT=5) as (app, vtn, pusher, peers, ven_ids):
        for peer in peers:
            peer.mode, peer.hang_seconds = "hang", 2.0
        assert pusher.run_pass() == 4
        wait_for(lambda: sum(peer.in_flight for peer in peers) == 1, timeout=5,
                 what="the first push")
        time.sleep(2 * push.SHARE_SPAN)
        assert sum(peer.in_flight for peer in peers) == 1  # one thread while nothing else ran
        assert pusher.run_pass() == 0  # nothing new to queue; two more threads start
        wait_for(lambda: sum(peer.in_flight for peer in peers) == 3, timeout=1.5,
                 what="three pushes at once")
        assert pusher.wait_idle(timeout=15)
        # Each VEN reached (the fourth when a thread was free again), one push at a time.
        assert [peer.most_in_flight for peer in peers] == [1, 1, 1, 1]


def test_push_threads_wait_for_vens_far_away_side_by_side(tmp_path):
    # VENs that take 40 ms to answer (far away, or busy): the one push thread waits nearly
    # all the time, and the next pass starts more, up to OPENADR_PUSH_CONCURRENCY, which
    # push to the queued VENs side by side.
    with sender_and_peers(tmp_path, "far", 24, OPENADR_PUSH_CONCURRENCY=4) as (
            app, vtn, pusher, peers, ven_ids):
        for peer in peers:
            peer.delay_seconds = 0.04
        assert pusher.run_pass() == 24
        most, deadline = 0, time.monotonic() + 10
        while any(not peer.bodies for peer in peers) and time.monotonic() < deadline:
            pusher.run_pass()  # as the sender's thread does, five times a second
            for _ in range(20):
                most = max(most, sum(peer.in_flight for peer in peers))
                time.sleep(0.01)
        assert pusher.wait_idle()
        assert [peer.names() for peer in peers] == [["oadrRegisterReport"]] * 24
        assert most == 4  # four pushes at once, the most allowed
        assert [peer.most_in_flight for peer in peers] == [1] * 24


@pytest.mark.parametrize("trusted, pinned", [(True, True), (False, True), (True, False)])
def test_push_over_tls_with_client_certificates_both_ways(tmp_path, trusted, pinned, caplog):
    import ssl

    from tests.support.vens import make_ven
    from tests.support.pki import TestPKI

    pki = TestPKI(str(tmp_path / "pki"))
    vtn_client = pki.ven("vtn-push-client", "ecdsa")
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(pki.vtn["ecdsa"].cert_path, pki.vtn["ecdsa"].key_path)
    server.verify_mode = ssl.CERT_REQUIRED  # the VEN requires the VTN's client certificate
    server.load_verify_locations(pki.ca_bundle)
    app = Flask("tls_push_vtn", instance_path=str(tmp_path / "instance"))
    app.config.update(TESTING=True, OPENADR_STORE_URI="memory://",
                      OPENADR_PUSH_CERT=vtn_client.cert_path,
                      OPENADR_PUSH_KEY=vtn_client.key_path, OPENADR_PUSH_TIMEOUT=2)
    if trusted:
        app.config["OPENADR_PUSH_CA"] = pki.ca_bundle
    VTN(app)
    peer = PushVEN("http://127.0.0.1:9", ssl_context=server)
    peer.start()
    try:
        # The VEN registers with the certificate it serves (pinned), or with another one.
        certificate = pki.vtn["ecdsa"].cert_pem if pinned else pki.ven("other", "ecdsa").cert_pem
        _, reply = make_ven(app, certificate=None,
                            environ={"SSL_CLIENT_CERT": certificate}).register(
            http_pull_model=False, transport_address=peer.address)
        assert reply["response"]["response_code"] == 200
        pusher = app.extensions["openadr"].pusher
        assert pusher.run_pass() == 1 and pusher.wait_idle()
        if trusted and pinned:
            assert peer.names() == ["oadrRegisterReport"]
            # The VEN saw the VTN's client certificate.
            from flask_openadr.security.fingerprint import fingerprint_from_pem

            assert fingerprint_from_pem(peer.client_certificates[0]) == vtn_client.fingerprint
        else:
            # Without OPENADR_PUSH_CA the VEN's server certificate (from a private CA) is not
            # trusted; a server certificate other than the one the VEN registered with is
            # refused: either way nothing is sent, and the VEN backs off.
            assert peer.names() == []
            with app.app_context():
                state = app.extensions["openadr"].context.store.get_record(
                    rules.PUSH_STATE, reply["ven_id"], "push")
            assert state["failures"] == 1
            reason = "CERTIFICATE_VERIFY_FAILED" if not trusted else "bound at its registration"
            assert any(reason in r.getMessage() for r in caplog.records)
    finally:
        peer.stop()


def test_the_push_index_lists_exactly_the_registered_push_vens(app, vtn):
    from tests.support.vens import make_ven

    ctx = app.extensions["openadr"].context
    pusher, puller = make_ven(app, ven_name="pusher"), make_ven(app, ven_name="puller")
    pusher.register(http_pull_model=False, transport_address="http://127.0.0.1:9/")
    puller.register()
    assert rules.push_ven_ids(ctx) == [pusher.ven_id]
    pusher.register(renew=True)  # renewed as a pull VEN
    assert rules.push_ven_ids(ctx) == []
    pusher.register(renew=True, http_pull_model=False, transport_address="http://127.0.0.1:9")
    assert rules.push_ven_ids(ctx) == [pusher.ven_id]
    _, reply = pusher.cancel_registration()
    assert reply["response"]["response_code"] == 200
    assert rules.push_ven_ids(ctx) == []


def test_a_push_ven_that_polls_gets_its_queue_too(app, vtn):
    from tests.support.vens import make_ven

    ven = make_ven(app)
    ven.register(http_pull_model=False, transport_address="http://127.0.0.1:9")
    name, _ = ven.poll()
    assert name == "oadrRegisterReport"
    # Taken once, by whichever asked first: it now waits for the acknowledgement.
    assert ven.poll()[0] == "oadrResponse"
