"""The portal's own records, beside the VTN's store: report values and liveness history.

The VTN passes report data to ``on_update_report`` and liveness transitions to ``on_ven_online``
/ ``on_ven_offline`` but keeps neither: what to keep is the portal's business (a utility has its
own meter-data system). This example keeps them in a small SQLite file in the instance folder,
which every worker on one host shares; a portal on many hosts would put them in its own shared
database instead.
"""
from __future__ import annotations

import contextlib
import os
import sqlite3
from datetime import datetime, timedelta, timezone
from typing import Any, Iterator

SCHEMA = """
CREATE TABLE IF NOT EXISTS report_values (
    ven_id TEXT NOT NULL,
    report_specifier_id TEXT NOT NULL,
    r_id TEXT NOT NULL,
    dtstart TEXT NOT NULL,
    value REAL NOT NULL,
    PRIMARY KEY (ven_id, report_specifier_id, r_id, dtstart)
);
CREATE TABLE IF NOT EXISTS liveness_history (
    ven_id TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    kind TEXT NOT NULL,
    at TEXT NOT NULL,
    PRIMARY KEY (ven_id, epoch)
);
"""


def _text(moment: datetime) -> str:
    # Fixed-width UTC text sorts as time does.
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _moment(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)


class History:
    """Report values and liveness transitions in one SQLite file."""

    def __init__(self, path: str, keep: timedelta):
        self.path = path
        self.keep = keep
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")  # readers never wait for the VENs' writes
            db.executescript(SCHEMA)

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=10)
        try:
            with db:  # one transaction, committed unless the block raises
                yield db
        finally:
            db.close()

    def add_report(self, ven_id: str, report: dict[str, Any]) -> int:
        """Keep the numeric values of one report as ``on_update_report`` receives it; values
        older than :attr:`keep` are dropped. Returns how many values were kept."""
        rows = []
        for interval in report["intervals"]:
            for point in interval["values"]:
                value = point.get("value")
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    continue  # a status or a resource payload: nothing to plot
                rows.append((ven_id, report["report_specifier_id"], point["r_id"],
                             _text(interval["dtstart"]), float(value)))
        cutoff = _text(datetime.now(timezone.utc) - self.keep)
        with self._connect() as db:
            # A VEN that sends a sample again (at-least-once) replaces it.
            db.executemany("INSERT OR REPLACE INTO report_values VALUES (?, ?, ?, ?, ?)", rows)
            db.execute("DELETE FROM report_values WHERE ven_id = ? AND dtstart < ?",
                       (ven_id, cutoff))
        return len(rows)

    def report_series(self, ven_id: str, since: datetime) -> dict[tuple[str, str], list]:
        """``(report_specifier_id, r_id) -> [(dtstart, value), ...]`` in time order."""
        series: dict[tuple[str, str], list] = {}
        with self._connect() as db:
            for spec, r_id, at, value in db.execute(
                    "SELECT report_specifier_id, r_id, dtstart, value FROM report_values "
                    "WHERE ven_id = ? AND dtstart >= ? ORDER BY dtstart",
                    (ven_id, _text(since))):
                series.setdefault((spec, r_id), []).append((_moment(at), value))
        return series

    def add_transition(self, ven_id: str, epoch: int, kind: str, at: datetime) -> None:
        """Record a liveness transition; a callback run again for the same ``(ven_id, epoch)``
        (the VTN runs them at least once) records nothing new."""
        with self._connect() as db:
            db.execute("INSERT OR IGNORE INTO liveness_history VALUES (?, ?, ?, ?)",
                       (ven_id, epoch, kind, _text(at)))

    def transitions(self, ven_id: str, limit: int = 50) -> list[dict[str, Any]]:
        """The VEN's latest liveness transitions, newest first."""
        with self._connect() as db:
            rows = db.execute("SELECT epoch, kind, at FROM liveness_history WHERE ven_id = ? "
                              "ORDER BY epoch DESC LIMIT ?", (ven_id, limit)).fetchall()
        return [{"epoch": epoch, "kind": kind, "at": _moment(at)} for epoch, kind, at in rows]
