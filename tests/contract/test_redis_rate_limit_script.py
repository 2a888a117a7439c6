"""The drift guard of the redis engine's rate-limit script (decision 37 feared a
Lua copy of the limiter would drift from protocol.plans.ShareLimiter).

Random sequences of takes run against the script on a real redis-server and
against the Python limiter, kept as the stored state is kept: a fresh
``ShareLimiter`` restored from the previous state at every take (what a shared
limiter is), deciding with ``take_or_wait`` (what the embedded engine decides
with). At every step both must make the same decision, answer the same wait and
leave the same buckets."""

from __future__ import annotations

import itertools
import math
from typing import AsyncIterator

import msgpack
import pytest
import redis.asyncio
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from presence_server.engines.outbound import RateLimit, take_or_wait
from presence_server.engines.redis import RedisEngine
from protocol.plans import Priority, ShareLimiter

URGENT, NORMAL, BULK = 0, 1, 2
WALL_CLOCK = 1_763_700_000.125  # epoch seconds: the magnitude real callers pass

_names = itertools.count()


class Reference:
    """The Python limiter as the old WATCH/MULTI path ran it: the stored
    ``[limit, buckets]``, restored into a full limiter at each take unless the
    limit changed."""

    def __init__(self) -> None:
        self.stored: tuple[RateLimit, list[float]] | None = None

    def take(self, limit: RateLimit, priority: int, now: float) -> float:
        limiter: ShareLimiter = limit.limiter(now)
        if self.stored is not None and self.stored[0] == limit:
            limiter.restore(self.stored[1])
        wait = take_or_wait(limiter, priority, now)
        self.stored = (limit, limiter.state())
        return wait


@pytest.fixture
async def engine(redis_url: str) -> AsyncIterator[RedisEngine]:
    eng = RedisEngine(redis_url)
    await eng.start()
    try:
        yield eng
    finally:
        await eng.close()


@pytest.fixture
async def raw(redis_url: str) -> AsyncIterator[redis.asyncio.Redis]:
    client = redis.asyncio.from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


# Decimal shares and rates as people configure them: tenths are not exact in
# binary, so their refills are where sums land a hair below a whole token.
share = st.one_of(st.just(0.0), st.just(1.0), st.sampled_from([0.1, 0.2, 0.3, 0.5]), st.floats(0.0, 1.0))


@st.composite
def limits(draw: st.DrawFn) -> RateLimit:
    raw_shares = [draw(share) for _ in range(3)]
    # Shares summing to less than 1 (the rest is the spare's own rate) as often as to 1.
    scale = draw(st.one_of(st.just(1.0), st.floats(0.0, 1.0)))
    total = sum(raw_shares)
    shares = tuple(s * scale / total if total > 1.0 else s * scale for s in raw_shares)
    rate = draw(st.one_of(st.sampled_from([1.0, 3.0, 10.0]), st.floats(0.05, 5.0), st.floats(5.0, 5000.0)))
    burst = draw(st.one_of(st.just(1.0), st.just(4.0), st.floats(1.0, 200.0)))
    return RateLimit(rate, burst, shares)  # type: ignore[arg-type]


AFTER_THE_WAIT = None  # a step that comes back exactly when the last answer said to

time_step = st.one_of(
    # Half the steps: where a refill sums to 0.9999999999 (the limiter's epsilon).
    st.just(AFTER_THE_WAIT),
    st.one_of(
        st.just(0.0),  # many takes in one instant
        st.floats(0.0, 1e-6),  # a sliver of a token
        st.floats(0.0, 2.0),
        st.floats(-5.0, 0.0),  # another process's clock behind this one's
        st.floats(1e3, 1e8),  # a limiter idle for long (more than the buckets hold)
    ),
)
# One step in ten switches to the other limit (a provider reconfigured, or two
# processes with different configs during a rollout).
switch = st.integers(0, 9).map(lambda n: n == 0)
step = st.tuples(st.sampled_from([URGENT, NORMAL, BULK]), time_step, switch)


async def run(engine: RedisEngine, raw: redis.asyncio.Redis, first: RateLimit, second: RateLimit,
              start: float, steps: list[tuple[int, float | None, bool]]) -> None:  # fmt: skip
    name = f"drift{next(_names)}"
    reference = Reference()
    now = start
    limit = first
    last = 0.0
    for i, (priority, dt, switch) in enumerate(steps):
        now += last if dt is AFTER_THE_WAIT else dt
        if switch:  # a reconfigured provider: both must start afresh (or go on, if equal)
            limit = second if limit is first else first
        expected = reference.take(limit, priority, now)
        got = await engine.rate_limits.take(name, limit, priority, now)
        where = f"step {i}: take({priority}, now={now!r}) with {limit}"
        assert (got == 0.0) == (expected == 0.0), f"{where}: script {got}, python {expected}"
        assert got == pytest.approx(expected, rel=1e-12, abs=1e-12), where
        last = expected
        stored_limit, buckets = msgpack.unpackb(await raw.get(f"ps:rate:{name}"))
        assert stored_limit == [limit.rate, limit.burst, *limit.shares], where
        assert reference.stored is not None
        assert buckets == pytest.approx(reference.stored[1], rel=1e-12, abs=1e-12), where


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    first=limits(),
    second=limits(),
    # Near 0 as well as at epoch magnitudes: there, time has 2e-7 s steps, which
    # hides the float slack of a refill that should just reach one token.
    start=st.one_of(st.just(WALL_CLOCK), st.just(0.0), st.floats(0.0, 1e3), st.floats(0.0, 2e9)),
    steps=st.lists(step, min_size=1, max_size=60),
)
# Back exactly when told: urgent's own 0.1 plus the spare's 0.9 sum to 0.9999999999999999.
@example(
    first=RateLimit(3.0, 4.0, (0.1, 0.2, 0.1)),
    second=RateLimit(3.0, 4.0, (0.1, 0.2, 0.1)),
    start=0.0,
    steps=[(URGENT, 0.0, False), (URGENT, 0.0, False), (URGENT, AFTER_THE_WAIT, False)],
)
# Shares summing to 0.5, and a class (bulk) with no share that lives off the spare.
@example(
    first=RateLimit(10.0, 4.0, (0.3, 0.2, 0.0)),
    second=RateLimit(10.0, 4.0, (0.3, 0.2, 0.0)),
    start=WALL_CLOCK,
    steps=[(BULK, 0.0, False)] * 3 + [(BULK, 0.05, False), (BULK, 0.07, False), (URGENT, 0.0, False)] * 4,
)
# Fractional tokens: 0.3 tokens a second, asked for more often than that.
@example(
    first=RateLimit(0.3, 1.0, (0.5, 0.5, 0.0)),
    second=RateLimit(0.3, 1.0, (0.5, 0.5, 0.0)),
    start=WALL_CLOCK,
    steps=[(NORMAL, 0.9, False), (URGENT, 1.1, False), (NORMAL, 2.5, False)] * 5,
)
# Time going backwards after a take, then forwards; then a gap of years.
@example(
    first=RateLimit(5.0, 2.0, (0.5, 0.3, 0.2)),
    second=RateLimit(50.0, 20.0, (1.0, 0.0, 0.0)),
    start=WALL_CLOCK,
    steps=[(URGENT, 0.0, False), (URGENT, -3.0, False), (NORMAL, -0.5, False), (URGENT, 3.6, False),
           (BULK, 1e8, False), (URGENT, 0.0, True), (URGENT, 0.0, True), (NORMAL, 0.0, False)],
)  # fmt: skip
async def test_the_script_decides_as_the_python_limiter(
    engine: RedisEngine,
    raw: redis.asyncio.Redis,
    first: RateLimit,
    second: RateLimit,
    start: float,
    steps: list[tuple[int, float | None, bool]],
) -> None:
    await run(engine, raw, first, second, start, steps)


async def test_the_guard_sees_every_kind_of_answer(engine: RedisEngine, raw: redis.asyncio.Redis) -> None:
    # The property above is only worth something if the script's every path is
    # reached: a token from the class's own bucket, a fractional own token topped
    # up from the spare, a refusal whose wait walks the other classes filling up.
    # This fixed sequence reaches each (checked on what the script stored), and is
    # compared with the Python limiter the same way.
    limit = RateLimit(10.0, 4.0, (0.5, 0.3, 0.2))  # class buckets 2, 1.2, 1; spare up to 4
    reference = Reference()
    answers, stored = [], []
    now = WALL_CLOCK
    for priority, dt in [(URGENT, 0.0), (URGENT, 0.0), (URGENT, 0.0), (NORMAL, 0.5), (NORMAL, 0.0), (URGENT, 0.0),
                         (BULK, 0.0), (BULK, 0.0), (BULK, 0.0), (BULK, 0.0)]:  # fmt: skip
        now += dt
        expected = reference.take(limit, priority, now)
        got = await engine.rate_limits.take("guard", limit, priority, now)
        assert got == pytest.approx(expected, rel=1e-9)
        answers.append(got)
        stored.append(msgpack.unpackb(await raw.get("ps:rate:guard"))[1])
        assert reference.stored is not None
        assert stored[-1] == pytest.approx(reference.stored[1], rel=1e-9, abs=1e-9)
    assert answers[:2] == [0.0, 0.0]  # urgent's own 2 tokens
    assert answers[2] == pytest.approx(0.1)  # others full: their refill overflows to the spare, 10/s in all
    # 0.5 s later urgent is full again (2), normal has 1.2 - 1 = 0.2 and the rest went to the spare (3).
    assert answers[3] == 0.0 and stored[3][:4] == pytest.approx([2.0, 0.2, 1.0, 3.0])
    # Normal's 0.2 topped up with 0.8 of the spare.
    assert answers[4] == 0.0 and stored[4][1] == 0.0 and stored[4][3] == pytest.approx(2.2)
    # Urgent down to 1; bulk takes its own token, then two out of the spare, leaving 0.2.
    assert answers[5:9] == [0.0, 0.0, 0.0, 0.0] and stored[8][:4] == pytest.approx([1.0, 0.0, 0.0, 0.2])
    # Bulk needs 0.8: 2/s of its own; after 0.2 s urgent is full and overflows (7/s),
    # before normal is (at 0.4 s): 0.2 + 0.4 / 7.
    assert answers[9] == pytest.approx(0.2 + 0.4 / 7)


async def test_buckets_written_by_the_python_limiter_are_taken_up(engine: RedisEngine, raw: redis.asyncio.Redis) -> None:
    # The key keeps the layout the WATCH/MULTI version wrote (msgpack [limit,
    # ShareLimiter.state()], floats as float64): during a rolling upgrade the first
    # script call goes on from those buckets instead of handing out a full burst.
    limit = RateLimit(10.0, 4.0, (0.5, 0.3, 0.2))
    python = limit.limiter(WALL_CLOCK)
    assert python.take(Priority.URGENT, WALL_CLOCK) and python.take(Priority.URGENT, WALL_CLOCK)
    await raw.set("ps:rate:old", msgpack.packb([[limit.rate, limit.burst, *limit.shares], python.state()]))
    got = await engine.rate_limits.take("old", limit, URGENT, WALL_CLOCK + 0.01)
    assert got > 0  # refused: urgent's 2 tokens were gone (a fresh limiter would have granted)
    assert got == pytest.approx(take_or_wait(python, URGENT, WALL_CLOCK + 0.01), rel=1e-12)
    _, buckets = msgpack.unpackb(await raw.get("ps:rate:old"))
    assert buckets == pytest.approx(python.state(), rel=1e-12, abs=1e-12)
