"""The compiled encoder: a Python function generated per complex type, writing a message's text.

:func:`message` gives, for a payload name, a function ``payload -> bytes | None`` that returns
exactly the bytes of ``etree.tostring(encode_element(name, payload), xml_declaration=True,
encoding="UTF-8")`` without building a tree, or None for a payload it does not take: a missing
or unknown key, both alternatives of a choice, a value of the wrong type, out of range or
holding a character XML cannot carry, and a few rare shapes it leaves to the generic engine (a
subclass of dict, list or str). The generic engine of :mod:`.convert` then encodes that payload,
or raises the error that names what is wrong. So the generic engine stays the one place that
says what the encoder refuses and why, and a payload gives the same bytes either way.

Each complex type is compiled once, when first used, into a function ``(data, out) -> bool``
that appends the content of one element of the type to ``out``, a list of str: every member
inlined, the fixed markup of neighbouring elements joined into one string when it is generated,
the values of the common types (str, float, int, bool, UTC datetime, timedelta) converted
inline, any other value by its type's ``format``. The text is the one libxml2's serializer
writes for the generic engine's tree: the head taken from the generic engine's own tree (every
prefix declared on the root), names as ``prefix:local``, an element without content as ``<x/>``
(one with an empty text as ``<x></x>``), and in texts ``&``, ``<``, ``>`` and a carriage return
as ``&amp;``, ``&lt;``, ``&gt;`` and ``&#13;``, every other character as it is, in UTF-8.
``tests/test_codec_writer.py`` holds both engines to the same bytes and the same refusals.

Writing the text is what makes it fast: for an oadrDistributeEvent of ten events of 24
intervals, creating the tree's elements alone (one SubElement each) takes more than twice the
writer's whole time (``bench/bench_encode.py`` times both engines).
"""
from __future__ import annotations

import re
import threading
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Union, cast

from lxml import etree

from . import values as v
from .compiled import GeneratedSource
from .convert import payload_tree
from .fields import (
    XSI, Choice, ComplexType, Field, Flatten, Member, Nil, Substitution, local_name, pretty,
)
from .schema import PAYLOAD_TYPES
from .values import ValueType, format_datetime

__all__ = ["message", "writer"]

#: ``(data, out) -> bool``: appends the content of one element of a type to ``out``; False,
#: having appended anything or nothing, when ``data`` is not something it takes.
Writer = Callable[[Any, "list[str]"], bool]
#: ``payload -> bytes | None``
Message = Callable[[Any], Union[bytes, None]]

# ---------------------------------------------------------------- text

# Text written as it is: XML 1.0 characters (of the C0 controls only tab and newline; no
# surrogate, no U+FFFE or U+FFFF) but for those the serializer escapes (& < > and CR).
_PLAIN = re.compile(
    r"[\t\n\x20-\x25\x27-\x3b\x3d\x3f-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]*").fullmatch
# Text XML can carry at all; lxml refuses anything else, and the generic engine says so.
_XML_TEXT = re.compile(r"[\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]*").fullmatch


def escaped(text: str) -> str | None:
    """``text`` as the serializer writes it in an element; None for text XML cannot carry."""
    if _PLAIN(text):
        return text
    if _XML_TEXT(text) is None:
        return None
    return (text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace("\r", "&#13;"))


def formatted(kind: ValueType[object], value: object) -> str | None:
    """``value`` written as ``kind`` says, escaped; None for a value ``kind`` refuses (the
    generic engine says why)."""
    try:
        text = kind.format(value)
    except ValueError:
        return None
    return escaped(text)


# Every interval of an event or a report has a duration, and they are the same few ones
# ("PT1H"); timedelta is immutable and equal ones are written alike. Bounded.
_DURATIONS: dict[timedelta, str] = {}
_DURATIONS_MAX = 256


def duration(value: object) -> str | None:
    """A duration's text (see :func:`formatted`), kept when it is a timedelta."""
    text = formatted(v.DURATION, value)
    if text is not None and value.__class__ is timedelta and len(_DURATIONS) < _DURATIONS_MAX:
        _DURATIONS[value] = text
    return text


def _tag(qname: str) -> str:
    """``prefix:local`` of a qname, as the serializer writes it below the root."""
    name = pretty(qname)
    if name.startswith("{"):
        raise TypeError(f"{qname}: the namespace has no prefix on the root")
    return name


def _opening(steps: tuple[str, ...]) -> str:
    return "".join(f"<{_tag(step)}>" for step in steps)


def _closing(steps: tuple[str, ...]) -> str:
    return "".join(f"</{_tag(step)}>" for step in reversed(steps))


# ---------------------------------------------------------------- generation

# (id(type), extra keys) -> (type, its writer); holding the type keeps its id from being reused.
_COMPILED: dict[tuple[int, frozenset[str]], tuple[ComplexType, Writer]] = {}
# The types being generated, to refuse a type that contains itself (2.0b has none).
_PENDING: set[int] = set()
# Generation reads and writes the tables; writing afterwards reads only the generated functions.
_LOCK = threading.RLock()
# payload name -> its function (see message()).
_MESSAGES: dict[str, Message] = {}


def writer(ctype: ComplexType, extra_keys: frozenset[str] = frozenset()) -> Writer:
    """The compiled writer of ``ctype``, whose dicts may also hold ``extra_keys`` (the ``kind``
    of a substitution group's member)."""
    entry = _COMPILED.get((id(ctype), extra_keys))
    if entry is None:
        with _LOCK:
            entry = _COMPILED.get((id(ctype), extra_keys))
            if entry is None:
                return _generate(ctype, extra_keys)
    return entry[1]


def message(payload_name: str) -> Message | None:
    """``payload -> bytes | None`` for the payload ``payload_name`` (see the module docstring);
    None for a name the codec does not know."""
    found = _MESSAGES.get(payload_name)
    if found is None:
        ctype = PAYLOAD_TYPES.get(payload_name)
        if ctype is None:
            return None
        with _LOCK:
            found = _MESSAGES.get(payload_name)
            if found is None:
                found = _MESSAGES[payload_name] = _message(payload_name, ctype)
    return found


def _message(payload_name: str, ctype: ComplexType) -> Message:
    root, element = payload_tree(payload_name)
    empty = etree.tostring(root, xml_declaration=True, encoding="UTF-8")
    marker = "compiled-writer-marker"  # a text without markup, not in the head or the tail
    element.text = marker
    head, tail = etree.tostring(root, xml_declaration=True, encoding="UTF-8").decode("utf-8") \
        .split(marker)
    write = writer(ctype)

    def encode(payload: Any) -> bytes | None:
        out = [head]
        if not write(payload, out):
            return None
        if len(out) == 1:
            return empty
        out.append(tail)
        return "".join(out).encode("utf-8")

    encode.__qualname__ = f"encode<{payload_name}>"
    return encode


class _Write:
    """A call ``w(...)`` appending constants and text variables, joined into one f-string."""

    def __init__(self, depth: int, parts: list[tuple[bool, str]]) -> None:
        self.depth = depth
        self.parts = parts  # (is a variable, constant text or variable name)

    def render(self) -> str:
        if len(self.parts) == 1 and self.parts[0][0]:
            return f"w({self.parts[0][1]})"
        template = "".join("{" + text + "}" if variable else
                           text.replace("{", "{{").replace("}", "}}")
                           for variable, text in self.parts)
        if not any(variable for variable, _ in self.parts):
            return f"w({template.replace('{{', '{').replace('}}', '}')!r})"
        return f"w(f{template!r})"


class _Source(GeneratedSource):
    """The generated source of one writer and the constants it refers to by name.

    Writes are joined: a write goes into the previous one when only code that writes nothing
    (reading values, returning False) came between them at the same or a deeper level, since on
    False the output is thrown away anyway."""

    def __init__(self, ctype: ComplexType) -> None:
        super().__init__({
            "formatted": formatted, "duration": duration, "DURATIONS": _DURATIONS,
            "plain": _PLAIN, "timedelta": timedelta, "datetime": datetime, "UTC": timezone.utc,
            "format_datetime": format_datetime,
        })
        self.ctype = ctype
        self.items: list[tuple[int, str] | _Write] = []
        self.pending: _Write | None = None  # the last write, while a write may join it

    def add(self, depth: int, block: str, *, writes: bool = False) -> None:
        """Lines of code; ``writes`` when they append to ``out``."""
        for line in block.splitlines():
            text = line.lstrip(" ")
            level = depth + (len(line) - len(text)) // 4
            self.items.append((level, text))
            if writes or (self.pending is not None and level < self.pending.depth):
                self.pending = None

    def write(self, depth: int, *parts: str | tuple[bool, str]) -> None:
        """Append constants (str) and variables (``(True, name)``) to ``out``."""
        found = [part if isinstance(part, tuple) else (False, part) for part in parts]
        found = [part for part in found if part[0] or part[1]]
        if not found:
            return
        pending = self.pending
        if pending is not None and pending.depth == depth:
            self.items.remove(pending)
            pending.parts.extend(found)
            self.items.append(pending)
            return
        self.pending = _Write(depth, found)
        self.items.append(self.pending)

    def barrier(self) -> None:
        """The next write starts a new item of ``out``."""
        self.pending = None

    def writer_of(self, ctype: ComplexType, extra_keys: frozenset[str] = frozenset()) -> str:
        """The name under which this writer calls the writer of ``ctype``."""
        return self.const("write", _inner_writer(ctype, extra_keys))

    def source(self) -> str:
        return "".join("    " * (item.depth if isinstance(item, _Write) else item[0])
                       + (item.render() if isinstance(item, _Write) else item[1]) + "\n"
                       for item in self.items)


def _inner_writer(ctype: ComplexType, extra_keys: frozenset[str]) -> Writer:
    if id(ctype) in _PENDING:
        raise TypeError(f"{ctype.name} contains itself: recursive types are not supported")
    return writer(ctype, extra_keys)


def _generate(ctype: ComplexType, extra_keys: frozenset[str]) -> Writer:
    _PENDING.add(id(ctype))
    try:
        src = _Source(ctype)
        keys = src.const("keys", ctype.keys | extra_keys)
        # The generic engine takes any dict and counts a key whose value is None as absent.
        src.add(1, f"""\
if data.__class__ is not dict or not {keys}.issuperset(data):
    return False
w = out.append""")
        _members(src, 1, ctype.members)
        src.add(1, "return True")
        code = "def write(data, out):\n" + src.source()
        exec(compile(code, f"<compiled writer: {ctype.name}>", "exec"), src.namespace)
        compiled = cast(Writer, src.namespace["write"])
        compiled.__qualname__ = f"write<{ctype.name}>"
    finally:
        _PENDING.discard(id(ctype))
    _COMPILED[(id(ctype), extra_keys)] = (ctype, compiled)
    return compiled


def _may_be_empty(ctype: ComplexType) -> bool:
    """Whether an element of ``ctype`` may have no content (the serializer writes ``<x/>``)."""
    for member in ctype.members:
        if isinstance(member, (Nil, Flatten)):
            return False
        if isinstance(member, Choice):
            if not member.optional:
                return False
        elif member.many_at == 0:
            if member.min_items:
                return False
        elif not member.optional:  # a single value, or a list's wrapper, always written
            return False
    return True


def _members(src: _Source, depth: int, members: tuple[Member, ...]) -> None:
    for member in members:
        if isinstance(member, Nil):
            src.write(depth, f'<{_tag(member.qname)} {_tag(f"{{{XSI}}}nil")}="true"/>')
        elif isinstance(member, Flatten):
            flattened = member.type.members  # its keys were checked with the parent's
            _element(src, depth, member.qname, _may_be_empty(member.type),
                     lambda inner: _members(src, inner, flattened))
        elif isinstance(member, Choice):
            found = [src.fresh("value") for _ in member.options]
            for value, option in zip(found, member.options):
                src.add(depth, f"{value} = data.get({option.key!r})")
            present = " + ".join(f"({value} is not None)" for value in found)
            src.add(depth, f"if {present} > 1:\n    return False")
            for number, (value, option) in enumerate(zip(found, member.options)):
                src.add(depth, f"{'if' if number == 0 else 'elif'} {value} is not None:")
                _field(src, depth + 1, option, value)
            if not member.optional:
                src.add(depth, "else:\n    return False")
        else:
            value = src.fresh("value")
            src.add(depth, f"{value} = data.get({member.key!r})")
            _field(src, depth, member, value)


def _field(src: _Source, depth: int, member: Field, value: str) -> None:
    """Write ``member``, whose value (None for absent) is in the variable ``value``."""
    if member.many_at is None:
        if member.optional:
            src.add(depth, f"if {value} is not None:")
            depth += 1
        else:
            src.add(depth, f"if {value} is None:\n    return False")
        _path(src, depth, member.path, value, member.type)
        return
    # The generic engine takes any list or tuple (None is an empty one).
    src.add(depth, f"""\
if {value} is None:
    {value} = ()
elif {value}.__class__ is not list and {value}.__class__ is not tuple:
    return False""")
    item = src.fresh("item")
    if member.many_at == 0:
        if member.min_items:
            src.add(depth, f"if len({value}) < {member.min_items}:\n    return False")
        src.add(depth, f"for {item} in {value}:")
        _path(src, depth + 1, member.path, item, member.type)
        return
    wrappers = member.path[:member.many_at]
    if member.optional:  # no items: no wrapper
        src.add(depth, f"if {value}:")
        depth += 1
    elif member.min_items:
        src.add(depth, f"if len({value}) < {member.min_items}:\n    return False")
    else:  # no items: an empty wrapper
        src.add(depth, f"if not {value}:")
        src.write(depth + 1, _opening(wrappers[:-1]), f"<{_tag(wrappers[-1])}/>",
                  _closing(wrappers[:-1]))
        src.add(depth, "else:")
        depth += 1
    if member.optional and member.min_items > 1:
        src.add(depth, f"if len({value}) < {member.min_items}:\n    return False")
    src.write(depth, _opening(wrappers))
    src.add(depth, f"for {item} in {value}:")
    _path(src, depth + 1, member.path[member.many_at:], item, member.type)
    src.write(depth, _closing(wrappers))


def _element(src: _Source, depth: int, qname: str, may_be_empty: bool,
             content: Callable[[int], None]) -> None:
    """Write the element ``qname`` around what ``content(depth)`` writes: as ``<x/>`` when that
    may be nothing and is."""
    tag = _tag(qname)
    if not may_be_empty:
        src.write(depth, f"<{tag}>")
        content(depth)
        src.write(depth, f"</{tag}>")
        return
    mark = src.fresh("mark")
    src.add(depth, f"{mark} = len(out)", writes=True)
    src.write(depth, f"<{tag}>")
    src.barrier()
    content(depth)
    src.add(depth, f"if len(out) == {mark} + 1:\n    out[{mark}] = {f'<{tag}/>'!r}\nelse:",
            writes=True)
    src.write(depth + 1, f"</{tag}>")


def _path(src: _Source, depth: int, steps: tuple[str, ...], value: str, kind: object) -> None:
    """Write the value in the variable ``value`` (not None) through the elements ``steps``."""
    if isinstance(kind, ValueType):
        text = _text(src, depth, value, kind)
        src.write(depth, _opening(steps), (True, text), _closing(steps))
    elif isinstance(kind, ComplexType):
        src.write(depth, _opening(steps[:-1]))
        call = f"if not {src.writer_of(kind)}({value}, out):\n    return False"
        _element(src, depth, steps[-1], _may_be_empty(kind),
                 lambda inner: src.add(inner, call, writes=True))
        src.write(depth, _closing(steps[:-1]))
    elif isinstance(kind, Substitution):
        # {"kind": <a member's local name>, ...}: the first member of that name, as by_kind().
        members: dict[str, tuple[str, Writer, str, str, bool]] = {}
        for qname, member_type in kind.members:
            tag = _tag(qname)
            members.setdefault(local_name(qname), (
                f"<{tag}>", _inner_writer(member_type, frozenset({"kind"})), f"</{tag}>",
                f"<{tag}/>", _may_be_empty(member_type)))
        chosen, mark = src.fresh("member"), src.fresh("mark")
        src.add(depth, f"""\
if {value}.__class__ is not dict:
    return False
{chosen} = {value}.get("kind")
if {chosen}.__class__ is not str:
    return False
{chosen} = {src.const('members', members)}.get({chosen})
if {chosen} is None:
    return False
{mark} = len(out)
w({chosen}[0])
if not {chosen}[1]({value}, out):
    return False
if {chosen}[4] and len(out) == {mark} + 1:
    out[{mark}] = {chosen}[3]
else:
    w({chosen}[2])""", writes=True)
    else:
        raise TypeError(f"{src.ctype.name}: no writer for the value type {kind!r}")


def _fast(src: _Source, kind: ValueType[object], value: str) -> tuple[str, str] | None:
    """``(condition, expression)``: when the condition holds, the expression is the text
    ``formatted(kind, value)`` would give, without the call; None for kinds without one."""
    if isinstance(kind, v.Enum):
        if not all(_PLAIN(token) for token in kind.values):
            return None
        return (f"{value}.__class__ is str and {value} in "
                f"{src.const('tokens', frozenset(kind.values))}", value)
    if kind is v.STRING or kind is v.ANY_URI:
        return f"{value}.__class__ is str and plain({value})", value
    if kind is v.FLOAT:  # finite: inf - inf and nan - nan are nan
        return f"{value}.__class__ is float and {value} - {value} == 0.0", f"repr({value})"
    if kind is v.UNSIGNED_INT or kind is v.CONFIDENCE:
        maximum = cast(Any, kind).maximum
        return f"{value}.__class__ is int and 0 <= {value} <= {maximum}", f"str({value})"
    if kind is v.RESPONSE_CODE:
        return f"{value}.__class__ is int and 0 <= {value} <= 999", f"'%03d' % {value}"
    if kind is v.BOOLEAN:
        return f"{value}.__class__ is bool", f"'true' if {value} else 'false'"
    if kind is v.DATE_TIME:  # already in UTC: no conversion to fail
        return (f"{value}.__class__ is datetime and {value}.tzinfo is UTC",
                f"format_datetime({value})")
    return None


def _text(src: _Source, depth: int, value: str, kind: ValueType[object]) -> str:
    """Put the text of ``value`` in a new variable, or return False; its name."""
    text = src.fresh("text")
    slow = f"""\
{text} = formatted({src.const('kind', kind)}, {value})
if {text} is None:
    return False"""
    if kind is v.DURATION:
        src.add(depth, f"""\
{text} = DURATIONS.get({value}) if {value}.__class__ is timedelta else None
if {text} is None:
    {text} = duration({value})
    if {text} is None:
        return False""")
        return text
    fast = _fast(src, kind, value)
    if fast is None:
        src.add(depth, slow)
    else:
        condition, expression = fast
        src.add(depth, f"if {condition}:\n    {text} = {expression}\nelse:")
        src.add(depth + 1, slow)
    return text
