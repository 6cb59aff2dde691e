"""OpenADR 2.0b messages <-> plain dicts: hardened parsing, schema-driven conversion, XSD-ordered output.

The dict shapes of every payload are documented in ``docs/payloads.rst``.
"""
from __future__ import annotations

import re
import threading
from typing import Any, Mapping

from lxml import etree

from .convert import decode_element, encode_element
from .fields import q
from .parser import parse
from .schema import PAYLOAD_TYPES
from .writer import message

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
    children in XSD order, all conventional prefixes declared on the root: the bytes of
    :func:`encode_element`'s tree, written without building it (see :mod:`.writer`).

    :raises ValueError: naming the key path, for a missing required key, an unknown key or a value
        of the wrong type (a programming error on the caller's side).
    """
    if payload_name == "oadrResponse":
        prepared = _prepared_response(payload)
        if prepared is not None:
            return prepared
    write = message(payload_name)
    if write is not None:
        body = write(payload)
        if body is not None:
            return body
    # What the compiled writer does not take: the generic engine encodes it (the same bytes) or
    # raises the error that names what is wrong.
    return etree.tostring(encode_element(payload_name, payload), xml_declaration=True, encoding="UTF-8")


# One oadrResponse per eiResponse (code, description), built by encode_element once and kept as
# the bytes before and after its venID; a call puts its venID between them. An empty poll is
# answered with this message, and joining three byte strings costs a small part of setting the
# text of a prepared tree and serialising it (which this replaced, and which stays for venIDs
# that XML would escape or refuse). Bounded: a requestID varies per message, so only replies
# without one (those to oadrPoll) are kept, and a few codes at most.
_PREPARED: dict[tuple[int, str], tuple[bytes, bytes]] = {}
_PREPARED_LOCK = threading.Lock()
_MAX_PREPARED = 8
_PLACEHOLDER = "prepared-venID-0"
# VenIDs written as they are: no character XML escapes in text, none it refuses, all ASCII.
_PLAIN_VEN_ID = re.compile(r"[A-Za-z0-9_.:-]+")
# Otherwise a tree per thread (lxml trees are not shared between threads) has its venID set.
_TREES = threading.local()


def _prepared_response(payload: Mapping[str, Any]) -> bytes | None:
    """``payload`` (an oadrResponse) encoded from a prepared message, or None when its shape is
    not the one prepared messages have (encode builds it the ordinary way, and says what is
    wrong)."""
    if type(payload) is not dict and not isinstance(payload, Mapping):  # (a dict: no ABC check)
        return None  # the generic engine says what is wrong
    ven_id = payload.get("ven_id")
    response = payload.get("response")
    if len(payload) != 2 or type(ven_id) is not str or type(response) is not dict \
            or len(response) != 3 or response.get("request_id") != "":
        return None
    code, description = response.get("response_code"), response.get("response_description")
    if type(code) is not int or type(description) is not str:
        return None
    key = (code, description)
    if _PLAIN_VEN_ID.fullmatch(ven_id):
        parts = _PREPARED.get(key)
        if parts is None:
            with _PREPARED_LOCK:
                if len(_PREPARED) >= _MAX_PREPARED:
                    return None
                root = encode_element("oadrResponse", {"response": dict(response),
                                                       "ven_id": _PLACEHOLDER})
                whole = etree.tostring(root, xml_declaration=True, encoding="UTF-8")
                if whole.count(_PLACEHOLDER.encode("ascii")) != 1:
                    return None  # a description holding the placeholder: build it afresh
                before, _, after = whole.partition(_PLACEHOLDER.encode("ascii"))
                parts = _PREPARED[key] = (before, after)
        return parts[0] + ven_id.encode("ascii") + parts[1]
    trees = getattr(_TREES, "trees", None)
    if trees is None:
        trees = _TREES.trees = {}
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
