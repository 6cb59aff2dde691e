"""Every payload: realistic examples and generated dicts encode to XSD-valid XML and decode back equal."""
from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flask_openadr import codec
from flask_openadr.codec.fields import describe, describe_substitution
from flask_openadr.codec.schema import ITEM_BASE, PAYLOAD_TYPES, SHARED_SHAPES, TARGET

from tests.support.strategies import PAYLOAD_STRATEGIES
from tests.support.xsd import assert_valid

UTC = timezone.utc
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
DOCS = Path(__file__).resolve().parent.parent / "docs" / "payloads.rst"


def target(**members) -> dict:
    """A decoded eiTarget: every list key present."""
    full = {key: [] for key in sorted(TARGET.keys)}
    full.update(members)
    return full


def response(code=200, request_id="req-007", description="OK") -> dict:
    result = {"response_code": code, "request_id": request_id}
    if description is not None:
        result["response_description"] = description
    return result


POWER_REAL = {"kind": "powerReal", "item_description": "RealPower", "item_units": "W",
              "si_scale_code": "k", "power_attributes": {"hertz": 60.0, "voltage": 120.0, "ac": True}}

EVENT = {
    "event_descriptor": {
        "event_id": "event-007", "modification_number": 2, "modification_date_time": T0,
        "modification_reason": "price update", "priority": 1,
        "market_context": "http://market.example/program-1", "created_date_time": T0,
        "event_status": "far", "test_event": "false", "vtn_comment": "summer peak",
    },
    "active_period": {"dtstart": T0 + timedelta(hours=1), "duration": timedelta(hours=2),
                      "start_after": timedelta(minutes=5), "notification": timedelta(days=1),
                      "ramp_up": timedelta(minutes=15), "recovery": timedelta(minutes=10)},
    "event_signals": [
        {"intervals": [{"duration": timedelta(hours=1), "uid": "0", "signal_payload": 1.0},
                       {"duration": timedelta(hours=1), "uid": "1", "signal_payload": 2.0}],
         "signal_name": "SIMPLE", "signal_type": "level", "signal_id": "sig-0", "current_value": 0.0},
        {"intervals": [{"duration": timedelta(hours=2), "uid": "0", "signal_payload": 0.25}],
         "target": target(end_device_assets=["Thermostat"]),
         "signal_name": "ELECTRICITY_PRICE", "signal_type": "price", "signal_id": "sig-1",
         "item_base": {"kind": "currencyPerKWh", "item_description": "currencyPerKWh",
                       "item_units": "USD", "si_scale_code": "none"}},
    ],
    "event_baseline": {
        "dtstart": T0, "duration": timedelta(hours=1),
        "intervals": [{"duration": timedelta(hours=1), "uid": "0", "signal_payload": 42.5}],
        "baseline_id": "base-1", "resource_ids": ["res-1"], "baseline_name": "typical weekday",
        "item_base": POWER_REAL,
    },
    "target": target(ven_ids=["ven-007"], group_ids=["north"], resource_ids=["res-1"],
                     party_ids=["party-1"], group_names=["Group A"],
                     end_device_assets=["Water_Heater"], meter_assets=["meter-9"],
                     pnodes=["PNODE-1"], aggregated_pnodes=["AGG-1"],
                     service_delivery_points=["SDP-1"],
                     transport_interfaces=[{"point_of_receipt": "R1", "point_of_delivery": "D1"}]),
    "response_required": "always",
}

METADATA_REPORT = {
    "duration": timedelta(hours=2),
    "intervals": [],
    "report_descriptions": [
        {"r_id": "rid-usage", "report_subject": target(end_device_assets=["Smart_Inverter"]),
         "report_data_source": target(resource_ids=["res-1"]), "report_type": "usage",
         "item_base": POWER_REAL, "reading_type": "Direct Read",
         "market_context": "http://market.example/program-1",
         "sampling_rate": {"min_period": timedelta(seconds=10), "max_period": timedelta(minutes=1),
                           "on_change": False}},
        {"r_id": "rid-status", "report_data_source": target(resource_ids=["res-1"]),
         "report_type": "x-resourceStatus", "reading_type": "x-notApplicable",
         "sampling_rate": {"min_period": timedelta(seconds=10), "max_period": timedelta(minutes=1),
                           "on_change": True}},
    ],
    "report_request_id": "0",
    "report_specifier_id": "spec-telemetry",
    "report_name": "METADATA_TELEMETRY_USAGE",
    "created_date_time": T0,
}

DATA_REPORT = {
    "dtstart": T0,
    "duration": timedelta(minutes=2),
    "intervals": [
        {"dtstart": T0, "duration": timedelta(minutes=1), "uid": "0",
         "report_payloads": [{"r_id": "rid-usage", "confidence": 100, "accuracy": 0.5, "value": 1234.5,
                              "data_quality": "Quality Good - Non Specific"}]},
        {"dtstart": T0 + timedelta(minutes=1), "duration": timedelta(minutes=1), "uid": "1",
         "report_payloads": [{"r_id": "rid-status", "resource_status": {
             "online": True, "manual_override": False,
             "load_control_state": {"capacity": {"current": 0.5},
                                    "set_point": {"min": 18.0, "max": 24.0, "current": 21.0,
                                                  "normal": 20.0}}}}]},
    ],
    "report_id": "report-1",
    "report_descriptions": [],
    "report_request_id": "rr-007",
    "report_specifier_id": "spec-telemetry",
    "report_name": "TELEMETRY_USAGE",
    "created_date_time": T0 + timedelta(minutes=2, milliseconds=250),
}

REPORT_REQUEST = {
    "report_request_id": "rr-007",
    "report_specifier": {
        "report_specifier_id": "spec-telemetry",
        "granularity": timedelta(minutes=1),
        "report_back_duration": timedelta(minutes=5),
        "report_interval": {"dtstart": T0, "duration": timedelta(hours=1)},
        "specifier_payloads": [{"r_id": "rid-usage", "reading_type": "x-notApplicable"},
                               {"r_id": "rid-status", "reading_type": "x-notApplicable"}],
    },
}

EXAMPLES = {
    "oadrQueryRegistration": {"request_id": "req-007"},
    "oadrCreatePartyRegistration": {
        "request_id": "req-007", "registration_id": "reg-1", "ven_id": "007", "profile_name": "2.0b",
        "transport_name": "simpleHttp", "transport_address": "https://ven.example/", "report_only": False,
        "xml_signature": True, "ven_name": "Vén 007", "http_pull_model": True},
    "oadrCreatedPartyRegistration": {
        "response": response(), "registration_id": "reg-1", "ven_id": "007", "vtn_id": "vtn-1",
        "profiles": [{"profile_name": "2.0b", "transports": ["simpleHttp"]}],
        "requested_oadr_poll_freq": timedelta(seconds=10),
        "service_specific_info": {"services": [
            {"service_name": "EiEvent", "infos": [{"key": "maxEvents", "value": "10"}]}]},
        "extensions": [{"extension_name": "x-site", "infos": [{"key": "k", "value": "v"}]}]},
    "oadrCancelPartyRegistration": {"request_id": "req-007", "registration_id": "reg-1", "ven_id": "007"},
    "oadrCanceledPartyRegistration": {"response": response(452, description="Invalid ID"),
                                      "registration_id": "reg-1", "ven_id": "007"},
    "oadrRequestReregistration": {"ven_id": "007"},
    "oadrResponse": {"response": response(request_id=""), "ven_id": "007"},
    "oadrPoll": {"ven_id": "007"},
    "oadrRequestEvent": {"request_id": "req-007", "ven_id": "007", "reply_limit": 5},
    "oadrDistributeEvent": {"response": response(request_id="req-007"), "request_id": "dist-1",
                            "vtn_id": "vtn-1", "events": [EVENT]},
    "oadrCreatedEvent": {
        "response": response(request_id=""),
        "event_responses": [{"response_code": 200, "response_description": "OK", "request_id": "dist-1",
                             "qualified_event_id": {"event_id": "event-007", "modification_number": 2},
                             "opt_type": "optIn"}],
        "ven_id": "007"},
    "oadrRegisterReport": {"request_id": "req-007", "reports": [METADATA_REPORT], "ven_id": "007",
                           "report_request_id": "rr-meta"},
    "oadrRegisteredReport": {"response": response(), "report_requests": [REPORT_REQUEST], "ven_id": "007"},
    "oadrCreateReport": {"request_id": "req-007", "report_requests": [REPORT_REQUEST], "ven_id": "007"},
    "oadrCreatedReport": {"response": response(), "pending_reports": ["rr-007", "rr-008"], "ven_id": "007"},
    "oadrUpdateReport": {"request_id": "req-007", "reports": [DATA_REPORT], "ven_id": "007"},
    "oadrUpdatedReport": {"response": response(), "ven_id": "007", "cancel_report": {
        "request_id": "cancel-1", "report_request_ids": ["rr-007"], "report_to_follow": False,
        "ven_id": "007"}},
    "oadrCancelReport": {"request_id": "req-007", "report_request_ids": ["rr-007", "rr-008"],
                         "report_to_follow": True, "ven_id": "007"},
    "oadrCanceledReport": {"response": response(), "pending_reports": [], "ven_id": "007"},
    "oadrCreateOpt": {
        "opt_id": "opt-1", "opt_type": "optOut", "opt_reason": "x-schedule",
        "market_context": "http://market.example/program-1", "ven_id": "007",
        "vavailability": {"available": [{"dtstart": T0, "duration": timedelta(hours=4)}]},
        "created_date_time": T0, "request_id": "req-007",
        "target": target(resource_ids=["res-1"]),
        "device_class": target(end_device_assets=["Thermostat"])},
    "oadrCreatedOpt": {"response": response(), "opt_id": "opt-1"},
    "oadrCancelOpt": {"request_id": "req-007", "opt_id": "opt-1", "ven_id": "007"},
    "oadrCanceledOpt": {"response": response(), "opt_id": "opt-1"},
}

EXPECTED_PAYLOADS = {
    "oadrQueryRegistration", "oadrCreatePartyRegistration", "oadrCreatedPartyRegistration",
    "oadrCancelPartyRegistration", "oadrCanceledPartyRegistration", "oadrRequestReregistration",
    "oadrResponse", "oadrPoll", "oadrRequestEvent", "oadrDistributeEvent", "oadrCreatedEvent",
    "oadrRegisterReport", "oadrRegisteredReport", "oadrCreateReport", "oadrCreatedReport",
    "oadrUpdateReport", "oadrUpdatedReport", "oadrCancelReport", "oadrCanceledReport",
    "oadrCreateOpt", "oadrCreatedOpt", "oadrCancelOpt", "oadrCanceledOpt",
}


def test_every_payload_is_known_and_has_an_example():
    assert codec.PAYLOADS == EXPECTED_PAYLOADS
    assert set(EXAMPLES) == EXPECTED_PAYLOADS


@pytest.mark.parametrize("name", sorted(EXPECTED_PAYLOADS))
def test_example_encodes_valid_and_decodes_back_equal(name):
    document = codec.encode(name, EXAMPLES[name])
    assert_valid(document)
    assert document.startswith(b"<?xml version='1.0' encoding='UTF-8'?>")
    assert f'<oadr:{name} ei:schemaVersion="2.0b">'.encode() in document
    assert b'<oadr:oadrSignedObject oadr:Id="oadrSignedObject">' in document
    assert codec.decode(document) == (name, EXAMPLES[name])


@pytest.mark.parametrize("name", sorted(EXPECTED_PAYLOADS))
@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_generated_payloads_round_trip_and_are_xsd_valid(name, data):
    payload = data.draw(PAYLOAD_STRATEGIES[name])
    document = codec.encode(name, payload)
    assert_valid(document)
    assert codec.decode(document) == (name, payload)


def test_all_conventional_prefixes_are_declared_on_the_root():
    document = codec.encode("oadrPoll", {"ven_id": "007"})
    root_tag = document.split(b">", 2)[1]
    for prefix in ("oadr", "ei", "pyld", "emix", "xcal", "strm", "power", "scale", "ds", "dsp"):
        assert f"xmlns:{prefix}=".encode() in root_tag, prefix
    # declared once, on the root only
    assert document.count(b"xmlns:ei=") == 1


def test_missing_list_keys_encode_as_empty_lists():
    event = {key: value for key, value in EVENT.items()}
    event["target"] = {"ven_ids": ["ven-007"]}  # the other target lists are missing
    payload = {"request_id": "dist-1", "vtn_id": "vtn-1", "events": [event]}
    document = codec.encode("oadrDistributeEvent", payload)
    assert_valid(document)
    _, decoded = codec.decode(document)
    assert decoded["events"][0]["target"] == target(ven_ids=["ven-007"])
    assert "response" not in decoded
    assert codec.decode(codec.encode("oadrDistributeEvent", {"request_id": "r", "vtn_id": "v"}))[1]["events"] == []


def test_none_values_are_omitted():
    payload = {"response": response(description=None), "ven_id": None}
    document = codec.encode("oadrResponse", payload)
    assert b"venID" not in document and b"responseDescription" not in document
    assert codec.decode(document)[1] == {"response": response(description=None)}


def test_active_period_components_are_always_nil():
    document = codec.encode("oadrDistributeEvent", EXAMPLES["oadrDistributeEvent"])
    assert b'<xcal:components xsi:nil="true"/>' in document


def test_element_order_follows_the_xsd_sequence():
    document = codec.encode("oadrCreatePartyRegistration", EXAMPLES["oadrCreatePartyRegistration"])
    order = [b"requestID", b"registrationID", b"venID", b"oadrProfileName", b"oadrTransportName",
             b"oadrTransportAddress", b"oadrReportOnly", b"oadrXmlSignature", b"oadrVenName",
             b"oadrHttpPullModel"]
    positions = [document.index(b":" + name + b">") for name in order]
    assert positions == sorted(positions)


# ---------------------------------------------------------------- the docs follow the model

SHARED_ORDER = ("RESPONSE", "TARGET", "EVENT", "REPORT", "REPORT_REQUEST", "LOAD_CONTROL_VALUE")


def _block(text: str) -> str:
    return "\n".join(("   " + line) if line else "" for line in text.splitlines())


def shape_blocks() -> dict:
    """Section title -> the shape text the model gives for it (what the docs must contain)."""
    shared = dict((label, ctype) for ctype, label in SHARED_SHAPES)
    blocks = {label: describe(shared[label], named=SHARED_SHAPES) for label in SHARED_ORDER}
    blocks["ITEMBASE"] = describe_substitution(ITEM_BASE, named=SHARED_SHAPES)
    for name in sorted(PAYLOAD_TYPES):
        blocks[name] = describe(PAYLOAD_TYPES[name], named=SHARED_SHAPES)
    return blocks


def test_docs_describe_every_payload_with_the_model_shape():
    text = DOCS.read_text(encoding="utf-8")
    for title, shape in shape_blocks().items():
        assert re.search(rf"^{title}\n[=-]+$", text, re.M), f"no section for {title}"
        assert _block(shape) in text, f"the documented shape of {title} is out of date"
    for name in EXPECTED_PAYLOADS:
        assert f"\n{name}\n" in text


def render_docs(intro: str) -> str:
    """Regenerate the shape sections of docs/payloads.rst (run this module as a script)."""
    import pprint
    parts = [intro.rstrip() + "\n"]
    blocks = shape_blocks()
    parts.append("Shared shapes\n" + "=" * 13 + "\n")
    for title in SHARED_ORDER + ("ITEMBASE",):
        parts.append(f"{title}\n{'-' * len(title)}\n\n.. code-block:: text\n\n{_block(blocks[title])}\n")
    for name in sorted(PAYLOAD_TYPES):
        example = pprint.pformat(EXAMPLES[name], width=96, sort_dicts=False)
        parts.append(f"{name}\n{'=' * len(name)}\n\n.. code-block:: text\n\n{_block(blocks[name])}\n\n"
                     f"Example:\n\n.. code-block:: python\n\n{_block(example)}\n")
    return "\n".join(parts)


if __name__ == "__main__":  # python -m tests.test_codec_roundtrip  -> rewrites the generated part
    current = DOCS.read_text(encoding="utf-8")
    marker = "Shared shapes\n=============\n"
    DOCS.write_text(render_docs(current.split(marker)[0]), encoding="utf-8")
