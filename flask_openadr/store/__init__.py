"""Pluggable stores, chosen by URI (``memory://``, ``sqlite:///path``).

=====================================  ==========================================================
``sqlite:///openadr.sqlite``           the default: one file shared by every worker on one host
                                       (relative paths are under the instance folder)
``sqlite:////var/lib/vtn/vtn.sqlite``  the same, with an absolute path (four slashes)
``memory://``                          one process only: tests, notebooks, ``flask run``
``postgresql://user:pw@host/db``       PostgreSQL, for workers on several hosts (``[sqlalchemy]``
                                       extra; also ``postgres://``, ``postgresql+psycopg://``)
``mysql+pymysql://...``                any other database URL SQLAlchemy knows (untested)
=====================================  ==========================================================

Each backend plugs in as one line of :data:`BACKENDS`.
"""
from __future__ import annotations

import importlib
import re
from typing import Callable, Union

from ..errors import ConfigurationError
from .base import EventResponseRecord, OutboxItem, Store, VenRecord

__all__ = [
    "BACKENDS",
    "EventResponseRecord",
    "OutboxItem",
    "Store",
    "VenRecord",
    "open_store",
]

#: A backend factory: ``factory(uri, instance_path=...)`` returns an open :class:`Store`.
Factory = Callable[..., Store]

#: URI scheme -> the backend. A string names a module with a ``from_uri(uri, *, instance_path)``
#: function, imported only when a URI of that scheme is opened, so a backend's driver (redis-py,
#: SQLAlchemy) is only needed by those who use it. A callable is used as the factory itself.
BACKENDS: dict[str, Union[str, Factory]] = {
    "memory": "flask_openadr.store.memory",
    "sqlite": "flask_openadr.store.sqlite",
    "redis": "flask_openadr.store.redis", "rediss": "flask_openadr.store.redis",
    "postgresql": "flask_openadr.store.sqlalchemy",
    "postgresql+psycopg": "flask_openadr.store.sqlalchemy",
    "postgres": "flask_openadr.store.sqlalchemy",  # read as postgresql+psycopg
    "*": "flask_openadr.store.sqlalchemy",  # any other scheme: a SQLAlchemy URL (mysql+pymysql)
}

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
# user:password@ in a URI; the password must never reach a log line.
_PASSWORD = re.compile(r"(://[^/@:]*:)[^/@]*@")


def open_store(uri: str, *, instance_path: str | None = None) -> Store:
    """Open the store a URI names.

    :param uri: ``memory://``, ``sqlite:///relative/path`` or ``sqlite:////absolute/path``
        (see :func:`flask_openadr.store.sqlite.from_uri` for the path rules).
    :param instance_path: where relative file paths are resolved (the app's instance folder);
        the current directory when not given.
    :raises ConfigurationError: when the URI is malformed or its scheme is not supported.
    """
    if not isinstance(uri, str):
        raise ConfigurationError(
            f"the store URI must be a str such as 'sqlite:///openadr.sqlite', got {uri!r}"
        )
    match = _SCHEME.match(uri)
    # "*" takes the schemes no other entry names (the database URLs SQLAlchemy knows).
    backend = BACKENDS.get(match.group(1).lower(), BACKENDS.get("*")) if match else None
    if backend is None:
        raise unsupported_scheme(uri)
    if isinstance(backend, str):
        backend = importlib.import_module(backend).from_uri
    return backend(uri, instance_path=instance_path)


def unsupported_scheme(uri: str) -> ConfigurationError:
    """The error for a URI no backend takes, naming the URI (password hidden) and the choices."""
    supported = ", ".join(f"{scheme}://" for scheme in BACKENDS if scheme != "*")
    return ConfigurationError(
        f"unsupported store URI {redact(uri)!r}: the scheme must be one of {supported} "
        "(for example 'sqlite:///openadr.sqlite'), or that of a database URL SQLAlchemy knows "
        "(such as mysql+pymysql://) with its driver installed"
    )


def redact(uri: str) -> str:
    """The URI with any password replaced by ``***``, fit for messages and logs."""
    return _PASSWORD.sub(r"\1***@", uri)
