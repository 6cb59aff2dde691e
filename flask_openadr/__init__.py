"""flask-openadr: an OpenADR 2.0b VTN inside a Flask application.

The public API is what this package exports, :mod:`flask_openadr.testing`, the signals, the
gunicorn hooks, and the store base class with its registration for custom backends; every other
module is internal (see ``docs/api.rst``, "What is public").
"""
from .errors import (
    ComplianceError,
    ConfigurationError,
    EventError,
    InvalidData,
    InvalidID,
    MalformedMessage,
    NotAllowed,
    NotRecognized,
    NotRegistered,
    OpenADRError,
    OutOfSequence,
    Rejection,
    StoreError,
    Unidentified,
    UnknownEvent,
    UnsupportedValue,
)
from .extension import VTN

__all__ = [
    "VTN",
    "Rejection",
    "OpenADRError",
    "ConfigurationError",
    "StoreError",
    "MalformedMessage",
    "UnsupportedValue",
    "Unidentified",
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
