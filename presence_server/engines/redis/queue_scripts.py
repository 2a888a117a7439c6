"""Lua scripts of the send queue on Redis Streams and of ``create_batch`` (see
queue.py, messages.py).

Each account's jobs live in the account's hash slot (``ps:{AC}:q:...``), so one
script stores message records and their jobs together, and every script here
touches one account's keys only (legal on a Redis Cluster). A job is
a hash ``ps:{AC}:q:job:<sid>`` and, by one member ``<order, 20 digits>:<sid>``,
either in its priority's due set (waiting: scheduled, due, to be retried or
released; scored by due_at) or, while leased, in its priority's lease set
(scored by lease_until) *and* an entry of its priority's stream
``ps:{AC}:q:stream:<p>``, pending in the stream's consumer group ``send`` under
the worker that holds it. The job hash names its entry (``entry``) while leased.
``order`` is the enqueue order: the server's clock in microseconds, kept strictly
increasing per account, so jobs due at the same time sort by when they were
enqueued, across accounts too. The depth counters (``ps:{AC}:q:depth``) change in
the same script as the jobs they count.

A job enters the stream when a claim hands it out: ``XADD`` and ``XREADGROUP
... >`` in the same script, so outside a script the stream holds no entry that
was not delivered, and ``>`` reads exactly the jobs the claim chose (earliest
due first, across accounts too: the due set is the order). A lease that ended
moves to the next worker by ``XCLAIM``. Completing or cancelling a job
acknowledges and deletes its entry (``XACK`` + ``XDEL``); a stream left empty is
deleted, and with it its group and the consumers of workers gone since.

Lease ends are the port's ``lease_until``, on the caller's clock (the same clock
as ``now`` and ``due_at``), so the lease set decides when a lease has ended, not
the entry's idle time on the server's clock; ``XCLAIM`` then runs with a
min-idle-time of 0, inside the script that made that decision.

Keys derived inside a script (a job's hash from its member, a priority's sets
and stream) are built from prefixes passed in ARGV; they carry the same hash
tag as the declared keys, so they are in the same slot. Times travel as the
strings Python prints (``repr``) and are compared with ``tonumber``.
"""

from __future__ import annotations

from .scripts import LuaScript

_QUEUE = """
local GROUP = 'send'

-- A job's hash from its member: members are '<order, 20 digits>:<sid>'.
local function job_key(prefix, member)
  return prefix .. string.sub(member, 22)
end

local function count(depth, sender, by)
  for _, f in ipairs({'*', 's:' .. sender}) do
    if redis.call('HINCRBY', depth, f, by) <= 0 then
      redis.call('HDEL', depth, f)
    end
  end
end

-- The earliest moment a job of one priority is claimable: the first due time or
-- the first lease end (a string as Redis prints scores), or false when there is none.
local function earliest(due, leases)
  local a = redis.call('ZRANGE', due, 0, 0, 'WITHSCORES')[2]
  local b = redis.call('ZRANGE', leases, 0, 0, 'WITHSCORES')[2]
  if a and b then
    if tonumber(b) < tonumber(a) then
      return b
    end
    return a
  end
  return a or b or false
end

-- A delivery ends: the entry leaves the group's pending list and the stream. An
-- empty stream is deleted with its group, so the consumers of workers that died
-- do not pile up in an account's group.
local function settle(stream, entry)
  redis.call('XACK', stream, GROUP, entry)
  redis.call('XDEL', stream, entry)
  if redis.call('XLEN', stream) == 0 then
    redis.call('DEL', stream)
  end
end

-- Takes a job out of its due set, or out of its lease set and stream (it stays
-- stored). Returns its member.
local function unlist(job, due_prefix, leases_prefix, stream_prefix)
  local p, member, entry = unpack(redis.call('HMGET', job, 'priority', 'member', 'entry'))
  redis.call('ZREM', due_prefix .. p, member)
  redis.call('ZREM', leases_prefix .. p, member)
  if entry then
    settle(stream_prefix .. p, entry)
  end
  redis.call('HDEL', job, 'worker', 'lease', 'entry')
  return member
end

-- Up to `limit` claimable jobs of one priority, earliest due first (then member):
-- waiting ones due by now, and leased ones whose lease ended before now.
local function candidates(due, leases, now, limit, job_prefix, scan)
  local out = {}
  local waiting = redis.call('ZRANGEBYSCORE', due, '-inf', now, 'WITHSCORES', 'LIMIT', 0, limit)
  for i = 1, #waiting, 2 do
    out[#out + 1] = {tonumber(waiting[i + 1]), waiting[i], false, waiting[i + 1]}
  end
  for _, member in ipairs(redis.call('ZRANGEBYSCORE', leases, '-inf', '(' .. now, 'LIMIT', 0, scan)) do
    local at = redis.call('HGET', job_key(job_prefix, member), 'due')
    if at and tonumber(at) <= tonumber(now) then
      out[#out + 1] = {tonumber(at), member, true, at}
    end
  end
  table.sort(out, function(x, y)
    if x[1] ~= y[1] then
      return x[1] < y[1]
    end
    return x[2] < y[2]
  end)
  return out
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

# KEYS: the account's order counter, depth counters,
#       per record: record, index, seq, then [broadcast index] [sender hash] as its
#       flags say ('b', 's'); per job: job hash, due set;
#       then, with a broadcast: its record, index, seq.
# ARGV: n_records, n_jobs, has_broadcast ('1'/'0'),
#       per record: sid, date_created, flags, to, from, n_fields, field, value...
#       per job: sid, priority, due_at, sender, attempt;
#       broadcast: sid, date_created, n_fields, field, value...
# Every key is one account's (one slot). Returns 1, or the first sid already
# stored - a record, a queued job, the broadcast - and then writes nothing.
# (Sid claims, which are global, are checked by messages.py before this runs.)
CREATE_BATCH = LuaScript(
    "create_batch",
    _QUEUE
    + _STICK
    + """
local nrec, njob = tonumber(ARGV[1]), tonumber(ARGV[2])
local records, jobs = {}, {}
local k, a = 3, 4
for i = 1, nrec do
  local r = {key = KEYS[k], index = KEYS[k + 1], seq = KEYS[k + 2]}
  k = k + 3
  r.sid, r.date, r.flags, r.to, r.from = ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4]
  r.first, r.nfields = a + 6, tonumber(ARGV[a + 5])
  a = r.first + 2 * r.nfields
  for _, flag in ipairs({'b', 's'}) do
    if string.find(r.flags, flag, 1, true) then
      r[flag] = KEYS[k]
      k = k + 1
    end
  end
  if redis.call('EXISTS', r.key) == 1 then
    return r.sid
  end
  records[i] = r
end
for i = 1, njob do
  local j = {key = KEYS[k], due = KEYS[k + 1], sid = ARGV[a], priority = ARGV[a + 1], at = ARGV[a + 2],
             sender = ARGV[a + 3], attempt = ARGV[a + 4]}
  k, a = k + 2, a + 5
  if redis.call('EXISTS', j.key) == 1 then
    return j.sid
  end
  jobs[i] = j
end
local bc
if ARGV[3] == '1' then
  bc = {key = KEYS[k], index = KEYS[k + 1], seq = KEYS[k + 2], sid = ARGV[a], date = ARGV[a + 1], first = a + 3,
        nfields = tonumber(ARGV[a + 2])}
  if redis.call('EXISTS', bc.key) == 1 then
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
  local member = store(r.key, r.index, r.seq, r.sid, r.date, r.first, r.nfields)
  if r.b then
    redis.call('ZADD', r.b, r.date, member)
  end
  if r.s then
    stick(r.s, r.to, r.date, member, r.from)
  end
end
if njob > 0 then
  -- Enqueue order: the server's clock in microseconds, strictly increasing per account.
  local now = redis.call('TIME')
  local order = math.max(tonumber(now[1]) * 1000000 + tonumber(now[2]), tonumber(redis.call('GET', KEYS[1]) or '0') + 1)
  for _, j in ipairs(jobs) do
    local member = string.format('%020d', order) .. ':' .. j.sid
    order = order + 1
    redis.call('HSET', j.key, 'sid', j.sid, 'priority', j.priority, 'due', j.at, 'sender', j.sender,
               'attempt', j.attempt, 'member', member)
    redis.call('ZADD', j.due, j.at, member)
    count(KEYS[2], j.sender, 1)
  end
  redis.call('SET', KEYS[1], string.format('%d', order - 1))
end
if bc then
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

# KEYS: due set, lease set (one account's, one priority)
# ARGV: now, limit, job prefix, expired-lease scan cap
# Read only: [due, member, ...] of the jobs claim would take, in its order.
PEEK = LuaScript(
    "peek_jobs",
    _QUEUE
    + """
local out = {}
for _, c in ipairs(candidates(KEYS[1], KEYS[2], ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4])) do
  if #out >= 2 * tonumber(ARGV[2]) then
    break
  end
  out[#out + 1] = c[4]
  out[#out + 1] = c[2]
end
return out
""",
)

# KEYS: due set, lease set, stream (one account's, one priority)
# ARGV: now, limit, lease_until, worker, job prefix, expired-lease scan cap
# Waiting jobs are added to the stream and read by the worker through the group;
# jobs whose lease ended are XCLAIMed from the worker that held them (which is
# deleted from the group once it holds nothing there).
# Returns {jobs, earliest}: per claimed job [sid, priority, due, sender, attempt,
# member]; then the earliest claimable moment left in this priority (or false).
CLAIM = LuaScript(
    "claim",
    _QUEUE
    + """
local limit, worker, stream = tonumber(ARGV[2]), ARGV[4], KEYS[3]
local out, fresh = {}, 0
if limit > 0 then
  for i, c in ipairs(candidates(KEYS[1], KEYS[2], ARGV[1], limit, ARGV[5], ARGV[6])) do
    if i > limit then
      break
    end
    local member, leased = c[2], c[3]
    local job = job_key(ARGV[5], member)
    if leased then
      local old, entry = unpack(redis.call('HMGET', job, 'worker', 'entry'))
      redis.call('XCLAIM', stream, GROUP, worker, 0, entry)
      if old ~= worker and #redis.call('XPENDING', stream, GROUP, '-', '+', 1, old) == 0 then
        redis.call('XGROUP', 'DELCONSUMER', stream, GROUP, old)
      end
    else
      redis.call('ZREM', KEYS[1], member)
      if redis.call('EXISTS', stream) == 0 then
        redis.call('XGROUP', 'CREATE', stream, GROUP, '$', 'MKSTREAM')
      end
      local sid = redis.call('HGET', job, 'sid')
      redis.call('HSET', job, 'entry', redis.call('XADD', stream, '*', 'sid', sid))
      fresh = fresh + 1
    end
    redis.call('ZADD', KEYS[2], ARGV[3], member)
    redis.call('HSET', job, 'worker', worker, 'lease', ARGV[3])
    out[#out + 1] = redis.call('HMGET', job, 'sid', 'priority', 'due', 'sender', 'attempt', 'member')
  end
end
if fresh > 0 then
  -- Every other entry was delivered by the script that added it, so '>' reads
  -- exactly the ones added above: they become pending under this worker.
  redis.call('XREADGROUP', 'GROUP', GROUP, worker, 'COUNT', fresh, 'STREAMS', stream, '>')
end
return {out, earliest(KEYS[1], KEYS[2])}
""",
)

# KEYS: job, depth (one account's)
# ARGV: due prefix, leases prefix, stream prefix, now ('' for complete: remove even when leased)
# Returns 1 when the job was removed, 0 when it is not there or (cancel) leased: a
# lease is held until it ends before now (lease_until < now), as claim sees it.
# A leased job's entry is acknowledged and deleted in the same step.
REMOVE_JOB = LuaScript(
    "remove_job",
    _QUEUE
    + """
local sender, lease = unpack(redis.call('HMGET', KEYS[1], 'sender', 'lease'))
if not sender then
  return 0
end
if ARGV[4] ~= '' and lease and tonumber(lease) >= tonumber(ARGV[4]) then
  return 0
end
unlist(KEYS[1], ARGV[1], ARGV[2], ARGV[3])
redis.call('DEL', KEYS[1])
count(KEYS[2], sender, -1)
return 1
""",
)

# KEYS: job (one account's)
# ARGV: due prefix, leases prefix, stream prefix, due_at, attempt, priority ('' keeps it)
# A retry (or a throttled send) goes back to the due set: its entry is
# acknowledged and deleted; the job keeps its member, so its place among jobs
# due at the same time. Returns the priority it is now due in, or false when
# there is no such job.
RESCHEDULE = LuaScript(
    "reschedule",
    _QUEUE
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then
  return false
end
local member = unlist(KEYS[1], ARGV[1], ARGV[2], ARGV[3])
local priority = ARGV[6]
if priority == '' then
  priority = redis.call('HGET', KEYS[1], 'priority')
end
redis.call('HSET', KEYS[1], 'priority', priority, 'due', ARGV[4], 'attempt', ARGV[5])
redis.call('ZADD', ARGV[1] .. priority, ARGV[4], member)
return priority
""",
)

# KEYS: the account's streams, one per priority
# ARGV: worker, due prefix, leases prefix, job prefix
# Every entry pending under the worker (leased to it, or whose lease ended and
# that nobody claimed since) goes back to its due set, and the worker leaves the
# groups. Returns [priority, due, ...] of the jobs released.
RELEASE = LuaScript(
    "release",
    _QUEUE
    + """
local out = {}
for _, stream in ipairs(KEYS) do
  while redis.call('EXISTS', stream) == 1 do
    local pending = redis.call('XPENDING', stream, GROUP, '-', '+', 100, ARGV[1])
    if #pending == 0 then
      redis.call('XGROUP', 'DELCONSUMER', stream, GROUP, ARGV[1])
      break
    end
    for _, p in ipairs(pending) do
      local sid = redis.call('XRANGE', stream, p[1], p[1])[1][2][2]
      local job = ARGV[4] .. sid
      local priority, at, member = unpack(redis.call('HMGET', job, 'priority', 'due', 'member'))
      redis.call('ZREM', ARGV[3] .. priority, member)
      redis.call('ZADD', ARGV[2] .. priority, at, member)
      redis.call('HDEL', job, 'worker', 'lease', 'entry')
      settle(stream, p[1])
      out[#out + 1] = priority
      out[#out + 1] = at
    end
  end
end
return out
""",
)

# KEYS: due set, lease set of each priority asked about (one account's)
# Returns the earliest claimable moment of each pair (or false), in order.
EARLIEST = LuaScript(
    "queue_earliest",
    _QUEUE
    + """
local out = {}
for i = 1, #KEYS, 2 do
  out[#out + 1] = earliest(KEYS[i], KEYS[i + 1])
end
return out
""",
)
