"""The OpenADR 2.0b certificate fingerprint, and the client certificate of a WSGI request."""
from __future__ import annotations

import hashlib
from typing import Any, Mapping

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding


def fingerprint_from_der(der: bytes) -> str:
    """Last 10 bytes of SHA-256 over the DER certificate, upper-case hex pairs joined by colons
    (protocol notes 1.6): ``2E:55:12:81:B9:EE:9C:46:72:1D``."""
    digest = hashlib.sha256(der).digest()[-10:]
    return ":".join(f"{b:02X}" for b in digest)


def fingerprint_from_pem(pem: str | bytes) -> str:
    if isinstance(pem, str):
        pem = pem.encode("ascii")
    cert = x509.load_pem_x509_certificate(pem)
    return fingerprint_from_der(cert.public_bytes(Encoding.DER))


def client_fingerprint(environ: Mapping[str, Any]) -> str | None:
    """The fingerprint of the TLS client certificate the WSGI server put in ``SSL_CLIENT_CERT``
    (PEM; Werkzeug's server does this when it ends TLS itself), or None without one.

    Certificates forwarded by a reverse proxy are not trusted here; that needs the trusted-proxy
    configuration of a later release.
    """
    pem = environ.get("SSL_CLIENT_CERT")
    if not pem:
        return None
    return fingerprint_from_pem(pem)
