"""Provider rate limits in Redis: one key per limiter holding the buckets of
protocol.plans.ShareLimiter, updated with optimistic locking (WATCH, then
MULTI/EXEC), so the one pure implementation decides in every process and no
Lua copy of it can drift. A send costs two round trips; a conflict (another
process took a token in between) retries at once, a few times, then answers
"wait a moment" rather than spin.

The key also records the limit it was computed for: when a provider's rate,
burst or shares change in the config, the first process to see the new limit
starts the buckets afresh (full)."""

from __future__ import annotations

import msgpack
import redis.asyncio
import redis.exceptions

from ..outbound import RateLimit, take_or_wait
from .keys import KeySpace
from .scripts import unavailable_on_redis_errors

MAX_CONFLICTS = 8
# Idle limiters expire: a full bucket is what a missing key means anyway.
IDLE_TTL = 3600
CONTENDED_WAIT = 0.005


class RedisRateLimiter:
    def __init__(self, client: redis.asyncio.Redis, keys: KeySpace) -> None:
        self._redis = client
        self._keys = keys

    @unavailable_on_redis_errors
    async def take(self, name: str, limit: RateLimit, priority: int, now: float) -> float:
        key = self._keys.rate_limit(name)
        spec = [limit.rate, limit.burst, *limit.shares]
        async with self._redis.pipeline(transaction=True) as pipe:
            for _ in range(MAX_CONFLICTS):
                try:
                    await pipe.watch(key)
                    raw = await pipe.get(key)
                    limiter = limit.limiter(now)
                    if raw is not None:
                        stored_spec, state = msgpack.unpackb(raw)
                        if stored_spec == spec:
                            limiter.restore(state)
                    wait = take_or_wait(limiter, priority, now)
                    pipe.multi()
                    pipe.set(key, msgpack.packb([spec, limiter.state()]), ex=IDLE_TTL)
                    await pipe.execute()
                    return wait
                except redis.exceptions.WatchError:
                    continue
        return CONTENDED_WAIT
