"""The per-VEN outbox of VTN-originated payloads, and the order a poll takes them in."""
from __future__ import annotations

from typing import Any

from .context import Context

# Poll order (protocol notes 5.5). oadrDistributeEvent is not queued: it is built at poll time
# from the current event set, between the register report and report requests.
PRIORITY = {
    "oadrCancelPartyRegistration": 1,
    "oadrRequestReregistration": 1,
    "oadrRegisterReport": 2,
    "oadrCreateReport": 4,
    "oadrCancelReport": 4,
    "oadrUpdateReport": 5,
}
#: Items at or below this priority go before a pending event distribution.
BEFORE_EVENTS = 2


def push(ctx: Context, ven_id: str, payload_name: str, payload: dict[str, Any]) -> None:
    ctx.store.push_outbox(ven_id, {"priority": PRIORITY[payload_name],
                                   "payload_name": payload_name, "payload": payload})

