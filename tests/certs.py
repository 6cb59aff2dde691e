"""Client certificates for tests, made on the fly (see flask_openadr.testing.make_certificate)."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from flask_openadr.testing import make_certificate as _make


def make_certificate(common_name: str = "ven") -> tuple[str, bytes]:
    """A (PEM certificate, DER certificate) pair with a fresh P-256 key."""
    certificate = _make(common_name)
    return certificate.pem, certificate.der


def make_identity(kind: str = "ec", common_name: str = "ven") -> tuple[str, str]:
    """A (PEM certificate, PEM private key) pair: ``kind`` "rsa" (2048 bits) or "ec" (P-256)."""
    if kind == "rsa":
        from cryptography.hazmat.primitives.asymmetric import rsa

        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    else:
        key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.now(timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii"), key_pem.decode("ascii")
