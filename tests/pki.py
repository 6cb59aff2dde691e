"""A test PKI for the deployment tests: OpenADR-shaped roots, VTN server and VEN client certificates.

The OpenADR Alliance runs one RSA and one ECC root; device certificates are RSA-2048 with
sha256WithRSA or P-256 with ecdsa-with-SHA256. This PKI does the same (without the intermediate
CAs, which change nothing for the tests) and adds a rogue root that nobody trusts. Everything is
written as PEM files into one directory, made once per test session (RSA keys take a while).
"""
from __future__ import annotations

import hashlib
import ipaddress
import os
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

#: The key types of device certificates, by the names the tests use.
KEY_TYPES = ("rsa", "ecdsa")


@dataclass(frozen=True)
class Credential:
    """One certificate with its private key, as the files a server or client is given."""

    name: str
    key_type: str  # "rsa" or "ecdsa"
    cert_path: str
    key_path: str
    cert_pem: str
    fingerprint: str  # the OpenADR fingerprint of the certificate


def _new_key(key_type: str):
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if key_type == "ecdsa":
        return ec.generate_private_key(ec.SECP256R1())
    raise ValueError(f"key_type {key_type!r} is not one of {KEY_TYPES}")


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "flask-openadr tests"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def openadr_fingerprint(der: bytes) -> str:
    """The OpenADR 2.0b fingerprint, worked out here independently of the library under test:
    the last 10 bytes of SHA-256 over the DER certificate, as upper-case hex pairs and colons."""
    return ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest()[-10:])


class _Authority:
    def __init__(self, common_name: str, key_type: str):
        self.key = _new_key(key_type)
        self.name = _name(common_name)
        now = datetime.now(timezone.utc)
        public = self.key.public_key()
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(self.name).issuer_name(self.name).public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=True, crl_sign=True,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .sign(self.key, hashes.SHA256())
        )

    def issue(self, common_name: str, key_type: str, *, server: bool):
        key = _new_key(key_type)
        public = key.public_key()
        now = datetime.now(timezone.utc)
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name)).issuer_name(self.name).public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                         key_encipherment=key_type == "rsa",
                                         data_encipherment=False, key_agreement=False,
                                         key_cert_sign=False, crl_sign=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                self.key.public_key()), critical=False)
        )
        if server:
            # Clients check the host name they dialled, so the VTN certificate names both.
            builder = builder.add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            builder = builder.add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        else:
            builder = builder.add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        return key, builder.sign(self.key, hashes.SHA256())


class TestPKI:
    """The certificates of one test session, written under ``directory``.

    - ``ca_bundle``: the trusted RSA and ECC roots in one PEM file (nginx's
      ``ssl_client_certificate``, gunicorn's ``--ca-certs`` and the VENs' ``ca_file``);
    - ``vtn[key_type]``: VTN server certificates for 127.0.0.1 and localhost;
    - ``ven(name, key_type)``: VEN client certificates, made on first use;
    - ``rogue_ven``: a VEN certificate from a root nobody trusts.
    """

    __test__ = False  # a helper, not a test class

    def __init__(self, directory: str):
        self.directory = directory
        os.makedirs(directory, exist_ok=True)
        self._roots = {key_type: _Authority(f"Test OpenADR {key_type.upper()} root", key_type)
                       for key_type in KEY_TYPES}
        self.ca_bundle = os.path.join(directory, "ven-ca.pem")
        with open(self.ca_bundle, "wb") as fh:
            for root in self._roots.values():
                fh.write(root.cert.public_bytes(serialization.Encoding.PEM))
        self.vtn = {key_type: self._issue(self._roots[key_type], f"vtn-{key_type}", key_type,
                                          server=True)
                    for key_type in KEY_TYPES}
        self._vens: dict[tuple[str, str], Credential] = {}
        rogue_root = _Authority("Rogue root", "ecdsa")
        self.rogue_ven = self._issue(rogue_root, "rogue-ven", "ecdsa", server=False)

    def ven(self, name: str, key_type: str) -> Credential:
        """The VEN client certificate ``name`` of ``key_type``, issued by the matching root."""
        if (name, key_type) not in self._vens:
            self._vens[name, key_type] = self._issue(self._roots[key_type], f"{name}-{key_type}",
                                                     key_type, server=False)
        return self._vens[name, key_type]

    def _issue(self, root: _Authority, name: str, key_type: str, *, server: bool) -> Credential:
        key, cert = root.issue(name, key_type, server=server)
        cert_pem = cert.public_bytes(serialization.Encoding.PEM)
        cert_path = os.path.join(self.directory, f"{name}.crt")
        key_path = os.path.join(self.directory, f"{name}.key")
        with open(cert_path, "wb") as fh:
            fh.write(cert_pem)
        with open(key_path, "wb") as fh:
            fh.write(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
        os.chmod(key_path, 0o600)
        return Credential(name=name, key_type=key_type, cert_path=cert_path, key_path=key_path,
                          cert_pem=cert_pem.decode("ascii"),
                          fingerprint=openadr_fingerprint(
                              cert.public_bytes(serialization.Encoding.DER)))
