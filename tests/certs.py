"""Client certificates for tests, made on the fly (see flask_openadr.testing.make_certificate)."""
from __future__ import annotations

from flask_openadr.testing import make_certificate as _make


def make_certificate(common_name: str = "ven") -> tuple[str, bytes]:
    """A (PEM certificate, DER certificate) pair with a fresh P-256 key."""
    certificate = _make(common_name)
    return certificate.pem, certificate.der
