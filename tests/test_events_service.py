"""The event service on plain dicts: status, values, rules, targets, order, distribution, opt."""
from __future__ import annotations

import collections
import copy
import dataclasses
import itertools
from datetime import datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flask_openadr.config import Settings
from flask_openadr.errors import EventError, InvalidData, InvalidID, Rejection
from flask_openadr.services import event_input
from flask_openadr.services import event_rules as rules
from flask_openadr.services import event_state
from flask_openadr.services import event_targets
from flask_openadr.services import events
from flask_openadr.services.context import Context
from flask_openadr.store import open_store
from tests.support.clock import T0

H = timedelta(hours=1)
MIN = timedelta(minutes=1)
US = timedelta(microseconds=1)
SEC = timedelta(seconds=1)
MC = "http://utility.example/peak"


def intervals(start=T0 + H, payloads=(1.0, 2.0), minutes=30):
    step = timedelta(minutes=minutes)
    return [
        {"dtstart": start + step * i, "duration": step, "signal_payload": value}
        for i, value in enumerate(payloads)
    ]


def make(event_id="e1", start=T0 + H, payloads=(1.0, 2.0), minutes=30, **kwargs):
    kwargs.setdefault("signal_name", "SIMPLE")
    kwargs.setdefault("signal_type", "level")
    kwargs.setdefault("market_context", MC)
    return event_input.build_event(
        event_id=event_id, intervals=intervals(start, payloads, minutes), **kwargs
    )


def ven_record(ven_id="ven-a", **fields):
    record = {
        "ven_id": ven_id, "registration_id": f"reg-{ven_id}", "report_only": False,
        "group_ids": [], "resource_ids": [], "party_ids": [], "http_pull_model": True,
    }
    record.update(fields)
    return record


def descriptor(event):
    return event["event_descriptor"]


@pytest.fixture
def store(store_uri):
    # store_uri (conftest) runs these on one store; the stores themselves are tests/test_store.py's.
    store = open_store(store_uri)
    yield store
    store.close()


@pytest.fixture
def emitted():
    return []


@pytest.fixture
def ctx(store, clock, emitted):
    ids = itertools.count(1)
    return Context(
        settings=Settings(vtn_id="VTN-1", market_context=MC),
        store=store,
        clock=clock,
        id_factory=lambda: f"id-{next(ids)}",
        emit=lambda signal_name, **data: emitted.append((signal_name, data)),
    )


@pytest.fixture
def ven(store):
    record = ven_record()
    store.put_ven(record)
    return record


# -- status -------------------------------------------------------------------------------------


def test_status_goes_far_near_active_completed_with_ramp_up():
    event = make(ramp_up_period=15 * MIN)  # starts T0+1h, lasts 1h
    seen = [
        event_state.event_status(event, t)
        for t in (T0, T0 + 45 * MIN - US, T0 + 45 * MIN, T0 + H - US, T0 + H, T0 + 2 * H - US,
                  T0 + 2 * H, T0 + 30 * H)
    ]
    assert seen == ["far", "far", "near", "near", "active", "active", "completed", "completed"]


def test_status_without_ramp_up_is_far_until_the_start():
    event = make()
    assert event_state.event_status(event, T0 + H - US) == "far"
    assert event_state.event_status(event, T0 + H) == "active"


def test_duration_zero_is_active_from_its_start_until_cancelled():
    event = make(payloads=(2.0,), minutes=0)
    assert event["active_period"]["duration"] == timedelta(0)
    assert event_state.event_status(event, T0 + H - US) == "far"
    assert event_state.event_status(event, T0 + H) == "active"
    assert event_state.event_status(event, T0 + 1000 * 24 * H) == "active"
    event["cancelled"] = True
    assert event_state.event_status(event, T0 + 1000 * 24 * H) == "cancelled"


def test_cancelled_wins_over_the_times():
    event = make()
    event["cancelled"] = True
    assert [event_state.event_status(event, t) for t in (T0, T0 + 90 * MIN, T0 + 3 * H)] == [
        "cancelled"
    ] * 3


# -- currentValue -------------------------------------------------------------------------------


def test_current_value_picks_the_interval_containing_now_at_the_boundaries():
    event = make(payloads=(1.0, 2.0, 3.0))
    signal = event["event_signals"][0]
    at = {
        offset: event_state.current_value(event, signal, T0 + H + offset)
        for offset in (timedelta(0), 30 * MIN - US, 30 * MIN, 60 * MIN, 90 * MIN - US)
    }
    assert list(at.values()) == [1.0, 1.0, 2.0, 3.0, 3.0]


def test_simple_current_value_is_zero_when_not_active():
    event = make(payloads=(3.0,))
    signal = event["event_signals"][0]
    assert event_state.current_value(event, signal, T0) == 0.0  # far
    assert event_state.current_value(event, signal, T0 + 3 * H) == 0.0  # completed
    event["cancelled"] = True
    assert event_state.current_value(event, signal, T0 + H) == 0.0  # cancelled during its window


def test_price_current_value_is_omitted_when_not_active():
    event = make(signal_name="ELECTRICITY_PRICE", signal_type="price", payloads=(0.25,),
                 item_base={"kind": "currencyPerKWh", "item_description": "currencyPerKWh",
                            "item_units": "USD", "si_scale_code": "none"})
    signal = event["event_signals"][0]
    assert event_state.current_value(event, signal, T0) is None
    assert "current_value" not in event_targets.render_event(event, "ven-a", T0)["event_signals"][0]
    active = event_targets.render_event(event, "ven-a", T0 + H)
    assert active["event_signals"][0]["current_value"] == 0.25


def test_open_ended_event_current_value_is_its_single_payload():
    event = make(payloads=(2.0,), minutes=0)
    signal = event["event_signals"][0]
    assert event_state.current_value(event, signal, T0 + 400 * H) == 2.0


# -- validation ---------------------------------------------------------------------------------


def _set(path, value):
    def mutate(event):
        target = event
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return mutate


def _signal(**fields):
    return _set(("event_signals", 0), {**make()["event_signals"][0], **fields})


def _interval(index, **fields):
    def mutate(event):
        event["event_signals"][0]["intervals"][index].update(fields)
    return mutate


def _second_signal(**fields):
    def mutate(event):
        event["event_signals"].append({**event["event_signals"][0], **fields})
    return mutate


def _drop_interval(event):
    del event["event_signals"][0]["intervals"][1]


def _open_ended_with_two(event):
    event["active_period"]["duration"] = timedelta(0)
    for interval in event["event_signals"][0]["intervals"]:
        interval["duration"] = timedelta(0)


def _rendered_with(target_path):
    def mutate(event):
        event["event_descriptor"]["created_date_time"] = T0
        _set(target_path, {"ven_ids": ["a", "b"]})(event)
    return mutate


@pytest.mark.parametrize(
    "mutate, message",
    [
        (_interval(0, uid="1"), r"rule 2: .*intervals\[0\]\.uid is '1'.*must be '0'"),
        (_interval(1, uid=1), r"rule 2: .*intervals\[1\]\.uid is 1"),
        (_drop_interval, r"rule 8: .*sum to 0:30:00.*duration is 1:00:00"),
        (_open_ended_with_two, r"rule 8: .*2 interval\(s\).*exactly one interval of duration 0"),
        (_interval(0, signal_payload=4.0), r"rule 9: .*signal_payload is 4\.0"),
        (_interval(0, signal_payload=1.5), r"rule 9: .*1\.5"),
        (_interval(0, dtstart=T0), r"intervals\[0\] has dtstart .*carry no dtstart"),
        (_interval(0, signal_payload=[1.0, 2.0]), r"exactly one payload"),
        (_interval(0, signal_payload=float("nan")), r"signal_payload is nan; .*finite number"),
        (_interval(0, signal_payload=True), r"signal_payload is True"),
        (_interval(0, signal_payload=-10**5000), r"signal_payload is about -10\*\*5000, beyond"),
        (_second_signal(), r"signal_id '0' is used twice"),
        (_signal(signal_type="bogus"), r"signal_type \(signalType\) is 'bogus'"),
        (_signal(signal_type="x-custom"), r"signal_type \(signalType\) is 'x-custom'"),
        (_signal(signal_type="price"), r"SIMPLE signal must have signal_type 'level'"),
        (_signal(signal_name="BOGUS"), r"signal_name \(signalName\) is 'BOGUS'.*'x-'"),
        (_signal(signal_name="x-"), r"signal_name \(signalName\) is 'x-'"),
        (_signal(signal_name=["SIMPLE"]), r"signal_name \(signalName\) is \['SIMPLE'\]"),
        (_set(("event_signals",), []), r"event_signals is \[\]"),
        (_set(("cancelled",), False), r"cancelled is False; a cancelled event says True"),
        (_rendered_with(("target",)), r"target\.ven_ids is \['a', 'b'\].*at most one venID"),
        (_rendered_with(("event_signals", 0, "target")), r"event_signals\[0\]\.target\.ven_ids"),
        (_set(("target", "ven_ids"), "ven-a"), r"target\.ven_ids is 'ven-a'; it must be a list"),
        (_set(("active_period", "dtstart"), datetime(2026, 12, 1)), r"dtstart is .*timezone-aware"),
        (_set(("active_period", "ramp_up"), -MIN), r"active_period\.ramp_up is .*non-negative"),
        (_interval(0, duration=-MIN), r"intervals\[0\]\.duration is .*non-negative timedelta"),
        (_set(("event_descriptor", "modification_number"), "0"), r"modification_number is '0'"),
        (_set(("event_descriptor", "market_context"), ""), r"market_context is ''; .*non-empty"),
        (_set(("event_descriptor", "event_id"), ""), r"event_id is ''; .*non-empty"),
        (_set(("event_baseline",), {"dtstart": T0, "duration": H, "intervals": [
            {"duration": H, "uid": "1"}]}), r"rule 2: event_baseline\.intervals\[0\]\.uid"),
    ],
)
def test_validate_event_names_the_rule_and_the_value(mutate, message):
    event = make()
    rules.validate_event(event)  # the unmutated event is valid
    mutate(event)
    with pytest.raises(EventError, match=message):
        rules.validate_event(event)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (_set(("response_required",), ["always"]),
         r"response_required: \['always'\] is not a valid oadrResponseRequired \(expected "
         r"'always', 'never'\)"),
        (_set(("response_required",), "sometimes"), r"response_required: 'sometimes' is not a"),
        (_set(("event_descriptor", "priority"), -1),
         r"priority: -1 is out of range for unsignedInt"),
        (_set(("event_descriptor", "priority"), True), r"priority: expected int, got bool True"),
        (_set(("event_descriptor", "test_event"), True),
         r"test_event: expected str, got bool True"),
        (_signal(signal_name="x-custom", signal_type="setpoint", item_base=5),
         r"item_base: expected a dict with a 'kind' key, got 5"),
    ],
)
def test_the_xsd_types_are_checked_by_encoding_the_event_once(store, clock, mutate, message):
    # Fields no conformance rule reads are left to the codec: add_event encodes the event
    # once, and its error names the field and the value.
    from flask_openadr import codec

    checked = Context(settings=Settings(market_context=MC), store=store, clock=clock,
                      check_payload=codec.encode)
    event = make()
    mutate(event)
    rules.validate_event(event)  # no conformance rule is broken
    with pytest.raises(EventError, match=r"cannot be sent.*2\.0b schema: .*" + message):
        events.add_event(checked, event)
    assert store.list_events() == []


def test_validate_accepts_extensions_and_the_2_0a_simple_name():
    rules.validate_event(make(signal_name="x-myProgram", signal_type="setpoint"))
    rules.validate_event(make(signal_name="simple", signal_type="level", payloads=(0, 3)))
    rules.validate_event(make(signal_name="LOAD_CONTROL", signal_type="x-loadControlCapacity"))


def test_a_stored_event_may_name_several_vens():
    event = make(targets={"ven_ids": ["a", "b"]})
    rules.validate_event(event)
    assert event["target"]["ven_ids"] == ["a", "b"]


# -- building -----------------------------------------------------------------------------------


def test_build_event_derives_start_duration_and_uids():
    event = make(
        payloads=(0, 1, 2), ven_id="ven-a", priority=2, ramp_up_period=15 * MIN,
        notification_period=H, recovery_period=5 * MIN, start_after=2 * MIN, test_event=False,
        vtn_comment="peak", signal_id="sig", current_value=7.0,
        item_base={"item_description": "x"}, signal_name="x-levels",
    )
    assert event == {
        "event_descriptor": {
            "event_id": "e1", "modification_number": 0, "priority": 2, "market_context": MC,
            "test_event": "false", "vtn_comment": "peak",
        },
        "active_period": {
            "dtstart": T0 + H, "duration": 90 * MIN, "start_after": 2 * MIN,
            "notification": H, "ramp_up": 15 * MIN, "recovery": 5 * MIN,
        },
        "event_signals": [{
            "intervals": [
                {"duration": 30 * MIN, "uid": str(i), "signal_payload": float(i)}
                for i in range(3)
            ],
            "signal_name": "x-levels", "signal_type": "level", "signal_id": "sig",
            "item_base": {"item_description": "x"},
        }],
        "target": {key: [] for key in event_targets.TARGET_KEYS} | {"ven_ids": ["ven-a"]},
        "response_required": "always",
    }


def test_build_event_leaves_optional_keys_out_and_defaults_the_signal_id():
    event = make()
    assert set(descriptor(event)) == {"event_id", "modification_number", "market_context"}
    assert set(event["active_period"]) == {"dtstart", "duration"}
    assert event["event_signals"][0]["signal_id"] == "0"


@pytest.mark.parametrize("second_start, ends", [(T0 + 91 * MIN, "gap"), (T0 + 89 * MIN, "overlap")])
def test_build_event_needs_consecutive_intervals(second_start, ends):
    given = intervals()
    given[1]["dtstart"] = second_start
    with pytest.raises(EventError, match=r"intervals\[1\]\.dtstart is .*intervals\[0\] ends at"):
        event_input.build_event(event_id="e", signal_name="SIMPLE", signal_type="level",
                          intervals=given, market_context=MC)


def test_build_event_needs_a_first_start_and_a_payload():
    given = intervals()
    del given[0]["dtstart"]
    with pytest.raises(EventError, match=r"intervals\[0\]\.dtstart is missing"):
        event_input.derive_intervals(given)
    given = intervals()
    del given[1]["signal_payload"]
    with pytest.raises(EventError, match=r"intervals\[1\] has no signal_payload"):
        event_input.derive_intervals(given)


def test_targets_are_accepted_as_a_dict_or_a_list_and_merged_with_ven_id():
    from_list = event_input.normalize_target(
        [{"ven_id": "a"}, {"group_id": "g"}, {"resource_id": "r"}, {"party_id": "p"},
         {"ven_id": "a"}], ven_id="b")
    assert from_list["ven_ids"] == ["a", "b"]
    assert (from_list["group_ids"], from_list["resource_ids"], from_list["party_ids"]) == (
        ["g"], ["r"], ["p"])
    assert event_input.normalize_target({"group_ids": ["g"]})["group_ids"] == ["g"]
    with pytest.raises(EventError, match="unknown key 'venid'"):
        event_input.normalize_target({"venid": "a"})
    with pytest.raises(EventError, match=r"targets\.ven_ids is 'a'; it must be a list"):
        event_input.normalize_target({"ven_ids": "a"})


def test_normalize_full_event_fills_defaults_and_drops_derived_fields():
    given = {
        "event_descriptor": {"modification_number": 5, "created_date_time": T0,
                             "event_status": "active"},
        "active_period": {"dtstart": T0, "duration": H},
        "event_signals": [{"intervals": [{"duration": H, "signal_payload": 1.0}],
                           "signal_name": "SIMPLE", "signal_type": "level", "signal_id": "s",
                           "current_value": 1.0}],
    }
    stored = event_input.normalize_full_event(given, event_id_factory=lambda: "new-id",
                                              default_market_context=MC)
    assert descriptor(stored) == {"event_id": "new-id", "modification_number": 0,
                                  "market_context": MC}
    assert stored["event_signals"][0]["intervals"][0]["uid"] == "0"
    assert "current_value" not in stored["event_signals"][0]
    assert stored["target"] == {key: [] for key in event_targets.TARGET_KEYS}
    assert stored["response_required"] == "always"
    assert "created_date_time" in given["event_descriptor"]  # the caller's dict is untouched
    # A new event is never stored cancelled, whichever way the dict says it.
    for cancelled in ({"event_status": "cancelled"}, {}):
        copied = dict(given, event_descriptor={**given["event_descriptor"], **cancelled},
                      cancelled=True)
        new = event_input.normalize_full_event(copied, event_id_factory=lambda: "c",
                                               default_market_context=MC)
        assert not event_state.is_cancelled(new) and "cancelled" not in new


def test_a_rendered_cancellation_reads_back_as_the_cancelled_field():
    event = make()
    event["cancelled"] = True
    rendered = event_targets.render_event(event, "ven-a", T0)
    # Sent: the derived status, and no trace of the stored field (it has no XML element).
    assert descriptor(rendered)["event_status"] == "cancelled" and "cancelled" not in rendered
    assert event_input.stored_form(rendered) == event_input.stored_form(event)
    assert event_state.is_cancelled(event_input.stored_form(rendered))
    # Only True cancels: is_cancelled is the one predicate, validate_event refuses the rest.
    assert not event_state.is_cancelled({**event, "cancelled": "yes"})


# -- targeting, order, rendering ----------------------------------------------------------------


EVERY_VEN = {"a", "grouped", "resourced", "partied", "plain"}


@pytest.mark.parametrize(
    "targets, matched",
    [
        (None, EVERY_VEN),
        ({"end_device_assets": [{"mrid": "Thermostat"}]}, EVERY_VEN),  # device classes only
        ({"ven_ids": ["a"]}, {"a"}),
        ({"group_ids": ["north"]}, {"grouped"}),
        ({"resource_ids": ["r1"]}, {"resourced"}),
        ({"party_ids": ["p1"]}, {"partied"}),
        ({"ven_ids": ["a"], "group_ids": ["north"]}, {"a", "grouped"}),
        ({"group_ids": ["nowhere"]}, set()),
    ],
)
def test_targets_ven_matches_ids_groups_resources_and_parties(targets, matched):
    vens = [
        ven_record("a"), ven_record("grouped", group_ids=["south", "north"]),
        ven_record("resourced", resource_ids=["r1"]), ven_record("partied", party_ids=["p1"]),
        ven_record("plain"),
    ]
    event = make(targets=targets)
    assert {v["ven_id"] for v in vens if event_targets.targets_ven(event, v)} == matched


def test_report_only_vens_get_no_events():
    assert not event_targets.targets_ven(make(), ven_record(report_only=True))
    assert not event_targets.targets_ven(make(ven_id="ven-a"), ven_record(report_only=True))


def test_order_is_active_by_priority_with_zero_last_then_pending_by_start_then_completed():
    now = T0 + 3 * H
    active = lambda name, priority, start: make(name, start=start, minutes=120, **(
        {} if priority is None else {"priority": priority}))
    events_ = [
        make("completed", start=T0),
        make("far-late", start=T0 + 9 * H),
        active("active-none", None, T0 + 2 * H),
        active("active-0", 0, T0 + H + 30 * MIN),
        active("active-2", 2, T0 + 2 * H),
        active("active-1-late", 1, T0 + 2 * H),
        active("active-1-early", 1, T0 + H + 45 * MIN),
        make("near", start=T0 + 4 * H, ramp_up_period=2 * H),
    ]
    cancelled_far = make("cancelled-far", start=T0 + 5 * H)
    cancelled_far["cancelled"] = True
    events_.append(cancelled_far)
    order = [descriptor(e)["event_id"] for e in event_targets.order_events(events_, now)]
    assert order == [
        "active-1-early", "active-1-late", "active-2", "active-0", "active-none",
        "near", "cancelled-far", "far-late", "completed",
    ]


def test_render_stamps_now_and_never_names_more_than_one_ven():
    event = make(targets={"ven_ids": ["a", "b"], "group_ids": ["g"]})
    event["event_signals"][0]["target"] = {"ven_ids": ["b", "a"]}
    event["event_signals"].append(dict(event["event_signals"][0], signal_id="for-all"))
    del event["event_signals"][1]["target"]
    for ven_id, expected in (("a", ["a"]), ("b", ["b"]), ("by-group", [])):
        sent = event_targets.render_event(event, ven_id, T0 + H)
        assert sent["target"]["ven_ids"] == expected
        assert sent["target"]["group_ids"] == ["g"]
        if expected:
            assert sent["event_signals"][0]["target"]["ven_ids"] == expected
        else:
            # A signal aimed at other VENs is left out, never sent with an empty target.
            assert [s["signal_id"] for s in sent["event_signals"]] == ["for-all"]
        assert descriptor(sent)["created_date_time"] == T0 + H
        assert descriptor(sent)["event_status"] == "active"
        assert sent["event_signals"][0]["current_value"] == 1.0
        rules.validate_event(sent)
    assert event["target"]["ven_ids"] == ["a", "b"]  # the stored event is untouched
    assert "created_date_time" not in descriptor(event)


# -- adding, modifying, cancelling --------------------------------------------------------------


def test_add_event_stores_it_refuses_a_duplicate_and_emits(ctx, emitted):
    assert events.add_event(ctx, make()) == "e1"
    assert ctx.store.get_event("e1") == make()
    assert emitted == [("event_added", {"event_id": "e1", "modification_number": 0})]
    with pytest.raises(EventError, match="event_id 'e1' is already taken"):
        events.add_event(ctx, make(payloads=(3.0,)))
    assert ctx.store.get_event("e1") == make()


def test_add_event_wants_modification_number_zero(ctx):
    event = make()
    descriptor(event)["modification_number"] = 3
    with pytest.raises(EventError, match="rule 4"):
        events.add_event(ctx, event)
    assert ctx.store.list_events() == []


# -- the overlap check: found through any kind of target, reading only what may overlap ---------


def _refused(ctx, event):
    try:
        events.add_event(ctx, event)
    except EventError as error:
        assert "overlaps" in str(error), error
        return str(error)
    return None


@pytest.mark.parametrize("membership", [
    {"group_ids": ["north"]}, {"resource_ids": ["meter-1"]}, {"party_ids": ["acme"]},
    {"group_names": ["North side"]},
])
@pytest.mark.parametrize("stored_first", [True, False], ids=["by-membership-stored",
                                                             "by-membership-new"])
def test_overlaps_are_found_through_group_resource_and_party_targets(ctx, membership,
                                                                    stored_first):
    ctx.store.put_ven(ven_record("ven-a", group_ids=["north"], resource_ids=["meter-1"],
                                 party_ids=["acme"], group_names=["North side"]))
    ctx.store.put_ven(ven_record("ven-b"))
    by_ven = {"ven_id": "ven-a"}
    first, second = (membership, by_ven) if stored_first else (by_ven, membership)
    events.add_event(ctx, make("first", targets=first))
    # Another VEN, another program, or back to back: no overlap.
    assert _refused(ctx, make("other-ven", ven_id="ven-b")) is None
    assert _refused(ctx, make("other-mc", targets=second, market_context=MC + "/2")) is None
    assert _refused(ctx, make("after", targets=second, start=T0 + 2 * H)) is None
    assert "'first'" in _refused(ctx, make("second", targets=second, start=T0 + H + 30 * MIN, minutes=10))
    # The same target kind on both sides, and an event aimed at every VEN, overlap too.
    assert "'first'" in _refused(ctx, make("same", targets=first, start=T0 + H + 30 * MIN, minutes=10))
    assert _refused(ctx, make("everyone", start=T0 + H + 30 * MIN, minutes=10)) is not None
    # A VEN that leaves the group is no longer shared; a cancelled event overlaps nothing.
    if "ven_ids" not in second:
        ctx.store.put_ven(ven_record("ven-a"))
        assert _refused(ctx, make("moved", targets=second, start=T0 + H + 30 * MIN, minutes=10)) is None
    events.cancel_event(ctx, "first")
    assert _refused(ctx, make("replaced", targets=first, start=T0 + H + 10 * MIN, minutes=10)) is None


def test_a_report_only_ven_shares_no_event_but_a_named_one_still_overlaps(ctx):
    ctx.store.put_ven(ven_record("ven-a", group_ids=["north"], report_only=True))
    events.add_event(ctx, make("first", targets={"group_ids": ["north"]}))
    # Through the group only a report-only VEN is shared: it gets no events, so no overlap.
    assert _refused(ctx, make("by-id", ven_id="ven-a")) is None
    # Two events naming one venID overlap whatever that VEN is (or whether it is known).
    assert "'by-id'" in _refused(ctx, make("again", ven_id="ven-a", start=T0 + H + MIN))
    events.add_event(ctx, make("ghost", ven_id="unknown-ven"))
    assert "'ghost'" in _refused(ctx, make("ghost-2", ven_id="unknown-ven", start=T0 + H + MIN))


def test_the_overlap_check_in_a_crowded_store(ctx):
    # Many VENs, each with events in many hours, and events aimed at groups of them: the one
    # that overlaps is found among them, and one that overlaps nothing is accepted.
    vens = [f"ven-{n:03d}" for n in range(events.OVERLAP_INDEX_VENS + 50)]
    for n, ven_id in enumerate(vens):
        ctx.store.put_ven(ven_record(ven_id, group_ids=[f"g{n % 5}", "all"]))
    for n, ven_id in enumerate(vens):
        for hour in range(3):
            events.add_event(ctx, make(f"e-{ven_id}-{hour}", ven_id=ven_id,
                                       start=T0 + (3 * hour + 1) * H))
    for group in range(5):
        events.add_event(ctx, make(f"g{group}", targets={"group_ids": [f"g{group}"]},
                                   start=T0 + (3 * group + 20) * H))
    assert "'e-ven-123-1'" in _refused(ctx, make("late", ven_id="ven-123",
                                                 start=T0 + 4 * H + 30 * MIN))
    assert "'g3'" in _refused(ctx, make("in-g3", ven_id="ven-123", start=T0 + 29 * H))
    assert _refused(ctx, make("free", ven_id="ven-123", start=T0 + 2 * H)) is None
    # A group of more VENs than the index is read for: checked against every stored event.
    assert "'e-ven-000-0'" in _refused(ctx, make("all", targets={"group_ids": ["all"]}))
    assert _refused(ctx, make("all-free", targets={"group_ids": ["all"]},
                              start=T0 + 40 * H)) is None
    assert "'all-free'" in _refused(ctx, make("one", ven_id="ven-007", start=T0 + 40 * H))


_SELECTORS = [{"ven_ids": ["a"]}, {"ven_ids": ["b"]}, {"ven_ids": ["a", "c"]},
              {"ven_ids": ["ghost"]}, {"group_ids": ["g1"]}, {"group_ids": ["g2"]},
              {"resource_ids": ["r1"]}, {"party_ids": ["p1"]}, {"group_names": ["n1"]}, {}]


@given(data=st.data())
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_the_overlap_check_refuses_exactly_what_the_rule_says(data):
    """Against the rule applied to every stored event and every VEN: random VENs and
    memberships, random targets, times, programs and cancellations."""
    store = open_store("memory://")
    ctx = Context(settings=Settings(vtn_id="VTN-1", market_context=MC), store=store,
                  clock=lambda: T0)
    groups = st.lists(st.sampled_from(["g1", "g2"]), unique=True)
    for ven_id in ("a", "b", "c"):
        store.put_ven(ven_record(ven_id, group_ids=data.draw(groups),
                                 resource_ids=data.draw(st.sampled_from([[], ["r1"]])),
                                 party_ids=data.draw(st.sampled_from([[], ["p1"]])),
                                 group_names=data.draw(st.sampled_from([[], ["n1"]])),
                                 report_only=data.draw(st.booleans())))
    for n in range(data.draw(st.integers(1, 12))):
        minutes = data.draw(st.sampled_from([0, 30, 60]))  # 0: open-ended, one interval
        event = make(f"e{n}", start=T0 + data.draw(st.integers(0, 4)) * H, minutes=minutes,
                     payloads=(1.0,) if minutes == 0 or data.draw(st.booleans()) else (1.0, 2.0),
                     targets=data.draw(st.sampled_from(_SELECTORS)),
                     market_context=data.draw(st.sampled_from([MC, MC + "/2"])))
        everyone = store.list_vens()
        expected = any(event_targets.overlap(event, other, lambda: everyone)
                       for other in store.list_events())
        assert (_refused(ctx, event) is not None) == expected
        if data.draw(st.integers(0, 3)) == 0 and store.list_events():
            chosen = data.draw(st.sampled_from(store.list_events()))
            events.cancel_event(ctx, descriptor(chosen)["event_id"])


def test_modify_bumps_by_exactly_one_per_call(ctx, clock, emitted):
    events.add_event(ctx, make())
    clock.advance(MIN)
    first = events.modify_event(ctx, "e1", priority=3, modification_reason="tighter")
    assert descriptor(first)["modification_number"] == 1
    assert descriptor(first)["modification_date_time"] == T0 + MIN
    assert descriptor(first)["modification_reason"] == "tighter"
    second = events.modify_event(ctx, "e1", intervals=intervals(payloads=(3.0,)))
    assert descriptor(second)["modification_number"] == 2
    assert "modification_reason" not in descriptor(second)  # it described the first change
    assert second["active_period"]["duration"] == 30 * MIN
    assert ctx.store.get_event("e1") == second
    assert [name for name, _ in emitted] == ["event_added", "event_modified", "event_modified"]
    assert emitted[-1][1] == {"event_id": "e1", "modification_number": 2}


def test_a_modification_that_changes_nothing_is_refused(ctx):
    events.add_event(ctx, make(priority=1))
    with pytest.raises(EventError, match="no change.*modification_number stays 0"):
        events.modify_event(ctx, "e1", priority=1, modification_reason="same")
    assert descriptor(ctx.store.get_event("e1"))["modification_number"] == 0


@pytest.mark.parametrize(
    "changes, check",
    [
        ({"priority": None}, lambda e: "priority" not in descriptor(e)),
        ({"response_required": "never"}, lambda e: e["response_required"] == "never"),
        ({"ven_id": "ven-b"}, lambda e: e["target"]["ven_ids"] == ["ven-b"]),
        ({"targets": [{"group_id": "g"}]},
         lambda e: (e["target"]["group_ids"], e["target"]["ven_ids"]) == (["g"], [])),
        ({"market_context": "http://other.example"},
         lambda e: descriptor(e)["market_context"] == "http://other.example"),
        ({"ramp_up_period": 10 * MIN}, lambda e: e["active_period"]["ramp_up"] == 10 * MIN),
        ({"notification_period": H}, lambda e: e["active_period"]["notification"] == H),
        ({"recovery_period": MIN}, lambda e: e["active_period"]["recovery"] == MIN),
        ({"start_after": MIN}, lambda e: e["active_period"]["start_after"] == MIN),
        ({"test_event": True}, lambda e: descriptor(e)["test_event"] == "true"),
        ({"vtn_comment": "hi"}, lambda e: descriptor(e)["vtn_comment"] == "hi"),
        # No first dtstart: the payloads change and the start stays.
        ({"intervals": [{"duration": H, "signal_payload": 3.0}]},
         lambda e: (e["active_period"]["dtstart"], e["event_signals"][0]["intervals"]) ==
         (T0 + H, [{"duration": H, "uid": "0", "signal_payload": 3.0}])),
    ],
)
def test_each_kind_of_change_applies_and_bumps(ctx, changes, check):
    events.add_event(ctx, make(ven_id="ven-a", priority=1))
    updated = events.modify_event(ctx, "e1", **changes)
    assert check(updated) and descriptor(updated)["modification_number"] == 1


def test_modify_with_a_full_event_replaces_the_content_and_keeps_the_id(ctx):
    events.add_event(ctx, make())
    replacement = make("ignored-not", payloads=(3.0, 3.0))
    del descriptor(replacement)["event_id"]
    descriptor(replacement)["modification_number"] = 40
    descriptor(replacement)["modification_reason"] = "new plan"
    updated = events.modify_event(ctx, "e1", event=replacement)
    assert descriptor(updated)["event_id"] == "e1"
    assert descriptor(updated)["modification_number"] == 1
    assert descriptor(updated)["modification_reason"] == "new plan"
    assert [i["signal_payload"] for i in updated["event_signals"][0]["intervals"]] == [3.0, 3.0]
    other = make("other")
    with pytest.raises(EventError, match="keeps the eventID 'e1'"):
        events.modify_event(ctx, "e1", event=other)


def test_modify_refuses_unknown_events_cancelled_events_and_unknown_changes(ctx):
    with pytest.raises(events.UnknownEvent, match="event 'nope' is not known") as caught:
        events.modify_event(ctx, "nope", priority=1)
    assert isinstance(caught.value, KeyError)
    events.add_event(ctx, make())
    with pytest.raises(TypeError, match="unknown changes \\['payload'\\]"):
        events.modify_event(ctx, "e1", payload=1)
    with pytest.raises(EventError, match="rule 9"):
        events.modify_event(ctx, "e1", intervals=intervals(payloads=(9.0,)))
    events.cancel_event(ctx, "e1")
    with pytest.raises(EventError, match="'e1' is cancelled"):
        events.modify_event(ctx, "e1", priority=1)
    assert descriptor(ctx.store.get_event("e1"))["modification_number"] == 1


def test_intervals_change_needs_a_single_signal_event(ctx):
    full = make()
    full["event_signals"].append({**full["event_signals"][0], "signal_id": "1"})
    events.add_event(ctx, full)
    with pytest.raises(EventError, match="2 signals, so pass event="):
        events.modify_event(ctx, "e1", intervals=intervals())


def test_cancel_bumps_once(ctx, clock, emitted):
    events.add_event(ctx, make())
    clock.advance(MIN)
    cancelled = events.cancel_event(ctx, "e1")
    # Stored as a field of its own; the status "cancelled" is derived from it when sent.
    assert cancelled["cancelled"] is True and "event_status" not in descriptor(cancelled)
    assert event_state.is_cancelled(ctx.store.get_event("e1"))
    assert descriptor(cancelled)["modification_number"] == 1
    assert descriptor(cancelled)["modification_date_time"] == T0 + MIN
    assert events.cancel_event(ctx, "e1") == cancelled
    assert descriptor(ctx.store.get_event("e1"))["modification_number"] == 1
    assert [name for name, _ in emitted] == ["event_added", "event_cancelled"]
    with pytest.raises(events.UnknownEvent):
        events.cancel_event(ctx, "nope")


# -- distribution -------------------------------------------------------------------------------


def ids(payload_or_events):
    found = payload_or_events
    if isinstance(found, dict):
        found = found["events"]
    return [descriptor(e)["event_id"] for e in found]


def sent(store, ven_id="ven-a"):
    """eventID -> (modificationNumber, cancelled, acknowledged) of what the VEN was sent."""
    entries = (store.get_delivered(ven_id).get("events") or {}).items()
    return {event_id: (entry["modification_number"], entry["cancelled"], entry["acknowledged"])
            for event_id, entry in entries if entry}


def move(ctx, ven, **fields):
    """Change a VEN record the way the VTN API does: store it, then mark what it affects."""
    changed = dict(ven, **fields)
    ctx.store.put_ven(changed)
    events.refresh_ven(ctx, changed, ctx.now())
    return changed


def test_a_new_event_is_pending_until_distributed(ctx, ven):
    assert not events.distribution_pending(ctx, ven, T0)
    events.add_event(ctx, make(ven_id="ven-a", response_required="never"))
    assert events.distribution_pending(ctx, ven, T0)
    payload = events.distribute_event_payload(ctx, ven, T0)
    assert ids(payload) == ["e1"]
    assert sent(ctx.store) == {"e1": (0, False, True)}
    assert ctx.store.get_delivered("ven-a")["events"]["e1"]["sent_at"] == T0
    assert not events.distribution_pending(ctx, ven, T0)
    assert not events.distribution_pending(ctx, ven, T0 + H)  # far -> active is no change


def test_modify_redistributes_to_targeted_vens_only(ctx, store):
    a, b, other = ven_record("a"), ven_record("b"), ven_record("other")
    for record in (a, b, other):
        store.put_ven(record)
    events.add_event(ctx, make(targets={"ven_ids": ["a", "b"]}))
    for record in (a, b):
        events.distribute_event_payload(ctx, record, T0)
    events.modify_event(ctx, "e1", priority=2)
    assert [events.distribution_pending(ctx, v, T0) for v in (a, b, other)] == [True, True, False]
    payload = events.distribute_event_payload(ctx, a, T0)
    assert descriptor(payload["events"][0])["modification_number"] == 1
    assert [events.distribution_pending(ctx, v, T0) for v in (a, b)] == [False, True]


def test_a_cancellation_is_sent_until_the_ven_answers_it(ctx, ven, clock):
    events.add_event(ctx, make(ven_id="ven-a"))
    events.distribute_event_payload(ctx, ven, T0)
    events.cancel_event(ctx, "e1")
    assert events.distribution_pending(ctx, ven, T0)
    payload = events.distribute_event_payload(ctx, ven, T0)
    sent_now = descriptor(payload["events"][0])
    assert (sent_now["event_status"], sent_now["modification_number"]) == ("cancelled", 1)
    assert sent(ctx.store) == {"e1": (1, True, False)}
    # Not answered: sent again once two poll intervals (10 s each) have passed, not before.
    assert not events.distribution_pending(ctx, ven, T0 + 20 * SEC - US)
    assert events.distribution_pending(ctx, ven, T0 + 20 * SEC)
    again = events.distribute_event_payload(ctx, ven, T0 + 20 * SEC)
    assert [(descriptor(e)["event_status"], descriptor(e)["modification_number"])
            for e in again["events"]] == [("cancelled", 1)]
    events.created_event(ctx, ven, created_payload(created(modification_number=1)))
    assert sent(ctx.store) == {"e1": (1, True, True)}
    assert not events.distribution_pending(ctx, ven, T0 + H)
    assert events.events_for_ven(ctx, ven, T0 + H) == []


def test_a_cancellation_without_response_required_is_sent_once(ctx, ven):
    events.add_event(ctx, make(ven_id="ven-a", response_required="never"))
    events.distribute_event_payload(ctx, ven, T0)
    events.cancel_event(ctx, "e1")
    assert ids(events.distribute_event_payload(ctx, ven, T0)) == ["e1"]
    assert not events.distribution_pending(ctx, ven, T0 + H)
    assert events.events_for_ven(ctx, ven, T0) == []


def test_an_unanswered_event_is_sent_again_after_the_redelivery_time(ctx, ven):
    ctx.settings.redelivery_after = timedelta(seconds=3)
    events.add_event(ctx, make(ven_id="ven-a"))
    events.distribute_event_payload(ctx, ven, T0)
    assert not events.distribution_pending(ctx, ven, T0 + 3 * SEC - US)
    assert events.distribution_pending(ctx, ven, T0 + 3 * SEC)
    events.distribute_event_payload(ctx, ven, T0 + 3 * SEC)
    # An answer to an older version does not count; one to the version sent does.
    events.modify_event(ctx, "e1", priority=1)
    events.distribute_event_payload(ctx, ven, T0 + 4 * SEC)
    events.created_event(ctx, ven, created_payload(created(modification_number=0)))
    assert events.distribution_pending(ctx, ven, T0 + 7 * SEC)
    events.created_event(ctx, ven, created_payload(created(modification_number=1,
                                                           opt_type="optOut")))
    assert not events.distribution_pending(ctx, ven, T0 + H - US)


def test_a_cancelled_event_the_ven_never_saw_is_not_sent(ctx, ven):
    events.add_event(ctx, make(ven_id="ven-a"))
    events.cancel_event(ctx, "e1")
    assert events.events_for_ven(ctx, ven, T0) == []
    assert not events.distribution_pending(ctx, ven, T0)


def test_an_event_added_after_it_ended_is_stored_but_never_distributed(ctx, ven):
    events.add_event(ctx, make(ven_id="ven-a", start=T0 - 3 * H))
    assert ctx.store.get_event("e1") is not None
    assert events.distribution_pending(ctx, ven, T0) is False
    assert events.distribute_event_payload(ctx, ven, T0)["events"] == []
    assert sent(ctx.store) == {}


def test_an_event_modified_into_the_past_reaches_the_ven_that_had_it(ctx, ven):
    events.add_event(ctx, make(ven_id="ven-a"))
    events.distribute_event_payload(ctx, ven, T0)
    events.created_event(ctx, ven, created_payload(created()))
    events.modify_event(ctx, "e1", intervals=intervals(start=T0 - 2 * H))
    assert events.distribution_pending(ctx, ven, T0)
    payload = events.distribute_event_payload(ctx, ven, T0)
    got = descriptor(payload["events"][0])
    assert (got["event_status"], got["modification_number"]) == ("completed", 1)
    # A VEN does not answer a completed event, so it is not waited for or sent again.
    assert sent(ctx.store) == {"e1": (1, False, True)}
    assert not events.distribution_pending(ctx, ven, T0 + H)
    assert events.events_for_ven(ctx, ven, T0 + H) == []


def test_an_event_retargeted_away_is_withdrawn_with_a_new_number(ctx, store):
    a, b = ven_record("a"), ven_record("b")
    for record in (a, b):
        store.put_ven(record)
    events.add_event(ctx, make(ven_id="a"))
    events.distribute_event_payload(ctx, a, T0)
    events.modify_event(ctx, "e1", ven_id="b")
    assert [events.distribution_pending(ctx, v, T0) for v in (a, b)] == [True, True]
    withdrawn = events.distribute_event_payload(ctx, a, T0)["events"][0]
    assert (descriptor(withdrawn)["event_status"],
            descriptor(withdrawn)["modification_number"]) == ("cancelled", 1)
    assert withdrawn["target"]["ven_ids"] == ["a"]  # addressed to the VEN it is withdrawn from
    assert descriptor(events.distribute_event_payload(ctx, b, T0)["events"][0])[
        "event_status"] == "far"
    # The withdrawal is answered like any cancellation, at the number it carried.
    events.created_event(ctx, a, dict(created_payload(created(modification_number=1)),
                                      ven_id="a"))
    assert sent(store, "a") == {"e1": (1, True, True)}
    # Targeting it again does not un-cancel it for that VEN: OpenADR has no such message.
    events.modify_event(ctx, "e1", targets={"ven_ids": ["a", "b"]})
    assert not events.distribution_pending(ctx, a, T0)


def test_a_ven_that_leaves_the_group_gets_a_cancellation_it_has_not_seen(ctx, store):
    north = ven_record("north-1", group_ids=["north"])
    store.put_ven(north)
    events.add_event(ctx, make(targets={"group_ids": ["north"]}))
    events.distribute_event_payload(ctx, north, T0)
    events.created_event(ctx, north, dict(created_payload(created()), ven_id="north-1"))
    moved = move(ctx, north, group_ids=["south"])
    assert events.distribution_pending(ctx, moved, T0)
    withdrawn = events.distribute_event_payload(ctx, moved, T0)["events"][0]
    # The event did not change (still 0), so the VEN is sent one more than it holds.
    assert (descriptor(withdrawn)["event_status"],
            descriptor(withdrawn)["modification_number"]) == ("cancelled", 1)
    assert store.get_event("e1")["event_descriptor"]["modification_number"] == 0
    # Its answer to that number is accepted (it was sent), not refused as a future version.
    events.created_event(ctx, moved, dict(created_payload(created(modification_number=1)),
                                          ven_id="north-1"))
    assert not events.distribution_pending(ctx, moved, T0 + H)
    # A VEN that joins the group gets the event as it is.
    joined = move(ctx, ven_record("north-2"), group_ids=["north"])
    assert ids(events.events_for_ven(ctx, joined, T0)) == ["e1"]


def test_a_ven_removed_and_added_back_before_it_polled_is_sent_nothing(ctx, store):
    north = ven_record("north-1", group_ids=["north"])
    store.put_ven(north)
    events.add_event(ctx, make(targets={"group_ids": ["north"]}, response_required="never"))
    events.distribute_event_payload(ctx, north, T0)
    move(ctx, north, group_ids=[])
    move(ctx, north, group_ids=["north"])
    assert not events.distribution_pending(ctx, north, T0)
    # The poll that found nothing to send put the record right: the next one reads it alone.
    assert store.get_delivered("north-1")["due_at"] is None


def test_a_report_only_ven_is_withdrawn_the_events_it_had(ctx, store):
    ven = ven_record()
    store.put_ven(ven)
    events.add_event(ctx, make(response_required="never"))
    events.distribute_event_payload(ctx, ven, T0)
    reporter = move(ctx, ven, report_only=True)
    assert ids(events.events_for_ven(ctx, reporter, T0)) == ["e1"]
    events.distribute_event_payload(ctx, reporter, T0)
    assert sent(store) == {"e1": (1, True, True)}


def test_completed_events_are_dropped_and_trigger_nothing(ctx, ven):
    events.add_event(ctx, make(ven_id="ven-a"))
    assert events.distribution_pending(ctx, ven, T0 + 3 * H) is False
    assert events.distribute_event_payload(ctx, ven, T0 + 3 * H)["events"] == []


def test_an_event_the_codec_cannot_encode_is_refused_when_it_is_made(store, clock):
    from flask_openadr import codec

    checked = Context(settings=Settings(market_context=MC), store=store, clock=clock,
                      check_payload=codec.encode)
    fraction = make(payloads=(1.0,))
    fraction["active_period"]["duration"] = timedelta(seconds=90.5)
    fraction["event_signals"][0]["intervals"][0]["duration"] = timedelta(seconds=90.5)
    with pytest.raises(EventError, match=r"active_period\.duration.*fraction of a second"):
        events.add_event(checked, fraction)
    with pytest.raises(EventError, match=r"vtn_comment.*control characters"):
        events.add_event(checked, make(vtn_comment="bell\x07"))
    assert store.list_events() == []
    events.add_event(checked, make())
    with pytest.raises(EventError, match="vtn_comment"):
        events.modify_event(checked, "e1", vtn_comment="nul\x00")
    with pytest.raises(EventError, match="modification_reason"):
        events.cancel_event(checked, "e1", modification_reason="\x1b[31m")
    assert descriptor(store.get_event("e1"))["modification_number"] == 0


def test_nothing_is_recorded_as_delivered_when_the_reply_cannot_be_built(store, clock, ven):
    from flask_openadr.services import poll

    def failing_encoder(payload_name, payload):
        raise ValueError("cannot build this reply")

    failing = Context(settings=Settings(market_context=MC), store=store, clock=clock,
                      encode=failing_encoder)
    events.add_event(failing, make(ven_id="ven-a"))
    before = store.get_delivered("ven-a")
    with pytest.raises(ValueError, match="cannot build"):
        poll.poll(failing, ven, {"ven_id": "ven-a"})
    assert store.get_delivered("ven-a") == before and sent(store) == {}
    working = Context(settings=Settings(market_context=MC), store=store, clock=clock,
                      encode=lambda payload_name, payload: b"<built/>")
    name, reply, body = poll.poll(working, ven, {"ven_id": "ven-a"})
    assert (name, ids(reply), body) == ("oadrDistributeEvent", ["e1"], b"<built/>")
    assert sent(store) == {"e1": (0, False, False)}


def test_targeting_decides_who_gets_what(ctx, store):
    north = ven_record("north", group_ids=["north"])
    meter = ven_record("meter", resource_ids=["m1"])
    party = ven_record("party", party_ids=["p1"])
    reporter = ven_record("reporter", report_only=True)
    loner = ven_record("loner")
    for record in (north, meter, party, reporter, loner):
        store.put_ven(record)
    # One program each: events of one VEN and program must not overlap.
    events.add_event(ctx, make("to-north", targets={"group_ids": ["north"]},
                               market_context=MC + "/north"))
    events.add_event(ctx, make("to-meter", targets=[{"resource_id": "m1"}],
                               market_context=MC + "/meter"))
    events.add_event(ctx, make("to-party", targets=[{"party_id": "p1"}],
                               market_context=MC + "/party"))
    events.add_event(ctx, make("to-all"))
    got = {v["ven_id"]: ids(events.events_for_ven(ctx, v, T0))
           for v in (north, meter, party, reporter, loner)}
    assert got == {
        "north": ["to-all", "to-north"], "meter": ["to-all", "to-meter"],
        "party": ["to-all", "to-party"], "reporter": [], "loner": ["to-all"],
    }
    assert not events.distribution_pending(ctx, reporter, T0)


def test_the_payload_for_pull_and_push_vens(ctx, store):
    store.put_ven(ven_record())
    events.add_event(ctx, make(ven_id="ven-a"))
    pull = events.distribute_event_payload(ctx, ven_record(), T0)
    assert list(pull) == ["response", "request_id", "vtn_id", "events"]
    assert pull["response"] == {"response_code": 200, "response_description": "OK",
                                "request_id": ""}
    assert (pull["request_id"], pull["vtn_id"]) == ("id-1", "VTN-1")
    assert descriptor(pull["events"][0])["created_date_time"] == T0
    push = events.distribute_event_payload(ctx, ven_record(http_pull_model=False), T0,
                                           request_id="r-9")
    assert "response" not in push and push["request_id"] == "r-9"


def test_reply_limit_trims_from_the_end_and_records_only_what_was_sent(ctx, ven):
    for name, hours in (("third", 4), ("first", 2), ("second", 3)):
        events.add_event(ctx, make(name, start=T0 + hours * H, ven_id="ven-a"))
    payload = events.distribute_event_payload(ctx, ven, T0, reply_limit=2)
    assert ids(payload) == ["first", "second"]
    assert set(sent(ctx.store)) == {"first", "second"}
    assert events.distribution_pending(ctx, ven, T0)


def test_delivered_entries_of_deleted_events_are_dropped(ctx, ven):
    events.add_event(ctx, make("gone", ven_id="ven-a"))
    events.add_event(ctx, make("kept", ven_id="ven-a", start=T0 + 2 * H))
    events.distribute_event_payload(ctx, ven, T0)
    ctx.store.delete_event("gone")
    events.modify_event(ctx, "kept", priority=1)
    events.distribute_event_payload(ctx, ven, T0)
    assert sent(ctx.store) == {"kept": (1, False, False)}


# -- oadrRequestEvent ---------------------------------------------------------------------------


def test_request_event_echoes_the_request_id_and_honours_reply_limit(ctx, ven):
    events.add_event(ctx, make("later", start=T0 + 2 * H))
    events.add_event(ctx, make("sooner", start=T0 + H))
    name, reply, _ = events.request_event(
        ctx, ven, {"request_id": "req-7", "ven_id": "ven-a", "reply_limit": 1})
    assert name == "oadrDistributeEvent"
    assert reply["response"] == {"response_code": 200, "response_description": "OK",
                                 "request_id": "req-7"}
    assert reply["request_id"] and reply["request_id"] != "req-7"
    assert ids(reply) == ["sooner"]


def test_rendering_leaves_the_stored_event_unchanged():
    # render_event copies only what it changes and shares the rest (intervals, the active
    # period) with the stored event: rendering and encoding it for several VENs must not
    # write through to the event, nor one VEN's copy to another's.
    from flask_openadr import codec

    event = make(targets={"ven_ids": ["ven-a", "ven-b"], "group_ids": ["north"]},
                 payloads=(1.0, 2.0, 3.0), current_value=9.0)
    event["event_signals"][0]["target"] = {"ven_ids": ["ven-a", "ven-b"]}
    event["cancelled"] = True
    before = copy.deepcopy(event)
    sent = {ven_id: event_targets.render_event(event, ven_id, T0 + H)
            for ven_id in ("ven-a", "ven-b")}
    for ven_id, rendered in sent.items():
        codec.encode("oadrDistributeEvent", {"request_id": "r", "vtn_id": "VTN",
                                             "events": [rendered]})
        assert rendered["target"]["ven_ids"] == [ven_id]
        assert rendered["event_signals"][0]["target"]["ven_ids"] == [ven_id]
        assert descriptor(rendered)["event_status"] == "cancelled"
        assert rendered["event_signals"][0]["current_value"] == 0.0  # cancelled, not 9.0
    assert event == before
    # What a VEN's copy changes is its own: the descriptor, signals and targets are copies.
    sent["ven-a"]["event_signals"][0]["target"]["ven_ids"].append("x")
    sent["ven-a"]["target"]["group_ids"].append("x")
    descriptor(sent["ven-a"])["modification_number"] = 99
    assert event == before and sent["ven-b"]["target"]["group_ids"] == ["north"]


def test_request_event_handler_list_replaces_the_built_in_set(ctx, ven):
    events.add_event(ctx, make("stored"))
    calls = []

    def supply(ven_id):
        calls.append(ven_id)
        rendered = event_targets.render_event(make("full", start=T0 + 2 * H), ven_id, T0 - H)
        convenience = {"event_id": "easy", "signal_name": "SIMPLE", "signal_type": "level",
                       "intervals": intervals(start=T0 + 3 * H)}
        return [convenience, rendered]

    ctx.handlers["on_request_event"] = supply
    _, reply, _ = events.request_event(ctx, ven, {"request_id": "r", "ven_id": "ven-a"})
    assert calls == ["ven-a"]
    assert ids(reply) == ["full", "easy"]  # put in the protocol's order
    assert descriptor(reply["events"][0])["created_date_time"] == T0  # re-stamped
    assert descriptor(reply["events"][1])["market_context"] == MC
    assert sent(ctx.store) == {}  # made-up events are not tracked, nor is "stored" sent


def test_request_event_handler_events_keep_a_cancellation_and_are_encoded_once(store, clock,
                                                                             ven):
    from flask_openadr import codec

    checked = Context(settings=Settings(market_context=MC), store=store, clock=clock,
                      check_payload=codec.encode)
    cancelled = make("gone")
    cancelled["cancelled"] = True
    rendered = event_targets.render_event(cancelled, "ven-a", T0)
    checked.handlers["on_request_event"] = lambda ven_id: [rendered]
    _, reply, _ = events.request_event(checked, ven, {"request_id": "r", "ven_id": "ven-a"})
    assert [descriptor(e)["event_status"] for e in reply["events"]] == ["cancelled"]
    # A handler's event is held to the XSD as a stored one is: by encoding it once.
    checked.handlers["on_request_event"] = lambda ven_id: [make("odd", priority=-1)]
    with pytest.raises(EventError, match=r"priority: -1 is out of range for unsignedInt"):
        events.request_event(checked, ven, {"request_id": "r", "ven_id": "ven-a"})


def test_request_event_handler_returning_none_sends_the_built_in_set(ctx, ven):
    events.add_event(ctx, make("stored"))
    ctx.handlers["on_request_event"] = lambda ven_id: None
    _, reply, _ = events.request_event(ctx, ven, {"request_id": "r", "ven_id": "ven-a"})
    assert ids(reply) == ["stored"]


# -- oadrCreatedEvent ---------------------------------------------------------------------------


def created(event_id="e1", opt_type="optIn", modification_number=0, request_id="dist-1"):
    return {
        "response_code": 200, "response_description": "OK", "request_id": request_id,
        "qualified_event_id": {"event_id": event_id, "modification_number": modification_number},
        "opt_type": opt_type,
    }


def created_payload(*responses):
    return {"response": {"response_code": 200, "request_id": ""},
            "event_responses": list(responses), "ven_id": "ven-a"}


def test_opt_in_then_opt_out_replaces_the_answer(ctx, ven, clock, emitted):
    events.add_event(ctx, make())
    name, reply = events.created_event(ctx, ven, created_payload(created()))
    assert name == "oadrResponse"
    assert reply == {"response": {"response_code": 200, "response_description": "OK",
                                  "request_id": ""}, "ven_id": "ven-a"}
    clock.advance(MIN)
    events.created_event(ctx, ven, created_payload(created(opt_type="optOut")))
    assert events.event_responses(ctx, "e1") == [{
        "ven_id": "ven-a", "event_id": "e1", "modification_number": 0, "opt_type": "optOut",
        "response_code": 200, "response_description": "OK", "request_id": "dist-1",
        "received_at": T0 + MIN,
    }]
    answers = [data for name, data in emitted if name == "event_response_received"]
    assert [a["opt_type"] for a in answers] == ["optIn", "optOut"]
    assert answers[0] == {"ven_id": "ven-a", "event_id": "e1", "modification_number": 0,
                          "opt_type": "optIn"}


def test_answers_to_each_version_are_kept_apart(ctx, ven):
    events.add_event(ctx, make())
    events.modify_event(ctx, "e1", priority=1)
    events.created_event(ctx, ven, created_payload(created(), created(modification_number=1)))
    assert sorted(r["modification_number"] for r in events.event_responses(ctx, "e1")) == [0, 1]


@pytest.mark.parametrize(
    "bad, message",
    [
        (created(event_id="nope"), "eventID 'nope' is not known"),
        (created(modification_number=1), "modificationNumber 0; 1 was never sent"),
    ],
)
def test_an_unknown_event_or_version_is_452_and_nothing_is_written(ctx, ven, emitted, bad, message):
    events.add_event(ctx, make())
    with pytest.raises(InvalidID, match=message) as caught:
        events.created_event(ctx, ven, created_payload(created(), bad))
    assert caught.value.response_code == 452
    assert events.event_responses(ctx, "e1") == []
    assert [name for name, _ in emitted] == ["event_added"]


def test_a_malformed_answer_is_454(ctx, ven):
    events.add_event(ctx, make())
    with pytest.raises(InvalidData, match="opt_type is 'maybe'"):
        events.created_event(ctx, ven, created_payload(created(opt_type="maybe")))
    broken = created()
    del broken["qualified_event_id"]
    with pytest.raises(InvalidData, match=r"event_responses\[0\] is incomplete"):
        events.created_event(ctx, ven, created_payload(broken))


def test_the_handler_sees_the_answers_and_its_rejection_leaves_the_store_unchanged(ctx, ven):
    events.add_event(ctx, make())
    seen = []
    ctx.handlers["on_created_event"] = seen.append
    events.created_event(ctx, ven, created_payload(created()))
    assert seen[0]["ven_id"] == "ven-a"
    assert seen[0]["event_responses"] == [created()]  # as the VEN sent them

    def refuse(payload):
        raise Rejection(451, "this program does not allow opting out")

    ctx.handlers["on_created_event"] = refuse
    with pytest.raises(Rejection) as caught:
        events.created_event(ctx, ven, created_payload(created(opt_type="optOut")))
    assert caught.value.response_code == 451
    assert [r["opt_type"] for r in events.event_responses(ctx, "e1")] == ["optIn"]


def test_a_ven_that_registers_reads_only_the_events_aimed_at_it(ctx, store):
    from tests.support.counting import CountingStore

    from flask_openadr.services import delivery, retention

    for n in range(30):
        events.add_event(ctx, make(f"other-{n}", ven_id=f"other-{n}",
                                   market_context=MC + "/others"))
    # One program each: events of one VEN and program must not overlap.
    events.add_event(ctx, make("to-north", targets={"group_ids": ["north"]},
                               market_context=MC + "/north"))
    events.add_event(ctx, make("to-all"))
    events.add_event(ctx, make("to-me", ven_id="ven-a", market_context=MC + "/me"))
    counting = CountingStore(store)
    ctx.store = counting
    joined = ven_record(group_ids=["north"])
    store.put_ven(joined)
    delivery.refresh_ven(ctx, joined, T0, fresh=True)
    assert "list_events" not in counting.calls
    assert counting.calls.count("get_event") == 3
    assert sorted(store.get_delivered("ven-a")["events"]) == ["to-all", "to-me", "to-north"]
    # Retargeting and removal keep the index right.
    ctx.store = store
    events.modify_event(ctx, "to-me", ven_id="ven-b")
    index = {owner: [r["event_id"] for r in store.list_records(delivery.EVENT_TARGETS, owner)]
             for owner in ("ven_ids:ven-a", "ven_ids:ven-b", "group_ids:north", "*")}
    assert index == {"ven_ids:ven-a": [], "ven_ids:ven-b": ["to-me"],
                     "group_ids:north": ["to-north"], "*": ["to-all"]}
    ctx.settings.event_retention = timedelta(0)
    ctx.clock = lambda: T0 + 3 * H
    assert retention.sweep(ctx) == 33
    assert store.list_records(delivery.EVENT_TARGETS, "group_ids:north") == []


def test_a_poll_that_read_the_ven_before_a_group_change_still_sends_the_withdrawal(ctx, store):
    north = ven_record(group_ids=["north"])
    store.put_ven(north)
    events.add_event(ctx, make(targets={"group_ids": ["north"]}, response_required="never"))
    events.distribute_event_payload(ctx, north, T0)
    stale = dict(north)  # what the poll's authentication read, before the change committed
    move(ctx, north, group_ids=[])
    assert events.distribution_pending(ctx, stale, T0)
    payload = events.distribute_event_payload(ctx, stale, T0)
    assert descriptor(payload["events"][0])["event_status"] == "cancelled"


class CountingStore:
    """A real store that counts the calls made to it, by method name (issue 10: the store
    round trips of one message must not grow with the number of answers in it)."""

    def __init__(self, store):
        self._store = store
        self.calls = collections.Counter()

    def __getattr__(self, name):
        attribute = getattr(self._store, name)
        if not callable(attribute):
            return attribute

        def counted(*args, **kwargs):
            self.calls[name] += 1
            return attribute(*args, **kwargs)

        return counted


def _answers_cost(ctx, ven, answers):
    """The store calls one oadrCreatedEvent costs, by method name."""
    counting = CountingStore(ctx.store)
    events.created_event(dataclasses.replace(ctx, store=counting), ven,
                         created_payload(*answers))
    return counting.calls


def test_many_answers_cost_the_store_reads_of_one(ctx, ven, store):
    for n in range(500):
        store.put_event(make(f"e{n}", ven_id="ven-a"))
    one = _answers_cost(ctx, ven, [created("e0")])
    many = _answers_cost(ctx, ven, [created(f"e{n}", opt_type="optOut") for n in range(500)])
    # Reads: the delivery record, the events, the VEN's opts, once each however many answers.
    reads = {name: count for name, count in many.items() if name != "put_event_response"}
    assert reads == {name: count for name, count in one.items() if name != "put_event_response"}
    assert "get_event" not in many and many["get_events"] == 1
    assert many["list_records"] == 1
    # One write per distinct answer, in one transaction.
    assert (one["put_event_response"], many["put_event_response"]) == (1, 500)
    assert many["atomic"] == 1
    assert [r["opt_type"] for r in events.event_responses(ctx, "e499")] == ["optOut"]


def test_duplicate_answers_are_written_once_and_the_last_one_counts(ctx, ven, store, emitted):
    store.put_event(make("e1", ven_id="ven-a"))
    answers = [created(opt_type="optIn")] * 499 + [created(opt_type="optOut")]
    calls = _answers_cost(ctx, ven, answers)
    assert calls["put_event_response"] == 1 and calls["get_events"] == 1
    assert [r["opt_type"] for r in events.event_responses(ctx, "e1")] == ["optOut"]
    assert [data["opt_type"] for name, data in emitted
            if name == "event_response_received"] == ["optOut"]


def test_an_unknown_event_among_many_answers_changes_nothing(ctx, ven, store):
    for n in range(300):
        store.put_event(make(f"e{n}", ven_id="ven-a"))
    answers = [created(f"e{n}") for n in range(300)] + [created("nobody-knows")]
    with pytest.raises(InvalidID, match="nobody-knows"):
        events.created_event(ctx, ven, created_payload(*answers))
    assert events.event_responses(ctx, "e0") == []
