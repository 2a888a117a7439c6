"""The SDK's reconnect backoff: bounds, full jitter, reset after success."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from presence_client import Backoff


def test_ceilings_double_up_to_the_cap() -> None:
    backoff = Backoff(0.5, 30.0, jitter=False)
    delays = [backoff.next_delay() for _ in range(10)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0, 30.0]
    assert backoff.attempts == 10


def test_defaults_are_half_a_second_to_thirty_with_full_jitter() -> None:
    backoff = Backoff()
    assert (backoff.initial, backoff.maximum, backoff.multiplier, backoff.jitter) == (0.5, 30.0, 2.0, True)


@given(
    initial=st.floats(0.0, 5.0),
    spread=st.floats(0.0, 100.0),
    multiplier=st.floats(1.0, 4.0),
    seed=st.integers(0, 2**32),
    attempts=st.integers(1, 80),
)
def test_jittered_delays_stay_within_zero_and_the_ceiling(
    initial: float, spread: float, multiplier: float, seed: int, attempts: int
) -> None:
    backoff = Backoff(initial, initial + spread, multiplier=multiplier, rand=random.Random(seed).random)
    for n in range(attempts):
        ceiling = backoff.ceiling()
        assert ceiling == backoff.ceiling(n)
        assert ceiling <= backoff.maximum
        delay = backoff.next_delay()
        assert 0.0 <= delay <= ceiling


def test_full_jitter_uses_the_whole_range() -> None:
    rolls = iter([0.0, 0.999999, 0.5])
    backoff = Backoff(1.0, 100.0, rand=lambda: next(rolls))
    assert backoff.next_delay() == 0.0  # may retry at once
    assert backoff.next_delay() == pytest.approx(2.0, rel=1e-5)  # up to the ceiling
    assert backoff.next_delay() == 2.0  # 0.5 of the third ceiling (4)


def test_jitter_actually_varies() -> None:
    backoff = Backoff(1.0, 1.0, rand=random.Random(7).random)
    delays = {backoff.next_delay() for _ in range(50)}
    assert len(delays) > 40 and all(0 <= d <= 1.0 for d in delays)


def test_reset_after_success_starts_over() -> None:
    backoff = Backoff(0.5, 30.0, jitter=False)
    for _ in range(8):
        backoff.next_delay()
    assert backoff.ceiling() == 30.0
    backoff.reset()
    assert backoff.attempts == 0
    assert backoff.next_delay() == 0.5
    assert backoff.next_delay() == 1.0


def test_a_very_long_outage_does_not_overflow() -> None:
    backoff = Backoff(0.5, 30.0, jitter=False)
    backoff.attempts = 100_000
    assert backoff.next_delay() == 30.0


def test_zero_initial_means_no_wait_and_multiplier_one_is_constant() -> None:
    assert [Backoff(0.0, 10.0).next_delay() for _ in range(3)] == [0.0, 0.0, 0.0]
    constant = Backoff(2.0, 10.0, multiplier=1.0, jitter=False)
    assert [constant.next_delay() for _ in range(4)] == [2.0] * 4


@pytest.mark.parametrize(
    ("args", "kwargs", "error"),
    [
        ((-1.0, 10.0), {}, ValueError),
        ((5.0, 1.0), {}, ValueError),
        ((1.0, 10.0), {"multiplier": 0.5}, ValueError),
        ((float("nan"), 10.0), {}, ValueError),
        ((1.0, float("inf")), {}, ValueError),
        (("1", 10.0), {}, TypeError),
        ((True, 10.0), {}, TypeError),
    ],
)
def test_bad_backoff_arguments(args: tuple[object, ...], kwargs: dict[str, object], error: type[Exception]) -> None:
    with pytest.raises(error):
        Backoff(*args, **kwargs)  # type: ignore[arg-type]
