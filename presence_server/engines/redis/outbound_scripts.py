"""Lua scripts of carrier submissions, tracked links and routing statistics
(submissions.py, links.py, routing.py). docs/redis.md lists their keys.

The link scripts reach a broadcast's click counters through key names stored
in the link's hash at ``add`` (keys outside the declared ones), and the
submission and routing scripts write global keys and per-account keys in one
step: like the queue's, these scripts need a single Redis (docs/redis.md).
"""

from __future__ import annotations

from .scripts import LuaScript

# KEYS: submission, the message's submission list
# ARGV: submission (msgpack), submission id
# Returns 1 when stored, 0 when (provider, id) was stored already (nothing changed).
ADD_SUBMISSION = LuaScript(
    "add_submission",
    """
if not redis.call('SET', KEYS[1], ARGV[1], 'NX') then
  return 0
end
redis.call('RPUSH', KEYS[2], ARGV[2])
return 1
""",
)

# KEYS: key
# ARGV: expected value, new value
# Compare-and-set: 1 when the value was the expected one (and is now the new one).
COMPARE_AND_SET = LuaScript(
    "compare_and_set",
    """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[2])
return 1
""",
)

# KEYS: one link hash per link
# ARGV: per link: data (msgpack), stats hash ('' without a broadcast), clicked set,
#       version tag, unique member
# Returns 0 when stored, else the (1-based) position of a code already stored (or
# given twice); then nothing was stored.
ADD_LINKS = LuaScript(
    "add_links",
    """
local seen = {}
for i, key in ipairs(KEYS) do
  if seen[key] or redis.call('EXISTS', key) == 1 then
    return i
  end
  seen[key] = true
end
for i, key in ipairs(KEYS) do
  local a = (i - 1) * 5
  local stats, tag = ARGV[a + 2], ARGV[a + 4]
  redis.call('HSET', key, 'data', ARGV[a + 1], 'clicks', 0, 'stats', stats, 'clicked', ARGV[a + 3],
             'tag', tag, 'unique', ARGV[a + 5])
  if stats ~= '' then
    redis.call('HINCRBY', stats, 'links:' .. tag, 1)
  end
end
return 0
""",
)

# KEYS: link hash, its click log
# ARGV: at, user agent, click log cap
# The log is a sorted set scored by the click's time, members '<n, 20 digits>:<agent>'
# (n counts the link's clicks, so equal times list the later click first); only the
# newest `cap` clicks by time stay. Returns the link (msgpack), or nil for an unknown
# code (nothing recorded).
CLICK = LuaScript(
    "click",
    """
local data, stats, clicked, tag, unique = unpack(redis.call('HMGET', KEYS[1], 'data', 'stats', 'clicked', 'tag', 'unique'))
if not data then
  return false
end
local n = redis.call('HINCRBY', KEYS[1], 'clicks', 1)
redis.call('ZADD', KEYS[2], ARGV[1], string.format('%020d', n) .. ':' .. ARGV[2])
redis.call('ZREMRANGEBYRANK', KEYS[2], 0, -tonumber(ARGV[3]) - 1)
if stats and stats ~= '' then
  redis.call('HINCRBY', stats, 'clicks:' .. tag, 1)
  if redis.call('SADD', clicked, unique) == 1 then
    redis.call('HINCRBY', stats, 'unique:' .. tag, 1)
  end
end
return data
""",
)

# KEYS: account totals, account index, global totals, global index, minute bucket, minute index
# ARGV: route id, provider, route, outcome, latency ('' for none), error code ('' for none),
#       minute, bucket id, bucket ttl (seconds), drop index entries older than this
# The latency sum is added in Lua (doubles, as Python and SQLite add) and stored
# as '%.17g', which Python parses back exactly; HINCRBYFLOAT adds in long double.
RECORD_ROUTE = LuaScript(
    "record_route",
    """
local function add(key)
  redis.call('HSET', key, 'provider', ARGV[2], 'route', ARGV[3])
  redis.call('HINCRBY', key, ARGV[4], 1)
  if ARGV[5] ~= '' then
    local sum = tonumber(redis.call('HGET', key, 'latency_sum') or '0') + tonumber(ARGV[5])
    redis.call('HSET', key, 'latency_sum', string.format('%.17g', sum))
    redis.call('HINCRBY', key, 'latency_count', 1)
  end
  if ARGV[6] ~= '' then
    redis.call('HINCRBY', key, 'e:' .. ARGV[6], 1)
  end
end
add(KEYS[1])
redis.call('SADD', KEYS[2], ARGV[1])
add(KEYS[3])
redis.call('SADD', KEYS[4], ARGV[1])
add(KEYS[5])
redis.call('HSET', KEYS[5], 'minute', ARGV[7])
redis.call('EXPIRE', KEYS[5], ARGV[9])
redis.call('ZADD', KEYS[6], ARGV[7], ARGV[8])
redis.call('ZREMRANGEBYSCORE', KEYS[6], '-inf', '(' .. ARGV[10])
return 1
""",
)
