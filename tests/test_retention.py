"""Retention: completed and cancelled events leave the store after OPENADR_EVENT_RETENTION."""
from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone

import pytest
from flask import Flask

from flask_openadr import VTN, ConfigurationError
from flask_openadr.services import event_input, event_state, event_versions
from flask_openadr.services import removals, retention
from tests.support.clock import T0
from tests.support.counting import CountingStore
from tests.support.vens import make_ven

H = timedelta(hours=1)
DAY = timedelta(days=1)
WEEK = timedelta(days=7)
US = timedelta(microseconds=1)
#: An instant every entry of the index of due removals is filed before.
FOREVER = datetime(9999, 1, 1, tzinfo=timezone.utc)


def one_hour(start, ven_id=None, **fields):
    return dict(fields, ven_id=ven_id, signal_name="SIMPLE", signal_type="level",
                intervals=[{"dtstart": start, "duration": H, "signal_payload": 1.0}])


def test_finished_at_is_the_later_of_the_end_and_the_cancellation():
    event = event_input.build_event(event_id="e", market_context="http://x.example",
                              **one_hour(T0))
    assert event_state.finished_at(event) == T0 + H
    cancelled = event_versions.next_version(event, T0 + 3 * H)
    cancelled["cancelled"] = True
    assert event_state.finished_at(cancelled) == T0 + 3 * H  # cancelled after its end
    early = event_versions.next_version(event, T0 - DAY)
    early["cancelled"] = True
    assert event_state.finished_at(early) == T0 + H  # cancelled before it ran: its end still counts
    open_ended = event_input.build_event(event_id="o", market_context="http://x.example",
                                   **dict(one_hour(T0), intervals=[
                                       {"dtstart": T0, "duration": timedelta(0),
                                        "signal_payload": 1.0}]))
    assert event_state.finished_at(open_ended) is None  # runs until cancelled
    stopped = event_versions.next_version(open_ended, T0 + DAY)
    stopped["cancelled"] = True
    assert event_state.finished_at(stopped) == T0 + DAY


def test_events_are_shown_until_their_retention_ends_then_removed(app, vtn, registered_ven,
                                                                   clock):
    with app.app_context():
        done = vtn.add_event(**one_hour(T0 + H, registered_ven.ven_id))
        stopped = vtn.add_event(**one_hour(T0 + 5 * H, registered_ven.ven_id))
        # Open-ended, so in a program of its own: it would overlap the other two.
        running = vtn.add_event(**dict(one_hour(T0 + H, registered_ven.ven_id), intervals=[
            {"dtstart": T0 + H, "duration": timedelta(0), "signal_payload": 1.0}],
            market_context="http://utility.example/open-ended"))
    _, dist = registered_ven.poll()
    registered_ven.created_event(dist)
    clock.advance(3 * H)
    with app.app_context():
        vtn.cancel_event(stopped)  # at T0+3h, before its start: its end (T0+6h) counts
    clock.advance(WEEK - H - US)  # just before done's retention ends (T0+2h+7d)
    with app.app_context():
        assert vtn.remove_expired_events() == 0
        assert {e["event_descriptor"]["event_id"] for e in vtn.events()} == {
            done, stopped, running}
        assert vtn.event_responses(done)
    _, asked = registered_ven.request_event()
    assert [(e["event_descriptor"]["event_id"], e["event_descriptor"]["event_status"])
            for e in asked["events"] if e["event_descriptor"]["event_id"] == done] == [
        (done, "completed")]
    clock.advance(US)
    with app.app_context():
        assert vtn.remove_expired_events() == 1
        assert {e["event_descriptor"]["event_id"] for e in vtn.events()} == {stopped, running}
        assert vtn.event_responses(done) == []
    clock.advance(4 * H)
    with app.app_context():
        assert vtn.remove_expired_events() == 1
        assert [e["event_descriptor"]["event_id"] for e in vtn.events()] == [running]
    clock.advance(52 * WEEK)
    with app.app_context():
        assert vtn.remove_expired_events() == 0  # an open-ended event is never over by itself
    # The VEN's delivery record forgets the removed events at its next distribution.
    _, asked = registered_ven.request_event()
    with app.app_context():
        assert set(vtn.store.get_delivered(registered_ven.ven_id)["events"]) == {running}


def test_a_pass_removes_a_bounded_batch(app, vtn, clock):
    with app.app_context():
        for n in range(5):  # a program each: they would overlap
            vtn.add_event(**one_hour(T0 - WEEK - 2 * H,
                                     market_context=f"http://utility.example/{n}"))
        ctx = app.extensions["openadr"].context
        assert retention.sweep(ctx, limit=2) == 2
        assert len(vtn.events()) == 3
        assert retention.sweep(ctx, limit=2) == 2
        assert retention.sweep(ctx, limit=2) == 1
        assert vtn.events() == []


def test_the_store_stays_bounded_under_steady_load(tmp_path, clock):
    """Every day each VEN gets two events, answers them, and one is cancelled; with a 2-day
    retention the number of stored events, responses and delivery entries stops growing."""
    app = Flask("steady", instance_path=str(tmp_path / "instance"))
    app.config.update(TESTING=True, OPENADR_STORE_URI=f"sqlite:///{tmp_path / 's.sqlite3'}",
                      OPENADR_EVENT_RETENTION=2 * DAY.total_seconds())
    vtn = VTN(app, clock=clock)
    vens = [make_ven(app, ven_name=f"ven-{n}") for n in range(3)]
    for ven in vens:
        ven.register()
        ven.registered_report(ven.poll()[1])
    sizes = []
    for day in range(12):
        with app.app_context():
            for ven in vens:
                vtn.add_event(**one_hour(clock.now + H, ven.ven_id))
                dropped = vtn.add_event(**one_hour(clock.now + 2 * H, ven.ven_id))
        for ven in vens:
            name, dist = ven.poll()
            assert name == "oadrDistributeEvent"
            ven.created_event(dist)
        with app.app_context():
            vtn.cancel_event(dropped)
        for ven in vens:
            name, dist = ven.poll()
            if name == "oadrDistributeEvent":
                ven.created_event(dist)
        clock.advance(DAY)
        with app.app_context():
            vtn.remove_expired_events()
            stored = vtn.store.list_events()
            responses = sum(len(vtn.event_responses(e["event_descriptor"]["event_id"]))
                            for e in stored)
            entries = sum(len(vtn.store.get_delivered(ven.ven_id).get("events") or {})
                          for ven in vens)
        sizes.append((len(stored), responses, entries))
    # After the retention period has been filled, every day looks the same.
    assert len(set(sizes[4:])) == 1, sizes
    events_kept, responses_kept, entries_kept = sizes[-1]
    assert 2 * 3 < events_kept <= 3 * 2 * 3  # more than a day's events, at most three days'
    assert responses_kept > 0 and entries_kept > 0


def test_event_retention_is_configured_in_seconds_or_a_timedelta(tmp_path):
    for given, expected in ((3600.5, timedelta(seconds=3600.5)), (DAY, DAY)):
        app = Flask("r", instance_path=str(tmp_path))
        app.config.update(OPENADR_STORE_URI="memory://", OPENADR_EVENT_RETENTION=given)
        VTN(app)
        assert app.extensions["openadr"].context.settings.event_retention == expected
    app = Flask("d", instance_path=str(tmp_path))
    app.config.update(OPENADR_STORE_URI="memory://")
    VTN(app)
    assert app.extensions["openadr"].context.settings.event_retention == WEEK
    with pytest.raises(ConfigurationError, match="OPENADR_EVENT_RETENTION"):
        bad = Flask("b", instance_path=str(tmp_path))
        bad.config.update(OPENADR_STORE_URI="memory://", OPENADR_EVENT_RETENTION=-1)
        VTN(bad)


def waiting_for_a_final_report(app, vtn):
    """A VEN with a report request the VTN cancelled with reportToFollow, acknowledged: it
    waits in final_report for the last report. Returns (ven, reportRequestID)."""
    from tests.test_reports import subscribe

    ven, requests = subscribe(app, vtn)
    report_request_id = requests["rid-power"]["report_request_id"]
    with app.app_context():
        vtn.cancel_report(ven.ven_id, report_request_id, report_to_follow=True)
    _, cancel = ven.poll()
    ven.canceled_report(cancel["request_id"], [report_request_id])
    return ven, report_request_id


def test_report_requests_left_in_final_report_are_removed_after_the_retention(app, vtn,
                                                                             clock):
    """A report request cancelled with reportToFollow waits for one last report; when it never
    comes (on either side), the request goes after OPENADR_EVENT_RETENTION like an event."""
    from tests.test_vtn_reports import PRICES, registered_with_metadata, request

    vtn.on_vtn_reports(lambda ven_id: [PRICES])
    ven, report_request_id = waiting_for_a_final_report(app, vtn)
    other, _ = registered_with_metadata(app)
    other.create_report([request("ven-rr-1", "vtn-prices", ["price"])])
    other.cancel_report(["ven-rr-1"], report_to_follow=True)
    with app.app_context():
        assert vtn.report_requests(ven.ven_id)[0]["state"] == "final_report"
        assert vtn.vtn_report_requests(other.ven_id)[0]["state"] == "final_report"
    clock.advance(WEEK - US)
    with app.app_context():
        assert vtn.remove_expired_events() == 0
        assert len(vtn.report_requests(ven.ven_id)) == 1
    clock.advance(US)
    with app.app_context():
        assert vtn.remove_expired_events() == 2
        assert vtn.report_requests(ven.ven_id) == []
        assert vtn.vtn_report_requests(other.ven_id) == []
        with pytest.raises(LookupError):
            vtn.send_report(other.ven_id, "ven-rr-1", [{"dtstart": T0, "values": [
                {"r_id": "price", "value": 1.0}]}])


def test_a_fulfilled_final_report_request_leaves_no_work_for_the_sweep(app, vtn, clock):
    from flask_openadr.testing import data_report

    ven, report_request_id = waiting_for_a_final_report(app, vtn)

    final = data_report(report_request_id, "spec-usage", "TELEMETRY_USAGE", [
        {"report_payloads": [{"r_id": "rid-power", "value": 1.0}]}], dtstart=T0)
    ven.update_report([final])
    clock.advance(WEEK)
    with app.app_context():
        assert vtn.remove_expired_events() == 0  # its entry is dropped, nothing removed
        assert vtn.store.list_due(removals.INDEX, FOREVER, 10) == []


def test_an_event_modified_to_end_later_is_kept_until_its_new_end_plus_retention(app, vtn,
                                                                                 clock):
    with app.app_context():
        event_id = vtn.add_event(**one_hour(T0 + H))
        vtn.modify_event(event_id, intervals=[
            {"dtstart": T0 + H, "duration": 10 * DAY, "signal_payload": 1.0}])
    clock.advance(WEEK + 3 * H)  # past the first end's retention, not the new one's
    with app.app_context():
        assert vtn.remove_expired_events() == 0
        assert [e["event_descriptor"]["event_id"] for e in vtn.events()] == [event_id]
    clock.advance(10 * DAY)
    with app.app_context():
        assert vtn.remove_expired_events() == 1
        assert vtn.events() == []
        assert vtn.store.list_due(removals.INDEX, FOREVER, 10) == []


@pytest.mark.parametrize("waiting", [5, 60])
def test_a_pass_reads_what_is_due_not_every_event(app, vtn, clock, waiting):
    """A pass finds the due events through the index of due removals: what it reads does not
    depend on how many events are stored and not yet due."""
    with app.app_context():
        for n in range(waiting):  # finished, but well inside their retention
            vtn.add_event(**one_hour(T0 - 2 * DAY, market_context=f"http://x.example/{n}"))
        for n in range(2):
            vtn.add_event(**one_hour(T0 - WEEK - 2 * H, market_context=f"http://y.example/{n}"))
    ctx = app.extensions["openadr"].context
    store, ctx.store = ctx.store, CountingStore(ctx.store)
    try:
        assert retention.sweep(ctx) == 2
        calls = ctx.store.calls
    finally:
        ctx.store = store
    assert "list_events" not in calls
    reads = [name for name in calls if name.startswith(("get_", "list_"))]
    # The due entries, each event (and its targets), the read that finds nothing more due.
    assert len(reads) <= 10, reads


def test_the_store_and_its_index_stay_bounded_with_final_report_requests(tmp_path, clock):
    """Every day a VEN asks for a VTN report and cancels it with reportToFollow, which never
    comes, and gets an event; with a 2-day retention nothing the VTN keeps grows."""
    from tests.test_vtn_reports import PRICES, request

    app = Flask("steady-requests", instance_path=str(tmp_path / "instance"))
    app.config.update(TESTING=True, OPENADR_STORE_URI=f"sqlite:///{tmp_path / 's.sqlite3'}",
                      OPENADR_EVENT_RETENTION=2 * DAY.total_seconds())
    vtn = VTN(app, clock=clock)
    vtn.on_vtn_reports(lambda ven_id: [PRICES])
    ven = make_ven(app)
    ven.register()
    ven.poll()
    sizes = []
    for day in range(10):
        ven.create_report([request(f"rr-{day}", "vtn-prices", ["price"])])
        ven.cancel_report([f"rr-{day}"], report_to_follow=True)
        with app.app_context():
            vtn.add_event(**one_hour(clock.now + H, ven.ven_id))
        clock.advance(DAY)
        with app.app_context():
            vtn.remove_expired_events()
            store = vtn.store
            entries = len(store.list_due(removals.INDEX, FOREVER, 1000))
            sizes.append((len(store.list_events()), len(vtn.vtn_report_requests(ven.ven_id)),
                          entries))
    assert len(set(sizes[3:])) == 1, sizes
    events_kept, requests_kept, entries_kept = sizes[-1]
    assert 0 < events_kept <= 3 and 0 < requests_kept <= 3
    assert entries_kept <= 2 * 3


def test_the_retention_pass_truncates_the_sqlite_wal(app, store_uri):
    # The sweeper's retention pass is where SQLite's WAL is checkpointed and cut back (readers
    # under load keep SQLite's own checkpoints from restarting it).
    if not store_uri.startswith("sqlite:"):
        pytest.skip("a SQLite store's WAL")
    state = app.extensions["openadr"]
    store = state.context.store
    for i in range(200):
        store.put_ven({"ven_id": f"ven-{i}", "ven_name": "x" * 2000})
    wal = store.path + "-wal"
    assert os.path.getsize(wal) > 200 * 2000
    state.sweep_once()  # the first pass of a process runs retention
    assert os.path.getsize(wal) == 0
    assert len(store.list_vens()) == 200
