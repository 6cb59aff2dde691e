"""Compiled decoders: the fast path of :mod:`.convert` for the regular documents peers send.

Each complex type of the model is compiled once, into a generated Python function that walks
its elements without the generic engine's bookkeeping (common members inlined, the others as
closures). A compiled decoder accepts only the plainest form of the schema (no comments or text
between elements, every collapsed wrapper holding exactly its one child, every value parseable)
and returns ``None`` for anything else; the caller then decodes the same element with the generic
engine, which yields the same dict or the precise error. So the fast path changes speed, never
results: every input it takes, the generic engine takes identically
(``tests/test_codec_fast_path.py`` checks this).

Members the compiler does not specialise (flattened children, nil elements, substitution groups,
optional inner wrappers) are decoded by the generic engine from within the compiled decoder; an
error there makes the compiled decoder give up, and the caller's generic pass reports it.
"""
from __future__ import annotations

from typing import Callable

from ..errors import MalformedMessage
from .fields import Choice, ComplexType, Field
from .values import ValueProblem, ValueType

#: A member decoder: ``(children, tags, pos, out) -> new pos``, or -1 when the input is not plain.
#: ``tags`` are the children's tags (lxml builds a new string on every ``.tag``: read them once).
#: Generated decoders call these for the members they do not inline.
Step = Callable[[list, list, int, dict], int]

_FAIL = object()
_COMPILED: dict[int, Callable] = {}


def decoder(ctype: ComplexType) -> Callable:
    """The compiled decoder of ``ctype``: ``element -> dict``, or None when the element is not
    in the plain form (then decode it with the generic engine)."""
    key = id(ctype)
    compiled = _COMPILED.get(key)
    if compiled is None:
        # While it is generated, a type nested in itself decodes generically at inner levels.
        _COMPILED[key] = _no_fast_path
        compiled = _COMPILED[key] = _generate(ctype)
    return compiled


def _no_fast_path(element) -> None:
    return None


def _generic_member(member) -> Step:
    from . import convert  # the generic engine (which imports this module)

    def step(children: list, tags: list, pos: int, out: dict) -> int:
        try:
            return convert._decode_member(member, children, pos, out, "")
        except MalformedMessage:
            return -1

    return step


def _generic_value(kind) -> Callable:
    from . import convert

    def value(element):
        try:
            return convert._convert(element, kind, "")
        except MalformedMessage:
            return _FAIL

    return value


def _plain_children(element) -> tuple[list, list] | None:
    """The element children of a plain element (no text, comments or PIs between them), and
    their tags."""
    text = element.text
    if text and not text.isspace():
        return None
    children = list(element)
    tags = []
    for child in children:
        tag = child.tag
        if tag.__class__ is not str:
            return None
        tail = child.tail
        if tail and not tail.isspace():
            return None
        tags.append(tag)
    return children, tags


def _member(member) -> Step:
    if member.__class__ is Field:
        return _field(member)
    if isinstance(member, Choice):
        options = [(option.first, _member(option)) for option in member.options]
        first = member.first
        optional = member.optional

        def choice(children: list, tags: list, pos: int, out: dict) -> int:
            if pos < len(tags):
                tag = tags[pos]
                if tag in first:
                    for option_first, step in options:
                        if tag in option_first:
                            return step(children, tags, pos, out)
            return pos if optional else -1

        return choice
    return _generic_member(member)  # Flatten, Nil


def _terminal(kind) -> Callable:
    """``element -> value | _FAIL`` for the element holding a field's value."""
    if isinstance(kind, ValueType):
        parse = kind.parse

        def value(element):
            if len(element):
                return _FAIL
            try:
                return parse(element.text or "")
            except ValueProblem:
                return _FAIL

        return value
    if not isinstance(kind, ComplexType):
        return _generic_value(kind)  # a substitution group (emix:itemBase)
    compiled = None

    def complex_value(element):
        nonlocal compiled
        if compiled is None:
            compiled = decoder(kind)  # resolved when first used: types may nest recursively
        result = compiled(element)
        return _FAIL if result is None else result

    return complex_value


def _descend(steps: tuple, terminal: Callable) -> Callable:
    """``element -> value | _FAIL`` through collapsed wrappers, each holding exactly its child."""
    if not steps:
        return terminal
    if len(steps) == 1:
        (step,) = steps

        def one(element):
            if len(element) != 1:
                return _FAIL
            child = element[0]
            if child.tag != step:
                return _FAIL
            text = element.text
            if text and not text.isspace():
                return _FAIL
            tail = child.tail
            if tail and not tail.isspace():
                return _FAIL
            return terminal(child)

        return one

    def many(element):
        for step in steps:
            if len(element) != 1:
                return _FAIL
            child = element[0]
            if child.tag != step:
                return _FAIL
            text = element.text
            if text and not text.isspace():
                return _FAIL
            tail = child.tail
            if tail and not tail.isspace():
                return _FAIL
            element = child
        return terminal(element)

    return many


def _field(member: Field) -> Step:
    if member.inner_optional:
        return _generic_member(member)  # "absent means no value" wrappers are rare
    terminal = _terminal(member.type)
    key, first, optional, min_items = member.key, member.first, member.optional, member.min_items
    path, many_at = member.path, member.many_at

    if many_at is None:
        read = _descend(path[1:], terminal)

        def single(children: list, tags: list, pos: int, out: dict) -> int:
            if pos < len(tags) and tags[pos] in first:
                value = read(children[pos])
                if value is _FAIL:
                    return -1
                out[key] = value
                return pos + 1
            return pos if optional else -1

        return single

    if many_at == 0:
        read = _descend(path[1:], terminal)

        def repeated(children: list, tags: list, pos: int, out: dict) -> int:
            items = []
            end = len(tags)
            while pos < end and tags[pos] in first:
                value = read(children[pos])
                if value is _FAIL:
                    return -1
                items.append(value)
                pos += 1
            if len(items) < min_items:
                return -1
            out[key] = items
            return pos

        return repeated

    wrapper = _descend(path[1:many_at], lambda element: element)
    item_tag = path[many_at]
    read = _descend(path[many_at + 1:], terminal)

    def wrapped(children: list, tags: list, pos: int, out: dict) -> int:
        if pos >= len(tags) or tags[pos] not in first:
            if optional:
                out[key] = []
                return pos
            return -1
        holder = wrapper(children[pos])
        if holder is _FAIL:
            return -1
        plain = _plain_children(holder)
        if plain is None or len(plain[0]) < min_items:
            return -1
        items = []
        for child, tag in zip(*plain):
            if tag != item_tag:
                return -1
            value = read(child)
            if value is _FAIL:
                return -1
            items.append(value)
        out[key] = items
        return pos + 1

    return wrapped


# Code generation: the members of a type are decoded by one generated function, with the common
# members inlined (single values directly in the element or in one wrapper, child elements of a
# compiled type, lists of them, choices between them) and the others called as the closures
# above. The generated code does exactly what those closures would do; a Python function per
# type avoids a call per member, which is most of the cost on large reports.

# The prologue is _plain_children() inlined: one call fewer per element decoded. Change both
# together.
_PROLOGUE = """\
def decode(element):
    text = element.text
    if text and not text.isspace():
        return None
    children = list(element)
    tags = []
    for child in children:
        tag = child.tag
        if tag.__class__ is not str:
            return None
        tail = child.tail
        if tail and not tail.isspace():
            return None
        tags.append(tag)
    count = len(tags)
    pos = 0
    out = {}
"""

# Blocks run when tags[pos] is one of the member's first tags; they end with pos advanced.
_DIRECT = """\
value = children[pos]
if len(value):
    return None
try:
    out[{key!r}] = {parse}(value.text or "")
except ValueProblem:
    return None
pos += 1
"""

_WRAPPED = """\
wrapper = children[pos]
if len(wrapper) != 1:
    return None
value = wrapper[0]
if value.tag != {step} or len(value):
    return None
text = wrapper.text
if text and not text.isspace():
    return None
text = value.tail
if text and not text.isspace():
    return None
try:
    out[{key!r}] = {parse}(value.text or "")
except ValueProblem:
    return None
pos += 1
"""

_CHILD = """\
value = {sub}(children[pos])
if value is None:
    return None
out[{key!r}] = value
pos += 1
"""

_CALL = """\
pos = {member}(children, tags, pos, out)
if pos < 0:
    return None
"""

_LIST = """\
items = []
while pos < count and tags[pos] in {first}:
    value = {sub}(children[pos])
    if value is None:
        return None
    items.append(value)
    pos += 1
if len(items) < {min_items}:
    return None
out[{key!r}] = items
"""

_HELD_LIST = """\
holder = children[pos]
text = holder.text
if text and not text.isspace():
    return None
items = []
for child in holder:
    if child.tag != {item}:
        return None
    tail = child.tail
    if tail and not tail.isspace():
        return None
    value = {sub}(child)
    if value is None:
        return None
    items.append(value)
if len(items) < {min_items}:
    return None
out[{key!r}] = items
pos += 1
"""


def _indent(block: str, depth: int) -> str:
    pad = "    " * depth
    return "".join(pad + line + "\n" for line in block.splitlines())


class _Source:
    """The generated source of one decoder and the constants it refers to."""

    def __init__(self):
        self.lines = [_PROLOGUE]
        self.namespace: dict = {"ValueProblem": ValueProblem}

    def name(self, prefix: str, value) -> str:
        name = f"{prefix}_{len(self.namespace)}"
        self.namespace[name] = value
        return name


def _present(member, src: _Source) -> str:
    """The block decoding ``member`` once its first tag is at ``pos``."""
    if (member.__class__ is Field and member.many_at is None and not member.inner_optional
            and len(member.path) <= 2):
        if isinstance(member.type, ValueType):
            parse = src.name("parse", member.type.parse)
            if len(member.path) == 1:
                return _DIRECT.format(key=member.key, parse=parse)
            return _WRAPPED.format(key=member.key, parse=parse,
                                   step=src.name("step", member.path[1]))
        if isinstance(member.type, ComplexType) and len(member.path) == 1:
            return _CHILD.format(key=member.key, sub=src.name("sub", decoder(member.type)))
    return _CALL.format(member=src.name("member", _member(member)))


def _generate(ctype: ComplexType) -> Callable:
    src = _Source()
    for member in ctype.members:
        optional = getattr(member, "optional", False)
        if (member.__class__ is Field and member.many_at == 0 and len(member.path) == 1
                and isinstance(member.type, ComplexType)):
            src.lines.append(_indent(_LIST.format(
                key=member.key, first=src.name("first", member.first),
                sub=src.name("sub", decoder(member.type)), min_items=member.min_items), 1))
            continue
        if (member.__class__ is Field and member.many_at == 1 and len(member.path) == 2
                and isinstance(member.type, ComplexType)):
            # A wrapper holding a list (strm:intervals/ei:interval+).
            src.lines.append(_indent(f"if pos < count and tags[pos] in "
                                     f"{src.name('first', member.first)}:", 1))
            src.lines.append(_indent(_HELD_LIST.format(
                key=member.key, item=src.name("item", member.path[1]),
                sub=src.name("sub", decoder(member.type)), min_items=member.min_items), 2))
            absent = f"out[{member.key!r}] = []" if member.optional else "return None"
            src.lines.append(_indent(f"else:\n    {absent}", 1))
            continue
        if member.__class__ is Field and member.many_at is None:
            body = _indent(_present(member, src), 2)
        elif isinstance(member, Choice):
            body = _indent("tag = tags[pos]", 2)
            for number, option in enumerate(member.options):
                keyword = "if" if number == 0 else "elif"
                body += _indent(f"{keyword} tag in {src.name('first', option.first)}:", 2)
                body += _indent(_present(option, src), 3)
        else:  # lists, Flatten, Nil: the closure also handles their absence
            src.lines.append(_indent(_CALL.format(member=src.name("member", _member(member))), 1))
            continue
        src.lines.append(_indent(f"if pos < count and tags[pos] in "
                                 f"{src.name('first', member.first)}:", 1))
        src.lines.append(body)
        if not optional:
            src.lines.append(_indent("else:\n    return None", 1))
    src.lines.append(_indent("return out if pos == count else None", 1))
    code = compile("".join(src.lines), f"<compiled decoder of {ctype.name}>", "exec")
    exec(code, src.namespace)
    return src.namespace["decode"]
