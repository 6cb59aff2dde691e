"""XML signatures of the OpenADR 2.0b signature profile: verify what a VEN signed, sign replies.

Built on lxml and ``cryptography`` alone (protocol notes 2.3). The profile is narrow on purpose,
and this module accepts nothing outside it:

- ``ds:Signature`` is the first child of ``oadr:oadrPayload``, ``oadr:oadrSignedObject`` the
  second and last;
- exactly two ``ds:Reference`` elements: ``#<oadr:Id of that oadrSignedObject>`` and
  ``#<Id of a ds:Object of this signature>`` holding one ``dsp:ReplayProtect``;
- canonicalization (of ``ds:SignedInfo`` and as the reference transform): inclusive C14N 1.0,
  or exclusive C14N 1.0, both without comments;
- digests: SHA-256; signatures: RSA-SHA256 (PKCS#1 v1.5, keys of 2048 bits or more) or
  ECDSA-SHA256 (``r || s``, the XML-DSig form, on P-256, P-384 or P-521);
- the signer's certificate in ``ds:KeyInfo/ds:X509Data/ds:X509Certificate`` (the first one is
  the signer's). ``ds:KeyValue`` alone is refused: the VTN identifies a VEN by the fingerprint of
  its certificate, and a bare key has none.

:func:`verify` returns only what the signature covers (like signxml's ``VerifyResult``), so the
caller never reads the unsigned rest of the document: a signed harmless payload placed beside an
unsigned harmful one (signature wrapping) is refused, because the signed reference must resolve to
the very ``oadrSignedObject`` that is a child of ``oadrPayload``, and duplicate Id values are
refused outright.

Refusals are :class:`~flask_openadr.errors.Rejection` subclasses, so they travel as the response
code of the paired reply (see ``docs/security.rst``): 459 for anything outside the profile (a
missing or extra reference, an algorithm off the allow-list, no ReplayProtect), 454 for a
signature that does not verify (digest, value, Id tricks, unreadable values), 463 when the signer
is not the TLS client.
"""
from __future__ import annotations

import base64
import binascii
import copy
import functools
import hmac
import hashlib
import os
import re
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Union

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from lxml import etree

from ..codec.fields import DS, DSP, NSMAP, OADR
from ..codec.parser import parse as _parse
from ..codec.values import ValueProblem, format_datetime, parse_datetime, shown
from ..errors import ComplianceError, ConfigurationError, InvalidData, NotRegistered
from ..protocol import is_aware
from .fingerprint import fingerprint_from_der

__all__ = ["Signer", "Verified", "is_signed", "load_signer", "sign", "sign_message", "verify"]

C14N = "http://www.w3.org/TR/2001/REC-xml-c14n-20010315"
EXC_C14N = "http://www.w3.org/2001/10/xml-exc-c14n#"
SHA256 = "http://www.w3.org/2001/04/xmlenc#sha256"
RSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
ECDSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256"

#: The allow-lists. Anything else (HMAC, SHA-1, RSA-MD5, C14N with comments, XPath or XSLT
#: transforms, ...) is refused with 459.
CANONICALIZATIONS = (C14N, EXC_C14N)
SIGNATURE_METHODS = (RSA_SHA256, ECDSA_SHA256)
DIGEST_METHODS = (SHA256,)

MIN_RSA_BITS = 2048
EC_CURVES = (ec.SECP256R1, ec.SECP384R1, ec.SECP521R1)
#: Longer nonces are refused (454): the store keys nonces, and a peer's nonce is a UUID or so.
MAX_NONCE_LENGTH = 200

_PAYLOAD_ROOT = f"{{{OADR}}}oadrPayload"
_SIGNED_OBJECT = f"{{{OADR}}}oadrSignedObject"
_OADR_ID = f"{{{OADR}}}Id"
_EXC_NS = "http://www.w3.org/2001/10/xml-exc-c14n#"
_INCLUSIVE_NAMESPACES = f"{{{_EXC_NS}}}InclusiveNamespaces"
# Attributes that name an element for a same-document reference. XML-DSig peers use "Id"
# (unqualified, on ds:Object) and the oadr schema qualifies it (oadr:Id on oadrSignedObject);
# "ID", "id" and xml:id are counted too, so that no second element can pose as the signed one.
_ID_NAMES = frozenset({"Id", "ID", "id"})


def _ds(local: str) -> str:
    return f"{{{DS}}}{local}"


def _dsp(local: str) -> str:
    return f"{{{DSP}}}{local}"


#: The private keys OpenADR signs with (:func:`load_signer` refuses any other).
SigningKey = Union[rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey]


# ================================================================ keys


@dataclass(frozen=True)
class Signer:
    """The VTN's signing key and certificate, parsed once (see :func:`load_signer`)."""

    key: SigningKey
    certificate: x509.Certificate
    certificate_b64: str
    fingerprint: str
    algorithm: str

    def __repr__(self) -> str:  # never show the key
        return f"Signer(fingerprint={self.fingerprint!r}, algorithm={self.algorithm!r})"


def _pem_bytes(key_name: str, value: object, what: str) -> bytes:
    """PEM data given directly, or read from the path ``value`` names."""
    if isinstance(value, bytes):
        data = value
    elif isinstance(value, str):
        if "-----BEGIN" in value:
            data = value.encode("ascii", "replace")
        else:
            try:
                with open(os.path.expanduser(value), "rb") as fh:
                    data = fh.read()
            except OSError as exc:
                raise ConfigurationError(
                    f"{key_name}: cannot read the {what} file {value!r}: {exc.strerror}; give a "
                    "readable PEM file path or the PEM data itself") from None
    else:
        raise ConfigurationError(f"{key_name} must be a PEM file path or PEM data (str or "
                                 f"bytes), not {type(value).__name__}")
    if b"-----BEGIN" not in data:
        raise ConfigurationError(f"{key_name}: {value!r} holds no PEM data (expected a "
                                 f"'-----BEGIN ...' block with the {what})")
    return data


def load_signer(cert: object, key: object, password: object = None, *,
                names: tuple[str, str, str] = ("OPENADR_SIGNING_CERT", "OPENADR_SIGNING_KEY",
                                               "OPENADR_SIGNING_KEY_PASSWORD")) -> Signer:
    """Parse the VTN's signing certificate and private key (PEM paths or PEM data).

    :param names: the config keys the values came from, for the error messages.
    :raises ConfigurationError: naming the key and the problem: unreadable, not PEM, a wrong
        password, an unsupported key type or size, or a key that is not the certificate's.
    """
    cert_name, key_name, password_name = names
    try:
        certificate = x509.load_pem_x509_certificate(_pem_bytes(cert_name, cert, "certificate"))
    except ValueError as exc:
        raise ConfigurationError(f"{cert_name}: not a PEM X.509 certificate ({exc})") from None
    if password is not None and not isinstance(password, (str, bytes)):
        raise ConfigurationError(f"{password_name} must be a str or bytes, not "
                                 f"{type(password).__name__}")
    secret = password.encode("utf-8") if isinstance(password, str) else password
    try:
        private = serialization.load_pem_private_key(_pem_bytes(key_name, key, "private key"),
                                                     password=secret)
    except TypeError as exc:
        # cryptography says "Password was not given but private key is encrypted" (or the
        # reverse): name the key that fixes it.
        raise ConfigurationError(f"{key_name}: {exc}; set {password_name} to the key's "
                                 "password (or leave it unset for an unencrypted key)") from None
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise ConfigurationError(f"{key_name}: cannot load the private key ({exc}); give an "
                                 f"RSA or EC key in PEM, with {password_name} if it is "
                                 "encrypted") from None
    if isinstance(private, rsa.RSAPrivateKey):
        if private.key_size < MIN_RSA_BITS:
            raise ConfigurationError(f"{key_name}: the RSA key has {private.key_size} bits; "
                                     f"OpenADR needs at least {MIN_RSA_BITS}")
        algorithm = RSA_SHA256
    elif isinstance(private, ec.EllipticCurvePrivateKey):
        if not isinstance(private.curve, EC_CURVES):
            raise ConfigurationError(f"{key_name}: the EC key is on curve {private.curve.name}; "
                                     "use P-256 (secp256r1), P-384 or P-521")
        algorithm = ECDSA_SHA256
    else:
        raise ConfigurationError(f"{key_name}: a {type(private).__name__} key is not supported; "
                                 "OpenADR signs with RSA or ECDSA keys")
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    if (private.public_key().public_bytes(serialization.Encoding.DER, public)
            != certificate.public_key().public_bytes(serialization.Encoding.DER, public)):
        raise ConfigurationError(f"{key_name} is not the private key of the certificate in "
                                 f"{cert_name}; give the matching pair")
    der = certificate.public_bytes(serialization.Encoding.DER)
    return Signer(private, certificate, base64.b64encode(der).decode("ascii"),
                  fingerprint_from_der(der), algorithm)


# ================================================================ signing


def _c14n(element: etree._Element, algorithm: str = C14N,
          prefixes: list[str] | None = None) -> bytes:
    """The canonical form of ``element`` in its document: inclusive C14N copies every namespace
    in scope from the ancestors, which is why signing and verifying work on the final tree."""
    return etree.tostring(element, method="c14n", exclusive=algorithm == EXC_C14N,
                          with_comments=False, inclusive_ns_prefixes=prefixes or None)


def _digest(element: etree._Element, algorithm: str = C14N,
            prefixes: list[str] | None = None) -> bytes:
    return hashlib.sha256(_c14n(element, algorithm, prefixes)).digest()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


SIGNATURE_ID = "signature"
OBJECT_ID = "replayProtect"
SIGNED_OBJECT_ID = "oadrSignedObject"  # the oadr:Id the codec gives oadrSignedObject


# Per thread: lxml trees should not be shared between threads, so each thread keeps its own
# skeletons, id(signer) -> (signer, ds:Signature).
_local = threading.local()


def _skeleton_of(signer: Signer) -> etree._Element:
    """The ds:Signature of every message ``signer`` signs, without digests, value and
    ReplayProtect values: built once per thread and copied per message (faster than building)."""
    cache: dict[int, tuple[Signer, etree._Element]] | None = getattr(_local, "skeletons", None)
    if cache is None:
        cache = _local.skeletons = {}
    entry = cache.get(id(signer))
    if entry is None or entry[0] is not signer:
        entry = cache[id(signer)] = (signer, _skeleton(signer))
    return entry[1]


def _skeleton(signer: Signer) -> etree._Element:
    """The ds:Signature :func:`sign` fills in, built inside an oadrPayload so that it uses the
    prefixes the codec declares there and declares none of its own."""
    holder = etree.Element(_PAYLOAD_ROOT, nsmap=NSMAP)
    signature = etree.SubElement(holder, _ds("Signature"), {"Id": SIGNATURE_ID})
    info = etree.SubElement(signature, _ds("SignedInfo"))
    etree.SubElement(info, _ds("CanonicalizationMethod"), {"Algorithm": C14N})
    etree.SubElement(info, _ds("SignatureMethod"), {"Algorithm": signer.algorithm})
    for ref in (SIGNED_OBJECT_ID, OBJECT_ID):
        reference = etree.SubElement(info, _ds("Reference"), {"URI": "#" + ref})
        transforms = etree.SubElement(reference, _ds("Transforms"))
        etree.SubElement(transforms, _ds("Transform"), {"Algorithm": C14N})
        etree.SubElement(reference, _ds("DigestMethod"), {"Algorithm": SHA256})
        etree.SubElement(reference, _ds("DigestValue"))
    etree.SubElement(signature, _ds("SignatureValue"))
    x509_data = etree.SubElement(etree.SubElement(signature, _ds("KeyInfo")), _ds("X509Data"))
    etree.SubElement(x509_data, _ds("X509Certificate")).text = signer.certificate_b64
    obj = etree.SubElement(signature, _ds("Object"), {"Id": OBJECT_ID})
    prop = etree.SubElement(etree.SubElement(obj, _ds("SignatureProperties")),
                            _ds("SignatureProperty"), {"Target": "#" + SIGNATURE_ID})
    replay = etree.SubElement(prop, _dsp("ReplayProtect"))
    etree.SubElement(replay, _dsp("timestamp"))
    etree.SubElement(replay, _dsp("nonce"))
    return signature


def sign(root: etree._Element, signer: Signer, *, now: datetime, nonce: str | None = None) -> bytes:
    """Sign an ``oadr:oadrPayload`` tree (as :func:`flask_openadr.codec.convert.encode_element`
    builds it) and serialize it, once: nothing may re-indent the result.

    Adds ``ds:Signature`` (``Id="signature"``) as the first child of ``oadrPayload``, with two
    references (the ``oadrSignedObject`` and a ``ds:Object`` holding ``dsp:ReplayProtect`` with
    ``now`` in UTC and a fresh random nonce), inclusive C14N 1.0, SHA-256 and the signer's
    algorithm, and the signer's certificate in ``ds:KeyInfo``.

    :param nonce: for tests only; by default 128 random bits in hex.
    :returns: UTF-8 bytes with an XML declaration.
    """
    if root.tag != _PAYLOAD_ROOT or len(root) != 1 or root[0].tag != _SIGNED_OBJECT:
        raise ValueError("sign() needs an oadr:oadrPayload holding just oadr:oadrSignedObject")
    signed_object = root[0]
    object_ref = signed_object.get(_OADR_ID)
    if not object_ref:
        raise ValueError("oadr:oadrSignedObject has no oadr:Id to reference")
    signature = copy.deepcopy(_skeleton_of(signer))
    root.insert(0, signature)
    info, value, _key_info, obj = signature
    references = info[2], info[3]
    if object_ref != SIGNED_OBJECT_ID:
        references[0].set("URI", "#" + object_ref)
    timestamp, nonce_element = obj[0][0][0]
    timestamp.text = format_datetime(now)
    nonce_element.text = nonce or os.urandom(16).hex()
    # The codec declares every conventional prefix on oadrPayload; a short reply uses few of
    # them. Inclusive C14N renders every namespace in scope and libxml2's cost grows with their
    # number at each element, so the unused declarations go before anything is canonicalized:
    # about half the C14N time of an oadrResponse, and a shorter message.
    etree.cleanup_namespaces(root)
    # Digests and SignedInfo are canonicalized in the final tree (inclusive C14N depends on it).
    references[0][2].text = _b64(_digest(signed_object))
    references[1][2].text = _b64(_digest(obj))
    value.text = _b64(_sign_bytes(signer, _c14n(info)))
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


# ---------------------------------------------------------------- signing encoded bytes
#
# The VTN signs every reply to a signing VEN, and its replies are already bytes (codec.encode,
# or a body built in the service's transaction). sign() would parse them back, canonicalize
# three subtrees with libxml2 and serialize again; sign_message() writes the same message from
# templates instead. Everything the signature covers is either written here (ds:SignedInfo,
# the ds:Object with ReplayProtect) or the codec's bytes of oadrSignedObject. libxml2's
# serializer writes those in canonical form but for what C14N 1.0 does differently: it writes
# the namespace declarations in scope on the apex element and empty elements as start-end
# pairs (both done here), orders several attributes of one element, and writes a few characters
# as other references ("&#13;" for "&#xD;", "&gt;" in an attribute value where C14N writes ">").
# A message with any of the last two goes to sign(): the codec writes one attribute per element
# at most, and such characters (a carriage return in a text) are rare. The tests hold the two
# paths to the same bytes over generated payloads of every type.

_DECLARATION = b"<?xml version='1.0' encoding='UTF-8'?>\n"
# What codec.encode writes before oadrSignedObject: the declaration, then the root start tag
# declaring every conventional prefix.
_ENCODED_HEAD = etree.tostring(etree.Element(_PAYLOAD_ROOT, nsmap=NSMAP), xml_declaration=True,
                               encoding="UTF-8")[:-2] + b">"
_ROOT_OPEN = b"<oadr:oadrPayload"
_ROOT_CLOSE = b"</oadr:oadrPayload>"
_SIGNED_OPEN = b'<oadr:oadrSignedObject oadr:Id="'
_SIGNED_CLOSE = b"</oadr:oadrSignedObject>"
#: (prefix, URI) of the root's declarations, in the order the codec writes them.
_ROOT_NAMESPACES = tuple(re.findall(rb' xmlns:([^=]+)="([^"]*)"', _ENCODED_HEAD))
_SIGNATURE_PREFIXES = frozenset({b"oadr", b"ds", b"dsp"})  # the root's and ds:Signature's
_ELEMENT_PREFIXES = tuple((prefix, b"<" + prefix + b":") for prefix, _uri in _ROOT_NAMESPACES)
# Never in what the codec writes; sign() takes a message with any: a character reference,
# a comment, CDATA, a processing instruction, a namespace declaration below the root.
_UNUSUAL = (b"&#", b"<!", b"<?", b" xmlns")
# A nonce written as it is (sign() takes any other one).
_PLAIN_NONCE = re.compile(r"[A-Za-z0-9._:+/=-]{1,200}")


def _canonical(signed_object: bytes) -> tuple[bytes, frozenset[bytes]] | None:
    """The codec's bytes of oadrSignedObject as C14N 1.0 writes them but for the namespace
    declarations of the apex element, and the prefixes its element and attribute names use;
    None when the bytes hold anything the serializer and C14N write differently."""
    if any(unusual in signed_object for unusual in _UNUSUAL):
        return None
    # In the serializer's output "<" and ">" only open and close tags ("&lt;" and "&gt;" in
    # texts and attribute values), so a '="' after the last "<" and before the next ">" starts
    # an attribute value.
    used = {prefix for prefix, needle in _ELEMENT_PREFIXES if needle in signed_object}
    at = signed_object.find(b'="')
    while at != -1:
        tag = signed_object.rfind(b"<", 0, at)
        if tag > signed_object.rfind(b">", 0, at):
            end = signed_object.index(b'"', at + 2)
            # One attribute per element (C14N would order several), no entity in its value.
            if (signed_object[end + 1:end + 2] not in (b">", b"/")
                    or b"&" in signed_object[at + 2:end]):
                return None
            prefix, colon, _local = signed_object[signed_object.rindex(b" ", tag, at) + 1:at] \
                .partition(b":")
            if colon:
                used.add(prefix)
            at = end
        at = signed_object.find(b'="', at + 2)
    if b"/>" in signed_object:  # empty elements as start-end pairs
        parts = signed_object.split(b"/>")
        for index, part in enumerate(parts[:-1]):
            name = part[part.rindex(b"<") + 1:].split(b" ", 1)[0]
            parts[index] = part + b"></" + name + b">"
        signed_object = b"".join(parts)
    return signed_object, frozenset(used)


@functools.lru_cache(maxsize=64)
def _namespaces(used: frozenset[bytes]) -> tuple[bytes, bytes]:
    """The declarations of the prefixes ``used`` (and of those ds:Signature uses): in the
    codec's order for the root start tag, and sorted by prefix as C14N writes them on each
    signed apex element."""
    declared = [(prefix, uri) for prefix, uri in _ROOT_NAMESPACES
                if prefix in used or prefix in _SIGNATURE_PREFIXES]
    return (b"".join(b' xmlns:%s="%s"' % pair for pair in declared),
            b"".join(b' xmlns:%s="%s"' % pair for pair in sorted(declared)))


def sign_message(document: bytes, signer: Signer, *, now: datetime,
                 nonce: str | None = None) -> bytes:
    """Sign a message as :func:`flask_openadr.codec.encode` wrote it: the bytes
    :func:`sign` gives for the tree the codec built, without building and canonicalizing
    trees. Bytes of another form are parsed and signed by :func:`sign`.

    :param nonce: for tests only; by default 128 random bits in hex.
    :returns: UTF-8 bytes with an XML declaration.
    """
    nonce = nonce or os.urandom(16).hex()
    signed_object = document[len(_ENCODED_HEAD):-len(_ROOT_CLOSE)]
    # One oadrSignedObject (it never nests) under the codec's root.
    found = (document.startswith(_ENCODED_HEAD) and document.endswith(_ROOT_CLOSE)
             and signed_object.startswith(_SIGNED_OPEN) and signed_object.endswith(_SIGNED_CLOSE)
             and signed_object.count(b"<oadr:oadrSignedObject") == 1
             and _PLAIN_NONCE.fullmatch(nonce) is not None)
    canonical = _canonical(signed_object) if found else None
    if canonical is None:
        return sign(_parse(document), signer, now=now, nonce=nonce)
    object_id = signed_object[len(_SIGNED_OPEN):signed_object.index(b'"', len(_SIGNED_OPEN))]
    root_declarations, declarations = _namespaces(canonical[1])
    apex = len(b"<oadr:oadrSignedObject")
    object_digest = hashlib.sha256(canonical[0][:apex] + declarations
                                   + canonical[0][apex:]).digest()
    replay = (b'<ds:SignatureProperties><ds:SignatureProperty Target="#' + _SIGNATURE_ID
              + b'"><dsp:ReplayProtect><dsp:timestamp>' + format_datetime(now).encode("ascii")
              + b"</dsp:timestamp><dsp:nonce>" + nonce.encode("ascii")
              + b"</dsp:nonce></dsp:ReplayProtect></ds:SignatureProperty>"
              b"</ds:SignatureProperties></ds:Object>")
    replay_digest = hashlib.sha256(b"<ds:Object" + declarations + b' Id="' + _OBJECT_ID
                                   + b'">' + replay).digest()
    digests = base64.b64encode(object_digest), base64.b64encode(replay_digest)
    method = signer.algorithm.encode("ascii")
    value = _sign_bytes(signer, b"".join((
        b"<ds:SignedInfo", declarations, b'><ds:CanonicalizationMethod Algorithm="', _C14N,
        b'"></ds:CanonicalizationMethod><ds:SignatureMethod Algorithm="', method,
        b'"></ds:SignatureMethod>', _references(object_id, digests, _DIGEST_METHOD_C14N),
        b"</ds:SignedInfo>")))
    return b"".join((
        _DECLARATION, _ROOT_OPEN, root_declarations, b'><ds:Signature Id="', _SIGNATURE_ID,
        b'"><ds:SignedInfo><ds:CanonicalizationMethod Algorithm="', _C14N,
        b'"/><ds:SignatureMethod Algorithm="', method, b'"/>',
        _references(object_id, digests, _DIGEST_METHOD_XML),
        b"</ds:SignedInfo><ds:SignatureValue>", base64.b64encode(value),
        b"</ds:SignatureValue><ds:KeyInfo><ds:X509Data><ds:X509Certificate>",
        signer.certificate_b64.encode("ascii"),
        b'</ds:X509Certificate></ds:X509Data></ds:KeyInfo><ds:Object Id="', _OBJECT_ID, b'">',
        replay, b"</ds:Signature>", signed_object, _ROOT_CLOSE))


_C14N = C14N.encode("ascii")
_SIGNATURE_ID = SIGNATURE_ID.encode("ascii")
_OBJECT_ID = OBJECT_ID.encode("ascii")
# A Reference between its URI and its digest value (the same in both references), as C14N and
# as the serializer write it (empty elements).
_DIGEST_METHOD_C14N = (b'<ds:Transforms><ds:Transform Algorithm="' + _C14N
                       + b'"></ds:Transform></ds:Transforms><ds:DigestMethod Algorithm="'
                       + SHA256.encode("ascii") + b'"></ds:DigestMethod><ds:DigestValue>')
_DIGEST_METHOD_XML = (b'<ds:Transforms><ds:Transform Algorithm="' + _C14N
                      + b'"/></ds:Transforms><ds:DigestMethod Algorithm="'
                      + SHA256.encode("ascii") + b'"/><ds:DigestValue>')


def _references(object_id: bytes, digests: tuple[bytes, bytes], digest_method: bytes) -> bytes:
    """The two ds:Reference elements: the oadrSignedObject's and the ReplayProtect object's."""
    return b"".join((
        b'<ds:Reference URI="#', object_id, b'">', digest_method, digests[0],
        b'</ds:DigestValue></ds:Reference><ds:Reference URI="#', _OBJECT_ID, b'">',
        digest_method, digests[1], b"</ds:DigestValue></ds:Reference>"))


def _sign_bytes(signer: Signer, data: bytes) -> bytes:
    if isinstance(signer.key, rsa.RSAPrivateKey):  # the algorithm is RSA_SHA256
        return signer.key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    r, s = decode_dss_signature(signer.key.sign(data, ec.ECDSA(hashes.SHA256())))
    size = (signer.key.curve.key_size + 7) // 8
    return r.to_bytes(size, "big") + s.to_bytes(size, "big")


# ================================================================ verification


@dataclass(frozen=True)
class Verified:
    """What a valid signature covers, and who signed it. ``payload`` is the one payload element
    inside ``signed_object``: the only part of the message the caller may read."""

    signed_object: etree._Element
    payload: etree._Element
    timestamp: datetime
    nonce: str
    fingerprint: str


def is_signed(root: etree._Element) -> bool:
    """Whether a parsed message carries a signature where the profile puts one (the first child
    of ``oadrPayload``; the codec refuses a ``ds:Signature`` anywhere else)."""
    if root.tag != _PAYLOAD_ROOT:
        return False
    first = next((child for child in root if isinstance(child.tag, str)), None)
    return first is not None and first.tag == _ds("Signature")


def _elements(parent: etree._Element) -> list[etree._Element]:
    """The child elements of ``parent``, without comments and processing instructions."""
    return list(parent.iterchildren(etree.Element))


def _name(tag: str) -> str:
    namespace, _, local = tag[1:].partition("}") if tag.startswith("{") else ("", "", tag)
    prefix = {DS: "ds", DSP: "dsp", OADR: "oadr"}.get(namespace)
    return f"{prefix}:{local}" if prefix else local


def _expect(children: list[etree._Element], index: int, tag: str, where: str) -> etree._Element:
    if index >= len(children) or children[index].tag != tag:
        found = _name(children[index].tag) if index < len(children) else "nothing"
        raise ComplianceError(description=f"{where}: expected {_name(tag)} here, found {found} "
                              "(see the OpenADR 2.0b signature profile)")
    return children[index]


def _ids(root: etree._Element) -> dict[str, etree._Element]:
    """Every Id value of the document and its element; a value used twice is refused, since
    the second element could pose as the signed one (signature wrapping)."""
    found: dict[str, etree._Element] = {}
    # Element names only (no attribute proxies), the names' local part compared: measured under
    # callgrind on a signed oadrPoll, half the instructions of an XPath selecting the attributes.
    for element in root.iter(etree.Element):
        for name in element.keys():  # str in Python 3 (lxml-stubs also allow bytes)
            if isinstance(name, str) and name.rpartition("}")[2] in _ID_NAMES:  # xml:id: "id"
                value = element.get(name, "")
                if value in found:
                    raise InvalidData(description=f"the Id value {value!r} is used twice in "
                                      "the message; every Id must be unique (signature "
                                      "wrapping is refused)")
                found[value] = element
    return found


def _algorithm(element: etree._Element, allowed: tuple[str, ...], where: str) -> str:
    algorithm = element.get("Algorithm")
    if algorithm not in allowed:
        raise ComplianceError(description=f"{where} Algorithm {algorithm!r} is not allowed; use "
                              f"one of {', '.join(allowed)}")
    return algorithm


def _transform(transform: etree._Element, where: str) -> tuple[str, list[str] | None]:
    """A canonicalization (the only transform allowed) and its InclusiveNamespaces list."""
    algorithm = _algorithm(transform, CANONICALIZATIONS, where)
    inner = _elements(transform)
    prefixes = None
    if algorithm == EXC_C14N and len(inner) == 1 and inner[0].tag == _INCLUSIVE_NAMESPACES:
        prefixes = (inner[0].get("PrefixList") or "").split()
    elif inner:
        raise ComplianceError(description=f"{where}: unexpected {_name(inner[0].tag)} in the "
                              "canonicalization method")
    return algorithm, prefixes


def _base64(text: str | None, where: str) -> bytes:
    compact = "".join((text or "").split())
    try:
        data = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        data = b""
    if not data:
        raise InvalidData(description=f"{where} is not base64 ({shown((text or '').strip())})")
    return data


@functools.lru_cache(maxsize=512)
def _certificate(text: str) -> tuple[CertificatePublicKeyTypes, str]:
    """The public key and fingerprint of a signer certificate (``ds:X509Certificate``'s text).
    VENs sign every message with the same certificate, so each is parsed once per process."""
    der = _base64(text, "ds:X509Certificate")
    try:
        certificate = x509.load_der_x509_certificate(der)
    except ValueError:
        raise InvalidData(description="ds:X509Certificate is not a DER X.509 certificate") from None
    return certificate.public_key(), fingerprint_from_der(der)


def verify(root: etree._Element, *, client_fingerprint: str | None = None) -> Verified:
    """Verify the signature of a parsed ``oadr:oadrPayload`` and return what it covers.

    :param client_fingerprint: the TLS client certificate's fingerprint; the signer must be that
        certificate (463 otherwise). None when the request has no client certificate.
    :raises ~flask_openadr.errors.Rejection: ComplianceError (459), InvalidData (454) or
        NotRegistered (463), with a description naming the element and value.
    """
    if root.tag != _PAYLOAD_ROOT:
        raise ComplianceError(description="a signed message must be an oadr:oadrPayload")
    children = _elements(root)
    signature = _expect(children, 0, _ds("Signature"), "oadr:oadrPayload")
    signed_object = _expect(children, 1, _SIGNED_OBJECT, "oadr:oadrPayload")
    if len(children) != 2:
        raise ComplianceError(description=f"oadr:oadrPayload: unexpected {_name(children[2].tag)}"
                              " after oadr:oadrSignedObject")
    payloads = _elements(signed_object)
    if len(payloads) != 1:
        raise ComplianceError(description="oadr:oadrSignedObject must hold exactly one payload, "
                              f"found {len(payloads)}")
    ids = _ids(root)

    parts = _elements(signature)
    info = _expect(parts, 0, _ds("SignedInfo"), "ds:Signature")
    value_element = _expect(parts, 1, _ds("SignatureValue"), "ds:Signature")
    key_info = _expect(parts, 2, _ds("KeyInfo"), "ds:Signature")
    objects = parts[3:]
    for extra in objects:
        if extra.tag != _ds("Object"):
            raise ComplianceError(description=f"ds:Signature: unexpected {_name(extra.tag)} "
                                  "after ds:KeyInfo")

    steps = _elements(info)
    c14n_method = _expect(steps, 0, _ds("CanonicalizationMethod"), "ds:SignedInfo")
    info_c14n = _transform(c14n_method, "ds:CanonicalizationMethod")
    method = _expect(steps, 1, _ds("SignatureMethod"), "ds:SignedInfo")
    signature_method = _algorithm(method, SIGNATURE_METHODS, "ds:SignatureMethod")
    if _elements(method):  # HMACOutputLength and the like belong to refused algorithms
        raise ComplianceError(description="ds:SignatureMethod must be empty")
    references = steps[2:]
    if len(references) != 2 or any(r.tag != _ds("Reference") for r in references):
        raise ComplianceError(description=f"ds:SignedInfo must hold exactly two ds:Reference "
                              f"elements (the oadrSignedObject and the ReplayProtect object), "
                              f"found {sum(r.tag == _ds('Reference') for r in references)}"
                              + ("" if all(r.tag == _ds("Reference") for r in references)
                                 else " and other elements"))
    covered: dict[str, tuple[etree._Element, etree._Element]] = {}
    for reference in references:
        target = _resolve(reference, ids)
        if target is signed_object:
            kind = "object"
        elif target.tag == _ds("Object") and target.getparent() is signature:
            kind = "replay"
        else:
            raise InvalidData(description=f"ds:Reference URI={reference.get('URI')!r} points to "
                              f"{_name(target.tag)}, which is neither the oadrSignedObject of "
                              "this message nor a ds:Object of its signature (signature "
                              "wrapping is refused)")
        if kind in covered:
            raise ComplianceError(description=f"two ds:Reference elements point to the same "
                                  f"element ({reference.get('URI')!r})")
        covered[kind] = (reference, target)
    if set(covered) != {"object", "replay"}:
        missing = "the oadrSignedObject" if "object" not in covered else "the ReplayProtect object"
        raise ComplianceError(description=f"no ds:Reference covers {missing}")
    replay_protect = _replay_protect(covered["replay"][1])

    for reference, target in covered.values():
        _check_digest(reference, target)

    public_key, fingerprint = _certificate(_certificate_text(key_info) or "")
    raw_signature = _base64(value_element.text, "ds:SignatureValue")
    _check_signature(public_key, signature_method, raw_signature,
                     _c14n(info, *info_c14n))
    if client_fingerprint is not None and _same(client_fingerprint, fingerprint) is False:
        raise NotRegistered(description=f"the message is signed with certificate {fingerprint}, "
                            f"not with the TLS client certificate {client_fingerprint}; sign "
                            "with the certificate the VEN connects with")
    timestamp, nonce = _replay_values(replay_protect)
    return Verified(signed_object, payloads[0], timestamp, nonce, fingerprint)


def _same(a: str, b: str) -> bool:
    return a.replace(":", "").upper() == b.replace(":", "").upper()


def _resolve(reference: etree._Element, ids: dict[str, etree._Element]) -> etree._Element:
    uri = reference.get("URI")
    if not uri or not uri.startswith("#") or len(uri) == 1 or uri.startswith("#xpointer("):
        raise ComplianceError(description=f"ds:Reference URI={uri!r} is not allowed; reference "
                              "the signed elements by Id ('#<Id>')")
    target = ids.get(uri[1:])
    if target is None:
        raise InvalidData(description=f"ds:Reference URI={uri!r} names no element of the message")
    return target


def _replay_protect(obj: etree._Element) -> etree._Element:
    found = list(obj.iter(_dsp("ReplayProtect")))
    if len(found) != 1:
        raise ComplianceError(description=f"the signed ds:Object Id={obj.get('Id')!r} must hold "
                              f"one dsp:ReplayProtect, found {len(found)}")
    return found[0]


def _check_digest(reference: etree._Element, target: etree._Element) -> None:
    uri = reference.get("URI")
    parts = _elements(reference)
    index = 0
    algorithm, prefixes = C14N, None  # XML-DSig: a node-set becomes octets by C14N 1.0
    if parts and parts[0].tag == _ds("Transforms"):
        transforms = _elements(parts[0])
        if len(transforms) != 1 or transforms[0].tag != _ds("Transform"):
            raise ComplianceError(description=f"ds:Reference URI={uri!r} must have one "
                                  f"ds:Transform (a canonicalization), found {len(transforms)}")
        algorithm, prefixes = _transform(transforms[0], f"ds:Reference URI={uri!r} ds:Transform")
        index = 1
    method = _expect(parts, index, _ds("DigestMethod"), f"ds:Reference URI={uri!r}")
    _algorithm(method, DIGEST_METHODS, f"ds:Reference URI={uri!r} ds:DigestMethod")
    value = _expect(parts, index + 1, _ds("DigestValue"), f"ds:Reference URI={uri!r}")
    if len(parts) != index + 2:
        raise ComplianceError(description=f"ds:Reference URI={uri!r}: unexpected "
                              f"{_name(parts[index + 2].tag)}")
    expected = _base64(value.text, f"ds:Reference URI={uri!r} ds:DigestValue")
    if not hmac.compare_digest(expected, _digest(target, algorithm, prefixes)):
        raise InvalidData(description=f"ds:Reference URI={uri!r}: the digest does not match the "
                          "content; the signed element was changed after signing")


def _certificate_text(key_info: etree._Element) -> str | None:
    for data in key_info.iter(_ds("X509Data")):
        for cert in data.iter(_ds("X509Certificate")):
            return cert.text
    if next(key_info.iter(_ds("KeyValue")), None) is not None:
        raise ComplianceError(description="ds:KeyInfo holds only ds:KeyValue; send the signing "
                              "certificate in ds:X509Data/ds:X509Certificate, so that the "
                              "signer can be matched to the VEN's certificate fingerprint")
    raise ComplianceError(description="ds:KeyInfo has no ds:X509Data/ds:X509Certificate")


def _check_signature(public_key: CertificatePublicKeyTypes, algorithm: str, value: bytes,
                     signed: bytes) -> None:
    try:
        if algorithm == RSA_SHA256:
            if not isinstance(public_key, rsa.RSAPublicKey):
                raise ComplianceError(description="ds:SignatureMethod is rsa-sha256 but the "
                                      "certificate's key is not RSA")
            if public_key.key_size < MIN_RSA_BITS:
                raise ComplianceError(description=f"the signing RSA key has "
                                      f"{public_key.key_size} bits; at least {MIN_RSA_BITS} "
                                      "are needed")
            public_key.verify(value, signed, padding.PKCS1v15(), hashes.SHA256())
            return
        if not isinstance(public_key, ec.EllipticCurvePublicKey):
            raise ComplianceError(description="ds:SignatureMethod is ecdsa-sha256 but the "
                                  "certificate's key is not an EC key")
        if not isinstance(public_key.curve, EC_CURVES):
            raise ComplianceError(description=f"the signing key's curve {public_key.curve.name} "
                                  "is not allowed; use P-256, P-384 or P-521")
        size = (public_key.curve.key_size + 7) // 8
        if len(value) != 2 * size:
            raise InvalidData(description=f"ds:SignatureValue has {len(value)} bytes; ECDSA on "
                              f"{public_key.curve.name} is r||s of {2 * size} bytes (not DER)")
        der = encode_dss_signature(int.from_bytes(value[:size], "big"),
                                   int.from_bytes(value[size:], "big"))
        public_key.verify(der, signed, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise InvalidData(description="ds:SignatureValue does not verify with the certificate "
                          "in ds:KeyInfo over ds:SignedInfo") from None


def _replay_values(replay_protect: etree._Element) -> tuple[datetime, str]:
    parts = _elements(replay_protect)
    timestamp = _expect(parts, 0, _dsp("timestamp"), "dsp:ReplayProtect")
    nonce = _expect(parts, 1, _dsp("nonce"), "dsp:ReplayProtect")
    when = _timestamp((timestamp.text or "").strip())
    text = (nonce.text or "").strip()
    if not text:
        raise ComplianceError(description="dsp:nonce is empty; send a fresh random value")
    if len(text) > MAX_NONCE_LENGTH:
        raise InvalidData(description=f"dsp:nonce is {len(text)} characters long; at most "
                          f"{MAX_NONCE_LENGTH} are accepted")
    return when, text


def _timestamp(text: str) -> datetime:
    """An xs:dateTime: UTC with Z (what peers send), no zone (taken as UTC) or an offset."""
    try:
        return parse_datetime(text)
    except ValueProblem as problem:
        reason = str(problem)
    try:
        # xcal forbids numeric offsets, xs:dateTime does not.
        value = datetime.fromisoformat(text)
    except ValueError:
        value = None
    if not is_aware(value):
        raise InvalidData(description=f"dsp:timestamp: {reason}")
    return value.astimezone(timezone.utc)
