"""The OpenADR 2.0b certificate fingerprint: computed from a certificate, and read from text."""
from __future__ import annotations

import hashlib
import re

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding


def fingerprint_from_der(der: bytes) -> str:
    """Last 10 bytes of SHA-256 over the DER certificate, upper-case hex pairs joined by colons
    (protocol notes 1.6): ``2E:55:12:81:B9:EE:9C:46:72:1D``."""
    digest = hashlib.sha256(der).digest()[-10:]
    return ":".join(f"{b:02X}" for b in digest)


def fingerprint_from_pem(pem: str | bytes) -> str:
    """The fingerprint of the first certificate in ``pem``.

    :raises ValueError: ``pem`` holds no readable PEM certificate.
    """
    if isinstance(pem, str):
        pem = pem.encode("ascii")
    cert = x509.load_pem_x509_certificate(pem)
    return fingerprint_from_der(cert.public_bytes(Encoding.DER))


_HEX_PAIRS = re.compile(r"[0-9A-F]{20}")


def canonical_fingerprint(text: str) -> str:
    """``text`` in the form this library writes fingerprints: upper case, colon-separated.

    Accepts the forms operators are given (``2e:55:...``, ``2E5512...``, surrounding blanks).

    :raises ValueError: ``text`` is not 10 bytes of hex.
    """
    if not isinstance(text, str):
        raise ValueError(f"a fingerprint is a string like '2E:55:12:81:B9:EE:9C:46:72:1D', "
                         f"not {text!r}")
    digits = text.strip().replace(":", "").upper()
    if not _HEX_PAIRS.fullmatch(digits):
        raise ValueError(f"fingerprint {text!r} is not 10 hex bytes like "
                         "'2E:55:12:81:B9:EE:9C:46:72:1D'; print one with "
                         "'flask openadr fingerprint CERT.pem'")
    return ":".join(digits[i:i + 2] for i in range(0, 20, 2))
