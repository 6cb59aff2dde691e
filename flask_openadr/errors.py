"""Error types: OpenADR rejections that travel as response codes, and library errors."""
from __future__ import annotations

from typing import Any


class OpenADRError(Exception):
    """Base class of every error this library raises."""


class ConfigurationError(OpenADRError):
    """The configuration is wrong; raised at start-up, naming the key and the problem."""


class StoreError(OpenADRError):
    """The store failed (driver error, unreachable server). Requests answer HTTP 503."""


class MalformedMessage(OpenADRError):
    """The body is not a well-formed, acceptable OpenADR document. Requests answer HTTP 400."""


class UnsupportedValue(OpenADRError):
    """A message that is valid 2.0b but that this VTN cannot honour (a duration in months, more
    repeated elements than it accepts). The codec raises it with the whole decoded payload so that
    the view can address the paired reply (code 454); nothing is processed."""

    def __init__(self, payload_name: str, payload: dict[str, Any], description: str):
        self.payload_name = payload_name
        self.payload = payload
        self.description = description
        super().__init__(f"{payload_name}: {description}")


class Unidentified(OpenADRError):
    """The caller cannot be tied to any registration (no venID, and no client certificate bound
    to a registered VEN). Requests answer HTTP 403 with no OpenADR payload: the certification
    harness fails a VTN that answers an unregistered caller in OpenADR terms."""


class EventError(OpenADRError, ValueError):
    """An event breaks a conformance rule; the message names the rule and the value."""


class UnknownEvent(OpenADRError, KeyError):
    """The Python API was given an eventID the store does not hold."""

    def __init__(self, event_id: str):
        self.event_id = event_id
        super().__init__(f"event {event_id!r} is not known to this VTN")

    def __str__(self) -> str:
        # KeyError would show the message in quotes.
        return str(self.args[0])


class Rejection(OpenADRError):
    """A message was understood but refused: the paired reply carries ``response_code``.

    Handlers raise this (or a subclass) to reject a message the OpenADR way::

        raise Rejection(463, "VEN is not on the allow-list")
    """

    response_code: int = 469

    def __init__(self, response_code: int | None = None, description: str | None = None):
        if response_code is not None:
            self.response_code = int(response_code)
        self.description = description or self.default_description()
        super().__init__(f"{self.response_code} {self.description}")

    def default_description(self) -> str:
        return RESPONSE_DESCRIPTIONS.get(self.response_code, "Error")


class OutOfSequence(Rejection):
    response_code = 450


class NotAllowed(Rejection):
    response_code = 451


class InvalidID(Rejection):
    response_code = 452


class NotRecognized(Rejection):
    response_code = 453


class InvalidData(Rejection):
    response_code = 454


class ComplianceError(Rejection):
    response_code = 459


class NotRegistered(Rejection):
    response_code = 463


# The descriptions peers show in logs; the codes are the contract.
RESPONSE_DESCRIPTIONS = {
    200: "OK",
    450: "Out of sequence",
    451: "Not allowed",
    452: "Invalid ID",
    453: "Not recognized",
    454: "Invalid data",
    459: "Compliance error",
    460: "Signal not supported",
    461: "Report not supported",
    462: "Target mismatch",
    463: "Not registered or authorized",
    469: "Deployment error or other error",
}
