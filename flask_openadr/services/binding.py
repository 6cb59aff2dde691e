"""Identity binding: a VEN record belongs to the client certificate it registered (or was
enrolled) with, and only a caller presenting that certificate may act for it.

The caller is named by the fingerprint of its verified client certificate, or None when it has
none (only possible with ``OPENADR_REQUIRE_CLIENT_CERT`` off). Fingerprints are compared in the
store's form (:func:`~flask_openadr.store.base.normalize_fingerprint`), so case and colons do not
matter.
"""
from __future__ import annotations

from ..errors import NotRegistered
from ..store.base import VenRecord, normalize_fingerprint


def bound_to(ven: VenRecord, fingerprint: str | None) -> bool:
    """Whether ``ven`` is bound to the certificate ``fingerprint`` (and not merely unbound)."""
    bound = normalize_fingerprint(ven.get("fingerprint"))
    return bound is not None and bound == normalize_fingerprint(fingerprint)


def check_caller(ven: VenRecord, fingerprint: str | None) -> None:
    """A message from a registered VEN: the caller's certificate must be the one ``ven`` is
    bound to; a caller without a certificate may act only for a VEN bound to none.

    :raises NotRegistered: (463) naming the venID and what the caller must do.
    """
    bound = normalize_fingerprint(ven.get("fingerprint"))
    if bound == normalize_fingerprint(fingerprint):
        return
    ven_id = ven["ven_id"]
    if fingerprint is None:
        raise NotRegistered(description=f"venID {ven_id!r} is bound to a client certificate; "
                            "send its messages over TLS with that certificate")
    if bound is None:
        # An unbound record (registered without TLS) is not claimed by a mere poll: the VEN
        # registers again, which binds it (see check_claim).
        raise NotRegistered(description=f"venID {ven_id!r} is not bound to the client "
                            f"certificate {fingerprint}; register again with it")
    raise NotRegistered(description=f"the client certificate {fingerprint} does not belong to "
                        f"venID {ven_id!r}")


def check_claim(ven: VenRecord, fingerprint: str | None) -> None:
    """A registration for the existing record ``ven``: refused when ``ven`` is bound to another
    certificate (or the caller has none), so a registration is never a takeover. An unbound
    record may be claimed; the registration then binds it to the caller's certificate.

    :raises NotRegistered: (463) naming the venID.
    """
    if normalize_fingerprint(ven.get("fingerprint")) is None:
        return
    if not bound_to(ven, fingerprint):
        who = "a caller without a client certificate" if fingerprint is None else \
            f"the client certificate {fingerprint}"
        raise NotRegistered(description=f"venID {ven['ven_id']!r} is bound to another client "
                            f"certificate; {who} cannot register as it")
