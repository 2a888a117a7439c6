"""The redis engine's call records, and the record table they share with messages.

A record is a hash, ``ps:{AC}:<kind>:<sid>``, with one msgpack value per
dataclass field (so None, "" and 0 stay distinct, and floats and ints keep
their type), listed newest first through a per-account sorted set scored by
date_created. Sids are global (as in the memory engine): a claim key
``ps:sid:<sid>`` names the owning account, so the same sid cannot be created
under two accounts.

Filtered listing walks the sorted set newest first in windows and filters
here; it reads at most ``scan_limit`` records per call (docs/redis.md).
"""

from __future__ import annotations

import builtins
import dataclasses
from typing import Any, Callable, Generic, TypeVar

import msgpack
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from ..calls import CallRecord
from .keys import CALL, KeySpace, as_text
from .scripts import CREATE_RECORD, DROP_RECORD, UPDATE_RECORD, UPDATE_RECORD_IF, Scripts, unavailable_on_redis_errors

R = TypeVar("R")

# Records read per round trip while a filtered listing walks the index.
SCAN_WINDOW = 200
# The most records one filtered listing reads; matches older than that are not found.
DEFAULT_SCAN_LIMIT = 10_000


def encode_fields(values: dict[str, Any]) -> list[Any]:
    """Field/value pairs for HSET: each value msgpack-encoded (tuples as arrays)."""
    out: list[Any] = []
    for name, value in values.items():
        out.append(name)
        out.append(msgpack.packb(value, use_bin_type=True))
    return out


class RecordTable(Generic[R]):
    """One kind of record of every account: create, get, update, list."""

    def __init__(
        self,
        client: Redis,
        keys: KeySpace,
        scripts: Scripts,
        kind: str,
        record_type: type[R],
        *,
        scan_limit: int = DEFAULT_SCAN_LIMIT,
    ) -> None:
        self._redis = client
        self._keys = keys
        self._scripts = scripts
        self.kind = kind
        self._type = record_type
        self.fields = [f.name for f in dataclasses.fields(record_type)]  # type: ignore[arg-type]
        self._known = frozenset(self.fields)
        # Whether the record's constructor checks its values (__post_init__): only
        # then must an update read the stored record to validate the result first.
        self._checked = hasattr(record_type, "__post_init__")
        self._scan_limit = scan_limit

    def decode(self, raw: dict[bytes, bytes]) -> R | None:
        if not raw:
            return None
        data: dict[str, Any] = {}
        known = self._known
        for name_bytes, value in raw.items():
            name = name_bytes.decode()
            if name in known:  # skips our own '~' fields (and fields a newer version added)
                decoded = msgpack.unpackb(value, raw=False)
                # Records hold tuples, never lists; msgpack has only arrays.
                data[name] = tuple(decoded) if isinstance(decoded, list) else decoded
        return self._type(**data)

    async def create(self, record: R) -> bool:
        """Store a new record; False if its sid is taken (by any account)."""
        # Not dataclasses.asdict: its deep copy costs more than the rest of this.
        values = {name: getattr(record, name) for name in self.fields}
        sid: str = values["sid"]
        account: str = values["account_sid"]
        fields = encode_fields(values)  # before any write: unencodable text fails here
        claim = self._keys.sid_claim(sid)
        record_keys = [
            self._keys.record(account, self.kind, sid),
            self._keys.record_index(account, self.kind),
            self._keys.record_seq(account, self.kind),
        ]

        # The claim lives in the sid's own slot and the record in the account's, so
        # they cannot be one script; they go in one round trip, the claim first. A
        # claim left by a create that failed half-way is this account's, and the
        # create script still refuses an existing record.
        def build(pipe: Pipeline) -> None:
            pipe.set(claim, account, nx=True)
            Scripts.queue(pipe, CREATE_RECORD, record_keys, [values["date_created"], sid, *fields])

        claimed, created = await self._scripts.pipeline(build)
        if not claimed:
            owner = await self._redis.get(claim)
            if owner is not None and as_text(owner) != account:
                # Another account's sid (random sids never meet; a bug or a forged
                # one could): the record just made under this account goes again.
                if created:
                    await self._scripts.call(DROP_RECORD, record_keys[:2], [])
                return False
        return bool(created)

    async def get(self, account_sid: str, sid: str) -> R | None:
        raw: dict[bytes, bytes] = await self._redis.hgetall(self._keys.record(account_sid, self.kind, sid))  # type: ignore[assignment]
        return self.decode(raw)

    async def update(self, account_sid: str, sid: str, changes: dict[str, Any]) -> R | None:
        if "sid" in changes or "account_sid" in changes:
            raise ValueError("sid and account_sid name the record; they cannot be changed")
        if self._checked:
            current = await self.get(account_sid, sid)
            if current is None:
                return None
            # replace() re-runs the record's checks: a bad value is refused before any write.
            dataclasses.replace(current, **changes)  # type: ignore[type-var]
        else:
            # A record type without checks (calls): nothing to validate against the
            # stored record, so the update is one round trip, not a read and then a
            # script. Unknown fields are refused as replace() would refuse them.
            unknown = [name for name in changes if name not in self._known]
            if unknown:
                raise TypeError(f"{self._type.__name__} has no field {unknown[0]!r}")
        fields = encode_fields(changes)  # before any write: unencodable values fail here
        reply = await self._scripts.call(UPDATE_RECORD, [self._keys.record(account_sid, self.kind, sid)], fields)
        if reply is None:
            return None  # gone between the read and the write
        # The record as stored now, with any concurrent update of other fields.
        return self.decode(dict(zip(reply[::2], reply[1::2])))

    async def update_if(self, account_sid: str, sid: str, field: str, expected: Any, changes: dict[str, Any]) -> R | None:
        """update(), only while ``field`` holds ``expected`` (one script: check and write)."""
        if field not in self._known:
            raise TypeError(f"{self._type.__name__} has no field {field!r}")
        if self._checked or "sid" in changes or "account_sid" in changes:
            raise ValueError("conditional updates are for records without checks, and never of sid or account_sid")
        unknown = [name for name in changes if name not in self._known]
        if unknown:
            raise TypeError(f"{self._type.__name__} has no field {unknown[0]!r}")
        # Stored values are msgpack, and msgpack of equal values is equal bytes.
        args = [field, msgpack.packb(expected, use_bin_type=True), *encode_fields(changes)]
        reply = await self._scripts.call(UPDATE_RECORD_IF, [self._keys.record(account_sid, self.kind, sid)], args)
        if reply is None:
            return None
        return self.decode(dict(zip(reply[::2], reply[1::2])))

    async def list(
        self, account_sid: str, match: Callable[[R], bool] | None, limit: int, offset: int, index: str | None = None
    ) -> builtins.list[R]:
        """A page, newest first; ``index`` walks another index of the same members
        (one broadcast's messages) instead of the account's."""
        if limit < 0 or offset < 0:
            raise ValueError("limit and offset must not be negative")
        if limit == 0:
            return []
        index = index or self._keys.record_index(account_sid, self.kind)
        if match is None:
            # Unfiltered: the index's ranks are the page, O(log N + limit).
            members = await self._redis.zrevrange(index, offset, offset + limit - 1)
            return await self._fetch(account_sid, members)
        out: builtins.list[R] = []
        skipped = 0
        start = 0
        while start < self._scan_limit:
            window = min(SCAN_WINDOW, self._scan_limit - start)
            members = await self._redis.zrevrange(index, start, start + window - 1)
            for record in await self._fetch(account_sid, members):
                if not match(record):
                    continue
                if skipped < offset:
                    skipped += 1
                    continue
                out.append(record)
                if len(out) == limit:
                    return out
            if len(members) < window:
                break
            start += window
        return out

    async def _fetch(self, account_sid: str, members: builtins.list[Any]) -> builtins.list[R]:
        if not members:
            return []
        pipe = self._redis.pipeline(transaction=False)
        for member in members:
            sid = as_text(member).split(":", 1)[1]  # members are '<seq>:<sid>'
            pipe.hgetall(self._keys.record(account_sid, self.kind, sid))
        out = []
        for raw in await pipe.execute():
            record = self.decode(raw)
            if record is not None:
                out.append(record)
        return out


def equal_fields(wanted: dict[str, Any]) -> Callable[[Any], bool] | None:
    """A filter for the fields given (None values ignored); None when there is none."""
    given = {name: value for name, value in wanted.items() if value is not None}
    if not given:
        return None
    return lambda record: all(getattr(record, name) == value for name, value in given.items())


class RedisCallStore:
    def __init__(self, table: RecordTable[CallRecord]) -> None:
        self._table = table

    @unavailable_on_redis_errors
    async def create(self, record: CallRecord) -> None:
        if not await self._table.create(record):
            raise ValueError(f"call {record.sid} exists")

    @unavailable_on_redis_errors
    async def update(self, account_sid: str, sid: str, **changes: Any) -> CallRecord | None:
        return await self._table.update(account_sid, sid, changes)

    @unavailable_on_redis_errors
    async def update_if(self, account_sid: str, sid: str, expected_status: str, **changes: Any) -> CallRecord | None:
        return await self._table.update_if(account_sid, sid, "status", expected_status, changes)

    @unavailable_on_redis_errors
    async def get(self, account_sid: str, sid: str) -> CallRecord | None:
        return await self._table.get(account_sid, sid)

    @unavailable_on_redis_errors
    async def list(
        self,
        account_sid: str,
        *,
        status: str | None = None,
        to: str | None = None,
        from_: str | None = None,
        parent_call_sid: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[CallRecord]:
        wanted = {"status": status, "to": to, "from_": from_, "parent_call_sid": parent_call_sid}
        return await self._table.list(account_sid, equal_fields(wanted), limit, offset)


def call_table(client: Redis, keys: KeySpace, scripts: Scripts, **options: Any) -> RecordTable[CallRecord]:
    return RecordTable(client, keys, scripts, CALL, CallRecord, **options)
