"""OpenADR 2.0b rules that several layers ask, each written once: names, predicates, defaults.

Internal: free of Flask, XML and the store, so the services, the codec, the views and the test
client can all import it. Each rule here is the one place the project spells it.
"""
from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Mapping, TypeVar

if TYPE_CHECKING:  # typing.TypeGuard is Python 3.10+; annotations are not evaluated at run time
    from typing_extensions import TypeGuard

R = TypeVar("R", bound=Mapping[str, Any])

__all__ = [
    "DEFAULT_URL_PREFIX",
    "EI_EVENT",
    "EI_OPT",
    "EI_REGISTER_PARTY",
    "EI_REPORT",
    "EXTENSION_TOKEN",
    "OADR_POLL",
    "OPEN_ENDED",
    "PAIRED_REPLY",
    "SERVICE_NAMES",
    "is_aware",
    "is_extension_token",
    "is_open_ended",
    "is_registered",
    "is_success",
    "reply_name",
    "window_end",
]

#: The simpleHttp services, each one endpoint under the URL prefix (protocol notes 1.1), in the
#: order of the XSD's oadrServiceName enumeration (the codec's, and docs/payloads.rst's).
SERVICE_NAMES = ("EiEvent", "EiOpt", "EiReport", "EiRegisterParty", "OadrPoll")
EI_EVENT, EI_OPT, EI_REPORT, EI_REGISTER_PARTY, OADR_POLL = SERVICE_NAMES

#: Where a 2.0b VTN serves its services, and where a push VEN receives them, by default.
DEFAULT_URL_PREFIX = "/OpenADR2/Simple/2.0b"

# The reply type that answers each payload a VEN may send (protocol notes 1.1 and 4.2): errors
# travel in that type too, so a VEN always gets the message it waits for.
PAIRED_REPLY = {
    "oadrQueryRegistration": "oadrCreatedPartyRegistration",
    "oadrCreatePartyRegistration": "oadrCreatedPartyRegistration",
    "oadrCancelPartyRegistration": "oadrCanceledPartyRegistration",
    "oadrCanceledPartyRegistration": "oadrResponse",
    "oadrResponse": "oadrResponse",
    "oadrRequestEvent": "oadrDistributeEvent",
    "oadrCreatedEvent": "oadrResponse",
    "oadrRegisterReport": "oadrRegisteredReport",
    "oadrRegisteredReport": "oadrResponse",
    "oadrCreateReport": "oadrCreatedReport",
    "oadrCreatedReport": "oadrResponse",
    "oadrUpdateReport": "oadrUpdatedReport",
    "oadrUpdatedReport": "oadrResponse",
    "oadrCancelReport": "oadrCanceledReport",
    "oadrCanceledReport": "oadrResponse",
    "oadrCreateOpt": "oadrCreatedOpt",
    "oadrCancelOpt": "oadrCanceledOpt",
    "oadrPoll": "oadrResponse",
}
# Payloads only the VTN sends, and the VEN's answer. Every other VTN-originated payload is one a
# VEN may send too (oadrRegisterReport, oadrCreateReport, ...), answered the same both ways.
_VTN_ONLY_REPLY = {"oadrRequestReregistration": "oadrResponse"}


def reply_name(payload_name: str) -> str:
    """The payload that answers ``payload_name``, whichever side sent it.

    :raises KeyError: for a payload nothing answers (oadrDistributeEvent, a reply itself).
    """
    try:
        return PAIRED_REPLY[payload_name]
    except KeyError:
        return _VTN_ONLY_REPLY[payload_name]


def is_success(response_code: int) -> bool:
    """An eiResponse code that reports success: any 2xx (the VEN's 200, the rarer 201 ...)."""
    return response_code // 100 == 2


def is_registered(ven: R | None) -> TypeGuard[R]:
    """A VEN record with an active registration (a VEN enrolled with ``add_ven`` but not yet
    registered, or whose registration was cancelled, has none)."""
    return ven is not None and bool(ven.get("registration_id"))


#: The duration of an active period, report interval or availability window that has no end.
OPEN_ENDED = timedelta(0)


def is_open_ended(duration: timedelta) -> bool:
    """A duration of 0 means "until further notice" (rule 47 for events, the same for report
    intervals and opt windows), not "no time at all"."""
    return duration == OPEN_ENDED


def window_end(dtstart: datetime, duration: timedelta) -> datetime | None:
    """Where a window ``(dtstart, duration)`` ends: None when it is open-ended, else
    ``dtstart + duration`` (an OverflowError past year 9999: services that compute with a
    peer's values hold the sum to the range with :mod:`flask_openadr.services.bounds`)."""
    return None if is_open_ended(duration) else dtstart + duration


def is_aware(value: Any) -> TypeGuard[datetime]:
    """``value`` is a datetime with a UTC offset: every date-time of the protocol is one, and a
    naive one compared with them raises TypeError. (A TypeGuard, not a TypeIs: a value it
    refuses may still be a datetime, a naive one.)"""
    return isinstance(value, datetime) and value.utcoffset() is not None


#: The XSD's EiExtensionTokenType pattern: a name of one's own, outside the enumerations.
EXTENSION_TOKEN = re.compile(r"x-\S.*")


def is_extension_token(value: str) -> bool:
    """``value`` is an ``x-`` extension token, allowed where an enumeration is extensible."""
    return EXTENSION_TOKEN.fullmatch(value) is not None
