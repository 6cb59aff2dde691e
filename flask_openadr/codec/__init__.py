"""OpenADR 2.0b messages <-> plain dicts: hardened parsing, schema-driven conversion, XSD-ordered output.

The dict shapes of every payload are documented in ``docs/payloads.rst``.
"""
from __future__ import annotations

from typing import Any, Mapping

from lxml import etree

from .convert import decode_element, encode_element
from .parser import parse
from .schema import PAYLOAD_TYPES

__all__ = ["PAYLOADS", "decode", "decode_element", "encode", "encode_element", "parse"]

#: The names of every payload the codec knows (``"oadrPoll"``, ``"oadrDistributeEvent"``, ...).
PAYLOADS: frozenset[str] = frozenset(PAYLOAD_TYPES)


def decode(body: bytes, *, max_bytes: int | None = None) -> tuple[str, dict[str, Any]]:
    """Parse and convert an inbound message.

    :returns: ``(payload local name, dict)``, e.g. ``("oadrPoll", {"ven_id": "ven-1"})``.
    :raises ~flask_openadr.errors.MalformedMessage: with a short reason naming the element and
        value, for anything unacceptable (size, syntax, DOCTYPE, root, unknown payload or element,
        missing element, unconvertible value).
    :raises ~flask_openadr.errors.UnsupportedValue: for a valid 2.0b message the VTN cannot
        honour (a duration in months or years, more than ``MAX_REPEATED`` of one repeated
        element); it carries the decoded payload, so the paired reply can be addressed.
    """
    return decode_element(parse(body, max_bytes=max_bytes))


def encode(payload_name: str, payload: Mapping[str, Any]) -> bytes:
    """Build a complete message: UTF-8 with an XML declaration,
    ``oadr:oadrPayload/oadr:oadrSignedObject(oadr:Id="oadrSignedObject")/<payload ei:schemaVersion="2.0b">``,
    children in XSD order, all conventional prefixes declared on the root.

    :raises ValueError: naming the key path, for a missing required key, an unknown key or a value
        of the wrong type (a programming error on the caller's side).
    """
    return etree.tostring(encode_element(payload_name, payload), xml_declaration=True, encoding="UTF-8")
