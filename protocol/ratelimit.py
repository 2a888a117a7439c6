"""A token bucket, driven by the caller's clock (no I/O, no sleeping)."""

from __future__ import annotations


class TokenBucket:
    __slots__ = ("rate", "burst", "tokens", "updated")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.updated = now

    def _refill(self, now: float) -> None:
        if now > self.updated:
            self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
            self.updated = now

    def take(self, now: float, cost: float = 1.0) -> bool:
        """Take ``cost`` tokens if there are enough; False (and nothing taken) if not."""
        self._refill(now)
        if self.tokens >= cost:
            self.tokens -= cost
            return True
        return False

    def retry_after(self, now: float, cost: float = 1.0) -> float:
        """Seconds until ``cost`` tokens are there."""
        self._refill(now)
        return max(0.0, (cost - self.tokens) / self.rate)


class BucketTable:
    """Token buckets by key (an account, an address), at most ``max_keys`` of
    them: the least recently used is forgotten first. Forgetting a bucket is
    forgiving (a new one starts full), so a flood of fresh keys costs memory up
    to the bound and no more."""

    __slots__ = ("rate", "burst", "max_keys", "_buckets")

    def __init__(self, rate: float, burst: float, max_keys: int = 65536) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be >= 1")
        TokenBucket(rate, burst, 0.0)  # the same checks of rate and burst
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: dict[str, TokenBucket] = {}

    def __len__(self) -> int:
        return len(self._buckets)

    def _bucket(self, key: str, now: float) -> TokenBucket:
        bucket = self._buckets.pop(key, None)  # re-inserted last: most recently used
        if bucket is None:
            bucket = TokenBucket(self.rate, self.burst, now)
            if len(self._buckets) >= self.max_keys:
                del self._buckets[next(iter(self._buckets))]
        self._buckets[key] = bucket
        return bucket

    def take(self, key: str, now: float) -> float:
        """Take one token; 0.0 if taken, else the seconds until one is there."""
        bucket = self._bucket(key, now)
        return 0.0 if bucket.take(now) else bucket.retry_after(now)

    def wait(self, key: str, now: float) -> float:
        """Seconds until ``key`` has a token (0.0: it has one), taking none."""
        bucket = self._buckets.get(key)
        return 0.0 if bucket is None else bucket.retry_after(now)

    def charge(self, key: str, now: float) -> None:
        """Take a token if there is one (a failure is counted; an empty bucket stays empty)."""
        self._bucket(key, now).take(now)
