"""The redis engine's presence store.

Per identity, a hash of its sessions and a hash with its version and
last_seen; per account, an expiry index (a sorted set scored by lease end);
globally, ``ps:{i}:accounts``, the accounts that have sessions, so a sweeper
visits only accounts with something due. Every change (upsert, remove,
linger, sweep) is one Lua script over the account's keys that returns the
sessions before and after it, so its IdentityChange is atomic across all nodes.

The global index is in another hash slot than the account's keys, so on a
Redis Cluster no script can keep it in the same step. It is kept from outside
the scripts as a *lower bound*: an account's entry is at or before the earliest
lease end in its expiry index (an entry too early only costs a sweeper a visit
that finds nothing due). A writer lowers the entry (``ZADD LT``) to the lease it
wrote, after its script; a sweeper sets the entry to what its script left, then
reads the account's earliest lease again and lowers the entry if a writer got
in between. On a cluster a writer also records a pending token (same slot as
the index) before its script and drops it after lowering, so a writer that
dies between the two leaves a token that a sweeper finds and repairs.
See docs/redis.md.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Iterable, Sequence

import msgpack
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from protocol.presence import SessionPresence, Status

from ..ports import IdentityChange, IdentitySnapshot, SessionKey
from .keys import KeySpace, as_text, lease_member
from .scripts import LINGER, REMOVE, RENEW, SWEEP, UPSERT, LuaScript, Scripts, unavailable_on_redis_errors

# Members per RENEW call: one account's renewals are split into calls this big
# (all in the same pipeline) so no single script runs long enough to stall Redis.
RENEW_CHUNK = 5000
# A pending token this old (wall-clock seconds) belongs to a writer that died
# between its script and its index update: a sweeper repairs the account's entry.
PENDING_STALE = 60.0
# Stale tokens one sweep repairs (the rest wait for the next sweep).
PENDING_REPAIRS = 100


def encode_session(session: SessionPresence) -> bytes:
    """The stored form: a msgpack array, in the order the Lua scripts index it
    (SEQ=1, SID=2, ..., ACTIVITY=9, LINGERING=10). SEQ is set by the script."""
    packed: bytes = msgpack.packb(
        [
            0,
            session.session_id,
            session.node_id,
            Status(session.status).value,
            session.text,
            session.priority,
            list(session.capabilities),
            session.connected_at,
            session.last_activity,
            session.lingering,
        ],
        use_bin_type=True,
    )
    return packed


def decode_sessions(account_sid: str, identity: str, raws: Iterable[bytes]) -> tuple[SessionPresence, ...]:
    rows = [msgpack.unpackb(raw, raw=False) for raw in raws]
    # Hash order is not insertion order; SEQ is (a replaced session keeps its SEQ).
    rows.sort(key=lambda row: row[0])
    return tuple(
        SessionPresence(
            session_id=sid,
            account_sid=account_sid,
            identity=identity,
            node_id=node_id,
            status=Status(status),
            text=text,
            priority=int(priority),
            capabilities=tuple(capabilities),
            # Lua's msgpack writes integral numbers as integers: times are floats again here.
            connected_at=float(connected_at),
            last_activity=float(last_activity),
            lingering=bool(lingering),
        )
        for _seq, sid, node_id, status, text, priority, capabilities, connected_at, last_activity, lingering in rows
    )


def _last_seen(value: bytes | None) -> float | None:
    return None if value is None else float(value)


class RedisPresenceStore:
    def __init__(self, client: Redis, keys: KeySpace, scripts: Scripts, *, cluster: bool = False) -> None:
        self._redis = client
        self._keys = keys
        self._scripts = scripts
        self._cluster = cluster

    async def _write(self, script: LuaScript, keys: list[str], args: list[Any], account: str, lease: float) -> Any:
        """Run a presence script that indexes a lease ending at ``lease``, and lower the
        account's entry in the due-accounts index to it (after the script: see above)."""
        accounts = self._keys.accounts()
        if not self._cluster:
            # One connection runs a pipeline in order: the script, then the index,
            # in one round trip; a writer that dies after sending it loses neither.
            def build(pipe: Pipeline) -> None:
                self._scripts.queue(pipe, script, keys, args)
                pipe.zadd(accounts, {account: lease}, lt=True)

            return (await self._scripts.pipeline(build))[0]
        pending = self._keys.accounts_pending()
        token = f"{account}:{uuid.uuid4().hex}"

        def first(pipe: Pipeline) -> None:
            pipe.zadd(pending, {token: time.time()})
            pipe.zadd(accounts, {account: lease}, lt=True)
            self._scripts.queue(pipe, script, keys, args)

        reply = (await self._scripts.pipeline(first))[2]
        # Sequential, not in the first pipeline: a cluster runs a pipeline's commands
        # for different nodes in any order, and this lowering must follow the script.
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.zadd(accounts, {account: lease}, lt=True)
            pipe.zrem(pending, token)
            await pipe.execute()
        return reply

    async def _settle(self, account: str, earliest: Any) -> None:
        """After a sweep of ``account``: set its index entry to the earliest lease its
        script left (raising it, or removing it), then read the account's earliest
        lease again and lower the entry if a writer indexed a session in between."""
        accounts = self._keys.accounts()
        if earliest is None:
            await self._redis.zrem(accounts, account)
        else:
            await self._redis.zadd(accounts, {account: float(earliest)})
        first = await self._redis.zrange(self._keys.expiry(account), 0, 0, withscores=True)
        if first and (earliest is None or float(first[0][1]) < float(earliest)):
            await self._redis.zadd(accounts, {account: float(first[0][1])}, lt=True)

    async def _repair_pending(self) -> None:
        """Index again the accounts of writers that died between script and index."""
        pending = self._keys.accounts_pending()
        stale = await self._redis.zrangebyscore(pending, "-inf", time.time() - PENDING_STALE, start=0, num=PENDING_REPAIRS)
        for raw in stale:
            token = as_text(raw)
            account = token.rsplit(":", 1)[0]
            first = await self._redis.zrange(self._keys.expiry(account), 0, 0, withscores=True)
            if first:
                await self._redis.zadd(self._keys.accounts(), {account: float(first[0][1])}, lt=True)
            await self._redis.zrem(pending, token)

    def _change(self, account_sid: str, identity: str, reply: list[Any]) -> IdentityChange:
        before, after, version, last_seen = reply
        return IdentityChange(
            account_sid,
            identity,
            decode_sessions(account_sid, identity, before),
            decode_sessions(account_sid, identity, after),
            int(version),
            _last_seen(last_seen),
        )

    def _identity_keys(self, account_sid: str, identity: str) -> list[str]:
        k = self._keys
        return [k.sessions(account_sid, identity), k.presence(account_sid, identity), k.expiry(account_sid)]

    @unavailable_on_redis_errors
    async def upsert(self, session: SessionPresence, lease_expires: float) -> IdentityChange:
        account, identity, sid = session.account_sid, session.identity, session.session_id
        reply = await self._write(
            UPSERT,
            self._identity_keys(account, identity),
            [
                sid,
                encode_session(session),
                lease_expires,
                lease_member(identity, sid, session.lingering),
                lease_member(identity, sid, not session.lingering),
            ],
            account,
            lease_expires,
        )
        return self._change(account, identity, reply)

    @unavailable_on_redis_errors
    async def remove(self, key: SessionKey, now: float) -> IdentityChange | None:
        # No index write: removing a lease only moves the account's earliest lease
        # later, and an entry too early is allowed (a sweeper raises it).
        reply = await self._scripts.call(
            REMOVE,
            self._identity_keys(key.account_sid, key.identity),
            [
                key.session_id,
                now,
                lease_member(key.identity, key.session_id, False),
                lease_member(key.identity, key.session_id, True),
            ],
        )
        return None if reply is None else self._change(key.account_sid, key.identity, reply)

    @unavailable_on_redis_errors
    async def linger(self, key: SessionKey, until: float, now: float) -> IdentityChange | None:
        reply = await self._write(
            LINGER,
            self._identity_keys(key.account_sid, key.identity),
            [
                key.session_id,
                until,
                now,
                lease_member(key.identity, key.session_id, False),
                lease_member(key.identity, key.session_id, True),
            ],
            key.account_sid,
            until,
        )
        return None if reply is None else self._change(key.account_sid, key.identity, reply)

    @unavailable_on_redis_errors
    async def renew(self, keys: Sequence[SessionKey], lease_expires: float) -> list[SessionKey]:
        """One round trip for the whole batch: a pipeline of one RENEW call per
        account (per RENEW_CHUNK sessions of it), never a call per session.
        Returns the keys whose sessions the store no longer holds."""
        members: dict[str, dict[str, SessionKey]] = {}
        for key in keys:
            members.setdefault(key.account_sid, {})[lease_member(key.identity, key.session_id, False)] = key
        if not members:
            return []

        # No index write: renewing only moves leases later, and an entry too early
        # is allowed (a sweeper that finds nothing due raises it).
        def build(pipe: Pipeline) -> None:
            for account, by_member in members.items():
                expiry = self._keys.expiry(account)
                batch = list(by_member)
                for start in range(0, len(batch), RENEW_CHUNK):
                    chunk = batch[start : start + RENEW_CHUNK]
                    self._scripts.queue(pipe, RENEW, [expiry], [lease_expires, *chunk])

        replies = await self._scripts.pipeline(build)
        # The replies come in the order the calls were queued: account by account.
        calls = [account for account, by_member in members.items() for _ in range(0, len(by_member), RENEW_CHUNK)]
        return [members[account][as_text(member)] for account, reply in zip(calls, replies) for member in reply]

    @unavailable_on_redis_errors
    async def sweep(self, now: float, limit: int = 1000) -> list[IdentityChange]:
        if limit <= 0:
            return []
        k = self._keys
        if self._cluster:
            await self._repair_pending()
        # Only accounts whose entry has come (their earliest lease may have ended);
        # each is swept by its own atomic script, so sweepers on many nodes may race
        # over the same accounts.
        due = await self._redis.zrangebyscore(k.accounts(), "-inf", now, start=0, num=limit)
        changes: list[IdentityChange] = []
        for raw_account in due:
            remaining = limit - len(changes)
            if remaining <= 0:
                break
            account = as_text(raw_account)
            swept, earliest = await self._scripts.call(
                SWEEP,
                [k.expiry(account)],
                [now, remaining, k.sessions_prefix(account), k.presence_prefix(account)],
            )
            for identity, change in swept:
                changes.append(self._change(account, as_text(identity), change))
            await self._settle(account, earliest)
        return changes

    @unavailable_on_redis_errors
    async def get(self, key: SessionKey) -> SessionPresence | None:
        raw = await self._redis.hget(self._keys.sessions(key.account_sid, key.identity), key.session_id)
        if not isinstance(raw, bytes):
            return None
        (session,) = decode_sessions(key.account_sid, key.identity, [raw])
        return session

    @unavailable_on_redis_errors
    async def snapshot(self, account_sid: str, identities: Iterable[str]) -> list[IdentitySnapshot]:
        names = list(identities)
        if not names:
            return []
        # MULTI/EXEC: each identity's sessions and version are read at one instant
        # (all keys are the account's, one slot, so this stays legal in a cluster).
        pipe = self._redis.pipeline(transaction=True)
        for identity in names:
            pipe.hvals(self._keys.sessions(account_sid, identity))
            pipe.hmget(self._keys.presence(account_sid, identity), ["version", "last_seen"])
        replies = await pipe.execute()
        out = []
        for i, identity in enumerate(names):
            raws, (version, last_seen) = replies[2 * i], replies[2 * i + 1]
            out.append(
                IdentitySnapshot(
                    identity,
                    decode_sessions(account_sid, identity, raws),
                    int(version) if version is not None else 0,
                    _last_seen(last_seen),
                )
            )
        return out

    @unavailable_on_redis_errors
    async def identities(self, account_sid: str, limit: int = 1000) -> list[str]:
        # The expiry index holds one member per session, live or lingering
        # (``A|L:<n>:<identity>:<session>``): its identities are the present ones.
        members = await self._redis.zrange(self._keys.expiry(account_sid), 0, -1)
        names = set()
        for member in members:
            _flag, length, rest = as_text(member).split(":", 2)
            names.add(rest.encode()[: int(length)].decode())
        return sorted(names)[:limit]
