"""Interoperability with xmlsec1, an independent XML-DSig implementation (Debian package xmlsec1).

xmlsec1 verifies a message the VTN signed, and the VTN verifies (and accepts) a message that
xmlsec1 signed from a template, for RSA and ECDSA keys. Skipped without xmlsec1, except with
CI=true, where a missing xmlsec1 fails.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from datetime import datetime, timezone

import pytest
from flask import Flask
from lxml import etree

from flask_openadr import VTN, codec
from flask_openadr.codec.convert import encode_element
from flask_openadr.codec.values import format_datetime
from flask_openadr.security.fingerprint import fingerprint_from_pem
from flask_openadr.security.signature import (
    C14N, DS, DSP, ECDSA_SHA256, RSA_SHA256, SHA256, load_signer, sign, verify,
)
from tests.support.certs import make_identity
from tests.support.vens import make_ven

XMLSEC1 = shutil.which("xmlsec1")
OADR = "http://openadr.org/oadr-2.0b/2012/07"


@pytest.fixture(scope="module")
def xmlsec1():
    if XMLSEC1 is None:
        message = "needs the xmlsec1 command (Debian package xmlsec1)"
        if os.environ.get("CI") == "true":
            pytest.fail(message + " (CI=true: interop tests are required)")
        pytest.skip(message)
    return XMLSEC1


@pytest.fixture(scope="module", params=["rsa", "ec"])
def identity(request):
    return request.param, *make_identity(request.param, f"xmlsec-{request.param}")


def _run(xmlsec1, *args):
    return subprocess.run([xmlsec1, *args], capture_output=True, text=True, timeout=60)


def test_xmlsec1_verifies_what_the_vtn_signs(xmlsec1, identity, tmp_path):
    kind, cert, key = identity
    (tmp_path / "signer.pem").write_text(cert)
    body = sign(encode_element("oadrDistributeEvent", {
        "response": {"response_code": 200, "response_description": "OK", "request_id": "r"},
        "request_id": "r-1", "vtn_id": "VTN", "events": []}),
        load_signer(cert, key), now=datetime.now(timezone.utc))
    (tmp_path / "signed.xml").write_bytes(body)
    # The certificate in ds:KeyInfo is used, checked against the trusted one.
    result = _run(xmlsec1, "--verify", "--id-attr:Id", f"{OADR}:oadrSignedObject",
                  "--trusted-pem", str(tmp_path / "signer.pem"), str(tmp_path / "signed.xml"))
    assert result.returncode == 0, result.stderr
    assert "SignedInfo References (ok/all): 2/2" in result.stderr

    # And xmlsec1 does refuse a change, so the check above could fail.
    (tmp_path / "tampered.xml").write_bytes(body.replace(b">r-1<", b">r-2<"))
    result = _run(xmlsec1, "--verify", "--id-attr:Id", f"{OADR}:oadrSignedObject",
                  "--trusted-pem", str(tmp_path / "signer.pem"), str(tmp_path / "tampered.xml"))
    assert result.returncode != 0


def _template(kind: str, payload_name: str, payload: dict) -> bytes:
    """An unsigned oadrPayload with an empty ds:Signature skeleton for xmlsec1 to fill in; built
    here, independently of the VTN's signer."""
    root = encode_element(payload_name, payload)

    def ds(parent, local, **attrib):
        return etree.SubElement(parent, f"{{{DS}}}{local}", attrib)

    signature = etree.Element(f"{{{DS}}}Signature", {"Id": "sig-by-xmlsec"})
    root.insert(0, signature)
    info = ds(signature, "SignedInfo")
    ds(info, "CanonicalizationMethod", Algorithm=C14N)
    ds(info, "SignatureMethod", Algorithm=RSA_SHA256 if kind == "rsa" else ECDSA_SHA256)
    for uri in ("#oadrSignedObject", "#props"):
        reference = ds(info, "Reference", URI=uri)
        ds(ds(reference, "Transforms"), "Transform", Algorithm=C14N)
        ds(reference, "DigestMethod", Algorithm=SHA256)
        ds(reference, "DigestValue")
    ds(signature, "SignatureValue")
    ds(ds(ds(signature, "KeyInfo"), "X509Data"), "X509Certificate")
    prop = ds(ds(ds(signature, "Object", Id="props"), "SignatureProperties"),
              "SignatureProperty", Target="#sig-by-xmlsec")
    replay = etree.SubElement(prop, f"{{{DSP}}}ReplayProtect")
    etree.SubElement(replay, f"{{{DSP}}}timestamp").text = format_datetime(
        datetime.now(timezone.utc))
    etree.SubElement(replay, f"{{{DSP}}}nonce").text = uuid.uuid4().hex
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def _xmlsec_sign(xmlsec1, tmp_path, kind, cert, key, payload_name, payload) -> bytes:
    (tmp_path / "key.pem").write_text(key)
    (tmp_path / "cert.pem").write_text(cert)
    (tmp_path / "template.xml").write_bytes(_template(kind, payload_name, payload))
    result = _run(xmlsec1, "--sign", "--id-attr:Id", f"{OADR}:oadrSignedObject",
                  "--privkey-pem", f"{tmp_path / 'key.pem'},{tmp_path / 'cert.pem'}",
                  "--output", str(tmp_path / "signed.xml"), str(tmp_path / "template.xml"))
    assert result.returncode == 0, result.stderr
    return (tmp_path / "signed.xml").read_bytes()


def test_the_vtn_verifies_what_xmlsec1_signs(xmlsec1, identity, tmp_path):
    kind, cert, key = identity
    body = _xmlsec_sign(xmlsec1, tmp_path, kind, cert, key, "oadrPoll", {"ven_id": "ven-x"})
    verified = verify(codec.parse(body), client_fingerprint=fingerprint_from_pem(cert))
    assert codec.decode_element(verified.payload) == ("oadrPoll", {"ven_id": "ven-x"})
    assert verified.fingerprint == fingerprint_from_pem(cert)


def test_the_vtn_accepts_a_registration_xmlsec1_signed_and_refuses_its_replay(
        xmlsec1, identity, tmp_path):
    kind, cert, key = identity
    vtn_cert, vtn_key = make_identity("ec", "vtn")
    app = Flask("xmlsec_vtn", instance_path=str(tmp_path / "instance"))
    app.config.update(TESTING=True, OPENADR_STORE_URI="memory://",
                      OPENADR_SIGNING_CERT=vtn_cert, OPENADR_SIGNING_KEY=vtn_key)
    VTN(app)
    body = _xmlsec_sign(xmlsec1, tmp_path, kind, cert, key, "oadrCreatePartyRegistration", {
        "request_id": "r-1", "profile_name": "2.0b", "transport_name": "simpleHttp",
        "report_only": False, "xml_signature": True, "ven_name": f"xmlsec-{kind}",
        "http_pull_model": True})
    ven = make_ven(app, environ={"SSL_CLIENT_CERT": cert},
                   vtn_fingerprint=fingerprint_from_pem(vtn_cert))
    name, reply = ven.decode_reply(ven.post("EiRegisterParty", body).get_data())
    assert (name, reply["response"]["response_code"]) == ("oadrCreatedPartyRegistration", 200)
    vens = app.extensions["openadr"].context.store.list_vens()
    assert [(v["ven_name"], v["xml_signature"], v["fingerprint"]) for v in vens] == [
        (f"xmlsec-{kind}", True, fingerprint_from_pem(cert))]
    name, reply = ven.decode_reply(ven.post("EiRegisterParty", body).get_data())
    assert reply["response"]["response_code"] == 454
