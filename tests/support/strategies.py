"""Hypothesis strategies: schema-legal payload dicts for every 2.0b payload the codec knows.

The strategies are derived from the codec's model, value type by value type, so every payload
type gets one (``PAYLOAD_STRATEGIES[name]``). They are not circular in what they prove: the
round-trip test also validates every encoded document against the official XSD.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from hypothesis import strategies as st

from flask_openadr.codec import values as v
from flask_openadr.codec.fields import Choice, ComplexType, Field, Flatten, Nil, Substitution, local_name
from flask_openadr.codec.schema import PAYLOAD_TYPES

# Characters XML 1.0 can carry: no surrogates, no C0 controls except tab/newline/CR, no
# non-characters such as U+FFFE.
XML_TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc", "Cn"), whitelist_characters="\t\n\r"),
    max_size=12,
)
IDS = st.one_of(
    st.sampled_from(["007", "0", "", "ven-1", "Ünïcødé ✓", " padded ", "B5:FD:68:14:C1:67:7B:F8:55:37"]),
    st.from_regex(r"0[0-9]{1,5}", fullmatch=True),
    XML_TEXT,
)
URIS = st.one_of(
    st.sampled_from(["http://market.example/program-1", "urn:oadr:mc:007", "http://x.example/ä"]),
    st.from_regex(r"https?://[a-z]{1,8}\.example/[a-z0-9]{0,8}", fullmatch=True),
)
X_TOKENS = st.from_regex(r"x-[A-Za-z0-9_]{1,10}", fullmatch=True)
UTC_DATETIMES = st.builds(
    lambda dt, millis: dt.replace(microsecond=millis * 1000),
    st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2100, 1, 1)),
    st.one_of(st.just(0), st.integers(0, 999)),
).map(lambda dt: dt.replace(tzinfo=timezone.utc))
DURATIONS = st.one_of(
    st.sampled_from([timedelta(0), timedelta(hours=1), timedelta(minutes=-5), timedelta(days=1, seconds=1)]),
    st.integers(-10**8, 10**8).map(lambda s: timedelta(seconds=s)),
)
FLOATS = st.floats(allow_nan=False, allow_infinity=False, width=32)


def value_strategy(vtype) -> st.SearchStrategy:
    """A strategy for one simple value of the given codec value type."""
    if isinstance(vtype, v.Enum):
        known = st.sampled_from(vtype.values)
        return st.one_of(known, X_TOKENS) if vtype.extensible else known
    return {
        v.STRING: IDS,
        v.ANY_URI: URIS,
        v.BOOLEAN: st.booleans(),
        v.UNSIGNED_INT: st.one_of(st.integers(0, 3), st.integers(0, 2**32 - 1)),
        v.CONFIDENCE: st.integers(0, 100),
        v.FLOAT: FLOATS,
        v.DECIMAL: FLOATS,
        v.RESPONSE_CODE: st.one_of(st.sampled_from([200, 452, 463]), st.integers(0, 999)),
        v.DATE_TIME: UTC_DATETIMES,
        v.DURATION: DURATIONS,
    }[vtype]


def _terminal(kind) -> st.SearchStrategy:
    if isinstance(kind, ComplexType):
        return type_strategy(kind)
    if isinstance(kind, Substitution):
        return st.one_of([
            type_strategy(member).map(lambda d, k=local_name(qname): {"kind": k, **d})
            for qname, member in kind.members
        ])
    return value_strategy(kind)


def _field(member: Field) -> st.SearchStrategy:
    item = st.deferred(lambda: _terminal(member.type))
    if member.many:
        # an optional wrapper (strm:intervals in oadrReport) makes an empty list legal: no wrapper
        least = 0 if member.optional and member.many_at else member.min_items
        return st.lists(item, min_size=least, max_size=3).map(lambda xs: {member.key: xs})
    present = item.map(lambda x: {member.key: x})
    return st.one_of(st.just({}), present) if member.optional else present


def _member(member) -> st.SearchStrategy:
    if isinstance(member, Nil):
        return st.just({})
    if isinstance(member, Flatten):
        return type_strategy(member.type)
    if isinstance(member, Choice):
        options = [_field(option) for option in member.options]
        return st.one_of([st.just({})] + options if member.optional else options)
    return _field(member)


def _merge(parts) -> dict:
    merged: dict = {}
    for part in parts:
        merged.update(part)
    return merged


def type_strategy(ctype: ComplexType) -> st.SearchStrategy:
    """Dicts of one complex type: every list key present (0..3 items), optional keys sometimes."""
    return st.tuples(*(_member(member) for member in ctype.members)).map(_merge)


#: payload name -> strategy of schema-legal dicts for that payload.
PAYLOAD_STRATEGIES = {name: type_strategy(ctype) for name, ctype in PAYLOAD_TYPES.items()}
