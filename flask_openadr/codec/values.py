"""Value types of the 2.0b schema: text on the wire <-> Python values, by declared type only.

Every type has ``parse(text)`` (wire -> Python; raises :class:`ValueProblem` with a short reason,
which the converter turns into a :class:`~flask_openadr.errors.MalformedMessage` naming the element)
and ``format(value)`` (Python -> wire; raises :class:`ValueError`, because a bad value on the way out
is a programming error on our side).

Emission rules (documented in ``docs/payloads.rst``):

* date-times are emitted in UTC as ``YYYY-MM-DDThh:mm:ssZ``; a non-zero microsecond part is emitted
  as ``.fff`` when it is a whole number of milliseconds and as ``.ffffff`` otherwise, so that every
  aware ``datetime`` survives a round trip exactly;
* durations are emitted as ``P{d}DT{h}H{m}M{s}S`` without zero fields (``PT0S`` for zero, a leading
  ``-`` when negative), never weeks, never fractions;
* booleans as ``true``/``false``; floats with :func:`repr` (shortest exact form); decimals without
  an exponent.
"""
from __future__ import annotations

import math
import re
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Generic, Iterable, TypeVar

from ..protocol import is_aware, is_extension_token

__all__ = [
    "ValueProblem", "Unsupported", "ValueType", "STRING", "ANY_URI", "BOOLEAN", "UNSIGNED_INT", "CONFIDENCE",
    "FLOAT", "DECIMAL", "RESPONSE_CODE", "DATE_TIME", "DURATION", "Enum",
    "parse_datetime", "format_datetime", "parse_duration", "format_duration",
]


class ValueProblem(Exception):
    """Text that does not convert to the declared type; the message says what would be right."""


class Unsupported(ValueProblem):
    """Text the schema allows but the VTN cannot use (a duration in months or years, or longer
    than a :class:`~datetime.timedelta` holds). The
    converter answers it with the paired reply (:class:`~flask_openadr.errors.UnsupportedValue`)
    instead of HTTP 400, since the message itself is valid 2.0b."""


#: How much of an offending inbound value an error message repeats: enough to recognise it, never
#: so much that a hostile peer can make the VTN echo a megabyte back in a 400 reason.
SHOWN_CHARS = 40

#: The most digits an integer or a duration field may have. unsignedInt needs 10; a duration field
#: of 10 digits is already 300 years of seconds. Without a bound, int() of a 5,000-digit field
#: raises (Python's integer string limit) and timedelta() overflows: a 500 instead of a 400 (an
#: integer) or the paired reply 454 (a duration, which the schema does not bound).
MAX_DIGITS = 10


def shown(text: str) -> str:
    """``repr(text)``, shortened to about :data:`SHOWN_CHARS` characters for error messages."""
    if len(text) <= SHOWN_CHARS:
        return repr(text)
    return f"{text[:SHOWN_CHARS]!r}... ({len(text)} characters)"


def _digits(text: str) -> str:
    """``text`` (ASCII digits) without leading zeros; '0' for all zeros."""
    return text.lstrip("0") or "0"


def _collapse(text: str) -> str:
    # XSD whiteSpace="collapse" (token, boolean, numbers, dateTime): runs of spaces become one,
    # leading and trailing ones go.
    return " ".join(text.split())


#: What a value type decodes to (``str``, ``int``, ``datetime``, ...).
_Py = TypeVar("_Py", covariant=True)


class ValueType(Generic[_Py]):
    """A simple XSD type. ``name`` appears in error messages and in the generated docs.

    ``format`` takes any object: it is where a caller's wrong value is refused."""

    name = "string"
    python = "str"

    def parse(self, text: str) -> _Py:
        raise NotImplementedError

    def format(self, value: object) -> str:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


class _String(ValueType[str]):
    def __init__(self, name: str = "string") -> None:
        self.name = name

    def parse(self, text: str) -> str:
        # xs:string keeps its whitespace; IDs such as "007" stay exactly as sent.
        return text

    def format(self, value: object) -> str:
        if not isinstance(value, str):
            raise ValueError(f"expected str, got {type(value).__name__} {value!r}")
        return value


STRING = _String()
ANY_URI = _String("anyURI")


class Enum(ValueType[str]):
    """An XSD enumeration (or a ``fixed`` value, which is an enumeration of one).

    ``extensible`` adds the ``x-...`` tokens of ``ei:EiExtensionTokenType``; ``token`` says whether
    the base type collapses whitespace (xs:token) or not (xs:string)."""

    def __init__(self, name: str, values: Iterable[str], *, extensible: bool = False,
                 token: bool = True) -> None:
        self.name = name
        self.values = tuple(dict.fromkeys(values))
        self._set = frozenset(self.values)
        self.extensible = extensible
        self.token = token

    python = "str"

    def _ok(self, value: str) -> bool:
        if value in self._set:
            return True
        return self.extensible and is_extension_token(value)

    def _expected(self) -> str:
        # The first values, as many as fit in a line of an error message.
        shown: list[str] = []
        width = 0
        for value in self.values:
            if shown and (len(shown) == 12 or width + len(value) > 40):
                shown.append("...")
                break
            shown.append(repr(value))
            width += len(value) + 4
        return ", ".join(shown) + (" or an 'x-...' token" if self.extensible else "")

    def parse(self, text: str) -> str:
        value = _collapse(text) if self.token else text
        if not self._ok(value):
            raise ValueProblem(f"{shown(text)} is not a valid {self.name} (expected {self._expected()})")
        return value

    def format(self, value: object) -> str:
        if not isinstance(value, str) or not self._ok(value):
            raise ValueError(f"{value!r} is not a valid {self.name} (expected {self._expected()})")
        return value


class _Boolean(ValueType[bool]):
    name = "boolean"
    python = "bool"

    def parse(self, text: str) -> bool:
        value = _collapse(text)
        if value in ("true", "1"):
            return True
        if value in ("false", "0"):
            return False
        raise ValueProblem(f"{shown(text)} is not an xs:boolean (expected true, false, 1 or 0)")

    def format(self, value: object) -> str:
        if not isinstance(value, bool):
            raise ValueError(f"expected bool, got {type(value).__name__} {value!r}")
        return "true" if value else "false"


BOOLEAN = _Boolean()


class _UnsignedInt(ValueType[int]):
    python = "int"

    def __init__(self, name: str = "unsignedInt", maximum: int = 4294967295) -> None:
        self.name = name
        self.maximum = maximum

    def parse(self, text: str) -> int:
        value = _collapse(text)
        if re.fullmatch(r"-0*[1-9]\d*", value):
            raise ValueProblem(f"{shown(text)} is negative; {self.name} must be 0..{self.maximum}")
        if not re.fullmatch(r"[+]?\d+|-0+", value):
            raise ValueProblem(f"{shown(text)} is not an integer ({self.name}, 0..{self.maximum})")
        if len(_digits(value.lstrip("+-"))) > MAX_DIGITS:
            raise ValueProblem(f"{shown(text)} is out of range for {self.name} (0..{self.maximum})")
        number = int(value)
        if number > self.maximum:
            raise ValueProblem(f"{shown(text)} is out of range for {self.name} (0..{self.maximum})")
        return number

    def format(self, value: object) -> str:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected int, got {type(value).__name__} {value!r}")
        if not 0 <= value <= self.maximum:
            raise ValueError(f"{value!r} is out of range for {self.name} (0..{self.maximum})")
        return str(value)


UNSIGNED_INT = _UnsignedInt()
CONFIDENCE = _UnsignedInt("confidence", 100)


class _ResponseCode(ValueType[int]):
    name = "responseCode"
    python = "int"

    def parse(self, text: str) -> int:
        # The base type is xs:string with the pattern [0-9][0-9][0-9]; surrounding whitespace is
        # tolerated on the way in (be lenient when receiving).
        if not re.fullmatch(r"[0-9]{3}", text.strip()):
            raise ValueProblem(f"{shown(text)} is not a response code (expected three digits, e.g. 200)")
        return int(text.strip())

    def format(self, value: object) -> str:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 999:
            raise ValueError(f"{value!r} is not a response code (expected an int 0..999)")
        return f"{value:03d}"


RESPONSE_CODE = _ResponseCode()

_FLOAT_RE = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


def _check_number(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"expected float, got {type(value).__name__} {value!r}")
    try:
        number = float(value)
    except OverflowError:  # an int beyond a float: ValueError, as the encoder promises
        raise ValueError(f"an int beyond a float's range is out of range for {name}") from None
    if not math.isfinite(number):
        raise ValueError(f"{value!r} is not finite; {name} values must be finite")
    return number


class _Float(ValueType[float]):
    name = "float"
    python = "float"

    def parse(self, text: str) -> float:
        if _FLOAT_RE.fullmatch(text):  # the usual case: no blanks, no NaN or INF
            number = float(text)
            if math.isfinite(number):
                return number
        value = _collapse(text)
        if value in ("NaN", "INF", "-INF", "+INF"):
            raise ValueProblem(f"{shown(text)} is not a finite number (NaN and INF are not accepted)")
        if not _FLOAT_RE.fullmatch(value):
            raise ValueProblem(f"{shown(text)} is not an xs:float (expected e.g. 1.5 or 2E3)")
        number = float(value)
        if not math.isfinite(number):
            raise ValueProblem(f"{shown(text)} is out of range (not a finite number)")
        return number

    def format(self, value: object) -> str:
        return repr(_check_number(value, self.name))


FLOAT = _Float()


class _Decimal(ValueType[float]):
    name = "decimal"
    python = "float"

    def parse(self, text: str) -> float:
        value = _collapse(text)
        if not re.fullmatch(r"[+-]?(\d+(\.\d*)?|\.\d+)", value):
            raise ValueProblem(f"{shown(text)} is not an xs:decimal (expected e.g. 60 or 230.5, no exponent)")
        number = float(value)
        if math.isinf(number):
            # Valid xs:decimal (it has no bound), but beyond a float: decoded as inf, it
            # would not encode again.
            raise Unsupported(f"{shown(text)} is out of range (beyond a float)")
        return number

    def format(self, value: object) -> str:
        # repr() is the shortest exact form; Decimal drops the exponent without adding noise digits.
        return format(Decimal(repr(_check_number(value, self.name))), "f")


DECIMAL = _Decimal()

# ---------------------------------------------------------------- date-time

_DATETIME_RE = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d*))?(Z|[+-]\d{2}:\d{2})?"
)


_PLAIN_DATETIME_RE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{3}|\.\d{6})?Z",
                                re.ASCII)


def parse_datetime(text: str) -> datetime:
    """Parse an xcal date-time into an aware UTC :class:`~datetime.datetime`.

    ``Z`` and no zone at all both mean UTC; fractions beyond microseconds are truncated; numeric
    offsets are refused because the xcal pattern forbids them."""
    # Fast path for the form nearly every peer sends, YYYY-MM-DDThh:mm:ss[.fff|.ffffff]Z, parsed
    # in C. Anything else (hour 24, other fractions, no Z, whitespace) takes the regular path
    # below, which gives the same result or the error.
    if _PLAIN_DATETIME_RE.fullmatch(text):
        try:
            result = datetime.fromisoformat(text[:-1] + "+00:00")
        except ValueError:
            pass
        else:
            return result if result.tzinfo is timezone.utc else result.replace(tzinfo=timezone.utc)
    value = _collapse(text)
    match = _DATETIME_RE.fullmatch(value)
    if not match:
        raise ValueProblem(f"{shown(text)} is not an xcal date-time (expected YYYY-MM-DDThh:mm:ss[.fff]Z)")
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    if zone not in (None, "Z"):
        raise ValueProblem(f"{shown(text)} has a numeric UTC offset, which xcal forbids (use UTC with Z)")
    micro = int((fraction or "")[:6].ljust(6, "0"))
    extra_day = False
    if hour == "24" and minute == "00" and second == "00" and micro == 0:
        # xs:dateTime allows 24:00:00 for the end of a day: that is midnight of the next day.
        hour, extra_day = "00", True
    try:
        result = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second),
                          micro, tzinfo=timezone.utc)
        if extra_day:
            result += timedelta(days=1)
    except (ValueError, OverflowError):
        raise ValueProblem(f"{shown(text)} is not a valid date-time (field out of range)") from None
    return result


def format_datetime(value: object) -> str:
    """Format an aware datetime as UTC (see the module docstring for the fraction rule)."""
    if value.__class__ is datetime and value.tzinfo is timezone.utc:
        utc = value  # nearly every one: no conversion
    elif not isinstance(value, datetime):
        raise ValueError(f"expected an aware datetime, got {type(value).__name__} {value!r}")
    elif not is_aware(value):
        raise ValueError(f"naive datetime {value!r}: attach a timezone (UTC)")
    else:
        utc = value.astimezone(timezone.utc)
    # datetime's own isoformat (a subclass's is not called): YYYY-MM-DDThh:mm:ss[.ffffff]+00:00.
    text = datetime.isoformat(utc)
    micro = utc.microsecond
    if micro and micro % 1000 == 0:
        return text[:23] + "Z"  # whole milliseconds: .fff
    return text[:-6] + "Z"


class _DateTime(ValueType[datetime]):
    name = "date-time"
    python = "datetime"
    parse = staticmethod(parse_datetime)  # one call less per value on the decoding hot path

    def format(self, value: object) -> str:
        return format_datetime(value)


DATE_TIME = _DateTime()

# ---------------------------------------------------------------- duration

# The xcal DurationValueType pattern is (\+|\-)?P((\d+Y)?(\d+M)?(\d+D)?T?(\d+H)?(\d+M)?(\d+S)?)|(\d+W):
# T is optional, and an M before D/T/H means months, after them minutes.
_DURATION_RE = re.compile(
    r"([+-])?P(?:(\d+)Y)?(?:(\d+)M)?(?:(\d+)D)?T?(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?"
)
# Weeks: the pattern only allows a bare "1W"; "P1W" (ISO 8601) is accepted leniently.
_WEEKS_RE = re.compile(r"([+-])?P?(\d+)W")


# Reports repeat the same few durations (every interval "PT15M"): parsed ones are kept, up to a
# bound, so a hostile peer cannot grow the cache without limit. timedelta is immutable.
_DURATIONS: dict[str, timedelta] = {}
_DURATIONS_MAX = 512


def parse_duration(text: str) -> timedelta:
    """Parse an xcal duration into a :class:`~datetime.timedelta`.

    Accepts the whole DurationValueType pattern (signs, optional ``T``, ``P``/``PT`` as zero), bare
    ``1W`` and, leniently, ``P1W`` and surrounding whitespace. Years and months are refused because
    their length depends on the calendar; fractions and lower case are refused as the XSD does."""
    result = _DURATIONS.get(text)
    if result is None:
        result = _parse_duration(text)
        if len(_DURATIONS) < _DURATIONS_MAX:
            _DURATIONS[text] = result
    return result


def _parse_duration(text: str) -> timedelta:
    value = text.strip()
    weeks = _WEEKS_RE.fullmatch(value)
    match = None if weeks else _DURATION_RE.fullmatch(value)
    found = weeks or match
    if found is None:
        raise ValueProblem(f"{shown(text)} is not an xcal duration (expected e.g. PT1H, P1DT30M or PT0S)")
    fields = found.groups()[1:]
    if any(len(_digits(field)) > MAX_DIGITS for field in fields if field):
        raise Unsupported(f"{shown(text)} is too long a duration (at most {MAX_DIGITS} digits a "
                          "field)")
    if weeks:
        sign, count = weeks.groups()
        try:
            result = timedelta(weeks=int(count))
        except OverflowError:
            raise Unsupported(f"{shown(text)} is too long a duration (at most "
                              "999999999 days)") from None
        return -result if sign == "-" else result
    sign, years, months, days, hours, minutes, seconds = found.groups()  # not weeks: the match
    if int(years or 0) or int(months or 0):
        raise Unsupported(f"{shown(text)} uses years or months, whose length depends on the calendar "
                           "(use days, e.g. P30D)")
    try:
        result = timedelta(days=int(days or 0), hours=int(hours or 0), minutes=int(minutes or 0),
                           seconds=int(seconds or 0))
    except OverflowError:
        raise Unsupported(f"{shown(text)} is too long a duration (at most 999999999 days)"
                          ) from None
    return -result if sign == "-" else result


def format_duration(value: object) -> str:
    """Format a timedelta of whole seconds as ``[-]P{d}DT{h}H{m}M{s}S`` without zero fields."""
    if not isinstance(value, timedelta):
        raise ValueError(f"expected timedelta, got {type(value).__name__} {value!r}")
    if value.microseconds:
        raise ValueError(f"{value!r} has a fraction of a second; xcal durations are whole seconds")
    sign, value = ("-", -value) if value < timedelta(0) else ("", value)
    days, rest = value.days, value.seconds
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    date_part = f"{days}D" if days else ""
    time_part = "".join(f"{n}{unit}" for n, unit in ((hours, "H"), (minutes, "M"), (seconds, "S")) if n)
    if not date_part and not time_part:
        return "PT0S"
    return f"{sign}P{date_part}" + (f"T{time_part}" if time_part else "")


class _Duration(ValueType[timedelta]):
    name = "duration"
    python = "timedelta"
    parse = staticmethod(parse_duration)

    def format(self, value: object) -> str:
        return format_duration(value)


DURATION = _Duration()
