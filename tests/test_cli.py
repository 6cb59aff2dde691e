"""The ``flask openadr`` commands, through Flask's CLI test runner."""
from __future__ import annotations

import os
import pty
import sqlite3
import sys
from datetime import timedelta

import pytest
from flask import Flask

from certs import make_certificate
from conftest import make_ven
from flask_openadr import VTN, cli
from flask_openadr.security.fingerprint import fingerprint_from_der
from flask_openadr.testing import utc

THRESHOLD = timedelta(seconds=35)


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


def test_the_group_is_registered_once_by_init_app(app):
    assert app.cli.commands["openadr"] is cli.openadr
    assert set(cli.openadr.commands) == {"init-db", "monitor", "vens", "events", "fingerprint"}


def test_init_db_creates_the_tables(tmp_path):
    path = tmp_path / "fresh.sqlite3"
    app = Flask("initdb", instance_path=str(tmp_path / "instance"))
    app.config["OPENADR_STORE_URI"] = f"sqlite:///{path}"
    VTN(app)
    runner = app.test_cli_runner()
    result = runner.invoke(args=["openadr", "init-db"])
    assert result.exit_code == 0, result.output
    assert "created the schema" in result.output
    with sqlite3.connect(path) as connection:
        tables = {name for (name,) in connection.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"liveness", "vens", "events"} <= tables
    again = runner.invoke(args=["openadr", "init-db"])  # idempotent
    assert again.exit_code == 0, again.output


def test_monitor_once_runs_one_sweep(app, vtn, runner, clock):
    offline = []
    vtn.on_ven_offline(offline.append)
    ven = make_ven(app)
    ven.register()
    result = runner.invoke(args=["openadr", "monitor", "--once"])
    assert result.exit_code == 0, result.output
    assert "0 transition(s)" in result.output and offline == []
    clock.advance(THRESHOLD)
    result = runner.invoke(args=["openadr", "monitor", "--once"])
    assert result.exit_code == 0, result.output
    assert "1 transition(s)" in result.output
    assert offline == [ven.ven_id]


def test_monitor_loops_until_interrupted(app, vtn, runner, clock, monkeypatch):
    offline, sleeps = [], []
    vtn.on_ven_offline(offline.append)
    make_ven(app).register()

    def sleep(seconds):
        # Each pause moves the frozen clock; the third is interrupted, as Ctrl-C would.
        sleeps.append(seconds)
        if len(sleeps) == 3:
            raise KeyboardInterrupt
        clock.advance(THRESHOLD)

    monkeypatch.setattr(cli.time, "sleep", sleep)
    result = runner.invoke(args=["openadr", "monitor", "--interval", "0.5"])
    assert result.exit_code == 0, result.output
    assert sleeps == [0.5, 0.5, 0.5]
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
    assert header.split() == ["VEN", "ID", "NAME", "REGISTRATION", "STATE", "LAST", "SEEN"]
    by_name = {row.split()[1]: row.split() for row in rows}
    assert by_name["alive"] == [alive.ven_id, "alive", alive.registration_id, "online",
                                "2026-12-01T12:00:00+00:00"]
    assert by_name["gone"] == [gone.ven_id, "gone", "(not", "registered)", "offline",
                               "2026-12-01T12:00:00+00:00"]
    clock.advance(THRESHOLD)
    with app.app_context():
        vtn.sweep()
    result = runner.invoke(args=["openadr", "vens"])
    assert "offline" in result.output


def test_events_lists_status_modification_and_targets(app, vtn, runner, clock):
    assert runner.invoke(args=["openadr", "events"]).output.strip() == "no events"
    with app.app_context():
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
    assert header.split() == ["EVENT", "ID", "STATUS", "MOD", "TARGETS"]
    assert row.split() == [event_id, "far", "1", "group_ids=north,east"]
    clock.advance(timedelta(hours=1, minutes=30))
    assert runner.invoke(args=["openadr", "events"]).output.splitlines()[1].split()[1] == "active"


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
