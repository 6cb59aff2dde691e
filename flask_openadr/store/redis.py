"""The Redis store (``redis://``, ``rediss://``): one VTN across any number of hosts, via redis-py.

Install it with ``pip install "flask-openadr[redis]"``. The URI is redis-py's, plus three options
of this store::

    redis://[[username]:password@]host[:port][/db][?option=value&...]
    rediss://...                        the same over TLS (ssl_ca_certs=..., ssl_certfile=...)

    redis://127.0.0.1:6379/0?prefix=myvtn:&socket_timeout=2

- ``prefix`` (default ``openadr:``): every key this store writes starts with it, so several VTNs
  (and test runs) can share one server and one database;
- ``lock_lease`` (seconds, default 10): how long the lock of a transaction lasts without being
  renewed; it bounds how long a crashed process blocks the others;
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

:class:`RedisStore` is :class:`~flask_openadr.store.rules.RulesStore`, which holds every rule of
the store, on :class:`RedisBackend`, plus two fast paths on the path of every VEN message
(:meth:`RedisStore.record_seen` and :meth:`RedisStore.get_poll_state`, one script each).

Keys (``P`` is the prefix; ``T`` a table of :mod:`~flask_openadr.store.rules`, ``I`` an index)::

    P layout                    the layout of the keys below ("1"); an older layout is refused
    P t:T                       hash: a row's key -> "VERSION:VALUE"
    P t:T:part                  hash: key -> its partition, for rows not in the partition ""
    P p:T:PARTITION             sorted set: the partition's keys, scored by first put (scan order)
    P rows:seq                  the counter those scores come from
    P i:I                       sorted set, all scores 0: "SCORE NUL member", in lexical order
    P i:I:at                    hash: member -> its score
    P lock                      the lock of a VTN-wide block (a token, with a lease)
    P lock:ven:VEN_ID           the lock of a per-VEN block
    P lock:vens                 sorted set: tokens of open per-VEN blocks, by lease end
    P lock:waiting              set while a VTN-wide block waits for per-VEN blocks

An index member is filed as its score, a NUL and the member, so the lexical order of a sorted
set of equal scores is the order of (score, member) that ``index_range`` returns (scores hold no
NUL), and a range up to a score is one ``ZRANGEBYLEX``. Rows, partitions and index entries are
removed with what they hold: Redis drops a hash or sorted set when its last field goes.

**Transactions.** A block buffers its writes in this process; its reads see them laid over
what Redis holds. Its lock is taken at its first read from Redis (``SET NX PX`` of a random
token, by a script): the VEN's lock and a place in ``P lock:vens`` for a per-VEN block, which
waits for a VTN-wide one; ``P lock`` once no per-VEN block is open for a VTN-wide block, which
meanwhile sets ``P lock:waiting`` so that new per-VEN blocks wait behind it. At its end one
commit script checks the lock still holds the block's token (a block that outlived its lease
writes nothing), re-checks the block's compare-and-sets against what Redis holds now (a nonce
another VEN's block took first: :class:`~flask_openadr.store.rules.Conflict`, nothing written),
applies every write and releases the lock. A block that reads nothing from Redis (a put, a push)
takes no lock: its commit script checks that no block it must wait for is open, and tries again
shortly after if one is. So a block's writes appear all at once or not at all, and one that
raised, outlived its lease, or whose process died writes nothing.

Each process has its own connection pool (found by ``os.getpid()``): a worker forked from a
gunicorn master that opened the store never uses the master's connections.
"""
from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import random
import threading
import time
import uuid
from datetime import datetime
from typing import Any, ClassVar, Iterable, Iterator
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ..errors import ConfigurationError, StoreError
from . import redact, serialize
from .base import MANY_CHUNK, NonceUsed, PollState, Transition, check_seen_nonce, utc_text
from .rules import (
    DELIVERED, DUE_OFFLINE, LIVENESS, NONCE_EXPIRY, NONCES, OUTBOX, RECORDS, STALE, Conflict, Row,
    RulesStore, _key,
)

__all__ = ["RedisBackend", "RedisStore", "from_uri"]

DEFAULT_PREFIX = "openadr:"
DEFAULT_LOCK_LEASE = 10.0
DEFAULT_LOCK_WAIT = 30.0
#: The layout of the keys (``P layout``). Keys of the layout before it (no ``P layout``, rows
#: in ``P vens``, ``P events``, ...) are refused, never read.
LAYOUT = "1"
# Keys only the layout before this one wrote, under the prefix.
_OLD_LAYOUT_KEYS = ("vens", "events", "delivered", "seq", "liveness", "ven_fp", "fingerprints")

# Options of this store, not redis-py's.
_OWN_OPTIONS = ("prefix", "lock_lease", "lock_wait")
# redis-py options this store sets itself: its replies must be text, RESP2-shaped, and a write
# must never be sent twice (a retried commit could apply a block a second time).
_REFUSED_OPTIONS = (
    "decode_responses",
    "encoding",
    "encoding_errors",
    "protocol",
    "retry_on_timeout",
    "retry_on_error",
)
_SOCKET_DEFAULTS = {"socket_timeout": 5.0, "socket_connect_timeout": 5.0}


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
# Scripts name the keys of rows, partitions and indexes from the prefix they are given (the
# store needs one Redis primary, not a cluster, so keys need not all be declared).

# The rows and indexes, as the commit script and the fast paths write them.
_ROWS = """
local function version_of(raw)
  if not raw then return 0 end
  return tonumber(string.match(raw, '^(%d+):'))
end
local function value_of(raw)
  return string.sub(raw, string.find(raw, ':', 1, true) + 1)
end
-- Take a row out of its partition (its key stays in the table's hash).
local function unfile(P, tbl, key)
  local parts = P .. 't:' .. tbl .. ':part'
  local part = redis.call('HGET', parts, key)
  if part then redis.call('HDEL', parts, key) else part = '' end
  redis.call('ZREM', P .. 'p:' .. tbl .. ':' .. part, key)
end
-- Put a row ``puts`` versions on; ``fresh``: it was deleted first, so it starts again at
-- version 0 and goes last in its partition. ``value`` is "PUTS:VALUE" when ``puts`` is nil.
local function put(P, tbl, key, partition, value, puts, fresh)
  local hash = P .. 't:' .. tbl
  local old = redis.call('HGET', hash, key)
  if old and fresh then
    unfile(P, tbl, key)
    old = false
  end
  if not puts then
    local at = string.find(value, ':', 1, true)
    puts = tonumber(string.sub(value, 1, at - 1))
    value = string.sub(value, at + 1)
  end
  redis.call('HSET', hash, key, string.format('%d', version_of(old) + puts) .. ':' .. value)
  if not old then
    redis.call('ZADD', P .. 'p:' .. tbl .. ':' .. partition, redis.call('INCR', P .. 'rows:seq'),
               key)
    if partition ~= '' then redis.call('HSET', P .. 't:' .. tbl .. ':part', key, partition) end
  end
end
local function delete(P, tbl, key)
  if redis.call('HDEL', P .. 't:' .. tbl, key) == 1 then unfile(P, tbl, key) end
end
-- File a member under a score ('' removes it).
local function index_set(P, index, member, score)
  local z = P .. 'i:' .. index
  local old = redis.call('HGET', z .. ':at', member)
  if old == score then return end
  if old then redis.call('ZREM', z, old .. '\\0' .. member) end
  if score == '' then
    redis.call('HDEL', z .. ':at', member)
  else
    redis.call('HSET', z .. ':at', member, score)
    redis.call('ZADD', z, 0, score .. '\\0' .. member)
  end
end
local function now_ms()
  local now = redis.call('TIME')
  return tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
end
"""

_COMMIT = _ROWS + """
-- Apply a block's writes. KEYS[1] the VTN-wide lock, KEYS[2] the block's lock (its VEN's, or
-- the VTN-wide one), KEYS[3] the open per-VEN blocks, KEYS[4] the flag of a waiting VTN-wide
-- block. ARGV[1] the prefix, ARGV[2] the block's token ('' when it took no lock), ARGV[3]
-- 'ven' or 'vtn', ARGV[4] the lease (ms), ARGV[5] how many checks follow, then the checks
-- (table, key, version Redis must hold), then the writes in groups: 'put', table, partition,
-- fresh ('1' or '0'), n, then n (key, "PUTS:VALUE"); 'del', table, n, then n keys; 'idx',
-- index, n, then n (member, score or '' to remove it).
-- Returns 1 when applied, 0 when a block it must wait for is open, -1 when the block's lock no
-- longer holds its token, -2 when a check failed (nothing written either way).
local P, token, kind = ARGV[1], ARGV[2], ARGV[3]
if token == '' then
  if kind == 'ven' then
    if redis.call('EXISTS', KEYS[1], KEYS[2], KEYS[4]) > 0 then return 0 end
  else
    if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
    redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now_ms() - 1)
    if redis.call('ZCARD', KEYS[3]) > 0 then
      redis.call('SET', KEYS[4], '1', 'PX', ARGV[4])
      return 0
    end
  end
elseif redis.call('GET', KEYS[2]) ~= token then
  return -1
end
local function release()
  if token ~= '' then
    redis.call('DEL', KEYS[2])
    redis.call('ZREM', KEYS[3], token)
  elseif kind == 'vtn' then
    redis.call('DEL', KEYS[4])
  end
end
local i = 6
for _ = 1, tonumber(ARGV[5]) do
  if version_of(redis.call('HGET', P .. 't:' .. ARGV[i], ARGV[i + 1])) ~= tonumber(ARGV[i + 2])
  then
    release()
    return -2
  end
  i = i + 3
end
local n = #ARGV
while i <= n do
  local op = ARGV[i]
  if op == 'put' then
    local tbl, partition, fresh = ARGV[i + 1], ARGV[i + 2], ARGV[i + 3] == '1'
    i = i + 5
    for _ = 1, tonumber(ARGV[i - 1]) do
      put(P, tbl, ARGV[i], partition, ARGV[i + 1], nil, fresh)
      i = i + 2
    end
  elseif op == 'del' then
    local tbl = ARGV[i + 1]
    i = i + 3
    for _ = 1, tonumber(ARGV[i - 1]) do
      delete(P, tbl, ARGV[i])
      i = i + 1
    end
  elseif op == 'idx' then
    local index = ARGV[i + 1]
    i = i + 3
    for _ = 1, tonumber(ARGV[i - 1]) do
      index_set(P, index, ARGV[i], ARGV[i + 1])
      i = i + 2
    end
  else
    return redis.error_reply('unknown store operation ' .. tostring(op))
  end
end
release()
return 1
"""

_TAKE_VTN = """
-- Take the VTN-wide lock KEYS[1] for token ARGV[1] (lease ARGV[2] ms) once no per-VEN block
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
-- Open a per-VEN block: KEYS[1] the VTN-wide lock, KEYS[2] the VEN's lock, KEYS[3] the set
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
-- Extend the block's lock KEYS[1] to ARGV[2] ms if it still holds its token ARGV[1]; a
-- per-VEN block also names the set of open ones (KEYS[2]).
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
if #KEYS > 1 then
  local now = redis.call('TIME')
  local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
  redis.call('ZADD', KEYS[2], 'XX', ms + tonumber(ARGV[2]), ARGV[1])
end
return 1
"""

_RELEASE = """
-- Release a rolled-back block's lock KEYS[1] if it still holds its token ARGV[1], and its
-- place in the set of open per-VEN blocks (KEYS[2], if any).
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
if #KEYS > 1 then redis.call('ZREM', KEYS[2], ARGV[1]) end
return 1
"""

# A partition's rows, in scan order: key, "VERSION:VALUE", key, ... (one snapshot).
_SCAN_BODY = """
local function scan(P, tbl, partition)
  local keys = redis.call('ZRANGE', P .. 'p:' .. tbl .. ':' .. partition, 0, -1)
  local out = {}
  for j = 1, #keys, 1000 do
    local chunk = {}
    for k = j, math.min(j + 999, #keys) do chunk[#chunk + 1] = keys[k] end
    local values = redis.call('HMGET', P .. 't:' .. tbl, unpack(chunk))
    for k = 1, #chunk do
      if values[k] then
        out[#out + 1] = chunk[k]
        out[#out + 1] = values[k]
      end
    end
  end
  return out
end
"""

_SCAN = _SCAN_BODY + """
-- ARGV: the prefix, the table, the partition.
return scan(ARGV[1], ARGV[2], ARGV[3])
"""

_POLL_STATE = _SCAN_BODY + """
-- get_poll_state's three reads: ARGV the prefix, the VEN, the records' partition.
local P = ARGV[1]
return {redis.call('HGET', P .. 't:%s', ARGV[2]) or '', scan(P, '%s', ARGV[3]),
        scan(P, '%s', ARGV[2])}
""" % (DELIVERED, RECORDS, OUTBOX)

_RECORD_SEEN = _ROWS + """
-- RulesStore.record_seen's block in one script: the VEN's block (KEYS[1] the VTN-wide lock,
-- KEYS[2] the VEN's lock, KEYS[3] the flag of a waiting VTN-wide block: {0} while one is
-- open). ARGV: the prefix, the VEN, now, offline_at, lease_until, then the nonce and its
-- expiry if any. Returns {2} for a nonce held and unexpired (nothing written), {1} when the
-- VEN was online, {1, epoch} for its transition online.
if redis.call('EXISTS', KEYS[1], KEYS[2], KEYS[3]) > 0 then return {0} end
local LIVE, DUE, STALE, NONCES, EXPIRY = '%s', '%s', '%s', '%s', '%s'
local P, id, now, offline, lease = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
if ARGV[6] then
  local held = redis.call('HGET', P .. 't:' .. NONCES, ARGV[6])
  -- Texts of one fixed width and pattern (utc_text), so they compare as instants.
  if held and value_of(held) > now then return {2} end
  put(P, NONCES, ARGV[6], '', ARGV[7], 1, false)
  index_set(P, EXPIRY, ARGV[6], ARGV[7])
end
local raw = redis.call('HGET', P .. 't:' .. LIVE, id)
local live = raw and cjson.decode(value_of(raw))
if live and live.state == 'online' then
  live.last_seen = now
  live.offline_at = offline
  put(P, LIVE, id, '', cjson.encode(live), 1, false)
  index_set(P, DUE, id, offline)  -- lease_until, and so its index entry, is unchanged
  return {1}
end
local epoch = 1
if live then epoch = live.epoch + 1 end
put(P, LIVE, id, '', cjson.encode({state = 'online', epoch = epoch, last_seen = now,
                                   offline_at = offline, pending_kind = 'online',
                                   pending_epoch = epoch, lease_until = lease}), 1, false)
index_set(P, DUE, id, offline)
index_set(P, STALE, id, lease)
return {1, epoch}
""" % (LIVENESS, DUE_OFFLINE, STALE, NONCES, NONCE_EXPIRY)

_LAYOUT = """
-- KEYS[1] the layout key, then the keys only the layout before it wrote; ARGV[1] this layout.
-- Returns the layout found (set to ARGV[1] on a keyspace without one), or {the old key found}.
local found = redis.call('GET', KEYS[1])
if found then return found end
for j = 2, #KEYS do
  if redis.call('EXISTS', KEYS[j]) == 1 then return {KEYS[j]} end
end
redis.call('SET', KEYS[1], ARGV[1])
return ARGV[1]
"""


class _Script:
    """A Lua script, run by its SHA1 (loaded again when the server has forgotten it)."""

    __slots__ = ("source", "sha")

    def __init__(self, source: str):
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()


COMMIT = _Script(_COMMIT)
TAKE_VTN = _Script(_TAKE_VTN)
TAKE_VEN = _Script(_TAKE_VEN)
RENEW = _Script(_RENEW)
RELEASE = _Script(_RELEASE)
SCAN = _Script(_SCAN)
POLL_STATE = _Script(_POLL_STATE)
RECORD_SEEN = _Script(_RECORD_SEEN)
LAYOUT_CHECK = _Script(_LAYOUT)


def _row(raw: str) -> Row:
    version, _, value = raw.partition(":")
    return Row(int(version), value)


def _value(raw: str) -> str:
    return raw.partition(":")[2]


# -- a block ----------------------------------------------------------------------------------


class _Pending:
    """A row a block wrote. ``value`` None: deleted. ``fresh``: deleted (in Redis) first, so its
    version starts again and it goes last in its partition. ``puts``: puts since then (or since
    the block began). ``base``: its version in Redis, once read. ``order``: when it appeared."""

    __slots__ = ("value", "partition", "fresh", "puts", "order", "base")

    def __init__(self, value: str | None, partition: str, fresh: bool, puts: int, order: int,
                 base: int | None):
        self.value = value
        self.partition = partition
        self.fresh = fresh
        self.puts = puts
        self.order = order
        self.base = base


class _Block:
    """One thread's open transaction: its lock (once taken) and its buffered writes."""

    __slots__ = ("ven_id", "pid", "token", "lock", "queue", "depth", "renewed", "rows",
                 "partitions", "index", "checks", "versions", "order")

    def __init__(self, ven_id: str | None):
        self.ven_id = ven_id
        self.pid = os.getpid()
        self.token = ""  # "" until the block takes its lock, at its first read from Redis
        self.lock = ""  # the key of that lock
        self.queue: threading.Lock | None = None  # this process's turn (VTN-wide blocks)
        self.depth = 1
        self.renewed = 0.0
        self.rows: dict[tuple[str, str], _Pending] = {}
        self.partitions: dict[tuple[str, str], dict[str, None]] = {}  # keys put, by partition
        self.index: dict[str, dict[str, str | None]] = {}  # index -> member -> score or None
        self.checks: dict[tuple[str, str], int] = {}  # compare-and-sets to check at commit
        self.versions: dict[tuple[str, str], int] = {}  # versions read from Redis (0: absent)
        self.order = itertools.count()

    def version(self, table: str, key: str, pending: _Pending) -> int | None:
        """The version of a row the block wrote, or None when its Redis version is needed."""
        if pending.value is None:
            return 0
        if pending.fresh:
            return pending.puts
        return None if pending.base is None else pending.base + pending.puts


# -- the backend ------------------------------------------------------------------------------


class RedisBackend:
    """A :class:`~flask_openadr.store.rules.Backend` in Redis (see the module documentation).

    :param url: the redis-py URL (without this store's own options).
    :param prefix: the start of every key.
    :param lock_lease: seconds a transaction's lock lasts unless renewed.
    :param lock_wait: seconds a writer waits for another block before :class:`StoreError`.
    :param uri: the URI the store was opened with, for messages (the password is never shown).
    """

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
        self.vtn_lock = prefix + "lock"
        self.ven_blocks = prefix + "lock:vens"  # open per-VEN blocks, by lease end
        self.vtn_waiting = prefix + "lock:waiting"  # a VTN-wide block waits for them
        self._pid = os.getpid()
        self._lock = threading.Lock()  # guards _clients in this process
        self._queue = threading.Lock()  # this process's threads take turns at VTN-wide blocks
        # pid -> client. Clients of other pids were inherited over fork and are never used.
        self._clients: dict[int, Any] = {}
        self._layout_checked = False
        self._local = threading.local()

    def __repr__(self) -> str:
        return f"RedisBackend({self._name!r})"

    def ven_lock(self, ven_id: str) -> str:
        return f"{self.prefix}lock:ven:{ven_id}"

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
        client = self._clients.get(os.getpid())
        if client is None:
            lock, _ = self._process_locks()
            with lock:
                client = self._clients.get(os.getpid())
                if client is None:
                    pool = self._redis.ConnectionPool.from_url(self._url, **self._pool_options)
                    client = self._clients[os.getpid()] = self._redis.Redis(connection_pool=pool)
        return client

    def client(self) -> Any:
        """:meth:`_client`, once the layout of the keys under the prefix is known to be this
        version's (checked on the store's first use)."""
        client = self._client()
        if not self._layout_checked:
            self._check_layout(client)
        return client

    def _check_layout(self, client: Any) -> None:
        """Refuse a keyspace another layout wrote (once per store; marks an empty one)."""
        keys = [self.prefix + "layout", *(self.prefix + name for name in _OLD_LAYOUT_KEYS)]
        found = self._eval(client, LAYOUT_CHECK, keys, [LAYOUT])
        if isinstance(found, list):
            raise StoreError(
                f"Redis store {self._name}: the keys under the prefix {self.prefix!r} were "
                f"written by an older development version of flask-openadr (found {found[0]!r} "
                f"and no {keys[0]!r}), whose layout this version does not read. Delete those "
                f"keys (every key starting with {self.prefix!r}) and register the VENs again, "
                "or give this VTN another prefix"
            )
        if found != LAYOUT:
            raise StoreError(
                f"Redis store {self._name}: the keys under the prefix {self.prefix!r} have the "
                f"layout {found!r} ({keys[0]!r}); this version of flask-openadr reads layout "
                f"{LAYOUT!r} only. Upgrade flask-openadr, or give this VTN another prefix"
            )
        self._layout_checked = True

    def close(self) -> None:
        """Disconnect this process's connections (the store reconnects if used again).
        Connections inherited from a parent process are left alone."""
        lock, _ = self._process_locks()
        with lock:
            client = self._clients.pop(os.getpid(), None)
        if client is not None:
            with self._errors():
                client.connection_pool.disconnect()

    def create_schema(self) -> None:
        """Check the layout of the keys under the prefix (and mark an empty keyspace with it):
        Redis makes keys when they are first written."""
        self.client()

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        """Nothing to hold: each call takes a pooled connection for its round trip."""
        yield

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

    def _eval(self, client: Any, script: _Script, keys: list[str], args: list[Any]) -> Any:
        with self._errors():
            try:
                return client.evalsha(script.sha, len(keys), *keys, *args)
            except self._redis.exceptions.NoScriptError:
                # A new or restarted server: EVAL sends the source, and caches it there.
                return client.eval(script.source, len(keys), *keys, *args)

    def run(self, script: _Script, keys: list[str], args: list[Any]) -> Any:
        """Run a script: one round trip."""
        return self._eval(self.client(), script, keys, args)

    def _waited(self) -> StoreError:
        return StoreError(
            f"Redis store {self._name}: waited {self.lock_wait:g} s for another transaction "
            "to finish; if transactions really take that long, raise lock_wait in the store URI"
        )

    def _pause(self, delay: float, deadline: float) -> float:
        """Sleep before trying a lock again (the only place the store waits for another)."""
        now = time.monotonic()
        if now >= deadline:
            raise self._waited()
        time.sleep(min(delay * random.uniform(0.5, 1.5), deadline - now))
        return min(delay * 2, 0.01)

    def until_unlocked(self, script: _Script, keys: list[str], args: list[Any]) -> Any:
        """Run a script that answers 0 (or {0}) while a block it must wait for is open, until
        it does not, or :class:`StoreError` after ``lock_wait``."""
        deadline = time.monotonic() + self.lock_wait
        delay = 0.0005
        while True:
            result = self.run(script, keys, args)
            if result != 0 and not (isinstance(result, list) and result[0] == 0):
                return result
            delay = self._pause(delay, deadline)

    # -- transactions --------------------------------------------------------------------------

    def block(self) -> _Block | None:
        """This thread's open block in this process, if any."""
        block: _Block | None = getattr(self._local, "block", None)
        if block is not None and block.pid != os.getpid():
            # Forked inside a block: the block is the parent's, not this process's.
            self._local.block = None
            return None
        return block

    @contextlib.contextmanager
    def transaction(self, lock: str | None = None) -> Iterator[None]:
        """See :class:`~flask_openadr.store.rules.Backend` and the module documentation."""
        block = self.block()
        if block is not None:
            block.depth += 1
            try:
                yield
            finally:
                block.depth -= 1
            return
        block = _Block(lock)
        self._local.block = block
        try:
            yield
        except BaseException:
            self._local.block = None
            self._abort(block)
            raise
        self._local.block = None
        self._commit(block)

    def _reading(self, block: _Block) -> None:
        """Before a block reads Redis: its lock, taken now if not yet."""
        if not block.token:
            self._take(block)
        else:
            self._renew(block)

    def _renew(self, block: _Block) -> None:
        """At every call in a block that holds a lock: renew it when a third of the lease has
        passed, so that only a block that stops using the store loses it."""
        if block.token and time.monotonic() - block.renewed > self.lock_lease / 3:
            keys = [block.lock] + ([self.ven_blocks] if block.queue is None else [])
            if self.run(RENEW, keys, [block.token, self._lease_ms]) != 1:
                raise self._lost()
            block.renewed = time.monotonic()

    def _take(self, block: _Block) -> None:
        deadline = time.monotonic() + self.lock_wait
        token = uuid.uuid4().hex
        if block.ven_id is not None:
            # No process-wide queue: threads serving other VENs need not take turns.
            lock = self.ven_lock(block.ven_id)
            script, keys = TAKE_VEN, [self.vtn_lock, lock, self.ven_blocks, self.vtn_waiting]
        else:
            _, queue = self._process_locks()
            if not queue.acquire(timeout=self.lock_wait):
                raise self._waited()
            block.queue = queue
            lock, script, keys = self.vtn_lock, TAKE_VTN, [self.vtn_lock, self.ven_blocks,
                                                          self.vtn_waiting]
        delay = 0.0005
        while self.run(script, keys, [token, self._lease_ms]) != 1:
            delay = self._pause(delay, deadline)
        block.token, block.lock, block.renewed = token, lock, time.monotonic()

    def _lost(self) -> StoreError:
        return StoreError(
            f"Redis store {self._name}: this transaction lost its lock (it outlived "
            f"lock_lease={self.lock_lease:g} s, or Redis restarted); nothing of it was written"
        )

    def _release(self, block: _Block) -> None:
        """Let go of a block's lock, if it took one and Redis can be reached (else it
        expires)."""
        if block.token:
            keys = [block.lock] + ([self.ven_blocks] if block.queue is None else [])
            with contextlib.suppress(StoreError):
                self.run(RELEASE, keys, [block.token])

    def _abort(self, block: _Block) -> None:
        """Drop a block's writes and let go of its lock."""
        try:
            self._release(block)
        finally:
            if block.queue is not None:
                block.queue.release()

    def _commit(self, block: _Block) -> None:
        """Apply a block's writes in one script (see the module documentation)."""
        try:
            if not block.token and not block.rows and not block.index:
                return  # nothing read, nothing written
            args: list[Any] = [self.prefix, block.token,
                               "vtn" if block.ven_id is None else "ven", self._lease_ms,
                               len(block.checks)]
            for (table, key), version in block.checks.items():
                args += (table, key, version)
            # In the order the rows appeared, so new ones go into their partitions in it; runs
            # of one kind of write share a header (redis-py's cost is per argument).
            group: tuple[str, ...] = ()
            count_at = 0  # where the group's count goes in args
            for (table, key), row in sorted(block.rows.items(), key=lambda item: item[1].order):
                header = ("del", table) if row.value is None else (
                    "put", table, row.partition, "1" if row.fresh else "0")
                if header != group:
                    group = header
                    args += header
                    count_at = len(args)
                    args.append(0)
                args[count_at] += 1
                if row.value is None:
                    args.append(key)
                else:
                    args += (key, f"{row.puts}:{row.value}")
            for index, members in block.index.items():
                args += ("idx", index, len(members))
                for member, score in members.items():
                    args += (member, score or "")
            lock = block.lock or (self.vtn_lock if block.ven_id is None
                                  else self.ven_lock(block.ven_id))
            keys = [self.vtn_lock, lock, self.ven_blocks, self.vtn_waiting]
            try:
                if block.token:
                    self._renew(block)  # building a large block's writes took a while
                    result = self.run(COMMIT, keys, args)
                else:  # a block that read nothing took no lock: it waits here, if it must
                    result = self.until_unlocked(COMMIT, keys, args)
            except BaseException:
                self._release(block)  # a network error: the script may not have run
                raise
        finally:
            if block.queue is not None:
                block.queue.release()
        if result == -1:
            raise self._lost()
        if result == -2:
            raise Conflict("a compare-and-set of this transaction lost to another process's")

    # -- rows ----------------------------------------------------------------------------------

    def _fetch(self, table: str, keys: list[str]) -> dict[str, Row]:
        """Rows as Redis holds them: one round trip (a pipeline of chunks for many keys)."""
        if not keys:
            return {}
        hash_key = self.prefix + "t:" + table
        with self._errors():
            client = self.client()
            if len(keys) <= MANY_CHUNK:
                values = client.hmget(hash_key, keys)
            else:
                pipeline = client.pipeline(transaction=False)
                for start in range(0, len(keys), MANY_CHUNK):
                    pipeline.hmget(hash_key, keys[start:start + MANY_CHUNK])
                values = [value for chunk in pipeline.execute() for value in chunk]
        return {key: _row(raw) for key, raw in zip(keys, values) if raw is not None}

    def get(self, table: str, keys: Iterable[str]) -> dict[str, Row]:
        keys = list(keys)
        block = self.block()
        if block is None:
            return self._fetch(table, keys)
        self._renew(block)
        rows = block.rows
        wanted = [key for key in keys if (table, key) not in rows
                  or block.version(table, key, rows[table, key]) is None]
        found: dict[str, Row] = {}
        if wanted:
            self._reading(block)
            found = self._fetch(table, wanted)
            for key in wanted:
                version = found[key].version if key in found else 0
                block.versions[table, key] = version
                if (table, key) in rows:
                    rows[table, key].base = version
        result: dict[str, Row] = {}
        for key in keys:
            pending = rows.get((table, key))
            if pending is None:
                if key in found:
                    result[key] = found[key]
            elif pending.value is not None:
                current = block.version(table, key, pending)
                assert current is not None  # read above
                result[key] = Row(current, pending.value)
        return result

    def _scan(self, table: str, partition: str) -> list[tuple[str, Row]]:
        flat = self.run(SCAN, [], [self.prefix, table, partition])
        return [(flat[i], _row(flat[i + 1])) for i in range(0, len(flat), 2)]

    def scan(self, table: str, partition: str) -> list[tuple[str, Row]]:
        block = self.block()
        if block is None:
            return self._scan(table, partition)
        self._reading(block)
        return self._overlay(block, table, partition, self._scan(table, partition))

    @staticmethod
    def _overlay(block: _Block, table: str, partition: str,
                 stored: list[tuple[str, Row]]) -> list[tuple[str, Row]]:
        """A partition's rows as Redis holds them (``stored``), with the block's writes."""
        rows = block.rows
        out: list[tuple[str, Row]] = []
        present = set()
        for key, row in stored:
            present.add(key)
            pending = rows.get((table, key))
            if pending is None:
                out.append((key, row))
            elif pending.value is not None and not pending.fresh:  # replaced in place
                out.append((key, Row(row.version + pending.puts, pending.value)))
        added = []
        for key in block.partitions.get((table, partition), ()):
            pending = rows[table, key]
            if pending.value is not None and pending.partition == partition \
                    and (pending.fresh or key not in present):
                added.append((pending.order, key, pending))
        for _, key, pending in sorted(added, key=lambda entry: entry[0]):
            assert pending.value is not None
            # Not in Redis's partition, so new to it unless deleted first.
            out.append((key, Row(pending.puts + (0 if pending.fresh else pending.base or 0),
                                 pending.value)))
        return out

    def put(self, table: str, key: str, value: str, *, partition: str = "",
            expect: int | None = None) -> bool:
        block = self.block()
        if block is None:
            with self.transaction():  # a block of one write
                return self.put(table, key, value, partition=partition, expect=expect)
        self._renew(block)
        pending = block.rows.get((table, key))
        if expect is not None:
            if pending is None or (pending.value is not None and not pending.fresh):
                base = self._version(block, table, key)
                if pending is not None:
                    pending.base = base
                # Another process may write this key whatever lock this block holds (a
                # nonce): the commit checks Redis still holds the version this put built on.
                block.checks.setdefault((table, key), base)
            current = block.version(table, key, pending) if pending is not None else base
            if current != expect:
                return False
        if pending is None:
            block.rows[table, key] = pending = _Pending(
                value, partition, False, 1, next(block.order),
                block.versions.get((table, key)))
        elif pending.value is None:
            pending.value, pending.partition, pending.puts = value, partition, 1
            pending.order = next(block.order)
        else:
            pending.value = value
            pending.puts += 1
        block.partitions.setdefault((table, pending.partition), {})[key] = None
        return True

    def _version(self, block: _Block, table: str, key: str) -> int:
        """The row's version in Redis (0: absent), read once per block."""
        version = block.versions.get((table, key))
        if version is None:
            self._reading(block)
            found = self._fetch(table, [key])
            version = block.versions[table, key] = found[key].version if key in found else 0
        return version

    def delete(self, table: str, keys: Iterable[str]) -> None:
        keys = list(keys)
        if not keys:
            return
        block = self.block()
        if block is None:
            with self.transaction():  # a block of one write
                return self.delete(table, keys)
        self._renew(block)
        for key in keys:
            pending = block.rows.get((table, key))
            if pending is None:
                block.rows[table, key] = _Pending(None, "", True, 0, next(block.order), None)
            else:
                pending.value, pending.fresh, pending.puts = None, True, 0

    # -- the index of due items ----------------------------------------------------------------

    def index_set(self, index: str, member: str, score: str | None) -> None:
        if score is not None and (not isinstance(score, str) or not score or "\0" in score):
            raise ValueError(f"an index score must be a non-empty str without NUL, got {score!r}")
        block = self.block()
        if block is None:
            with self.transaction():  # a block of one write
                return self.index_set(index, member, score)
        self._renew(block)
        block.index.setdefault(index, {})[member] = score

    def index_range(self, index: str, upto: str, limit: int) -> list[tuple[str, str]]:
        block = self.block()
        changed = block.index.get(index, {}) if block is not None else {}
        if block is not None:
            self._reading(block)
        wanted = limit + len(changed)
        found: list[tuple[str, str]] = []
        if wanted > 0:
            with self._errors():
                members = self.client().zrangebylex(
                    self.prefix + "i:" + index, "-", "(" + upto + "\x01", start=0, num=wanted)
            for filed in members:
                score, _, member = filed.partition("\0")
                found.append((member, score))
        if not changed:
            return found[:limit]
        due = [(score, member) for member, score in found if member not in changed]
        due += [(score, member) for member, score in changed.items()
                if score is not None and score <= upto]
        due.sort()
        return [(member, score) for score, member in due[:limit]]


# -- the store --------------------------------------------------------------------------------


class RedisStore(RulesStore):
    """A :class:`~flask_openadr.store.base.Store` in Redis, shared by every process that opens
    the same server, database and prefix: :class:`~flask_openadr.store.rules.RulesStore` on a
    :class:`RedisBackend` (same parameters), with one-script fast paths for
    :meth:`record_seen` and :meth:`get_poll_state`."""

    #: Shared by every process that opens the same URI (see :attr:`Store.single_process`).
    single_process: ClassVar[bool] = False

    def __init__(self, url: str, *, prefix: str = DEFAULT_PREFIX,
                 lock_lease: float = DEFAULT_LOCK_LEASE, lock_wait: float = DEFAULT_LOCK_WAIT,
                 uri: str | None = None):
        self.redis = RedisBackend(url, prefix=prefix, lock_lease=lock_lease,
                                  lock_wait=lock_wait, uri=uri)
        super().__init__(self.redis)
        self.uri = self.redis.uri
        self.prefix = prefix
        self.lock_lease = lock_lease
        self.lock_wait = lock_wait

    def __repr__(self) -> str:
        return f"RedisStore({redact(self.uri)!r})"

    def record_seen(self, ven_id: str, now: datetime, offline_at: datetime,
                    lease_until: datetime, nonce: str | None = None,
                    nonce_expires_at: datetime | None = None) -> Transition | None:
        """:meth:`RulesStore.record_seen <flask_openadr.store.rules.RulesStore.record_seen>`,
        its VEN's block as one script (one round trip instead of three) when no block is open.
        """
        backend = self.redis
        if backend.block() is not None:
            return super().record_seen(ven_id, now, offline_at, lease_until, nonce,
                                       nonce_expires_at)
        args = [backend.prefix, ven_id, utc_text(now, "now"), utc_text(offline_at, "offline_at"),
                utc_text(lease_until, "lease_until")]
        nonce_texts = check_seen_nonce(nonce, now, nonce_expires_at)
        if nonce is not None and nonce_texts is not None:
            args += (nonce, nonce_texts[1])
        result = backend.until_unlocked(
            RECORD_SEEN, [backend.vtn_lock, backend.ven_lock(ven_id), backend.vtn_waiting], args)
        if result[0] == 2:
            assert nonce is not None  # the script answers 2 for a nonce only
            raise NonceUsed(nonce)
        return None if len(result) == 1 else {"ven_id": ven_id, "kind": "online",
                                               "epoch": int(result[1])}

    def get_poll_state(self, ven_id: str, kind: str) -> PollState:
        """The three reads of a poll in one script (one round trip) when no block is open."""
        backend = self.redis
        if backend.block() is not None:
            return super().get_poll_state(ven_id, kind)
        delivered, records, outbox = backend.run(POLL_STATE, [], [
            backend.prefix, ven_id, _key(kind, ven_id)])
        # The outbox's order: priority, then first put (a stable sort of the partition's order).
        items = sorted(((json.loads(outbox[i])[1], _value(outbox[i + 1]))
                        for i in range(0, len(outbox), 2)), key=lambda item: item[0])
        return {"delivered": serialize.loads(_value(delivered)) if delivered else {},
                "records": [serialize.loads(_value(records[i + 1]))
                            for i in range(0, len(records), 2)],
                "outbox": [serialize.loads(text) for _, text in items]}
