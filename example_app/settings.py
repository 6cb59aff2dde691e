"""The portal's configuration: defaults, then ``config.yaml``, then the environment, then code.

The VTN reads the ``OPENADR_*`` keys of the YAML file itself (through ``OPENADR_CONFIG_FILE``)
with ``setdefault``, so a key already in ``app.config`` wins over the file. This module puts the
environment's ``OPENADR_*`` variables and the portal's own settings there first, which is what
lets ``OPENADR_STORE_URI=redis://...`` point the example at another store.
"""
from __future__ import annotations

import json
import logging
import os
import secrets
import time
from typing import Any, Mapping

import yaml
from flask import Flask
from werkzeug.security import check_password_hash

from flask_openadr.config import CONFIG_FILE_KEY, KEYS

logger = logging.getLogger("example_app")

CONFIG_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "config.yaml")

#: The portal's own settings and their defaults (each may be in config.yaml or the environment).
PORTAL_DEFAULTS: dict[str, Any] = {
    # VEN name -> its groups: only these VENs may register.
    "ALLOWED_VENS": {},
    # The operator's login name and werkzeug password hash; no hash, no login.
    "PORTAL_USER": "operator",
    "PORTAL_PASSWORD_HASH": None,
    # The portal's own SQLite file (report values, liveness history), relative to the instance
    # folder unless absolute.
    "PORTAL_DATABASE": "portal.sqlite3",
    # VENs per page on the VENs page, seconds between the pages' self-refreshes, hours of
    # report values plotted and kept.
    "PORTAL_PAGE_SIZE": 50,
    "PORTAL_REFRESH_SECONDS": 5,
    "PORTAL_REPORT_HOURS": 6,
    # Signs the session cookie; made once and kept in the instance folder when not given, so that
    # every worker on the host shares it.
    "SECRET_KEY": None,
    # Send the session cookie over HTTPS only: set it true behind TLS (nginx), as in production.
    "SESSION_COOKIE_SECURE": False,
}

#: The development password's hash shipped in config.yaml (password "openadr-demo").
DEMO_PASSWORD = "openadr-demo"


def configure(app: Flask, overrides: Mapping[str, Any] | None = None,
              environ: Mapping[str, str] | None = None) -> None:
    """Fill ``app.config``: ``overrides`` win over the environment, which wins over the YAML
    file, which wins over :data:`PORTAL_DEFAULTS` (and the VTN's own defaults)."""
    environ = os.environ if environ is None else environ
    given = {**environment(environ), **(overrides or {})}
    path = given.get(CONFIG_FILE_KEY) or CONFIG_FILE
    app.config[CONFIG_FILE_KEY] = path
    # The VTN setdefaults the file's OPENADR_* keys in init_app, so these win over the file.
    app.config.update(given)
    # Merged here rather than with setdefault: Flask's defaults already hold SECRET_KEY = None.
    app.config.update({**PORTAL_DEFAULTS, **portal_keys_of(path),
                       **{key: value for key, value in given.items() if key in PORTAL_DEFAULTS}})
    app.config["ALLOWED_VENS"] = allowed_vens(app.config["ALLOWED_VENS"], path)
    if not app.config["SECRET_KEY"]:
        app.config["SECRET_KEY"] = instance_secret(app.instance_path)
    # Flask-WTF protects only the portal's blueprint (see views.py); the OpenADR endpoints are
    # authenticated by the VTN and take XML, not forms.
    app.config["WTF_CSRF_CHECK_DEFAULT"] = False
    # Flask's default is None: the session cookie then rides along on cross-site requests.
    app.config["SESSION_COOKIE_SAMESITE"] = given.get("SESSION_COOKIE_SAMESITE", "Lax")
    check_password_hash_setting(app.config["PORTAL_PASSWORD_HASH"])


def check_password_hash_setting(value: Any) -> None:
    """Refuse at start-up a PORTAL_PASSWORD_HASH that no password could match (the login would
    fail for everyone, or with a 500), and warn about the development one."""
    if value is None:
        return
    try:
        demo = check_password_hash(str(value), DEMO_PASSWORD)
    except ValueError as error:
        raise ValueError(f"PORTAL_PASSWORD_HASH {str(value)[:20]!r}... is not a Werkzeug password "
                         f"hash ({error}); make one with: flask --app example_app.app portal "
                         "hash-password") from None
    if not isinstance(value, str) or value.count("$") != 2:
        raise ValueError(f"PORTAL_PASSWORD_HASH must be a Werkzeug hash 'method$salt$hash', not "
                         f"{str(value)[:20]!r}...; make one with: flask --app example_app.app "
                         "portal hash-password")
    if demo:
        logger.warning("PORTAL_PASSWORD_HASH is the development password's; set your own "
                       "(flask --app example_app.app portal hash-password)")


def environment(environ: Mapping[str, str]) -> dict[str, Any]:
    """The settings the environment gives: the VTN's ``OPENADR_*`` keys and the portal's own.

    Values are read as JSON when they parse (``10``, ``false``, ``{"ven-a": ["north"]}``) and
    as text otherwise, as Flask's ``from_prefixed_env`` does.
    """
    known = set(KEYS) | {CONFIG_FILE_KEY} | set(PORTAL_DEFAULTS)
    found = {}
    for name, raw in environ.items():
        if name in known:
            try:
                found[name] = json.loads(raw)
            except ValueError:
                found[name] = raw
        elif name.startswith(("OPENADR_", "PORTAL_")) and not name.startswith("OPENADR_TEST_"):
            # A misspelt name would otherwise be ignored without a word.
            logger.warning("environment variable %s is not a setting of the portal or the VTN; "
                           "known names: %s", name, ", ".join(sorted(known)))
    return found


def portal_keys_of(path: str) -> dict[str, Any]:
    """The portal's own keys in the YAML file (the VTN reads the OPENADR_* ones)."""
    with open(path, encoding="utf-8") as fh:
        data = yaml.safe_load(fh) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: must hold a mapping of settings, not {type(data).__name__}")
    return {key: value for key, value in data.items() if key in PORTAL_DEFAULTS}


def allowed_vens(value: Any, path: str) -> dict[str, list[str]]:
    """The allow-list: VEN name -> the groups the VEN belongs to."""
    if not isinstance(value, dict):
        raise ValueError(f"ALLOWED_VENS (from {path} or the environment) must map VEN names to "
                         f"lists of groups, not {value!r}")
    return {str(name): [str(group) for group in groups or []] for name, groups in value.items()}


def instance_secret(instance_path: str) -> str:
    """A random session key kept in ``<instance>/secret_key`` (made once, mode 0600)."""
    os.makedirs(instance_path, exist_ok=True)
    path = os.path.join(instance_path, "secret_key")
    try:
        # O_EXCL: of two workers starting together, one writes and the other reads its key.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w", encoding="ascii") as fh:
            fh.write(secrets.token_hex(32))
    for _ in range(50):
        with open(path, encoding="ascii") as fh:
            key = fh.read().strip()
        if key:
            return key
        time.sleep(0.01)  # the other worker is between create and write
    raise RuntimeError(f"{path} is empty; delete it and start again")
