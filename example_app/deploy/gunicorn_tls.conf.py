"""gunicorn settings for a VTN that ends TLS itself, without a reverse proxy.

    VTN_CERT=/etc/openadr/vtn.crt VTN_KEY=/etc/openadr/vtn.key VEN_CA=/etc/openadr/ven-ca.pem \\
        gunicorn -c gunicorn_tls.conf.py "portal:create_app()"

The VTN reads each VEN's certificate from the TLS connection gunicorn hands to the worker.
"""
import os
import ssl

# Start each worker's liveness sweeper when the worker starts, and stop it when it exits.
from flask_openadr.gunicorn import post_fork, post_worker_init, worker_exit  # noqa: F401


def _pem_file(variable: str) -> str:
    path = os.environ.get(variable)
    if not path:
        raise SystemExit(f"gunicorn_tls.conf.py: set {variable} to the path of a PEM file "
                         "(VTN_CERT: VTN certificate and chain, VTN_KEY: its key, "
                         "VEN_CA: the CAs VEN certificates chain to)")
    return path


bind = "0.0.0.0:8443"
workers = 4

certfile = _pem_file("VTN_CERT")
keyfile = _pem_file("VTN_KEY")
ca_certs = _pem_file("VEN_CA")       # --ca-certs
cert_reqs = ssl.CERT_REQUIRED        # --cert-reqs 2: no certificate, no connection
# The OpenADR 2.0b suites; OpenSSL offers the ones that fit the key in certfile: for RSA,
# AES128-SHA256 (certification harness) and ECDHE-RSA-AES128-SHA256 (Python clients such as
# openleadr, which refuse suites without forward secrecy); for ECDSA, ECDHE-ECDSA-AES128-SHA256.
ciphers = "ECDHE-ECDSA-AES128-SHA256:ECDHE-RSA-AES128-SHA256:AES128-SHA256"


def ssl_context(config, default_ssl_context_factory):
    """gunicorn's TLS context with the protocol pinned to TLS 1.2, the version OpenADR 2.0b names."""
    context = default_ssl_context_factory()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    return context
