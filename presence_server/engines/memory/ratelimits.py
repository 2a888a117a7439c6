"""Provider rate limits of the embedded engine: the limiters live in this
process (which is every sender there is)."""

from __future__ import annotations

from protocol.plans import ShareLimiter

from ..outbound import RateLimit, take_or_wait


class MemoryRateLimiter:
    def __init__(self) -> None:
        self._limiters: dict[str, tuple[RateLimit, ShareLimiter]] = {}

    async def take(self, name: str, limit: RateLimit, priority: int, now: float) -> float:
        entry = self._limiters.get(name)
        if entry is None or entry[0] != limit:  # new, or reconfigured: start full
            entry = (limit, limit.limiter(now))
            self._limiters[name] = entry
        return take_or_wait(entry[1], priority, now)
