"""Transmission plans: priority, schedule, validity, retries, and per-class throughput.

A message's *plan* says when it may first be sent (``not_before``), until when
it is still worth sending (``deadline``) and how many attempts it gets. The
retry delays are exponential with jitter, drawn from a random number the
caller passes in, so the rules stay deterministic under test.

:class:`ShareLimiter` shares one provider's throughput between the priority
classes: each class is guaranteed its share, and what a class does not use is
not lost but lent to whichever class needs it (so bulk traffic can use the
whole rate at night, yet urgent traffic still gets its share during a bulk
campaign). Like :class:`protocol.ratelimit.TokenBucket`, it is driven by the
caller's clock.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final


class Priority(enum.IntEnum):
    # Lower value = more urgent, so sorting by priority puts urgent first.
    URGENT = 0
    NORMAL = 1
    BULK = 2


PRIORITY_NAMES: Final = ("urgent", "normal", "bulk")


def priority_of(name: str) -> Priority:
    """The priority called ``name`` (case-insensitive)."""
    try:
        return Priority(PRIORITY_NAMES.index(name.strip().lower()))
    except ValueError:
        raise ValueError(f"unknown priority {name!r}: expected one of {', '.join(PRIORITY_NAMES)}") from None


# Float slack for take(): a caller that waits exactly wait() seconds must not
# be refused because the refill summed to 0.9999999999.
_EPSILON: Final = 1e-9


def backoff(attempt: int, base: float, cap: float, rand: float) -> float:
    """Delay before retry number ``attempt`` (1 = the first retry).

    The ceiling doubles per attempt up to ``cap``; the delay is between half
    the ceiling and the ceiling. Keeping half (rather than full jitter) means
    a retry is never fired right back at a provider that just said "later",
    while the other half still spreads a burst of failures over time.
    """
    if attempt < 1:
        raise ValueError(f"attempt must be >= 1, got {attempt}")
    if base < 0 or cap < 0:
        raise ValueError("base and cap must be >= 0")
    if not 0.0 <= rand <= 1.0:
        raise ValueError(f"rand must be in [0, 1], got {rand}")
    try:
        ceiling = min(cap, math.ldexp(base, attempt - 1))
    except OverflowError:  # base * 2**(attempt-1) is past any float, so past the cap
        ceiling = cap
    return ceiling * (0.5 + rand / 2)


def schedule_problem(send_at: float, now: float, max_ahead: float) -> str | None:
    """What is wrong with sending at ``send_at``, or None if it is fine.

    The answer is a predicate ("in the past"), so the caller can name the
    field in its own words: ``f"SendAt is {problem}"``.
    """
    if not math.isfinite(send_at):
        return "not a finite time"
    if send_at <= now:
        return "in the past"
    if send_at > now + max_ahead:
        ahead = f"{max_ahead:.0f}" if float(max_ahead).is_integer() else f"{max_ahead:g}"  # not "2.592e+06"
        return f"more than {ahead} seconds ahead"
    return None


@dataclass(frozen=True)
class TransmissionPlan:
    priority: Priority
    not_before: float
    deadline: float
    max_attempts: int

    def expired(self, now: float) -> bool:
        return now > self.deadline

    def next_retry(self, now: float, attempt: int, base: float, cap: float, rand: float) -> float | None:
        """When to try again after ``attempt`` temporary failures; None to give up.

        Giving up when the retry would land after the deadline (instead of
        retrying at the deadline) is deliberate: a message that arrives after
        its validity period is worse than one reported as failed.
        """
        if attempt >= self.max_attempts:
            return None
        due = max(self.not_before, now + backoff(attempt, base, cap, rand))
        return None if due > self.deadline else due


def build_plan(
    now: float, *, priority: Priority, send_at: float | None, validity: float, max_attempts: int
) -> TransmissionPlan:
    """The plan of a message accepted at ``now``.

    The validity period counts from ``not_before``: a message scheduled for
    next week must not be expired by the time it is first due.
    """
    if validity <= 0:
        raise ValueError(f"validity must be > 0, got {validity}")
    if max_attempts < 1:
        raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
    not_before = now if send_at is None else send_at
    return TransmissionPlan(priority, not_before, not_before + validity, max_attempts)


class ShareLimiter:
    """A provider's throughput split into guaranteed shares per priority class.

    Each class has a token bucket refilled at ``rate * share`` holding up to
    ``max(1, burst * share)``. What would overflow a full class bucket, and
    the rate no class was given (when the shares sum to less than 1), goes
    into a spare bucket of ``burst`` tokens that a class may draw on once its
    own bucket is empty. So:

    * every token comes from the one refill rate: over any period the classes
      together never take more than ``rate * T`` plus what the buckets held;
    * a class's own bucket is filled only for it: a class that keeps asking
      gets its share however hard the others push;
    * a class alone on the provider also gets the others' unused shares
      through the spare, i.e. close to the whole rate.

    presence_server/engines/redis/ratelimits.py holds a copy of refill, take
    and wait in Lua (Redis runs it atomically); change both together:
    tests/contract/test_redis_rate_limit_script.py fails when they differ.
    """

    __slots__ = ("rate", "burst", "_rates", "_caps", "_tokens", "_spare", "_spare_rate", "_updated")

    def __init__(self, rate: float, burst: float, shares: Mapping[Priority, float], now: float) -> None:
        if not rate > 0 or not burst >= 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        if any(not 0.0 <= share <= 1.0 for share in shares.values()):
            raise ValueError("each share must be in [0, 1]")
        total = sum(shares.values())
        if total > 1.0 + 1e-9:
            raise ValueError(f"shares sum to {total:g}, more than 1")
        self.rate = rate
        self.burst = burst
        # A class without a share still gets a one-token bucket (filled once,
        # never refilled): it lives off the spare, which is what "no share" means.
        self._rates = {p: rate * shares.get(p, 0.0) for p in Priority}
        self._caps = {p: max(1.0, burst * shares.get(p, 0.0)) for p in Priority}
        self._tokens = dict(self._caps)
        self._spare = 0.0
        self._spare_rate = rate * max(0.0, 1.0 - total)
        self._updated = now

    def _refill(self, now: float) -> None:
        # No token is taken between _updated and now, so adding everything at
        # once and clipping gives exactly what continuous refilling would.
        elapsed = now - self._updated
        if elapsed <= 0:
            return
        self._updated = now
        spare = self._spare + self._spare_rate * elapsed
        for p in Priority:
            tokens = self._tokens[p] + self._rates[p] * elapsed
            if tokens > self._caps[p]:
                spare += tokens - self._caps[p]
                tokens = self._caps[p]
            self._tokens[p] = tokens
        self._spare = min(self.burst, spare)

    def state(self) -> list[float]:
        """The buckets as plain numbers (each class's tokens in Priority order,
        the spare, the last refill time), to keep the limiter outside the
        process: limiters shared by many processes live in the engine."""
        return [*(self._tokens[p] for p in Priority), self._spare, self._updated]

    def restore(self, state: Sequence[float]) -> None:
        """Take up buckets that :meth:`state` gave (of a limiter with the same
        rate, burst and shares); each value is clipped to what this limiter holds."""
        if len(state) != len(Priority) + 2:
            raise ValueError(f"a limiter state has {len(Priority) + 2} numbers, got {len(state)}")
        for p, tokens in zip(Priority, state):
            self._tokens[p] = min(self._caps[p], max(0.0, float(tokens)))
        self._spare = min(self.burst, max(0.0, float(state[-2])))
        self._updated = float(state[-1])

    def take(self, priority: Priority, now: float) -> bool:
        """Take one token for ``priority``; False (and nothing taken) if there is none."""
        self._refill(now)
        own = self._tokens[priority]
        if own >= 1.0 - _EPSILON:
            self._tokens[priority] = own - 1.0
            return True
        # Top up a fractional own token from the spare rather than needing a
        # whole spare token: the class's own refill is never stranded.
        if own + self._spare >= 1.0 - _EPSILON:
            self._spare -= 1.0 - own
            self._tokens[priority] = 0.0
            return True
        return False

    def wait(self, priority: Priority, now: float) -> float:
        """Seconds until :meth:`take` for ``priority`` could succeed (0 if now).

        Exact if nobody takes a token meanwhile; others taking can only make
        it later, so a caller should ask again rather than take blindly.
        """
        self._refill(now)
        need = 1.0 - self._tokens[priority] - self._spare
        if need <= _EPSILON:
            return 0.0
        # What flows into own + spare grows as the other classes' buckets fill
        # up and start to overflow; walk those moments in order. (The spare
        # cannot be full here: it holds less than 1 <= burst.)
        inflow = self._rates[priority] + self._spare_rate
        fills: list[tuple[float, float]] = []
        for p in Priority:
            if p == priority or self._rates[p] == 0:
                continue
            room = self._caps[p] - self._tokens[p]
            if room <= 0:
                inflow += self._rates[p]
            else:
                fills.append((room / self._rates[p], self._rates[p]))
        elapsed = 0.0
        for at, extra in sorted(fills):
            if inflow > 0 and elapsed + need / inflow <= at:
                break
            need -= inflow * (at - elapsed)
            elapsed = at
            inflow += extra
        # With every class full, the inflow is the whole rate, so this is finite.
        return elapsed + need / inflow
