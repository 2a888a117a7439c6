"""The redis engine's message records (the same record table as calls, plus a
carrier-id index for delivery reports, a per-broadcast index, the sticky
sender and the broadcasts themselves).

``find_by_provider_id`` reads ``ps:provider:<n>:<provider>:<id>``, a sorted set
of ``<account>:<sid>`` scored by date_created (outside any account's slot: a
delivery report does not say whose message it is). Entries are written with
the record (after it, when an update sets the carrier id) and checked against
it when read, so an entry left behind by a
record whose carrier id changed since is skipped, never returned.

``create`` and ``create_batch`` are one script (``create_batch``, batch.py):
records, sid claims, indexes, the sticky sender, send jobs and the broadcast
are stored together or not at all.
"""

from __future__ import annotations

import builtins
import dataclasses
import time
from typing import Any, Callable, Sequence

from redis.asyncio import Redis

from ..outbound import BroadcastRecord, SendJob
from ..ports import MessageRecord
from .batch import batch_arguments, number
from .calls import RecordTable, equal_fields
from .keys import BROADCAST, MESSAGE, KeySpace, as_text
from .queue_scripts import CREATE_BATCH, STICK
from .scripts import Scripts, unavailable_on_redis_errors

_FIELDS = frozenset(f.name for f in dataclasses.fields(MessageRecord))
# An update of these may change a messaging service's sticky sender.
_STICKY_FIELDS = frozenset({"from_", "to", "messaging_service_sid", "date_created"})

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
        self._scripts = scripts
        self._clock = clock
        self._table: RecordTable[MessageRecord] = RecordTable(client, keys, scripts, MESSAGE, MessageRecord, **table_options)
        self._broadcasts: RecordTable[BroadcastRecord] = RecordTable(client, keys, scripts, BROADCAST, BroadcastRecord)

    async def _index_provider_id(self, record: MessageRecord) -> None:
        if record.provider is None or record.provider_message_id is None:
            return
        key = self._keys.provider_index(record.provider, record.provider_message_id)
        await self._redis.zadd(key, {f"{record.account_sid}:{record.sid}": record.date_created})

    @unavailable_on_redis_errors
    async def create(self, record: MessageRecord) -> None:
        await self._create_batch([record], (), None)

    @unavailable_on_redis_errors
    async def create_batch(
        self,
        records: Sequence[MessageRecord],
        jobs: Sequence[SendJob] = (),
        broadcast: BroadcastRecord | None = None,
    ) -> None:
        await self._create_batch(records, jobs, broadcast)

    async def _create_batch(
        self, records: Sequence[MessageRecord], jobs: Sequence[SendJob], broadcast: BroadcastRecord | None
    ) -> None:
        if not records and not jobs and broadcast is None:
            return
        names, args = batch_arguments(self._keys, records, jobs, broadcast)
        reply = await self._scripts.call(CREATE_BATCH, names, args)
        if reply != 1:
            raise ValueError(f"{as_text(reply)} already exists: nothing was stored")

    @unavailable_on_redis_errors
    async def update(self, account_sid: str, sid: str, **changes: Any) -> MessageRecord | None:
        unknown = changes.keys() - _FIELDS
        if unknown:
            raise ValueError(f"a message record has no field(s) {sorted(unknown)}")
        changes.setdefault("date_updated", self._clock())
        updated = await self._table.update(account_sid, sid, changes)
        if updated is None:
            return None
        if "provider" in changes or "provider_message_id" in changes:
            await self._index_provider_id(updated)
        if updated.messaging_service_sid is not None and changes.keys() & _STICKY_FIELDS:
            await self._scripts.call(
                STICK,
                [self._keys.record(account_sid, MESSAGE, sid), self._keys.last_sender(account_sid, updated.messaging_service_sid)],
                [updated.to, number(updated.date_created), updated.from_],
            )
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
        broadcast_sid: str | None = None,
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
        # One broadcast's messages have their own index (same members as the account's).
        index = None if broadcast_sid is None else self._keys.broadcast_messages(account_sid, broadcast_sid)
        return await self._table.list(account_sid, match, limit, offset, index)

    @unavailable_on_redis_errors
    async def last_sender(self, account_sid: str, messaging_service_sid: str, to: str) -> str | None:
        entry = await self._redis.hget(self._keys.last_sender(account_sid, messaging_service_sid), to)
        if entry is None:
            return None
        return as_text(entry).split("|", 2)[2]  # '<date_created>|<seq>:<sid>|<from>'

    @unavailable_on_redis_errors
    async def get_broadcast(self, account_sid: str, sid: str) -> BroadcastRecord | None:
        return await self._broadcasts.get(account_sid, sid)

    @unavailable_on_redis_errors
    async def list_broadcasts(self, account_sid: str, *, limit: int = 50, offset: int = 0) -> builtins.list[BroadcastRecord]:
        return await self._broadcasts.list(account_sid, None, limit, offset)
