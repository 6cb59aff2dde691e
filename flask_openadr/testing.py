"""A VEN-side test client, so applications can test their handlers without a real VEN.

::

    from flask_openadr.testing import VENTestClient

    def test_registration(app):
        ven = VENTestClient(app.test_client(), ven_name="thermostat-1")
        name, reply = ven.register()
        assert reply["response"]["response_code"] == 200
        name, reply = ven.poll()   # "oadrRegisterReport": the VTN's METADATA report

Each client presents a client certificate of its own (made on the fly), the way Werkzeug's server
passes one on, so it works with ``OPENADR_REQUIRE_CLIENT_CERT`` on; ``certificate=None`` sends
none.

A VEN that signs its messages (XML signatures, see ``docs/security.rst``)::

    ven = VENTestClient(app.test_client(), signing_cert="ven.pem", signing_key="ven.key",
                        environ={"SSL_CLIENT_CERT": open("ven.pem").read()},
                        vtn_fingerprint="2E:55:12:81:B9:EE:9C:46:72:1D")
    ven.register(xml_signature=True)   # every message signed, every reply verified
"""
from __future__ import annotations

import functools
import ipaddress
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Generic, Literal, Protocol, TypeVar, overload

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from . import codec
from .protocol import DEFAULT_URL_PREFIX
from .security import signature
from .security.fingerprint import fingerprint_from_der

#: Where the client sends by default: the VTN's default ``OPENADR_URL_PREFIX``.
DEFAULT_PREFIX = DEFAULT_URL_PREFIX


@dataclass(frozen=True)
class VENCertificate:
    """A client certificate and its private key, for tests (see :func:`make_certificate`)."""

    pem: str
    der: bytes = field(repr=False)
    key: CertificateIssuerPrivateKeyTypes = field(repr=False)
    fingerprint: str

    def key_pem(self) -> bytes:
        """The private key, PEM (PKCS#8, unencrypted), e.g. to write a key file for a server."""
        return self.key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())


@functools.lru_cache(maxsize=1)
def _rsa_key() -> rsa.RSAPrivateKey:
    # An RSA-2048 key takes tens of milliseconds to make; certificates for tests may share one
    # (each certificate still has its own serial number, hence its own fingerprint).
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


#: The TLS roles :func:`make_certificate` can restrict a certificate to (its ``purpose``).
PURPOSES = ("ca", "server", "client")


def make_certificate(common_name: str = "test-ven", *, key_type: str = "ec",
                     issuer: VENCertificate | None = None, hosts: tuple[str, ...] = (),
                     days: int = 30, purpose: str | None = None,
                     key: CertificateIssuerPrivateKeyTypes | None = None) -> VENCertificate:
    """A fresh X.509 certificate for ``common_name``.

    :param key_type: ``"ec"`` (P-256, about 0.1 ms to make) or ``"rsa"`` (2048 bits; one key
        per process, as making one takes far longer).
    :param issuer: the CA certificate (made with this function) that signs it; self-signed,
        and usable as a CA, if None.
    :param hosts: DNS names and IP addresses for its subjectAltName, for a server certificate.
    :param purpose: None for a certificate without key usage extensions (good for anything);
        ``"ca"`` for a CA (also when ``issuer`` signs it: an intermediate CA), ``"server"`` or
        ``"client"`` for a device certificate of that TLS role only. These add keyUsage (and
        extendedKeyUsage for a device), as the certificates of a real PKI carry.
    :param key: the private key to certify (a ``cryptography`` private key object, e.g. the
        ``key`` of another certificate, or a new RSA key when certificates must not share the
        process's one); ``key_type`` is then ignored.
    """
    if purpose is not None and purpose not in PURPOSES:
        raise ValueError(f"purpose must be None or one of {PURPOSES}, not {purpose!r}")
    if key is None:
        if key_type == "ec":
            key = ec.generate_private_key(ec.SECP256R1())
        elif key_type == "rsa":
            key = _rsa_key()
        else:
            raise ValueError(f"key_type must be 'ec' or 'rsa', not {key_type!r}")
    is_ca = issuer is None or purpose == "ca"
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.now(timezone.utc)
    issuer_cert = None if issuer is None else x509.load_der_x509_certificate(issuer.der)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name if issuer_cert is None else issuer_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
            (key if issuer is None else issuer.key).public_key()), critical=False)
    )
    if purpose is not None:
        builder = builder.add_extension(_key_usage(purpose, key), critical=True)
    if purpose in ("server", "client"):
        builder = builder.add_extension(x509.ExtendedKeyUsage(
            [ExtendedKeyUsageOID.SERVER_AUTH if purpose == "server"
             else ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    if hosts:
        names: list[x509.GeneralName] = []
        for host in hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    cert = builder.sign(key if issuer is None else issuer.key, hashes.SHA256())
    der = cert.public_bytes(serialization.Encoding.DER)
    return VENCertificate(pem=cert.public_bytes(serialization.Encoding.PEM).decode("ascii"),
                          der=der, key=key, fingerprint=fingerprint_from_der(der))


def _key_usage(purpose: str, key: CertificateIssuerPrivateKeyTypes) -> x509.KeyUsage:
    # A CA signs certificates (and revocation lists) only; a device signs its TLS handshakes
    # and messages, and an RSA one also decrypts the TLS 1.2 RSA key exchange.
    ca = purpose == "ca"
    return x509.KeyUsage(digital_signature=not ca, content_commitment=False,
                         key_encipherment=not ca and isinstance(key, rsa.RSAPrivateKey),
                         data_encipherment=False, key_agreement=False, key_cert_sign=ca,
                         crl_sign=ca, encipher_only=False, decipher_only=False)


#: The default of ``VENTestClient(certificate=...)``: a certificate of its own.
NEW_CERTIFICATE = "new"


class ClientResponse(Protocol):
    """What :class:`VENTestClient` reads of a response: a Flask test response, or anything with
    the same ``status_code`` and ``get_data``."""

    @property
    def status_code(self) -> int: ...

    @overload
    def get_data(self, as_text: Literal[False] = False) -> bytes: ...
    @overload
    def get_data(self, as_text: Literal[True]) -> str: ...


ResponseT = TypeVar("ResponseT", bound=ClientResponse)
ResponseT_co = TypeVar("ResponseT_co", bound=ClientResponse, covariant=True)


class HTTPClient(Protocol[ResponseT_co]):
    """What :class:`VENTestClient` sends through: a Flask test client (``app.test_client()``),
    or anything whose ``post`` takes the same arguments and returns a response with
    ``status_code`` and ``get_data(as_text=False)`` (:class:`ClientResponse`).
    :meth:`VENTestClient.post` returns that response as it is."""

    def post(self, path: str, *, data: bytes, content_type: str,
             environ_base: dict[str, Any]) -> ResponseT_co:
        """POST ``data`` to ``path`` with the WSGI environ entries ``environ_base``."""
        ...


#: What each VEN message method returns: the payload name and payload of the VTN's reply.
VTNReply = tuple[str, dict[str, Any]]


class VENTestClient(Generic[ResponseT]):
    """Sends VEN messages through a Flask test client and decodes the replies.

    Each method returns ``(payload_name, payload)`` of the VTN's reply; :meth:`send` raises
    :class:`AssertionError` when the HTTP status is not 200 (use :meth:`post` to see it).
    After :meth:`register` the client remembers ``ven_id`` and ``registration_id``.

    :param certificate: the client certificate it presents in ``SSL_CLIENT_CERT``, as Werkzeug's
        server does after verifying it: a new one of its own by default, a
        :class:`VENCertificate` (to share one between clients, or to act as another VEN), or
        None for none. Change :attr:`certificate` to switch.
    :param environ: more WSGI environ values for every request (``REMOTE_ADDR``, proxy
        headers, ...); they win over the certificate.
    """

    def __init__(self, client: HTTPClient[ResponseT], *, ven_name: str = "test-ven",
                 ven_id: str | None = None, url_prefix: str = DEFAULT_PREFIX,
                 environ: dict[str, Any] | None = None,
                 certificate: VENCertificate | str | None = NEW_CERTIFICATE,
                 signing_cert: str | bytes | None = None, signing_key: str | bytes | None = None,
                 signing_key_password: str | bytes | None = None,
                 vtn_fingerprint: str | None = None, verify_replies: bool | None = None,
                 clock: Callable[[], datetime] | None = None) -> None:
        """
        :param environ: WSGI environ entries for every request, such as ``SSL_CLIENT_CERT``
            (the VEN's TLS client certificate, PEM); they win over ``certificate``.
        :param signing_cert: with ``signing_key`` (PEM paths or data; RSA or EC, and
            ``signing_key_password`` if encrypted): sign every message with this certificate.
        :param vtn_fingerprint: replies must be signed by the certificate with this fingerprint.
        :param verify_replies: whether every reply must be signed (and verify); by default when
            the client signs or ``vtn_fingerprint`` is given. A signed reply is always verified.
        :param clock: the time signatures carry (``dsp:timestamp``); give the VTN's test clock
            when the VTN runs on one. Default: the current UTC time.
        """
        self.client = client
        self.ven_name = ven_name
        self.ven_id = ven_id
        self.registration_id: str | None = None
        self.url_prefix = url_prefix.rstrip("/")
        self.environ = environ or {}
        if certificate == NEW_CERTIFICATE:
            certificate = make_certificate(ven_name)
        elif certificate is not None and not isinstance(certificate, VENCertificate):
            raise TypeError("certificate must be a VENCertificate (see make_certificate), None "
                            f"or {NEW_CERTIFICATE!r}, not {certificate!r}")
        self.certificate: VENCertificate | None = certificate
        self.signer = (signature.load_signer(signing_cert, signing_key, signing_key_password,
                                             names=("signing_cert", "signing_key",
                                                    "signing_key_password"))
                       if signing_cert is not None or signing_key is not None else None)
        self.vtn_fingerprint = vtn_fingerprint
        self.verify_replies = (self.signer is not None or vtn_fingerprint is not None
                               if verify_replies is None else verify_replies)
        self.clock = clock or (lambda: datetime.now(timezone.utc))
        #: What the signature of the last reply covered and who signed it (None if unsigned).
        self.last_signature: signature.Verified | None = None

    @property
    def fingerprint(self) -> str | None:
        """The OpenADR fingerprint of :attr:`certificate`, or None without one."""
        return None if self.certificate is None else self.certificate.fingerprint

    def post(self, service: str, body: bytes, content_type: str = "application/xml"
             ) -> ResponseT:
        """POST raw bytes to a service endpoint; returns the Flask test response."""
        environ = {} if self.certificate is None else {"SSL_CLIENT_CERT": self.certificate.pem}
        environ.update(self.environ)
        return self.client.post(f"{self.url_prefix}/{service}", data=body,
                                content_type=content_type, environ_base=environ)

    def encode(self, payload_name: str, payload: dict[str, Any], **sign_options: Any) -> bytes:
        """The message as this client sends it: signed when it has a signing key
        (``sign_options`` go to :func:`flask_openadr.security.signature.sign`, e.g. ``nonce``
        or ``now``)."""
        if self.signer is None:
            return codec.encode(payload_name, payload)
        sign_options.setdefault("now", self.clock())
        return signature.sign(codec.encode_element(payload_name, payload), self.signer,
                              **sign_options)

    def send(self, service: str, payload_name: str, payload: dict[str, Any]) -> VTNReply:
        response = self.post(service, self.encode(payload_name, payload))
        if response.status_code != 200:
            raise AssertionError(f"HTTP {response.status_code}: {response.get_data(as_text=True)}")
        return self.decode_reply(response.get_data())

    def decode_reply(self, body: bytes) -> VTNReply:
        """Decode a reply, verifying its signature (see ``verify_replies``); raises
        :class:`AssertionError` when a signature is missing, wrong or from another signer."""
        root = codec.parse(body)
        self.last_signature = None
        if signature.is_signed(root):
            try:
                verified = signature.verify(root)
            except Exception as exc:
                raise AssertionError(f"the reply's signature does not verify: {exc}") from exc
            if (self.vtn_fingerprint is not None
                    and not _same_fingerprint(self.vtn_fingerprint, verified.fingerprint)):
                raise AssertionError(f"the reply is signed by {verified.fingerprint}, not by "
                                     f"the VTN's certificate {self.vtn_fingerprint}")
            self.last_signature = verified
            return codec.decode_element(verified.payload)
        if self.verify_replies:
            raise AssertionError("the reply is not signed: " + body.decode("utf-8", "replace"))
        return codec.decode_element(root)

    @staticmethod
    def new_request_id() -> str:
        return uuid.uuid4().hex

    # -- EiRegisterParty ---------------------------------------------------------------

    def query_registration(self) -> VTNReply:
        return self.send("EiRegisterParty", "oadrQueryRegistration",
                         {"request_id": self.new_request_id()})

    def register(self, *, report_only: bool = False, xml_signature: bool = False,
                 http_pull_model: bool = True, renew: bool = False, **extra: Any) -> VTNReply:
        """oadrCreatePartyRegistration; ``renew=True`` sends the current IDs (re-registration)."""
        payload = {"request_id": self.new_request_id(), "profile_name": "2.0b",
                   "transport_name": "simpleHttp", "report_only": report_only,
                   "xml_signature": xml_signature, "ven_name": self.ven_name,
                   "http_pull_model": http_pull_model}
        if self.ven_id is not None:
            payload["ven_id"] = self.ven_id
        if renew:
            payload["registration_id"] = self.registration_id
        payload.update(extra)
        name, reply = self.send("EiRegisterParty", "oadrCreatePartyRegistration", payload)
        if reply["response"]["response_code"] == 200:
            self.ven_id = reply["ven_id"]
            self.registration_id = reply["registration_id"]
        return name, reply

    def cancel_registration(self, registration_id: str | None = None) -> VTNReply:
        return self.send("EiRegisterParty", "oadrCancelPartyRegistration", {
            "request_id": self.new_request_id(),
            "registration_id": registration_id or self.registration_id,
            "ven_id": self.ven_id})

    def canceled_registration(self, request_id: str, code: int = 200) -> VTNReply:
        """Acknowledge an oadrCancelPartyRegistration received on poll."""
        return self.send("EiRegisterParty", "oadrCanceledPartyRegistration", {
            "response": {"response_code": code, "response_description": "OK",
                         "request_id": request_id},
            "registration_id": self.registration_id, "ven_id": self.ven_id})

    def respond(self, service: str = "EiRegisterParty", request_id: str = "",
                code: int = 200) -> VTNReply:
        """A plain oadrResponse, such as the acknowledgement of oadrRequestReregistration."""
        return self.send(service, "oadrResponse", {
            "response": {"response_code": code, "response_description": "OK",
                         "request_id": request_id},
            "ven_id": self.ven_id})

    # -- OadrPoll and EiEvent ------------------------------------------------------------

    def poll(self) -> VTNReply:
        return self.send("OadrPoll", "oadrPoll", {"ven_id": self.ven_id})

    def request_event(self, reply_limit: int | None = None) -> VTNReply:
        payload: dict[str, Any] = {"request_id": self.new_request_id(), "ven_id": self.ven_id}
        if reply_limit is not None:
            payload["reply_limit"] = reply_limit
        return self.send("EiEvent", "oadrRequestEvent", payload)

    def created_event(self, distribute: dict[str, Any], opt_type: str = "optIn",
                      event_ids: list[str] | None = None) -> VTNReply:
        """Answer an oadrDistributeEvent with ``opt_type`` for each (or the named) event."""
        responses = [
            {"response_code": 200, "response_description": "OK",
             "request_id": distribute["request_id"],
             "qualified_event_id": {
                 "event_id": e["event_descriptor"]["event_id"],
                 "modification_number": e["event_descriptor"]["modification_number"]},
             "opt_type": opt_type}
            for e in distribute["events"]
            if event_ids is None or e["event_descriptor"]["event_id"] in event_ids
        ]
        return self.send("EiEvent", "oadrCreatedEvent", {
            "response": {"response_code": 200, "response_description": "OK", "request_id": ""},
            "event_responses": responses, "ven_id": self.ven_id})

    # -- EiReport ------------------------------------------------------------------------

    def registered_report(self, register_report: dict[str, Any]) -> VTNReply:
        """Acknowledge the VTN's METADATA oadrRegisterReport without requesting reports."""
        return self.send("EiReport", "oadrRegisteredReport", {
            "response": {"response_code": 200, "response_description": "OK",
                         "request_id": register_report["request_id"]},
            "report_requests": [], "ven_id": self.ven_id})

    def register_report(self, reports: list[dict[str, Any]],
                        report_request_id: str | None = None) -> VTNReply:
        """oadrRegisterReport with the VEN's METADATA reports (see :func:`metadata_report`);
        ``report_request_id`` when answering the VTN's METADATA request."""
        payload: dict[str, Any] = {"request_id": self.new_request_id(), "reports": reports,
                                   "ven_id": self.ven_id}
        if report_request_id is not None:
            payload["report_request_id"] = report_request_id
        return self.send("EiReport", "oadrRegisterReport", payload)

    def created_report(self, request_id: str, pending_reports: list[str],
                       code: int = 200) -> VTNReply:
        """oadrCreatedReport: acknowledge report requests (``request_id`` of the message that
        carried them) and list the requests that are active."""
        return self.send("EiReport", "oadrCreatedReport", {
            "response": {"response_code": code, "response_description": "OK",
                         "request_id": request_id},
            "pending_reports": pending_reports, "ven_id": self.ven_id})

    def update_report(self, reports: list[dict[str, Any]]) -> VTNReply:
        """oadrUpdateReport with data reports (see :func:`data_report`)."""
        return self.send("EiReport", "oadrUpdateReport", {
            "request_id": self.new_request_id(), "reports": reports, "ven_id": self.ven_id})

    def canceled_report(self, request_id: str, pending_reports: list[str] | None = None,
                        code: int = 200) -> VTNReply:
        """oadrCanceledReport: acknowledge the VTN's oadrCancelReport ``request_id``."""
        return self.send("EiReport", "oadrCanceledReport", {
            "response": {"response_code": code, "response_description": "OK",
                         "request_id": request_id},
            "pending_reports": pending_reports or [], "ven_id": self.ven_id})

    def create_report(self, report_requests: list[dict[str, Any]]) -> VTNReply:
        """oadrCreateReport: ask the VTN for its reports (REPORT_REQUEST dicts)."""
        return self.send("EiReport", "oadrCreateReport", {
            "request_id": self.new_request_id(), "report_requests": report_requests,
            "ven_id": self.ven_id})

    def cancel_report(self, report_request_ids: list[str],
                      report_to_follow: bool = False) -> VTNReply:
        """oadrCancelReport: cancel requests for VTN reports."""
        return self.send("EiReport", "oadrCancelReport", {
            "request_id": self.new_request_id(), "report_request_ids": report_request_ids,
            "report_to_follow": report_to_follow, "ven_id": self.ven_id})

    def updated_report(self, request_id: str, code: int = 200,
                       cancel_report: dict[str, Any] | None = None) -> VTNReply:
        """oadrUpdatedReport: acknowledge a VTN report (``request_id`` of its oadrUpdateReport)."""
        payload: dict[str, Any] = {"response": {"response_code": code,
                                                "response_description": "OK",
                                                "request_id": request_id},
                                   "ven_id": self.ven_id}
        if cancel_report is not None:
            payload["cancel_report"] = cancel_report
        return self.send("EiReport", "oadrUpdatedReport", payload)

    def create_opt(self, opt_id: str, opt_type: str = "optOut", *,
                   windows: list[tuple[datetime, timedelta]] | None = None,
                   event_id: str | None = None, modification_number: int = 0,
                   opt_reason: str = "x-schedule", created_date_time: datetime | None = None,
                   **extra: Any) -> VTNReply:
        """oadrCreateOpt: a schedule (``windows`` of ``(dtstart, duration)``) or, with
        ``event_id``, an event-level opt. ``extra`` adds or overrides payload keys
        (``market_context``, ``target``, ``device_class``, ``vavailability``, ...)."""
        payload: dict[str, Any] = {
            "opt_id": opt_id, "opt_type": opt_type, "opt_reason": opt_reason,
            "ven_id": self.ven_id,
            "created_date_time": created_date_time or datetime.now(timezone.utc),
            "request_id": self.new_request_id(), "target": {}}
        if windows is not None:
            payload["vavailability"] = {"available": [{"dtstart": start, "duration": duration}
                                                      for start, duration in windows]}
        if event_id is not None:
            payload["qualified_event_id"] = {"event_id": event_id,
                                             "modification_number": modification_number}
        payload.update(extra)
        return self.send("EiOpt", "oadrCreateOpt", payload)

    def cancel_opt(self, opt_id: str) -> VTNReply:
        return self.send("EiOpt", "oadrCancelOpt", {"request_id": self.new_request_id(),
                                                     "opt_id": opt_id, "ven_id": self.ven_id})


def metadata_report(report_specifier_id: str, report_name: str,
                    descriptions: list[dict[str, Any]], *,
                    duration: timedelta = timedelta(hours=1)) -> dict[str, Any]:
    """A METADATA report for :meth:`VENTestClient.register_report`. ``report_name`` is the plain
    name (``"TELEMETRY_USAGE"``; well-known names get their ``METADATA_`` prefix); ``descriptions``
    are oadrReportDescription dicts (see :func:`data_point`)."""
    well_known = {"TELEMETRY_USAGE", "TELEMETRY_STATUS", "HISTORY_USAGE"}
    return {"duration": duration, "report_descriptions": descriptions, "report_request_id": "0",
            "report_specifier_id": report_specifier_id,
            "report_name": "METADATA_" + report_name if report_name in well_known else report_name,
            "created_date_time": datetime.now(timezone.utc)}


def data_point(r_id: str, *, report_type: str = "usage", reading_type: str = "Direct Read",
               min_period: timedelta | None = timedelta(seconds=10),
               max_period: timedelta = timedelta(minutes=1), resource_id: str = "resource-1",
               **extra: Any) -> dict[str, Any]:
    """An oadrReportDescription: one data point of a METADATA report (``min_period=None`` for
    no sampling rate); ``extra`` adds keys such as ``item_base``."""
    description: dict[str, Any] = {"r_id": r_id,
                                   "report_data_source": {"resource_ids": [resource_id]},
                                   "report_type": report_type, "reading_type": reading_type}
    description.update(extra)
    if min_period is not None:
        description["sampling_rate"] = {"min_period": min_period, "max_period": max_period,
                                        "on_change": False}
    return description


def data_report(report_request_id: str, report_specifier_id: str, report_name: str,
                intervals: list[dict[str, Any]], *, dtstart: datetime | None = None,
                **extra: Any) -> dict[str, Any]:
    """A data report for :meth:`VENTestClient.update_report`; ``intervals`` are REPORT
    intervals (``{"dtstart"?, "duration"?, "uid"?, "report_payloads": [...]}``)."""
    report: dict[str, Any] = {"intervals": intervals, "report_request_id": report_request_id,
                              "report_specifier_id": report_specifier_id,
                              "report_name": report_name,
                              "created_date_time": datetime.now(timezone.utc)}
    if dtstart is not None:
        report["dtstart"] = dtstart
    report.update(extra)
    return report


def _same_fingerprint(a: str, b: str) -> bool:
    return a.replace(":", "").upper() == b.replace(":", "").upper()


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0,
        microsecond: int = 0) -> datetime:
    """A datetime in UTC: ``utc(2026, 12, 1, 17)``."""
    return datetime(year, month, day, hour, minute, second, microsecond, tzinfo=timezone.utc)
