"""A test PKI for the deployment tests: OpenADR-shaped roots, VTN server and VEN client certificates.

The OpenADR Alliance runs one RSA and one ECC root; device certificates are RSA-2048 with
sha256WithRSA or P-256 with ecdsa-with-SHA256. This PKI does the same (without the intermediate
CAs, which change nothing for the tests) and adds a rogue root that nobody trusts. Everything is
written as PEM files into one directory, made once per test session (RSA keys take a while).
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

from flask_openadr.testing import VENCertificate, make_certificate
from tests.support.certs import new_key

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


def openadr_fingerprint(der: bytes) -> str:
    """The OpenADR 2.0b fingerprint, worked out here independently of the library under test:
    the last 10 bytes of SHA-256 over the DER certificate, as upper-case hex pairs and colons."""
    return ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest()[-10:])


def _root(common_name: str, key_type: str) -> VENCertificate:
    return make_certificate(common_name, key=new_key(key_type), purpose="ca")


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
        self._roots = {key_type: _root(f"Test OpenADR {key_type.upper()} root", key_type)
                       for key_type in KEY_TYPES}
        self.ca_bundle = os.path.join(directory, "ven-ca.pem")
        with open(self.ca_bundle, "wb") as fh:
            for root in self._roots.values():
                fh.write(root.pem.encode("ascii"))
        self.vtn = {key_type: self._issue(self._roots[key_type], f"vtn-{key_type}", key_type,
                                          server=True)
                    for key_type in KEY_TYPES}
        self._vens: dict[tuple[str, str], Credential] = {}
        rogue_root = _root("Rogue root", "ecdsa")
        self.rogue_ven = self._issue(rogue_root, "rogue-ven", "ecdsa", server=False)

    def ven(self, name: str, key_type: str) -> Credential:
        """The VEN client certificate ``name`` of ``key_type``, issued by the matching root."""
        if (name, key_type) not in self._vens:
            self._vens[name, key_type] = self._issue(self._roots[key_type], f"{name}-{key_type}",
                                                     key_type, server=False)
        return self._vens[name, key_type]

    def _issue(self, root: VENCertificate, name: str, key_type: str, *,
               server: bool) -> Credential:
        # Clients check the host name they dialled, so a VTN certificate names both.
        certificate = make_certificate(name, key=new_key(key_type), issuer=root,
                                       purpose="server" if server else "client",
                                       hosts=("localhost", "127.0.0.1") if server else ())
        cert_path = os.path.join(self.directory, f"{name}.crt")
        key_path = os.path.join(self.directory, f"{name}.key")
        with open(cert_path, "w", encoding="ascii") as fh:
            fh.write(certificate.pem)
        with open(key_path, "wb") as fh:
            fh.write(certificate.key_pem())
        os.chmod(key_path, 0o600)
        return Credential(name=name, key_type=key_type, cert_path=cert_path, key_path=key_path,
                          cert_pem=certificate.pem,
                          fingerprint=openadr_fingerprint(certificate.der))
