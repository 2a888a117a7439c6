"""Provider rate limits in Redis: one key per limiter holding the buckets of
protocol.plans.ShareLimiter, refilled and taken from by one Lua script
(``TAKE``), so a send costs one round trip and concurrent senders never retry:
Redis runs the script to the end before it serves the next one.

The script is a second copy of ``ShareLimiter.take``/``wait`` (decision 37's
worry). What keeps the two from drifting is a property test,
tests/contract/test_redis_rate_limit_script.py: random takes against both, the
same decision and the same buckets at every step. The script mirrors the
Python line by line, in the same order of float operations, so the two agree
to the last bit (the test allows 1e-12 for a harmless reordering); change
both together.

The key also records the limit it was computed for: when a provider's rate,
burst or shares change in the config, the first process to see the new limit
starts the buckets afresh (full)."""

from __future__ import annotations

import functools

from protocol.plans import _EPSILON, Priority  # _EPSILON: the same slack in both copies of the limiter

from ..outbound import RateLimit
from .keys import KeySpace
from .scripts import LuaScript, Scripts, unavailable_on_redis_errors

# Idle limiters expire: a full bucket is what a missing key means anyway.
IDLE_TTL = 3600

# KEYS: the limiter (ps:rate:<provider>)
# ARGV: now, priority (0 = urgent), idle ttl, rate, burst, share of each class in
#       priority order
# Returns '0' when a token was taken, else the seconds until one could be (at
# least 0.001), as text ('%.17g': a Lua number would reach Python truncated).
#
# The key is a string, msgpack [limit, buckets]: limit = [rate, burst, shares...],
# buckets = ShareLimiter.state() = [tokens of each class..., spare, updated].
# A different stored limit (or none) means a full limiter refilled at `now`.
# It is written back on every call, refused or not, as the Python limiter's
# state would be after take() and wait(): the refill moved `updated` to now.
TAKE = LuaScript(
    "rate_limit_take",
    f"""
local EPSILON = {_EPSILON!r}
local now = tonumber(ARGV[1])
local asking = tonumber(ARGV[2]) + 1
local rate, burst = tonumber(ARGV[4]), tonumber(ARGV[5])
local limit, shares = {{rate, burst}}, {{}}
for i = 6, #ARGV do
  shares[#shares + 1] = tonumber(ARGV[i])
  limit[#limit + 1] = shares[#shares]
end
local n = #shares

-- ShareLimiter.__init__ (the sum starts from 0 and goes in priority order, as
-- Python's sum() over the shares does: the spare rate must be the same double).
local total = 0
for i = 1, n do total = total + shares[i] end
local rates, caps, tokens = {{}}, {{}}, {{}}
for i = 1, n do
  rates[i] = rate * shares[i]
  caps[i] = math.max(1.0, burst * shares[i])
  tokens[i] = caps[i]
end
local spare = 0.0
local spare_rate = rate * math.max(0.0, 1.0 - total)
local updated = now

-- restore(), when the stored buckets are this limit's.
local raw = redis.call('GET', KEYS[1])
if raw then
  local stored = cmsgpack.unpack(raw)
  local same = #stored[1] == #limit and #stored[2] == n + 2
  if same then
    for i = 1, #limit do
      if stored[1][i] ~= limit[i] then same = false end
    end
  end
  if same then
    local buckets = stored[2]
    for i = 1, n do tokens[i] = math.min(caps[i], math.max(0.0, buckets[i])) end
    spare = math.min(burst, math.max(0.0, buckets[n + 1]))
    updated = buckets[n + 2]
  end
end

-- _refill(): time going backwards (another process's clock behind) refills nothing.
local elapsed = now - updated
if elapsed > 0 then
  updated = now
  local s = spare + spare_rate * elapsed
  for i = 1, n do
    local t = tokens[i] + rates[i] * elapsed
    if t > caps[i] then
      s = s + (t - caps[i])
      t = caps[i]
    end
    tokens[i] = t
  end
  spare = math.min(burst, s)
end

local function save()
  local buckets = {{}}
  for i = 1, n do buckets[i] = tokens[i] end
  buckets[n + 1] = spare
  buckets[n + 2] = updated
  redis.call('SET', KEYS[1], cmsgpack.pack({{limit, buckets}}), 'EX', ARGV[3])
end

-- take()
local own = tokens[asking]
if own >= 1.0 - EPSILON then
  tokens[asking] = own - 1.0
  save()
  return '0'
end
if own + spare >= 1.0 - EPSILON then
  spare = spare - (1.0 - own)
  tokens[asking] = 0.0
  save()
  return '0'
end
save()

-- wait() (its refill is a no-op now: updated >= now). The inflow into own +
-- spare grows as the other classes' buckets fill up and overflow.
local need = 1.0 - tokens[asking] - spare
local wait = 0.0
if need > EPSILON then
  local inflow = rates[asking] + spare_rate
  local fills = {{}}
  for i = 1, n do
    if i ~= asking and rates[i] ~= 0 then
      local room = caps[i] - tokens[i]
      if room <= 0 then
        inflow = inflow + rates[i]
      else
        fills[#fills + 1] = {{room / rates[i], rates[i]}}
      end
    end
  end
  -- sorted() of (at, extra) pairs
  table.sort(fills, function(a, b) return a[1] < b[1] or (a[1] == b[1] and a[2] < b[2]) end)
  local at_elapsed = 0.0
  for _, fill in ipairs(fills) do
    local at, extra = fill[1], fill[2]
    if inflow > 0 and at_elapsed + need / inflow <= at then break end
    need = need - inflow * (at - at_elapsed)
    at_elapsed = at
    inflow = inflow + extra
  end
  wait = at_elapsed + need / inflow
end
-- take_or_wait(): never 0, so the caller comes back later
return string.format('%.17g', math.max(0.001, wait))
""",
)


@functools.lru_cache(maxsize=256)
def _limit_args(limit: RateLimit) -> tuple[str, ...]:
    """The limit as the script's ARGV (rate, burst, shares), checked first as the
    memory engine checks it (ShareLimiter raises ValueError for a bad limit).
    ``repr`` of a float is what Lua's ``tonumber`` reads back as the same double."""
    limit.limiter(0.0)
    if len(limit.shares) != len(Priority):  # the script counts the classes from ARGV
        raise ValueError(f"a limit has {len(Priority)} shares, got {len(limit.shares)}")
    return (repr(float(limit.rate)), repr(float(limit.burst)), *(repr(float(s)) for s in limit.shares))


class RedisRateLimiter:
    def __init__(self, keys: KeySpace, scripts: Scripts) -> None:
        self._keys = keys
        self._scripts = scripts

    @unavailable_on_redis_errors
    async def take(self, name: str, limit: RateLimit, priority: int, now: float) -> float:
        args = (repr(float(now)), int(Priority(priority)), IDLE_TTL, *_limit_args(limit))
        return float(await self._scripts.call(TAKE, [self._keys.rate_limit(name)], args))
