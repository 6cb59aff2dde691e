"""The decoder: one generated Python function per complex type of the model.

Each complex type is compiled once, when first used, into a function ``element -> dict | None``
that walks the element's children in one pass, every member inlined, every shape of the model
handled: values directly in the element or below collapsed wrappers, wrappers that may be empty
(no value), lists of values or of elements, lists held by a wrapper, choices, flattened children,
nil elements and substitution groups. Comments, processing instructions and whitespace between
elements are skipped as the generic walk skips them.

A decoder returns ``None`` for anything it does not accept: text where only elements belong,
an entity reference, an unknown, missing or misplaced element, a value that does not convert (or
that the VTN cannot honour), a list of more than ``limit`` elements (by default
:data:`~.nodes.MAX_REPEATED`). It does not say why:
the caller then walks the element with the generic engine of :mod:`.convert`, whose job is to
name the element and the value that is wrong. ``tests/test_codec_fast_path.py`` checks on every
payload that both accept the same input and give the same dict.

A Python function per type, with no call per member, is what makes the decoder fast: a report
of 100 data points decodes in less than half the time of the generic walk.
"""
from __future__ import annotations

import threading
from typing import Any, Callable, Union, cast

from lxml import etree

from .fields import Choice, ComplexType, Field, Flatten, Member, Nil, Substitution, local_name
from .nodes import MAX_REPEATED, simple_text
from .values import ValueProblem, ValueType

__all__ = ["decoder"]

#: What :func:`only_child` answers for a wrapper that holds no element (an absent inner value).
ABSENT = object()

#: ``(element, limit=MAX_REPEATED) -> dict | None``
Decoder = Callable[..., Union["dict[str, Any]", None]]

# id(type) -> (type, its decoder); holding the type keeps its id from being reused.
_COMPILED: dict[int, tuple[ComplexType, Decoder]] = {}
# The types being generated, to refuse a type that contains itself (2.0b has none; a decoder
# would call its own before it exists).
_PENDING: set[int] = set()
# Generation reads and writes both tables; decoding afterwards reads only the generated functions.
_LOCK = threading.RLock()


def decoder(ctype: ComplexType) -> Decoder:
    """The compiled decoder of ``ctype``: ``(element, limit=MAX_REPEATED) -> dict``, or ``None``
    when the element is not acceptable (the generic walk then says why) or holds a list of more
    than ``limit`` elements."""
    entry = _COMPILED.get(id(ctype))
    if entry is None:
        with _LOCK:
            entry = _COMPILED.get(id(ctype))
            if entry is None:
                return _generate(ctype)
    return entry[1]


# The element children of an element whose type has element-only content, and their tags (lxml
# builds a new string on every ``.tag``: they are read once). This is the one place that says
# what such an element may hold besides elements: whitespace, comments and processing
# instructions, which are dropped. Every generated decoder starts with it, held lists use it,
# and so does elements() below.
_ELEMENTS = """\
text = {element}.text
if text and not text.isspace():
    return None
{children} = list({element})
{tags} = []
skipped = False
for child in {children}:
    tag = child.tag
    if tag.__class__ is str:
        {tags}.append(tag)
    elif tag is Entity:
        return None
    else:
        skipped = True
    tail = child.tail
    if tail and not tail.isspace():
        return None
if skipped:
    {children} = [child for child in {children} if child.tag.__class__ is str]
"""


def _indent(block: str, depth: int) -> str:
    pad = "    " * depth
    return "".join(pad + line + "\n" if line else "\n" for line in block.splitlines())


def _function(name: str, params: str, body: str, namespace: dict[str, Any]) -> Decoder:
    source = f"def {name}({params}):\n{body}"
    exec(compile(source, f"<compiled decoder: {name}>", "exec"), namespace)
    return cast(Decoder, namespace[name])


#: ``element -> (children, tags)``, or None: the children of a collapsed wrapper.
elements = _function(
    "elements", "element",
    _indent(_ELEMENTS.format(element="element", children="children", tags="tags")
            + "return children, tags", 1),
    {"Entity": etree.Entity})


def only_child(element: etree._Element, step: str) -> object:
    """The one child ``step`` of a collapsed wrapper; :data:`ABSENT` when the wrapper holds no
    element, None when it holds anything else."""
    found = elements(element)
    if found is None:
        return None
    children, tags = found
    if not tags:
        return ABSENT
    if len(tags) == 1 and tags[0] == step:
        return children[0]
    return None


class GeneratedSource:
    """What the generated code of one function refers to by name: the constants of
    ``namespace``, and local names made unique with :meth:`fresh` (the compiled decoder's
    source and the compiled writer's, :mod:`.writer`, both build on it)."""

    def __init__(self, namespace: dict[str, Any]) -> None:
        self.namespace = namespace
        self.names = 0

    def fresh(self, prefix: str) -> str:
        """A local variable name not used before in this function."""
        self.names += 1
        return f"{prefix}_{self.names}"

    def const(self, prefix: str, value: object) -> str:
        """The name of ``value`` in the generated code."""
        name = self.fresh(prefix)
        self.namespace[name] = value
        return name


class _Source(GeneratedSource):
    """The generated source of one decoder and the constants it refers to by name."""

    def __init__(self, ctype: ComplexType) -> None:
        super().__init__({"ValueProblem": ValueProblem, "Entity": etree.Entity,
                          "simple_text": simple_text, "only_child": only_child,
                          "ABSENT": ABSENT, "MAX_REPEATED": MAX_REPEATED})
        self.ctype = ctype
        self.lines: list[str] = []

    def add(self, depth: int, block: str) -> None:
        self.lines.append(_indent(block, depth))

    def starts(self, tag: str, member: Member) -> str:
        """The test that ``tag`` starts ``member``. A tag read from lxml is a new string, so
        ``in`` a set would hash it; ``==`` compares it with the one name most members have."""
        if len(member.first) == 1:
            (name,) = member.first
            return f"{tag} == {self.const('name', name)}"
        return f"{tag} in {self.const('first', member.first)}"

    def decoder_of(self, ctype: ComplexType) -> str:
        """The name under which this decoder calls the decoder of ``ctype``."""
        if id(ctype) in _PENDING:
            raise TypeError(f"{ctype.name} contains itself: recursive types are not supported")
        return self.const("decode", decoder(ctype))


def _generate(ctype: ComplexType) -> Decoder:
    _PENDING.add(id(ctype))
    try:
        src = _Source(ctype)
        src.add(0, _ELEMENTS.format(element="element", children="children", tags="tags"))
        src.add(0, "count = len(tags)\npos = 0\nout = {}")
        for member in ctype.members:
            _member(src, 0, member)
        src.add(0, "return out if pos == count else None")
        compiled = _function("decode", "element, limit=MAX_REPEATED",
                             _indent("".join(src.lines), 1), src.namespace)
        compiled.__qualname__ = f"decode<{ctype.name}>"
    finally:
        _PENDING.discard(id(ctype))
    _COMPILED[id(ctype)] = (ctype, compiled)
    return compiled


def _member(src: _Source, depth: int, member: Member) -> None:
    """Decode ``member`` from ``children[pos:]``, leaving ``pos`` after it."""
    if isinstance(member, Field) and member.many_at == 0:
        _present(src, depth, member)  # the loop takes none or more; min_items decides
        return
    src.add(depth, f"if pos < count and {src.starts('tags[pos]', member)}:")
    if isinstance(member, Choice):
        src.add(depth + 1, "tag = tags[pos]")
        for number, option in enumerate(member.options):
            keyword = "if" if number == 0 else "elif"
            src.add(depth + 1, f"{keyword} {src.starts('tag', option)}:")
            _present(src, depth + 2, option)
    else:
        _present(src, depth + 1, member)
    if isinstance(member, (Flatten, Nil)) or not member.optional:
        src.add(depth, "else:\n    return None")
    elif isinstance(member, Field) and member.many_at is not None:
        src.add(depth, f"else:\n    out[{member.key!r}] = []")


def _present(src: _Source, depth: int, member: Member) -> None:
    """Decode ``member``, whose first element is ``children[pos]``."""
    if isinstance(member, Nil):
        # Its content is ignored (it is always nil on the way out), unless it is too much.
        src.add(depth, "if len(children[pos]) > limit:\n    return None\npos += 1")
        return
    if isinstance(member, Flatten):
        src.add(depth, f"""\
value = {src.decoder_of(member.type)}(children[pos], limit)
if value is None:
    return None
out.update(value)
pos += 1""")
        return
    if not isinstance(member, Field):
        raise TypeError(f"{src.ctype.name}: no decoder for the member {member!r}")
    if member.inner_optional and member.many_at is not None:
        raise TypeError(f"{src.ctype.name}.{member.key}: a list whose items may be absent")
    key = repr(member.key)
    if member.many_at is None:
        element = src.fresh("element")
        src.add(depth, f"{element} = children[pos]")
        _read(src, depth, element, member.path[1:], member.type, member.inner_optional,
              f"out[{key}] = {{}}")
        src.add(depth, "pos += 1")
        return
    items = src.fresh("items")
    if member.many_at == 0:
        element, end = src.fresh("element"), src.fresh("end")
        # Past the limit, one element more is enough to refuse the list: none is decoded in vain.
        src.add(depth, f"""\
{items} = []
{end} = count if count - pos <= limit else pos + limit + 1
while pos < {end} and {src.starts('tags[pos]', member)}:
    {element} = children[pos]""")
        _read(src, depth + 1, element, member.path[1:], member.type, False,
              f"{items}.append({{}})")
        src.add(depth, f"""\
    pos += 1
if len({items}) < {member.min_items} or len({items}) > limit:
    return None
out[{key}] = {items}""")
        return
    # A list held by a wrapper (strm:intervals/ei:interval+), which may itself be collapsed.
    holder = src.fresh("holder")
    src.add(depth, f"{holder} = children[pos]")
    depth, holder = _descend(src, depth, holder, member.path[1:member.many_at], False)
    held, held_tags, item, item_tag = (src.fresh(name) for name in ("held", "tags", "item", "tag"))
    src.add(depth, _ELEMENTS.format(element=holder, children=held, tags=held_tags))
    src.add(depth, f"""\
if len({held}) < {member.min_items} or len({held}) > limit:
    return None
{items} = []
for {item}, {item_tag} in zip({held}, {held_tags}):
    if {item_tag} != {src.const('item', member.path[member.many_at])}:
        return None""")
    _read(src, depth + 1, item, member.path[member.many_at + 1:], member.type, False,
          f"{items}.append({{}})")
    src.add(depth, f"out[{key}] = {items}\npos += 1")


def _descend(src: _Source, depth: int, element: str, steps: tuple[str, ...],
             optional: bool) -> tuple[int, str]:
    """Go down through collapsed wrappers, each holding exactly the element of the next step.
    With ``optional``, a wrapper holding nothing means no value: the code that follows is nested
    under that condition. Returns the depth and the variable of the innermost element."""
    for step in steps:
        if not isinstance(step, str):
            raise TypeError(f"{src.ctype.name}: a substitution group below a wrapper")
        child, name = src.fresh("element"), src.const("step", step)
        refused = f"{child} is None" if optional else f"{child} is None or {child} is ABSENT"
        # Inline for the usual form (the one child, maybe whitespace around it); only_child()
        # for everything else.
        src.add(depth, f"""\
if len({element}) == 1 and ({child} := {element}[0]).tag == {name}:
    text = {element}.text
    if text and not text.isspace():
        return None
    text = {child}.tail
    if text and not text.isspace():
        return None
else:
    {child} = only_child({element}, {name})
    if {refused}:
        return None""")
        if optional:
            src.add(depth, f"if {child} is not ABSENT:")
            depth += 1
        element = child
    return depth, element


def _read(src: _Source, depth: int, element: str, steps: tuple[str, ...], kind: object,
          optional: bool, store: str) -> None:
    """Read the value below ``element`` through the wrappers ``steps`` and run ``store`` (a
    statement with ``{}`` for the value) on it."""
    depth, element = _descend(src, depth, element, steps, optional)
    if isinstance(kind, ValueType):
        parse = src.const("parse", kind.parse)
        statement = store.format(
            f"{parse}(simple_text({element}) if len({element}) else {element}.text or '')")
        src.add(depth, f"try:\n    {statement}\nexcept ValueProblem:\n    return None")
        return
    value = src.fresh("value")
    if isinstance(kind, ComplexType):
        src.add(depth, f"""\
{value} = {src.decoder_of(kind)}({element}, limit)
if {value} is None:
    return None""")
    elif isinstance(kind, Substitution):
        # {"kind": <the member's local name>, <its fields>...}, the member chosen by the tag.
        tag = src.fresh("tag")
        src.add(depth, f"{tag} = {element}.tag")
        for number, (qname, member_type) in enumerate(kind.members):
            keyword = "if" if number == 0 else "elif"
            src.add(depth, f"""\
{keyword} {tag} == {src.const('member', qname)}:
    {value} = {src.decoder_of(member_type)}({element}, limit)
    if {value} is None:
        return None
    {value} = {{"kind": {local_name(qname)!r}, **{value}}}""")
        src.add(depth, "else:\n    return None")
    else:
        raise TypeError(f"{src.ctype.name}: no decoder for the value type {kind!r}")
    src.add(depth, store.format(value))
