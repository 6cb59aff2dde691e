"""What the services get from the extension: settings, store, handlers, clock, signals.

The services are plain functions over dicts and this context. They never import Flask or lxml,
so they can be tested (and later reused) without a web stack.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Dict, Optional, Tuple, Union

from ..store.base import Store


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def new_id() -> str:
    return uuid.uuid4().hex


#: What a service returns: the reply's payload name and payload, and, when the service already
#: encoded it (see :meth:`Context.reply`), the message body.
Reply = Union[Tuple[str, Dict[str, Any]], Tuple[str, Dict[str, Any], Optional[bytes]]]


@dataclass
class Settings:
    """The effective configuration, read once in ``init_app`` (see :mod:`flask_openadr.config`)."""

    vtn_id: str = "FLASK-OPENADR-VTN"
    url_prefix: str = "/OpenADR2/Simple/2.0b"
    store_uri: str | None = None
    poll_frequency: timedelta = timedelta(seconds=10)
    offline_after_missed_polls: int = 3
    max_message_bytes: int = 1024 * 1024
    market_context: str = "http://flask-openadr.example/default"
    # OPENADR_REPORT_POLICY: which VEN reports to request without an on_register_report
    # handler ("none" or "telemetry"; see flask_openadr.services.reports.policy_points).
    report_policy: str = "none"
    # Liveness (see flask_openadr.liveness). background None means "thread", or "off" while the
    # app is TESTING (decided at the first request, so a test config set after init_app counts).
    background: str | None = None
    offline_grace: timedelta = timedelta(seconds=5)
    sweep_interval: timedelta = timedelta(seconds=5)
    callback_lease: timedelta = timedelta(seconds=60)
    # Who is calling (see flask_openadr.security.identity): a verified client certificate is
    # required unless require_client_cert is off; the certificate headers are believed only from
    # trusted_proxies (ipaddress networks).
    require_client_cert: bool = True
    client_cert_header: str = "X-SSL-Client-Cert"
    client_verify_header: str = "X-SSL-Client-Verify"
    trusted_proxies: tuple[Any, ...] = ()
    # XML signatures (see flask_openadr.security.signature): PEM paths or PEM data, parsed once
    # by the extension. The VTN offers signatures when both are set.
    signing_cert: str | bytes | None = field(default=None, repr=False)
    signing_key: str | bytes | None = field(default=None, repr=False)
    signing_key_password: str | bytes | None = field(default=None, repr=False)
    replay_window: timedelta = timedelta(seconds=60)

    @property
    def signs(self) -> bool:
        """Whether the VTN has a signing key, and so accepts VENs that ask for signatures."""
        return self.signing_cert is not None and self.signing_key is not None
    # OPENADR_REDELIVERY_AFTER: how long a message that needs an acknowledgement waits for it
    # before it is sent again; None means two of the VEN's poll intervals.
    redelivery_after: timedelta | None = None
    # OPENADR_EVENT_RETENTION: how long a completed or cancelled event stays in the store.
    event_retention: timedelta = timedelta(days=7)
    # OPENADR_EVENT_REFRESH: a VEN holding far, near or active events is sent its whole event
    # set again when none was sent to it for this long; None: never (see docs/events.rst).
    event_refresh: timedelta | None = None
    # HTTP push (see flask_openadr.push): the path after a push VEN's transport address, the
    # connect and read timeout of each push, the cap of the retry back-off, how many VENs one
    # process pushes to at once, and the TLS files of the VTN's client side.
    push_path: str = "/OpenADR2/Simple/2.0b"
    push_timeout: timedelta = timedelta(seconds=10)
    push_retry_max: timedelta = timedelta(minutes=5)
    push_concurrency: int = 8
    push_cert: str | None = None
    push_key: str | None = None
    push_ca: str | None = None


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
    check_payload: Callable[[str, dict], None] = lambda payload_name, payload: None
    # encode(payload_name, payload) -> bytes builds the XML of a reply. Services that record a
    # delivery call it through reply() inside the same transaction, so that nothing counts as
    # delivered unless its reply was built; None (services tested on their own) builds nothing.
    encode: Callable[[str, dict], bytes] | None = None

    def now(self) -> datetime:
        return self.clock()

    def new_id(self) -> str:
        return self.id_factory()

    def reply(self, payload_name: str, payload: dict[str, Any]) -> Reply:
        """The reply ``(payload_name, payload, body)``, with ``body`` the encoded message (None
        without an encoder). Raises what the encoder raises, so that a transaction around
        the call rolls back."""
        body = None if self.encode is None else self.encode(payload_name, payload)
        return payload_name, payload, body

    def handler(self, name: str) -> Callable[..., Any] | None:
        return self.handlers.get(name)
