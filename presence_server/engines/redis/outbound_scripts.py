"""Lua scripts of carrier submissions, tracked links and routing statistics
(submissions.py, links.py, routing.py). docs/redis.md lists their keys.

Every script touches one hash slot: a submission, one message's submission
list, one link with its click log (the code is their hash tag), one account's
broadcast counters, one account's routing totals, or everyone's routing
statistics (``ps:{routes}:...``). Where one operation spans two slots, the
store runs two scripts in the order docs/redis.md gives.
"""

from __future__ import annotations

from .scripts import LuaScript

# KEYS: the message's submission list
# ARGV: submission id
# Lists the id unless it is listed already (so retrying an add lists it once).
LIST_ONCE = LuaScript(
    "list_submission",
    """
if redis.call('LPOS', KEYS[1], ARGV[1]) then
  return 0
end
redis.call('RPUSH', KEYS[1], ARGV[1])
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

# KEYS: one link hash
# ARGV: data (msgpack), stats hash ('' without a broadcast), clicked set, version tag,
#       unique member
# Stores the link unless its code is stored: 1, else 0 (nothing written).
ADD_LINK = LuaScript(
    "add_link",
    """
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
redis.call('HSET', KEYS[1], 'data', ARGV[1], 'clicks', 0, 'stats', ARGV[2], 'clicked', ARGV[3],
           'tag', ARGV[4], 'unique', ARGV[5])
return 1
""",
)

# KEYS: one broadcast's link counters (one account's)
# ARGV: field, by, field, by...
COUNT = LuaScript(
    "count_links",
    """
for i = 1, #ARGV, 2 do
  redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1])
end
return 1
""",
)

# KEYS: link hash, its click log
# ARGV: at, user agent, click log cap
# The log is a sorted set scored by the click's time, members '<n, 20 digits>:<agent>'
# (n counts the link's clicks, so equal times list the later click first); only the
# newest `cap` clicks by time stay.
# Returns {link (msgpack), stats hash, clicked set, version tag, unique member} (the
# last four say where links.py counts the click for a broadcast), or nil for an
# unknown code (nothing recorded).
CLICK = LuaScript(
    "click",
    """
local fields = redis.call('HMGET', KEYS[1], 'data', 'stats', 'clicked', 'tag', 'unique')
if not fields[1] then
  return false
end
local n = redis.call('HINCRBY', KEYS[1], 'clicks', 1)
redis.call('ZADD', KEYS[2], ARGV[1], string.format('%020d', n) .. ':' .. ARGV[2])
redis.call('ZREMRANGEBYRANK', KEYS[2], 0, -tonumber(ARGV[3]) - 1)
return fields
""",
)

# KEYS: a broadcast's link counters, its clicked set (one account's)
# ARGV: version tag, unique member
# Counts one click of the broadcast's version, and a unique one the first time
# this message (in this version) is clicked.
COUNT_CLICK = LuaScript(
    "count_click",
    """
redis.call('HINCRBY', KEYS[1], 'clicks:' .. ARGV[1], 1)
if redis.call('SADD', KEYS[2], ARGV[2]) == 1 then
  redis.call('HINCRBY', KEYS[1], 'unique:' .. ARGV[1], 1)
end
return 1
""",
)

# KEYS: totals, index, and for everyone's statistics also: minute bucket, minute index
#       (one account's totals, or everyone's - one slot either way)
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
if KEYS[3] then
  add(KEYS[3])
  redis.call('HSET', KEYS[3], 'minute', ARGV[7])
  redis.call('EXPIRE', KEYS[3], ARGV[9])
  redis.call('ZADD', KEYS[4], ARGV[7], ARGV[8])
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', '(' .. ARGV[10])
end
return 1
""",
)
