"""The deployment recipe, run for real: openleadr VENs through nginx with mutual TLS, and through
gunicorn ending TLS itself, against the files in example_app/deploy/ that the docs show.

Each deployment is gunicorn (2 workers, the deploy gunicorn config, tests/support/e2e_app.py) on one
SQLite file; the VTN signs with the key of its TLS certificate, the VENs sign their messages and
pin the VTN's fingerprint, so every reply they accept carries a signature they verified. The
attack tests check the refusal and that the store, dumped row by row, did not change.

Servers are module-scoped (one set per VTN key type) to keep the file fast.
"""
from __future__ import annotations

import asyncio
import base64
import http.client
import json
import os
import socket
import sqlite3
import ssl
import urllib.parse
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import pytest
from lxml import etree

from flask_openadr import codec
from tests.support.e2e import E2EGunicorn, operator_app, read_log, stop_client, wait_for
from tests.support.nginx import DEPLOY, Nginx
from tests.support.pki import KEY_TYPES, openadr_fingerprint

openleadr = pytest.importorskip("openleadr")

# One pytest-xdist worker runs this whole module (setup.cfg: --dist loadgroup), so that its
# module-scoped deployments (nginx and gunicorn) start once, not once per worker.
pytestmark = pytest.mark.xdist_group("deploy")

PREFIX = "/OpenADR2/Simple/2.0b"
GUNICORN_CONF = os.path.join(DEPLOY, "gunicorn.conf.py")
GUNICORN_TLS_CONF = os.path.join(DEPLOY, "gunicorn_tls.conf.py")
DS = "{http://www.w3.org/2000/09/xmldsig#}"
# A source address of the loopback network that is not the trusted proxy (127.0.0.1): a client
# on this host that goes around nginx straight to gunicorn's port.
UNTRUSTED_SOURCE = "127.0.0.2"


def app_config(vtn, **extra) -> dict:
    """The VTN settings of every deployment here: client certificates required (the default,
    which e2e_app turns off for its plain-HTTP tests), signing with the key of the VTN's TLS
    certificate, telemetry requested, and no sweeper, so that nothing writes to the store behind
    a test's back."""
    return {"OPENADR_REQUIRE_CLIENT_CERT": True,
            "OPENADR_SIGNING_CERT": vtn.cert_path, "OPENADR_SIGNING_KEY": vtn.key_path,
            "OPENADR_REPORT_POLICY": "telemetry", "OPENADR_BACKGROUND": "off", **extra}


@dataclass
class Deployment:
    key_type: str  # of the VTN certificate
    vtn: object  # its tests/support/pki.py Credential
    url: str  # where VENs send OpenADR: nginx, or gunicorn ending TLS
    port: int  # of that URL
    store_path: str
    log_path: str
    operator: tuple  # (app, VTN) of an operator process on the same store
    gunicorn: E2EGunicorn
    nginx: Nginx | None = None

    def store_dump(self) -> list[str]:
        """Every row of the store, as SQL: equal dumps mean an unchanged store."""
        connection = sqlite3.connect(self.store_path)
        try:
            return list(connection.iterdump())
        finally:
            connection.close()


def sqlite_file(directory) -> tuple[str, str]:
    path = str(directory / "vtn.sqlite3")
    return path, "sqlite:///" + path


@pytest.fixture(scope="module", params=KEY_TYPES)
def behind_nginx(request, pki, tmp_path_factory):
    """nginx (the shipped site, TLS snippet for the VTN key type) in front of gunicorn."""
    key_type = request.param
    directory = tmp_path_factory.mktemp(f"nginx-{key_type}")
    store_path, store_uri = sqlite_file(directory)
    vtn = pki.vtn[key_type]
    config = app_config(vtn, OPENADR_TRUSTED_PROXIES="127.0.0.1")
    server = E2EGunicorn(directory, store_uri, directory / "handlers.jsonl", workers=2,
                         args=["-c", GUNICORN_CONF], env={"E2E_CONFIG": json.dumps(config)})
    proxy = None
    try:
        proxy = Nginx(str(directory / "nginx"), vtn=vtn, ven_ca=pki.ca_bundle,
                      upstream=f"127.0.0.1:{server.port}")
        yield Deployment(key_type, vtn, proxy.ven_base + PREFIX, proxy.ven_port, store_path,
                         str(directory / "handlers.jsonl"),
                         operator_app(directory, store_uri), server, proxy)
    finally:
        if proxy is not None:
            proxy.stop()
        server.stop()


@pytest.fixture(scope="module", params=KEY_TYPES)
def gunicorn_tls(request, pki, tmp_path_factory):
    """gunicorn ending TLS itself with the shipped gunicorn_tls.conf.py, no proxy."""
    key_type = request.param
    directory = tmp_path_factory.mktemp(f"gunicorn-tls-{key_type}")
    store_path, store_uri = sqlite_file(directory)
    vtn = pki.vtn[key_type]
    server = E2EGunicorn(directory, store_uri, directory / "handlers.jsonl", workers=2,
                         args=["-c", GUNICORN_TLS_CONF],
                         env={"E2E_CONFIG": json.dumps(app_config(vtn)),
                              "VTN_CERT": vtn.cert_path, "VTN_KEY": vtn.key_path,
                              "VEN_CA": pki.ca_bundle},
                         ssl_context=client_context(pki, pki.ven("health-check", key_type)))
    try:
        yield Deployment(key_type, vtn, server.base + PREFIX, server.port, store_path,
                         str(directory / "handlers.jsonl"), operator_app(directory, store_uri),
                         server)
    finally:
        server.stop()


# -- clients ----------------------------------------------------------------------------------


def client_context(pki, credential=None, *, ciphers=None) -> ssl.SSLContext:
    """A TLS client that trusts the test roots and presents ``credential`` (if any)."""
    context = ssl.create_default_context(cafile=pki.ca_bundle)
    if credential is not None:
        context.load_cert_chain(credential.cert_path, credential.key_path)
    if ciphers:
        context.set_ciphers(ciphers)
    return context


def post(url, payload_name, payload, *, context=None, source="127.0.0.1", headers=None):
    """POST one OpenADR message (built by our codec, unsigned) from ``source``; returns
    (HTTP status, (payload name, reply dict) or the body text when the status is not 200)."""
    parts = urllib.parse.urlsplit(url)
    service = {"oadrPoll": "OadrPoll", "oadrCreatedEvent": "EiEvent",
               "oadrRequestEvent": "EiEvent", "oadrQueryRegistration": "EiRegisterParty",
               "oadrCreatePartyRegistration": "EiRegisterParty"}[payload_name]
    if parts.scheme == "https":
        connection = http.client.HTTPSConnection(parts.hostname, parts.port, timeout=10,
                                                 context=context, source_address=(source, 0))
    else:
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10,
                                                source_address=(source, 0))
    try:
        connection.request("POST", f"{parts.path}/{service}",
                           body=codec.encode(payload_name, payload),
                           headers={"Content-Type": "application/xml", **(headers or {})})
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()
    if response.status != 200:
        return response.status, body.decode("utf-8", "replace")
    return 200, codec.decode(body)


def registration(ven_name, **extra) -> dict:
    return {"request_id": f"reg-{ven_name}", "profile_name": "2.0b",
            "transport_name": "simpleHttp", "report_only": False, "xml_signature": False,
            "ven_name": ven_name, "http_pull_model": True, **extra}


def register(url, context, ven_name) -> tuple[str, str]:
    """Register over HTTP with the certificate of ``context``; (venID, registrationID)."""
    status, (name, reply) = post(url, "oadrCreatePartyRegistration", registration(ven_name),
                                 context=context)
    assert status == 200 and name == "oadrCreatedPartyRegistration"
    assert reply["response"]["response_code"] == 200, reply["response"]
    return reply["ven_id"], reply["registration_id"]


def response_code(result) -> int:
    """The OpenADR response code of a reply that must be an answer, not a delivery: a refused
    poll gets oadrResponse, never the message waiting for the VEN it claimed to be."""
    status, (name, reply) = result
    assert status == 200, result
    assert "response" in reply, f"expected a reply with a response code, got {name}: {reply}"
    return reply["response"]["response_code"]


def signer_fingerprint(message: bytes) -> str | None:
    """The fingerprint of the certificate in a message's ds:Signature, or None when unsigned."""
    root = etree.fromstring(message)
    signature = root.find(f"{DS}Signature")
    if signature is None:
        return None
    der = base64.b64decode(signature.findtext(f".//{DS}X509Certificate"))
    return openadr_fingerprint(der)


def stored_ven(deployment, ven_id) -> dict:
    app, vtn = deployment.operator
    with app.app_context():
        [ven] = [v for v in vtn.vens() if v["ven_id"] == ven_id]
    return ven


def same_fingerprint(a, b) -> bool:
    return a is not None and b is not None and (
        a.replace(":", "").upper() == b.replace(":", "").upper())


# -- openleadr VENs ---------------------------------------------------------------------------


def openleadr_ven(deployment, pki, credential, ven_name):
    """openleadr's VEN with a client certificate that it also signs with, trusting the test
    roots and pinning the VTN's fingerprint, so it accepts only replies the VTN signed."""
    client = openleadr.OpenADRClient(
        ven_name=ven_name, vtn_url=deployment.url, cert=credential.cert_path,
        key=credential.key_path, ca_file=pki.ca_bundle,
        vtn_fingerprint=deployment.vtn.fingerprint, show_fingerprint=False, allow_jitter=False)
    sent, received = [], []
    client.hooks["before_send_xml"].append(lambda xml: sent.append(xml.encode("utf-8")))
    client.hooks["after_receive_xml"].append(lambda xml: received.append(xml.encode("utf-8")))
    return client, sent, received


def assert_all_signed(sent, received, ven, vtn):
    """Every message went out signed by the VEN and came back signed by the VTN."""
    assert sent and received
    assert {signer_fingerprint(m) for m in sent} == {ven.fingerprint}
    assert {signer_fingerprint(m) for m in received} == {vtn.fingerprint}


def run_full_scenario(deployment, pki, ven_key_type):
    """Registration, an event answered with optIn, and telemetry report data, all signed."""
    credential = pki.ven(f"full-{deployment.key_type}", ven_key_type)
    client, sent, received = openleadr_ven(deployment, pki, credential, credential.name)
    events: list[dict] = []
    sampled: list[float] = []
    app, vtn = deployment.operator

    def read_power():
        sampled.append(float(len(sampled) + 1))
        return sampled[-1]

    async def on_event(event):
        events.append(event)
        return "optIn"

    client.add_handler("on_event", on_event)
    client.add_report(callback=read_power, resource_id="meter-1", measurement="power_real",
                      sampling_rate=timedelta(seconds=1), report_specifier_id="spec-deploy",
                      r_id="rid-power", report_duration=timedelta(hours=1))

    def updates():
        return [e for e in read_log(deployment.log_path)
                if e["kind"] == "update_report" and e["ven_id"] == client.ven_id]

    async def scenario():
        await client.run()
        try:
            # openleadr drops every reply whose signature it cannot verify against the pinned
            # fingerprint, so a registration ID means the VTN's signed reply was verified.
            assert client.registration_id and client.ven_id
            with app.app_context():
                event_id = vtn.add_event(
                    ven_id=client.ven_id, signal_name="SIMPLE", signal_type="level",
                    intervals=[{"dtstart": datetime.now(timezone.utc) + timedelta(hours=1),
                                "duration": timedelta(minutes=30), "signal_payload": 2.0}])

            def opted_in():
                with app.app_context():
                    return vtn.event_responses(event_id)

            await wait_for(opted_in)
            await wait_for(lambda: len(updates()) >= 2)
            return event_id
        finally:
            await stop_client(client)

    event_id = asyncio.run(scenario())
    assert [e["event_descriptor"]["event_id"] for e in events] == [event_id]
    with app.app_context():
        responses = vtn.event_responses(event_id)
    assert {(r["ven_id"], r["opt_type"]) for r in responses} == {(client.ven_id, "optIn")}
    ven = stored_ven(deployment, client.ven_id)
    assert same_fingerprint(ven["fingerprint"], credential.fingerprint)
    # The registration handler was given the certificate nginx or gunicorn verified.
    handled = [e for e in read_log(deployment.log_path)
               if e["kind"] == "registration" and e["ven_name"] == credential.name]
    assert handled and all(same_fingerprint(e["fingerprint"], credential.fingerprint)
                           for e in handled)
    points = [point for update in updates() for point in update["points"]]
    assert {r_id for _, r_id, _ in points} == {"rid-power"}
    assert {value for _, _, value in points} <= set(sampled)
    assert_all_signed(sent, received, credential, deployment.vtn)


def run_registration(deployment, pki, ven_key_type, name="cross"):
    """Query and create a registration (signed both ways), nothing more; the venID."""
    credential = pki.ven(f"{name}-{deployment.key_type}", ven_key_type)
    client, sent, received = openleadr_ven(deployment, pki, credential, credential.name)

    async def scenario():
        try:
            await client.query_registration()
            await client.create_party_registration()
        finally:
            if client.client_session is not None:
                await client.client_session.close()

    asyncio.run(scenario())
    assert client.registration_id and client.ven_id
    assert same_fingerprint(stored_ven(deployment, client.ven_id)["fingerprint"],
                            credential.fingerprint)
    assert_all_signed(sent, received, credential, deployment.vtn)
    return client.ven_id


# -- through nginx ----------------------------------------------------------------------------


def test_openleadr_ven_through_nginx_same_key_type(behind_nginx, pki):
    """RSA VTN x RSA VEN and ECDSA VTN x ECDSA VEN: the whole exchange."""
    run_full_scenario(behind_nginx, pki, behind_nginx.key_type)


def test_openleadr_ven_through_nginx_other_key_type_registers(behind_nginx, pki):
    """RSA VTN x ECDSA VEN and ECDSA VTN x RSA VEN: registration, signed both ways."""
    other = next(k for k in KEY_TYPES if k != behind_nginx.key_type)
    ven_id = run_registration(behind_nginx, pki, other)
    # The VEN restarts without its venID: the same certificate gets the same VEN back.
    assert run_registration(behind_nginx, pki, other) == ven_id
    fingerprint = pki.ven(f"cross-{behind_nginx.key_type}", other).fingerprint
    app, vtn = behind_nginx.operator
    with app.app_context():
        assert [v["ven_id"] for v in vtn.vens()
                if same_fingerprint(v.get("fingerprint"), fingerprint)] == [ven_id]


def test_a_ven_enrolled_by_fingerprint_gets_its_ven_id_through_nginx(behind_nginx, pki):
    """The provisioning recipe: the operator enrolls the VEN's fingerprint before it connects."""
    credential = pki.ven(f"enrolled-{behind_nginx.key_type}", behind_nginx.key_type)
    app, vtn = behind_nginx.operator
    with app.app_context():
        vtn.add_ven(f"meter-{behind_nginx.key_type}", fingerprint=credential.fingerprint,
                    group_ids=["north"])
    assert run_registration(behind_nginx, pki, behind_nginx.key_type, name="enrolled") == (
        f"meter-{behind_nginx.key_type}")
    assert stored_ven(behind_nginx, f"meter-{behind_nginx.key_type}")["group_ids"] == ["north"]


def assert_openadr_suites_over_tls_1_2_only(deployment, pki):
    ven = pki.ven("tls-probe", deployment.key_type)
    suites = {"rsa": ["AES128-SHA256", "ECDHE-RSA-AES128-SHA256"],
              "ecdsa": ["ECDHE-ECDSA-AES128-SHA256"]}[deployment.key_type]
    for suite in suites:
        context = client_context(pki, ven, ciphers=suite)
        with socket.create_connection(("127.0.0.1", deployment.port), timeout=5) as raw:
            with context.wrap_socket(raw, server_hostname="localhost") as tls:
                assert tls.cipher()[:2] == (suite, "TLSv1.2")
    context = client_context(pki, ven)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    with pytest.raises(ssl.SSLError):
        with socket.create_connection(("127.0.0.1", deployment.port), timeout=5) as raw:
            context.wrap_socket(raw, server_hostname="localhost").close()


def test_nginx_offers_the_openadr_cipher_suites_over_tls_1_2_only(behind_nginx, pki):
    assert_openadr_suites_over_tls_1_2_only(behind_nginx, pki)


def test_nginx_refuses_a_client_without_a_certificate_or_from_another_ca(behind_nginx, pki):
    """nginx answers 400 itself (it checks the certificate after the handshake): the request
    never reaches gunicorn, and the store does not change."""
    before = behind_nginx.store_dump()
    log_before = read_log(behind_nginx.log_path)
    for context, reason in [(client_context(pki), "No required SSL certificate was sent"),
                            (client_context(pki, pki.rogue_ven), "The SSL certificate error")]:
        status, body = post(behind_nginx.url, "oadrCreatePartyRegistration",
                            registration("intruder"), context=context)
        assert status == 400 and reason in body
    assert behind_nginx.store_dump() == before
    assert read_log(behind_nginx.log_path) == log_before


def test_nginx_serves_only_openadr_to_vens_and_no_openadr_on_the_portal(behind_nginx, pki):
    ven_context = client_context(pki, pki.ven("portal-probe", behind_nginx.key_type))
    base = behind_nginx.nginx.ven_base
    for path in ("/", "/health", "/operator/events"):
        connection = http.client.HTTPSConnection("127.0.0.1", behind_nginx.port,
                                                 context=ven_context, timeout=10)
        connection.request("GET", path)
        assert connection.getresponse().status == 404, base + path
        connection.close()
    portal = http.client.HTTPSConnection("127.0.0.1", behind_nginx.nginx.portal_port,
                                         context=client_context(pki), timeout=10)
    portal.request("GET", "/health")
    response = portal.getresponse()
    assert (response.status, response.read()) == (200, b"ok")
    portal.close()
    before = behind_nginx.store_dump()
    status, body = post(behind_nginx.nginx.portal_base + PREFIX, "oadrCreatePartyRegistration",
                        registration("via-portal"), context=client_context(pki))
    assert status == 404
    assert behind_nginx.store_dump() == before


# -- attacks ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def victim(behind_nginx, pki):
    """VEN B registered through nginx, with an event waiting in its outbox."""
    credential = pki.ven(f"victim-{behind_nginx.key_type}", behind_nginx.key_type)
    context = client_context(pki, credential)
    ven_id, registration_id = register(behind_nginx.url, context, credential.name)
    app, vtn = behind_nginx.operator
    with app.app_context():
        event_id = vtn.add_event(
            ven_id=ven_id, signal_name="SIMPLE", signal_type="level",
            intervals=[{"dtstart": datetime.now(timezone.utc) + timedelta(hours=2),
                        "duration": timedelta(minutes=30), "signal_payload": 1.0}])
    return credential, ven_id, event_id, registration_id


@pytest.fixture(scope="module")
def attacker(behind_nginx, pki):
    """VEN A: registered through nginx in its own name, with its own certificate."""
    credential = pki.ven(f"attacker-{behind_nginx.key_type}", behind_nginx.key_type)
    context = client_context(pki, credential)
    return credential, register(behind_nginx.url, context, credential.name)[0], context


def created_event(ven_id, event_id, opt_type) -> dict:
    return {"response": {"response_code": 200, "request_id": "r-created"}, "ven_id": ven_id,
            "event_responses": [{"response_code": 200, "request_id": "r-dist",
                                 "qualified_event_id": {"event_id": event_id,
                                                        "modification_number": 0},
                                 "opt_type": opt_type}]}


def test_certificate_a_with_ven_id_b_through_nginx_is_refused(behind_nginx, pki, victim,
                                                              attacker):
    credential_b, ven_b, event_id, _ = victim
    _, _, context_a = attacker
    before = behind_nginx.store_dump()
    # A polls as B (to take B's event) and answers B's event with an optOut; A also sends B's
    # certificate in the header the VTN reads, which nginx replaces with A's own.
    forged = {"X-SSL-Client-Cert": urllib.parse.quote(credential_b.cert_pem),
              "X-SSL-Client-Verify": "SUCCESS"}
    # The same with underscores, which WSGI servers map to the same environ key as dashes.
    underscored = {name.replace("-", "_"): value for name, value in forged.items()}
    for headers in (None, forged, underscored):
        assert response_code(post(behind_nginx.url, "oadrPoll", {"ven_id": ven_b},
                                  context=context_a, headers=headers)) == 463
        assert response_code(post(behind_nginx.url, "oadrCreatedEvent",
                                  created_event(ven_b, event_id, "optOut"),
                                  context=context_a, headers=headers)) == 463
    assert behind_nginx.store_dump() == before
    # B still gets what was waiting for it, from its own certificate.
    context_b = client_context(pki, credential_b)
    names = []
    for _ in range(2):
        status, (name, reply) = post(behind_nginx.url, "oadrPoll", {"ven_id": ven_b},
                                     context=context_b)
        names.append(name)
        if name == "oadrDistributeEvent":
            assert [e["event_descriptor"]["event_id"] for e in reply["events"]] == [event_id]
    assert "oadrDistributeEvent" in names


def test_registration_takeover_through_nginx_is_refused(behind_nginx, victim, attacker):
    """A re-registers with B's venID, or with B's registrationID: never a takeover."""
    _, ven_b, _, registration_b = victim
    _, _, context_a = attacker
    before = behind_nginx.store_dump()
    for claim in ({"ven_id": ven_b}, {"registration_id": registration_b}):
        status, (name, reply) = post(behind_nginx.url, "oadrCreatePartyRegistration",
                                     registration("takeover", **claim), context=context_a)
        assert status == 200 and name == "oadrCreatedPartyRegistration"
        assert reply["response"]["response_code"] in (452, 463), (claim, reply["response"])
    assert behind_nginx.store_dump() == before


def test_straight_to_gunicorn_without_a_certificate_gets_403(behind_nginx, victim):
    _, ven_b, _, _ = victim
    before = behind_nginx.store_dump()
    plain = behind_nginx.gunicorn.base + PREFIX
    for source in (UNTRUSTED_SOURCE, "127.0.0.1"):  # around nginx; or from its address
        status, body = post(plain, "oadrPoll", {"ven_id": ven_b}, source=source)
        assert status == 403, (source, status, body)
        status, body = post(plain, "oadrCreatePartyRegistration", registration("bare"),
                            source=source)
        assert status == 403, (source, status, body)
    assert behind_nginx.store_dump() == before


def test_forged_certificate_header_from_an_untrusted_peer_gets_403(behind_nginx, pki, victim):
    credential_b, ven_b, event_id, _ = victim
    plain = behind_nginx.gunicorn.base + PREFIX
    forged = {"X-SSL-Client-Cert": urllib.parse.quote(credential_b.cert_pem),
              "X-SSL-Client-Verify": "SUCCESS"}
    before = behind_nginx.store_dump()
    status, body = post(plain, "oadrPoll", {"ven_id": ven_b}, source=UNTRUSTED_SOURCE,
                        headers=forged)
    assert status == 403, body
    status, body = post(plain, "oadrCreatedEvent", created_event(ven_b, event_id, "optOut"),
                        source=UNTRUSTED_SOURCE, headers=forged)
    assert status == 403, body
    assert behind_nginx.store_dump() == before
    # The same header from the trusted proxy's address is believed: the 403 above came from
    # where the request came from, not from a header the VTN could not read.
    assert response_code(post(plain, "oadrQueryRegistration",
                              {"request_id": "q-trusted"}, headers=forged)) == 200


# -- gunicorn ending TLS itself ---------------------------------------------------------------


def test_openleadr_ven_to_gunicorn_tls(gunicorn_tls, pki):
    run_full_scenario(gunicorn_tls, pki, gunicorn_tls.key_type)


def test_gunicorn_tls_offers_the_openadr_cipher_suites_over_tls_1_2_only(gunicorn_tls, pki):
    assert_openadr_suites_over_tls_1_2_only(gunicorn_tls, pki)


def test_gunicorn_tls_refuses_no_certificate_and_another_ca_in_the_handshake(gunicorn_tls, pki):
    before = gunicorn_tls.store_dump()
    for context in (client_context(pki), client_context(pki, pki.rogue_ven)):
        with pytest.raises((ssl.SSLError, ConnectionError)):
            post(gunicorn_tls.url, "oadrCreatePartyRegistration", registration("intruder"),
                 context=context)
    assert gunicorn_tls.store_dump() == before


def test_certificate_a_with_ven_id_b_to_gunicorn_tls_is_refused(gunicorn_tls, pki):
    credential_b = pki.ven(f"tls-victim-{gunicorn_tls.key_type}", gunicorn_tls.key_type)
    credential_a = pki.ven(f"tls-attacker-{gunicorn_tls.key_type}", gunicorn_tls.key_type)
    ven_b, _ = register(gunicorn_tls.url, client_context(pki, credential_b), credential_b.name)
    context_a = client_context(pki, credential_a)
    register(gunicorn_tls.url, context_a, credential_a.name)
    before = gunicorn_tls.store_dump()
    # No proxy is trusted here, so a certificate header changes nothing either.
    forged = {"X-SSL-Client-Cert": urllib.parse.quote(credential_b.cert_pem),
              "X-SSL-Client-Verify": "SUCCESS"}
    for headers in (None, forged):
        assert response_code(post(gunicorn_tls.url, "oadrPoll", {"ven_id": ven_b},
                                  context=context_a, headers=headers)) == 463
    assert gunicorn_tls.store_dump() == before
