"""Retention: completed and cancelled events leave the store after OPENADR_EVENT_RETENTION."""
from __future__ import annotations

from datetime import timedelta

import pytest
from flask import Flask

from flask_openadr import VTN, ConfigurationError
from flask_openadr.services import event_input
from flask_openadr.services import event_state
from flask_openadr.services import event_versions
from flask_openadr.services import retention
from tests.support.clock import T0
from tests.support.vens import make_ven

H = timedelta(hours=1)
DAY = timedelta(days=1)
WEEK = timedelta(days=7)
US = timedelta(microseconds=1)


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
