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
from typing import Iterable, Union

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


@dataclass(frozen=True)
class ComplexType:
    """An XSD complex type: an ordered tuple of members (Field, Flatten, Nil, Choice)."""

    name: str
    members: tuple[Member, ...]

    @cached_property
    def keys(self) -> frozenset[str]:
        """Every dict key this type accepts, including those of flattened children."""
        found: set[str] = set()
        for member in self.members:
            found |= member.keys
        return frozenset(found)


@dataclass(frozen=True)
class Substitution:
    """An XSD substitution group (``emix:itemBase``): ``{"kind": <member local name>, ...}``."""

    name: str
    members: tuple[tuple[str, ComplexType], ...]  # (member qname, its type)

    @cached_property
    def qnames(self) -> frozenset[str]:
        return frozenset(qname for qname, _ in self.members)

    def by_qname(self, qname: str) -> ComplexType | None:
        for member_qname, ctype in self.members:
            if member_qname == qname:
                return ctype
        return None

    def by_kind(self, kind: str) -> tuple[str, ComplexType] | None:
        for member_qname, ctype in self.members:
            if local_name(member_qname) == kind:
                return member_qname, ctype
        return None


Terminal = Union[ValueType[object], ComplexType, Substitution]


@dataclass(frozen=True)
class Field:
    """One dict key <-> one element path.

    :param path: qnames from the parent down to the element holding the value; for a
        substitution group, its (abstract) head element, whose members stand in its place.
    :param type: a :class:`~.values.ValueType`, :class:`ComplexType` or :class:`Substitution`.
    :param optional: the outermost element may be absent (a list key then decodes to ``[]``).
    :param many_at: index of the repeating step, or ``None`` for a single value.
    :param min_items: 1 when the repeating element is ``maxOccurs=unbounded`` without
        ``minOccurs=0``.
    :param inner_optional: an inner step may be absent, which then means "no value".
    """

    key: str
    path: tuple[str, ...]
    type: Terminal
    optional: bool = False
    many_at: int | None = None
    min_items: int = 0
    inner_optional: bool = False

    @property
    def keys(self) -> frozenset[str]:
        return frozenset({self.key})

    @cached_property
    def first(self) -> frozenset[str]:
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
    def keys(self) -> frozenset[str]:
        return self.type.keys

    @cached_property
    def first(self) -> frozenset[str]:
        return frozenset({self.qname})


@dataclass(frozen=True)
class Nil:
    """A required element that is always emitted as ``xsi:nil="true"`` and ignored on input."""

    qname: str
    keys: frozenset[str] = field(default=frozenset())

    @cached_property
    def first(self) -> frozenset[str]:
        return frozenset({self.qname})


@dataclass(frozen=True)
class Choice:
    """An XSD choice between alternatives that use different dict keys."""

    options: tuple[Field, ...]
    optional: bool = False

    @property
    def keys(self) -> frozenset[str]:
        return frozenset(option.key for option in self.options)

    @cached_property
    def first(self) -> frozenset[str]:
        return frozenset[str]().union(*(option.first for option in self.options))


#: What a complex type holds, in XSD order.
Member = Union[Field, Flatten, Nil, Choice]

#: ``(shared type, NAME)``: a shape the docs print by name instead of expanding it.
Named = tuple[tuple[Terminal, str], ...]


def f(path: str | Iterable[str], type: Terminal, *, key: str | None = None,
      optional: bool = False, many_at: int | None = None, min_items: int = 0,
      inner_optional: bool = False) -> Field:
    """Field shorthand. The key defaults to the snake_case of the first path step, with an ``s``
    added for a list without wrapper (``ei:venID`` repeated -> ``ven_ids``)."""
    steps = (path,) if isinstance(path, str) else tuple(path)
    if key is None:
        key = snake(local_name(steps[0]))
        if many_at == 0:
            key += "s"
    return Field(key, steps, type, optional, many_at, min_items, inner_optional)


def ctype(name: str, *members: Member) -> ComplexType:
    return ComplexType(name, tuple(members))


# ---------------------------------------------------------------- documentation

def describe(type_: ComplexType, indent: int = 0, named: Named = ()) -> str:
    """The dict shape of a complex type as indented text (used in ``docs/payloads.rst``, where a
    test checks that it matches the model, so the docs cannot drift).

    :param named: ``(complex type, NAME)`` pairs of shared shapes that are printed by name instead
        of being expanded (``target: TARGET``).
    """
    lines: list[str] = []
    _describe_members(type_, indent, lines, named)
    return "\n".join(lines)


def _describe_value(vtype: ValueType[object]) -> str:
    if isinstance(vtype, Enum):
        values = " | ".join(repr(v) for v in vtype.values[:30])
        if len(vtype.values) > 30:
            values += f" | ... ({len(vtype.values)} values)"
        if vtype.extensible:
            values += " | 'x-...'"
        return f"str: {values}"
    return f"{vtype.python} ({vtype.name})"


def _describe_members(type_: ComplexType, indent: int, lines: list[str], named: Named) -> None:
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


def _describe_field(member: Field, indent: int, lines: list[str], named: Named,
                    choice: bool = False) -> None:
    pad = "    " * indent
    steps = [pretty(step) for step in member.path]
    if member.many_at is not None:
        steps[member.many_at] += "+" if member.min_items else "*"
        if member.optional and member.many_at:
            steps[0] += "?"  # an optional wrapper: an empty list means no wrapper
    xml = "/".join(steps)
    mark = "" if member.many or choice else ("?" if member.optional else "")
    kind = member.type
    label = next((label for shared, label in named if shared is kind), None)
    if isinstance(kind, Substitution):
        shape = kind.name
    elif label is not None:
        shape = label
    elif isinstance(kind, ValueType):
        shape = _describe_value(kind)
    else:
        opener = "[{" if member.many else "{"
        lines.append(f"{pad}{member.key}{mark}: {opener}    <- {xml}")
        _describe_members(kind, indent + 1, lines, named)
        lines.append(pad + ("}]" if member.many else "}"))
        return
    shape = f"[{shape}]" if member.many else shape
    lines.append(f"{pad}{member.key}{mark}: {shape}    <- {xml}")


def describe_substitution(sub: Substitution, named: Named = ()) -> str:
    """Shape of every member of a substitution group, for the ITEMBASE section of the docs."""
    lines = []
    for qname, member_type in sub.members:
        lines.append(f"kind: {local_name(qname)!r}    <- {pretty(qname)}")
        _describe_members(member_type, 1, lines, named)
    return "\n".join(lines)
