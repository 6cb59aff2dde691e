"""The ``flask openadr`` commands, through Flask's CLI test runner."""
from __future__ import annotations

import os
import pty
import sqlite3
import sys
from datetime import timedelta

import pytest
from flask import Flask

from flask_openadr import VTN, cli
from flask_openadr.security.fingerprint import fingerprint_from_der
from flask_openadr.services import liveness
from flask_openadr.testing import data_point, metadata_report, utc
from tests.support.certs import make_certificate
from tests.support.vens import make_ven

THRESHOLD = timedelta(seconds=35)


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


def test_the_group_is_registered_once_by_init_app(app):
    assert app.cli.commands["openadr"] is cli.openadr
    assert set(cli.openadr.commands) == {"init-db", "monitor", "vens", "events", "fingerprint",
                                         "event", "ven", "report", "push"}


def test_init_db_prints_the_absolute_location_of_a_relative_sqlite_file(tmp_path):
    app = Flask("initdb", instance_path=str(tmp_path / "instance"))
    app.config["OPENADR_STORE_URI"] = "sqlite:///relative.sqlite3"
    VTN(app)
    result = app.test_cli_runner().invoke(args=["openadr", "init-db"])
    assert result.exit_code == 0, result.output
    expected = tmp_path / "instance" / "relative.sqlite3"
    assert result.output.strip().endswith(str(expected))
    assert expected.exists()


def test_init_db_creates_the_tables(tmp_path):
    path = tmp_path / "fresh.sqlite3"
    app = Flask("initdb", instance_path=str(tmp_path / "instance"))
    app.config["OPENADR_STORE_URI"] = f"sqlite:///{path}"
    VTN(app)
    runner = app.test_cli_runner()
    result = runner.invoke(args=["openadr", "init-db"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"created the schema of the store at {path}"
    with sqlite3.connect(path) as connection:
        tables = {name for (name,) in connection.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"store_rows", "store_index"} <= tables  # the rules' rows and their due index
    again = runner.invoke(args=["openadr", "init-db"])  # idempotent
    assert again.exit_code == 0, again.output


def test_monitor_once_names_each_ven_and_transition(app, vtn, runner, clock):
    offline = []
    vtn.on_ven_offline(offline.append)
    ven = make_ven(app, ven_name="north-meter")
    ven.register()
    result = runner.invoke(args=["openadr", "monitor", "--once"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == ["2026-12-01T12:00:00+00:00: 0 transition(s)"]
    assert offline == []
    clock.advance(THRESHOLD)
    result = runner.invoke(args=["openadr", "monitor", "--once"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        f"2026-12-01T12:00:35+00:00: VEN {ven.ven_id} (north-meter) went offline (epoch 2)",
        "2026-12-01T12:00:35+00:00: 1 transition(s)",
    ]
    assert offline == [ven.ven_id]


def test_monitor_once_records_the_watch_only_when_given_its_cron_period(app, vtn, runner, clock):
    make_ven(app).register()
    ctx = app.extensions["openadr"].context
    assert runner.invoke(args=["openadr", "monitor", "--once"]).exit_code == 0
    with app.app_context():
        assert liveness.watching_since(ctx) is None  # a cron period it never promised
    clock.advance(THRESHOLD)
    result = runner.invoke(args=["openadr", "monitor", "--once", "--interval", "60"])
    assert result.exit_code == 0, result.output
    with app.app_context():
        record = ctx.store.get_record(*liveness.WATCH_RECORD)
    assert record["watched_at"] == clock.now and record["since"] == clock.now
    assert record["next_by"] == clock.now + timedelta(seconds=125)  # 2 x 60 s + 5 s of grace


def test_monitor_says_when_a_callback_failed(app, vtn, runner, clock):
    def broken(ven_id):
        raise RuntimeError("pager service down")

    vtn.on_ven_offline(broken)
    ven = make_ven(app, ven_name="flaky")
    ven.register()
    clock.advance(THRESHOLD)
    result = runner.invoke(args=["openadr", "monitor", "--once"])
    assert result.exit_code == 0, result.output
    assert (f"VEN {ven.ven_id} (flaky) went offline (epoch 2); its callback raised and runs "
            "again after the lease") in result.output


def test_monitor_loops_until_interrupted(app, vtn, runner, clock, monkeypatch):
    offline, sleeps = [], []
    vtn.on_ven_offline(offline.append)
    make_ven(app).register()

    def sleep(seconds):
        # Each pause moves the frozen clock by a fraction of the threshold (a whole threshold
        # between two passes would be an outage of the VTN); the pause after the VEN went
        # offline, and two more, are interrupted, as Ctrl-C would.
        sleeps.append(seconds)
        if len(sleeps) == 12:
            raise KeyboardInterrupt
        clock.advance(THRESHOLD / 7)

    monkeypatch.setattr(cli.time, "sleep", sleep)
    result = runner.invoke(args=["openadr", "monitor", "--interval", "0.5"])
    assert result.exit_code == 0, result.output
    assert sleeps == [0.5] * 12
    assert len(offline) == 1
    assert result.output.splitlines()[-1] == "stopped"


def test_monitor_refuses_a_too_short_interval(runner):
    result = runner.invoke(args=["openadr", "monitor", "--interval", "0"])
    assert result.exit_code == 2 and "0.1" in result.output


def test_vens_lists_registration_and_liveness(app, vtn, runner, clock):
    assert runner.invoke(args=["openadr", "vens"]).output.strip() == "no VENs"
    alive = make_ven(app, ven_name="alive")
    alive.register()
    gone = make_ven(app, ven_name="gone")
    gone.register()
    gone.cancel_registration()
    result = runner.invoke(args=["openadr", "vens"])
    assert result.exit_code == 0, result.output
    header, *rows = result.output.splitlines()
    assert header.split() == ["VEN", "ID", "NAME", "REGISTRATION", "STATE", "LAST", "SEEN",
                              "OFFLINE", "AT"]
    by_name = {row.split()[1]: row.split() for row in rows}
    assert by_name["alive"] == [alive.ven_id, "alive", alive.registration_id, "online",
                                "2026-12-01T12:00:00+00:00", "2026-12-01T12:00:35+00:00"]
    assert by_name["gone"][:6] == [gone.ven_id, "gone", "(not", "registered)", "offline",
                                   "2026-12-01T12:00:00+00:00"]


def test_vens_says_stale_when_the_deadline_passed_without_a_sweep(app, vtn, runner, clock):
    ven = make_ven(app, ven_name="quiet")
    ven.register()
    clock.advance(THRESHOLD - timedelta(seconds=1))
    assert runner.invoke(args=["openadr", "vens"]).output.splitlines()[1].split()[3] == "online"
    clock.advance(timedelta(seconds=1))
    # No sweeper ran: the store still says online, but the deadline has passed.
    assert runner.invoke(args=["openadr", "vens"]).output.splitlines()[1].split()[3] == "stale"
    with app.app_context():
        [listed] = vtn.vens()
        assert (listed["liveness"], listed["online"]) == ("stale", False)
        vtn.sweep()
    assert runner.invoke(args=["openadr", "vens"]).output.splitlines()[1].split()[3] == "offline"


def test_events_lists_timing_signal_level_targets_and_answers(app, vtn, runner, clock):
    assert runner.invoke(args=["openadr", "events"]).output.strip() == "no events"
    ven = make_ven(app, ven_name="north-1")
    ven.register()
    other = make_ven(app, ven_name="north-2")
    other.register()
    with app.app_context():
        for each in (ven, other):
            vtn.update_ven(each.ven_id, group_ids=["north"])
        event_id = vtn.add_event(targets={"group_ids": ["north", "east"]}, signal_name="SIMPLE",
                                 signal_type="level",
                                 intervals=[{"dtstart": utc(2026, 12, 1, 13),
                                             "duration": timedelta(hours=1),
                                             "signal_payload": 1.0}])
        vtn.modify_event(event_id, intervals=[{"dtstart": utc(2026, 12, 1, 13),
                                               "duration": timedelta(hours=1),
                                               "signal_payload": 2.0}])
    result = runner.invoke(args=["openadr", "events"])
    assert result.exit_code == 0, result.output
    header, row = result.output.splitlines()
    assert header.split() == ["EVENT", "ID", "STATUS", "START", "DURATION", "SIGNAL", "LEVEL",
                              "MOD", "TARGETS", "OPTIN", "OPTOUT", "NO-ANSWER"]
    assert row.split() == [event_id, "far", "2026-12-01T13:00:00+00:00", "60min",
                           "SIMPLE/level", "2", "1", "group_ids=north,east", "0", "0", "2"]
    ven.poll()  # the METADATA register-report comes first
    name, distribute = ven.poll()
    assert name == "oadrDistributeEvent"
    ven.created_event(distribute, "optOut")
    assert runner.invoke(args=["openadr", "events"]).output.splitlines()[1].split()[-3:] == [
        "0", "1", "1"]
    clock.advance(timedelta(hours=1, minutes=30))
    assert runner.invoke(args=["openadr", "events"]).output.splitlines()[1].split()[1] == "active"


def test_event_add_modify_cancel_from_the_shell(app, vtn, runner, clock):
    ven = make_ven(app, ven_name="north-1")
    ven.register()
    with app.app_context():
        vtn.update_ven(ven.ven_id, group_ids=["north"])
    result = runner.invoke(args=["openadr", "event", "add", "--group", "north", "--start", "+15m",
                                 "--duration", "30", "--level", "2"])
    assert result.exit_code == 0, result.output
    event_id = result.output.strip()
    with app.app_context():
        event = vtn.get_event(event_id)
    assert event["active_period"]["dtstart"] == utc(2026, 12, 1, 12, 15)
    assert event["active_period"]["duration"] == timedelta(minutes=30)
    assert event["target"]["group_ids"] == ["north"]

    result = runner.invoke(args=["openadr", "event", "modify", event_id, "--level", "3"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"event {event_id} is now modification 1"
    with app.app_context():
        event = vtn.get_event(event_id)
    assert event["event_signals"][0]["intervals"][0]["signal_payload"] == 3.0
    assert event["active_period"]["duration"] == timedelta(minutes=30)

    result = runner.invoke(args=["openadr", "event", "cancel", event_id])
    assert result.exit_code == 0, result.output
    with app.app_context():
        assert vtn.get_event(event_id)["event_descriptor"]["event_status"] == "cancelled"
    again = runner.invoke(args=["openadr", "event", "modify", event_id, "--level", "1"])
    assert again.exit_code == 1 and "cancelled" in again.output


@pytest.mark.parametrize("args, message", [
    (["--ven", "nobody", "--start", "+5m", "--duration", "10", "--level", "1"],
     "no VEN has venID 'nobody'"),
    (["--group", "west", "--start", "+5m", "--duration", "10", "--level", "1"],
     "no VEN is in group 'west'"),
    (["--ven", "VEN", "--start", "2026-12-01T10:00:00Z", "--duration", "60", "--level", "1"],
     "has already ended"),
    (["--ven", "VEN", "--start", "2026-12-01T17:00:00", "--duration", "60", "--level", "1"],
     "has no time zone"),
    (["--ven", "VEN", "--start", "+5m", "--duration", "60", "--level", "7"], "rule 9"),
    (["--ven", "VEN", "--start", "9999-12-31T23:00:00Z", "--duration", "120", "--level", "1"],
     "ends after the year 9999"),
    (["--ven", "VEN", "--start", "+5m", "--duration", "1e308", "--level", "1"],
     "10000000"),
])
def test_event_add_refuses_what_the_vens_could_not_act_on(app, vtn, runner, args, message):
    ven = make_ven(app, ven_name="north-1")
    ven.register()
    args = [ven.ven_id if a == "VEN" else a for a in args]
    result = runner.invoke(args=["openadr", "event", "add", *args])
    assert result.exit_code != 0
    assert message in result.output
    with app.app_context():
        assert vtn.events() == []


def test_ven_cancel_and_reregister_queue_the_messages(app, vtn, runner):
    ven = make_ven(app, ven_name="north-1")
    ven.register()
    ven.poll()  # the METADATA register-report
    result = runner.invoke(args=["openadr", "ven", "reregister", ven.ven_id])
    assert result.exit_code == 0, result.output
    assert ven.poll()[0] == "oadrRequestReregistration"
    result = runner.invoke(args=["openadr", "ven", "cancel", ven.ven_id])
    assert result.exit_code == 0, result.output
    assert ven.poll()[0] == "oadrCancelPartyRegistration"
    unknown = runner.invoke(args=["openadr", "ven", "cancel", "nobody"])
    assert unknown.exit_code == 2 and "no VEN has venID 'nobody'" in unknown.output


def test_report_request_asks_for_the_registered_telemetry(app, vtn, runner):
    ven = make_ven(app, ven_name="meter")
    ven.register()
    missing = runner.invoke(args=["openadr", "report", "request", ven.ven_id])
    assert missing.exit_code == 1 and "registered no TELEMETRY_USAGE report" in missing.output
    ven.register_report([metadata_report("spec-usage", "TELEMETRY_USAGE", [
        data_point("rid-power", min_period=timedelta(seconds=10)),
        data_point("rid-energy", min_period=timedelta(seconds=30),
                   max_period=timedelta(minutes=5)),
    ])])
    result = runner.invoke(args=["openadr", "report", "request", ven.ven_id])
    assert result.exit_code == 0, result.output
    request_id = result.output.strip()
    with app.app_context():
        [request] = vtn.report_requests(ven.ven_id)
    assert request["report_request_id"] == request_id
    assert request["r_ids"] == ["rid-power", "rid-energy"]
    assert request["granularity"] == timedelta(seconds=30)  # every rID allows it
    assert request["report_back_duration"] == timedelta(0)


def test_fingerprint_prints_the_openadr_fingerprint(runner, tmp_path):
    pem, der = make_certificate("ven-cli")
    path = tmp_path / "ven.pem"
    path.write_text(pem, encoding="ascii")
    result = runner.invoke(args=["openadr", "fingerprint", str(path)])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == fingerprint_from_der(der)


def test_fingerprint_of_a_file_that_is_no_certificate_fails(runner, tmp_path):
    path = tmp_path / "not.pem"
    path.write_text("hello", encoding="ascii")
    result = runner.invoke(args=["openadr", "fingerprint", str(path)])
    assert result.exit_code == 1
    assert f"{path} holds no PEM or DER certificate" in result.output
    missing = runner.invoke(args=["openadr", "fingerprint", str(tmp_path / "none.pem")])
    assert missing.exit_code == 2


def test_fingerprint_of_a_der_file(runner, tmp_path):
    pem, der = make_certificate("ven-der")
    path = tmp_path / "ven.der"
    path.write_bytes(der)
    result = runner.invoke(args=["openadr", "fingerprint", str(path)])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == fingerprint_from_der(der)


@pytest.mark.parametrize("args", [["-"], []], ids=["dash", "piped"])
def test_fingerprint_reads_a_pem_from_standard_input(runner, args):
    pem, der = make_certificate("ven-stdin")
    # A PEM as `openssl s_client -showcerts` prints it: text around the certificate.
    result = runner.invoke(args=["openadr", "fingerprint", *args],
                           input="depth=0 CN = ven\n" + pem + "---\n")
    assert result.exit_code == 0, result.output
    assert result.output.strip() == fingerprint_from_der(der)
    garbage = runner.invoke(args=["openadr", "fingerprint", *args], input="not a cert\n")
    assert garbage.exit_code == 1
    assert "standard input holds no PEM or DER certificate" in garbage.output


def test_fingerprint_without_a_file_on_a_terminal_asks_for_one(monkeypatch, capsys):
    # A real terminal on standard input: the command must not sit waiting for typed input.
    leader, follower = pty.openpty()
    terminal = os.fdopen(follower, "r")
    try:
        monkeypatch.setattr(sys, "stdin", terminal)
        with pytest.raises(SystemExit) as exited:
            cli.fingerprint.main(args=[], prog_name="flask openadr fingerprint")
    finally:
        terminal.close()
        os.close(leader)
    assert exited.value.code == 2
    assert "give a certificate file" in capsys.readouterr().err
