"""What the services get from the extension: settings, store, handlers, clock, signals.

The services are plain functions over dicts and this context. They never import Flask or lxml,
so they can be tested (and later reused) without a web stack.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Dict, Optional, Tuple, Union

from ..config import Settings
from ..store.base import Store

__all__ = ["Context", "Reply", "new_id", "utcnow"]


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def new_id() -> str:
    return uuid.uuid4().hex


#: What a service returns: the reply's payload name and payload, and, when the service already
#: encoded it (see :meth:`Context.reply`), the message body.
Reply = Union[Tuple[str, Dict[str, Any]], Tuple[str, Dict[str, Any], Optional[bytes]]]


@dataclass
class Context:
    """One VTN's collaborators. ``handlers`` maps handler names (``"on_poll"``, ...) to the user's
    functions; ``emit(signal_name, **data)`` sends the blinker signal of that name."""

    settings: Settings
    store: Store
    handlers: dict[str, Callable[..., Any]] = field(default_factory=dict)
    clock: Callable[[], datetime] = utcnow
    id_factory: Callable[[], str] = new_id
    emit: Callable[..., None] = lambda signal_name, **data: None
    # check_payload(payload_name, payload) raises ValueError when a payload the VTN is about to
    # queue would not encode; the extension plugs in the codec (services know no XML).
    check_payload: Callable[[str, dict[str, Any]], None] = lambda payload_name, payload: None
    # encode(payload_name, payload) -> bytes builds the XML of a reply. Services that record a
    # delivery call it through reply() inside the same transaction, so that nothing counts as
    # delivered unless its reply was built; None (services tested on their own) builds nothing.
    encode: Callable[[str, dict[str, Any]], bytes] | None = None

    def now(self) -> datetime:
        return self.clock()

    def new_id(self) -> str:
        return self.id_factory()

    def reply(self, payload_name: str,
              payload: dict[str, Any]) -> tuple[str, dict[str, Any], bytes | None]:
        """The reply ``(payload_name, payload, body)``, with ``body`` the encoded message (None
        without an encoder). Raises what the encoder raises, so that a transaction around
        the call rolls back."""
        body = None if self.encode is None else self.encode(payload_name, payload)
        return payload_name, payload, body

    def handler(self, name: str) -> Callable[..., Any] | None:
        return self.handlers.get(name)
