"""Provider rate limits of the embedded engine: the limiters live in this
process (which is every sender there is)."""

from __future__ import annotations

from protocol.plans import Priority, ShareLimiter

from ..outbound import RateLimit


def new_limiter(limit: RateLimit, now: float) -> ShareLimiter:
    return ShareLimiter(limit.rate, limit.burst, dict(zip(Priority, limit.shares)), now)


def take_or_wait(limiter: ShareLimiter, priority: int, now: float) -> float:
    if limiter.take(Priority(priority), now):
        return 0.0
    # Never 0 when nothing was taken: the caller must come back later.
    return max(0.001, limiter.wait(Priority(priority), now))


class MemoryRateLimiter:
    def __init__(self) -> None:
        self._limiters: dict[str, tuple[RateLimit, ShareLimiter]] = {}

    async def take(self, name: str, limit: RateLimit, priority: int, now: float) -> float:
        entry = self._limiters.get(name)
        if entry is None or entry[0] != limit:  # new, or reconfigured: start full
            entry = (limit, new_limiter(limit, now))
            self._limiters[name] = entry
        return take_or_wait(entry[1], priority, now)
