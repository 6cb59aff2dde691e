"""Who is calling: the verified client certificate of one request, from the one source the
operator configured, as an OpenADR fingerprint.

Two kinds of source exist, and a request is identified by exactly one of them:

- a **trusted reverse proxy** (its address is in ``OPENADR_TRUSTED_PROXIES``) ended TLS and
  passes the VEN's certificate in a header (nginx ``$ssl_client_escaped_cert``) with its
  verification result in another (nginx ``$ssl_client_verify``, which must be ``SUCCESS``);
- otherwise **the WSGI server's own TLS**: ``SSL_CLIENT_CERT`` (PEM; Werkzeug's development
  server, mod_wsgi and others) or, under gunicorn with ``--certfile --cert-reqs 2``, the peer
  certificate of the TLS socket gunicorn puts in the environ as ``gunicorn.socket``.

A request from a trusted proxy is identified by the proxy's headers alone: the proxy's own TLS
connection to the WSGI server, if any, carries the proxy's certificate, not the VEN's. Headers
from any other peer are ignored (anyone can send them), which is logged once per application.
"""
from __future__ import annotations

import functools
import ipaddress
import logging
import ssl
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Protocol, Union
from urllib.parse import unquote

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from .fingerprint import fingerprint_from_der

logger = logging.getLogger("flask_openadr")

IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

#: The values of :attr:`ClientIdentity.source`.
SOURCE_SSL_CLIENT_CERT = "SSL_CLIENT_CERT"
SOURCE_GUNICORN = "gunicorn.socket"
SOURCE_PROXY = "proxy"

#: The only verification result of a proxy (nginx ``$ssl_client_verify``, Apache
#: ``SSL_CLIENT_VERIFY``) that means "a certificate was presented and chains to a trusted CA".
VERIFIED = "SUCCESS"

# Distinct certificates a VTN sees are about as many as its VENs; parsing one costs far more than
# looking it up, and the bound keeps a flood of made-up certificates from growing memory.
PEM_CACHE_SIZE = 4096


@dataclass(frozen=True)
class ClientIdentity:
    """The verified client certificate of a request.

    :param fingerprint: the OpenADR fingerprint (protocol notes 1.6), ``"2E:55:...:1D"``; the
        value VEN records are bound to and XML signers are compared with.
    :param source: where it came from: ``"SSL_CLIENT_CERT"``, ``"gunicorn.socket"`` or
        ``"proxy"``.
    :param der: the DER encoding of the certificate.
    """

    fingerprint: str
    source: str
    der: bytes = field(repr=False)

    def certificate(self) -> x509.Certificate:
        """The certificate, parsed (the fingerprint needs no parsing, so it is done on demand)."""
        return x509.load_der_x509_certificate(self.der)


class IdentitySettings(Protocol):
    """What :meth:`ClientIdentifier.from_settings` reads (the extension passes its
    :class:`~flask_openadr.config.Settings`); read-only, so any object with these
    attributes fits."""

    @property
    def trusted_proxies(self) -> tuple[IPNetwork, ...]: ...
    @property
    def client_cert_header(self) -> str: ...
    @property
    def client_verify_header(self) -> str: ...


@functools.lru_cache(maxsize=PEM_CACHE_SIZE)
def _parse_pem(pem: str) -> tuple[str, bytes] | None:
    """(fingerprint, DER) of the first certificate in ``pem``, or None when there is none."""
    try:
        cert = x509.load_pem_x509_certificate(pem.encode("ascii"))
        der = cert.public_bytes(Encoding.DER)
    except (ValueError, UnicodeEncodeError):
        return None
    return fingerprint_from_der(der), der


def parse_trusted_proxies(value: object) -> tuple[IPNetwork, ...]:
    """The networks of ``OPENADR_TRUSTED_PROXIES``: addresses and CIDR networks, IPv4 or IPv6,
    as a list or a comma-separated string; None or empty for none.

    :raises ValueError: naming the entry that is not an address or network.
    """
    if value is None:
        return ()
    if isinstance(value, str):
        entries: Iterable[object] = value.split(",")
    elif isinstance(value, (list, tuple, set, frozenset)):
        entries = value
    else:
        raise ValueError(f"must be a list of addresses and networks or a comma-separated string "
                         f"such as '127.0.0.1, 10.0.0.0/8, ::1', not {value!r}")
    networks = []
    for entry in entries:
        if not isinstance(entry, str):
            raise ValueError(f"entry {entry!r} is not a string; write addresses and networks as "
                             "strings such as '10.0.0.5' or '10.0.0.0/8'")
        text = entry.strip()
        if not text:
            continue
        try:
            # strict: '10.0.0.1/8' has host bits set and is more likely a typo than a wish to
            # trust all of 10.0.0.0/8.
            networks.append(ipaddress.ip_network(text, strict=True))
        except ValueError as exc:
            raise ValueError(f"entry {text!r} is not an IP address or a CIDR network ({exc}); "
                             "write it like '10.0.0.5', '10.0.0.0/8' or 'fd00::/8'") from None
    return tuple(networks)


def header_environ_key(header: str) -> str:
    """The WSGI environ key of an HTTP request header: ``X-SSL-Client-Cert`` ->
    ``HTTP_X_SSL_CLIENT_CERT``."""
    return "HTTP_" + header.upper().replace("-", "_")


def immediate_peer(environ: Mapping[str, Any]) -> str:
    """The address of the TCP peer. Werkzeug's ``ProxyFix`` rewrites ``REMOTE_ADDR`` from
    ``X-Forwarded-For`` (a header the client controls) and keeps the real one aside, so that one
    is taken when present."""
    original = environ.get("werkzeug.proxy_fix.orig")
    if isinstance(original, Mapping) and original.get("REMOTE_ADDR"):
        return str(original["REMOTE_ADDR"])
    return str(environ.get("REMOTE_ADDR") or "")


def _peer_address(peer: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(peer.split("%", 1)[0])  # no IPv6 zone ("fe80::1%eth0")
    except ValueError:
        return None  # a Unix socket peer (""), or a server that puts a name here
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        # A dual-stack listener reports IPv4 peers as ::ffff:a.b.c.d.
        return address.ipv4_mapped
    return address


def from_server_tls(environ: Mapping[str, Any]) -> ClientIdentity | None:
    """The client certificate the WSGI server verified when it ended TLS itself, or None."""
    pem = environ.get("SSL_CLIENT_CERT")
    if pem:
        # Apache mod_ssl also exports certificates it did not verify (optional_no_ca), and
        # says so here; Werkzeug sets no such key and exports only what its context verified.
        verify = environ.get("SSL_CLIENT_VERIFY")
        if verify is not None and verify != VERIFIED:
            logger.info("ignoring SSL_CLIENT_CERT: the server reports SSL_CLIENT_VERIFY=%r",
                        verify)
            return None
        parsed = _parse_pem(str(pem))
        if parsed is None:
            logger.warning("SSL_CLIENT_CERT holds no readable PEM certificate; the request has "
                           "no client identity")
            return None
        return ClientIdentity(parsed[0], SOURCE_SSL_CLIENT_CERT, parsed[1])
    sock = environ.get("gunicorn.socket")
    if isinstance(sock, ssl.SSLSocket):
        # gunicorn asks for a certificate only with --cert-reqs 1 or 2, and then OpenSSL has
        # verified it against --ca-certs before the request was read; without one this is None.
        try:
            der = sock.getpeercert(binary_form=True)
        except (ValueError, OSError, AttributeError):  # the connection is gone
            der = None
        if der:
            return ClientIdentity(fingerprint_from_der(der), SOURCE_GUNICORN, der)
    return None


class ClientIdentifier:
    """Finds the :class:`ClientIdentity` of requests, with one application's settings.

    :param trusted_proxies: networks whose requests are identified by the certificate headers.
    :param cert_header: the header holding the URL-escaped PEM certificate.
    :param verify_header: the header holding the proxy's verification result.
    """

    def __init__(self, trusted_proxies: Iterable[IPNetwork] = (), *,
                 cert_header: str = "X-SSL-Client-Cert",
                 verify_header: str = "X-SSL-Client-Verify") -> None:
        self.trusted_proxies = tuple(trusted_proxies)
        self.cert_header = cert_header
        self.verify_header = verify_header
        self._cert_key = header_environ_key(cert_header)
        self._verify_key = header_environ_key(verify_header)
        self._untrusted_logged = False

    @classmethod
    def from_settings(cls, settings: IdentitySettings) -> ClientIdentifier:
        """One built from :class:`~flask_openadr.config.Settings`."""
        return cls(settings.trusted_proxies, cert_header=settings.client_cert_header,
                   verify_header=settings.client_verify_header)

    def is_trusted_proxy(self, peer: str) -> bool:
        address = _peer_address(peer)
        return address is not None and any(address in network
                                           for network in self.trusted_proxies)

    def identify(self, environ: Mapping[str, Any]) -> ClientIdentity | None:
        """The verified client certificate of the request whose WSGI environ this is, or None
        when it has none (or one that was not verified, or cannot be read)."""
        peer = immediate_peer(environ)
        if self.trusted_proxies and self.is_trusted_proxy(peer):
            return self._from_proxy(environ, peer)
        if self._cert_key in environ or self._verify_key in environ:
            self._log_untrusted(peer)
        return from_server_tls(environ)

    def _from_proxy(self, environ: Mapping[str, Any], peer: str) -> ClientIdentity | None:
        verify = environ.get(self._verify_key)
        escaped = environ.get(self._cert_key)
        if verify != VERIFIED:
            # nginx sends NONE without a certificate (ssl_verify_client optional) and
            # FAILED:reason for one that does not chain to ssl_client_certificate.
            logger.info("the trusted proxy %s reports %s=%r: the request has no client identity",
                        peer, self.verify_header, verify)
            return None
        if not escaped:
            logger.warning("the trusted proxy %s reports %s=%s but sent no %s header; pass "
                           "$ssl_client_escaped_cert in it", peer, self.verify_header, verify,
                           self.cert_header)
            return None
        # unquote, not unquote_plus: '+' is a base64 character that a proxy may leave as is.
        parsed = _parse_pem(unquote(str(escaped)))
        if parsed is None:
            logger.warning("the %s header from the trusted proxy %s holds no readable PEM "
                           "certificate; the request has no client identity", self.cert_header,
                           peer)
            return None
        return ClientIdentity(parsed[0], SOURCE_PROXY, parsed[1])

    def _log_untrusted(self, peer: str) -> None:
        # Once per application: every request of a misconfigured deployment (or of a prober)
        # would carry them, and one line says all there is to say.
        if self._untrusted_logged:
            return
        self._untrusted_logged = True
        logger.warning(
            "ignoring the %s and %s headers from %s, which is not in OPENADR_TRUSTED_PROXIES "
            "(anyone can send them); if it is your TLS proxy, add its address there. Logged "
            "once.", self.cert_header, self.verify_header, peer or "a peer without an address",
        )


__all__ = ["ClientIdentity", "ClientIdentifier", "from_server_tls", "parse_trusted_proxies"]
