"""What the redis engine's hot paths cost in round trips (each one a socket write,
a wake-up of Redis and a read: at 200 calls/s they were most of a signaling
node's CPU), and that bursts beyond the connection pool wait rather than fail."""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator, Awaitable, Callable

import pytest
import redis.asyncio
from redis.asyncio.connection import Connection
from redis.exceptions import MaxConnectionsError

from presence_server.engines.calls import CallRecord
from presence_server.engines.redis import RedisEngine
from presence_server.engines.redis.pool import MAX_CONNECTIONS, WaitingConnectionPool
from protocol.addresses import new_sid

ACC = "AC" + "1" * 32
OTHER = "AC" + "2" * 32


@pytest.fixture
async def engine(redis_url: str) -> AsyncIterator[RedisEngine]:
    # Generous timeouts: a burst of hundreds of connections on a busy test machine
    # must not time out; what is tested is the pool, not the clock.
    eng = RedisEngine(redis_url, socket_timeout=20.0, connect_timeout=20.0)
    await eng.start()
    try:
        yield eng
    finally:
        await eng.close()


async def sends_during(monkeypatch: pytest.MonkeyPatch, work: Callable[[], Awaitable[Any]]) -> tuple[int, Any]:
    """How many times the engine wrote to a Redis socket while ``work`` ran (a
    pipeline is one write), and what ``work`` returned."""
    sends = 0
    original = Connection.send_packed_command

    async def counting(self: Connection, *args: Any, **kwargs: Any) -> None:
        nonlocal sends
        sends += 1
        await original(self, *args, **kwargs)

    monkeypatch.setattr(Connection, "send_packed_command", counting)
    try:
        result = await work()
    finally:
        monkeypatch.undo()
    return sends, result


def call(**kw: Any) -> CallRecord:
    return CallRecord(sid=new_sid("CA"), account_sid=ACC, from_="+15550001111", to="client:bob", date_created=1.0, **kw)


async def test_creating_a_call_is_one_round_trip(engine: RedisEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    record = call()
    sends, _ = await sends_during(monkeypatch, lambda: engine.calls.create(record))
    assert sends == 1  # the sid's claim and the record's script, pipelined
    assert await engine.calls.get(ACC, record.sid) == record
    with pytest.raises(ValueError):
        await engine.calls.create(record)


async def test_a_sid_another_account_holds_is_refused_and_leaves_nothing_behind(engine: RedisEngine) -> None:
    theirs = call()
    await engine.calls.create(theirs)
    ours = CallRecord(sid=theirs.sid, account_sid=OTHER, from_="+15550009999", to="client:eve", date_created=5.0)
    with pytest.raises(ValueError):
        await engine.calls.create(ours)
    # The record the pipelined create wrote under OTHER is gone again, index entry too.
    assert await engine.calls.get(OTHER, theirs.sid) is None
    assert await engine.calls.list(OTHER) == []
    assert await engine.calls.get(ACC, theirs.sid) == theirs
    assert await engine.calls.list(ACC) == [theirs]


async def test_a_call_status_change_is_one_round_trip_and_returns_the_stored_record(
    engine: RedisEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = call()
    await engine.calls.create(record)
    await engine.calls.update(ACC, record.sid, error_code=13227)  # another field, stored before
    sends, updated = await sends_during(monkeypatch, lambda: engine.calls.update(ACC, record.sid, status="ringing", date_updated=2.0))
    assert sends == 1  # the update script alone: no read before it
    assert updated == record.replace(status="ringing", date_updated=2.0, error_code=13227)
    assert await engine.calls.get(ACC, record.sid) == updated


async def test_one_round_trip_updates_still_refuse_what_the_memory_engine_refuses(
    engine: RedisEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = call()
    await engine.calls.create(record)
    with pytest.raises(TypeError):
        await engine.calls.update(ACC, record.sid, no_such_field="x")
    with pytest.raises(TypeError):  # not encodable: refused before anything is sent
        await engine.calls.update(ACC, record.sid, error_message=object())
    sends, missing = await sends_during(monkeypatch, lambda: engine.calls.update(ACC, new_sid("CA"), status="ringing"))
    assert (sends, missing) == (1, None)
    assert await engine.calls.update(OTHER, record.sid, status="completed") is None  # another account's: unknown
    assert await engine.calls.get(ACC, record.sid) == record
    assert await engine.calls.list(ACC) == [record]  # an update of a missing call created nothing


async def test_a_burst_past_the_pool_waits_for_connections_instead_of_failing(engine: RedisEngine, redis_url: str) -> None:
    # redis-py's own pool fails the command that finds every connection busy with
    # MaxConnectionsError (EngineUnavailable here): 200 calls/s, or a thousand
    # clients leaving at once, did that.
    records = [call() for _ in range(3 * MAX_CONNECTIONS)]
    await asyncio.gather(*(engine.calls.create(r) for r in records))
    got = await asyncio.gather(*(engine.calls.get(ACC, r.sid) for r in records))
    assert got == records
    probe = redis.asyncio.from_url(redis_url)
    try:
        clients = (await probe.info("clients"))["connected_clients"]
    finally:
        await probe.aclose()
    assert clients <= MAX_CONNECTIONS + 3  # the pool's, the bus's subscriber, this probe


async def test_a_command_waits_for_a_connection_no_longer_than_the_timeout(redis_url: str) -> None:
    pool = WaitingConnectionPool.from_url(redis_url, max_connections=1, timeout=0.2)
    client = redis.asyncio.Redis.from_pool(pool)
    try:
        holder = asyncio.ensure_future(client.blpop(["nothing-here"], timeout=1))  # holds the only connection for 1 s
        await asyncio.sleep(0.05)
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(MaxConnectionsError):
            await client.get("x")
        assert 0.15 <= loop.time() - started < 0.9
        assert await holder is None
        assert await client.get("x") is None  # released: the next command gets it at once
        # Waiters are served as connections come back, not failed.
        pool.timeout = 5.0
        results = await asyncio.gather(*(client.incr("n") for _ in range(20)))
        assert sorted(results) == list(range(1, 21))
    finally:
        await client.aclose()
