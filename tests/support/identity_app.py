"""The application tests/test_identity.py serves with gunicorn ending TLS itself: a VTN on a
SQLite file, client certificates required (the default)."""
from __future__ import annotations

import os

from flask import Flask

from flask_openadr import VTN


def create_app() -> Flask:
    app = Flask("identity_vtn", instance_path=os.environ["ID_INSTANCE"])
    app.config.update(OPENADR_STORE_URI=os.environ["ID_STORE_URI"], OPENADR_VTN_ID="ID-VTN")
    VTN(app)

    @app.get("/health")
    def health():
        return "ok"

    return app
