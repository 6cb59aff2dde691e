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

A backend of another package plugs in by its URI scheme, with :func:`register_backend` or, so
that installing the package is enough, an entry point in the ``flask_openadr.stores`` group whose
name is the scheme and whose object is the factory (see docs/stores.rst).
"""
from __future__ import annotations

import importlib
import re
import sys
import threading
from typing import Callable, Union, cast

from ..errors import ConfigurationError
from .base import EventResponseRecord, OutboxItem, Store, VenRecord

__all__ = [
    "BACKENDS",
    "EventResponseRecord",
    "OutboxItem",
    "Store",
    "VenRecord",
    "open_store",
    "register_backend",
]

#: A backend factory: ``factory(uri, instance_path=...)`` returns an open :class:`Store`.
Factory = Callable[..., Store]

#: The entry point group through which an installed package offers backends: each entry point's
#: name is a URI scheme and its object a factory (or a module with ``from_uri``).
ENTRY_POINT_GROUP = "flask_openadr.stores"

#: The built-in backends, URI scheme -> backend. A string names a module with a
#: ``from_uri(uri, *, instance_path)`` function, imported only when a URI of that scheme is
#: opened, so a backend's driver (redis-py, SQLAlchemy) is only needed by those who use it. A
#: callable is used as the factory itself. Other backends plug in with :func:`register_backend`
#: or an entry point rather than by changing this table.
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
_SCHEME_NAME = re.compile(r"^[a-z][a-z0-9+.-]*$")

# Backends given to register_backend(), which take precedence over the built-ins (which take
# precedence over entry points, so installing a package never silently replaces one), and the
# entry points of the flask_openadr.stores group, read once, on the first open_store().
_registered: dict[str, Union[str, Factory]] = {}
_entry_points: dict[str, object] | None = None
_entry_points_lock = threading.Lock()


def register_backend(scheme: str, factory: Union[str, Factory, None]) -> None:
    """Make ``open_store()`` open URIs of ``scheme`` with ``factory``.

    :param scheme: the URI scheme, lower case (``"etcd"`` for ``etcd://...``). A built-in
        scheme may be taken over, for example to wrap the SQLite store.
    :param factory: ``factory(uri, *, instance_path=None)`` returning an open store, or the
        name of a module with such a ``from_uri`` function, imported at the first open. ``None``
        removes an earlier registration.
    :raises ValueError: for a scheme that is not lower-case URI scheme text, or a factory that
        is neither callable nor a module name.
    """
    if not isinstance(scheme, str) or not _SCHEME_NAME.match(scheme):
        raise ValueError(
            f"a store scheme is lower-case letters, digits, '+', '-' and '.', starting with a "
            f"letter (as 'etcd' for etcd://...), got {scheme!r}"
        )
    if factory is None:
        _registered.pop(scheme, None)
        return
    if not (callable(factory) or isinstance(factory, str)):
        raise ValueError(
            f"a store factory is a callable factory(uri, *, instance_path=None) or the name of "
            f"a module with from_uri(), got {factory!r} for {scheme}://"
        )
    _registered[scheme] = factory


def _installed_backends() -> dict[str, object]:
    """The entry points of :data:`ENTRY_POINT_GROUP` by scheme, read once per process."""
    global _entry_points
    with _entry_points_lock:
        if _entry_points is None:
            from importlib import metadata

            if sys.version_info >= (3, 10):
                found = metadata.entry_points(group=ENTRY_POINT_GROUP)
            else:  # pragma: no cover - Python 3.9's entry_points() is a dict by group
                found = metadata.entry_points().get(ENTRY_POINT_GROUP, ())
            _entry_points = {point.name.lower(): point for point in found}
        return _entry_points


def _backend(scheme: str) -> Union[str, Factory, None]:
    """The backend for a lower-case scheme: registered, else built in, else installed by an
    entry point, else the ``"*"`` entry (a database URL SQLAlchemy may know)."""
    if scheme in _registered:
        return _registered[scheme]
    if scheme in BACKENDS:
        return BACKENDS[scheme]
    point = _installed_backends().get(scheme)
    if point is not None:
        loaded = point.load()  # type: ignore[attr-defined]
        return cast(Factory, loaded if callable(loaded) else getattr(loaded, "from_uri"))
    return BACKENDS.get("*")
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
    backend = _backend(match.group(1).lower()) if match else None
    if backend is None:
        raise unsupported_scheme(uri)
    if isinstance(backend, str):
        backend = importlib.import_module(backend).from_uri
    return backend(uri, instance_path=instance_path)


def unsupported_scheme(uri: str) -> ConfigurationError:
    """The error for a URI no backend takes, naming the URI (password hidden) and the choices."""
    schemes = dict.fromkeys([*BACKENDS, *_registered, *_installed_backends()])
    supported = ", ".join(f"{scheme}://" for scheme in schemes if scheme != "*")
    return ConfigurationError(
        f"unsupported store URI {redact(uri)!r}: the scheme must be one of {supported} "
        "(for example 'sqlite:///openadr.sqlite'), or that of a database URL SQLAlchemy knows "
        "(such as mysql+pymysql://) with its driver installed"
    )


def redact(uri: str) -> str:
    """The URI with any password replaced by ``***``, fit for messages and logs."""
    return _PASSWORD.sub(r"\1***@", uri)
