"""Certificates and keys for tests, made with flask_openadr.testing.make_certificate."""
from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, rsa

from flask_openadr.testing import make_certificate as _make


def new_key(kind: str) -> Any:
    """A new private key: ``kind`` "rsa" (2048 bits) or "ec"/"ecdsa" (P-256).

    make_certificate shares one RSA key per process, which is fast; these tests need keys of
    their own, so that a certificate's key never also signs for another signer or CA."""
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if kind in ("ec", "ecdsa"):
        return ec.generate_private_key(ec.SECP256R1())
    raise ValueError(f"kind must be 'rsa', 'ec' or 'ecdsa', not {kind!r}")


def make_certificate(common_name: str = "ven") -> tuple[str, bytes]:
    """A (PEM certificate, DER certificate) pair with a fresh P-256 key."""
    certificate = _make(common_name)
    return certificate.pem, certificate.der


def make_identity(kind: str = "ec", common_name: str = "ven") -> tuple[str, str]:
    """A (PEM certificate, PEM private key) pair: ``kind`` "rsa" (2048 bits) or "ec" (P-256),
    self-signed, with a key of its own."""
    certificate = _make(common_name, key=new_key(kind))
    return certificate.pem, certificate.key_pem().decode("ascii")
