"""The building blocks of the declarative model: complex types as ordered, immutable field lists.

A :class:`Field` maps one dict key to an element *path* below the parent element. A path longer
than one step is a *collapse*: wrapper elements that carry a single leaf (``xcal:dtstart`` /
``xcal:date-time`` becomes ``dtstart``). ``many_at`` says which step of the path repeats, so both
``strm:intervals/ei:interval+`` (the inner step repeats) and ``power:endDeviceAsset+/power:mrid``
(the outer step repeats) are expressed. :class:`Flatten` merges a child element's fields into the
parent dict, :class:`Nil` is an element always emitted empty and ignored on input,
:class:`Choice` is an XSD choice between differently keyed alternatives and :class:`Substitution`
an XSD substitution group whose member is named by a ``kind`` key.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property
from typing import Union

from .values import Enum, ValueType

OADR = "http://openadr.org/oadr-2.0b/2012/07"
EI = "http://docs.oasis-open.org/ns/energyinterop/201110"
PYLD = "http://docs.oasis-open.org/ns/energyinterop/201110/payloads"
EMIX = "http://docs.oasis-open.org/ns/emix/2011/06"
XCAL = "urn:ietf:params:xml:ns:icalendar-2.0"
STRM = "urn:ietf:params:xml:ns:icalendar-2.0:stream"
POWER = "http://docs.oasis-open.org/ns/emix/2011/06/power"
SCALE = "http://docs.oasis-open.org/ns/emix/2011/06/siscale"
DS = "http://www.w3.org/2000/09/xmldsig#"
DSP = "http://openadr.org/oadr-2.0b/2012/07/xmldsig-properties"
XSI = "http://www.w3.org/2001/XMLSchema-instance"

#: The conventional prefixes, all declared on the emitted root (later signing depends on a stable
#: set of in-scope namespaces, see the protocol notes on inclusive C14N).
NSMAP = {
    "oadr": OADR, "ei": EI, "pyld": PYLD, "emix": EMIX, "xcal": XCAL, "strm": STRM,
    "power": POWER, "scale": SCALE, "ds": DS, "dsp": DSP, "xsi": XSI,
}
_PREFIX = {uri: prefix for prefix, uri in NSMAP.items()}


def q(prefix: str, local: str) -> str:
    """Clark name (``{uri}local``) of a conventionally prefixed name."""
    return f"{{{NSMAP[prefix]}}}{local}"


def pretty(qname: str) -> str:
    """``{uri}local`` -> ``prefix:local`` for messages and docs."""
    if qname.startswith("{"):
        uri, local = qname[1:].split("}", 1)
        prefix = _PREFIX.get(uri)
        return f"{prefix}:{local}" if prefix else f"{{{uri}}}{local}"
    return qname


def local_name(qname: str) -> str:
    return qname.rsplit("}", 1)[-1]


def snake(local: str) -> str:
    """The dict key of an element: snake_case, a leading ``oadr``/``ei``/``x-ei`` dropped when an
    upper-case letter follows (``eiResponse`` -> ``response``, ``venID`` -> ``ven_id``)."""
    name = re.sub(r"^(oadr|ei|x-ei)(?=[A-Z])", "", local)
    name = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name)
    name = re.sub(r"(?<=[A-Z])(?=[A-Z][a-z])", "_", name)
    return name.replace("-", "_").lower()


Step = Union[str, frozenset]  # one qname, or the member qnames of a substitution group


@dataclass(frozen=True)
class ComplexType:
    """An XSD complex type: an ordered tuple of members (Field, Flatten, Nil, Choice)."""

    name: str
    members: tuple

    @cached_property
    def keys(self) -> frozenset:
        """Every dict key this type accepts, including those of flattened children."""
        found = set()
        for member in self.members:
            found |= member.keys
        return frozenset(found)


@dataclass(frozen=True)
class Substitution:
    """An XSD substitution group (``emix:itemBase``): ``{"kind": <member local name>, ...}``."""

    name: str
    members: tuple  # of (qname, ComplexType)

    @cached_property
    def qnames(self) -> frozenset:
        return frozenset(qname for qname, _ in self.members)

    def by_qname(self, qname: str):
        for member_qname, ctype in self.members:
            if member_qname == qname:
                return ctype
        return None

    def by_kind(self, kind: str):
        for member_qname, ctype in self.members:
            if local_name(member_qname) == kind:
                return member_qname, ctype
        return None


Terminal = Union[ValueType, ComplexType, Substitution]


@dataclass(frozen=True)
class Field:
    """One dict key <-> one element path.

    :param path: qnames from the parent down to the element holding the value.
    :param type: a :class:`~.values.ValueType`, :class:`ComplexType` or :class:`Substitution`.
    :param optional: the outermost element may be absent (a list key then decodes to ``[]``).
    :param many_at: index of the repeating step, or ``None`` for a single value.
    :param min_items: 1 when the repeating element is ``maxOccurs=unbounded`` without
        ``minOccurs=0``.
    :param inner_optional: an inner step may be absent, which then means "no value".
    """

    key: str
    path: tuple
    type: Terminal
    optional: bool = False
    many_at: int | None = None
    min_items: int = 0
    inner_optional: bool = False

    @property
    def keys(self) -> frozenset:
        return frozenset({self.key})

    @cached_property
    def first(self) -> frozenset:
        """The qnames that can start this member in the parent's children."""
        if len(self.path) == 1 and isinstance(self.type, Substitution):
            return self.type.qnames
        return frozenset({self.path[0]})

    @property
    def many(self) -> bool:
        return self.many_at is not None


@dataclass(frozen=True)
class Flatten:
    """A required child element whose fields live in the parent dict (``ei:eiEvent`` in oadrEvent)."""

    qname: str
    type: ComplexType

    @property
    def keys(self) -> frozenset:
        return self.type.keys

    @cached_property
    def first(self) -> frozenset:
        return frozenset({self.qname})


@dataclass(frozen=True)
class Nil:
    """A required element that is always emitted as ``xsi:nil="true"`` and ignored on input."""

    qname: str
    keys: frozenset = field(default=frozenset())

    @cached_property
    def first(self) -> frozenset:
        return frozenset({self.qname})


@dataclass(frozen=True)
class Choice:
    """An XSD choice between alternatives that use different dict keys."""

    options: tuple  # of Field
    optional: bool = False

    @property
    def keys(self) -> frozenset:
        return frozenset(option.key for option in self.options)

    @cached_property
    def first(self) -> frozenset:
        return frozenset().union(*(option.first for option in self.options))


def f(path, type, *, key: str | None = None, optional: bool = False, many_at: int | None = None,
      min_items: int = 0, inner_optional: bool = False) -> Field:
    """Field shorthand. The key defaults to the snake_case of the first path step, with an ``s``
    added for a list without wrapper (``ei:venID`` repeated -> ``ven_ids``)."""
    path = (path,) if isinstance(path, (str, frozenset)) else tuple(path)
    if key is None:
        key = snake(local_name(path[0]))
        if many_at == 0:
            key += "s"
    return Field(key, path, type, optional, many_at, min_items, inner_optional)


def ctype(name: str, *members) -> ComplexType:
    return ComplexType(name, tuple(members))


# ---------------------------------------------------------------- documentation

def describe(type_: ComplexType, indent: int = 0, named: tuple = ()) -> str:
    """The dict shape of a complex type as indented text (used in ``docs/payloads.rst``, where a
    test checks that it matches the model, so the docs cannot drift).

    :param named: ``(complex type, NAME)`` pairs of shared shapes that are printed by name instead
        of being expanded (``target: TARGET``).
    """
    lines: list[str] = []
    _describe_members(type_, indent, lines, named)
    return "\n".join(lines)


def _describe_value(vtype) -> str:
    if isinstance(vtype, Enum):
        values = " | ".join(repr(v) for v in vtype.values[:30])
        if len(vtype.values) > 30:
            values += f" | ... ({len(vtype.values)} values)"
        if vtype.extensible:
            values += " | 'x-...'"
        return f"str: {values}"
    return f"{vtype.python} ({vtype.name})"


def _describe_members(type_: ComplexType, indent: int, lines: list, named: tuple) -> None:
    pad = "    " * indent
    for member in type_.members:
        if isinstance(member, Flatten):
            _describe_members(member.type, indent, lines, named)
        elif isinstance(member, Nil):
            continue
        elif isinstance(member, Choice):
            lines.append(pad + "one of:" + (" (optional)" if member.optional else ""))
            for option in member.options:
                _describe_field(option, indent + 1, lines, named, choice=True)
        else:
            _describe_field(member, indent, lines, named)


def _describe_field(member: Field, indent: int, lines: list, named: tuple, choice: bool = False) -> None:
    pad = "    " * indent
    steps = [pretty(p) if isinstance(p, str) else "emix:itemBase" for p in member.path]
    if member.many:
        steps[member.many_at] += "+" if member.min_items else "*"
        if member.optional and member.many_at:
            steps[0] += "?"  # an optional wrapper: an empty list means no wrapper
    xml = "/".join(steps)
    mark = "" if member.many or choice else ("?" if member.optional else "")
    kind = member.type
    name = next((label for shared, label in named if shared is kind), None)
    if isinstance(kind, Substitution):
        name = kind.name
    if isinstance(kind, ValueType) or name:
        shape = name or _describe_value(kind)
        shape = f"[{shape}]" if member.many else shape
        lines.append(f"{pad}{member.key}{mark}: {shape}    <- {xml}")
        return
    opener = "[{" if member.many else "{"
    lines.append(f"{pad}{member.key}{mark}: {opener}    <- {xml}")
    _describe_members(kind, indent + 1, lines, named)
    lines.append(pad + ("}]" if member.many else "}"))


def describe_substitution(sub: Substitution, named: tuple = ()) -> str:
    """Shape of every member of a substitution group, for the ITEMBASE section of the docs."""
    lines = []
    for qname, member_type in sub.members:
        lines.append(f"kind: {local_name(qname)!r}    <- {pretty(qname)}")
        _describe_members(member_type, 1, lines, named)
    return "\n".join(lines)
