"""The redis engine's send queue: one for all accounts (docs/redis.md, "Send queue").

Per priority, a sorted set of the jobs waiting (``ps:q:due:<p>``, scored by
due_at) and one of the jobs leased (``ps:q:leases:<p>``, scored by
lease_until); per job a hash (``ps:q:job:<id>``); per worker the set of its
leases (``ps:q:worker:<worker>``, for ``release``); and the depth counters
(``ps:q:depth``). Jobs are created by ``MessageStore.create_batch`` (the
``create_batch`` script); every change here is one script of
queue_scripts.py, so two workers claiming at once never get the same job.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from ..outbound import PRIORITIES, SendJob
from .batch import number
from .keys import KeySpace, as_text
from .queue_scripts import CLAIM, RELEASE, REMOVE_JOB, RESCHEDULE
from .scripts import Scripts, unavailable_on_redis_errors

# Ended leases one claim looks at (they compete with waiting jobs by due time).
# More than this many at once means that many workers died; the rest are claimed
# by the next calls.
EXPIRED_SCAN = 1000


def _priority(priority: int) -> int:
    if priority not in PRIORITIES:
        raise ValueError(f"priority must be one of {PRIORITIES}")
    return priority


class RedisSendQueue:
    def __init__(self, client: Redis, keys: KeySpace, scripts: Scripts) -> None:
        self._redis = client
        self._keys = keys
        self._scripts = scripts
        self._prefixes = [keys.queue_due_prefix(), keys.queue_leases_prefix(), keys.queue_worker_prefix()]

    @unavailable_on_redis_errors
    async def claim(self, now: float, priority: int, limit: int, lease_until: float, worker: str) -> list[SendJob]:
        _priority(priority)
        if limit <= 0:
            return []
        k = self._keys
        reply = await self._scripts.call(
            CLAIM,
            [k.queue_due(priority), k.queue_leases(priority), k.queue_worker(worker)],
            [number(now), limit, number(lease_until), worker, k.queue_job_prefix(), k.queue_worker_prefix(), EXPIRED_SCAN],
        )
        return [
            SendJob(as_text(account), as_text(sid), int(p), float(due), as_text(sender), int(attempt))
            for account, sid, p, due, sender, attempt in reply
        ]

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
        reply = await self._scripts.call(
            RESCHEDULE,
            [self._keys.queue_job(account_sid, message_sid)],
            [*self._prefixes, number(due_at), attempt, new_priority],
        )
        return bool(reply)

    @unavailable_on_redis_errors
    async def cancel(self, account_sid: str, message_sid: str, now: float) -> bool:
        return await self._remove(account_sid, message_sid, number(now))

    async def _remove(self, account_sid: str, message_sid: str, now: str) -> bool:
        reply = await self._scripts.call(
            REMOVE_JOB,
            [self._keys.queue_job(account_sid, message_sid), self._keys.queue_depth()],
            [*self._prefixes, now],
        )
        return bool(reply)

    @unavailable_on_redis_errors
    async def release(self, worker: str) -> int:
        k = self._keys
        reply = await self._scripts.call(
            RELEASE,
            [k.queue_worker(worker)],
            [worker, k.queue_job_prefix(), k.queue_due_prefix(), k.queue_leases_prefix()],
        )
        return int(reply)

    @unavailable_on_redis_errors
    async def depth(self, account_sid: str | None = None, sender: str | None = None) -> int:
        if account_sid is None:
            if sender is not None:
                raise ValueError("depth by sender needs the account_sid")
            field = "*"
        elif sender is None:
            field = f"a:{account_sid}"
        else:
            field = f"s:{len(account_sid.encode())}:{account_sid}:{sender}"  # as the scripts name it
        value = await self._redis.hget(self._keys.queue_depth(), field)
        return 0 if value is None else int(value)

    @unavailable_on_redis_errors
    async def next_due(self) -> float | None:
        pipe = self._redis.pipeline(transaction=False)
        for priority in PRIORITIES:
            pipe.zrange(self._keys.queue_due(priority), 0, 0, withscores=True)
            pipe.zrange(self._keys.queue_leases(priority), 0, 0, withscores=True)
        firsts: list[Any] = await pipe.execute()
        times = [entries[0][1] for entries in firsts if entries]
        return min(times) if times else None
