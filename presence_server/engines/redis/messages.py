"""The redis engine's message records (the same record table as calls, plus a
carrier-id index for delivery reports).

``find_by_provider_id`` reads ``ps:provider:<n>:<provider>:<id>``, a sorted set
of ``<account>:<sid>`` scored by date_created (outside any account's slot: a
delivery report does not say whose message it is). Entries are written after
the record and checked against it when read, so an entry left behind by a
record whose carrier id changed since is skipped, never returned.
"""

from __future__ import annotations

import builtins
import dataclasses
import time
from typing import Any, Callable

from redis.asyncio import Redis

from ..ports import MessageRecord
from .calls import RecordTable, equal_fields
from .keys import MESSAGE, KeySpace, as_text
from .scripts import Scripts, unavailable_on_redis_errors

_FIELDS = frozenset(f.name for f in dataclasses.fields(MessageRecord))

# Records sharing one carrier id that find_by_provider_id looks at, newest first.
# More than one is rare (a carrier that reuses ids); this bounds a pathological one.
_PROVIDER_CANDIDATES = 20


class RedisMessageStore:
    def __init__(
        self,
        client: Redis,
        keys: KeySpace,
        scripts: Scripts,
        *,
        clock: Callable[[], float] = time.time,
        **table_options: Any,
    ) -> None:
        self._redis = client
        self._keys = keys
        self._clock = clock
        self._table: RecordTable[MessageRecord] = RecordTable(client, keys, scripts, MESSAGE, MessageRecord, **table_options)

    async def _index_provider_id(self, record: MessageRecord) -> None:
        if record.provider is None or record.provider_message_id is None:
            return
        key = self._keys.provider_index(record.provider, record.provider_message_id)
        await self._redis.zadd(key, {f"{record.account_sid}:{record.sid}": record.date_created})

    @unavailable_on_redis_errors
    async def create(self, record: MessageRecord) -> None:
        if not await self._table.create(record):
            raise ValueError(f"message {record.sid} already exists")
        await self._index_provider_id(record)

    @unavailable_on_redis_errors
    async def update(self, account_sid: str, sid: str, **changes: Any) -> MessageRecord | None:
        unknown = changes.keys() - _FIELDS
        if unknown:
            raise ValueError(f"a message record has no field(s) {sorted(unknown)}")
        changes.setdefault("date_updated", self._clock())
        updated = await self._table.update(account_sid, sid, changes)
        if updated is not None and ("provider" in changes or "provider_message_id" in changes):
            await self._index_provider_id(updated)
        return updated

    @unavailable_on_redis_errors
    async def get(self, account_sid: str, sid: str) -> MessageRecord | None:
        return await self._table.get(account_sid, sid)

    @unavailable_on_redis_errors
    async def find_by_provider_id(self, provider: str, provider_message_id: str) -> MessageRecord | None:
        key = self._keys.provider_index(provider, provider_message_id)
        for member in await self._redis.zrevrange(key, 0, _PROVIDER_CANDIDATES - 1):
            account, sid = as_text(member).rsplit(":", 1)
            record = await self._table.get(account, sid)
            if record is not None and record.provider == provider and record.provider_message_id == provider_message_id:
                return record
        return None

    @unavailable_on_redis_errors
    async def list(
        self,
        account_sid: str,
        *,
        to: str | None = None,
        from_: str | None = None,
        sent_after: float | None = None,
        sent_before: float | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> builtins.list[MessageRecord]:
        same = equal_fields({"to": to, "from_": from_})
        match: Callable[[MessageRecord], bool] | None = same
        if sent_after is not None or sent_before is not None:
            # Inclusive after, exclusive before; a record never sent matches no date filter.
            def dated(r: MessageRecord) -> bool:
                return (
                    (same is None or same(r))
                    and r.date_sent is not None
                    and (sent_after is None or r.date_sent >= sent_after)
                    and (sent_before is None or r.date_sent < sent_before)
                )

            match = dated

        return await self._table.list(account_sid, match, limit, offset)
