"""End to end: the real openleadr VEN client reports telemetry to our VTN under gunicorn.

The VTN requests the client's TELEMETRY_USAGE report through OPENADR_REPORT_POLICY="telemetry",
the client sends data that reaches ``on_update_report`` with the timestamps it sampled at, and
after ``vtn.cancel_report`` (issued by another process on the same SQLite store) it stops.
"""
from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import pytest

from tests.support.e2e import operator_app, read_log, serving, stop_client, wait_for

openleadr = pytest.importorskip("openleadr")


@pytest.fixture
def served(tmp_path):
    with serving(tmp_path, env={"E2E_REPORT_POLICY": "telemetry"}) as served:
        yield served


def kinds(log_path, kind):
    return [entry for entry in read_log(log_path) if entry["kind"] == kind]


def test_openleadr_client_reports_telemetry_until_the_vtn_cancels(served, tmp_path):
    base, store_uri, log_path = served
    app, vtn = operator_app(tmp_path, store_uri)
    sampled: list[tuple[datetime, float]] = []

    def read_power():
        # openleadr also takes [(timestamp, value), ...] from a callback: the stamps are ours.
        sample = (datetime.now(timezone.utc), float(len(sampled) + 1))
        sampled.append(sample)
        return [sample]

    async def scenario():
        client = openleadr.OpenADRClient(ven_name="ven-reports",
                                         vtn_url=base + "/OpenADR2/Simple/2.0b",
                                         allow_jitter=False)
        client.add_report(callback=read_power, resource_id="meter-1", measurement="power_real",
                          sampling_rate=timedelta(seconds=1), report_specifier_id="spec-e2e",
                          r_id="rid-power", report_duration=timedelta(hours=1))
        await client.run()
        try:
            assert client.ven_id
            await wait_for(lambda: len(kinds(log_path, "update_report")) >= 3)
            with app.app_context():
                requests = vtn.report_requests(client.ven_id)
                assert [r["r_ids"] for r in requests] == [["rid-power"]]
                assert requests[0]["granularity"] == timedelta(seconds=1)
                assert requests[0]["state"] == "active"  # the client's oadrCreatedReport
                vtn.cancel_report(client.ven_id, requests[0]["report_request_id"])
            await wait_for(lambda: kinds(log_path, "canceled_report"))
            received_at_cancel = len(kinds(log_path, "received"))
            await asyncio.sleep(3.5)  # three more sampling periods
            assert len(kinds(log_path, "received")) == received_at_cancel
            with app.app_context():
                assert vtn.report_requests(client.ven_id) == []
            return client.ven_id, requests[0]["report_request_id"]
        finally:
            await stop_client(client)

    ven_id, report_request_id = asyncio.run(scenario())
    updates = kinds(log_path, "update_report")
    assert {u["ven_id"] for u in updates} == {ven_id}
    assert {u["report_request_id"] for u in updates} == {report_request_id}
    assert {u["report_name"] for u in updates} == {"TELEMETRY_USAGE"}
    assert len(kinds(log_path, "received")) == len(updates)  # nothing was refused
    sampled_at = {value: at for at, value in sampled}
    points = [point for u in updates for point in u["points"]]
    assert len(points) >= 3
    for dtstart, r_id, value in points:
        assert r_id == "rid-power"
        # Each value carries the time it was sampled at, to the microsecond.
        assert datetime.fromisoformat(dtstart) == sampled_at[value]
    assert kinds(log_path, "canceled_report")[0]["report_request_ids"] == [report_request_id]
