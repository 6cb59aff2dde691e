"""gunicorn configuration for the liveness process tests: the hooks a deployment would use."""
import os

from flask_openadr.gunicorn import post_fork, post_worker_init, worker_exit  # noqa: F401

preload_app = os.environ.get("LV_PRELOAD") == "1"
