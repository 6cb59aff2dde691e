"""Helpers for tests that fork: wait for a child without letting a hang stall the suite."""
from __future__ import annotations

import os
import signal
import time
import traceback

import pytest


def wait_for_child(pid: int, seconds: float = 30) -> int:
    """The exit code of a forked child; kill it and fail the test if it runs past ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)  # pragma: no cover - only on a hang
    os.waitpid(pid, 0)
    pytest.fail(f"the forked child {pid} hung")


def in_child(body) -> None:
    """Run ``body()`` in the child of a fork and leave with its verdict (0 or 1), never
    returning into pytest, whose state the child shares."""
    code = 1
    try:
        body()
        code = 0
    except BaseException:
        traceback.print_exc()
    finally:
        os._exit(code)
