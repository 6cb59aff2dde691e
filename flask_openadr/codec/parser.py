"""The hardened XML parser: size limit first, no DTD, no entities, no network, one parser per thread."""
from __future__ import annotations

import re
import threading

from lxml import etree

from ..errors import MalformedMessage
from .values import shown

__all__ = ["parse"]

# lxml parsers are not thread-safe, so each thread gets its own; nothing else is shared.
_local = threading.local()


def _new_parser() -> etree.XMLParser:
    # Every option is spelled out so that a change of lxml defaults cannot weaken the parser.
    return etree.XMLParser(
        encoding=None,
        attribute_defaults=False,   # would need the DTD
        dtd_validation=False,
        load_dtd=False,             # never fetch or read an external DTD
        no_network=True,
        ns_clean=False,
        recover=False,              # a broken document is an error, not a guess
        schema=None,
        huge_tree=False,            # keep libxml2's depth and size limits
        remove_blank_text=False,    # signed content must stay byte-for-byte as sent
        resolve_entities=False,     # neither internal nor external entities are expanded
        remove_comments=False,
        remove_pis=False,
        strip_cdata=True,
        collect_ids=False,          # the signature layer resolves Id references itself
        compact=True,
    )


# libxml2 reads a DOCTYPE's internal subset while it parses, whatever load_dtd says: a parameter
# entity naming file:///dev/zero never returns, and one naming a file that exists fails differently
# from one that does not. So a DOCTYPE is refused from the bytes, before libxml2 sees any of them.
_DOCTYPE = b"<!DOCTYPE"
# That byte scan only works for encodings in which "<!DOCTYPE" is those ASCII bytes. A document
# declared in another one (UTF-16, UTF-7, EBCDIC) could hide it, so those are refused too; every
# OpenADR peer sends UTF-8.
_ASCII_ENCODINGS = {"utf-8", "utf8", "us-ascii", "ascii", "iso-8859-1", "latin1", "latin-1"}
_DECLARATION = re.compile(rb"<\?xml[^>]*")
_DECLARED_ENCODING = re.compile(rb"encoding\s*=\s*[\"']([^\"'>]*)[\"']")
_UTF8_BOM = b"\xef\xbb\xbf"


def _refuse_hidden_dtd(body: bytes) -> None:
    start = (body[len(_UTF8_BOM):] if body.startswith(_UTF8_BOM) else body).lstrip(b" \t\r\n")
    if not start.startswith(b"<"):
        raise MalformedMessage("the body must be an XML document in UTF-8")
    # libxml2 also guesses UTF-16 and UTF-32 from the first bytes, with no BOM and no
    # declaration ("<\0?\0x\0..."), and such a document hides its DOCTYPE from the scan below.
    # XML cannot carry U+0000, so a NUL byte never belongs in a UTF-8 document: refuse it.
    if b"\0" in body:
        raise MalformedMessage("the body holds NUL bytes; send XML in UTF-8")
    # Not sliced: padding must not push the encoding out of sight ([^>] keeps this linear).
    declaration = _DECLARATION.match(start)
    if declaration and b"encoding" in declaration.group(0):
        declared = _DECLARED_ENCODING.search(declaration.group(0))
        name = declared.group(1).decode("latin-1") if declared else ""
        if name.lower() not in _ASCII_ENCODINGS:
            raise MalformedMessage(f"encoding {shown(name)} is not accepted; send UTF-8")
    if _DOCTYPE in body:
        raise MalformedMessage("DOCTYPE declarations are not allowed")


def _parser() -> etree.XMLParser:
    parser = getattr(_local, "parser", None)
    if parser is None:
        parser = _local.parser = _new_parser()
    return parser


def parse(body: bytes, *, max_bytes: int | None = None) -> etree._Element:
    """Parse an inbound message body with the hardened parser.

    :param body: the raw request body (bytes, never a decoded str).
    :param max_bytes: refuse larger bodies before parsing anything.
    :returns: the root element.
    :raises MalformedMessage: over the size limit, not well-formed, or carrying a DOCTYPE.
    """
    if not isinstance(body, (bytes, bytearray, memoryview)):
        raise TypeError(f"body must be bytes, got {type(body).__name__}")
    body = bytes(body)
    if max_bytes is not None and len(body) > max_bytes:
        raise MalformedMessage(f"body is {len(body)} bytes, over the limit of {max_bytes} bytes")
    if not body.strip():
        raise MalformedMessage("body is empty (expected an OpenADR XML document)")
    _refuse_hidden_dtd(body)
    try:
        root = etree.fromstring(body, _parser())
    except etree.XMLSyntaxError as error:
        raise MalformedMessage(f"not well-formed XML: {_reason(error)}") from None
    except (ValueError, etree.LxmlError) as error:
        raise MalformedMessage(f"not acceptable XML: {error}") from None
    docinfo = root.getroottree().docinfo
    # A DOCTYPE is never legitimate in OpenADR; refusing it outright closes entity tricks even
    # though the parser would not expand them.
    # (lxml-stubs 0.5 leave out DocInfo.doctype, which lxml has had since 2.0.)
    if (docinfo.doctype  # type: ignore[union-attr]
            or docinfo.internalDTD is not None or docinfo.externalDTD is not None):
        raise MalformedMessage("DOCTYPE declarations are not allowed")
    if next(root.iter(etree.Entity), None) is not None:
        raise MalformedMessage("entity references are not allowed")
    return root


def _reason(error: etree.XMLSyntaxError) -> str:
    text = str(error.msg if getattr(error, "msg", None) else error)
    return text if len(text) <= 160 else text[:157] + "..."
