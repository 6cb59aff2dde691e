"""Servers the tests start as processes: gunicorn serving a test app on a free loopback port.

Every server binds to 127.0.0.1 on a free port, runs this checkout's package (its PYTHONPATH
starts with the checkout root, not whichever flask_openadr is installed, so the apps load as
``tests.support.<module>``) and is stopped by the test that started it.
"""
from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request

import pytest

#: The checkout's root: the directory that holds flask_openadr/ and tests/.
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def checkout_env(**extra: str) -> dict[str, str]:
    """The environment for a server process: this one's, the checkout first on PYTHONPATH."""
    return dict(os.environ, PYTHONPATH=ROOT, **extra)


def wait_until_serving(base: str, proc: subprocess.Popen, what: str, *,
                       context: ssl.SSLContext | None = None, timeout: float = 30) -> None:
    """Wait until ``base``/health answers; AssertionError when ``proc`` ends or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(base + "/health", timeout=1, context=context).read()
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"{what} did not start serving {base}/health")
            time.sleep(0.1)


def stop_process(proc: subprocess.Popen, *, sig: int = signal.SIGTERM,
                 timeout: float = 20) -> None:
    """Ask ``proc`` to stop with ``sig`` (gunicorn and nginx finish the requests in flight),
    and kill it if it has not ended within ``timeout`` seconds."""
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:  # pragma: no cover - only when the server hangs
        proc.kill()
        proc.wait()


class Gunicorn:
    """gunicorn serving ``app`` (by module path from the checkout root, such as
    ``"tests.support.e2e_app:create_app()"``),
    stopped by :meth:`stop`.

    :param directory: where its output file goes.
    :param args: more gunicorn arguments, such as ``["-c", config_file]``.
    :param env: more environment variables for the server (the test app's settings).
    :param ssl_context: the client side of TLS when gunicorn ends TLS itself; the readiness
        check and ``base`` then use https.
    """

    def __init__(self, app: str, directory, *, workers: int = 1, args=(), env=None,
                 ssl_context: ssl.SSLContext | None = None):
        self.port = free_port()
        # A file, not a pipe: nobody reads a pipe while the server runs, and a full one would
        # block the server.
        self.output_path = os.path.join(str(directory), f"gunicorn-{self.port}.out")
        with open(self.output_path, "wb") as output:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "--workers", str(workers),
                 "--bind", f"127.0.0.1:{self.port}", "--chdir", ROOT, "--log-level", "warning",
                 *args, app],
                env=checkout_env(**(env or {})), stdout=output, stderr=subprocess.STDOUT,
            )
        self.master_pid = self.proc.pid
        self.base = f"{'https' if ssl_context else 'http'}://127.0.0.1:{self.port}"
        try:
            wait_until_serving(self.base, self.proc, "gunicorn", context=ssl_context)
        except AssertionError as exc:
            self.stop()
            pytest.fail(f"{exc}; it printed:\n{self.output()}")

    def output(self) -> str:
        """What the server has printed so far."""
        with open(self.output_path, encoding="utf-8", errors="replace") as fh:
            return fh.read()

    def stop(self) -> None:
        stop_process(self.proc)
