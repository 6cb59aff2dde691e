"""The protocol predicates every layer asks (flask_openadr/protocol.py)."""
from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest

from flask_openadr import protocol

T0 = datetime(2026, 12, 1, 17, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize("code, success", [(200, True), (201, True), (299, True), (199, False),
                                           (300, False), (452, False), (469, False)])
def test_every_2xx_response_code_is_a_success(code, success):
    assert protocol.is_success(code) is success


@pytest.mark.parametrize("ven, registered", [
    (None, False), ({"ven_id": "v"}, False), ({"ven_id": "v", "registration_id": None}, False),
    ({"ven_id": "v", "registration_id": ""}, False),
    ({"ven_id": "v", "registration_id": "r-1"}, True),
])
def test_a_ven_is_registered_while_it_holds_a_registration_id(ven, registered):
    assert protocol.is_registered(ven) is registered


def test_a_duration_of_zero_is_open_ended():
    assert protocol.is_open_ended(timedelta(0))
    assert not protocol.is_open_ended(timedelta(seconds=1))
    assert protocol.window_end(T0, timedelta(0)) is None
    assert protocol.window_end(T0, timedelta(hours=2)) == T0 + timedelta(hours=2)


@pytest.mark.parametrize("value, aware", [
    (T0, True), (T0.astimezone(timezone(timedelta(hours=1))), True),
    (T0.replace(tzinfo=None), False), (date(2026, 12, 1), False),
    ("2026-12-01T17:00:00Z", False), (None, False),
])
def test_only_datetimes_with_an_offset_are_aware(value, aware):
    assert protocol.is_aware(value) is aware


@pytest.mark.parametrize("value, token", [("x-myGroup", True), ("x-a b", True), ("x-", False),
                                          ("x- a", False), ("X-a", False), ("group", False)])
def test_extension_tokens_start_with_x_dash(value, token):
    assert protocol.is_extension_token(value) is token


def test_reply_names_pair_both_directions_and_refuse_unpaired_payloads():
    assert protocol.reply_name("oadrCreateOpt") == "oadrCreatedOpt"
    assert protocol.reply_name("oadrRegisterReport") == "oadrRegisteredReport"
    assert protocol.reply_name("oadrRequestReregistration") == "oadrResponse"
    with pytest.raises(KeyError):
        protocol.reply_name("oadrDistributeEvent")
