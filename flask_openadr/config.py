"""Configuration keys, their defaults and checks, and the optional YAML file.

Precedence: arguments to :class:`~flask_openadr.VTN` win over ``app.config``, which wins over the
YAML file named by ``OPENADR_CONFIG_FILE``, which wins over the defaults. The YAML file and the
defaults are written into ``app.config`` with ``setdefault``, so the application can read the
effective values there; constructor arguments stay with the extension.

Internal: the keys (``docs/configuration.rst``) are public, this module is not.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Callable, Mapping

import yaml

from .errors import ConfigurationError
from .protocol import DEFAULT_URL_PREFIX
from .security.identity import IPNetwork, parse_trusted_proxies

if TYPE_CHECKING:  # the signature module loads cryptography: only when signing is configured
    from .security.signature import Signer

PREFIX = "OPENADR_"
CONFIG_FILE_KEY = "OPENADR_CONFIG_FILE"


@dataclass
class Settings:
    """The effective configuration, read once in ``init_app`` (the ``KEYS`` below fill it)."""

    vtn_id: str = "FLASK-OPENADR-VTN"
    url_prefix: str = DEFAULT_URL_PREFIX
    store_uri: str | None = None
    poll_frequency: timedelta = timedelta(seconds=10)
    offline_after_missed_polls: int = 3
    max_message_bytes: int = 1024 * 1024
    market_context: str = "http://flask-openadr.example/default"
    # OPENADR_REPORT_POLICY: which VEN reports to request without an on_register_report
    # handler ("none" or "telemetry"; see flask_openadr.services.reports.policy_points).
    report_policy: str = "none"
    # Liveness (see flask_openadr.services.liveness). background None means "thread", or "off"
    # while the app is TESTING (decided at the first request, so a test config set after
    # init_app counts).
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
    trusted_proxies: tuple[IPNetwork, ...] = ()
    # XML signatures (see flask_openadr.security.signature): PEM paths or PEM data, parsed once
    # by the extension. The VTN offers signatures when both are set.
    signing_cert: str | bytes | None = field(default=None, repr=False)
    signing_key: str | bytes | None = field(default=None, repr=False)
    signing_key_password: str | bytes | None = field(default=None, repr=False)
    replay_window: timedelta = timedelta(seconds=60)
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
    push_path: str = DEFAULT_URL_PREFIX
    push_timeout: timedelta = timedelta(seconds=10)
    push_retry_max: timedelta = timedelta(minutes=5)
    push_concurrency: int = 8
    push_cert: str | None = None
    push_key: str | None = None
    push_ca: str | None = None

    @property
    def signs(self) -> bool:
        """Whether the VTN has a signing key, and so accepts VENs that ask for signatures."""
        return self.signing_cert is not None and self.signing_key is not None


def _seconds(key: str, value: object) -> float:
    """A duration given as a number of seconds or a timedelta, in seconds."""
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    raise ConfigurationError(f"{key} must be a number of seconds or a timedelta, not {value!r}")


def _positive_duration(key: str, value: object) -> timedelta:
    seconds = _seconds(key, value)
    if seconds <= 0 or seconds != int(seconds):
        raise ConfigurationError(f"{key} must be a positive whole number of seconds, not {value!r}")
    return timedelta(seconds=int(seconds))


def _positive_int(key: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigurationError(f"{key} must be a positive integer, not {value!r}")
    return value


def _text(key: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError(f"{key} must be a non-empty string, not {value!r}")
    return value


def _url_prefix(key: str, value: object) -> str:
    text = _text(key, value)
    if not text.startswith("/"):
        raise ConfigurationError(f"{key} must start with '/', not {text!r}")
    return text.rstrip("/")


def _push_path(key: str, value: object) -> str:
    # "" is allowed: a VEN whose transport address is already the base of its services.
    if value == "":
        return ""
    return _url_prefix(key, value)


def _optional_text(key: str, value: object) -> str | None:
    return None if value is None else _text(key, value)


# Longer liveness durations are mistakes (and infinity would not fit a timedelta).
MAX_SECONDS = 365 * 24 * 3600


def _seconds_at_least(minimum: float) -> Callable[[str, object], timedelta]:
    """A check for a duration of at least ``minimum`` seconds, fractions allowed."""

    def check(key: str, value: object) -> timedelta:
        seconds = _seconds(key, value)
        if not seconds >= minimum or seconds > MAX_SECONDS:  # also refuses NaN
            raise ConfigurationError(f"{key} must be at least {minimum:g} seconds (and less "
                                     f"than a year), not {value!r}")
        return timedelta(seconds=seconds)

    return check


def _optional_seconds_at_least(minimum: float) -> Callable[[str, object], timedelta | None]:
    """Like :func:`_seconds_at_least`, with None for "the default derived elsewhere"."""
    check = _seconds_at_least(minimum)
    return lambda key, value: None if value is None else check(key, value)


BACKGROUND_MODES = ("thread", "off")


def _background(key: str, value: object) -> str | None:
    if value is None or (isinstance(value, str) and value in BACKGROUND_MODES):
        return value
    raise ConfigurationError(
        f"{key} must be {' or '.join(repr(m) for m in BACKGROUND_MODES)} (or None for "
        f"the default), not {value!r}"
    )


def _optional_pem(key: str, value: object) -> str | bytes | None:
    """A PEM file path or PEM data; parsed (and checked) when the extension loads the key."""
    if value is None:
        return None
    if isinstance(value, bytes) and value.strip():
        return value
    return _text(key, value)


def _optional_password(key: str, value: object) -> str | bytes | None:
    if value is None or isinstance(value, (str, bytes)):
        return value
    raise ConfigurationError(f"{key} must be a str or bytes (or None), not "
                             f"{type(value).__name__}")


REPORT_POLICIES = ("none", "telemetry")


def _report_policy(key: str, value: object) -> str:
    if value is None:
        return "none"
    if isinstance(value, str) and value in REPORT_POLICIES:
        return value
    raise ConfigurationError(
        f"{key} must be {' or '.join(repr(p) for p in REPORT_POLICIES)} (or None for "
        f"'none'), not {value!r}"
    )


def _bool(key: str, value: object) -> bool:
    # Only real booleans: the string "false" would otherwise be true, and for a security switch
    # that silently turns protection on or off.
    if not isinstance(value, bool):
        raise ConfigurationError(f"{key} must be True or False, not {value!r}")
    return value


# The characters of an HTTP header name (RFC 9110 token) minus "_": servers and proxies drop or
# merge names with underscores, and in the WSGI environ "X_A" and "X-A" are the same key.
_HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^`|~-]+")


def _header_name(key: str, value: object) -> str:
    if not isinstance(value, str) or not _HEADER_NAME.fullmatch(value):
        raise ConfigurationError(f"{key} must be an HTTP header name of letters, digits and '-' "
                                 f"such as 'X-SSL-Client-Cert', not {value!r}")
    return value


def _trusted_proxies(key: str, value: object) -> tuple[IPNetwork, ...]:
    try:
        return parse_trusted_proxies(value)
    except ValueError as exc:
        raise ConfigurationError(f"{key}: {exc}") from None


# config key -> (Settings field, default, check). The check turns a raw value into the typed one
# or raises ConfigurationError naming the key.
KEYS: dict[str, tuple[str, Any, Callable[[str, Any], Any]]] = {
    "OPENADR_VTN_ID": ("vtn_id", Settings.vtn_id, _text),
    "OPENADR_URL_PREFIX": ("url_prefix", Settings.url_prefix, _url_prefix),
    # None means: sqlite:///openadr.sqlite3 in the app's instance folder (see resolve_store_uri).
    "OPENADR_STORE_URI": ("store_uri", None, _optional_text),
    "OPENADR_POLL_FREQUENCY": ("poll_frequency", Settings.poll_frequency, _positive_duration),
    "OPENADR_OFFLINE_AFTER_MISSED_POLLS": (
        "offline_after_missed_polls", Settings.offline_after_missed_polls, _positive_int,
    ),
    "OPENADR_MAX_MESSAGE_BYTES": ("max_message_bytes", Settings.max_message_bytes, _positive_int),
    "OPENADR_MARKET_CONTEXT": ("market_context", Settings.market_context, _text),
    "OPENADR_REPORT_POLICY": ("report_policy", Settings.report_policy, _report_policy),
    # None means: "thread", or "off" while the app is TESTING (see docs/liveness.rst).
    "OPENADR_BACKGROUND": ("background", Settings.background, _background),
    "OPENADR_OFFLINE_GRACE": ("offline_grace", Settings.offline_grace, _seconds_at_least(0)),
    "OPENADR_SWEEP_INTERVAL": ("sweep_interval", Settings.sweep_interval, _seconds_at_least(0.1)),
    "OPENADR_CALLBACK_LEASE": ("callback_lease", Settings.callback_lease, _seconds_at_least(1)),
    "OPENADR_REQUIRE_CLIENT_CERT": (
        "require_client_cert", Settings.require_client_cert, _bool,
    ),
    "OPENADR_CLIENT_CERT_HEADER": (
        "client_cert_header", Settings.client_cert_header, _header_name,
    ),
    "OPENADR_CLIENT_VERIFY_HEADER": (
        "client_verify_header", Settings.client_verify_header, _header_name,
    ),
    # Addresses and networks (a list or a comma-separated string); None or empty for none.
    "OPENADR_TRUSTED_PROXIES": ("trusted_proxies", None, _trusted_proxies),
    # XML signatures and replay protection (docs/security.rst).
    "OPENADR_SIGNING_CERT": ("signing_cert", None, _optional_pem),
    "OPENADR_SIGNING_KEY": ("signing_key", None, _optional_pem),
    "OPENADR_SIGNING_KEY_PASSWORD": ("signing_key_password", None, _optional_password),
    "OPENADR_REPLAY_WINDOW": ("replay_window", Settings.replay_window, _seconds_at_least(1)),
    "OPENADR_EVENT_RETENTION": (
        "event_retention", Settings.event_retention, _seconds_at_least(0),
    ),
    # None means: two of the VEN's poll intervals (see services.outbox.redelivery_after).
    "OPENADR_REDELIVERY_AFTER": (
        "redelivery_after", Settings.redelivery_after, _optional_seconds_at_least(0.1),
    ),
    # None means: an unchanged event set is not sent again (see docs/events.rst, "Refresh").
    "OPENADR_EVENT_REFRESH": (
        "event_refresh", Settings.event_refresh, _optional_seconds_at_least(1),
    ),
    # HTTP push (docs/push.rst).
    "OPENADR_PUSH_PATH": ("push_path", Settings.push_path, _push_path),
    "OPENADR_PUSH_TIMEOUT": ("push_timeout", Settings.push_timeout, _seconds_at_least(0.1)),
    "OPENADR_PUSH_RETRY_MAX": (
        "push_retry_max", Settings.push_retry_max, _seconds_at_least(0.1),
    ),
    "OPENADR_PUSH_CONCURRENCY": (
        "push_concurrency", Settings.push_concurrency, _positive_int,
    ),
    "OPENADR_PUSH_CERT": ("push_cert", None, _optional_text),
    "OPENADR_PUSH_KEY": ("push_key", None, _optional_text),
    "OPENADR_PUSH_CA": ("push_ca", None, _optional_text),
}

DEFAULT_STORE_URI = "sqlite:///openadr.sqlite3"

# Constructor keyword -> config key: the key without the prefix, in lower case.
OPTION_NAMES = {key[len(PREFIX):].lower(): key for key in [*KEYS, CONFIG_FILE_KEY]}


def options_to_keys(options: Mapping[str, Any]) -> dict[str, Any]:
    """Map ``VTN(...)`` keyword arguments to config keys, refusing unknown names."""
    unknown = sorted(set(options) - set(OPTION_NAMES))
    if unknown:
        raise TypeError(
            f"unknown VTN option(s) {', '.join(unknown)}; "
            f"known options are {', '.join(sorted(OPTION_NAMES))}"
        )
    return {OPTION_NAMES[name]: value for name, value in options.items()}


def load_yaml(path: str) -> dict[str, Any]:
    """Read the OPENADR_* keys of a YAML file; other top-level keys are left to the application."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except OSError as exc:
        raise ConfigurationError(f"{CONFIG_FILE_KEY}: cannot read {path!r}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigurationError(f"{CONFIG_FILE_KEY}: {path!r} is not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigurationError(
            f"{CONFIG_FILE_KEY}: {path!r} must hold a mapping of keys to values, "
            f"not a {type(data).__name__}"
        )
    ours = {k: v for k, v in data.items() if isinstance(k, str) and k.startswith(PREFIX)}
    # A misspelt key would silently fall back to its default: refuse it instead.
    unknown = sorted(set(ours) - set(KEYS))
    if unknown:
        raise ConfigurationError(
            f"{CONFIG_FILE_KEY}: {path!r} has unknown key(s) {', '.join(unknown)}; "
            f"known keys are {', '.join(sorted(KEYS))}"
        )
    for key, value in ours.items():
        KEYS[key][2](key, value)  # fail at start-up, naming the key in the file
    return ours


def load_settings(config: dict[str, Any], options: Mapping[str, Any]) -> Settings:
    """Fill ``config`` (an ``app.config``) with defaults and return the effective :class:`Settings`.

    :param config: the application's config; YAML values and defaults are ``setdefault`` into it.
    :param options: config keys given to the constructor; they win over ``config``.
    """
    path = options.get(CONFIG_FILE_KEY, config.get(CONFIG_FILE_KEY))
    if path is not None:
        for key, value in load_yaml(os.fspath(path)).items():
            config.setdefault(key, value)
    values = {}
    for key, (name, default, check) in KEYS.items():
        config.setdefault(key, default)
        raw = options[key] if key in options else config[key]
        values[name] = check(key, raw)
    return Settings(**values)


def load_signer(settings: Settings) -> Signer | None:
    """The VTN's parsed signing key and certificate, or None without them.

    :raises ConfigurationError: naming the key: one of the pair missing, unreadable, not PEM,
        a wrong password, an unsupported key, or a key that does not match the certificate.
    """
    from .security.signature import load_signer as parse

    if settings.signing_cert is None and settings.signing_key is None:
        if settings.signing_key_password is not None:
            raise ConfigurationError("OPENADR_SIGNING_KEY_PASSWORD is set but "
                                     "OPENADR_SIGNING_KEY is not; set both signing keys or none")
        return None
    missing = "OPENADR_SIGNING_KEY" if settings.signing_key is None else (
        "OPENADR_SIGNING_CERT" if settings.signing_cert is None else None)
    if missing:
        raise ConfigurationError(f"{missing} is not set; XML signatures need both "
                                 "OPENADR_SIGNING_CERT and OPENADR_SIGNING_KEY (PEM file paths "
                                 "or PEM data)")
    return parse(settings.signing_cert, settings.signing_key, settings.signing_key_password)


def resolve_store_uri(settings: Settings) -> str:
    return settings.store_uri or DEFAULT_STORE_URI
