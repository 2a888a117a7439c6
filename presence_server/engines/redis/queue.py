"""The redis engine's send queue, on Redis Streams (docs/redis.md, "The send queue").

Each account's jobs live in the account's hash slot: per priority a sorted set
of the jobs waiting (``ps:{AC}:q:due:<p>``, scored by due_at: scheduled sends,
retries, released jobs), a stream with the consumer group ``send`` whose pending
entries are the jobs leased (``ps:{AC}:q:stream:<p>``; the consumer is the
worker) and a sorted set of their lease ends (``ps:{AC}:q:leases:<p>``); per job
a hash; and the account's depth counters. So ``create_batch`` stores a message
and its job in one script, and every change here is one script over one
account's keys (two claims never get the same job), which a Redis Cluster
allows. A claim moves the due jobs it takes into the stream and reads them
through the group (``XREADGROUP``), takes over ended leases (``XCLAIM``);
complete, cancel, retry and release acknowledge and delete the entry (the
scripts are in queue_scripts.py).

Workers find work through a global index per priority, ``ps:{q}:ready:<p>``:
account -> a time at or before the earliest moment one of its jobs of that
priority is claimable. It is a *lower bound*, kept from outside the scripts:
writers lower an entry (``ZADD LT``) after their script; a claim that visited
an account sets its entry to what the script left, then reads the account
again and lowers the entry if a writer got in between. An entry too early only
costs a visit that finds nothing (and raises it); ``next_due`` checks the
earliest entry against the account before answering. Writers that make jobs
claimable earlier (create_batch, reschedule, release) first record a pending
token in the index's slot and drop it after lowering: a writer that dies in
between leaves the token, and the next claim indexes that account again.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from redis.asyncio import Redis

from ..outbound import PRIORITIES, SendJob
from .batch import number
from .keys import KeySpace, as_text
from .queue_scripts import CLAIM, EARLIEST, PEEK, RELEASE, REMOVE_JOB, RESCHEDULE
from .scripts import LuaScript, Scripts, unavailable_on_redis_errors

# Ended leases one claim looks at per account (they compete with waiting jobs by
# due time). More than this many at once means that many workers died; the rest
# are claimed by the next calls.
EXPIRED_SCAN = 1000
# A pending token this old (wall-clock seconds) belongs to a writer that died
# between its script and its index update; the next claim repairs that account.
PENDING_STALE = 60.0
PENDING_REPAIRS = 100
# Claim rounds when concurrent claimers took the jobs a round aimed at.
CLAIM_ROUNDS = 4
# Stale index entries next_due raises before it answers with a lower bound.
NEXT_DUE_CHECKS = 20


def _priority(priority: int) -> int:
    if priority not in PRIORITIES:
        raise ValueError(f"priority must be one of {PRIORITIES}")
    return priority


class RedisSendQueue:
    def __init__(self, client: Redis, keys: KeySpace, scripts: Scripts) -> None:
        self._redis = client
        self._keys = keys
        self._scripts = scripts

    def _sets(self, account: str, priority: int) -> list[str]:
        return [self._keys.queue_due(account, priority), self._keys.queue_leases(account, priority)]

    def _prefixes(self, account: str) -> list[str]:
        """The due, lease and stream keys of the account without the priority (scripts add it)."""
        k = self._keys
        return [k.queue_due(account, 0)[:-1], k.queue_leases(account, 0)[:-1], k.queue_stream(account, 0)[:-1]]

    # -- the ready index -------------------------------------------------------------------

    async def _earliest(self, wanted: list[tuple[str, int]]) -> list[float | None]:
        """The true earliest claimable moment of each (account, priority), one round trip."""
        if not wanted:
            return []

        def build(pipe: Any) -> None:
            for account, priority in wanted:
                self._scripts.queue(pipe, EARLIEST, self._sets(account, priority), [])

        replies = await self._scripts.pipeline(build)
        return [None if r[0] is None else float(r[0]) for r in replies]

    async def _settle(self, priority: int, left: dict[str, float | None]) -> None:
        """Set each visited account's entry to what its script left (raise or remove),
        then read the accounts again and lower the entries a writer got under."""
        if not left:
            return
        ready = self._keys.queue_ready(priority)
        pipe = self._redis.pipeline(transaction=False)
        for account, at in left.items():
            if at is None:
                pipe.zrem(ready, account)
            else:
                pipe.zadd(ready, {account: at})
        await pipe.execute()
        accounts = list(left)
        truths = await self._earliest([(a, priority) for a in accounts])
        pipe = self._redis.pipeline(transaction=False)
        lowered = False
        for account, truth in zip(accounts, truths):
            at = left[account]
            if truth is not None and (at is None or truth < at):
                pipe.zadd(ready, {account: truth}, lt=True)
                lowered = True
        if lowered:
            await pipe.execute()

    async def _lowering(self, account: str, script: LuaScript, keys: list[str], args: list[Any]) -> tuple[Any, str]:
        """Step 1 and 2 of a write that makes jobs claimable earlier: the pending
        token, then the script. The caller lowers the index and drops the token."""
        token = f"{account}:{uuid.uuid4().hex}"
        await self._redis.zadd(self._keys.queue_pending(), {token: time.time()})
        return await self._scripts.call(script, keys, args), token

    async def _lowered(self, account: str, token: str, lows: dict[int, float]) -> None:
        pipe = self._redis.pipeline(transaction=False)
        for priority, at in lows.items():
            pipe.zadd(self._keys.queue_ready(priority), {account: at}, lt=True)
        pipe.zrem(self._keys.queue_pending(), token)
        await pipe.execute()

    async def _repair(self, stale: list[Any]) -> None:
        """Index again the accounts of writers that died between script and index."""
        for raw in stale:
            token = as_text(raw)
            account = token.rsplit(":", 1)[0]
            truths = await self._earliest([(account, p) for p in PRIORITIES])
            lows = {p: t for p, t in zip(PRIORITIES, truths) if t is not None}
            await self._lowered(account, token, lows)

    # -- SendQueue -------------------------------------------------------------------------

    @unavailable_on_redis_errors
    async def claim(self, now: float, priority: int, limit: int, lease_until: float, worker: str) -> list[SendJob]:
        _priority(priority)
        if limit <= 0:
            return []
        k = self._keys
        ready = k.queue_ready(priority)
        out: list[tuple[float, str, SendJob]] = []
        for _ in range(CLAIM_ROUNDS):
            remaining = limit - len(out)
            # The ready index and the pending tokens share a slot: one round trip.
            pipe = self._redis.pipeline(transaction=False)
            pipe.zrangebyscore(ready, "-inf", number(now), start=0, num=remaining)
            pipe.zrangebyscore(k.queue_pending(), "-inf", time.time() - PENDING_STALE, start=0, num=PENDING_REPAIRS)
            due, stale = await pipe.execute()
            if stale:
                await self._repair(stale)
                due = await self._redis.zrangebyscore(ready, "-inf", number(now), start=0, num=remaining)
            accounts = [as_text(a) for a in due]
            if not accounts:
                break
            want = await self._share(accounts, priority, now, remaining)
            got, left = await self._claim_from(want, priority, now, lease_until, worker)
            await self._settle(priority, left)
            if got:
                await self._redis.sadd(k.queue_consumer(worker), *{j.account_sid for _, _, j in got})
            out += got
            # Another claimer took some of what this round aimed at: try again.
            short = sum(want.values()) > len(got)
            if len(out) >= limit or not short:
                break
        out.sort(key=lambda entry: (entry[0], entry[1]))
        return [job for _, _, job in out]

    async def _share(self, accounts: list[str], priority: int, now: float, limit: int) -> dict[str, int]:
        """How many jobs to claim from each account so that together they are the
        ``limit`` earliest (due, then enqueue order) across the accounts."""
        if len(accounts) == 1:
            return {accounts[0]: limit}
        def build(pipe: Any) -> None:
            for a in accounts:
                args = [number(now), limit, self._keys.queue_job_prefix(a), EXPIRED_SCAN]
                self._scripts.queue(pipe, PEEK, self._sets(a, priority), args)

        replies = await self._scripts.pipeline(build)
        merged = sorted(
            (float(reply[i]), as_text(reply[i + 1]), account)
            for account, reply in zip(accounts, replies)
            for i in range(0, len(reply), 2)
        )[:limit]
        want = {account: 0 for account in accounts}  # visited even when nothing is taken: settled
        for _, _, account in merged:
            want[account] += 1
        return want

    async def _claim_from(
        self, want: dict[str, int], priority: int, now: float, lease_until: float, worker: str
    ) -> tuple[list[tuple[float, str, SendJob]], dict[str, float | None]]:
        accounts = list(want)

        def build(pipe: Any) -> None:
            for a in accounts:
                args = [number(now), want[a], number(lease_until), worker, self._keys.queue_job_prefix(a), EXPIRED_SCAN]
                keys = [*self._sets(a, priority), self._keys.queue_stream(a, priority)]
                self._scripts.queue(pipe, CLAIM, keys, args)

        replies = await self._scripts.pipeline(build)
        got: list[tuple[float, str, SendJob]] = []
        left: dict[str, float | None] = {}
        for account, (jobs, earliest) in zip(accounts, replies):
            left[account] = None if earliest is None else float(earliest)
            for sid, p, due, sender, attempt, member in jobs:
                job = SendJob(account, as_text(sid), int(p), float(due), as_text(sender), int(attempt))
                got.append((job.due_at, as_text(member), job))
        return got, left

    @unavailable_on_redis_errors
    async def complete(self, account_sid: str, message_sid: str) -> None:
        await self._remove(account_sid, message_sid, "")

    @unavailable_on_redis_errors
    async def reschedule(
        self, account_sid: str, message_sid: str, due_at: float, attempt: int, priority: int | None = None
    ) -> bool:
        if attempt < 0:
            raise ValueError("attempt must not be negative")
        new_priority = "" if priority is None else _priority(priority)
        reply, token = await self._lowering(
            account_sid,
            RESCHEDULE,
            [self._keys.queue_job(account_sid, message_sid)],
            [*self._prefixes(account_sid), number(due_at), attempt, new_priority],
        )
        await self._lowered(account_sid, token, {} if reply is None else {int(reply): due_at})
        return reply is not None

    @unavailable_on_redis_errors
    async def cancel(self, account_sid: str, message_sid: str, now: float) -> bool:
        return await self._remove(account_sid, message_sid, number(now))

    async def _remove(self, account_sid: str, message_sid: str, now: str) -> bool:
        # No index write: removing a job only moves the account's earliest moment
        # later, and an entry too early is allowed.
        reply = await self._scripts.call(
            REMOVE_JOB,
            [self._keys.queue_job(account_sid, message_sid), self._keys.queue_depth(account_sid)],
            [*self._prefixes(account_sid), now],
        )
        return bool(reply)

    @unavailable_on_redis_errors
    async def release(self, worker: str) -> int:
        # The worker is a consumer in the group of every account it claimed from; its
        # pending entries there are its leases (and ended leases nobody took since).
        key = self._keys.queue_consumer(worker)
        released = 0
        for account in sorted(as_text(raw) for raw in await self._redis.smembers(key)):
            k = self._keys
            due, leases, _ = self._prefixes(account)
            reply, token = await self._lowering(
                account,
                RELEASE,
                [k.queue_stream(account, p) for p in PRIORITIES],
                [worker, due, leases, k.queue_job_prefix(account)],
            )
            lows: dict[int, float] = {}
            for i in range(0, len(reply), 2):
                p, at = int(reply[i]), float(reply[i + 1])
                lows[p] = min(at, lows.get(p, at))
            await self._lowered(account, token, lows)
            released += len(reply) // 2
        await self._redis.delete(key)
        return released

    @unavailable_on_redis_errors
    async def depth(self, account_sid: str | None = None, sender: str | None = None) -> int:
        if account_sid is None:
            if sender is not None:
                raise ValueError("depth by sender needs the account_sid")
            # Every account with jobs has an entry in a ready index (lower bounds are
            # never removed while jobs remain): sum their counters. O(accounts).
            pipe = self._redis.pipeline(transaction=False)
            for p in PRIORITIES:
                pipe.zrange(self._keys.queue_ready(p), 0, -1)
            accounts = sorted({as_text(a) for entries in await pipe.execute() for a in entries})
            if not accounts:
                return 0
            pipe = self._redis.pipeline(transaction=False)
            for account in accounts:
                pipe.hget(self._keys.queue_depth(account), "*")
            return sum(int(v) for v in await pipe.execute() if v is not None)
        field = "*" if sender is None else f"s:{sender}"
        value = await self._redis.hget(self._keys.queue_depth(account_sid), field)
        return 0 if value is None else int(value)

    @unavailable_on_redis_errors
    async def next_due(self) -> float | None:
        # The earliest entry is exact once checked against its account: every other
        # entry is later, and entries are never later than their accounts.
        for _ in range(NEXT_DUE_CHECKS):
            pipe = self._redis.pipeline(transaction=False)
            for p in PRIORITIES:
                pipe.zrange(self._keys.queue_ready(p), 0, 0, withscores=True)
            heads = [(float(entries[0][1]), p, as_text(entries[0][0])) for p, entries in zip(PRIORITIES, await pipe.execute()) if entries]
            if not heads:
                return None
            at, priority, account = min(heads)
            (truth,) = await self._earliest([(account, priority)])
            if truth == at:
                return at
            await self._settle(priority, {account: truth})
        return at  # still a lower bound: a worker wakes early and finds nothing
