"""Provider rate limits kept in the engine (shared by every sending process)."""

from __future__ import annotations

import asyncio
import time
from typing import AsyncIterator

import pytest

from presence_server.engines.outbound import RateLimit
from presence_server.engines.ports import Engine
from presence_server.engines.redis import RedisEngine

URGENT, NORMAL, BULK = 0, 1, 2
LIMIT = RateLimit(rate=10.0, burst=4.0, shares=(0.5, 0.3, 0.2))


async def test_a_burst_then_the_rate(engine: Engine) -> None:
    limits = engine.rate_limits
    # The urgent class holds 2 tokens of its own and the spare starts empty.
    assert await limits.take("p", LIMIT, URGENT, now=100.0) == 0.0
    assert await limits.take("p", LIMIT, URGENT, now=100.0) == 0.0
    wait = await limits.take("p", LIMIT, URGENT, now=100.0)
    assert 0 < wait <= 0.2  # refilled at 5/s (its share), sooner once others overflow
    assert await limits.take("p", LIMIT, URGENT, now=100.0 + wait) == 0.0
    # Other classes and other limiters have buckets of their own.
    assert await limits.take("p", LIMIT, BULK, now=100.0) == 0.0
    assert await limits.take("q", LIMIT, URGENT, now=100.0) == 0.0


async def test_over_time_no_more_than_the_rate_plus_the_burst(engine: Engine) -> None:
    limits = engine.rate_limits
    taken = 0
    for step in range(200):  # 2 s in steps of 10 ms, every class asking every step
        for priority in (URGENT, NORMAL, BULK):
            if await limits.take("p", LIMIT, priority, now=500.0 + step * 0.01) == 0.0:
                taken += 1
    assert taken <= LIMIT.rate * 2 + LIMIT.burst
    assert taken >= LIMIT.rate * 2 - 1


async def test_concurrent_takers_share_one_bucket(engine: Engine) -> None:
    # Many takers at one instant: exactly the class's tokens are handed out.
    limits = engine.rate_limits
    results = await asyncio.gather(*(limits.take("p", LIMIT, NORMAL, now=700.0) for _ in range(20)))
    assert results.count(0.0) == 1  # the normal class holds max(1, 4 * 0.3) = 1.2 tokens, spare empty
    assert all(r > 0 for r in results if r != 0.0)


async def test_a_changed_limit_starts_afresh(engine: Engine) -> None:
    limits = engine.rate_limits
    tight = RateLimit(rate=1.0, burst=1.0, shares=(1.0, 0.0, 0.0))
    assert await limits.take("p", tight, URGENT, now=900.0) == 0.0
    assert await limits.take("p", tight, URGENT, now=900.0) > 0
    looser = RateLimit(rate=100.0, burst=10.0, shares=(1.0, 0.0, 0.0))
    assert await limits.take("p", looser, URGENT, now=900.0) == 0.0


@pytest.fixture(params=["redis", "redis-cluster"])
async def two_processes(request: pytest.FixtureRequest) -> AsyncIterator[tuple[RedisEngine, RedisEngine]]:
    """Two engines on one Redis (or cluster): two messaging processes' worth of
    clients, each with its own connection pool. (The embedded engine has no
    second process to share with.)"""
    target = request.getfixturevalue("shared_redis_server" if request.param == "redis" else "shared_redis_cluster")
    target.flushall()
    a, b = RedisEngine(target.url), RedisEngine(target.url)
    await a.start()
    await b.start()
    try:
        yield a, b
    finally:
        await a.close()
        await b.close()


async def test_two_processes_together_keep_to_the_limit(two_processes: tuple[RedisEngine, RedisEngine]) -> None:
    # Six takers per process (two per class) ask on the wall clock for a second,
    # each coming back when told, as senders do. The class buckets hold 5 + 3 + 2
    # = burst and the spare starts empty, so from the first take on the two
    # together may get no more than rate * T + burst, however their calls
    # interleave in Redis.
    limit = RateLimit(rate=50.0, burst=10.0, shares=(0.5, 0.3, 0.2))
    granted: list[float] = []
    asked: list[float] = []
    deadline = time.time() + 1.0

    async def taker(engine: RedisEngine, priority: int) -> None:
        while (now := time.time()) < deadline:
            asked.append(now)
            wait = await engine.rate_limits.take("carrier", limit, priority, now)
            if wait == 0.0:
                granted.append(now)
            else:
                await asyncio.sleep(wait)

    await asyncio.gather(*(taker(engine, priority) for engine in two_processes for priority in (URGENT, NORMAL, BULK) * 2))
    window = max(asked) - min(asked)
    assert len(granted) <= limit.rate * window + limit.burst
    # And they did use it: every class kept asking, so the limit, not the
    # takers, was what held them back (slack for a busy machine's event loop).
    assert len(granted) >= 0.5 * limit.rate * window
    assert window > 0.9
