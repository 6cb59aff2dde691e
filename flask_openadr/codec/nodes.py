"""What the decoders read from an lxml node, shared by the compiled decoder and the error walk."""
from __future__ import annotations

from lxml import etree

from .fields import pretty
from .values import ValueProblem

#: The most elements any one element of a message may hold: in 2.0b only a repeated element
#: (eventResponse, oadrReport, interval, reportRequestID, ...) can come near it. A list longer
#: than this is refused with the paired reply (454), so a message of a megabyte of IDs costs no
#: more than this many of them downstream.
MAX_REPEATED = 1000

#: How much of a name an error message repeats: a tag of a namespace the schema does not know is
#: printed whole (``{uri}local``), and a hostile peer chooses both parts.
SHOWN_NAME_CHARS = 50


def named(qname: str) -> str:
    """``prefix:local`` of a qname for an error message, cut to :data:`SHOWN_NAME_CHARS`."""
    name = pretty(qname)
    return name if len(name) <= SHOWN_NAME_CHARS else name[:SHOWN_NAME_CHARS - 3] + "..."


def simple_text(element: etree._Element) -> str:
    """The text of an element of simple type that holds more than text: comments and processing
    instructions carry nothing and are skipped (``1<!-- c -->.5`` reads ``1.5``).

    :raises ValueProblem: for an element child (simple types hold none) or an entity reference
        (the parser keeps them unexpanded).
    """
    parts = [element.text or ""]
    for child in element:
        if child.tag.__class__ is str:
            raise ValueProblem(f"unexpected element {named(child.tag)} inside a simple value")
        if child.tag is etree.Entity:
            raise ValueProblem("entity references are not allowed")
        parts.append(child.tail or "")
    return "".join(parts)
