"""OadrPoll: the user's on_poll first, then the outbox in protocol order, then oadrResponse."""
from __future__ import annotations

from datetime import timedelta

from tests.support.clock import T0
from tests.support.counting import CountingStore
from tests.support.vens import make_ven


def add_event(app, vtn, ven_id):
    with app.app_context():
        return vtn.add_event(ven_id=ven_id, signal_name="SIMPLE", signal_type="level", intervals=[
            {"dtstart": T0 + timedelta(hours=1), "duration": timedelta(hours=1),
             "signal_payload": 1.0}])


def test_empty_outbox_answers_oadr_response_with_the_ven_id(app, registered_ven):
    name, reply = registered_ven.poll()
    assert name == "oadrResponse"
    assert reply["response"] == {"response_code": 200, "response_description": "OK",
                                 "request_id": ""}
    assert reply["ven_id"] == registered_ven.ven_id


def test_outbox_order_follows_the_protocol_notes(app, vtn):
    ven = make_ven(app)
    ven.register()  # queues the VTN's METADATA oadrRegisterReport (priority 2)
    add_event(app, vtn, ven.ven_id)  # a pending distribution (between 2 and 4)
    with app.app_context():
        vtn.request_reregistration(ven.ven_id)  # priority 1, queued last but sent first
    names = [ven.poll()[0] for _ in range(4)]
    assert names == ["oadrRequestReregistration", "oadrRegisterReport", "oadrDistributeEvent",
                     "oadrResponse"]


def test_on_poll_is_asked_first_and_none_lets_the_outbox_answer(app, vtn):
    asked = []
    answers = iter([("oadrRequestReregistration", {"ven_id": "custom"}), None])

    @vtn.on_poll
    def poll(ven_id):
        asked.append(ven_id)
        return next(answers)

    ven = make_ven(app)
    ven.register()
    name, reply = ven.poll()
    assert (name, reply) == ("oadrRequestReregistration", {"ven_id": "custom"})
    name, _ = ven.poll()
    assert name == "oadrRegisterReport"  # the handler's None: the outbox, still intact
    assert asked == [ven.ven_id, ven.ven_id]


def test_a_new_registration_drops_what_was_queued_for_the_old_one(app, vtn):
    ven = make_ven(app, ven_id="ven-7")
    ven.register()
    with app.app_context():
        vtn.request_reregistration(ven.ven_id)
    ven.register()  # a fresh registration (no registrationID): starts afresh
    names = [ven.poll()[0] for _ in range(2)]
    assert names == ["oadrRegisterReport", "oadrResponse"]


def empty_poll_calls(store_uri, tmp_path, vens, events_per_ven):
    """The store calls of one empty poll, with ``vens`` registered VENs that each have
    ``events_per_ven`` events (most over, one far) delivered and answered."""
    from flask_openadr.services import events, handle
    from flask_openadr.config import Settings
    from flask_openadr.services.context import Context
    from flask_openadr.store import open_store

    now = [T0]
    store = open_store(store_uri)
    ctx = Context(settings=Settings(), store=store, clock=lambda: now[0])
    start = T0 + timedelta(hours=1)
    for n in range(vens):
        ven_id = f"ven-{n}"
        store.put_ven({"ven_id": ven_id, "registration_id": f"reg-{n}", "report_only": False,
                       "group_ids": [], "resource_ids": [], "party_ids": []})
        for k in range(events_per_ven):
            begins = start if k == 0 else T0 - timedelta(days=k)
            events.add_event(ctx, events.build_event(
                event_id=f"e-{n}-{k}", ven_id=ven_id, signal_name="SIMPLE", signal_type="level",
                market_context="http://x.example", response_required="never", intervals=[
                    {"dtstart": begins, "duration": timedelta(hours=1), "signal_payload": 1.0}]))
        handle(ctx, "OadrPoll", "oadrPoll", {"ven_id": ven_id})
    counting = CountingStore(store)
    ctx.store = counting
    now[0] = T0 + timedelta(minutes=5)
    outcome = handle(ctx, "OadrPoll", "oadrPoll", {"ven_id": "ven-0"})
    assert outcome.payload_name == "oadrResponse"
    store.close()
    return counting.calls


def test_an_empty_poll_costs_the_same_whatever_the_number_of_vens_and_events(store_uri,
                                                                              tmp_path):
    alone = empty_poll_calls(store_uri, tmp_path / "one", 1, 1)
    crowded = empty_poll_calls(
        store_uri.replace("vtn.sqlite3", "crowded.sqlite3"), tmp_path / "many", 30, 8)
    assert alone == crowded
    assert "list_events" not in crowded and "list_vens" not in crowded
    assert "get_event" not in crowded  # nothing is due: the delivery record alone answers
    assert "atomic" not in crowded  # and without a transaction, so it takes no write lock
