"""Shared by the hostile-input tests: a read-only snapshot of a VTN's state, and the checks every
answer to hostile input must pass (no 500, fast, a short 400 reason, nothing changed if refused).
"""
from __future__ import annotations

import time

from lxml import etree

from flask_openadr.codec.fields import OADR
from flask_openadr.services import registration

from tests.support.xsd import assert_valid

#: The longest a 400 reason may be (views.MAX_REASON_CHARS plus the newline).
MAX_REASON = 201
#: The longest one request may take, whatever it carries.
MAX_SECONDS = 1.0


def snapshot(store) -> dict:
    """What a refused message must leave as it was, read with the store's list methods only
    (never by polling, which changes the outbox). Liveness is left out on purpose: every
    authenticated message counts as a sign of life, refused or not."""
    vens = store.list_vens()
    state = {"vens": vens, "events": store.list_events()}
    for event in state["events"]:
        event_id = event["event_descriptor"]["event_id"]
        state["responses", event_id] = store.list_event_responses(event_id)
    for ven in vens:
        ven_id = ven["ven_id"]
        state["outbox", ven_id] = store.list_outbox(ven_id)
        state["delivered", ven_id] = store.get_delivered(ven_id)
        for kind in registration.RECORD_KINDS:
            state[kind, ven_id] = store.list_records(kind, ven_id)
    return state


def reply_code(body: bytes) -> int | None:
    """The response code of a 200 reply's eiResponse (None when it has none, as a poll answered
    with an event has), read from the XML so that an undecodable reply cannot hide."""
    root = etree.fromstring(body)
    for element in root.iter("{http://docs.oasis-open.org/ns/energyinterop/201110}responseCode"):
        return int(element.text)
    return None


def post_checked(ven, store, service: str, body: bytes, content_type: str = "application/xml"):
    """POST ``body`` and check the answer: never 500, within :data:`MAX_SECONDS`, a short 400
    reason, an XSD-valid 200 reply, and the store unchanged when the message is refused (HTTP
    400/403 or a paired reply with a non-2xx code). Returns the Flask response."""
    before = snapshot(store)
    started = time.perf_counter()
    response = ven.post(service, body, content_type)  # ValidatingVEN: 200 replies XSD-checked
    elapsed = time.perf_counter() - started
    status = response.status_code
    data = response.get_data()
    assert status in (200, 400, 403), (status, data[:300], body[:300])
    assert elapsed < MAX_SECONDS, f"{elapsed:.2f} s for {body[:200]!r}"
    if status == 200:
        assert_valid(data)
        code = reply_code(data)
        refused = code is not None and code // 100 != 2
    else:
        assert len(data.decode("utf-8")) <= MAX_REASON, data[:300]
        refused = True
    if refused:
        assert snapshot(store) == before, f"refused ({status}) but the store changed: {body[:300]!r}"
    return response


__all__ = ["MAX_REASON", "MAX_SECONDS", "OADR", "post_checked", "reply_code", "snapshot"]
