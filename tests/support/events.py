"""Events for the HTTP feature tests: a few intervals and an `add` with the usual signal."""
from __future__ import annotations

from datetime import timedelta

from tests.support.clock import T0


def intervals(start=T0 + timedelta(hours=1), payloads=(1.0, 2.0), minutes=30):
    """Back-to-back intervals of ``minutes`` from ``start``, one per payload."""
    return [{"dtstart": start + timedelta(minutes=minutes * i),
             "duration": timedelta(minutes=minutes), "signal_payload": value}
            for i, value in enumerate(payloads)]


def add(app, vtn, **kwargs):
    """``vtn.add_event`` in an app context, with a SIMPLE level signal and two intervals unless
    the test says otherwise."""
    kwargs.setdefault("signal_name", "SIMPLE")
    kwargs.setdefault("signal_type", "level")
    kwargs.setdefault("intervals", intervals())
    with app.app_context():
        return vtn.add_event(**kwargs)
