"""Lua scripts of the send queue and of ``create_batch`` (see queue.py, batch.py).

The queue is global (one for all accounts, keys ``ps:q:...`` without a hash
tag). A job is a hash ``ps:q:job:<job id>`` and, by one member
``<seq, 20 digits>:<job id>``, either in its priority's due set (scored by
due_at) or, while leased, in its priority's lease set (scored by lease_until)
and in its worker's set. ``seq`` is the enqueue order: members of jobs due at
the same time sort by it. The depth counters (``ps:q:depth``) change in the
same script as the jobs they count.

Keys derived inside a script (a job's hash from its member, a worker's set or a
priority's sets from the job's fields) are built from prefixes passed in ARGV.
All of this - and ``create_batch``, which writes an account's record keys and
the global queue keys in one script - needs a single Redis (docs/redis.md).

Times and numbers go to Redis as the strings Python prints (``repr``) and are
compared in Lua with ``tonumber``, which parses them exactly; nothing computed
in Lua is returned as a number.
"""

from __future__ import annotations

from .scripts import LuaScript

_QUEUE = """
-- Job hash -> its id: members are '<seq, 20 digits>:<job id>'.
local function job_key(prefix, member)
  return prefix .. string.sub(member, 22)
end

local function count(depth, account, sender, by)
  local fields = {'*', 'a:' .. account, 's:' .. #account .. ':' .. account .. ':' .. sender}
  for _, f in ipairs(fields) do
    if redis.call('HINCRBY', depth, f, by) <= 0 then
      redis.call('HDEL', depth, f)
    end
  end
end

-- Takes a job out of its due or lease set and its worker's set (it stays stored).
local function unlist(job, due_prefix, leases_prefix, worker_prefix)
  local p, member, worker = unpack(redis.call('HMGET', job, 'priority', 'member', 'worker'))
  redis.call('ZREM', due_prefix .. p, member)
  redis.call('ZREM', leases_prefix .. p, member)
  if worker then
    redis.call('SREM', worker_prefix .. worker, member)
    redis.call('HDEL', job, 'worker', 'lease')
  end
  return member
end
"""

# The sticky sender: a destination's entry is '<date_created>|<member>|<from>' of the
# newest record to it (by date_created, then store order, as listings are sorted).
_STICK = """
local function stick(hash, to, date, member, from)
  local old = redis.call('HGET', hash, to)
  if old then
    local a = string.find(old, '|', 1, true)
    local b = string.find(old, '|', a + 1, true)
    local old_date, old_member = tonumber(string.sub(old, 1, a - 1)), string.sub(old, a + 1, b - 1)
    local d = tonumber(date)
    if d < old_date or (d == old_date and member < old_member) then
      return
    end
  end
  redis.call('HSET', hash, to, date .. '|' .. member .. '|' .. from)
end
"""

# KEYS: queue seq, queue depth,
#       per record: sid claim, record, index, seq, then [provider index] [broadcast index]
#       [sender hash] as its flags say ('p', 'b', 's');
#       per job: job hash, due set; then, with a broadcast: its sid claim, record, index, seq.
# ARGV: n_records, n_jobs, has_broadcast ('1'/'0'),
#       per record: account, sid, date_created, flags, to, from, n_fields, field, value...
#       per job: job id, account, message sid, priority, due_at, sender, attempt;
#       broadcast: account, sid, date_created, n_fields, field, value...
# Returns 1, or the first sid already stored (then nothing was written).
CREATE_BATCH = LuaScript(
    "create_batch",
    _QUEUE
    + _STICK
    + """
local nrec, njob = tonumber(ARGV[1]), tonumber(ARGV[2])
local records, jobs, seen = {}, {}, {}
local k, a = 3, 4
for i = 1, nrec do
  local r = {claim = KEYS[k], key = KEYS[k + 1], index = KEYS[k + 2], seq = KEYS[k + 3]}
  k = k + 4
  r.account, r.sid, r.date, r.flags, r.to, r.from = ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], ARGV[a + 5]
  r.first, r.nfields = a + 7, tonumber(ARGV[a + 6])
  a = r.first + 2 * r.nfields
  for _, flag in ipairs({'p', 'b', 's'}) do
    if string.find(r.flags, flag, 1, true) then
      r[flag] = KEYS[k]
      k = k + 1
    end
  end
  if seen[r.claim] then
    return r.sid
  end
  seen[r.claim] = true
  local owner = redis.call('GET', r.claim)
  if (owner and owner ~= r.account) or redis.call('EXISTS', r.key) == 1 then
    return r.sid
  end
  records[i] = r
end
for i = 1, njob do
  local j = {key = KEYS[k], due = KEYS[k + 1], id = ARGV[a], account = ARGV[a + 1], sid = ARGV[a + 2],
             priority = ARGV[a + 3], at = ARGV[a + 4], sender = ARGV[a + 5], attempt = ARGV[a + 6]}
  k, a = k + 2, a + 7
  if seen[j.key] or redis.call('EXISTS', j.key) == 1 then
    return j.sid
  end
  seen[j.key] = true
  jobs[i] = j
end
local bc
if ARGV[3] == '1' then
  bc = {claim = KEYS[k], key = KEYS[k + 1], index = KEYS[k + 2], seq = KEYS[k + 3], account = ARGV[a],
        sid = ARGV[a + 1], date = ARGV[a + 2], first = a + 4, nfields = tonumber(ARGV[a + 3])}
  local owner = redis.call('GET', bc.claim)
  if (owner and owner ~= bc.account) or redis.call('EXISTS', bc.key) == 1 then
    return bc.sid
  end
end

local function store(key, index, seq, sid, date, first, nfields)
  local member = string.format('%020d', redis.call('INCR', seq)) .. ':' .. sid
  local fields = {'~member', member}
  for i = first, first + 2 * nfields - 1 do
    fields[#fields + 1] = ARGV[i]
  end
  redis.call('HSET', key, unpack(fields))
  redis.call('ZADD', index, date, member)
  return member
end

for _, r in ipairs(records) do
  redis.call('SET', r.claim, r.account)
  local member = store(r.key, r.index, r.seq, r.sid, r.date, r.first, r.nfields)
  if r.p then
    redis.call('ZADD', r.p, r.date, r.account .. ':' .. r.sid)
  end
  if r.b then
    redis.call('ZADD', r.b, r.date, member)
  end
  if r.s then
    stick(r.s, r.to, r.date, member, r.from)
  end
end
for _, j in ipairs(jobs) do
  local member = string.format('%020d', redis.call('INCR', KEYS[1])) .. ':' .. j.id
  redis.call('HSET', j.key, 'account', j.account, 'sid', j.sid, 'priority', j.priority, 'due', j.at,
             'sender', j.sender, 'attempt', j.attempt, 'member', member)
  redis.call('ZADD', j.due, j.at, member)
  count(KEYS[2], j.account, j.sender, 1)
end
if bc then
  redis.call('SET', bc.claim, bc.account)
  store(bc.key, bc.index, bc.seq, bc.sid, bc.date, bc.first, bc.nfields)
end
return 1
""",
)

# KEYS: record, sender hash
# ARGV: to, date_created, from
# After an update of a record of a messaging service: its from becomes the sticky
# sender when it is (still) the newest record to that destination.
STICK = LuaScript(
    "stick",
    _STICK
    + """
local member = redis.call('HGET', KEYS[1], '~member')
if not member then
  return 0
end
stick(KEYS[2], ARGV[1], ARGV[2], member, ARGV[3])
return 1
""",
)

# KEYS: due set, lease set, worker set (all of this priority / worker)
# ARGV: now, limit, lease_until, worker, job prefix, worker prefix, expired-lease scan cap
# Returns [account, sid, priority, due, sender, attempt] per claimed job.
CLAIM = LuaScript(
    "claim",
    _QUEUE
    + """
local now, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
if limit <= 0 then
  return {}
end
local candidates = {}
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0, limit)
for i = 1, #due, 2 do
  candidates[#candidates + 1] = {tonumber(due[i + 1]), due[i], false}
end
-- Leases that ended before now are claimable again, in due order among the waiting jobs.
for _, member in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[1], 'LIMIT', 0, ARGV[7])) do
  local at = tonumber(redis.call('HGET', job_key(ARGV[5], member), 'due'))
  if at and at <= now then
    candidates[#candidates + 1] = {at, member, true}
  end
end
table.sort(candidates, function(x, y)
  if x[1] ~= y[1] then
    return x[1] < y[1]
  end
  return x[2] < y[2]
end)
local out = {}
for i = 1, math.min(limit, #candidates) do
  local member, leased = candidates[i][2], candidates[i][3]
  local job = job_key(ARGV[5], member)
  if leased then
    local previous = redis.call('HGET', job, 'worker')
    if previous then
      redis.call('SREM', ARGV[6] .. previous, member)
    end
  else
    redis.call('ZREM', KEYS[1], member)
  end
  redis.call('ZADD', KEYS[2], ARGV[3], member)
  redis.call('SADD', KEYS[3], member)
  redis.call('HSET', job, 'worker', ARGV[4], 'lease', ARGV[3])
  out[#out + 1] = redis.call('HMGET', job, 'account', 'sid', 'priority', 'due', 'sender', 'attempt')
end
return out
""",
)

# KEYS: job, depth
# ARGV: due prefix, leases prefix, worker prefix, now ('' for complete: remove even when leased)
# Returns 1 when the job was removed, 0 when it is not there or (cancel) leased: a
# lease is held until it ends before now (lease_until < now), as claim sees it.
REMOVE_JOB = LuaScript(
    "remove_job",
    _QUEUE
    + """
local account, sender, lease = unpack(redis.call('HMGET', KEYS[1], 'account', 'sender', 'lease'))
if not account then
  return 0
end
if ARGV[4] ~= '' and lease and tonumber(lease) >= tonumber(ARGV[4]) then
  return 0
end
unlist(KEYS[1], ARGV[1], ARGV[2], ARGV[3])
redis.call('DEL', KEYS[1])
count(KEYS[2], account, sender, -1)
return 1
""",
)

# KEYS: job
# ARGV: due prefix, leases prefix, worker prefix, due_at, attempt, priority ('' keeps it)
# The job keeps its member, so its place among jobs due at the same time.
RESCHEDULE = LuaScript(
    "reschedule",
    _QUEUE
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
local member = unlist(KEYS[1], ARGV[1], ARGV[2], ARGV[3])
local priority = ARGV[6]
if priority == '' then
  priority = redis.call('HGET', KEYS[1], 'priority')
end
redis.call('HSET', KEYS[1], 'priority', priority, 'due', ARGV[4], 'attempt', ARGV[5])
redis.call('ZADD', ARGV[1] .. priority, ARGV[4], member)
return 1
""",
)

# KEYS: worker set
# ARGV: worker, job prefix, due prefix, leases prefix
# Every job leased to the worker goes back to its due set. Returns how many.
RELEASE = LuaScript(
    "release",
    _QUEUE
    + """
local n = 0
for _, member in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local job = job_key(ARGV[2], member)
  local worker, priority, at = unpack(redis.call('HMGET', job, 'worker', 'priority', 'due'))
  if worker == ARGV[1] then
    redis.call('ZREM', ARGV[4] .. priority, member)
    redis.call('ZADD', ARGV[3] .. priority, at, member)
    redis.call('HDEL', job, 'worker', 'lease')
    n = n + 1
  end
end
redis.call('DEL', KEYS[1])
return n
""",
)
