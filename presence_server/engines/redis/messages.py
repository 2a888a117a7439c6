"""The redis engine's message records (the same record table as calls, plus a
carrier-id index for delivery reports, a per-broadcast index, the sticky
sender and the broadcasts themselves).

``find_by_provider_id`` reads ``ps:provider:<n>:<provider>:<id>``, a sorted set
of ``<account>:<sid>`` scored by date_created (outside any account's slot: a
delivery report does not say whose message it is). Entries are written with
the record (after it, when an update sets the carrier id) and checked against
it when read, so an entry left behind by a
record whose carrier id changed since is skipped, never returned.

``create`` and ``create_batch`` store one account's records, their indexes,
the sticky sender, their send jobs and the broadcast in one script
(``create_batch``, batch.py): together or not at all. The global keys around it
go in this order, so that a crash between two steps loses nothing accepted:

1. the sid claims (``SET NX``; a sid another account holds refuses the batch)
   and, with jobs, a pending token in the queue's index slot;
2. the script (records and jobs, atomically, in the account's slot);
3. the queue's ready index lowered to the new jobs' due times, the token
   dropped, the carrier-id index written.

A refused batch (a sid taken) removes the claims and token it wrote, so it
leaves nothing behind. A process that dies after step 2 leaves its token, and
the next claim (queue.py) indexes the account's jobs from it: the jobs are
never orphaned. Claims left by a create that failed half-way are this
account's, so retrying the create works.
"""

from __future__ import annotations

import builtins
import dataclasses
import time
import uuid
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
        owners = {r.account_sid for r in records} | {j.account_sid for j in jobs}
        if broadcast is not None:
            owners.add(broadcast.account_sid)
        if len(owners) != 1:
            # One account's keys are one hash slot: that is what lets one script store it all.
            raise ValueError(f"a batch belongs to one account; this one names {len(owners)}: nothing was stored")
        (account,) = owners
        sids = [r.sid for r in records] + ([broadcast.sid] if broadcast is not None else [])
        for group in (sids, [j.message_sid for j in jobs]):
            if len(set(group)) != len(group):
                twice = next(sid for sid in group if group.count(sid) > 1)
                raise ValueError(f"{twice} is given twice in the batch: nothing was stored")
        names, args = batch_arguments(self._keys, account, records, jobs, broadcast)  # encodes: may raise first
        k = self._keys
        token = f"{account}:{uuid.uuid4().hex}" if jobs else None
        claims = [k.sid_claim(sid) for sid in sids]

        # 1. Claims and the pending token.
        pipe = self._redis.pipeline(transaction=False)
        if token is not None:
            pipe.zadd(k.queue_pending(), {token: time.time()})
        for claim in claims:
            pipe.set(claim, account, nx=True)
            pipe.get(claim)
        replies = (await pipe.execute())[1 if token is not None else 0 :]
        created = [claim for claim, made in zip(claims, replies[0::2]) if made]
        taken = next((sid for sid, owner in zip(sids, replies[1::2]) if owner is not None and as_text(owner) != account), None)
        # 2. The records and jobs, in one script.
        if taken is None:
            reply = await self._scripts.call(CREATE_BATCH, names, args)
            taken = None if reply == 1 else as_text(reply)
        if taken is not None:
            await self._undo(created, token)
            raise ValueError(f"{taken} already exists: nothing was stored")
        # 3. The global indexes.
        pipe = self._redis.pipeline(transaction=False)
        first_due: dict[int, float] = {}
        for job in jobs:
            first_due[job.priority] = min(job.due_at, first_due.get(job.priority, job.due_at))
        for priority, due in first_due.items():
            pipe.zadd(k.queue_ready(priority), {account: due}, lt=True)
        if token is not None:
            pipe.zrem(k.queue_pending(), token)
        for record in records:
            if record.provider is not None and record.provider_message_id is not None:
                key = k.provider_index(record.provider, record.provider_message_id)
                pipe.zadd(key, {f"{account}:{record.sid}": record.date_created})
        await pipe.execute()

    async def _undo(self, claims: list[str], token: str | None) -> None:
        """A refused batch takes back what step 1 wrote: the claims it made (no
        other create can hold them: SET NX made them) and its pending token."""
        pipe = self._redis.pipeline(transaction=False)
        for claim in claims:
            pipe.delete(claim)
        if token is not None:
            pipe.zrem(self._keys.queue_pending(), token)
        await pipe.execute()

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
