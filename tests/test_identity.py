"""Who is calling: client certificates from each source, OPENADR_REQUIRE_CLIENT_CERT, and the
binding of venID, registrationID and certificate fingerprint (no takeover, no impersonation).

Every certificate here is real (made with flask_openadr.testing.make_certificate) and every TLS
connection is a real handshake; nothing is mocked.
"""
from __future__ import annotations

import logging
import socket
import ssl
import threading
import urllib.request
from datetime import timedelta
from urllib.parse import quote

import pytest
from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from flask_openadr import VTN, codec, signals
from flask_openadr.security.identity import (
    SOURCE_GUNICORN,
    ClientIdentifier,
    from_server_tls,
    parse_trusted_proxies,
)
from flask_openadr.services import registration
from flask_openadr.testing import VENCertificate, make_certificate, utc
from tests.support.servers import Gunicorn
from tests.support.vens import ValidatingVEN, make_ven

PREFIX = "/OpenADR2/Simple/2.0b"


def code(reply) -> int:
    return reply["response"]["response_code"]


def snapshot(app, vtn) -> dict:
    """Everything a refused message must leave as it was."""
    with app.app_context():
        store = vtn.store
        vens = store.list_vens()
        ids = [ven["ven_id"] for ven in vens]
        events = store.list_events()
        return {
            "vens": vens,
            "outbox": {ven_id: store.list_outbox(ven_id) for ven_id in ids},
            "delivered": {ven_id: store.get_delivered(ven_id) for ven_id in ids},
            "records": {(kind, ven_id): store.list_records(kind, ven_id)
                        for kind in registration.RECORD_KINDS for ven_id in ids},
            "events": events,
            "responses": {e["event_descriptor"]["event_id"]: store.list_event_responses(
                e["event_descriptor"]["event_id"]) for e in events},
            "liveness": store.list_liveness(),
        }


def add_event_for(vtn, app, ven_id: str) -> str:
    with app.app_context():
        return vtn.add_event(ven_id=ven_id, signal_name="SIMPLE", signal_type="level",
                             intervals=[{"dtstart": utc(2030, 1, 1, 18),
                                         "duration": timedelta(hours=1), "signal_payload": 1.0}])


@pytest.fixture
def recorded(app):
    """The names of the messages that reached the services (the message_received signal)."""
    seen: list[str] = []

    def receive(sender, payload_name, **extra):
        seen.append(payload_name)

    signals.message_received.connect(receive, app, weak=False)
    yield seen
    signals.message_received.disconnect(receive, app)


# -- the WSGI server's own TLS: SSL_CLIENT_CERT ------------------------------------------------


def test_ssl_client_cert_identifies_the_ven(app, vtn):
    ven = make_ven(app)
    name, reply = ven.register()
    assert code(reply) == 200
    assert reply["ven_id"] == ven.fingerprint  # the built-in policy: the fingerprint as venID
    with app.app_context():
        [record] = vtn.vens()
    assert record["fingerprint"] == ven.fingerprint
    name, reply = ven.query_registration()
    assert (reply["ven_id"], reply["registration_id"]) == (ven.ven_id, ven.registration_id)


def test_handlers_receive_the_fingerprint(app, vtn):
    seen = []

    @vtn.on_query_registration
    def query(payload):
        seen.append(("query", payload["fingerprint"]))

    @vtn.on_create_party_registration
    def create(payload):
        seen.append(("create", payload["fingerprint"], payload["bound_ven_id"]))

    ven = make_ven(app)
    ven.query_registration()
    ven.register()
    ven.register()  # again, without its IDs: now its certificate is bound to a venID
    assert seen == [("query", ven.fingerprint), ("create", ven.fingerprint, None),
                    ("create", ven.fingerprint, ven.fingerprint)]


@pytest.mark.parametrize("environ", [
    {"SSL_CLIENT_CERT": "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n"},
    {"SSL_CLIENT_CERT": "garbage"},
    # Apache mod_ssl exports certificates it could not verify too, and says so.
    {"SSL_CLIENT_VERIFY": "FAILED:unable to get local issuer certificate"},
    {"SSL_CLIENT_VERIFY": "GENEROUS"},
], ids=["bad-pem", "no-pem", "verify-failed", "verify-generous"])
def test_an_unreadable_or_unverified_server_certificate_is_no_identity(app, vtn, recorded,
                                                                       environ):
    ven = make_ven(app, environ=environ)
    response = ven.post("EiRegisterParty", codec.encode("oadrQueryRegistration",
                                                        {"request_id": "q"}))
    assert response.status_code == 403
    assert recorded == []


# -- gunicorn ending TLS itself: the peer certificate of gunicorn.socket ----------------------


def write_pair(tmp_path, name: str, certificate: VENCertificate) -> tuple[str, str]:
    cert_path, key_path = tmp_path / f"{name}.pem", tmp_path / f"{name}.key"
    cert_path.write_text(certificate.pem)
    key_path.write_bytes(certificate.key_pem())
    return str(cert_path), str(key_path)


@pytest.fixture
def pki(tmp_path):
    """A CA, a server certificate for 127.0.0.1 and two VEN certificates it signed."""
    ca = make_certificate("test VEN CA")
    files = {"ca": write_pair(tmp_path, "ca", ca)[0],
             "server": write_pair(tmp_path, "server",
                                  make_certificate("vtn", issuer=ca,
                                                   hosts=("127.0.0.1", "localhost")))}
    vens = {}
    for name in ("a", "b"):
        vens[name] = make_certificate(f"ven-{name}", issuer=ca)
        files[name] = write_pair(tmp_path, name, vens[name])
    return ca, files, vens


def test_make_certificate_purposes_carry_the_key_usages_of_a_pki():
    from cryptography import x509
    from cryptography.x509.oid import ExtendedKeyUsageOID

    def load(certificate: VENCertificate) -> x509.Certificate:
        return x509.load_der_x509_certificate(certificate.der)

    root = make_certificate("root", purpose="ca")
    intermediate = make_certificate("intermediate", issuer=root, purpose="ca")
    server = make_certificate("vtn", issuer=intermediate, purpose="server", key_type="rsa",
                              hosts=("localhost",))
    client = make_certificate("ven", issuer=intermediate, purpose="client")
    for ca in (root, intermediate):
        extensions = load(ca).extensions
        assert extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        usage = extensions.get_extension_for_class(x509.KeyUsage).value
        assert (usage.key_cert_sign, usage.crl_sign, usage.digital_signature) == (True, True,
                                                                                  False)
    assert load(intermediate).issuer == load(root).subject
    for device, role, rsa_key in ((server, ExtendedKeyUsageOID.SERVER_AUTH, True),
                                  (client, ExtendedKeyUsageOID.CLIENT_AUTH, False)):
        extensions = load(device).extensions
        assert not extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        usage = extensions.get_extension_for_class(x509.KeyUsage).value
        assert (usage.digital_signature, usage.key_encipherment, usage.key_cert_sign) == (
            True, rsa_key, False)
        assert list(extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [role]
    # Without a purpose, as before: no key usage extensions, good for any use.
    with pytest.raises(x509.ExtensionNotFound):
        load(make_certificate("plain")).extensions.get_extension_for_class(x509.KeyUsage)
    with pytest.raises(ValueError, match="'vpn'"):
        make_certificate(purpose="vpn")


def test_make_certificate_certifies_a_given_key():
    first = make_certificate("ven-renewed")
    renewed = make_certificate("ven-renewed", key=first.key, key_type="rsa")
    assert renewed.key is first.key  # key_type is ignored when the key is given
    assert renewed.fingerprint != first.fingerprint  # a new certificate all the same


def tls_pair(pki):
    """A real TLS connection over a socket pair: (server side, client side), handshake done,
    the client presenting VEN a's certificate to a server that requires one."""
    _, files, _ = pki
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(*files["server"])
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    server_ctx.load_verify_locations(files["ca"])
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.load_verify_locations(files["ca"])
    client_ctx.load_cert_chain(*files["a"])
    left, right = socket.socketpair()
    server = server_ctx.wrap_socket(left, server_side=True, do_handshake_on_connect=False)
    client = client_ctx.wrap_socket(right, server_hostname="localhost",
                                    do_handshake_on_connect=False)
    errors = []

    def shake(sock):
        try:
            sock.do_handshake()
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=shake, args=(s,)) for s in (server, client)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert not errors
    # TLS 1.3 sends the client's certificate with its Finished; read until the server has it.
    client.sendall(b"x")
    assert server.recv(1) == b"x"
    return server, client


def test_the_peer_certificate_of_a_tls_socket_is_the_identity(app, vtn, pki):
    _, _, vens = pki
    server, client = tls_pair(pki)
    try:
        identity = from_server_tls({"gunicorn.socket": server})
        assert identity is not None
        assert (identity.fingerprint, identity.source) == (vens["a"].fingerprint,
                                                           SOURCE_GUNICORN)
        assert identity.der == vens["a"].der
        # Through the whole pipeline, the socket in the environ as gunicorn puts it there.
        ven = make_ven(app, certificate=None, environ={"gunicorn.socket": server})
        name, reply = ven.register()
        assert reply["ven_id"] == vens["a"].fingerprint
    finally:
        client.close()
        server.close()


def test_a_plain_socket_or_a_closed_tls_socket_is_no_identity(pki):
    left, right = socket.socketpair()
    with left, right:
        assert from_server_tls({"gunicorn.socket": left}) is None
    server, client = tls_pair(pki)
    client.close()
    server.close()
    assert from_server_tls({"gunicorn.socket": server}) is None


def client_context(files, ven: str | None) -> ssl.SSLContext:
    """A TLS client that trusts the test CA and presents VEN ``ven``'s certificate (if any)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(files["ca"])
    if ven is not None:
        ctx.load_cert_chain(*files[ven])
    return ctx


def tls_gunicorn(tmp_path, files, cert_reqs: int) -> Gunicorn:
    """gunicorn ending TLS itself for tests/support/identity_app.py."""
    return Gunicorn("tests.support.identity_app:create_app()", tmp_path,
                    args=["--certfile", files["server"][0], "--keyfile", files["server"][1],
                          "--cert-reqs", str(cert_reqs), "--ca-certs", files["ca"]],
                    env={"ID_INSTANCE": str(tmp_path / "instance"),
                         "ID_STORE_URI": "sqlite:///" + str(tmp_path / "vtn.sqlite3")},
                    ssl_context=client_context(files, "a"))


def post_tls(server: Gunicorn, files, ven: str | None, service: str, payload_name: str,
             payload: dict):
    """POST one message as VEN ``ven``: (HTTP status, decoded reply, or the body if not 200)."""
    request = urllib.request.Request(
        f"{server.base}{PREFIX}/{service}", data=codec.encode(payload_name, payload),
        headers={"Content-Type": "application/xml"})
    try:
        with urllib.request.urlopen(request, timeout=10,
                                    context=client_context(files, ven)) as response:
            return response.status, codec.decode(response.read())
    except urllib.error.HTTPError as error:
        return error.code, error.read()


REGISTER = {"request_id": "r1", "profile_name": "2.0b", "transport_name": "simpleHttp",
            "report_only": False, "xml_signature": False, "ven_name": "tls-ven",
            "http_pull_model": True}


def test_gunicorn_with_required_client_certificates(tmp_path, pki):
    _, files, vens = pki
    server = tls_gunicorn(tmp_path, files, cert_reqs=2)
    try:
        status, (name, reply) = post_tls(server, files, "a", "EiRegisterParty",
                                         "oadrCreatePartyRegistration", REGISTER)
        assert (status, code(reply)) == (200, 200)
        ven_a = reply["ven_id"]
        assert ven_a == vens["a"].fingerprint
        # VEN b's certificate with VEN a's venID: refused, and a's first poll is still there.
        status, (name, reply) = post_tls(server, files, "b", "OadrPoll", "oadrPoll",
                                         {"ven_id": ven_a})
        assert (status, name, code(reply)) == (200, "oadrResponse", 463)
        status, (name, reply) = post_tls(server, files, "a", "OadrPoll", "oadrPoll",
                                         {"ven_id": ven_a})
        assert (status, name) == (200, "oadrRegisterReport")
        # No certificate at all: gunicorn refuses the TLS handshake itself.
        with pytest.raises((ssl.SSLError, ConnectionError, urllib.error.URLError)):
            post_tls(server, files, None, "OadrPoll", "oadrPoll", {"ven_id": ven_a})
    finally:
        server.stop()


def test_gunicorn_tls_that_asks_for_no_certificate_gets_403(tmp_path, pki):
    _, files, _ = pki
    server = tls_gunicorn(tmp_path, files, cert_reqs=0)  # a forgotten --cert-reqs
    try:
        # The client offers its certificate, but the server never asked for (or verified) it.
        status, body = post_tls(server, files, "a", "EiRegisterParty",
                                "oadrCreatePartyRegistration", REGISTER)
        assert status == 403
        assert b"client certificate is required" in body
    finally:
        server.stop()


# -- a reverse proxy: the certificate headers, from trusted peers only --------------------------


class ProxiedVEN(ValidatingVEN):
    """A VEN behind a TLS proxy at ``peer``: the proxy passes its certificate on in headers,
    URL-escaped as nginx's $ssl_client_escaped_cert does."""

    def __init__(self, client, *, peer: str, verify: str | None = "SUCCESS",
                 escaped: str | None = None, **kwargs):
        super().__init__(client, **kwargs)
        self.peer = peer
        self.verify = verify
        self.escaped = escaped
        self.extra_headers: dict[str, str] = {}

    def post(self, service, body, content_type="application/xml"):
        headers = dict(self.extra_headers)
        if self.verify is not None:
            headers["X-SSL-Client-Verify"] = self.verify
        if self.certificate is not None:
            headers["X-SSL-Client-Cert"] = self.escaped or quote(self.certificate.pem, safe="")
        response = self.client.post(f"{self.url_prefix}/{service}", data=body,
                                    content_type=content_type, headers=headers,
                                    environ_base={"REMOTE_ADDR": self.peer})
        return response


def proxy_app(tmp_path, trusted, **config) -> tuple[Flask, VTN]:
    app = Flask("proxied", instance_path=str(tmp_path / "instance"))
    app.config.update(TESTING=True, OPENADR_STORE_URI="memory://",
                      OPENADR_TRUSTED_PROXIES=trusted, **config)
    return app, VTN(app)


@pytest.mark.parametrize("trusted, peer", [
    ("127.0.0.1", "127.0.0.1"),
    ("10.0.0.0/8, 192.0.2.1", "10.20.30.40"),
    (["::1"], "::1"),
    (["fd00::/8"], "fd12:3456::7"),
    (["10.0.0.0/8"], "::ffff:10.0.0.7"),  # an IPv4 peer on a dual-stack listener
])
def test_the_certificate_header_of_a_trusted_proxy_identifies_the_ven(tmp_path, trusted, peer):
    app, vtn = proxy_app(tmp_path, trusted)
    ven = ProxiedVEN(app.test_client(), peer=peer)
    name, reply = ven.register()
    assert code(reply) == 200
    assert reply["ven_id"] == ven.fingerprint
    name, reply = ven.poll()
    assert name == "oadrRegisterReport"


def test_an_unescaped_plus_in_the_header_is_read_as_base64(tmp_path):
    # Some proxies leave '+', '/' and '=' as they are; '+' must not turn into a space.
    app, vtn = proxy_app(tmp_path, "127.0.0.1")
    ven = ProxiedVEN(app.test_client(), peer="127.0.0.1")
    while "+" not in ven.certificate.pem:
        ven.certificate = make_certificate("plus")
    ven.escaped = quote(ven.certificate.pem, safe="+/=")
    name, reply = ven.register()
    assert reply["ven_id"] == ven.fingerprint


@pytest.mark.parametrize("verify", ["NONE", "FAILED:certificate has expired", "success", None])
def test_a_trusted_proxy_that_did_not_verify_the_certificate_gives_no_identity(tmp_path,
                                                                              verify):
    app, vtn = proxy_app(tmp_path, "127.0.0.1")
    ven = ProxiedVEN(app.test_client(), peer="127.0.0.1", verify=verify)
    response = ven.post("EiRegisterParty", codec.encode("oadrQueryRegistration",
                                                        {"request_id": "q"}))
    assert response.status_code == 403
    with app.app_context():
        assert vtn.vens() == []


@pytest.mark.parametrize("escaped", ["garbage", quote("-----BEGIN CERTIFICATE-----\nAAAA\n"
                                                      "-----END CERTIFICATE-----\n", safe="")])
def test_an_unreadable_certificate_from_a_trusted_proxy_gives_no_identity(tmp_path, escaped):
    app, vtn = proxy_app(tmp_path, "127.0.0.1")
    ven = ProxiedVEN(app.test_client(), peer="127.0.0.1", escaped=escaped)
    response = ven.post("EiRegisterParty", codec.encode("oadrQueryRegistration",
                                                        {"request_id": "q"}))
    assert response.status_code == 403


def test_a_trusted_proxy_speaks_for_its_clients_alone(tmp_path):
    # A request from the proxy without the headers is not identified by the proxy's own TLS
    # certificate (SSL_CLIENT_CERT of its connection to the app server).
    app, vtn = proxy_app(tmp_path, "127.0.0.1")
    proxy_own = make_certificate("the proxy")
    ven = make_ven(app, certificate=proxy_own, environ={"REMOTE_ADDR": "127.0.0.1"})
    response = ven.post("EiRegisterParty", codec.encode("oadrQueryRegistration",
                                                        {"request_id": "q"}))
    assert response.status_code == 403


def test_certificate_headers_from_an_untrusted_peer_are_ignored_and_logged_once(tmp_path,
                                                                                 caplog):
    app, vtn = proxy_app(tmp_path, "10.0.0.0/8")
    forger = ProxiedVEN(app.test_client(), peer="192.0.2.9")
    body = codec.encode("oadrQueryRegistration", {"request_id": "q"})
    with caplog.at_level(logging.WARNING, logger="flask_openadr"):
        for _ in range(3):
            assert forger.post("EiRegisterParty", body).status_code == 403
    warnings = [r.getMessage() for r in caplog.records
                if "not in OPENADR_TRUSTED_PROXIES" in r.getMessage()]
    assert len(warnings) == 1
    assert "192.0.2.9" in warnings[0] and "X-SSL-Client-Cert" in warnings[0]


def test_no_trusted_proxy_by_default(tmp_path):
    app = Flask("plain", instance_path=str(tmp_path / "instance"))
    app.config.update(TESTING=True, OPENADR_STORE_URI="memory://")
    VTN(app)
    forger = ProxiedVEN(app.test_client(), peer="127.0.0.1")
    assert forger.post("EiRegisterParty", codec.encode(
        "oadrQueryRegistration", {"request_id": "q"})).status_code == 403


def test_a_forged_header_cannot_act_for_a_bound_ven_without_required_certificates(tmp_path):
    # Certificates optional (so the untrusted request is served at all): the forged header is
    # still ignored, and the caller without a certificate cannot act for a bound VEN.
    app, vtn = proxy_app(tmp_path, "10.0.0.5", OPENADR_REQUIRE_CLIENT_CERT=False)
    victim = ProxiedVEN(app.test_client(), peer="10.0.0.5")
    victim.register()
    event_id = add_event_for(vtn, app, victim.ven_id)
    before = snapshot(app, vtn)
    forger = ProxiedVEN(app.test_client(), peer="192.0.2.9", ven_id=victim.ven_id)
    forger.certificate = victim.certificate  # the victim's certificate, which is not secret
    name, reply = forger.poll()
    assert (name, code(reply)) == ("oadrResponse", 463)
    assert snapshot(app, vtn) == before
    name, reply = victim.poll()
    assert name == "oadrRegisterReport"
    name, reply = victim.poll()
    assert [e["event_descriptor"]["event_id"] for e in reply["events"]] == [event_id]


def test_proxy_fix_does_not_make_a_forwarded_address_trusted(tmp_path):
    app, vtn = proxy_app(tmp_path, "127.0.0.1")
    app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1)
    body = codec.encode("oadrQueryRegistration", {"request_id": "q"})
    # An outsider claiming, in X-Forwarded-For, to be the proxy.
    forger = ProxiedVEN(app.test_client(), peer="192.0.2.9")
    forger.extra_headers = {"X-Forwarded-For": "127.0.0.1"}
    assert forger.post("EiRegisterParty", body).status_code == 403
    # The real proxy, forwarding for a VEN somewhere on the internet.
    ven = ProxiedVEN(app.test_client(), peer="127.0.0.1")
    ven.extra_headers = {"X-Forwarded-For": "203.0.113.5"}
    name, reply = ven.register()
    assert reply["ven_id"] == ven.fingerprint


def test_identifier_matches_peers_against_networks():
    identifier = ClientIdentifier(parse_trusted_proxies("10.0.0.0/8, ::1, fe80::/10"))
    assert identifier.is_trusted_proxy("10.255.0.1")
    assert identifier.is_trusted_proxy("::1")
    assert identifier.is_trusted_proxy("fe80::1%eth0")  # a zone index is not part of it
    assert not identifier.is_trusted_proxy("11.0.0.1")
    assert not identifier.is_trusted_proxy("")  # a Unix socket peer
    assert not identifier.is_trusted_proxy("proxy.example")


# -- OPENADR_REQUIRE_CLIENT_CERT --------------------------------------------------------------


@pytest.mark.parametrize("payload_name, service, payload", [
    ("oadrQueryRegistration", "EiRegisterParty", {"request_id": "q"}),
    ("oadrCreatePartyRegistration", "EiRegisterParty", REGISTER),
    ("oadrPoll", "OadrPoll", {"ven_id": "anyone"}),
])
def test_a_request_without_a_certificate_gets_403_and_reaches_nothing(
        app, vtn, recorded, payload_name, service, payload):
    called = []
    vtn.on_query_registration(lambda p: called.append(p))
    vtn.on_create_party_registration(lambda p: called.append(p))
    vtn.on_poll(lambda ven_id: called.append(ven_id))
    registered = make_ven(app, ven_name="registered")
    registered.register()
    called.clear()
    recorded.clear()
    before = snapshot(app, vtn)
    anonymous = make_ven(app, certificate=None)
    response = anonymous.post(service, codec.encode(payload_name, payload))
    assert response.status_code == 403
    assert response.mimetype == "text/plain"
    assert "client certificate" in response.get_data(as_text=True)
    assert called == [] and recorded == []
    assert snapshot(app, vtn) == before


def test_403_comes_before_the_body_is_read(app):
    anonymous = make_ven(app, certificate=None)
    # Neither a malformed body nor a wrong content type is looked at.
    assert anonymous.post("OadrPoll", b"<not xml").status_code == 403
    assert anonymous.post("OadrPoll", b"{}", content_type="application/json").status_code == 403


def test_the_applications_own_routes_need_no_certificate(app):
    @app.get("/portal")
    def portal():
        return "portal"

    assert app.test_client().get("/portal").get_data() == b"portal"


def test_turning_certificates_off_warns_at_start_up(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="flask_openadr"):
        on = Flask("on", instance_path=str(tmp_path / "on"))
        on.config.update(OPENADR_STORE_URI="memory://")
        VTN(on)
        assert not [r for r in caplog.records if "OPENADR_REQUIRE_CLIENT_CERT" in r.getMessage()]
        off = Flask("off", instance_path=str(tmp_path / "off"))
        off.config.update(OPENADR_STORE_URI="memory://", OPENADR_REQUIRE_CLIENT_CERT=False)
        VTN(off)
    [warning] = [r for r in caplog.records if "OPENADR_REQUIRE_CLIENT_CERT" in r.getMessage()]
    assert warning.levelno == logging.WARNING
    assert "venID" in warning.getMessage() and "'off'" in warning.getMessage()


@pytest.fixture
def open_app(tmp_path, clock):
    """An app with client certificates optional, as in local development."""
    app = Flask("open", instance_path=str(tmp_path / "instance"))
    app.config.update(TESTING=True, OPENADR_STORE_URI="memory://",
                      OPENADR_REQUIRE_CLIENT_CERT=False)
    return app, VTN(app, clock=clock)


def test_without_required_certificates_a_ven_without_one_is_known_by_venid(open_app):
    app, vtn = open_app
    ven = make_ven(app, certificate=None)
    name, reply = ven.register()
    assert code(reply) == 200
    name, reply = ven.poll()
    assert name == "oadrRegisterReport"
    with app.app_context():
        assert vtn.vens()[0]["fingerprint"] is None


def test_a_bound_ven_is_never_served_to_a_caller_without_its_certificate(open_app):
    app, vtn = open_app
    ven = make_ven(app)
    ven.register()
    before = snapshot(app, vtn)
    impostor = make_ven(app, certificate=None, ven_id=ven.ven_id)
    impostor.registration_id = ven.registration_id
    name, reply = impostor.poll()
    assert (name, code(reply)) == ("oadrResponse", 463)
    name, reply = impostor.register()  # a takeover by venID
    assert code(reply) == 463
    name, reply = impostor.register(renew=True)  # by venID and registrationID
    assert code(reply) == 463
    assert snapshot(app, vtn) == before


def test_an_unbound_ven_is_claimed_by_registering_with_a_certificate(open_app):
    app, vtn = open_app
    ven = make_ven(app, certificate=None)
    ven.register()
    ven.certificate = make_certificate("now with TLS")
    name, reply = ven.poll()  # a message is not enough to bind it
    assert code(reply) == 463
    name, reply = ven.register(renew=True)
    assert code(reply) == 200
    with app.app_context():
        [record] = vtn.vens()
    assert record["fingerprint"] == ven.fingerprint
    name, reply = ven.poll()
    assert name == "oadrRegisterReport"


# -- identity binding ---------------------------------------------------------------------------


@pytest.fixture
def two_vens(app, vtn):
    """VENs a and b registered, each with its certificate; b has an event and its METADATA
    register report waiting."""
    a = make_ven(app, ven_name="ven-a")
    b = make_ven(app, ven_name="ven-b")
    assert code(a.register()[1]) == 200 and code(b.register()[1]) == 200
    a.poll()
    event_id = add_event_for(vtn, app, b.ven_id)
    return a, b, event_id


def as_other(ven, ven_id):
    """A client with ``ven``'s certificate that claims to be ``ven_id``."""
    return make_ven(ven.client.application, certificate=ven.certificate, ven_id=ven_id,
                    ven_name=ven.ven_name)


def test_certificate_a_with_venid_b_is_refused_and_changes_nothing(app, vtn, two_vens):
    a, b, event_id = two_vens
    # b answers its event first, so that a's forged answer would change something.
    b.poll()
    name, distribute = b.poll()
    assert name == "oadrDistributeEvent"
    b.created_event(distribute, "optIn")
    before = snapshot(app, vtn)
    forged = as_other(a, b.ven_id)
    name, reply = forged.poll()
    assert (name, code(reply)) == ("oadrResponse", 463)
    assert "does not belong" in reply["response"]["response_description"]
    name, reply = forged.created_event(distribute, "optOut")
    assert (name, code(reply)) == ("oadrResponse", 463)
    name, reply = forged.request_event()
    assert code(reply) == 463
    name, reply = forged.create_opt("opt-1", windows=[(utc(2026, 12, 1, 18),
                                                       timedelta(hours=1))])
    assert code(reply) == 463
    forged.registration_id = b.registration_id
    name, reply = forged.cancel_registration()
    assert code(reply) == 463
    assert snapshot(app, vtn) == before
    with app.app_context():
        [answer] = vtn.event_responses(event_id)
    assert answer["opt_type"] == "optIn"


def test_a_registration_cannot_take_over_a_preallocated_venid(app, vtn):
    calls = []
    vtn.on_create_party_registration(lambda payload: calls.append(payload["ven_name"]))
    owner = make_ven(app, ven_id="meter-7", ven_name="owner")
    assert code(owner.register()[1]) == 200
    owner.poll()
    calls.clear()
    before = snapshot(app, vtn)
    thief = make_ven(app, ven_id="meter-7", ven_name="thief")
    name, reply = thief.register()
    assert code(reply) == 463
    assert "bound to another client certificate" in reply["response"]["response_description"]
    assert "registration_id" not in reply
    assert calls == []  # refused before the handler is asked
    assert snapshot(app, vtn) == before


def test_a_registration_cannot_take_over_a_registration_id(app, vtn, two_vens):
    a, b, _ = two_vens
    before = snapshot(app, vtn)
    # b's registrationID, without a venID: it is not the current registration of this caller.
    thief = make_ven(app, certificate=a.certificate)
    thief.registration_id = b.registration_id
    name, reply = thief.register(renew=True)
    assert code(reply) == 452
    # With b's venID too: b is bound to another certificate.
    thief.ven_id = b.ven_id
    name, reply = thief.register(renew=True)
    assert code(reply) == 463
    # A certificate the VTN never saw, with both of b's IDs.
    stranger = make_ven(app, ven_id=b.ven_id)
    stranger.registration_id = b.registration_id
    assert code(stranger.register(renew=True)[1]) == 463
    assert snapshot(app, vtn) == before
    name, reply = b.poll()
    assert name == "oadrRegisterReport"


def test_registering_again_from_the_same_certificate_keeps_the_venid(app, vtn):
    ven = make_ven(app)
    _, first = ven.register()
    with app.app_context():
        vtn.update_ven(ven.ven_id, group_ids=["north"])
    # The VEN restarts and has lost its IDs.
    restarted = make_ven(app, certificate=ven.certificate)
    _, again = restarted.register()
    assert code(again) == 200
    assert again["ven_id"] == first["ven_id"]
    assert again["registration_id"] != first["registration_id"]  # a new registration
    with app.app_context():
        [record] = vtn.vens()
    assert record["registration_id"] == again["registration_id"]
    assert record["group_ids"] == ["north"]


def test_registering_again_keeps_a_venid_minted_by_the_handler(app, vtn):
    minted = iter(["ven-1", "ven-2"])

    @vtn.on_create_party_registration
    def register(payload):
        # The handler names a venID only for VENs the VTN does not know yet.
        return None if payload["bound_ven_id"] else {"ven_id": next(minted)}

    ven = make_ven(app)
    assert ven.register()[1]["ven_id"] == "ven-1"
    again = make_ven(app, certificate=ven.certificate)
    assert again.register()[1]["ven_id"] == "ven-1"
    with app.app_context():
        assert [v["ven_id"] for v in vtn.vens()] == ["ven-1"]


def test_a_handler_cannot_hand_out_a_venid_bound_to_another_certificate(app, vtn):
    vtn.on_create_party_registration(lambda payload: {"ven_id": "taken"})
    owner = make_ven(app)
    assert owner.register()[1]["ven_id"] == "taken"
    before = snapshot(app, vtn)
    name, reply = make_ven(app, ven_name="other").register()
    assert code(reply) == 463
    assert snapshot(app, vtn) == before


# -- provisioning with add_ven --------------------------------------------------------------------


def test_add_ven_enrolls_a_certificate_before_the_ven_connects(app, vtn):
    seen = []
    vtn.on_create_party_registration(lambda payload: seen.append(payload["bound_ven_id"]))
    certificate = make_certificate("meter-7")
    with app.app_context():
        enrolled = vtn.add_ven("meter-7", fingerprint=certificate.fingerprint.lower(),
                               ven_name="Meter 7", group_ids=["north"])
        [listed] = vtn.vens()
    assert enrolled["fingerprint"] == certificate.fingerprint  # canonical form
    assert listed["registration_id"] is None and listed["ven_name"] == "Meter 7"
    # Another certificate cannot register as meter-7.
    thief = make_ven(app, ven_id="meter-7")
    assert code(thief.register()[1]) == 463
    # The enrolled certificate gets meter-7, even without sending it, and keeps its groups.
    ven = make_ven(app, certificate=certificate)
    name, reply = ven.register()
    assert (code(reply), reply["ven_id"]) == (200, "meter-7")
    assert seen == ["meter-7"]  # the thief was refused before the handler was asked
    with app.app_context():
        [record] = vtn.vens()
    assert record["group_ids"] == ["north"] and record["registration_id"] == ven.registration_id
    event_id = add_event_for(vtn, app, "meter-7")
    ven.poll()
    name, reply = ven.poll()
    assert [e["event_descriptor"]["event_id"] for e in reply["events"]] == [event_id]


def test_add_ven_defaults_the_venid_to_the_fingerprint(app, vtn):
    certificate = make_certificate()
    with app.app_context():
        vtn.add_ven(fingerprint=certificate.fingerprint.replace(":", ""))
    ven = make_ven(app, certificate=certificate)
    assert ven.register()[1]["ven_id"] == certificate.fingerprint


def test_add_ven_refuses_what_would_be_ambiguous(app, vtn):
    certificate = make_certificate()
    with app.app_context():
        vtn.add_ven("v1", fingerprint=certificate.fingerprint)
        with pytest.raises(ValueError, match="'v1' is already known"):
            vtn.add_ven("v1", fingerprint=make_certificate().fingerprint)
        with pytest.raises(ValueError, match="already belongs to venID 'v1'"):
            vtn.add_ven("v2", fingerprint=certificate.fingerprint)
        with pytest.raises(ValueError, match="'AB:CD' is not 10 hex bytes"):
            vtn.add_ven("v3", fingerprint="AB:CD")
        with pytest.raises(TypeError, match="group_ids"):
            vtn.add_ven("v4", fingerprint=make_certificate().fingerprint, group_ids="north")
        assert [v["ven_id"] for v in vtn.vens()] == ["v1"]


def test_update_ven_rebinds_a_ven_to_its_renewed_certificate(app, vtn):
    ven = make_ven(app)
    ven.register()
    ven.poll()
    old = ven.certificate
    renewed = make_certificate("renewed")
    with app.app_context():
        vtn.update_ven(ven.ven_id, fingerprint=renewed.fingerprint)
    other = make_ven(app, ven_name="other")
    other.register()
    ven.certificate = renewed
    name, reply = ven.poll()
    assert (name, code(reply)) == ("oadrResponse", 200)
    ven.certificate = old
    assert code(ven.poll()[1]) == 463
    with app.app_context():
        with pytest.raises(ValueError, match="already belongs"):
            vtn.update_ven(ven.ven_id, fingerprint=other.fingerprint)
        with pytest.raises(ValueError, match="not 10 hex bytes"):
            vtn.update_ven(ven.ven_id, fingerprint="nope")
        assert vtn.store.get_ven(ven.ven_id)["fingerprint"] == renewed.fingerprint


def test_of_two_concurrent_registrations_for_one_venid_the_later_is_refused(app, vtn):
    # User code (here on_vtn_reports) runs after the binding checks and before the
    # registration is written; a second registration for the same new venID, from another
    # certificate, completes meanwhile (as it could on another worker).
    rival = make_ven(app, ven_id="new-ven", ven_name="rival")
    raced = []

    @vtn.on_vtn_reports
    def offers(ven_id):
        if not raced:
            raced.append(ven_id)
            assert code(rival.register()[1]) == 200
        return None

    first = make_ven(app, ven_id="new-ven", ven_name="first")
    name, reply = first.register()
    assert raced == ["new-ven"]
    assert code(reply) == 463
    with app.app_context():
        [record] = vtn.vens()
    assert (record["ven_name"], record["fingerprint"]) == ("rival", rival.fingerprint)
    assert record["registration_id"] == rival.registration_id


@pytest.mark.parametrize("key_type", ["ec", "rsa"])
def test_fingerprints_agree_with_openleadrs_independent_implementation(key_type):
    # The real VEN client computes the VTN's fingerprint the same way (vtn_fingerprint=).
    utils = pytest.importorskip("openleadr.utils")
    certificate = make_certificate(key_type=key_type)
    assert certificate.fingerprint == utils.certificate_fingerprint(certificate.pem)
    assert len(certificate.fingerprint) == 29
    assert certificate.fingerprint == certificate.fingerprint.upper()
