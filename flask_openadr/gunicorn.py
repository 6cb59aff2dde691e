"""gunicorn server hooks that run the liveness sweeper in each worker, never in the master.

Put this line in the gunicorn configuration file (``gunicorn -c gunicorn.conf.py ...``)::

    from flask_openadr.gunicorn import post_fork, post_worker_init, worker_exit

``post_fork`` starts the sweepers of apps that exist before the fork (``--preload``);
``post_worker_init`` those of apps the worker has just loaded (without ``--preload``);
``worker_exit`` stops them. Without these hooks a worker starts its sweeper on the first OpenADR
request it serves. gunicorn calls all three in the worker process; nothing here runs in the
master, and importing this module starts nothing.
"""
from __future__ import annotations

from . import runtime

__all__ = ["post_fork", "post_worker_init", "worker_exit", "start_sweepers", "stop_sweepers"]


def start_sweepers() -> int:
    """Start the sweeper and push sender of every VTN app of this process (unless its
    OPENADR_BACKGROUND is off); returns how many apps had a thread started now."""
    return runtime.start_background()


def stop_sweepers(timeout: float = 10.0) -> None:
    """Stop every sweeper and push sender of this process, letting a pass in progress finish."""
    runtime.stop_background(timeout)


def post_fork(server: object, worker: object) -> None:
    """gunicorn hook, in the new worker: start the sweepers of apps loaded before the fork."""
    start_sweepers()


def post_worker_init(worker: object) -> None:
    """gunicorn hook, in the worker after it loaded the app: start the sweepers of its apps."""
    start_sweepers()


def worker_exit(server: object, worker: object) -> None:
    """gunicorn hook, in the worker as it exits: stop its sweepers."""
    stop_sweepers()
