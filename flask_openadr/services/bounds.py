"""The date range the services compute in: every sum of a VEN's date-time and duration goes here.

A date-time and a duration that are each valid can still add up to a moment Python cannot hold
(past 9999-12-31T23:59:59.999999Z, or before year 1): an OverflowError, which would be an HTTP 500
while handling the message, or a record that breaks the operator API later. Services compute
such sums only through this module, so the limit is one rule, documented in ``docs/limits.rst``.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from ..errors import InvalidData

__all__ = ["EARLIEST", "LATEST", "end_of", "clamped_end"]

#: The first and last moments the VTN can compute with (Python's datetime range, in UTC).
EARLIEST = datetime.min.replace(tzinfo=timezone.utc)
LATEST = datetime.max.replace(tzinfo=timezone.utc)


def end_of(start: datetime, duration: timedelta, where: str) -> datetime:
    """``start + duration``; a sum outside the range refuses the message with 454.

    :param where: names the field for the reply's description, e.g. ``"reports[0].intervals[3]"``.
    :raises ~flask_openadr.errors.InvalidData: when the sum is past :data:`LATEST` or before
        :data:`EARLIEST`.
    """
    try:
        return start + duration
    except OverflowError:
        raise InvalidData(description=f"{where}: dtstart {start.isoformat()} plus duration "
                          f"{duration} ends outside the dates this VTN can hold "
                          "(0001-01-01 to 9999-12-31); send a shorter duration") from None


def clamped_end(start: datetime, duration: timedelta) -> datetime:
    """``start + duration``, held to the range: for comparisons with records that were stored
    before the range was checked (a window ending past 9999 still ends after every moment)."""
    try:
        return start + duration
    except OverflowError:
        return LATEST if duration > timedelta(0) else EARLIEST
