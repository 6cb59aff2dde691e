"""nginx for the deployment tests: the shipped site template, filled in and served on free ports.

The site file and its TLS snippets are the ones in example_app/deploy/nginx/ that the deployment
docs show. Only the surrounding main configuration is the tests' own: every path nginx writes (pid
file, logs, temporary files) lives under the test's directory, and nginx runs in the foreground
(``daemon off``) so that the test owns the process and stops it.
"""
from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import time

import pytest

from tests.support.backends import require_server
from tests.support.servers import ROOT, free_port, stop_process

DEPLOY = os.path.join(ROOT, "example_app", "deploy")
NGINX_SITE = os.path.join(DEPLOY, "nginx", "openadr-vtn.conf")
NGINX_TLS = {"rsa": os.path.join(DEPLOY, "nginx", "tls-rsa.conf"),
             "ecdsa": os.path.join(DEPLOY, "nginx", "tls-ecdsa.conf")}

_PLACEHOLDER = re.compile(r"\$\{([A-Z_]+)\}")


def render(template_path: str, values: dict[str, str]) -> str:
    """The template with each ``${NAME}`` replaced, as ``envsubst`` with a list of names does
    (nginx's own ``$variables`` have no braces and stay). Every placeholder must be given."""
    with open(template_path, encoding="utf-8") as fh:
        text = fh.read()
    missing = sorted(set(_PLACEHOLDER.findall(text)) - set(values))
    if missing:
        raise KeyError(f"{template_path}: no value for placeholder(s) {', '.join(missing)}")
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], text)


def nginx_binary() -> str:
    """The nginx program (the Debian package's), or skip/fail naming it when it is missing."""
    path = shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK)
                                     else None)
    require_server("nginx (Debian package nginx, /usr/sbin/nginx)", path is not None,
                   "not installed (apt-get install nginx)")
    return path


def wait_for_port(port: int, proc: subprocess.Popen, what: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"{what} did not start listening on port {port}")
            time.sleep(0.05)


class Nginx:
    """nginx serving example_app/deploy/nginx/openadr-vtn.conf on two free loopback ports.

    :param directory: where the filled-in configuration, pid file, logs and temp files go.
    :param vtn: the VTN's certificate (tests/support/pki.py Credential); its key type picks the TLS
        snippet (tls-rsa.conf or tls-ecdsa.conf).
    :param ven_ca: the PEM file of the CAs VEN certificates must chain to.
    :param upstream: ``host:port`` of gunicorn.
    """

    def __init__(self, directory: str, *, vtn, ven_ca: str, upstream: str):
        binary = nginx_binary()
        os.makedirs(directory, exist_ok=True)
        self.directory = directory
        self.ven_port, self.portal_port = free_port(), free_port()
        values = {
            "VEN_LISTEN": f"127.0.0.1:{self.ven_port}",
            "PORTAL_LISTEN": f"127.0.0.1:{self.portal_port}",
            "VTN_HOST": "localhost",
            "VTN_TLS": os.path.join(directory, "tls.conf"),
            "VEN_CA": ven_ca,
            "PORTAL_CERT": vtn.cert_path,
            "PORTAL_KEY": vtn.key_path,
            "UPSTREAM": upstream,
            "VTN_CERT": vtn.cert_path,
            "VTN_KEY": vtn.key_path,
        }
        self._write("tls.conf", render(NGINX_TLS[vtn.key_type], values))
        self._write("openadr-vtn.conf", render(NGINX_SITE, values))
        self.error_log = os.path.join(directory, "error.log")
        # Running as root, nginx would hand the workers to "nobody", who cannot read the keys in
        # the test's private directory: keep them as the user running the tests.
        user = (f"user {pwd.getpwuid(os.getuid()).pw_name};\n" if os.geteuid() == 0 else "")
        temp = "\n".join(f"    {kind}_temp_path {os.path.join(directory, kind)};"
                         for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        self._write("nginx.conf", f"""\
daemon off;
{user}worker_processes 1;
pid {os.path.join(directory, 'nginx.pid')};
error_log {self.error_log} info;
events {{
    worker_connections 128;
}}
http {{
    access_log {os.path.join(directory, 'access.log')};
{temp}
    include {os.path.join(directory, 'openadr-vtn.conf')};
}}
""")
        self.proc = subprocess.Popen(
            [binary, "-p", directory, "-e", self.error_log,
             "-c", os.path.join(directory, "nginx.conf")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for_port(self.ven_port, self.proc, "nginx")
            wait_for_port(self.portal_port, self.proc, "nginx")
        except AssertionError:
            self.stop()
            pytest.fail(f"nginx did not start; its error log says:\n{self.log()}")
        self.ven_base = f"https://127.0.0.1:{self.ven_port}"
        self.portal_base = f"https://127.0.0.1:{self.portal_port}"

    def _write(self, name: str, text: str) -> None:
        with open(os.path.join(self.directory, name), "w", encoding="utf-8") as fh:
            fh.write(text)

    def log(self) -> str:
        try:
            with open(self.error_log, encoding="utf-8", errors="replace") as fh:
                return fh.read()
        except FileNotFoundError:
            return "(no error log)"

    def stop(self) -> None:
        # SIGQUIT is nginx's graceful stop (SIGTERM would drop the requests in flight).
        stop_process(self.proc, sig=signal.SIGQUIT, timeout=10)
