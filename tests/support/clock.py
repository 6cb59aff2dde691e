"""The tests' fixed instant and the clock they move by hand."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

#: The instant every test clock starts at (the ``clock`` fixture's now).
T0 = datetime(2026, 12, 1, 12, 0, 0, tzinfo=timezone.utc)


class FrozenClock:
    """A clock the test moves by hand, so event status changes need no sleeping."""

    def __init__(self, now: datetime = T0):
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta
