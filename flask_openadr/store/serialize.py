"""JSON text for store records, with an exact round trip of aware datetimes and timedeltas.

Every backend keeps records as the text :func:`dumps` makes, so they all accept and return the
same values. A record holds ``str``, ``int``, ``float``, ``bool``, ``None``, lists, dicts with
``str`` keys, aware :class:`~datetime.datetime` and :class:`~datetime.timedelta`; anything else is
refused when it is written, not discovered when it is read back.

The encoding is plain JSON in which a few values become *tagged* objects: a JSON object with
exactly one key, and that key starts with ``$``:

- ``{"$dt": "2024-05-01T12:00:00.000000+00:00"}``: an aware datetime, converted to UTC, always
  with six fractional digits (so equal instants give equal text, and the text sorts by time);
- ``{"$td": [days, seconds, microseconds]}``: a timedelta, its exact normalised fields;
- ``{"$float": "nan" | "inf" | "-inf"}``: a non-finite float (plain JSON has none);
- ``{"$map": {...}}``: a user dict that itself has exactly one key starting with ``$``, escaped so
  that it is never read back as a tag.

Any other object is a plain dict. The rule is therefore unambiguous: the encoder never emits a
single ``$``-key object except as a tag, and the decoder refuses tags it does not know.
"""
from __future__ import annotations

import json
import math
from datetime import datetime, timedelta, timezone
from typing import Any

from ..protocol import is_aware

__all__ = ["dumps", "loads"]

_DATETIME = "$dt"
_TIMEDELTA = "$td"
_FLOAT = "$float"
_MAP = "$map"


def dumps(value: Any) -> str:
    """Encode a record value as JSON text.

    :param value: a value made of the record types listed in this module's docstring.
    :raises ValueError: for a naive datetime (the store cannot know which time it meant) or a
        datetime that has no UTC equivalent.
    :raises TypeError: for any other type, or a dict key that is not a ``str``.
    """
    try:
        encoded = _encode_plain(value)
    except (TypeError, ValueError):
        # The same checks again, with the path of the offending value for the message.
        encoded = _encode(value, "value")
    # ensure_ascii keeps lone surrogates representable; the text goes into UTF-8 columns.
    return json.dumps(encoded, separators=(",", ":"), allow_nan=False)


def _encode_plain(value: Any) -> Any:
    """:func:`_encode` without the path of each value, which it builds as text at every
    level (most of the cost of encoding a large fan-out's records); raises what _encode
    raises, whose message dumps gets by running _encode."""
    if value is None or isinstance(value, (bool, str, int)):
        return value
    if isinstance(value, float):
        return _encode_float(value)
    if isinstance(value, dict):
        encoded = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(key)
            encoded[key] = _encode_plain(item)
        return {_MAP: encoded} if _is_tag_shaped(encoded) else encoded
    if isinstance(value, list):
        return [_encode_plain(item) for item in value]
    if isinstance(value, (datetime, timedelta)):
        return _encode(value, "value")
    raise TypeError(value)


def loads(text: str) -> Any:
    """Decode text made by :func:`dumps` back into the value, equal to the one encoded.

    Datetimes come back with ``tzinfo=timezone.utc``.

    :raises ValueError: when the text is not JSON or holds a tag this version does not know.
    """
    if _MAP_TEXT not in text:
        # Without $map every one-key "$" object is a tag: json converts them as it parses, in
        # C, instead of a second walk over the whole value in Python (most records, and every
        # record an empty poll reads).
        try:
            return _TAG_DECODER.decode(text)
        except Exception:  # the walk below is the reference, and says what is wrong
            # A $map spelled with an escape ("\u0024map"), whose body the hook may have met
            # first, or text that is not a record: decoded (or refused) as before.
            pass
    # A $map tag holds a user dict shaped like a tag, which the bottom-up hook would take for
    # one before it sees the $map around it: decode top-down.
    return _decode(json.loads(text))


def _is_tag_shaped(obj: dict[str, Any]) -> bool:
    if len(obj) != 1:
        return False
    (key,) = obj
    return isinstance(key, str) and key.startswith("$")


def _encode(value: Any, where: str) -> Any:
    # bool and None first: bool is an int subclass and must stay a JSON boolean.
    if value is None or isinstance(value, (bool, str, int)):
        return value
    if isinstance(value, float):
        return _encode_float(value)
    if isinstance(value, datetime):
        return {_DATETIME: _encode_datetime(value, where)}
    if isinstance(value, timedelta):
        return {_TIMEDELTA: [value.days, value.seconds, value.microseconds]}
    if isinstance(value, list):
        return [_encode(item, f"{where}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, dict):
        encoded = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(
                    f"{where} has the key {key!r} of type {type(key).__name__}; "
                    "store records only take str keys"
                )
            encoded[key] = _encode(item, f"{where}[{key!r}]")
        return {_MAP: encoded} if _is_tag_shaped(encoded) else encoded
    raise TypeError(
        f"{where} is a {type(value).__name__} ({value!r}); store records hold only str, int, "
        "float, bool, None, list, dict with str keys, aware datetime and timedelta"
    )


def _encode_float(value: float) -> Any:
    if math.isfinite(value):
        return value
    return {_FLOAT: "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")}


def _encode_datetime(value: datetime, where: str) -> str:
    if not is_aware(value):
        raise ValueError(
            f"{where} is the naive datetime {value.isoformat()}; "
            "store only aware datetimes (for example with tzinfo=timezone.utc)"
        )
    try:
        utc = value.astimezone(timezone.utc)
    except OverflowError:
        raise ValueError(
            f"{where} is the datetime {value.isoformat()}, which has no UTC equivalent"
        ) from None
    return utc.isoformat(timespec="microseconds")


_MAP_TEXT = f'"{_MAP}"'


class _MapFound(Exception):
    """A $map tag met by :func:`_decode_object`, too late to read its body as it was written."""


def _decode_object(obj: dict[str, Any]) -> Any:
    # Called by json for each object, after its members were decoded.
    if len(obj) != 1:
        return obj
    (key,) = obj
    if not key.startswith("$"):
        return obj
    if key == _MAP:
        raise _MapFound  # too late: its body was decoded as if it were a tag
    return _decode_tag(key, obj[key])


# Built once: json.loads with an object_hook builds a decoder on every call.
_TAG_DECODER = json.JSONDecoder(object_hook=_decode_object)


def _decode(obj: Any) -> Any:
    if isinstance(obj, list):
        return [_decode(item) for item in obj]
    if not isinstance(obj, dict):
        return obj
    if not _is_tag_shaped(obj):
        return {key: _decode(item) for key, item in obj.items()}
    ((tag, body),) = obj.items()
    if tag == _MAP:
        return {key: _decode(item) for key, item in body.items()}
    return _decode_tag(tag, body)


def _decode_tag(tag: str, body: Any) -> Any:
    if tag == _DATETIME:
        return datetime.fromisoformat(body).astimezone(timezone.utc)
    if tag == _TIMEDELTA:
        days, seconds, microseconds = body
        return timedelta(days=days, seconds=seconds, microseconds=microseconds)
    if tag == _FLOAT:
        return float(body)
    raise ValueError(
        f"unknown tag {tag!r} in stored record; known tags are "
        f"{', '.join((_DATETIME, _TIMEDELTA, _FLOAT, _MAP))} (was it written by a newer version?)"
    )
