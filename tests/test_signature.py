"""XML signatures and replay protection: sign/verify, the signing flows, and every refusal.

Each refusal goes through the Flask test client and asserts the response code of the paired reply
and that the store is unchanged. Keys are made once per session with ``cryptography``.
"""
from __future__ import annotations

import base64
import copy
import hashlib
import hmac
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from flask import Flask
from lxml import etree

from flask_openadr import VTN, codec
from flask_openadr.codec.convert import encode_element
from flask_openadr.errors import ComplianceError, ConfigurationError, InvalidData, NotRegistered
from flask_openadr.security import signature
from flask_openadr.security.fingerprint import fingerprint_from_pem
from flask_openadr.security.signature import (
    C14N, DS, DSP, ECDSA_SHA256, EXC_C14N, RSA_SHA256, SHA256, load_signer, sign, verify,
)
from flask_openadr.services.registration import RECORD_KINDS
from flask_openadr.testing import VENTestClient
from tests.support.certs import make_identity
from tests.support.clock import T0
from tests.support.vens import make_ven
from tests.support.xsd import assert_valid

OADR = "http://openadr.org/oadr-2.0b/2012/07"


def ds(local):
    return f"{{{DS}}}{local}"


@pytest.fixture(scope="session")
def identities():
    """Certificates and keys (PEM) for the VTN and VENs, RSA-2048 and P-256."""
    return {name: make_identity(kind, name) for name, kind in [
        ("vtn-rsa", "rsa"), ("vtn-ec", "ec"), ("ven-rsa", "rsa"), ("ven-ec", "ec"),
        ("other-ec", "ec")]}


@pytest.fixture(params=["vtn-rsa", "vtn-ec"])
def vtn_identity(request, identities):
    return identities[request.param]


@pytest.fixture
def signing_app(tmp_path, store_uri, clock, vtn_identity):
    app = Flask("signing_vtn", instance_path=str(tmp_path / "instance"))
    cert, key = vtn_identity
    app.config.update(TESTING=True, OPENADR_STORE_URI=store_uri, OPENADR_VTN_ID="TEST-VTN",
                      OPENADR_SIGNING_CERT=cert, OPENADR_SIGNING_KEY=key)
    VTN(app, clock=clock)
    return app


def signing_ven(app, identity, clock, *, tls=None, vtn_identity=None, **kwargs):
    """A VEN that signs with ``identity`` and connects with the TLS certificate ``tls``."""
    cert, key = identity
    tls_cert = (tls or identity)[0]
    return make_ven(app, signing_cert=cert, signing_key=key, clock=clock,
                    environ={"SSL_CLIENT_CERT": tls_cert},
                    vtn_fingerprint=(fingerprint_from_pem(vtn_identity[0])
                                     if vtn_identity else None), **kwargs)


def store_of(app):
    return app.extensions["openadr"].context.store


def snapshot(app):
    """Everything a refused message must leave unchanged."""
    store = store_of(app)
    vens = store.list_vens()
    ids = [ven["ven_id"] for ven in vens]
    return {
        "vens": vens,
        "events": store.list_events(),
        "outbox": {v: store.list_outbox(v) for v in ids},
        "delivered": {v: store.get_delivered(v) for v in ids},
        "liveness": store.list_liveness(),
        "records": {(kind, v): store.list_records(kind, v) for kind in RECORD_KINDS
                    for v in ids},
    }


@pytest.fixture
def registered(signing_app, identities, clock, vtn_identity):
    """A P-256 VEN registered with oadrXmlSignature=true (its METADATA report left queued)."""
    ven = signing_ven(signing_app, identities["ven-ec"], clock, vtn_identity=vtn_identity)
    name, reply = ven.register(xml_signature=True)
    assert reply["response"]["response_code"] == 200, reply
    return ven


def code_of(ven, response):
    """The response code of a refused message's reply, which must itself be signed."""
    assert response.status_code == 200, response.get_data(as_text=True)
    name, reply = ven.decode_reply(response.get_data())
    assert ven.last_signature is not None
    return name, reply["response"]["response_code"], reply["response"]["response_description"]


def refused(app, ven, service, body, code, match=None):
    before = snapshot(app)
    name, got, description = code_of(ven, ven.post(service, body))
    assert got == code, description
    if match:
        assert match in description
    assert snapshot(app) == before
    return name


# -- sign and verify -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["rsa", "ec"])
def test_sign_verify_round_trip(identities, kind):
    cert, key = identities[f"ven-{kind}"]
    signer = load_signer(cert, key)
    assert signer.algorithm == (RSA_SHA256 if kind == "rsa" else ECDSA_SHA256)
    body = sign(encode_element("oadrPoll", {"ven_id": "ven-1"}), signer, now=T0, nonce="n-1")
    assert_valid(body)  # the signed message is still valid 2.0b
    root = codec.parse(body)
    assert root[0].tag == ds("Signature") and root[1].tag == f"{{{OADR}}}oadrSignedObject"
    verified = verify(root, client_fingerprint=fingerprint_from_pem(cert).lower())
    assert verified.signed_object is root[1]
    assert verified.payload is root[1][0]
    assert codec.decode_element(verified.payload) == ("oadrPoll", {"ven_id": "ven-1"})
    assert (verified.timestamp, verified.nonce) == (T0, "n-1")
    assert verified.fingerprint == fingerprint_from_pem(cert)


def test_every_signature_has_a_fresh_nonce(identities):
    signer = load_signer(*identities["ven-ec"])
    nonces = {verify(codec.parse(sign(encode_element("oadrPoll", {"ven_id": "v"}), signer,
                                      now=T0))).nonce for _ in range(20)}
    assert len(nonces) == 20


def test_ecdsa_signature_value_is_raw_r_and_s(identities):
    signer = load_signer(*identities["ven-ec"])
    root = codec.parse(sign(encode_element("oadrPoll", {"ven_id": "v"}), signer, now=T0))
    value = base64.b64decode(root[0].find(ds("SignatureValue")).text)
    assert len(value) == 64  # r || s on P-256, not DER (which starts with 0x30 and varies)


def test_verify_accepts_exclusive_c14n(identities):
    cert, key = identities["ven-rsa"]
    body = sign(encode_element("oadrPoll", {"ven_id": "v"}), load_signer(cert, key), now=T0)
    forged = resign(body, key, c14n=EXC_C14N)
    assert verify(codec.parse(forged)).nonce


# -- a test-side re-signer, to build signatures the VTN must refuse ---------------------------


def _ids(root):
    found = {}
    for element in root.iter():
        if isinstance(element.tag, str):
            for name, value in element.attrib.items():
                if name.rpartition("}")[2] == "Id":
                    found[value] = element
    return found


def _c14n(element, algorithm=C14N):
    return etree.tostring(element, method="c14n", exclusive=algorithm == EXC_C14N)


def resign(body, key_pem, *, mutate=None, c14n=C14N, signature_method=None,
           digest=("sha256", SHA256), sign_with=None):
    """Change a signed message (``mutate(root)``), then give it a signature that is correct for
    the algorithms named, so that only the VTN's rules can refuse it."""
    root = etree.fromstring(body)
    if mutate:
        mutate(root)
    key = load_pem_private_key(key_pem.encode(), None)
    signature_el = root[0]
    info = signature_el.find(ds("SignedInfo"))
    info.find(ds("CanonicalizationMethod")).set("Algorithm", c14n)
    method = info.find(ds("SignatureMethod"))
    method.set("Algorithm", signature_method or method.get("Algorithm"))
    ids = _ids(root)
    for reference in info.findall(ds("Reference")):
        for transform in reference.iter(ds("Transform")):
            transform.set("Algorithm", c14n)
        reference.find(ds("DigestMethod")).set("Algorithm", digest[1])
        target = ids[reference.get("URI")[1:]]
        reference.find(ds("DigestValue")).text = base64.b64encode(
            hashlib.new(digest[0], _c14n(target, c14n)).digest()).decode()
    data = _c14n(info, c14n)
    if sign_with is not None:
        value = sign_with(key, data)
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

        r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
        value = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    else:
        value = key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    signature_el.find(ds("SignatureValue")).text = base64.b64encode(value).decode()
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def test_the_re_signer_makes_signatures_the_vtn_accepts(identities):
    # Otherwise the refusals below would prove nothing.
    cert, key = identities["ven-ec"]
    body = sign(encode_element("oadrPoll", {"ven_id": "v"}), load_signer(cert, key), now=T0)
    assert verify(codec.parse(resign(body, key))).fingerprint == fingerprint_from_pem(cert)


# -- the signing flows -------------------------------------------------------------------------


def test_signing_vtn_accepts_a_signing_ven_and_signs_every_reply(registered, signing_app,
                                                                  vtn_identity):
    ven = registered
    assert ven.last_signature.fingerprint == fingerprint_from_pem(vtn_identity[0])
    ven_record = store_of(signing_app).get_ven(ven.ven_id)
    assert ven_record["xml_signature"] is True
    name, reply = ven.poll()
    assert name == "oadrRegisterReport"
    assert ven.last_signature is not None  # decode_reply verified it against vtn_fingerprint
    name, reply = ven.registered_report(reply)
    assert reply["response"]["response_code"] == 200
    name, reply = ven.poll()
    assert (name, ven.last_signature is not None) == ("oadrResponse", True)


@pytest.mark.parametrize("kind", ["ven-rsa", "ven-ec"])
def test_rsa_and_ecdsa_vens(signing_app, identities, clock, vtn_identity, kind):
    ven = signing_ven(signing_app, identities[kind], clock, vtn_identity=vtn_identity)
    name, reply = ven.register(xml_signature=True)
    assert reply["response"]["response_code"] == 200
    name, reply = ven.request_event()
    assert (name, reply["response"]["response_code"]) == ("oadrDistributeEvent", 200)


def test_a_ven_that_signs_without_asking_for_signatures_gets_signed_replies(
        signing_app, identities, clock):
    ven = signing_ven(signing_app, identities["ven-ec"], clock)
    name, reply = ven.register(xml_signature=False)
    assert reply["response"]["response_code"] == 200
    assert ven.last_signature is not None
    ven.poll()
    assert ven.last_signature is not None
    # Its unsigned messages are accepted (it did not ask for signatures), and answered unsigned.
    plain = make_ven(signing_app, environ=ven.environ, ven_id=ven.ven_id)
    response = plain.post("OadrPoll", codec.encode("oadrPoll", {"ven_id": ven.ven_id}))
    assert not signature.is_signed(codec.parse(response.get_data()))
    assert codec.decode(response.get_data())[0] == "oadrResponse"


def test_a_signing_ven_must_sign_every_message(registered, signing_app):
    ven = registered
    before = snapshot(signing_app)
    response = ven.post("OadrPoll", codec.encode("oadrPoll", {"ven_id": ven.ven_id}))
    name, code, description = code_of(ven, response)  # the refusal is signed all the same
    assert (name, code) == ("oadrResponse", 459)
    assert "must be signed" in description
    assert snapshot(signing_app) == before


def test_registration_with_signatures_needs_a_vtn_signing_key(app, identities, clock):
    cert, key = identities["ven-ec"]
    ven = make_ven(app, signing_cert=cert, signing_key=key, environ={"SSL_CLIENT_CERT": cert},
                   verify_replies=False, clock=clock)
    before = snapshot(app)
    name, reply = ven.register(xml_signature=True)
    assert reply["response"]["response_code"] == 451
    assert "OPENADR_SIGNING_CERT" in reply["response"]["response_description"]
    assert "OPENADR_SIGNING_KEY" in reply["response"]["response_description"]
    assert snapshot(app) == before
    # A VTN without a key still verifies a signed message, and answers unsigned.
    name, reply = ven.register(xml_signature=False)
    assert reply["response"]["response_code"] == 200 and ven.last_signature is None


def test_test_client_refuses_an_unsigned_or_foreign_reply(app, signing_app, identities,
                                                          clock):
    cert, key = identities["ven-ec"]
    ven = make_ven(app, signing_cert=cert, signing_key=key, environ={"SSL_CLIENT_CERT": cert},
                   clock=clock)
    with pytest.raises(AssertionError, match="not signed"):
        ven.query_registration()
    other = signing_ven(signing_app, identities["ven-ec"], clock,
                        vtn_identity=identities["other-ec"])
    with pytest.raises(AssertionError, match="not by the VTN's certificate"):
        other.query_registration()


# -- refusals: each answers the paired reply with its code and changes nothing ------------------


def poll_body(ven, **options):
    return ven.encode("oadrPoll", {"ven_id": ven.ven_id}, **options)


def test_a_tampered_payload_is_refused(registered, signing_app):
    ven = registered
    body = poll_body(ven).replace(ven.ven_id.encode(), b"someone-else", 1)
    assert b"someone-else" in body
    refused(signing_app, ven, "OadrPoll", body, 454, "digest does not match")


def test_a_tampered_replay_protect_is_refused(registered, signing_app):
    ven = registered
    body = poll_body(ven, nonce="nonce-1").replace(b"nonce-1", b"nonce-2")
    refused(signing_app, ven, "OadrPoll", body, 454, "digest does not match")


def test_a_tampered_digest_is_refused(registered, signing_app):
    ven = registered
    root = etree.fromstring(poll_body(ven))
    digest = root.find(f".//{ds('DigestValue')}")
    digest.text = base64.b64encode(hashlib.sha256(b"something else").digest()).decode()
    refused(signing_app, ven, "OadrPoll", etree.tostring(root), 454)


def test_a_garbage_signature_value_is_refused(registered, signing_app):
    ven = registered
    root = etree.fromstring(poll_body(ven))
    root.find(f".//{ds('SignatureValue')}").text = base64.b64encode(b"\x01" * 64).decode()
    refused(signing_app, ven, "OadrPoll", etree.tostring(root), 454, "does not verify")
    root.find(f".//{ds('SignatureValue')}").text = "not base64 at all!"
    refused(signing_app, ven, "OadrPoll", etree.tostring(root), 454, "not base64")


def test_a_der_encoded_ecdsa_value_is_refused(registered, signing_app, identities):
    ven = registered
    key = identities["ven-ec"][1]
    body = resign(poll_body(ven), key,
                  sign_with=lambda k, data: k.sign(data, ec.ECDSA(hashes.SHA256())))
    refused(signing_app, ven, "OadrPoll", body, 454, "not DER")


@pytest.mark.parametrize("method, digest, sign_with", [
    ("http://www.w3.org/2000/09/xmldsig#hmac-sha1", ("sha256", SHA256),
     lambda key, data: hmac.new(b"attacker", data, hashlib.sha1).digest()),
    ("http://www.w3.org/2001/04/xmldsig-more#hmac-sha256", ("sha256", SHA256),
     lambda key, data: hmac.new(b"attacker", data, hashlib.sha256).digest()),
    ("http://www.w3.org/2000/09/xmldsig#rsa-sha1", ("sha1", "http://www.w3.org/2000/09/xmldsig#sha1"),
     lambda key, data: key.sign(data, padding.PKCS1v15(), hashes.SHA1())),
    ("http://www.w3.org/2001/04/xmldsig-more#rsa-md5", ("md5", "http://www.w3.org/2001/04/xmldsig-more#md5"),
     lambda key, data: key.sign(data, padding.PKCS1v15(), hashes.MD5())),
    (RSA_SHA256, ("sha1", "http://www.w3.org/2000/09/xmldsig#sha1"), None),  # SHA-1 digests
], ids=["hmac-sha1", "hmac-sha256", "rsa-sha1", "rsa-md5", "sha1-digest"])
def test_algorithms_outside_the_allow_list_are_refused(signing_app, identities, clock,
                                                       vtn_identity, method, digest, sign_with):
    ven = signing_ven(signing_app, identities["ven-rsa"], clock, vtn_identity=vtn_identity)
    ven.register(xml_signature=True)
    try:
        body = resign(poll_body(ven), identities["ven-rsa"][1], signature_method=method,
                      digest=digest, sign_with=sign_with)
    except Exception as exc:  # pragma: no cover - an OpenSSL build without MD5 signing
        pytest.skip(f"cannot make that signature here: {exc}")
    refused(signing_app, ven, "OadrPoll", body, 459, "is not allowed")


def test_c14n_with_comments_is_refused(registered, signing_app, identities):
    body = resign(poll_body(registered), identities["ven-ec"][1],
                  c14n="http://www.w3.org/TR/2001/REC-xml-c14n-20010315#WithComments")
    refused(signing_app, registered, "OadrPoll", body, 459, "is not allowed")


def test_a_missing_reference_is_refused(registered, signing_app, identities):
    def drop_replay_reference(root):
        info = root[0].find(ds("SignedInfo"))
        info.remove(info.findall(ds("Reference"))[1])

    body = resign(poll_body(registered), identities["ven-ec"][1], mutate=drop_replay_reference)
    refused(signing_app, registered, "OadrPoll", body, 459, "exactly two ds:Reference")


def test_an_extra_reference_is_refused(registered, signing_app, identities):
    def add_reference(root):
        info = root[0].find(ds("SignedInfo"))
        extra = copy.deepcopy(info.findall(ds("Reference"))[0])
        info.append(extra)

    body = resign(poll_body(registered), identities["ven-ec"][1], mutate=add_reference)
    refused(signing_app, registered, "OadrPoll", body, 459, "exactly two ds:Reference")


def test_two_references_to_the_payload_and_none_to_replay_protect_are_refused(
        registered, signing_app, identities):
    def point_both_at_the_payload(root):
        info = root[0].find(ds("SignedInfo"))
        info.findall(ds("Reference"))[1].set("URI", "#oadrSignedObject")

    body = resign(poll_body(registered), identities["ven-ec"][1],
                  mutate=point_both_at_the_payload)
    refused(signing_app, registered, "OadrPoll", body, 459, "same element")


def test_a_missing_replay_protect_is_refused(registered, signing_app, identities):
    def drop_replay_protect(root):
        replay = root.find(f".//{{{DSP}}}ReplayProtect")
        replay.getparent().remove(replay)

    body = resign(poll_body(registered), identities["ven-ec"][1], mutate=drop_replay_protect)
    refused(signing_app, registered, "OadrPoll", body, 459, "dsp:ReplayProtect")


def test_key_value_without_a_certificate_is_refused(registered, signing_app, identities):
    def key_value_only(root):
        key_info = root[0].find(ds("KeyInfo"))
        key_info.remove(key_info[0])
        etree.SubElement(key_info, ds("KeyValue"))

    body = resign(poll_body(registered), identities["ven-ec"][1], mutate=key_value_only)
    refused(signing_app, registered, "OadrPoll", body, 459, "ds:X509Certificate")


@pytest.mark.parametrize("skew", [timedelta(seconds=-61), timedelta(seconds=61)],
                         ids=["stale", "future"])
def test_a_timestamp_outside_the_window_is_refused(registered, signing_app, clock, skew):
    body = poll_body(registered, now=clock.now + skew)
    refused(signing_app, registered, "OadrPoll", body, 454, "OPENADR_REPLAY_WINDOW")


@pytest.mark.parametrize("skew", [timedelta(seconds=-59), timedelta(seconds=59)])
def test_a_timestamp_inside_the_window_is_accepted(registered, clock, skew):
    response = registered.post("OadrPoll", poll_body(registered, now=clock.now + skew))
    assert registered.decode_reply(response.get_data())[0] == "oadrRegisterReport"


def test_replay_window_is_configurable(tmp_path, identities, clock):
    app = Flask("window", instance_path=str(tmp_path / "instance"))
    cert, key = identities["vtn-ec"]
    app.config.update(TESTING=True, OPENADR_STORE_URI="memory://", OPENADR_SIGNING_CERT=cert,
                      OPENADR_SIGNING_KEY=key, OPENADR_REPLAY_WINDOW=timedelta(seconds=5))
    VTN(app, clock=clock)
    ven = signing_ven(app, identities["ven-ec"], clock)
    ven.register(xml_signature=True)
    refused(app, ven, "OadrPoll", poll_body(ven, now=clock.now - timedelta(seconds=6)), 454,
            "(5 s)")


def test_a_replayed_message_is_refused(registered, signing_app, clock):
    ven = registered
    body = poll_body(ven)
    assert ven.decode_reply(ven.post("OadrPoll", body).get_data())[0] == "oadrRegisterReport"
    refused(signing_app, ven, "OadrPoll", body, 454, "already used")
    # Signed again with a later timestamp: the nonce alone is enough to refuse it.
    nonce = codec.parse(body).find(f".//{{{DSP}}}nonce").text
    later = poll_body(ven, nonce=nonce, now=clock.now + timedelta(seconds=1))
    refused(signing_app, ven, "OadrPoll", later, 454, "already used")


def test_a_replay_later_in_the_window_changes_not_even_last_seen(registered, signing_app,
                                                                  clock):
    # The nonce is written with the liveness update (the poll's one write): a replay must leave
    # that update undone too, though it comes later than the original.
    ven = registered
    body = poll_body(ven)
    assert ven.decode_reply(ven.post("OadrPoll", body).get_data())[0] == "oadrRegisterReport"
    clock.advance(timedelta(seconds=30))
    refused(signing_app, ven, "OadrPoll", body, 454, "already used")


def test_a_signed_poll_is_one_write_and_its_replay_changes_nothing(registered, signing_app,
                                                                    clock, store_uri):
    # On SQLite the nonce and the liveness update commit in one transaction, the poll's only
    # write; the replay rolls that transaction back, having written nothing, and gets the 454.
    if not store_uri.startswith("sqlite:"):
        pytest.skip("traces the statements of the SQLite store")
    ven = registered
    assert ven.decode_reply(ven.post("OadrPoll", poll_body(ven)).get_data())[0] == \
        "oadrRegisterReport"  # the queued METADATA report: now nothing is pending
    connection = store_of(signing_app).backend.connection().sqlite
    statements = []
    connection.set_trace_callback(statements.append)
    try:
        body = poll_body(ven)
        assert ven.decode_reply(ven.post("OadrPoll", body).get_data())[0] == "oadrResponse"
        verbs = [s.split()[0] for s in statements]
        assert verbs.count("BEGIN") == 1 and verbs.count("COMMIT") == 1, statements
        begin, commit = verbs.index("BEGIN"), verbs.index("COMMIT")
        writes = [s for s in statements if not s.startswith("SELECT")]
        assert writes[0].startswith("BEGIN") and writes[-1].startswith("COMMIT"), statements
        assert any("'nonces'" in s for s in statements[begin:commit]
                   if s.startswith("INSERT")), statements
        clock.advance(timedelta(seconds=5))
        statements.clear()
        refused(signing_app, ven, "OadrPoll", body, 454, "already used")
        # The nonce's INSERT finds it held and changes nothing; the block rolls back.
        writes = [s.split()[0] for s in statements if not s.startswith("SELECT")]
        assert writes == ["BEGIN", "INSERT", "ROLLBACK"], statements
    finally:
        connection.set_trace_callback(None)


def test_a_refused_message_uses_up_its_nonce(registered, signing_app, clock):
    # Refused before its first write (an unknown venID, 452): the nonce is written all the
    # same, so the message cannot come back later in the window, when it might be accepted.
    ven = registered
    body = ven.encode("oadrPoll", {"ven_id": "not-yet-known"})
    refused(signing_app, ven, "OadrPoll", body, 452, "not-yet-known")
    refused(signing_app, ven, "OadrPoll", body, 454, "already used")


def test_a_replay_of_a_message_refused_with_403_is_refused_as_a_replay(signing_app, identities,
                                                                         clock, vtn_identity):
    # No venID from a certificate no VEN is registered with: 403, no OpenADR reply. Its nonce
    # is used up all the same, and the replay gets the 454 every replay gets.
    ven = signing_ven(signing_app, identities["other-ec"], clock, vtn_identity=vtn_identity)
    body = ven.encode("oadrPoll", {"ven_id": ""})
    before = snapshot(signing_app)
    assert ven.post("OadrPoll", body).status_code == 403
    refused(signing_app, ven, "OadrPoll", body, 454, "already used")
    assert snapshot(signing_app) == before


def test_a_replayed_registration_is_refused(signing_app, identities, clock, vtn_identity):
    ven = signing_ven(signing_app, identities["ven-ec"], clock, vtn_identity=vtn_identity)
    body = ven.encode("oadrQueryRegistration", {"request_id": "q-1"})
    name, reply = ven.decode_reply(ven.post("EiRegisterParty", body).get_data())
    assert (name, reply["response"]["response_code"]) == ("oadrCreatedPartyRegistration", 200)
    refused(signing_app, ven, "EiRegisterParty", body, 454, "already used")


def test_the_signer_must_be_the_tls_client(signing_app, identities, clock, vtn_identity):
    # Registered with its own certificate, then a message signed by another key over its TLS.
    ven = signing_ven(signing_app, identities["ven-ec"], clock, vtn_identity=vtn_identity)
    ven.register(xml_signature=True)
    impostor = signing_ven(signing_app, identities["other-ec"], clock, tls=identities["ven-ec"],
                           vtn_identity=vtn_identity, ven_id=ven.ven_id)
    refused(signing_app, impostor, "OadrPoll", poll_body(impostor), 463,
            "not with the TLS client certificate")


def test_the_signer_must_be_the_registered_ven(signing_app, identities, clock, vtn_identity):
    ven = signing_ven(signing_app, identities["ven-ec"], clock, vtn_identity=vtn_identity)
    ven.register(xml_signature=True)
    # Another VEN, signing and connecting with its own certificate, names the first venID.
    other = signing_ven(signing_app, identities["other-ec"], clock, vtn_identity=vtn_identity,
                        ven_id=ven.ven_id)
    refused(signing_app, other, "OadrPoll", poll_body(other), 463)


# -- signature wrapping -------------------------------------------------------------------------


def _harmful(ven, id_value="oadrSignedObject"):
    """An unsigned oadrSignedObject cancelling the VEN's registration."""
    root = encode_element("oadrCancelPartyRegistration", {
        "request_id": "evil", "registration_id": ven.registration_id, "ven_id": ven.ven_id})
    signed_object = root[0]
    signed_object.set(f"{{{OADR}}}Id", id_value)
    return signed_object


def test_wrapping_by_a_duplicate_id_is_refused(registered, signing_app):
    ven = registered
    root = etree.fromstring(ven.encode("oadrQueryRegistration", {"request_id": "harmless"}))
    signed = root[1]
    # The signed harmless object goes into the signature's ds:Object; the harmful one, with the
    # same Id, takes its place.
    root.remove(signed)
    root[0].find(ds("Object")).append(signed)
    root.append(_harmful(ven))
    refused(signing_app, ven, "EiRegisterParty", etree.tostring(root), 454, "used twice")
    assert store_of(signing_app).get_ven(ven.ven_id)["registration_id"] == ven.registration_id


def test_wrapping_with_the_signed_object_moved_elsewhere_is_refused(registered, signing_app):
    ven = registered
    root = etree.fromstring(ven.encode("oadrQueryRegistration", {"request_id": "harmless"}))
    signed = root[1]
    root.remove(signed)
    holder = etree.SubElement(root[0], ds("Object"))
    holder.append(signed)  # still resolvable by its Id, still digest-correct
    root.append(_harmful(ven, "evil"))
    refused(signing_app, ven, "EiRegisterParty", etree.tostring(root), 454,
            "neither the oadrSignedObject")
    assert store_of(signing_app).get_ven(ven.ven_id)["registration_id"] == ven.registration_id


def test_a_harmful_payload_beside_the_signed_one_is_refused(registered, signing_app):
    ven = registered
    root = etree.fromstring(ven.encode("oadrQueryRegistration", {"request_id": "harmless"}))
    root[1].append(_harmful(ven, "x")[0])  # a second payload inside the signed object
    before = snapshot(signing_app)
    response = ven.post("EiRegisterParty", etree.tostring(root))
    # Not a well-formed OpenADR message at all (two payloads): HTTP 400, as unsigned.
    assert response.status_code == 400
    assert b"exactly one payload" in response.get_data()
    assert snapshot(signing_app) == before
    assert store_of(signing_app).get_ven(ven.ven_id)["registration_id"] == ven.registration_id


def test_verify_hands_on_only_the_signed_payload(identities):
    signer = load_signer(*identities["ven-ec"])
    root = codec.parse(sign(encode_element("oadrPoll", {"ven_id": "v"}), signer, now=T0))
    verified = verify(root)
    assert verified.payload.getparent() is root[1]
    assert verified.payload.getparent().getparent() is root


def test_verify_refusals_are_typed(identities):
    signer = load_signer(*identities["ven-ec"])
    body = sign(encode_element("oadrPoll", {"ven_id": "v"}), signer, now=T0)
    with pytest.raises(NotRegistered):
        verify(codec.parse(body), client_fingerprint="00:11:22:33:44:55:66:77:88:99")
    with pytest.raises(InvalidData):
        verify(codec.parse(body.replace(b">v<", b">w<")))
    with pytest.raises(ComplianceError):
        verify(codec.parse(codec.encode("oadrPoll", {"ven_id": "v"})))


# -- configuration ----------------------------------------------------------------------------


def _app(tmp_path, **config):
    app = Flask("config", instance_path=str(tmp_path / "instance"))
    app.config.update(TESTING=True, OPENADR_STORE_URI="memory://", **config)
    return app


def test_signing_keys_as_paths_or_data(tmp_path, identities):
    cert, key = identities["vtn-rsa"]
    (tmp_path / "vtn.pem").write_text(cert)
    (tmp_path / "vtn.key").write_text(key)
    for config in ({"OPENADR_SIGNING_CERT": str(tmp_path / "vtn.pem"),
                    "OPENADR_SIGNING_KEY": str(tmp_path / "vtn.key")},
                   {"OPENADR_SIGNING_CERT": cert.encode(), "OPENADR_SIGNING_KEY": key}):
        app = _app(tmp_path, **config)
        VTN(app)
        signer = app.extensions["openadr"].signer
        assert signer.fingerprint == fingerprint_from_pem(cert)
        assert "PRIVATE" not in repr(signer) and "PRIVATE" not in repr(
            app.extensions["openadr"].context.settings)


def test_an_encrypted_signing_key_needs_its_password(tmp_path, identities):
    from cryptography.hazmat.primitives import serialization

    cert, key = identities["vtn-ec"]
    encrypted = load_pem_private_key(key.encode(), None).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"s3cret")).decode()
    with pytest.raises(ConfigurationError, match="OPENADR_SIGNING_KEY_PASSWORD"):
        VTN(_app(tmp_path, OPENADR_SIGNING_CERT=cert, OPENADR_SIGNING_KEY=encrypted))
    with pytest.raises(ConfigurationError, match="OPENADR_SIGNING_KEY"):
        VTN(_app(tmp_path, OPENADR_SIGNING_CERT=cert, OPENADR_SIGNING_KEY=encrypted,
                 OPENADR_SIGNING_KEY_PASSWORD="wrong"))
    app = _app(tmp_path, OPENADR_SIGNING_CERT=cert, OPENADR_SIGNING_KEY=encrypted,
               OPENADR_SIGNING_KEY_PASSWORD="s3cret")
    VTN(app)
    assert app.extensions["openadr"].signer is not None


def test_signing_configuration_errors_name_the_key_and_the_problem(tmp_path, identities):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    cert, key = identities["vtn-rsa"]
    other_key = identities["vtn-ec"][1]
    ed_key = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()).decode()
    cases = [
        ({"OPENADR_SIGNING_CERT": cert}, "OPENADR_SIGNING_KEY is not set"),
        ({"OPENADR_SIGNING_KEY": key}, "OPENADR_SIGNING_CERT is not set"),
        ({"OPENADR_SIGNING_CERT": str(tmp_path / "missing.pem"), "OPENADR_SIGNING_KEY": key},
         "OPENADR_SIGNING_CERT: cannot read"),
        ({"OPENADR_SIGNING_CERT": cert, "OPENADR_SIGNING_KEY": other_key},
         "OPENADR_SIGNING_KEY is not the private key of the certificate"),
        ({"OPENADR_SIGNING_CERT": cert, "OPENADR_SIGNING_KEY": ed_key},
         "OPENADR_SIGNING_KEY: a Ed25519PrivateKey key is not supported"),
        ({"OPENADR_SIGNING_CERT": key, "OPENADR_SIGNING_KEY": key},
         "OPENADR_SIGNING_CERT: not a PEM X.509 certificate"),
        ({"OPENADR_SIGNING_CERT": 42, "OPENADR_SIGNING_KEY": key}, "OPENADR_SIGNING_CERT"),
        ({"OPENADR_REPLAY_WINDOW": 0}, "OPENADR_REPLAY_WINDOW"),
    ]
    for config, message in cases:
        with pytest.raises(ConfigurationError, match=message.replace("(", r"\(")):
            VTN(_app(tmp_path, **config))


def test_signing_keys_are_parsed_once_not_per_message(signing_app, identities, clock,
                                                      monkeypatch):
    calls = []
    real = signature.load_signer
    monkeypatch.setattr(signature, "load_signer", lambda *a, **k: calls.append(a) or real(*a, **k))
    ven = signing_ven(signing_app, identities["ven-ec"], clock)
    calls.clear()
    ven.register(xml_signature=True)
    ven.poll()
    assert calls == []


def test_vens_test_client_is_documented_api():
    assert "signing_cert" in VENTestClient.__init__.__doc__


# -- real peers: openleadr's signer, and gunicorn's two workers ---------------------------------


def test_a_message_openleadr_signed_is_accepted_once(tmp_path, identities):
    messaging = pytest.importorskip("openleadr.messaging")
    app = Flask("real_clock", instance_path=str(tmp_path / "instance"))
    vtn_cert, vtn_key = identities["vtn-rsa"]
    app.config.update(TESTING=True, OPENADR_STORE_URI="memory://",
                      OPENADR_SIGNING_CERT=vtn_cert, OPENADR_SIGNING_KEY=vtn_key)
    VTN(app)
    for kind in ("ven-rsa", "ven-ec"):
        cert, key = identities[kind]
        ven = make_ven(app, environ={"SSL_CLIENT_CERT": cert},
                       vtn_fingerprint=fingerprint_from_pem(vtn_cert))
        body = messaging.create_message(
            "oadrCreatePartyRegistration", cert=cert.encode(), key=key.encode(),
            request_id="r-1", ven_name=kind, profile_name="2.0b", transport_name="simpleHttp",
            transport_address=None, report_only=False, xml_signature=True,
            http_pull_model=True).encode()
        name, reply = ven.decode_reply(ven.post("EiRegisterParty", body).get_data())
        assert (name, reply["response"]["response_code"]) == ("oadrCreatedPartyRegistration",
                                                              200)
        name, reply = ven.decode_reply(ven.post("EiRegisterParty", body).get_data())
        assert reply["response"]["response_code"] == 454  # the same message again: a replay


def _post(url, body):
    import urllib.request

    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/xml"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.headers["X-Worker-Pid"], response.read()


def test_a_replay_sent_to_the_other_gunicorn_worker_is_refused(tmp_path, identities,
                                                              monkeypatch):
    from datetime import datetime, timezone

    from tests.support.e2e import E2EGunicorn

    from flask_openadr.store import open_store

    vtn_cert, vtn_key = identities["vtn-ec"]
    (tmp_path / "vtn.pem").write_text(vtn_cert)
    (tmp_path / "vtn.key").write_text(vtn_key)
    monkeypatch.setenv("E2E_SIGNING_CERT", str(tmp_path / "vtn.pem"))
    monkeypatch.setenv("E2E_SIGNING_KEY", str(tmp_path / "vtn.key"))
    store_uri = "sqlite:///" + str(tmp_path / "vtn.sqlite3")
    server = E2EGunicorn(tmp_path, store_uri, tmp_path / "handlers.jsonl", workers=2)
    store = open_store(store_uri)
    vtn_fingerprint = fingerprint_from_pem(vtn_cert)
    signer = load_signer(*identities["ven-ec"])

    def signed(payload_name, payload):
        return sign(encode_element(payload_name, payload), signer,
                    now=datetime.now(timezone.utc))

    def reply(body):
        verified = verify(codec.parse(body))
        assert verified.fingerprint == vtn_fingerprint
        return codec.decode_element(verified.payload)

    try:
        url = server.base + "/OpenADR2/Simple/2.0b/"
        _, body = _post(url + "EiRegisterParty", signed("oadrCreatePartyRegistration", {
            "request_id": "r-1", "profile_name": "2.0b", "transport_name": "simpleHttp",
            "report_only": False, "xml_signature": True, "ven_name": "replayed",
            "http_pull_model": True}))
        name, registration = reply(body)
        assert registration["response"]["response_code"] == 200
        ven_id = registration["ven_id"]
        poll = signed("oadrPoll", {"ven_id": ven_id})
        first_pid, body = _post(url + "OadrPoll", poll)
        assert reply(body)[0] == "oadrRegisterReport"
        before = (store.list_vens(), store.list_outbox(ven_id), store.list_liveness())
        # Which worker accepts a connection is up to chance (and under load one worker can win
        # every time), so hold one worker with a replay whose body has not all arrived: the next
        # replay has to go to the other worker. Then finish the first: both workers got one.
        import http.client
        import socket
        import time

        held = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        try:
            held.sendall(b"POST /OpenADR2/Simple/2.0b/OadrPoll HTTP/1.1\r\n"
                         b"Host: 127.0.0.1\r\nContent-Type: application/xml\r\n"
                         b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(poll)
                         + poll[:10])
            time.sleep(0.5)  # a worker accepts it and waits for the rest of the body
            replies = [_post(url + "OadrPoll", poll)]
            held.sendall(poll[10:])
            response = http.client.HTTPResponse(held)
            response.begin()
            replies.append((response.getheader("X-Worker-Pid"), response.read()))
        finally:
            held.close()
        pids = set()
        for pid, body in replies:
            name, refused_reply = reply(body)
            assert (name, refused_reply["response"]["response_code"]) == ("oadrResponse", 454)
            pids.add(pid)
        assert len(pids) == 2 and first_pid in pids, "the replays did not reach both workers"
        assert (store.list_vens(), store.list_outbox(ven_id), store.list_liveness()) == before
    finally:
        store.close()
        server.stop()


@pytest.mark.parametrize("kind", ["vtn-rsa", "vtn-ec"])
def test_openleadr_verifies_what_the_vtn_signs(identities, kind):
    """openleadr's VEN checks VTN replies with this function (signxml underneath)."""
    from datetime import datetime, timezone

    messaging = pytest.importorskip("openleadr.messaging")
    cert, key = identities[kind]
    body = sign(encode_element("oadrResponse", {
        "response": {"response_code": 200, "response_description": "OK", "request_id": "r"},
        "ven_id": "ven-1"}), load_signer(cert, key), now=datetime.now(timezone.utc))
    messaging.validate_xml_signature(etree.fromstring(body),
                                     cert_fingerprint=fingerprint_from_pem(cert))
    from signxml.exceptions import InvalidSignature as SignxmlInvalid

    with pytest.raises(SignxmlInvalid):
        messaging.validate_xml_signature(etree.fromstring(body.replace(b">r<", b">s<")),
                                         cert_fingerprint=fingerprint_from_pem(cert))


def test_signing_and_verifying_from_many_threads(identities):
    import threading

    signer = load_signer(*identities["vtn-ec"])
    failures = []

    def work(n):
        try:
            for i in range(50):
                body = sign(encode_element("oadrPoll", {"ven_id": f"v-{n}-{i}"}), signer, now=T0)
                verified = verify(codec.parse(body))
                assert codec.decode_element(verified.payload)[1] == {"ven_id": f"v-{n}-{i}"}
        except BaseException as exc:  # pragma: no cover - reported below
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not failures, failures


def test_a_signed_message_with_an_unsupported_duration_gets_a_signed_454(registered,
                                                                         signing_app, clock):
    # Valid 2.0b the VTN cannot honour (P1M) is decoded only after the signature verified, and
    # the paired reply is signed as every reply to this VEN is (docs/limits.rst).
    ven = registered
    root = codec.encode_element("oadrCreateOpt", {
        "opt_id": "opt-1", "opt_type": "optOut", "opt_reason": "x-schedule",
        "ven_id": ven.ven_id, "created_date_time": T0, "request_id": "r-1", "target": {},
        "vavailability": {"available": [{"dtstart": T0, "duration": timedelta(days=7)}]}})
    (duration,) = [e for e in root.iter() if e.text == "P7D"]
    duration.text = "P1M"
    body = signature.sign(root, ven.signer, now=clock())
    name = refused(signing_app, ven, "EiOpt", body, 454, match="'P1M'")
    assert name == "oadrCreatedOpt"


# -- signing the codec's bytes ------------------------------------------------------------------


def _fallbacks(monkeypatch):
    """Count the messages sign_message() hands to sign() (the tree path)."""
    calls = []
    real = signature.sign
    monkeypatch.setattr(signature, "sign", lambda *a, **k: calls.append(a) or real(*a, **k))
    return calls


def test_sign_message_gives_the_bytes_sign_gives_for_every_payload(identities, monkeypatch):
    from tests.test_codec_roundtrip import EXAMPLES

    signer = load_signer(*identities["vtn-rsa"])  # RSA PKCS#1 v1.5 is deterministic
    fallbacks = _fallbacks(monkeypatch)
    for name, payload in EXAMPLES.items():
        expected = sign(encode_element(name, payload), signer, now=T0, nonce="n-1")
        got = signature.sign_message(codec.encode(name, payload), signer, now=T0, nonce="n-1")
        assert got == expected, name
        assert codec.decode_element(verify(codec.parse(got)).payload) == (name, payload)
    assert fallbacks == []  # every example took the byte path, which is what is compared


@pytest.mark.parametrize("kind", ["vtn-rsa", "vtn-ec"])
def test_sign_message_digests_equal_lxml_c14n(identities, kind):
    """The digests and the signed SignedInfo are lxml's inclusive C14N of the final message."""
    from tests.test_codec_roundtrip import EXAMPLES

    signer = load_signer(*identities[kind])
    for name in ("oadrResponse", "oadrDistributeEvent", "oadrRegisterReport"):
        body = signature.sign_message(codec.encode(name, EXAMPLES[name]), signer, now=T0)
        root = etree.fromstring(body)
        info = root.find(ds("Signature")).find(ds("SignedInfo"))
        for reference in info.iter(ds("Reference")):
            (target,) = root.xpath("//*[@Id=$i or @oadr:Id=$i]", i=reference.get("URI")[1:],
                                   namespaces={"oadr": OADR})
            digest = hashlib.sha256(etree.tostring(target, method="c14n")).digest()
            assert base64.b64decode(reference.find(ds("DigestValue")).text) == digest
        verify(codec.parse(body))


@given(data=st.data())
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_sign_message_equals_sign_on_generated_payloads(identities, data):
    """Texts with every XML character (\\r, <, &, quotes, non-ASCII): the byte path gives the
    bytes of the tree path, or hands the message to it; either way it verifies."""
    from tests.support.strategies import PAYLOAD_STRATEGIES

    name = data.draw(st.sampled_from(sorted(PAYLOAD_STRATEGIES)))
    payload = data.draw(PAYLOAD_STRATEGIES[name])
    signer = _RSA_SIGNER.setdefault("s", load_signer(*identities["vtn-rsa"]))
    document = codec.encode(name, payload)
    fallbacks = []
    real = signature.sign
    signature.sign = lambda *a, **k: fallbacks.append(a) or real(*a, **k)
    try:
        got = signature.sign_message(document, signer, now=T0, nonce="n-2")
    finally:
        signature.sign = real
    if not fallbacks:
        assert got == sign(encode_element(name, payload), signer, now=T0, nonce="n-2")
    else:  # the codec's bytes parsed back: "<x/>" where the built tree wrote "<x></x>"
        assert got == sign(codec.parse(document), signer, now=T0, nonce="n-2")
    assert codec.decode_element(verify(codec.parse(got)).payload) == codec.decode(document)


_RSA_SIGNER: dict = {}


def test_sign_message_hands_other_bytes_to_sign(identities, monkeypatch):
    signer = load_signer(*identities["vtn-ec"])
    fallbacks = _fallbacks(monkeypatch)
    response = {"response": {"response_code": 200, "response_description": "a\rb",
                             "request_id": ""}, "ven_id": "v"}
    for document in (codec.encode("oadrResponse", response),  # "&#13;": C14N writes "&#xD;"
                     codec.encode("oadrPoll", {"ven_id": "v"}).replace(b"UTF-8", b"utf-8")):
        body = signature.sign_message(document, signer, now=T0)
        assert codec.decode_element(verify(codec.parse(body)).payload)[1]["ven_id"] == "v"
    assert len(fallbacks) == 2
