"""The Redis store (``redis://``, ``rediss://``): one VTN across any number of hosts, via redis-py.

Install it with ``pip install "flask-openadr[redis]"``. The URI is redis-py's, plus three options
of this store::

    redis://[[username]:password@]host[:port][/db][?option=value&...]
    rediss://...                        the same over TLS (ssl_ca_certs=..., ssl_certfile=...)

    redis://127.0.0.1:6379/0?prefix=myvtn:&socket_timeout=2

- ``prefix`` (default ``openadr:``): every key this store writes starts with it, so several VTNs
  (and test runs) can share one server and one database;
- ``lock_lease`` (seconds, default 10): how long the write lock of an :meth:`RedisStore.atomic`
  block lasts without being renewed; it bounds how long a crashed process blocks the others;
- ``lock_wait`` (seconds, default 30): how long a writer waits for another's block before
  :class:`~flask_openadr.errors.StoreError`.

Every other option goes to redis-py (``socket_timeout``, ``socket_connect_timeout``,
``max_connections``, ``health_check_interval``, ``ssl_*``, ...). ``socket_timeout`` and
``socket_connect_timeout`` default to 5 seconds here, so a request fails with HTTP 503 instead of
hanging when the server is gone. Options that would change what the store reads back
(``decode_responses``, ``encoding``, ``protocol``) or make redis-py resend a write after a timeout
(``retry_on_timeout``, ``retry_on_error``) are refused.

It needs one Redis primary (standalone, or a managed primary with a replica for failover),
version 5.0 or newer. Redis Cluster is not supported: a transaction spans keys in many slots.
Without persistence a restarted Redis has forgotten every VEN, event and outbox: run it with
``appendonly yes``.

Keys (``P`` is the prefix; every value holding a record is the text of
:mod:`flask_openadr.store.serialize`)::

    P lock, P lock:liveness        the write locks of atomic() blocks (a token, with a lease)
    P lock:ven:VEN_ID              the lock of a per-VEN block, atomic(ven_id)
    P lock:vens                    sorted set: tokens of open per-VEN blocks, by lease end
    P lock:waiting                 set while a VTN-wide block waits for per-VEN blocks
    P seq                          the counter that orders events, records and outbox items
    P vens                         hash: ven_id -> record
    P ven_fp, P fingerprints       hash ven_id -> fingerprint; sorted set "FINGERPRINT:ven_id"
    P events                       hash: event_id -> "seq:record" (seq = the first put)
    P delivered                    hash: ven_id -> delivery map
    P responses:EVENT_ID           hash: "modification_number:ven_id" -> record
    P outbox:VEN_ID                sorted set: score priority, member "seq (20 digits):record"
    P records:LEN:KIND:VEN_ID      hash: key -> "seq:record" (LEN = len(kind), so it parses back)
    P live:VEN_ID                  hash: one liveness row (times as UTC text and epoch microseconds)
    P liveness                     set of venIDs that have a liveness row
    P liveness:online              sorted set: online venIDs by offline_at
    P liveness:pending             sorted set: venIDs with a pending transition by lease end
    P nonce:NONCE                  a replay nonce: its expiry (epoch us), with a TTL (PX)

Liveness times are compared as integer epoch microseconds (sorted-set scores and Lua numbers
are doubles, exact for such integers until the year 2255), so the sweeps and the compare-and-set
scripts see exactly the instants they were given.

**Atomicity.** Every write is one Lua script, which Redis runs with nothing in between. An
:meth:`~RedisStore.atomic` block takes the write lock (``SET NX PX`` with a random token), reads
from Redis (which no one else can change while the lock is held, since every write script refuses
to run while another holds it and its writer waits), keeps its own writes in this process (reads in
the block see them), and at the end sends them all in one script that first checks the lock still
holds the block's token, then applies them and releases the lock. So a block's writes appear all
at once or, when the block raises, when its lock has expired, or when the process dies, not at all.
Liveness has a lock of its own, taken by a block only when it touches liveness, so that
:meth:`~RedisStore.record_seen` (one script per VEN message) never waits for the poll blocks of
other VENs.

A per-VEN block (``atomic(ven_id)``, which writes only that VEN's data) takes the VEN's lock
instead of the write lock, and records its token in ``P lock:vens`` (with its lease end), both in
one script that refuses while the write lock is held or a VTN-wide block is waiting. Blocks of
different VENs therefore run side by side. A VTN-wide block takes the write lock only once no
per-VEN block is open (expired entries are dropped), and while it waits it sets
``P lock:waiting`` so that new per-VEN blocks wait behind it; single writes outside a block
wait for open per-VEN blocks as they wait for the write lock. A per-VEN block commits like any
block, checking its own lock's token, and leaves ``P lock:vens`` in the same script.

Each process has its own connection pool (found by ``os.getpid()``): a worker forked from a
gunicorn master that opened the store never uses the master's connections.
"""
from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import random
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, ClassVar, Iterator
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ..errors import ConfigurationError, StoreError
from ..protocol import is_aware
from . import redact, serialize
from .base import (
    PollState,
    read_poll_state,
    EventResponseRecord,
    Liveness,
    NonceUsed,
    OutboxItem,
    Transition,
    VenRecord,
    MANY_CHUNK,
    check_delivered,
    check_max_priority,
    check_nonce,
    check_seen_nonce,
    event_id_of,
    event_response_key,
    normalize_fingerprint,
    outbox_priority,
    received_at_text,
    ven_id_of,
)

__all__ = ["RedisStore", "from_uri"]

DEFAULT_PREFIX = "openadr:"
DEFAULT_LOCK_LEASE = 10.0
DEFAULT_LOCK_WAIT = 30.0

# Options of this store, not redis-py's.
_OWN_OPTIONS = ("prefix", "lock_lease", "lock_wait")
# redis-py options this store sets itself: its replies must be text, RESP2-shaped, and a write
# must never be sent twice (a retried script could pop a second outbox item).
_REFUSED_OPTIONS = (
    "decode_responses",
    "encoding",
    "encoding_errors",
    "protocol",
    "retry_on_timeout",
    "retry_on_error",
)
_SOCKET_DEFAULTS = {"socket_timeout": 5.0, "socket_connect_timeout": 5.0}

# Outbox priorities are sorted-set scores (doubles): integers are exact up to 2**53.
_MAX_PRIORITY = 2**53

_UTC = timezone.utc
_EPOCH = datetime(1970, 1, 1, tzinfo=_UTC)
_MICROSECOND = timedelta(microseconds=1)

# The fields of a liveness row, in the order the "live" operation of _COMMIT takes them.
_LIVE_FIELDS = (
    "state",
    "epoch",
    "last_seen",
    "offline_at",
    "offline_us",
    "p_kind",
    "p_epoch",
    "p_lease",
    "p_lease_us",
)


def from_uri(uri: str, *, instance_path: str | None = None) -> RedisStore:
    """Open the store a ``redis://`` or ``rediss://`` URI names (see the module docstring).

    Nothing connects yet: the first store call does.

    :param instance_path: unused (Redis has no file paths); accepted like every backend.
    :raises ConfigurationError: when redis-py is not installed or the URI is malformed.
    """
    try:
        import redis  # noqa: F401
    except ImportError as exc:
        raise ConfigurationError(
            f"the store URI {redact(uri)!r} needs redis-py, which is not installed: "
            'pip install "flask-openadr[redis]"'
        ) from exc
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme not in ("redis", "rediss"):
        raise ConfigurationError(f"{redact(uri)!r} is not a redis:// or rediss:// URI")
    if parts.path not in ("", "/") and not parts.path[1:].isdigit():
        raise ConfigurationError(
            f"the store URI {redact(uri)!r} has the path {parts.path!r}; a Redis URI's path is "
            "the database number, such as '/0'"
        )
    own: dict[str, str] = {}
    passed = []
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name in _OWN_OPTIONS:
            own[name] = value
        elif name in _REFUSED_OPTIONS:
            raise ConfigurationError(
                f"the store URI {redact(uri)!r} sets {name!r}, which the Redis store sets "
                "itself; remove it"
            )
        else:
            passed.append((name, value))
    prefix = own.get("prefix", DEFAULT_PREFIX)
    if not prefix:
        raise ConfigurationError(
            f"the store URI {redact(uri)!r} has an empty prefix; give one such as "
            "'prefix=myvtn:' (or leave it out for 'openadr:')"
        )
    url = urlunsplit((scheme, parts.netloc, parts.path, urlencode(passed), ""))
    return RedisStore(
        url,
        prefix=prefix,
        lock_lease=_seconds(uri, own, "lock_lease", DEFAULT_LOCK_LEASE),
        lock_wait=_seconds(uri, own, "lock_wait", DEFAULT_LOCK_WAIT),
        uri=uri,
    )


def _seconds(uri: str, own: dict[str, str], name: str, default: float) -> float:
    if name not in own:
        return default
    try:
        value = float(own[name])
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise ConfigurationError(
            f"the store URI {redact(uri)!r} has {name}={own[name]!r}; it must be a number of "
            "seconds greater than 0, such as 10"
        )
    return value


# -- Lua scripts ------------------------------------------------------------------------------
# Every write goes through one of these, so that it is atomic and can refuse to run while
# another process's atomic() block holds the lock it checks (the caller then waits and retries).
# Write scripts answer 0 for "locked, try again" (a table starting with 0 where they return more).

_COMMIT = """
-- Apply a group of writes. KEYS[1] the block's write lock (the VTN's, or a VEN's for a
-- per-VEN block), KEYS[2] the liveness lock, KEYS[3] the sequence counter, KEYS[4] the set of
-- open per-VEN blocks, then the keys the operations name (by their index in KEYS).
-- ARGV[1] the block's token ('' for a single write outside a block), ARGV[2] / ARGV[3] '1' to
-- check the write lock / the liveness lock, then the operations, each a name and its arguments.
-- Returns 1 when applied, 0 when another block holds a lock (nothing written), -1 when the
-- block's lock no longer holds its token (nothing written).
local token = ARGV[1]
for i = 1, 2 do
  if ARGV[i + 1] == '1' then
    local holder = redis.call('GET', KEYS[i])
    if token == '' then
      if holder then return 0 end
    elseif holder ~= token then
      return -1
    end
  end
end
if token == '' and ARGV[2] == '1' then
  -- A single write waits for open per-VEN blocks too, as it waits for a VTN-wide block.
  local now = redis.call('TIME')
  local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
  if redis.call('ZCOUNT', KEYS[4], ms, '+inf') > 0 then return 0 end
end
local function key(i) return KEYS[tonumber(ARGV[i])] end
local i, n = 4, #ARGV
while i <= n do
  local op = ARGV[i]
  if op == 'ven' then
    -- vens, ven_fp, fingerprints, ven_id, record, fingerprint ('' for none)
    local vens, fps, index, id, fp = key(i + 1), key(i + 2), key(i + 3), ARGV[i + 4], ARGV[i + 6]
    local old = redis.call('HGET', fps, id)
    if old then redis.call('ZREM', index, old .. ':' .. id) end
    redis.call('HSET', vens, id, ARGV[i + 5])
    if fp == '' then
      redis.call('HDEL', fps, id)
    else
      redis.call('HSET', fps, id, fp)
      redis.call('ZADD', index, 0, fp .. ':' .. id)
    end
    i = i + 7
  elseif op == 'oput' then
    -- hash, id, record, fresh: keep the id's place unless fresh ('1') or new
    local hash, id = key(i + 1), ARGV[i + 2]
    local seq
    if ARGV[i + 4] == '0' then
      local old = redis.call('HGET', hash, id)
      if old then seq = string.match(old, '^(%d+):') end
    end
    if not seq then seq = string.format('%d', redis.call('INCR', KEYS[3])) end
    redis.call('HSET', hash, id, seq .. ':' .. ARGV[i + 3])
    i = i + 5
  elseif op == 'hset' then
    redis.call('HSET', key(i + 1), ARGV[i + 2], ARGV[i + 3])
    i = i + 4
  elseif op == 'hdel' then
    redis.call('HDEL', key(i + 1), ARGV[i + 2])
    i = i + 3
  elseif op == 'del' then
    redis.call('DEL', key(i + 1))
    i = i + 2
  elseif op == 'zrem' then
    redis.call('ZREM', key(i + 1), ARGV[i + 2])
    i = i + 3
  elseif op == 'push' then
    -- outbox, priority, item
    local seq = redis.call('INCR', KEYS[3])
    redis.call('ZADD', key(i + 1), ARGV[i + 2], string.format('%020d', seq) .. ':' .. ARGV[i + 3])
    i = i + 4
  elseif op == 'live' or op == 'unlive' then
    -- row, index, online, pending, ven_id, then for 'live' the nine row fields ('' for none)
    local row, index, online, pending = key(i + 1), key(i + 2), key(i + 3), key(i + 4)
    local id = ARGV[i + 5]
    redis.call('DEL', row)
    if op == 'unlive' then
      redis.call('SREM', index, id)
      redis.call('ZREM', online, id)
      redis.call('ZREM', pending, id)
      i = i + 6
    else
      local names = {'state', 'epoch', 'last_seen', 'offline_at', 'offline_us',
                     'p_kind', 'p_epoch', 'p_lease', 'p_lease_us'}
      local v = {}
      for j = 1, 9 do
        v[names[j]] = ARGV[i + 5 + j]
        if ARGV[i + 5 + j] ~= '' then redis.call('HSET', row, names[j], ARGV[i + 5 + j]) end
      end
      redis.call('SADD', index, id)
      if v.state == 'online' then redis.call('ZADD', online, v.offline_us, id)
      else redis.call('ZREM', online, id) end
      if v.p_epoch ~= '' then redis.call('ZADD', pending, v.p_lease_us, id)
      else redis.call('ZREM', pending, id) end
      i = i + 15
    end
  else
    return redis.error_reply('unknown store operation ' .. tostring(op))
  end
end
if token ~= '' then
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[4], token)
  if ARGV[3] == '1' then redis.call('DEL', KEYS[2]) end
end
return 1
"""

_TAKE_VTN = """
-- Take the VTN's write lock KEYS[1] for token ARGV[1] (lease ARGV[2] ms) once no per-VEN block
-- is open (KEYS[2], by lease end); while some are, flag KEYS[3] so that no new one opens (a
-- steady stream of polls cannot keep a VTN-wide block out). Returns 1 when taken, else 0.
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ms - 1)
if redis.call('ZCARD', KEYS[2]) > 0 then
  redis.call('SET', KEYS[3], '1', 'PX', ARGV[2])
  return 0
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  redis.call('DEL', KEYS[3])
  return 1
end
return 0
"""

_TAKE_VEN = """
-- Open a per-VEN block: KEYS[1] the VTN's write lock, KEYS[2] the VEN's lock, KEYS[3] the set
-- of open per-VEN blocks, KEYS[4] the flag of a waiting VTN-wide block; ARGV[1] the token,
-- ARGV[2] the lease in ms. Returns 1 when taken, else 0 (try again).
if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('EXISTS', KEYS[4]) == 1 then return 0 end
if not redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return 0 end
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('ZADD', KEYS[3], ms + tonumber(ARGV[2]), ARGV[1])
return 1
"""

_RENEW = """
-- Extend the block's locks (KEYS, the first ARGV[3] of them) to ARGV[2] ms if they all still
-- hold its token ARGV[1]; a per-VEN block also names the set of open ones (the last KEYS).
local locks = tonumber(ARGV[3])
for j = 1, locks do
  if redis.call('GET', KEYS[j]) ~= ARGV[1] then return 0 end
end
for j = 1, locks do redis.call('PEXPIRE', KEYS[j], ARGV[2]) end
if #KEYS > locks then
  local now = redis.call('TIME')
  local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
  redis.call('ZADD', KEYS[#KEYS], 'XX', ms + tonumber(ARGV[2]), ARGV[1])
end
return 1
"""

_RELEASE = """
-- Release the block's locks (the first ARGV[2] KEYS) that still hold its token ARGV[1] (a
-- rolled-back block), and its place in the set of open per-VEN blocks (the last KEYS, if any).
local locks = tonumber(ARGV[2])
for j = 1, locks do
  if redis.call('GET', KEYS[j]) == ARGV[1] then redis.call('DEL', KEYS[j]) end
end
if #KEYS > locks then redis.call('ZREM', KEYS[#KEYS], ARGV[1]) end
return 1
"""

_POP_OUTBOX = """
-- KEYS[1] the write lock, KEYS[2] the VEN's outbox, KEYS[3] the VEN's lock; ARGV[1] the
-- highest priority to consider.
if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('EXISTS', KEYS[3]) == 1 then return {0} end
local first = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, 1)
if #first == 0 then return {1} end
redis.call('ZREM', KEYS[2], first[1])
return {1, first[1]}
"""

_VEN_BY_FINGERPRINT = """
-- KEYS[1] fingerprints, KEYS[2] vens; ARGV[1] the normalised fingerprint (it has no ':').
local first = redis.call('ZRANGEBYLEX', KEYS[1], '[' .. ARGV[1] .. ':', '(' .. ARGV[1] .. ';',
                         'LIMIT', 0, 1)
if #first == 0 then return false end
return redis.call('HGET', KEYS[2], string.sub(first[1], #ARGV[1] + 2))
"""

# The liveness scripts: KEYS[1] the liveness lock, KEYS[2] the VEN's row, KEYS[3] the index of
# rows, KEYS[4] online VENs by offline_at, KEYS[5] pending transitions by lease end. Times come
# as UTC text (kept for reading back) and as epoch microseconds (compared, and used as scores).
_SEEN_BODY = """
local row = redis.call('HMGET', KEYS[2], 'state', 'epoch')
redis.call('HSET', KEYS[2], 'last_seen', ARGV[2], 'offline_at', ARGV[3], 'offline_us', ARGV[4])
redis.call('SADD', KEYS[3], ARGV[1])
redis.call('ZADD', KEYS[4], ARGV[4], ARGV[1])
if row[1] == 'online' then return {1} end
local epoch = string.format('%d', (tonumber(row[2]) or 0) + 1)
redis.call('HSET', KEYS[2], 'state', 'online', 'epoch', epoch, 'p_kind', 'online',
           'p_epoch', epoch, 'p_lease', ARGV[5], 'p_lease_us', ARGV[6])
redis.call('ZADD', KEYS[5], ARGV[6], ARGV[1])
return {1, 'online', epoch}
"""
_RECORD_SEEN = """
-- ARGV: ven_id, now, offline_at, offline_at (us), lease_until, lease_until (us)
if redis.call('EXISTS', KEYS[1]) == 1 then return {0} end
""" + _SEEN_BODY
# record_seen with a nonce: the nonce, as _REMEMBER_NONCE keeps it, and the liveness update in
# one script, so both happen or (the nonce unexpired: {2}) neither.
_RECORD_SEEN_NONCE = """
-- KEYS[6] the nonce's key; ARGV: as _RECORD_SEEN's, then now (us), the nonce's expires_at
-- (us) and lifetime (ms, 0 when it expired on arrival: nothing to remember).
if redis.call('EXISTS', KEYS[1]) == 1 then return {0} end
local held = redis.call('GET', KEYS[6])
if held and tonumber(held) > tonumber(ARGV[7]) then return {2} end
if tonumber(ARGV[9]) > 0 then redis.call('SET', KEYS[6], ARGV[8], 'PX', ARGV[9]) end
""" + _SEEN_BODY

_CLAIM_OFFLINE = """
-- ARGV: ven_id, epoch, now (us), lease_until, lease_until (us)
if redis.call('EXISTS', KEYS[1]) == 1 then return {0} end
local row = redis.call('HMGET', KEYS[2], 'state', 'epoch', 'offline_us')
if row[1] ~= 'online' or row[2] ~= ARGV[2] or tonumber(row[3]) > tonumber(ARGV[3]) then
  return {1}
end
local epoch = string.format('%d', tonumber(row[2]) + 1)
redis.call('HSET', KEYS[2], 'state', 'offline', 'epoch', epoch, 'p_kind', 'offline',
           'p_epoch', epoch, 'p_lease', ARGV[4], 'p_lease_us', ARGV[5])
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('ZADD', KEYS[5], ARGV[5], ARGV[1])
return {1, 'offline', epoch}
"""

_COMPLETE_TRANSITION = """
-- ARGV: ven_id, epoch
if redis.call('EXISTS', KEYS[1]) == 1 then return {0} end
if redis.call('HGET', KEYS[2], 'p_epoch') == ARGV[2] then
  redis.call('HDEL', KEYS[2], 'p_kind', 'p_epoch', 'p_lease', 'p_lease_us')
  redis.call('ZREM', KEYS[5], ARGV[1])
end
return {1}
"""

_RECLAIM_TRANSITION = """
-- ARGV: ven_id, epoch, now (us), lease_until, lease_until (us)
if redis.call('EXISTS', KEYS[1]) == 1 then return {0} end
local row = redis.call('HMGET', KEYS[2], 'p_epoch', 'p_lease_us')
if row[1] ~= ARGV[2] or tonumber(row[2]) > tonumber(ARGV[3]) then return {1, 0} end
redis.call('HSET', KEYS[2], 'p_lease', ARGV[4], 'p_lease_us', ARGV[5])
redis.call('ZADD', KEYS[5], ARGV[5], ARGV[1])
return {1, 1}
"""

_DUE_OFFLINE = """
-- KEYS[1] online VENs by offline_at; ARGV: now (us), limit, the prefix of row keys.
-- Returns ven_id, epoch, offline_at (us) for each.
local out = {}
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, id in ipairs(ids) do
  local row = redis.call('HMGET', ARGV[3] .. id, 'epoch', 'offline_us')
  out[#out + 1] = id
  out[#out + 1] = row[1] or '0'
  out[#out + 1] = row[2] or '0'
end
return out
"""

_STALE_TRANSITIONS = """
-- KEYS[1] pending transitions by lease end; ARGV: now (us), limit, the prefix of row keys.
-- Returns ven_id, kind, epoch, lease_until (us) for each.
local out = {}
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, id in ipairs(ids) do
  local row = redis.call('HMGET', ARGV[3] .. id, 'p_kind', 'p_epoch', 'p_lease_us')
  out[#out + 1] = id
  out[#out + 1] = row[1] or ''
  out[#out + 1] = row[2] or '0'
  out[#out + 1] = row[3] or '0'
end
return out
"""

_LIST_LIVENESS = """
-- KEYS[1] the index of rows; ARGV[1] the prefix of row keys. Returns ven_id, row, ...
local out = {}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  out[#out + 1] = id
  out[#out + 1] = redis.call('HGETALL', ARGV[1] .. id)
end
return out
"""

_REMEMBER_NONCE = """
-- KEYS[1] the nonce's key; ARGV: now (us), expires_at (us), lifetime (ms). The value is the
-- expiry, compared with the caller's clock; PX lets Redis drop the key about then.
local held = redis.call('GET', KEYS[1])
if held and tonumber(held) > tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
"""


class _Script:
    """A Lua script, run by its SHA1 (loaded again when the server has forgotten it)."""

    __slots__ = ("source", "sha")

    def __init__(self, source: str):
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()


COMMIT = _Script(_COMMIT)
RENEW = _Script(_RENEW)
RELEASE = _Script(_RELEASE)
POP_OUTBOX = _Script(_POP_OUTBOX)
TAKE_VTN = _Script(_TAKE_VTN)
TAKE_VEN = _Script(_TAKE_VEN)
VEN_BY_FINGERPRINT = _Script(_VEN_BY_FINGERPRINT)
RECORD_SEEN = _Script(_RECORD_SEEN)
RECORD_SEEN_NONCE = _Script(_RECORD_SEEN_NONCE)
CLAIM_OFFLINE = _Script(_CLAIM_OFFLINE)
COMPLETE_TRANSITION = _Script(_COMPLETE_TRANSITION)
RECLAIM_TRANSITION = _Script(_RECLAIM_TRANSITION)
DUE_OFFLINE = _Script(_DUE_OFFLINE)
STALE_TRANSITIONS = _Script(_STALE_TRANSITIONS)
LIST_LIVENESS = _Script(_LIST_LIVENESS)
REMEMBER_NONCE = _Script(_REMEMBER_NONCE)


# -- keys and values --------------------------------------------------------------------------


class _Keys:
    """The names of this store's keys under one prefix."""

    def __init__(self, prefix: str):
        self.prefix = prefix
        self.lock = prefix + "lock"
        self.live_lock = prefix + "lock:liveness"
        self.ven_blocks = prefix + "lock:vens"  # open per-VEN blocks, by lease end
        self.vtn_waiting = prefix + "lock:waiting"  # a VTN-wide block waits for them
        self.seq = prefix + "seq"
        self.vens = prefix + "vens"
        self.ven_fp = prefix + "ven_fp"
        self.fingerprints = prefix + "fingerprints"
        self.events = prefix + "events"
        self.delivered = prefix + "delivered"
        self.live_prefix = prefix + "live:"
        self.live_index = prefix + "liveness"
        self.online = prefix + "liveness:online"
        self.pending = prefix + "liveness:pending"

    def responses(self, event_id: str) -> str:
        return f"{self.prefix}responses:{event_id}"

    def outbox(self, ven_id: str) -> str:
        return f"{self.prefix}outbox:{ven_id}"

    def ven_lock(self, ven_id: str) -> str:
        return f"{self.prefix}lock:ven:{ven_id}"

    def records(self, kind: str, ven_id: str) -> str:
        # The length makes the name parse back into (kind, ven_id) whatever the two hold.
        return f"{self.prefix}records:{len(kind)}:{kind}:{ven_id}"

    def live(self, ven_id: str) -> str:
        return self.live_prefix + ven_id

    def liveness(self, ven_id: str) -> list[str]:
        """The keys a liveness script takes, after the liveness lock."""
        return [self.live(ven_id), self.live_index, self.online, self.pending]


def _without_seq(value: str) -> str:
    """The record of a ``"seq:record"`` value."""
    return value.partition(":")[2]


def _in_seq_order(stored: dict[str, str]) -> list[tuple[str, str]]:
    """``(id, record)`` of a hash of ``"seq:record"`` values, in seq order."""
    entries = []
    for item_id, value in stored.items():
        seq, _, text = value.partition(":")
        entries.append((int(seq), item_id, text))
    entries.sort()
    return [(item_id, text) for _, item_id, text in entries]


def _outbox_text(member: str) -> str:
    return member.partition(":")[2]


def _instant(value: Any, name: str) -> tuple[str, str]:
    """An aware datetime as (UTC text, epoch microseconds text), or ``ValueError``."""
    if not is_aware(value):
        raise ValueError(f"{name} must be an aware datetime, got {value!r}")
    utc = value.astimezone(_UTC)
    return utc.isoformat(timespec="microseconds"), str((utc - _EPOCH) // _MICROSECOND)


def _check_int(value: Any, name: str, minimum: int | None = None) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{name} must be an int, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value!r}")
    return value


def _check_text(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a str, got {value!r}")
    return value


def _datetime(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text).astimezone(_UTC) if text else None


def _liveness(ven_id: str, row: dict[str, str]) -> Liveness:
    pending = None
    if row.get("p_epoch"):
        pending = {
            "kind": row["p_kind"],
            "epoch": int(row["p_epoch"]),
            "lease_until": _datetime(row["p_lease"]),
        }
    return {
        "ven_id": ven_id,
        "state": row.get("state") or None,
        "epoch": int(row.get("epoch") or 0),
        "last_seen": _datetime(row.get("last_seen")),
        "offline_at": _datetime(row.get("offline_at")),
        "pending": pending,
    }


# -- a block's changes ------------------------------------------------------------------------


class _Ordered:
    """Changes to one collection whose items keep the place of their first put (the events, or
    one VEN's records of one kind), over what Redis holds."""

    __slots__ = ("cleared", "changes")

    def __init__(self) -> None:
        self.cleared = False  # everything Redis held is gone
        # id -> [record or None (deleted), order of its (re)appearance, fresh]; fresh means it
        # was removed in this block, so a put gives it a new place even if Redis has it.
        self.changes: dict[str, list[Any]] = {}

    def put(self, item_id: str, text: str, order: int) -> None:
        change = self.changes.get(item_id)
        if change is None:
            self.changes[item_id] = [text, order, self.cleared]
        elif change[0] is None:
            self.changes[item_id] = [text, order, True]
        else:
            change[0] = text

    def delete(self, item_id: str) -> None:
        self.changes[item_id] = [None, None, True]

    def clear(self) -> None:
        self.cleared = True
        self.changes = {}

    def lookup(self, item_id: str) -> tuple[bool, str | None]:
        """(known here, record); when not known here, Redis knows."""
        change = self.changes.get(item_id)
        if change is not None:
            return True, change[0]
        return self.cleared, None

    def merge(self, stored: list[tuple[str, str]]) -> list[str]:
        """The records in list order, given Redis's ``(id, record)`` in list order."""
        texts = []
        present = set()
        if not self.cleared:
            for item_id, text in stored:
                present.add(item_id)
                change = self.changes.get(item_id)
                if change is None:
                    texts.append(text)
                elif change[0] is not None and not change[2]:
                    texts.append(change[0])  # replaced in place
        added = sorted(
            (change[1], change[0])
            for item_id, change in self.changes.items()
            if change[0] is not None and (change[2] or item_id not in present)
        )
        return texts + [text for _, text in added]

    def add_ops(self, call: _Call, key: str) -> None:
        if self.cleared:
            call.op("del", [key], [])
        puts = []
        for item_id, (text, order, fresh) in self.changes.items():
            if text is None:
                if not self.cleared:
                    call.op("hdel", [key], [item_id])
            else:
                puts.append((order, item_id, text, fresh))
        # In order of appearance, so new items get their sequence numbers in that order.
        for _, item_id, text, fresh in sorted(puts, key=lambda put: put[0]):
            call.op("oput", [key], [item_id, text, "1" if fresh else "0"])


class _Outbox:
    """Changes to one VEN's outbox, over what Redis holds."""

    __slots__ = ("cleared", "popped", "pushed")

    def __init__(self) -> None:
        self.cleared = False
        self.popped: set[str] = set()  # Redis members taken in this block
        self.pushed: list[tuple[int, int, str]] = []  # (priority, order, item)

    def clear(self) -> None:
        self.cleared = True
        self.popped = set()
        self.pushed = []

    def entries(self, stored: list[tuple[str, float]]) -> list[tuple[tuple[Any, ...], Any, str]]:
        """``(sort key, what to remove, item)`` in pop order, from Redis's ``(member, score)``.

        Redis's items come before this block's at one priority: they were pushed earlier.
        """
        entries: list[tuple[tuple[Any, ...], Any, str]] = []
        if not self.cleared:
            for member, score in stored:
                if member not in self.popped:
                    entries.append(((int(score), 0, member), member, _outbox_text(member)))
        for pushed in self.pushed:
            entries.append(((pushed[0], 1, pushed[1]), pushed, pushed[2]))
        entries.sort(key=lambda entry: entry[0])
        return entries

    def remove(self, what: Any) -> None:
        if isinstance(what, str):
            self.popped.add(what)
        else:
            self.pushed.remove(what)

    def add_ops(self, call: _Call, key: str) -> None:
        if self.cleared:
            call.op("del", [key], [])
        for member in sorted(self.popped):
            call.op("zrem", [key], [member])
        for priority, _, text in sorted(self.pushed, key=lambda pushed: pushed[1]):
            call.op("push", [key], [str(priority), text])


class _Changes:
    """Writes not yet in Redis: a block's, or the one write of a call outside a block."""

    def __init__(self) -> None:
        self.counter = itertools.count()
        self.vens: dict[str, tuple[str | None, str]] = {}  # ven_id -> (fingerprint, record)
        self.events = _Ordered()
        self.delivered: dict[str, str | None] = {}  # None: removed
        self.responses: dict[str, dict[str, str]] = {}  # event_id -> field -> record
        self.responses_cleared: set[str] = set()  # event_ids whose stored responses go first
        self.outboxes: dict[str, _Outbox] = {}
        self.records: dict[tuple[str, str], _Ordered] = {}
        self.liveness: dict[str, dict[str, str] | None] = {}  # None: forgotten

    def order(self) -> int:
        return next(self.counter)

    def outbox(self, ven_id: str) -> _Outbox:
        return self.outboxes.setdefault(ven_id, _Outbox())

    def records_of(self, kind: str, ven_id: str) -> _Ordered:
        return self.records.setdefault((kind, ven_id), _Ordered())

    def touches(self) -> tuple[bool, bool]:
        """(writes data under the write lock, writes liveness)."""
        main = bool(
            self.vens
            or self.events.cleared
            or self.events.changes
            or self.delivered
            or self.responses
            or self.responses_cleared
            or self.outboxes
            or self.records
        )
        return main, bool(self.liveness)

    def add_ops(self, call: _Call, keys: _Keys) -> None:
        for ven_id, (fingerprint, text) in self.vens.items():
            call.op("ven", [keys.vens, keys.ven_fp, keys.fingerprints],
                    [ven_id, text, fingerprint or ""])
        self.events.add_ops(call, keys.events)
        for ven_id, delivered in self.delivered.items():
            if delivered is None:
                call.op("hdel", [keys.delivered], [ven_id])
            else:
                call.op("hset", [keys.delivered], [ven_id, delivered])
        for event_id in sorted(self.responses_cleared):
            call.op("del", [keys.responses(event_id)], [])
        for event_id, fields in self.responses.items():
            for field, text in fields.items():
                call.op("hset", [keys.responses(event_id)], [field, text])
        for ven_id, outbox in self.outboxes.items():
            outbox.add_ops(call, keys.outbox(ven_id))
        for (kind, ven_id), records in self.records.items():
            records.add_ops(call, keys.records(kind, ven_id))
        for ven_id, row in self.liveness.items():
            if row is None:
                call.op("unlive", keys.liveness(ven_id), [ven_id])
            else:
                call.op("live", keys.liveness(ven_id),
                        [ven_id, *(row.get(name, "") for name in _LIVE_FIELDS)])


class _Call:
    """The KEYS and ARGV of one run of the commit script."""

    def __init__(self, keys: _Keys, token: str, check_main: bool, check_live: bool,
                 lock: str | None = None):
        self.keys = [lock or keys.lock, keys.live_lock, keys.seq, keys.ven_blocks]
        self.index = {name: i + 1 for i, name in enumerate(self.keys)}
        self.args = [token, "1" if check_main else "0", "1" if check_live else "0"]

    def op(self, name: str, keys: list[str], values: list[str]) -> None:
        self.args.append(name)
        for key in keys:
            index = self.index.get(key)
            if index is None:
                self.keys.append(key)
                index = self.index[key] = len(self.keys)
            self.args.append(str(index))
        self.args.extend(values)


class _Block:
    """One thread's open atomic() block."""

    __slots__ = ("token", "pid", "queue", "depth", "renewed", "live_locked", "changes", "lock")

    def __init__(self, token: str, queue: threading.Lock | None, lock: str):
        self.token = token
        self.pid = os.getpid()
        self.queue = queue  # this process's lock, released when the block ends (VTN-wide only)
        self.lock = lock  # the write lock it holds: the VTN's, or its VEN's
        self.depth = 1
        self.renewed = time.monotonic()
        self.live_locked = False
        self.changes = _Changes()


# -- liveness rules inside a block ------------------------------------------------------------
# The same compare-and-set rules as the Lua scripts above, applied to a block's copy of a row
# (a dict of the row's text fields) and written when the block commits.


def _lifetime_ms(now: datetime, expires_at: datetime) -> int:
    """A nonce's time to live in Redis (its PX), in whole milliseconds."""
    return int((expires_at - now).total_seconds() * 1000)


def _seen(row: dict[str, str], now: str, offline_at: tuple[str, str],
          lease: tuple[str, str]) -> tuple[dict[str, str], int | None]:
    row = dict(row, last_seen=now, offline_at=offline_at[0], offline_us=offline_at[1])
    if row.get("state") == "online":
        return row, None
    epoch = int(row.get("epoch") or 0) + 1
    row.update(state="online", epoch=str(epoch), p_kind="online", p_epoch=str(epoch),
               p_lease=lease[0], p_lease_us=lease[1])
    return row, epoch


def _claim(row: dict[str, str], epoch: int, now_us: str,
           lease: tuple[str, str]) -> tuple[dict[str, str], int | None]:
    if (row.get("state") != "online" or row.get("epoch") != str(epoch)
            or int(row["offline_us"]) > int(now_us)):
        return row, None
    row = dict(row, state="offline", epoch=str(epoch + 1), p_kind="offline",
               p_epoch=str(epoch + 1), p_lease=lease[0], p_lease_us=lease[1])
    return row, epoch + 1


def _complete(row: dict[str, str], epoch: int) -> dict[str, str]:
    if row.get("p_epoch") != str(epoch):
        return row
    return {name: value for name, value in row.items() if not name.startswith("p_")}


def _reclaim(row: dict[str, str], epoch: int, now_us: str,
             lease: tuple[str, str]) -> dict[str, str] | None:
    if row.get("p_epoch") != str(epoch) or int(row["p_lease_us"]) > int(now_us):
        return None
    return dict(row, p_lease=lease[0], p_lease_us=lease[1])


# -- the store --------------------------------------------------------------------------------


class RedisStore:
    """A :class:`~flask_openadr.store.base.Store` in Redis, shared by every process that opens
    the same server, database and prefix.

    :param url: the redis-py URL (without this store's own options).
    :param prefix: the start of every key.
    :param lock_lease: seconds an atomic() block's lock lasts unless renewed.
    :param lock_wait: seconds a writer waits for another block before :class:`StoreError`.
    :param uri: the URI the store was opened with, for messages (the password is never shown).
    """

    #: Shared by every process that opens the same URI (see :attr:`Store.single_process`).
    single_process: ClassVar[bool] = False

    def __init__(self, url: str, *, prefix: str = DEFAULT_PREFIX,
                 lock_lease: float = DEFAULT_LOCK_LEASE, lock_wait: float = DEFAULT_LOCK_WAIT,
                 uri: str | None = None):
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        self._redis = redis
        self.uri = uri or url
        self._name = redact(self.uri)
        self.prefix = prefix
        self.lock_lease = lock_lease
        self.lock_wait = lock_wait
        self._lease_ms = max(1, int(lock_lease * 1000))
        self._keys = _Keys(prefix)
        self._url = url
        self._pool_options: dict[str, Any] = {
            **_SOCKET_DEFAULTS,  # the URL's own values win over these
            "decode_responses": True,
            # IDs with lone surrogates still round trip (records are ASCII JSON anyway).
            "encoding_errors": "surrogatepass",
            "protocol": 2,
            # Never resend: a write whose reply was lost may have been applied.
            "retry": Retry(NoBackoff(), 0),
        }
        self._check_options()
        self._pid = os.getpid()
        self._lock = threading.Lock()  # guards _clients in this process
        self._queue = threading.Lock()  # this process's threads take turns at atomic() here
        # pid -> client. Clients of other pids were inherited over fork and are never used.
        self._clients: dict[int, Any] = {}
        self._local = threading.local()

    def __repr__(self) -> str:
        return f"RedisStore({self._name!r})"

    # -- connections ---------------------------------------------------------------------------

    def _check_options(self) -> None:
        """Refuse unknown or malformed redis-py options now, not at the first request."""
        try:
            pool = self._redis.ConnectionPool.from_url(self._url, **self._pool_options)
            pool.connection_class(**pool.connection_kwargs)
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(
                f"the store URI {self._name!r} has an option redis-py does not take: {exc}"
            ) from exc

    def _process_locks(self) -> tuple[threading.Lock, threading.Lock]:
        # A child of fork() gets these locks in whatever state the parent's threads left them;
        # fresh ones cannot deadlock on a thread that does not exist here.
        pid = os.getpid()
        if pid != self._pid:
            self._lock = threading.Lock()
            self._queue = threading.Lock()
            self._pid = pid
        return self._lock, self._queue

    def _client(self) -> Any:
        """This process's client, with a connection pool of its own."""
        pid = os.getpid()
        client = self._clients.get(pid)
        if client is None:
            lock, _ = self._process_locks()
            with lock:
                client = self._clients.get(pid)
                if client is None:
                    pool = self._redis.ConnectionPool.from_url(self._url, **self._pool_options)
                    client = self._clients[pid] = self._redis.Redis(connection_pool=pool)
        return client

    def close(self) -> None:
        """Disconnect this process's connections (the store reconnects if used again).
        Connections inherited from a parent process are left alone."""
        lock, _ = self._process_locks()
        with lock:
            client = self._clients.pop(os.getpid(), None)
        if client is not None:
            with self._errors():
                client.connection_pool.disconnect()

    def maintain(self, now: datetime | None = None) -> None:
        """Nothing to do (see :meth:`~flask_openadr.store.base.Store.maintain`)."""

    def create_schema(self) -> None:
        """Nothing to create: Redis makes keys when they are first written."""

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """Turn driver errors into StoreError naming the store (never its password)."""
        try:
            yield
        except self._redis.exceptions.DataError as exc:
            # redis-py refused an argument (an ID that is None, say): a bug, not an outage.
            raise TypeError(f"Redis store {self._name}: {exc}") from exc
        except self._redis.exceptions.RedisError as exc:
            raise StoreError(f"Redis store {self._name}: {type(exc).__name__}: {exc}") from exc

    def _call(self, command: str, *args: Any, **options: Any) -> Any:
        with self._errors():
            return getattr(self._client(), command)(*args, **options)

    def _run(self, script: _Script, keys: list[str], args: list[str]) -> Any:
        client = self._client()
        with self._errors():
            try:
                return client.evalsha(script.sha, len(keys), *keys, *args)
            except self._redis.exceptions.NoScriptError:
                # A new or restarted server: EVAL sends the source, and caches it there.
                return client.eval(script.source, len(keys), *keys, *args)

    def _until_unlocked(self, attempt: Callable[[], Any], locked: Callable[[Any], bool]) -> Any:
        """Run a write script until no other block holds the lock it checks."""
        deadline = time.monotonic() + self.lock_wait
        delay = 0.0005
        while True:
            result = attempt()
            if not locked(result):
                return result
            delay = self._pause(delay, deadline)

    def _waited(self) -> StoreError:
        return StoreError(
            f"Redis store {self._name}: waited {self.lock_wait:g} s for another atomic() block "
            "to finish; if blocks really take that long, raise lock_wait in the store URI"
        )

    def _pause(self, delay: float, deadline: float) -> float:
        now = time.monotonic()
        if now >= deadline:
            raise self._waited()
        time.sleep(min(delay * random.uniform(0.5, 1.5), deadline - now))
        return min(delay * 2, 0.01)

    # -- transactions --------------------------------------------------------------------------

    def _block(self) -> _Block | None:
        """This thread's open block, its locks renewed when a third of the lease has passed."""
        block: _Block | None = getattr(self._local, "block", None)
        if block is None:
            return None
        if block.pid != os.getpid():
            # Forked inside a block: the block is the parent's, not this process's.
            self._local.block = None
            return None
        if time.monotonic() - block.renewed > self.lock_lease / 3:
            locks = self._locks_of(block)
            keys = locks + ([self._keys.ven_blocks] if block.queue is None else [])
            if self._run(RENEW, keys, [block.token, str(self._lease_ms), str(len(locks))]) != 1:
                raise self._lost()
            block.renewed = time.monotonic()
        return block

    def _lost(self) -> StoreError:
        return StoreError(
            f"Redis store {self._name}: this atomic() block lost its lock (it outlived "
            f"lock_lease={self.lock_lease:g} s, or Redis restarted); nothing of it was written"
        )

    def _locks_of(self, block: _Block) -> list[str]:
        return [block.lock] + ([self._keys.live_lock] if block.live_locked else [])

    def _take(self, key: str, token: str, deadline: float) -> None:
        delay = 0.0005
        while not self._call("set", key, token, nx=True, px=self._lease_ms):
            delay = self._pause(delay, deadline)

    def _take_script(self, script: _Script, keys: list[str], token: str,
                     deadline: float) -> None:
        delay = 0.0005
        while self._run(script, keys, [token, str(self._lease_ms)]) != 1:
            delay = self._pause(delay, deadline)

    def _live_block(self) -> _Block | None:
        """This thread's block, holding the liveness lock too (taken on first use)."""
        block = self._block()
        if block is not None and not block.live_locked:
            self._take(self._keys.live_lock, block.token, time.monotonic() + self.lock_wait)
            # Taken with a full lease, it outlasts the write lock, whose renewals extend both.
            block.live_locked = True
        return block

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        """See :meth:`flask_openadr.store.base.Store.session`; nothing to hold here."""
        yield

    @contextlib.contextmanager
    def atomic(self, ven_id: str | None = None) -> Iterator[None]:
        """See :meth:`flask_openadr.store.base.Store.atomic` and the module docstring. Every
        block with ``ven_id`` takes that VEN's lock and a place among the open per-VEN blocks,
        which a VTN-wide block (the VTN's write lock) waits for; see the module docstring.

        The outermost block holds the write lock from its start to its end; its writes reach
        Redis in one script at the end, which checks the lock is still the block's. A block
        that outlives ``lock_lease`` without a store call, so that its lock expired and another
        writer may have gone ahead, raises :class:`StoreError` at its end and writes nothing.
        """
        block = self._block()
        if block is not None:
            block.depth += 1
            try:
                yield
            finally:
                block.depth -= 1
            return
        block = self._begin(ven_id)
        self._local.block = block
        try:
            yield
        except BaseException:
            self._local.block = None
            try:
                self._release(block)
            finally:
                if block.queue is not None:
                    block.queue.release()
            raise
        self._local.block = None
        try:
            self._commit_block(block)
        finally:
            if block.queue is not None:
                block.queue.release()

    def _begin(self, ven_id: str | None = None) -> _Block:
        deadline = time.monotonic() + self.lock_wait
        token = uuid.uuid4().hex
        keys = self._keys
        if ven_id is not None:
            # A per-VEN block: the VEN's own lock, and a place among the open per-VEN blocks
            # (which a VTN-wide block waits for). No process-wide queue: threads serving other
            # VENs need not take turns.
            lock = keys.ven_lock(ven_id)
            self._take_script(TAKE_VEN, [keys.lock, lock, keys.ven_blocks, keys.vtn_waiting],
                              token, deadline)
            return _Block(token, None, lock)
        _, queue = self._process_locks()
        if not queue.acquire(timeout=self.lock_wait):
            raise self._waited()
        try:
            self._take_script(TAKE_VTN, [keys.lock, keys.ven_blocks, keys.vtn_waiting], token,
                              deadline)
        except BaseException:
            queue.release()
            raise
        return _Block(token, queue, keys.lock)

    def _commit_block(self, block: _Block) -> None:
        try:
            result = self._commit(block.changes, block.token, True, block.live_locked,
                                  block.lock)
        except BaseException:
            self._release(block)  # a network error: the script may not have run
            raise
        if result != 1:
            raise self._lost()

    def _release(self, block: _Block) -> None:
        """Let go of a block's locks, if Redis can be reached (else they expire)."""
        locks = self._locks_of(block)
        keys = locks + ([self._keys.ven_blocks] if block.queue is None else [])
        with contextlib.suppress(StoreError):
            self._run(RELEASE, keys, [block.token, str(len(locks))])

    def _commit(self, changes: _Changes, token: str, check_main: bool, check_live: bool,
                lock: str | None = None) -> int:
        call = _Call(self._keys, token, check_main, check_live, lock)
        changes.add_ops(call, self._keys)
        return int(self._run(COMMIT, call.keys, call.args))

    def _write(self, change: Callable[[_Changes], None], *, liveness: bool = False) -> None:
        """Make one change: into the block when one is open, else at once in Redis."""
        block = self._live_block() if liveness else self._block()
        if block is not None:
            change(block.changes)
            return
        changes = _Changes()
        change(changes)
        main, live = changes.touches()
        self._until_unlocked(lambda: self._commit(changes, "", main, live),
                             lambda result: result == 0)

    # -- VENs ----------------------------------------------------------------------------------
    # Values are validated and encoded before anything is sent, so a refused value writes
    # nothing (and inside a block, leaves the block's changes as they were).

    def get_ven(self, ven_id: str) -> VenRecord | None:
        block = self._block()
        if block is not None and ven_id in block.changes.vens:
            ven: VenRecord = serialize.loads(block.changes.vens[ven_id][1])
            return ven
        text = self._call("hget", self._keys.vens, ven_id)
        return None if text is None else serialize.loads(text)

    def get_ven_by_fingerprint(self, fingerprint: str) -> VenRecord | None:
        wanted = normalize_fingerprint(fingerprint)
        if wanted is None:
            return None
        block = self._block()
        if block is None:
            text = self._run(VEN_BY_FINGERPRINT, [self._keys.fingerprints, self._keys.vens],
                             [wanted])
            return None if text is None else serialize.loads(text)
        changed = block.changes.vens
        members = self._call("zrangebylex", self._keys.fingerprints, f"[{wanted}:", f"({wanted};")
        ven_ids = {member[len(wanted) + 1:] for member in members}
        ven_ids = {ven_id for ven_id in ven_ids if ven_id not in changed}
        ven_ids.update(ven_id for ven_id, (key, _) in changed.items() if key == wanted)
        return self.get_ven(min(ven_ids)) if ven_ids else None

    def put_ven(self, ven: VenRecord) -> None:
        ven_id = ven_id_of(ven)
        key = normalize_fingerprint(ven.get("fingerprint"))
        text = serialize.dumps(ven)
        self._write(lambda changes: changes.vens.__setitem__(ven_id, (key, text)))

    def list_vens(self) -> list[VenRecord]:
        stored = self._call("hgetall", self._keys.vens)
        block = self._block()
        if block is not None:
            stored.update((ven_id, text) for ven_id, (_, text) in block.changes.vens.items())
        return [serialize.loads(text) for _, text in sorted(stored.items())]

    # -- events --------------------------------------------------------------------------------

    def put_event(self, event: dict[str, Any]) -> None:
        event_id = event_id_of(event)
        text = serialize.dumps(event)
        self._write(lambda changes: changes.events.put(event_id, text, changes.order()))

    def get_event(self, event_id: str) -> dict[str, Any] | None:
        block = self._block()
        if block is not None:
            known, text = block.changes.events.lookup(event_id)
            if known:
                return None if text is None else serialize.loads(text)
        value = self._call("hget", self._keys.events, event_id)
        return None if value is None else serialize.loads(_without_seq(value))

    def get_events(self, event_ids: list[str]) -> dict[str, dict[str, Any]]:
        unique = list(dict.fromkeys(event_ids))
        texts: dict[str, str | None] = {}
        for start in range(0, len(unique), MANY_CHUNK):
            chunk = unique[start:start + MANY_CHUNK]
            stored = self._call("hmget", self._keys.events, chunk)
            texts.update((event_id, None if value is None else _without_seq(value))
                         for event_id, value in zip(chunk, stored))
        block = self._block()
        if block is not None:
            # The block's own writes win over what Redis holds, as in get_event.
            for event_id in unique:
                known, text = block.changes.events.lookup(event_id)
                if known:
                    texts[event_id] = text
        return {event_id: serialize.loads(text) for event_id, text in texts.items()
                if text is not None}

    def list_events(self) -> list[dict[str, Any]]:
        return [serialize.loads(text) for text in self._ordered(self._keys.events, self._events)]

    def delete_event(self, event_id: str) -> None:
        self._write(lambda changes: changes.events.delete(event_id))

    @staticmethod
    def _events(changes: _Changes) -> _Ordered:
        return changes.events

    def _ordered(self, key: str, changes_of: Callable[[_Changes], _Ordered]) -> list[str]:
        stored = _in_seq_order(self._call("hgetall", key))
        block = self._block()
        if block is None:
            return [text for _, text in stored]
        return changes_of(block.changes).merge(stored)

    # -- delivery state ------------------------------------------------------------------------

    def get_delivered(self, ven_id: str) -> dict[str, int]:
        block = self._block()
        if block is not None and ven_id in block.changes.delivered:
            text = block.changes.delivered[ven_id]
        else:
            text = self._call("hget", self._keys.delivered, ven_id)
        return {} if text is None else serialize.loads(text)

    def set_delivered(self, ven_id: str, delivered: dict[str, int]) -> None:
        if not isinstance(delivered, dict):
            raise TypeError(f"delivered must be a dict of event_id -> int, got {delivered!r}")
        text = serialize.dumps(delivered) if delivered else None
        self._write(lambda changes: changes.delivered.__setitem__(ven_id, text))

    # -- event responses -----------------------------------------------------------------------

    def get_delivered_many(self, ven_ids: list[str]) -> dict[str, dict[str, Any]]:
        unique = list(dict.fromkeys(ven_ids))
        texts: dict[str, str | None] = {}
        for start in range(0, len(unique), MANY_CHUNK):
            chunk = unique[start:start + MANY_CHUNK]
            texts.update(zip(chunk, self._call("hmget", self._keys.delivered, chunk)))
        block = self._block()
        if block is not None:
            for ven_id in unique:
                if ven_id in block.changes.delivered:
                    texts[ven_id] = block.changes.delivered[ven_id]
        return {ven_id: {} if (text := texts[ven_id]) is None else serialize.loads(text)
                for ven_id in ven_ids}

    def set_delivered_many(self, delivered: dict[str, dict[str, Any]]) -> None:
        for value in delivered.values():
            check_delivered(value)
        texts = {ven_id: serialize.dumps(value) if value else None
                 for ven_id, value in delivered.items()}
        if texts:
            self._write(lambda changes: changes.delivered.update(texts))

    def put_event_response(self, response: EventResponseRecord) -> None:
        ven_id, event_id, modification_number = event_response_key(response)
        received_at_text(response)  # validates
        text = serialize.dumps(response)
        field = f"{modification_number}:{ven_id}"
        self._write(
            lambda changes: changes.responses.setdefault(event_id, {}).__setitem__(field, text)
        )

    def delete_event_responses(self, event_id: str) -> None:
        def clear(changes: _Changes) -> None:
            changes.responses_cleared.add(event_id)
            changes.responses.pop(event_id, None)

        self._write(clear)

    def list_event_responses(self, event_id: str) -> list[EventResponseRecord]:
        stored = self._call("hgetall", self._keys.responses(event_id))
        block = self._block()
        if block is not None:
            if event_id in block.changes.responses_cleared:
                stored = {}
            stored.update(block.changes.responses.get(event_id, {}))
        responses = [serialize.loads(text) for text in stored.values()]
        # The SQL backends' order: received_at with missing ones first, then the key.
        responses.sort(key=lambda r: (
            r.get("received_at") is not None,
            received_at_text(r) or "",
            r["ven_id"],
            r["modification_number"],
        ))
        return responses

    # -- outbox --------------------------------------------------------------------------------

    def push_outbox(self, ven_id: str, item: OutboxItem) -> None:
        priority = outbox_priority(item)
        if abs(priority) > _MAX_PRIORITY:
            raise ValueError(
                f"an outbox item's priority must be between -2**53 and 2**53 in the Redis "
                f"store, got {priority!r}"
            )
        text = serialize.dumps(item)
        self._write(lambda changes: changes.outbox(ven_id).pushed.append(
            (priority, changes.order(), text)))

    def pop_outbox(self, ven_id: str, max_priority: int | None = None) -> OutboxItem | None:
        check_max_priority(max_priority)
        if max_priority is not None and max_priority < -_MAX_PRIORITY:
            return None  # below every priority the store takes
        block = self._block()
        if block is None:
            bound = "+inf" if max_priority is None else str(max_priority)
            keys = [self._keys.lock, self._keys.outbox(ven_id), self._keys.ven_lock(ven_id)]
            result = self._until_unlocked(lambda: self._run(POP_OUTBOX, keys, [bound]),
                                          lambda result: result[0] == 0)
            return serialize.loads(_outbox_text(result[1])) if len(result) > 1 else None
        outbox = block.changes.outbox(ven_id)
        for (priority, _, _), what, text in outbox.entries(self._stored_outbox(ven_id)):
            if max_priority is None or priority <= max_priority:
                outbox.remove(what)
                item: OutboxItem = serialize.loads(text)
                return item
            break  # entries are in priority order: none after this one qualifies either
        return None

    def _stored_outbox(self, ven_id: str) -> list[tuple[str, float]]:
        entries: list[tuple[str, float]] = self._call(
            "zrange", self._keys.outbox(ven_id), 0, -1, withscores=True)
        return entries

    def list_outbox(self, ven_id: str) -> list[OutboxItem]:
        stored = self._stored_outbox(ven_id)
        block = self._block()
        if block is None:
            return [serialize.loads(_outbox_text(member)) for member, _ in stored]
        outbox = block.changes.outboxes.get(ven_id) or _Outbox()
        return [serialize.loads(text) for _, _, text in outbox.entries(stored)]

    def clear_outbox(self, ven_id: str) -> None:
        self._write(lambda changes: changes.outbox(ven_id).clear())

    def get_poll_state(self, ven_id: str, kind: str) -> PollState:
        """See :meth:`flask_openadr.store.base.Store.get_poll_state`: outside a block, one
        pipelined round trip (not MULTI: three separate reads would not be atomic either); an
        empty poll went from about 1.0 to 0.9 ms of worker CPU (docs/benchmarks.rst)."""
        self._record_key(kind, ven_id)
        if self._block() is not None:  # the block's own writes must show
            return read_poll_state(self, ven_id, kind)
        with self._errors():
            pipeline = self._client().pipeline(transaction=False)
            pipeline.hget(self._keys.delivered, ven_id)
            pipeline.hgetall(self._keys.records(kind, ven_id))
            pipeline.zrange(self._keys.outbox(ven_id), 0, -1)
            delivered, records, outbox = pipeline.execute()
        return {"delivered": {} if delivered is None else serialize.loads(delivered),
                "records": [serialize.loads(text) for _, text in _in_seq_order(records)],
                "outbox": [serialize.loads(_outbox_text(member)) for member in outbox]}

    # -- records -------------------------------------------------------------------------------

    def put_record(self, kind: str, ven_id: str, key: str, record: dict[str, Any]) -> None:
        self._record_key(kind, ven_id, key)
        if not isinstance(record, dict):
            raise TypeError(f"a record must be a dict, got {record!r}")
        text = serialize.dumps(record)
        self._write(
            lambda changes: changes.records_of(kind, ven_id).put(key, text, changes.order())
        )

    def get_record(self, kind: str, ven_id: str, key: str) -> dict[str, Any] | None:
        self._record_key(kind, ven_id, key)
        block = self._block()
        if block is not None and (kind, ven_id) in block.changes.records:
            known, text = block.changes.records[(kind, ven_id)].lookup(key)
            if known:
                return None if text is None else serialize.loads(text)
        value = self._call("hget", self._keys.records(kind, ven_id), key)
        return None if value is None else serialize.loads(_without_seq(value))

    def list_records(self, kind: str, ven_id: str) -> list[dict[str, Any]]:
        self._record_key(kind, ven_id)
        texts = self._ordered(self._keys.records(kind, ven_id),
                              lambda changes: changes.records_of(kind, ven_id))
        return [serialize.loads(text) for text in texts]

    def delete_record(self, kind: str, ven_id: str, key: str) -> None:
        self._record_key(kind, ven_id, key)
        self._write(lambda changes: changes.records_of(kind, ven_id).delete(key))

    def clear_records(self, kind: str, ven_id: str) -> None:
        self._record_key(kind, ven_id)
        self._write(lambda changes: changes.records_of(kind, ven_id).clear())

    @staticmethod
    def _record_key(kind: Any, ven_id: Any, key: Any = "") -> None:
        _check_text(kind, "a record's kind")
        _check_text(ven_id, "a record's ven_id")
        _check_text(key, "a record's key")

    # -- liveness ------------------------------------------------------------------------------

    def _live_row(self, block: _Block, ven_id: str) -> dict[str, str]:
        """The block's copy of a liveness row ({} when there is none)."""
        rows = block.changes.liveness
        if ven_id not in rows:
            rows[ven_id] = self._call("hgetall", self._keys.live(ven_id)) or None
        return dict(rows[ven_id] or {})

    def _live_script(self, script: _Script, ven_id: str, args: list[str],
                     more_keys: tuple[str, ...] = ()) -> list[Any]:
        keys = [self._keys.live_lock, *self._keys.liveness(ven_id), *more_keys]
        result: list[Any] = self._until_unlocked(
            lambda: self._run(script, keys, [ven_id, *args]), lambda result: result[0] == 0)
        return result

    def record_seen(self, ven_id: str, now: datetime, offline_at: datetime,
                    lease_until: datetime, nonce: str | None = None,
                    nonce_expires_at: datetime | None = None) -> Transition | None:
        _check_text(ven_id, "ven_id")
        now_text, now_us = _instant(now, "now")
        offline = _instant(offline_at, "offline_at")
        lease = _instant(lease_until, "lease_until")
        check_seen_nonce(nonce, now, nonce_expires_at)
        block = self._live_block()
        if block is not None:
            # The block's writes wait for its end, so the nonce is taken at once, first: a
            # replay then changes nothing, and a block that fails later has used it up.
            if nonce is not None and nonce_expires_at is not None \
                    and not self.remember_nonce(nonce, now, nonce_expires_at):
                raise NonceUsed(nonce)
            row, epoch = _seen(self._live_row(block, ven_id), now_text, offline, lease)
            block.changes.liveness[ven_id] = row
        elif nonce is not None and nonce_expires_at is not None:
            lifetime_ms = max(_lifetime_ms(now, nonce_expires_at), 0)
            expires_us = _instant(nonce_expires_at, "nonce_expires_at")[1]
            result = self._live_script(
                RECORD_SEEN_NONCE, ven_id,
                [now_text, *offline, *lease, now_us, expires_us, str(lifetime_ms)],
                (self._keys.prefix + "nonce:" + nonce,))
            if result[0] == 2:
                raise NonceUsed(nonce)
            epoch = int(result[2]) if len(result) > 1 else None
        else:
            result = self._live_script(RECORD_SEEN, ven_id, [now_text, *offline, *lease])
            epoch = int(result[2]) if len(result) > 1 else None
        return None if epoch is None else {"ven_id": ven_id, "kind": "online", "epoch": epoch}

    def due_offline(self, now: datetime, limit: int) -> list[tuple[str, int]]:
        _, now_us = _instant(now, "now")
        _check_int(limit, "limit", 0)
        block = self._live_block()
        changed = block.changes.liveness if block is not None else {}
        found = self._run(DUE_OFFLINE, [self._keys.online],
                          [now_us, str(limit + len(changed)), self._keys.live_prefix])
        due = [
            (int(found[i + 2]), found[i], int(found[i + 1]))
            for i in range(0, len(found), 3)
            if found[i] not in changed
        ]
        for ven_id, row in changed.items():
            if row and row.get("state") == "online" and int(row["offline_us"]) <= int(now_us):
                due.append((int(row["offline_us"]), ven_id, int(row["epoch"])))
        due.sort()
        return [(ven_id, epoch) for _, ven_id, epoch in due[:limit]]

    def claim_offline(self, ven_id: str, epoch: int, now: datetime,
                      lease_until: datetime) -> Transition | None:
        _check_text(ven_id, "ven_id")
        _check_int(epoch, "epoch")
        _, now_us = _instant(now, "now")
        lease = _instant(lease_until, "lease_until")
        block = self._live_block()
        if block is not None:
            row = self._live_row(block, ven_id)
            row, won = _claim(row, epoch, now_us, lease) if row else (row, None)
            if won is not None:
                block.changes.liveness[ven_id] = row
        else:
            result = self._live_script(CLAIM_OFFLINE, ven_id, [str(epoch), now_us, *lease])
            won = int(result[2]) if len(result) > 1 else None
        return None if won is None else {"ven_id": ven_id, "kind": "offline", "epoch": won}

    def complete_transition(self, ven_id: str, epoch: int) -> None:
        _check_text(ven_id, "ven_id")
        _check_int(epoch, "epoch")
        block = self._live_block()
        if block is not None:
            row = self._live_row(block, ven_id)
            if row:
                block.changes.liveness[ven_id] = _complete(row, epoch)
            return
        self._live_script(COMPLETE_TRANSITION, ven_id, [str(epoch)])

    def stale_transitions(self, now: datetime, limit: int) -> list[Transition]:
        _, now_us = _instant(now, "now")
        _check_int(limit, "limit", 0)
        block = self._live_block()
        changed = block.changes.liveness if block is not None else {}
        found = self._run(STALE_TRANSITIONS, [self._keys.pending],
                          [now_us, str(limit + len(changed)), self._keys.live_prefix])
        stale = [
            (int(found[i + 3]), found[i], found[i + 1], int(found[i + 2]))
            for i in range(0, len(found), 4)
            if found[i] not in changed
        ]
        for ven_id, row in changed.items():
            if row and row.get("p_epoch") and int(row["p_lease_us"]) <= int(now_us):
                stale.append((int(row["p_lease_us"]), ven_id, row["p_kind"], int(row["p_epoch"])))
        stale.sort()
        return [
            {"ven_id": ven_id, "kind": kind, "epoch": epoch}
            for _, ven_id, kind, epoch in stale[:limit]
        ]

    def reclaim_transition(self, ven_id: str, epoch: int, now: datetime,
                           lease_until: datetime) -> bool:
        _check_text(ven_id, "ven_id")
        _check_int(epoch, "epoch")
        _, now_us = _instant(now, "now")
        lease = _instant(lease_until, "lease_until")
        block = self._live_block()
        if block is not None:
            row = self._live_row(block, ven_id)
            reclaimed = _reclaim(row, epoch, now_us, lease) if row else None
            if reclaimed is not None:
                block.changes.liveness[ven_id] = reclaimed
            return reclaimed is not None
        result = self._live_script(RECLAIM_TRANSITION, ven_id, [str(epoch), now_us, *lease])
        return bool(result[1] == 1)

    def remember_nonce(self, nonce: str, now: datetime, expires_at: datetime) -> bool:
        check_nonce(nonce, now, expires_at)
        now_us, expires_us = _instant(now, "now")[1], _instant(expires_at, "expires_at")[1]
        lifetime_ms = _lifetime_ms(now, expires_at)
        if lifetime_ms <= 0:
            return True  # expired on arrival: nothing to remember
        # One script (Redis runs it with nothing in between), outside any atomic() block: it
        # takes effect at once. Redis drops the key when it expires, so nothing is purged here.
        stored = self._run(REMEMBER_NONCE, [self._keys.prefix + "nonce:" + nonce],
                           [now_us, expires_us, str(lifetime_ms)])
        return bool(stored == 1)

    def get_liveness(self, ven_id: str) -> Liveness | None:
        block = self._live_block()
        if block is not None:
            row = self._live_row(block, ven_id)
        else:
            row = self._call("hgetall", self._keys.live(ven_id))
        return _liveness(ven_id, row) if row else None

    def list_liveness(self) -> dict[str, Liveness]:
        block = self._live_block()
        found = self._run(LIST_LIVENESS, [self._keys.live_index], [self._keys.live_prefix])
        rows: dict[str, dict[str, str] | None] = {
            found[i]: dict(zip(found[i + 1][::2], found[i + 1][1::2]))
            for i in range(0, len(found), 2)
        }
        if block is not None:
            rows.update(block.changes.liveness)
        return {ven_id: _liveness(ven_id, row) for ven_id, row in sorted(rows.items()) if row}

