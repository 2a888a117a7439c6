"""The redis engine's Lua scripts, how they are run, and how Redis failures
become :class:`EngineUnavailable`.

Each script is one atomic step of a port method: Redis runs a script to the
end before it serves anything else, so an ``IdentityChange`` built from its
reply is exactly what happened, however many nodes write at once.

Slots: every key a script touches is in one hash slot - one account's
(``ps:{AC...}:...``) or one global key - so every script runs on a Redis
Cluster too. The global index of accounts with sessions (``ps:{i}:accounts``)
is kept by the presence store from the scripts' replies (presence.py).

Numbers: a Lua number returned to Redis is truncated to an integer, so every
time that goes back to Python travels as a string (scores as Redis prints them,
``%.17g`` for numbers computed in Lua), and Python parses it with ``float``.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
from dataclasses import dataclass, field
from typing import Any, Callable, Coroutine, ParamSpec, Sequence, TypeVar

import redis.exceptions
import structlog
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from ..ports import EngineUnavailable

log = structlog.get_logger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

# What "Redis cannot serve now" looks like from redis-py. BusyLoadingError (a
# restarted server still loading its data) is a ConnectionError; ReadOnlyError is
# what a replica answers right after a failover, before the client follows it.
REDIS_DOWN: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.ReadOnlyError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.TryAgainError,
    asyncio.TimeoutError,
    OSError,
)


def unavailable_on_redis_errors(fn: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, Coroutine[Any, Any, T]]:
    """Turn Redis connection failures in a port method into EngineUnavailable, so
    that services never see (or depend on) redis-py's exception classes."""

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await fn(*args, **kwargs)
        except REDIS_DOWN as exc:
            # debug, not warning: in an outage every call fails, and the bus reader
            # and /readyz already report the outage once.
            log.debug("redis unavailable", operation=fn.__qualname__, error=type(exc).__name__)
            raise EngineUnavailable(f"redis unavailable: {type(exc).__name__}: {exc}") from exc

    return wrapper


# Every script defined (here and in the other script modules), for Scripts.load.
REGISTRY: list[LuaScript] = []


@dataclass(frozen=True)
class LuaScript:
    name: str
    source: str
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        # EVALSHA needs the SHA1 of the exact source: computed here, so calls never
        # wait for a SCRIPT LOAD reply to learn it.
        object.__setattr__(self, "sha", hashlib.sha1(self.source.encode()).hexdigest())
        REGISTRY.append(self)


# -- Lua ------------------------------------------------------------------------------

# A stored session is a msgpack array (1-based in Lua). SEQ orders an identity's
# sessions as the memory engine does (insertion order; a replaced session keeps its
# place). presence.py encodes and decodes the same layout.
_PRELUDE = """
local SEQ, SID, ACTIVITY, LINGERING = 1, 2, 9, 10

-- The earliest lease end of the account's expiry index, or false (for the global
-- due-accounts index, which presence.py keeps from this answer).
local function earliest(expiry)
  local first = redis.call('ZRANGE', expiry, 0, 0, 'WITHSCORES')
  return first[2] or false
end

-- An identity's next version. A new identity (or one whose keys an empty
-- restart of Redis lost) starts at Redis' clock in milliseconds, not at 1: gateways
-- and clients keep the versions they saw across a Redis outage and drop an update
-- whose version is not newer, so numbering must never go back. (+1 per change
-- stays below the clock's pace: a change per millisecond, sustained, would be
-- needed to overtake it.)
local function bump(presence)
  local version = redis.call('HINCRBY', presence, 'version', 1)
  if version == 1 then
    local now = redis.call('TIME')
    version = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
    redis.call('HSET', presence, 'version', version)
  end
  return version
end

-- The reply of every presence change: {before, after, version, last_seen}.
local function change(sessions, presence, before, version)
  return {before, redis.call('HVALS', sessions), version, redis.call('HGET', presence, 'last_seen')}
end
"""

# KEYS: sessions, presence, expiry
# ARGV: session_id, payload, lease_end, member_to_add, member_to_drop
UPSERT = LuaScript(
    "upsert",
    _PRELUDE
    + """
local before = redis.call('HVALS', KEYS[1])
local version = bump(KEYS[2])
local session = cmsgpack.unpack(ARGV[2])
local old = redis.call('HGET', KEYS[1], ARGV[1])
if old then
  session[SEQ] = cmsgpack.unpack(old)[SEQ]
else
  session[SEQ] = version
end
redis.call('HSET', KEYS[1], ARGV[1], cmsgpack.pack(session))
redis.call('ZREM', KEYS[3], ARGV[5])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[4])
return change(KEYS[1], KEYS[2], before, version)
""",
)

# KEYS: sessions, presence, expiry
# ARGV: session_id, now, live_member, lingering_member
REMOVE = LuaScript(
    "remove",
    _PRELUDE
    + """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then
  return false
end
local before = redis.call('HVALS', KEYS[1])
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[3], ARGV[4])
local version = bump(KEYS[2])
if redis.call('HLEN', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[2], 'last_seen', ARGV[2])
end
return change(KEYS[1], KEYS[2], before, version)
""",
)

# KEYS: sessions, presence, expiry
# ARGV: session_id, until, now, live_member, lingering_member
LINGER = LuaScript(
    "linger",
    _PRELUDE
    + """
local old = redis.call('HGET', KEYS[1], ARGV[1])
if not old then
  return false
end
local before = redis.call('HVALS', KEYS[1])
local session = cmsgpack.unpack(old)
session[ACTIVITY] = tonumber(ARGV[3])
session[LINGERING] = true
redis.call('HSET', KEYS[1], ARGV[1], cmsgpack.pack(session))
-- The live member goes: renewal (ZADD XX of live members) can no longer extend it.
redis.call('ZREM', KEYS[3], ARGV[4])
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[5])
local version = bump(KEYS[2])
return change(KEYS[1], KEYS[2], before, version)
""",
)

# KEYS: expiry
# ARGV: lease_end, live_member...
# XX: only members already there are updated, so an unknown or removed session is
# not created and a lingering one (indexed under its 'L' member) is not extended.
# Returns the members of sessions the index holds neither live nor lingering (lost
# in an outage: the node re-asserts them). CH counts the members whose score
# changed; when that is all of a batch (the usual case) nothing more is read.
RENEW = LuaScript(
    "renew",
    _PRELUDE
    + """
local missing = {}
local function renew(batch, members)
  local changed = redis.call('ZADD', KEYS[1], 'XX', 'CH', unpack(batch))
  if changed < #members then
    for _, member in ipairs(members) do
      if not redis.call('ZSCORE', KEYS[1], member)
          and not redis.call('ZSCORE', KEYS[1], 'L' .. string.sub(member, 2)) then
        missing[#missing + 1] = member
      end
    end
  end
end
local batch, members = {}, {}
for i = 2, #ARGV do
  batch[#batch + 1] = ARGV[1]
  batch[#batch + 1] = ARGV[i]
  members[#members + 1] = ARGV[i]
  if #batch >= 1000 then  -- stay well below Lua's unpack() stack limit
    renew(batch, members)
    batch, members = {}, {}
  end
end
if #batch > 0 then
  renew(batch, members)
end
return missing
""",
)

# KEYS: expiry
# ARGV: now, limit, sessions_key_prefix, presence_key_prefix
# Removes up to `limit` expired sessions of one account, each as its own change;
# returns {changes, the earliest lease end left (or false)}.
# A session leaves the index in the same step that reports it, so a concurrent
# sweeper never finds it again: each expired session is reported exactly once.
# (The identity keys are derived from the index member; they carry the account's
# hash tag, so they are in the declared keys' slot.)
SWEEP = LuaScript(
    "sweep",
    _PRELUDE
    + """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0, ARGV[2])
local out = {}
for i = 1, #due, 2 do
  local member, score = due[i], due[i + 1]
  redis.call('ZREM', KEYS[1], member)
  local colon = string.find(member, ':', 3, true)
  local n = tonumber(string.sub(member, 3, colon - 1))
  local identity = string.sub(member, colon + 1, colon + n)
  local sid = string.sub(member, colon + n + 2)
  local sessions, presence = ARGV[3] .. identity, ARGV[4] .. identity
  local raw = redis.call('HGET', sessions, sid)
  if raw then
    local before = redis.call('HVALS', sessions)
    redis.call('HDEL', sessions, sid)
    local version = bump(presence)
    if redis.call('HLEN', sessions) == 0 then
      -- A lingering session was last seen when its connection dropped; a live one
      -- whose node stopped renewing, when its lease ran out.
      local seen = score
      local session = cmsgpack.unpack(raw)
      if session[LINGERING] then
        seen = string.format('%.17g', session[ACTIVITY])
      end
      redis.call('HSET', presence, 'last_seen', seen)
    end
    out[#out + 1] = {identity, change(sessions, presence, before, version)}
  end
end
return {out, earliest(KEYS[1])}
""",
)

# KEYS: record, index, seq
# ARGV: date_created, sid, field, value, field, value...
# Returns 0 when the record exists (the caller raises ValueError), else 1.
CREATE_RECORD = LuaScript(
    "create_record",
    """
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
-- Zero-padded so that members of records created in the same instant sort by store
-- order: the listing is newest first by date_created, then by store order.
local member = string.format('%020d', redis.call('INCR', KEYS[3])) .. ':' .. ARGV[2]
local fields = {'~member', member}
for i = 3, #ARGV do
  fields[#fields + 1] = ARGV[i]
end
redis.call('HSET', KEYS[1], unpack(fields))
redis.call('ZADD', KEYS[2], ARGV[1], member)
return 1
""",
)

# KEYS: record, index
# Undoes a create_record (its record and its index member) whose sid turned out
# to be another account's (RecordTable.create claims the sid in the same round trip).
DROP_RECORD = LuaScript(
    "drop_record",
    """
local member = redis.call('HGET', KEYS[1], '~member')
if member then
  redis.call('ZREM', KEYS[2], member)
end
return redis.call('DEL', KEYS[1])
""",
)

# KEYS: record
# ARGV: field, value, field, value...
# Writes only the changed fields, so two updates of different fields both land, and
# never recreates a record that is gone. Returns the whole record after the update.
UPDATE_RECORD = LuaScript(
    "update_record",
    """
if redis.call('EXISTS', KEYS[1]) == 0 then
  return false
end
if #ARGV > 0 then
  redis.call('HSET', KEYS[1], unpack(ARGV))
end
return redis.call('HGETALL', KEYS[1])
""",
)

# KEYS: record
# ARGV: field, expected value (encoded as stored), then field, value...
# UPDATE_RECORD only while one field holds the expected value (a call still in the
# status it was read in): the check and the write are one step, so of several
# processes finishing the same call exactly one does. Returns false otherwise.
UPDATE_RECORD_IF = LuaScript(
    "update_record_if",
    """
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then
  return false
end
if #ARGV > 2 then
  redis.call('HSET', KEYS[1], unpack(ARGV, 3))
end
return redis.call('HGETALL', KEYS[1])
""",
)

ALL_SCRIPTS = (UPSERT, REMOVE, LINGER, RENEW, SWEEP, CREATE_RECORD, DROP_RECORD, UPDATE_RECORD, UPDATE_RECORD_IF)


class Scripts:
    """Runs scripts by SHA, loading them again when Redis has lost them (a restart
    or SCRIPT FLUSH answers NOSCRIPT; nothing ran, so running again is safe)."""

    def __init__(self, client: Redis) -> None:
        self._client = client

    async def load(self) -> None:
        # Every script of every imported script module (queue_scripts.py registers its own).
        for script in REGISTRY:
            await self._client.script_load(script.source)

    async def call(self, script: LuaScript, keys: Sequence[str], args: Sequence[Any]) -> Any:
        try:
            return await self._client.evalsha(script.sha, len(keys), *keys, *args)
        except redis.exceptions.NoScriptError:
            await self.load()
            return await self._client.evalsha(script.sha, len(keys), *keys, *args)

    @staticmethod
    def queue(pipe: Pipeline, script: LuaScript, keys: Sequence[str], args: Sequence[Any]) -> None:
        # execute_command, not evalsha(): redis-py's cluster pipeline refuses the named
        # method, but routes EVALSHA by its first key like any keyed command.
        pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)

    async def pipeline(self, build: Callable[[Pipeline], None]) -> list[Any]:
        """Run the commands ``build`` queues in one round trip (not a transaction).

        After NOSCRIPT only the commands that got it run again (``build`` is called
        again and the others are left out): on a cluster one node may have lost its
        scripts while another ran its part, which must not run twice.
        """
        pipe = self._client.pipeline(transaction=False)
        build(pipe)
        replies: list[Any] = await pipe.execute(raise_on_error=False)
        missing = {i for i, reply in enumerate(replies) if isinstance(reply, redis.exceptions.NoScriptError)}
        if missing:
            await self.load()
            again = self._client.pipeline(transaction=False)
            build(_Only(again, missing))  # type: ignore[arg-type]
            for i, reply in zip(sorted(missing), await again.execute(raise_on_error=False)):
                replies[i] = reply
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies


class _Only:
    """A pipeline stand-in that queues only the commands at the given positions."""

    def __init__(self, pipe: Any, wanted: set[int]) -> None:
        self._pipe = pipe
        self._wanted = wanted
        self._n = 0

    def __getattr__(self, name: str) -> Callable[..., None]:
        def queue(*args: Any, **kwargs: Any) -> None:
            if self._n in self._wanted:
                getattr(self._pipe, name)(*args, **kwargs)
            self._n += 1

        return queue
