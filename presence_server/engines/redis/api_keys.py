"""API keys created at run time, in Redis: one hash per account,
``ps:{AC}:apikeys`` (key sid -> the key as JSON), under the account's hash tag
like every other key of the account. ``HSETNX`` refuses a second key of the
same sid."""

from __future__ import annotations

import json

import redis.asyncio

from ..ports import CreatedApiKey
from .keys import KeySpace, as_text
from .scripts import unavailable_on_redis_errors


class RedisApiKeyStore:
    def __init__(self, client: redis.asyncio.Redis, keys: KeySpace) -> None:
        self._redis = client
        self._keys = keys

    @unavailable_on_redis_errors
    async def create(self, key: CreatedApiKey) -> bool:
        value = json.dumps({"friendly_name": key.friendly_name, "secret": key.secret, "date_created": key.date_created})
        return bool(await self._redis.hsetnx(self._keys.api_keys(key.account_sid), key.sid, value))

    @unavailable_on_redis_errors
    async def list(self, account_sid: str) -> list[CreatedApiKey]:
        entries = await self._redis.hgetall(self._keys.api_keys(account_sid))
        keys = []
        for sid, raw in entries.items():
            fields = json.loads(as_text(raw))
            keys.append(CreatedApiKey(as_text(sid), account_sid, fields["friendly_name"], fields["secret"], float(fields["date_created"])))
        return sorted(keys, key=lambda k: (k.date_created, k.sid))
