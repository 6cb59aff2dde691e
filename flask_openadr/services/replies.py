"""Reply building shared by the services: eiResponse blocks, paired reply types, error replies."""
from __future__ import annotations

from typing import Any, TypedDict

from ..errors import RESPONSE_DESCRIPTIONS, Rejection
from ..protocol import PAIRED_REPLY, reply_name
from .context import Context

__all__ = ["PAIRED_REPLY", "PROFILES", "error_reply", "request_id_of", "response", "ven_id_of"]

# What the VTN offers; listed in every oadrCreatedPartyRegistration, error replies included,
# because the schema makes oadrProfiles mandatory there.
PROFILES = [{"profile_name": "2.0b", "transports": ["simpleHttp"]}]



class EiResponse(TypedDict):
    """The eiResponse block of a reply."""

    response_code: int
    response_description: str
    request_id: str


def response(request_id: str = "", code: int = 200, description: str | None = None
             ) -> EiResponse:
    """An eiResponse block; ``request_id`` echoes the message being answered."""
    return {
        "response_code": code,
        "response_description": description or RESPONSE_DESCRIPTIONS.get(code, "Error"),
        "request_id": request_id,
    }


def request_id_of(payload: dict[str, Any]) -> str:
    """The requestID a reply must echo: the payload's own, or the one inside its eiResponse
    (replies such as oadrCreatedReport carry it there)."""
    # The codec decodes requestID as a string wherever it occurs.
    request_id: str
    if "request_id" in payload:
        request_id = payload["request_id"]
    else:
        request_id = payload.get("response", {}).get("request_id", "")
    return request_id


def ven_id_of(payload: dict[str, Any]) -> str | None:
    ven_id: str | None = payload.get("ven_id")
    return ven_id


def error_reply(
    ctx: Context, payload_name: str, payload: dict[str, Any], rejection: Rejection
) -> tuple[str, dict[str, Any]]:
    """The paired reply to ``payload_name`` carrying the rejection's response code."""
    name = reply_name(payload_name)
    eiresponse = response(request_id_of(payload), rejection.response_code, rejection.description)
    reply: dict[str, Any] = {"response": eiresponse}
    ven_id = ven_id_of(payload)
    if name == "oadrCreatedPartyRegistration":
        reply.update(ven_id=ven_id, vtn_id=ctx.settings.vtn_id, profiles=PROFILES)
    elif name == "oadrCanceledPartyRegistration":
        reply.update(registration_id=payload.get("registration_id"), ven_id=ven_id)
    elif name == "oadrDistributeEvent":
        # An error reply lists no events; VENs read the response code before the (empty) list.
        reply.update(request_id=ctx.new_id(), vtn_id=ctx.settings.vtn_id, events=[])
    elif name in ("oadrCreatedReport", "oadrCanceledReport"):
        reply.update(pending_reports=[], ven_id=ven_id)
    elif name == "oadrCreatedOpt":
        reply.update(opt_id=payload.get("opt_id", ""))
    elif name == "oadrCanceledOpt":
        reply.update(opt_id=payload.get("opt_id"))
    else:
        reply.update(ven_id=ven_id)
    return name, {k: v for k, v in reply.items() if v is not None}
