"""gunicorn settings for a VTN behind nginx (nginx/openadr-vtn.conf), which ends TLS.

    gunicorn -c gunicorn.conf.py "portal:create_app()"
"""
# Start each worker's liveness sweeper when the worker starts, and stop it when it exits.
from flask_openadr.gunicorn import post_fork, post_worker_init, worker_exit  # noqa: F401

# Loopback only: nginx is the one client. The VTN believes the certificate header only from
# OPENADR_TRUSTED_PROXIES, so anyone else who reached this port would be refused (403) anyway.
bind = "127.0.0.1:8000"
# Polls are short requests; a few synchronous workers serve many VENs. They share all state
# through the store (SQLite on one host, PostgreSQL or Redis across hosts).
workers = 4
