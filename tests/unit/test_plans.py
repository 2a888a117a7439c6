"""protocol/plans.py: priorities, backoff, schedules, plans, the share limiter."""

from __future__ import annotations

import random
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.plans import (
    PRIORITY_NAMES,
    Priority,
    ShareLimiter,
    TransmissionPlan,
    backoff,
    build_plan,
    priority_of,
    schedule_problem,
)

# -- priorities ------------------------------------------------------------------


def test_priority_names_round_trip() -> None:
    assert [priority_of(name) for name in PRIORITY_NAMES] == [Priority.URGENT, Priority.NORMAL, Priority.BULK]
    assert priority_of("Bulk") is Priority.BULK
    assert sorted([Priority.BULK, Priority.URGENT, Priority.NORMAL])[0] is Priority.URGENT


def test_unknown_priority_names_the_choices() -> None:
    with pytest.raises(ValueError, match="urgent, normal, bulk"):
        priority_of("asap")


# -- backoff ---------------------------------------------------------------------


def test_backoff_doubles_up_to_the_cap() -> None:
    assert [backoff(n, 1.0, 10.0, 1.0) for n in range(1, 7)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert [backoff(n, 1.0, 10.0, 0.0) for n in range(1, 4)] == [0.5, 1.0, 2.0]


def test_backoff_rejects_attempt_zero() -> None:
    with pytest.raises(ValueError):
        backoff(0, 1.0, 10.0, 0.5)


@given(
    attempt=st.integers(1, 5000),
    base=st.floats(0.0, 1000.0),
    cap=st.floats(0.0, 1e6),
    rand=st.floats(0.0, 1.0, exclude_max=True),
)
@settings(max_examples=200)
def test_backoff_is_between_half_the_ceiling_and_the_ceiling(attempt: int, base: float, cap: float, rand: float) -> None:
    ceiling = float(min(Fraction(cap), Fraction(base) * 2 ** (attempt - 1)))  # exact, no overflow
    delay = backoff(attempt, base, cap, rand)
    assert 0.0 <= delay
    assert 0.5 * ceiling <= delay <= ceiling


# -- schedules and plans ---------------------------------------------------------


@pytest.mark.parametrize(
    ("send_at", "problem"),
    [
        (1000.0, "in the past"),
        (999.0, "in the past"),
        (1000.001, None),
        (1000.0 + 3600, None),
        (1000.0 + 3601, "more than 3600 seconds ahead"),
        (float("nan"), "not a finite time"),
    ],
)
def test_schedule_problem(send_at: float, problem: str | None) -> None:
    assert schedule_problem(send_at, 1000.0, 3600.0) == problem


def test_schedule_problem_reads_after_the_field_name() -> None:
    # The caller writes f"SendAt is {problem}"; no float exponent in the number.
    assert schedule_problem(1e7, 0.0, 2592000.0) == "more than 2592000 seconds ahead"
    assert schedule_problem(10.0, 0.0, 2.5) == "more than 2.5 seconds ahead"


def test_plan_validity_counts_from_the_first_allowed_send() -> None:
    now = 1000.0
    plan = build_plan(now, priority=Priority.BULK, send_at=now + 86400, validity=600, max_attempts=3)
    assert plan == TransmissionPlan(Priority.BULK, now + 86400, now + 86400 + 600, 3)
    assert not plan.expired(now + 86400 + 600)
    assert plan.expired(now + 86400 + 600.5)

    immediate = build_plan(now, priority=Priority.URGENT, send_at=None, validity=60, max_attempts=1)
    assert (immediate.not_before, immediate.deadline) == (now, now + 60)


def test_plan_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        build_plan(0.0, priority=Priority.NORMAL, send_at=None, validity=0, max_attempts=1)
    with pytest.raises(ValueError):
        build_plan(0.0, priority=Priority.NORMAL, send_at=None, validity=10, max_attempts=0)


def test_next_retry_stops_at_max_attempts_and_deadline() -> None:
    plan = build_plan(0.0, priority=Priority.NORMAL, send_at=None, validity=100.0, max_attempts=3)
    assert plan.next_retry(10.0, 1, 2.0, 60.0, 1.0) == 12.0
    assert plan.next_retry(10.0, 2, 2.0, 60.0, 1.0) == 14.0
    assert plan.next_retry(10.0, 3, 2.0, 60.0, 1.0) is None  # three sends failed: none left
    assert plan.next_retry(97.0, 1, 2.0, 60.0, 1.0) == 99.0  # before the deadline, but:
    assert plan.next_retry(99.0, 1, 2.0, 60.0, 1.0) is None  # due at 101 is past the deadline


@given(
    now=st.floats(0.0, 1e6),
    attempt=st.integers(1, 20),
    max_attempts=st.integers(1, 20),
    validity=st.floats(1.0, 1e5),
    rand=st.floats(0.0, 1.0, exclude_max=True),
)
def test_next_retry_is_after_now_and_within_the_deadline(
    now: float, attempt: int, max_attempts: int, validity: float, rand: float
) -> None:
    plan = build_plan(now, priority=Priority.NORMAL, send_at=None, validity=validity, max_attempts=max_attempts)
    due = plan.next_retry(now, attempt, 1.0, 300.0, rand)
    if attempt >= max_attempts:
        assert due is None
    if due is not None:
        assert now < due <= plan.deadline


# -- the share limiter -----------------------------------------------------------

SHARES = {Priority.URGENT: 0.5, Priority.NORMAL: 0.3, Priority.BULK: 0.2}


def _caps(burst: float, shares: dict[Priority, float]) -> dict[Priority, float]:
    return {p: max(1.0, burst * shares.get(p, 0.0)) for p in Priority}


def test_limiter_starts_with_full_class_buckets_and_an_empty_spare() -> None:
    limiter = ShareLimiter(10.0, 10.0, SHARES, now=0.0)
    assert sum(limiter.take(Priority.BULK, 0.0) for _ in range(10)) == 2
    # Bulk's own 2/s plus the 8/s that overflows urgent's and normal's full buckets.
    assert limiter.wait(Priority.BULK, 0.0) == pytest.approx(0.1)
    assert limiter.wait(Priority.URGENT, 0.0) == 0.0
    for p in Priority:
        while limiter.take(p, 0.0):
            pass
    assert limiter.wait(Priority.BULK, 0.0) == pytest.approx(0.5)  # now only its own 2/s


def test_limiter_lends_unused_shares_through_the_spare() -> None:
    limiter = ShareLimiter(10.0, 10.0, SHARES, now=0.0)
    while limiter.take(Priority.BULK, 0.0):
        pass
    # Urgent and normal are full: all of their rate overflows to the spare,
    # so bulk gets the whole 10/s (the spare holds up to 10).
    assert sum(limiter.take(Priority.BULK, 1.0) for _ in range(20)) == 10


def test_wait_accounts_for_buckets_that_fill_and_overflow_later() -> None:
    limiter = ShareLimiter(10.0, 10.0, {Priority.URGENT: 0.5, Priority.NORMAL: 0.5}, now=0.0)
    for p in Priority:
        while limiter.take(p, 0.0):
            pass
    # Bulk has no share: it waits for urgent (5 tokens at 5/s) to fill up, then
    # gets urgent's and normal's overflow at 10/s: 1 s + 0.1 s.
    assert limiter.wait(Priority.BULK, 0.0) == pytest.approx(1.1)
    assert not limiter.take(Priority.BULK, 1.09)
    assert limiter.take(Priority.BULK, 1.1)


def test_limiter_rejects_shares_over_one() -> None:
    with pytest.raises(ValueError):
        ShareLimiter(10.0, 10.0, {Priority.URGENT: 0.7, Priority.BULK: 0.5}, now=0.0)


shares_strategy = st.lists(st.floats(0.0, 1.0), min_size=3, max_size=3).map(
    lambda xs: {p: x / max(1.0, sum(xs)) for p, x in zip(Priority, xs, strict=True)}
)


@given(
    rate=st.floats(0.5, 100.0),
    burst=st.floats(1.0, 50.0),
    shares=shares_strategy,
    steps=st.lists(
        st.tuples(st.floats(0.0, 2.0), st.sampled_from(list(Priority)), st.integers(0, 5)), max_size=60
    ),
)
@settings(max_examples=100)
def test_never_more_than_the_rate_plus_the_initial_buckets(
    rate: float, burst: float, shares: dict[Priority, float], steps: list[tuple[float, Priority, int]]
) -> None:
    limiter = ShareLimiter(rate, burst, shares, now=0.0)
    initial = sum(_caps(burst, shares).values())
    now, taken = 0.0, 0
    for dt, priority, tries in steps:
        now += dt
        taken += sum(limiter.take(priority, now) for _ in range(tries))
        assert taken <= rate * now + initial + 1e-6


@given(
    rate=st.floats(1.0, 50.0),
    burst_factor=st.floats(1.0, 5.0),
    shares=st.lists(st.floats(0.1, 1.0), min_size=3, max_size=3).map(
        lambda xs: {p: x / sum(xs) for p, x in zip(Priority, xs, strict=True)}
    ),
    seed=st.integers(0, 2**32),
)
@settings(max_examples=40)
def test_each_class_gets_its_share_under_full_contention(
    rate: float, burst_factor: float, shares: dict[Priority, float], seed: int
) -> None:
    # Every class asks until refused at every step, in a random order. Steps
    # are at most one token of the whole rate apart ("continuously"), and
    # buckets hold at least two tokens, so no class's own bucket ever overflows.
    burst = burst_factor * 2 / min(shares.values())
    rng = random.Random(seed)
    limiter = ShareLimiter(rate, burst, shares, now=0.0)
    caps = _caps(burst, shares)
    taken = dict.fromkeys(Priority, 0)
    now = 0.0
    for _ in range(300):
        now += rng.uniform(0.0, 1.0 / rate)
        order = list(Priority)
        rng.shuffle(order)
        for p in order:
            while limiter.take(p, now):
                taken[p] += 1
    for p in Priority:
        assert taken[p] >= shares[p] * rate * now - caps[p]
    assert sum(taken.values()) <= rate * now + sum(caps.values()) + 1e-6


@given(
    rate=st.floats(1.0, 50.0),
    burst=st.floats(2.0, 30.0),
    shares=shares_strategy,
    alone=st.sampled_from(list(Priority)),
    dt_fraction=st.floats(0.1, 1.0),
)
@settings(max_examples=60)
def test_a_class_alone_gets_the_whole_rate(
    rate: float, burst: float, shares: dict[Priority, float], alone: Priority, dt_fraction: float
) -> None:
    limiter = ShareLimiter(rate, burst, shares, now=0.0)
    # What overflows the spare is lost, so the lone asker comes at least once
    # per spare-full of tokens (less the fraction it may have left).
    dt = dt_fraction * (burst - 1) / rate
    now, taken = 0.0, 0
    for _ in range(200):
        now += dt
        while limiter.take(alone, now):
            taken += 1
    # All the refill, plus its own initial bucket, less the fraction left over.
    assert taken >= rate * now - 1 - 1e-6


def test_wait_then_take_succeeds() -> None:
    limiter = ShareLimiter(3.0, 5.0, SHARES, now=0.0)
    now = 0.0
    for _ in range(50):
        wait = limiter.wait(Priority.NORMAL, now)
        now += wait
        assert limiter.take(Priority.NORMAL, now)


def test_a_limiter_restored_from_its_state_decides_as_the_original() -> None:
    # The shared (engine-kept) limiter is a fresh ShareLimiter restored from the
    # stored state at every take: it must behave exactly like one kept in memory.
    kept = ShareLimiter(10.0, 6.0, SHARES, now=0.0)
    stored = kept.state()
    now = 0.0
    for step in range(300):
        now += 0.013 * (step % 7)
        priority = list(Priority)[step % 3]
        fresh = ShareLimiter(10.0, 6.0, SHARES, now=123.0)
        fresh.restore(stored)
        assert fresh.take(priority, now) == kept.take(priority, now)
        assert fresh.wait(priority, now) == pytest.approx(kept.wait(priority, now))
        stored = fresh.state()
    with pytest.raises(ValueError):
        kept.restore([1.0, 2.0])
