"""Messages <-> dicts by the model of :mod:`.schema`: the compiled decoder first, then the generic
walk to say what is wrong with what it refused; the generic encoder.

The generic walk interprets the model member by member. The compiled decoder
(:mod:`.compiled`) decodes every acceptable message by itself; the walk runs only on input the
compiled decoder refused, to name the element and the value that is wrong (or, for a value the
VTN cannot honour, to decode the rest of the message so that the paired reply can be addressed).

The generic encoder builds the lxml tree of a message (:func:`encode_element`, which signing
needs). :func:`flask_openadr.codec.encode` writes a message's bytes with the compiled writer
(:mod:`.writer`) and runs the generic encoder only on what the writer refused, to encode it or
to say what is wrong with it.
"""
from __future__ import annotations

import collections
import contextvars
import sys
from typing import Any, Literal, Mapping, Optional, Tuple, Union, overload

from lxml import etree

from ..errors import MalformedMessage, UnsupportedValue
from .compiled import decoder
from .fields import (
    DS, NSMAP, OADR, XSI, Choice, ComplexType, Field, Flatten, Member, Nil, Substitution, Terminal,
    local_name, q,
)
from .nodes import MAX_REPEATED, named, simple_text
from .schema import PAYLOAD_TYPES, UNSUPPORTED
from .values import Unsupported, ValueProblem, ValueType, shown

_ABSENT = object()

#: Where in the message an error is (see :func:`_at`): the payload name, or
#: ``(parent location, qname, index or None)``.
Where = Union[str, Tuple["Where", str, Optional[int]]]

#: The longest reason the codec gives: it is the 400 reply's text or the 454 reply's description,
#: read by a person in a log. A location gives way in the middle to fit (see :func:`_located`);
#: every other part is bounded where it is written (values by ``shown()``, names by ``named()``).
MAX_REASON_CHARS = 200

# While set, a value the VTN cannot honour decodes to its own text instead of stopping the
# decoding, so that the rest of the message (requestID, venID) can address the paired reply.
_TOLERANT = contextvars.ContextVar("flask_openadr_tolerant", default=False)


class _Unhonoured(Exception):
    """Internal: the first :class:`~.values.Unsupported` value, located; never leaves this module."""
_PAYLOAD_ROOT = q("oadr", "oadrPayload")
_SIGNED_OBJECT = q("oadr", "oadrSignedObject")
_SIGNATURE = f"{{{DS}}}Signature"

# ================================================================ decoding


def decode_element(root: etree._Element) -> tuple[str, dict[str, Any]]:
    """Decode a parsed message: ``oadrPayload/[ds:Signature]/oadrSignedObject/<payload>`` or a bare
    payload element. The signature, if any, is not looked at here (the security layer verifies it
    before calling this).

    :returns: ``(payload local name, dict)``
    :raises MalformedMessage: naming the element and the value that is wrong.
    :raises UnsupportedValue: valid 2.0b the VTN cannot honour (see :data:`MAX_REPEATED` and
        :class:`~.values.Unsupported`), with the payload decoded as far as it can be.
    """
    name, payload = _payload(root)
    decoded = decoder(PAYLOAD_TYPES[name])(payload)
    if decoded is None:  # the compiled decoder also refuses a list of more than MAX_REPEATED
        decoded = _refused(payload, name)
    return name, decoded


def _payload(root: etree._Element) -> tuple[str, etree._Element]:
    """The payload's local name and element, from the envelope."""
    if not isinstance(getattr(root, "tag", None), str):
        raise MalformedMessage("the document has no root element")
    payload = root
    if root.tag == _PAYLOAD_ROOT:
        children = _children(root, "oadr:oadrPayload")
        if children and children[0].tag == _SIGNATURE:
            children = children[1:]
        if not children or children[0].tag != _SIGNED_OBJECT:
            found = named(children[0].tag) if children else "nothing"
            raise MalformedMessage(
                f"oadr:oadrPayload must hold [ds:Signature,] oadr:oadrSignedObject; found {found}")
        if len(children) > 1:
            raise MalformedMessage(
                f"oadr:oadrPayload: unexpected element {named(children[1].tag)} after oadr:oadrSignedObject")
        inner = _children(children[0], "oadr:oadrSignedObject")
        if len(inner) != 1:
            raise MalformedMessage(
                f"oadr:oadrSignedObject must hold exactly one payload element, found {len(inner)}")
        payload = inner[0]
    namespace, _, name = payload.tag[1:].partition("}") if payload.tag.startswith("{") else ("", "", payload.tag)
    if namespace != OADR:
        raise MalformedMessage(
            f"{named(payload.tag)} is not an OpenADR 2.0b message (expected oadr:oadrPayload in "
            f"namespace {OADR})")
    if name not in PAYLOAD_TYPES:
        raise MalformedMessage(f"unknown payload {named(payload.tag)}")
    return name, payload


def _refused(payload: etree._Element, name: str) -> dict[str, Any]:
    """Walk a payload the compiled decoder refused, to raise the error that says why.

    Should the walk accept it after all (a disagreement ``tests/test_codec_fast_path.py`` exists
    to catch), its dict is the answer.
    """
    crowded = _crowded(payload, name)
    if crowded:
        # Too long to process but maybe valid: the paired reply needs it decoded, which the
        # compiled decoder does without its limit several times faster than the walk.
        decoded = decoder(PAYLOAD_TYPES[name])(payload, sys.maxsize)
        if decoded is not None:
            raise UnsupportedValue(name, decoded, crowded)
    try:
        decoded = _decode_complex(payload, PAYLOAD_TYPES[name], name)
    except _Unhonoured as first:
        token = _TOLERANT.set(True)
        try:
            # Anything malformed further on still makes the message a 400.
            decoded = _decode_complex(payload, PAYLOAD_TYPES[name], name)
        finally:
            _TOLERANT.reset(token)
        raise UnsupportedValue(name, decoded, crowded or str(first)) from None
    if crowded:
        raise UnsupportedValue(name, decoded, crowded)
    return decoded


def _crowded(payload: etree._Element, name: str) -> str | None:
    """Why the payload holds more than :data:`MAX_REPEATED` elements in one element, or None."""
    for element in payload.iter():
        if len(element) > MAX_REPEATED:
            tags = collections.Counter(child.tag for child in element
                                       if isinstance(child.tag, str))
            common, count = tags.most_common(1)[0] if tags else ("", 0)
            if count <= MAX_REPEATED:
                continue  # the limit is on one repeated element, not on what surrounds it
            where = name if element is payload else named(element.tag)
            return (f"{where} holds {count} {named(common)} elements; at most {MAX_REPEATED} "
                    "are accepted in one list (send several messages)")
    return None


# A location for error messages is built only when an error is raised: on the hot path it is a
# cheap tuple ``(parent location, qname, index or None)`` below a root string.


def _at(where: Where, qname: str, index: int | None = None) -> Where:
    return (where, qname, index)


def _located(where: Where, problem: str) -> str:
    """``oadrUpdateReport/oadr:oadrReport[0]/strm:intervals/...: problem`` in at most
    :data:`MAX_REASON_CHARS`: when the location is too long, the steps after its root give way to
    ``...`` from the top down, so the element at fault stays named."""
    steps = []
    while isinstance(where, tuple):
        where, qname, index = where
        steps.append(f"/{named(qname)}" if index is None else f"/{named(qname)}[{index}]")
    steps.reverse()
    room = MAX_REASON_CHARS - len(problem) - 2
    location = where + "".join(steps)
    while len(location) > room and len(steps) > 1:
        del steps[0]
        location = where + "/..." + "".join(steps)
    reason = f"{location}: {problem}"
    return reason if len(reason) <= MAX_REASON_CHARS else reason[:MAX_REASON_CHARS - 3] + "..."


def _malformed(where: Where, problem: str) -> MalformedMessage:
    return MalformedMessage(_located(where, problem))


def _children(element: etree._Element, where: Where) -> list[etree._Element]:
    """Element children, skipping comments and processing instructions; text between them is
    refused because every complex type of the schema has element-only content."""
    text = element.text
    if text and not text.isspace():
        raise _malformed(where, f"unexpected text {shown(text.strip())}")
    found = []
    for child in element:
        if child.tag.__class__ is str:
            found.append(child)
        elif child.tag is etree.Entity:
            raise _malformed(where, "entity references are not allowed")
        tail = child.tail
        if tail and not tail.isspace():
            raise _malformed(where, f"unexpected text {shown(tail.strip())}")
    return found


def _unexpected(child: etree._Element, where: Where,
                expected: str | None = None) -> MalformedMessage:
    if child.tag in UNSUPPORTED:
        return _malformed(where, f"{named(child.tag)} is not supported by flask-openadr")
    hint = f" (expected {expected})" if expected else " (unknown here, or out of XSD order)"
    return _malformed(where, f"unexpected element {named(child.tag)}{hint}")


def _missing(children: list[etree._Element], pos: int, where: Where,
             wanted: frozenset[str]) -> MalformedMessage:
    names = sorted(named(name) for name in wanted)
    if len(names) > 3:  # the members of a substitution group
        names[3:] = [f"{len(names) - 3} more"]
    expected = " or ".join(names)
    if pos < len(children):
        return _unexpected(children[pos], where, expected)
    return _malformed(where, f"missing required element {expected}")


def _decode_complex(element: etree._Element, ctype: ComplexType, where: Where) -> dict[str, Any]:
    children = _children(element, where)
    out: dict[str, Any] = {}
    pos = 0
    for member in ctype.members:
        pos = _decode_member(member, children, pos, out, where)
    if pos < len(children):
        raise _unexpected(children[pos], where)
    return out


def _decode_member(member: Member, children: list[etree._Element], pos: int,
                   out: dict[str, Any], where: Where) -> int:
    if type(member) is Field:
        return _decode_field(member, children, pos, out, where)
    here = children[pos] if pos < len(children) else None
    matches = here is not None and here.tag in member.first
    if isinstance(member, Nil):
        if not matches:
            raise _missing(children, pos, where, member.first)
        return pos + 1  # content deliberately ignored (always nil on the way out)
    if isinstance(member, Flatten):
        if here is None or not matches:
            raise _missing(children, pos, where, member.first)
        out.update(_decode_complex(here, member.type, _at(where, here.tag)))
        return pos + 1
    if isinstance(member, Choice):
        for option in member.options:
            if here is not None and matches and here.tag in option.first:
                return _decode_member(option, children, pos, out, where)
        if member.optional:
            return pos
        raise _missing(children, pos, where, member.first)
    return _decode_field(member, children, pos, out, where)


def _decode_field(member: Field, children: list[etree._Element], pos: int, out: dict[str, Any],
                  where: Where) -> int:
    first = member.first
    if member.many_at == 0:
        items: list[object] = []
        while pos < len(children) and children[pos].tag in first:
            child = children[pos]
            items.append(_decode_path(child, member, 1, _at(where, child.tag, len(items))))
            pos += 1
        if len(items) < member.min_items:
            raise _missing(children, pos, where, first)
        out[member.key] = items
        return pos
    if pos >= len(children) or children[pos].tag not in first:
        if member.many_at is not None and member.optional:
            out[member.key] = []
        elif not member.optional:
            raise _missing(children, pos, where, first)
        return pos
    element = children[pos]
    here = _at(where, element.tag)
    if member.many_at is None:
        value = _decode_path(element, member, 1, here)
        if value is not _ABSENT:
            out[member.key] = value
        return pos + 1
    for step in member.path[1:member.many_at]:
        element, here = _single(element, step, here)
    step = member.path[member.many_at]
    items = []
    start = member.many_at + 1
    for child in _children(element, here):
        if child.tag != step:
            raise _unexpected(child, here, named(step))
        items.append(_decode_path(child, member, start, _at(here, step, len(items))))
    if len(items) < member.min_items:
        raise _malformed(here, f"missing required element {named(step)}")
    out[member.key] = items
    return pos + 1


@overload
def _single(element: etree._Element, step: str, where: Where,
            optional: Literal[False] = False) -> tuple[etree._Element, Where]: ...
@overload
def _single(element: etree._Element, step: str, where: Where,
            optional: bool) -> tuple[etree._Element | None, Where]: ...


def _single(element: etree._Element, step: str, where: Where,
            optional: bool = False) -> tuple[etree._Element | None, Where]:
    """The one child ``step`` of a collapsed wrapper; None for an empty wrapper when the step is
    ``optional``."""
    children = _children(element, where)
    if len(children) == 1 and children[0].tag == step:
        return children[0], _at(where, step)
    if not children:
        if optional:
            return None, where
        raise _malformed(where, f"missing required element {named(step)}")
    if children[0].tag != step:
        raise _unexpected(children[0], where, named(step))
    raise _unexpected(children[1], where)


def _decode_path(element: etree._Element, member: Field, start: int, where: Where) -> object:
    """The value below ``element`` at ``member.path[start:]``; :data:`_ABSENT` for an empty
    optional wrapper."""
    path = member.path
    for index in range(start, len(path)):
        inner, where = _single(element, path[index], where, member.inner_optional)
        if inner is None:
            return _ABSENT
        element = inner
    return _convert(element, member.type, where)


def _convert(element: etree._Element, kind: Terminal, where: Where) -> object:
    if isinstance(kind, ValueType):
        text = element.text or ""
        try:
            if len(element):
                text = simple_text(element)
            return kind.parse(text)
        except Unsupported as problem:
            if _TOLERANT.get():
                return text
            raise _Unhonoured(_located(where, str(problem))) from None
        except ValueProblem as problem:
            raise _malformed(where, str(problem)) from None
    if isinstance(kind, Substitution):
        member_type = kind.by_qname(element.tag)
        if member_type is None:
            raise _unexpected(element, where)
        result: dict[str, Any] = {"kind": local_name(element.tag)}
        result.update(_decode_complex(element, member_type, where))
        return result
    return _decode_complex(element, kind, where)


# ================================================================ encoding


def encode_element(payload_name: str, payload: Mapping[str, Any]) -> etree._Element:
    """Build the ``oadr:oadrPayload`` tree of one payload (see :func:`flask_openadr.codec.encode`)."""
    ctype = PAYLOAD_TYPES.get(payload_name)
    if ctype is None:
        raise ValueError(f"unknown payload name {payload_name!r} (expected one of {sorted(PAYLOAD_TYPES)})")
    root, element = payload_tree(payload_name)
    _encode_complex(element, payload, ctype, payload_name)
    return root


def payload_tree(payload_name: str) -> tuple[etree._Element, etree._Element]:
    """The ``oadr:oadrPayload`` root of a message and its (empty) payload element below
    ``oadr:oadrSignedObject``: what every message the codec writes is built in (the compiled
    encoder of :mod:`.writer` takes its text from this tree too)."""
    root = etree.Element(_PAYLOAD_ROOT, nsmap=NSMAP)
    signed = etree.SubElement(root, _SIGNED_OBJECT, {q("oadr", "Id"): "oadrSignedObject"})
    element = etree.SubElement(signed, q("oadr", payload_name), {q("ei", "schemaVersion"): "2.0b"})
    return root, element


def _encode_complex(element: etree._Element, data: object, ctype: ComplexType, where: str, *,
                    extra_keys: frozenset[str] = frozenset()) -> None:
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a dict, got {type(data).__name__} {data!r}")
    unknown = set(data) - ctype.keys - extra_keys
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {sorted(unknown)} (allowed: {sorted(ctype.keys)})")
    _encode_members(element, data, ctype, where)


def _encode_members(element: etree._Element, data: Mapping[str, object], ctype: ComplexType,
                    where: str) -> None:
    for member in ctype.members:
        if isinstance(member, Nil):
            etree.SubElement(element, member.qname, {f"{{{XSI}}}nil": "true"})
        elif isinstance(member, Flatten):
            # keys were checked against the parent type, which includes the flattened ones
            _encode_members(etree.SubElement(element, member.qname), data, member.type, where)
        elif isinstance(member, Choice):
            present = [option for option in member.options if data.get(option.key) is not None]
            if len(present) > 1:
                raise ValueError(f"{where}: give only one of {[o.key for o in present]}")
            if not present:
                if member.optional:
                    continue
                raise ValueError(f"{where}: missing required key, one of {[o.key for o in member.options]}")
            _encode_field(element, data, present[0], where)
        else:
            _encode_field(element, data, member, where)


def _encode_field(element: etree._Element, data: Mapping[str, object], member: Field,
                  where: str) -> None:
    value = data.get(member.key)
    here = f"{where}.{member.key}"
    if not member.many:
        if value is None:
            if member.optional:
                return
            raise ValueError(f"{here}: missing required key {member.key!r}")
        _encode_path(element, member.path, value, member.type, here)
        return
    items: object = [] if value is None else value
    if not isinstance(items, (list, tuple)):
        raise ValueError(f"{here}: expected a list, got {type(items).__name__} {items!r}")
    if not items and member.optional and member.many_at:
        return  # an optional wrapper: no items means no wrapper
    if len(items) < member.min_items:
        raise ValueError(f"{here}: needs at least {member.min_items} item(s)")
    if member.many_at == 0:
        for i, item in enumerate(items):
            _encode_path(element, member.path, item, member.type, f"{here}[{i}]")
        return
    for step in member.path[:member.many_at]:
        element = etree.SubElement(element, step)
    for i, item in enumerate(items):
        _encode_path(element, member.path[member.many_at:], item, member.type, f"{here}[{i}]")


def _encode_path(element: etree._Element, steps: tuple[str, ...], value: object, kind: Terminal,
                 where: str) -> None:
    if isinstance(kind, Substitution):
        if not isinstance(value, dict) or not isinstance(value.get("kind"), str):
            raise ValueError(f"{where}: expected a dict with a 'kind' key, got {value!r}")
        found = kind.by_kind(value["kind"])
        if found is None:
            kinds = [local_name(name) for name, _ in kind.members]
            raise ValueError(f"{where}.kind: {value['kind']!r} is not one of {kinds}")
        qname, member_type = found
        _encode_complex(etree.SubElement(element, qname), value, member_type, where,
                        extra_keys=frozenset({"kind"}))
        return
    for step in steps:
        element = etree.SubElement(element, step)
    if isinstance(kind, ValueType):
        try:
            element.text = kind.format(value)
        except ValueError as problem:  # includes lxml's "not XML compatible" for control characters
            raise ValueError(f"{where}: {problem}") from None
    else:
        _encode_complex(element, value, kind, where)
