"""flask-openadr: an OpenADR 2.0b VTN inside a Flask application."""
from .errors import (
    ComplianceError,
    ConfigurationError,
    EventError,
    InvalidData,
    InvalidID,
    NotAllowed,
    NotRecognized,
    NotRegistered,
    OpenADRError,
    OutOfSequence,
    Rejection,
    StoreError,
    UnknownEvent,
)
from .extension import VTN

__all__ = [
    "VTN",
    "Rejection",
    "OpenADRError",
    "ConfigurationError",
    "StoreError",
    "EventError",
    "OutOfSequence",
    "NotAllowed",
    "InvalidID",
    "NotRecognized",
    "InvalidData",
    "ComplianceError",
    "NotRegistered",
    "UnknownEvent",
]
