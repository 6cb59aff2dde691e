"""EiReport, as far as registration needs it: the METADATA exchange in both directions.

The full report service (storing VEN capabilities, report requests, data, VTN reports) is not
in this release: a VEN's METADATA is acknowledged without requesting anything.
"""
from __future__ import annotations

from typing import Any

from ..errors import InvalidID
from ..store.base import VenRecord
from .context import Context
from .replies import response


def registered_report(ctx: Context, ven: VenRecord, payload: dict[str, Any]):
    """oadrRegisteredReport: the VEN acknowledges the VTN's METADATA oadrRegisterReport.

    The VTN offers no reports yet, so a request for any of them names an unknown
    reportSpecifierID: 452 in the oadrCreatedReport that answers requests (notes 3.3).
    """
    request_id = payload["response"]["request_id"]
    requests = payload.get("report_requests", [])
    if requests:
        specifiers = sorted({r["report_specifier"]["report_specifier_id"] for r in requests})
        raise InvalidID(description=f"reportSpecifierID(s) {', '.join(specifiers)} are not "
                        "offered by this VTN")
    return "oadrResponse", {"response": response(request_id), "ven_id": ven["ven_id"]}


def register_report(ctx: Context, ven: VenRecord, payload: dict[str, Any]):
    """oadrRegisterReport from the VEN: acknowledged, requesting no reports (this release does
    not subscribe to VEN reports yet; a VTN may legitimately request none)."""
    return "oadrRegisteredReport", {"response": response(payload["request_id"]),
                                    "report_requests": [], "ven_id": ven["ven_id"]}
