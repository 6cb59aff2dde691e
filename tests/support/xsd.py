"""Validation against the official OpenADR 2.0b XSD shipped in the openleadr test dependency."""
from __future__ import annotations

import functools
from importlib import resources

from lxml import etree


@functools.lru_cache(maxsize=1)
def schema() -> etree.XMLSchema:
    path = resources.files("openleadr") / "schema" / "oadr_20b.xsd"
    return etree.XMLSchema(etree.parse(str(path)))


def assert_valid(document: bytes) -> None:
    """Fail with the schema's own error log when ``document`` is not valid 2.0b."""
    root = etree.fromstring(document)
    xsd = schema()
    if not xsd.validate(root):
        raise AssertionError(
            "not valid OpenADR 2.0b:\n"
            + "\n".join(str(e) for e in xsd.error_log)
            + "\n"
            + document.decode("utf-8", "replace")
        )
    assert b"schemaLocation" not in document
