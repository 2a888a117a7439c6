"""Revoked API keys in Redis: one hash per account, ``ps:{AC}:revoked`` (key sid
-> revoked_at), under the account's hash tag like every other key of the
account. ``HSETNX`` keeps the first revocation's time, and answers whether
this call was the one that revoked the key."""

from __future__ import annotations

import redis.asyncio

from .keys import KeySpace, as_text
from .scripts import unavailable_on_redis_errors


class RedisKeyRevocations:
    def __init__(self, client: redis.asyncio.Redis, keys: KeySpace) -> None:
        self._redis = client
        self._keys = keys

    @unavailable_on_redis_errors
    async def revoke(self, account_sid: str, key_sid: str, at: float) -> bool:
        return bool(await self._redis.hsetnx(self._keys.revoked_keys(account_sid), key_sid, repr(float(at))))

    @unavailable_on_redis_errors
    async def revoked(self, account_sid: str) -> dict[str, float]:
        entries = await self._redis.hgetall(self._keys.revoked_keys(account_sid))
        return {as_text(key): float(as_text(at)) for key, at in entries.items()}
