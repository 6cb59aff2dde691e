"""OpenADR 2.0b messages <-> plain dicts: hardened parsing, schema-driven conversion, XSD-ordered output.

The dict shapes of every payload are documented in ``docs/payloads.rst``.
"""
from __future__ import annotations

import threading
from typing import Any, Mapping

from lxml import etree

from .convert import decode_element, encode_element
from .fields import q
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
    if payload_name == "oadrResponse":
        prepared = _prepared_response(payload)
        if prepared is not None:
            return prepared
    return etree.tostring(encode_element(payload_name, payload), xml_declaration=True, encoding="UTF-8")


# One oadrResponse tree per thread and eiResponse (code, description), built by encode_element
# once; a call only sets its venID. An empty poll is answered with this message, and setting one
# text is a tenth of the cost of building the tree again. Bounded: a requestID varies per
# message, so only replies without one (those to oadrPoll) are kept, and a few codes at most.
_RESPONSES = threading.local()
_MAX_PREPARED = 8
_PLACEHOLDER = "venID"


def _prepared_response(payload: Mapping[str, Any]) -> bytes | None:
    """``payload`` (an oadrResponse) encoded from a prepared tree, or None when its shape is not
    the one prepared trees hold (encode builds it the ordinary way, and says what is wrong)."""
    ven_id = payload.get("ven_id")
    response = payload.get("response")
    if len(payload) != 2 or type(ven_id) is not str or type(response) is not dict \
            or len(response) != 3 or response.get("request_id") != "":
        return None
    code, description = response.get("response_code"), response.get("response_description")
    if type(code) is not int or type(description) is not str:
        return None
    trees = getattr(_RESPONSES, "trees", None)
    if trees is None:
        trees = _RESPONSES.trees = {}
    key = (code, description)
    entry = trees.get(key)
    if entry is None:
        if len(trees) >= _MAX_PREPARED:
            return None
        root = encode_element("oadrResponse", {"response": dict(response),
                                               "ven_id": _PLACEHOLDER})
        (ven,) = root.iter(q("ei", "venID"))
        entry = trees[key] = (root, ven)
    root, ven = entry
    try:
        ven.text = ven_id
    except ValueError:
        return None  # not XML text (a control character): the ordinary path names the problem
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")

