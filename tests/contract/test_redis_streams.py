"""The redis engine's send queue on Redis Streams, seen from Redis: a leased job is
an entry pending in its account's stream's consumer group under the worker that
holds it; an ended lease moves to the next worker by XCLAIM (the dead worker
leaves the group); complete, retry and release acknowledge and delete the entry;
a stream with nothing leased is gone. (The port's behaviour itself is the shared
contract, tests/contract/test_send_queue.py, on every engine.)"""

from __future__ import annotations

from typing import Any, AsyncIterator

import pytest

from presence_server.engines.outbound import NORMAL, URGENT, SendJob
from presence_server.engines.ports import MessageRecord
from presence_server.engines.redis import RedisEngine
from protocol.addresses import new_sid

ACC = "AC" + "5" * 32
T0 = 1_700_000_000.0
GROUP = "send"


@pytest.fixture
async def engine(redis_url: str) -> AsyncIterator[RedisEngine]:
    eng = RedisEngine(redis_url)
    await eng.start()
    try:
        yield eng
    finally:
        await eng.close()


async def enqueue(engine: RedisEngine, n: int, priority: int = NORMAL, due: float = T0) -> list[str]:
    records = [
        MessageRecord(sid=new_sid("SM"), account_sid=ACC, to="+15550100001", from_="+15550199999", body="hi", priority=priority)
        for _ in range(n)
    ]
    await engine.messages.create_batch(records, [SendJob(ACC, r.sid, priority, due, r.from_) for r in records])
    return [r.sid for r in records]


def stream(engine: RedisEngine, priority: int = NORMAL) -> str:
    return engine.keys.queue_stream(ACC, priority)


async def pending(engine: RedisEngine, priority: int = NORMAL) -> dict[str, tuple[str, int]]:
    """Message sid -> (consumer, times delivered) of every entry pending in the group."""
    client: Any = engine._redis
    out = {}
    for entry in await client.xpending_range(stream(engine, priority), GROUP, "-", "+", 1000):
        ((_, fields),) = await client.xrange(stream(engine, priority), entry["message_id"], entry["message_id"])
        out[fields[b"sid"].decode()] = (entry["consumer"].decode(), entry["times_delivered"])
    return out


async def consumers(engine: RedisEngine, priority: int = NORMAL) -> set[str]:
    client: Any = engine._redis
    return {c["name"].decode() for c in await client.xinfo_consumers(stream(engine, priority), GROUP)}


async def test_a_claimed_job_is_pending_under_its_worker_and_complete_acks_and_deletes_it(engine: RedisEngine) -> None:
    a, b, c = await enqueue(engine, 3)
    assert not await engine._redis.exists(stream(engine))  # nothing leased: no stream
    await engine.queue.claim(T0, NORMAL, 2, T0 + 30, "w1")
    assert await pending(engine) == {a: ("w1", 1), b: ("w1", 1)}
    (group,) = await engine._redis.xinfo_groups(stream(engine))
    assert group["lag"] == 0  # every entry was read through the group when it was added
    assert await engine._redis.zcard(engine.keys.queue_due(ACC, NORMAL)) == 1  # c waits in the due set

    await engine.queue.complete(ACC, a)
    assert await pending(engine) == {b: ("w1", 1)}
    assert await engine._redis.xlen(stream(engine)) == 1  # acknowledged and deleted
    await engine.queue.complete(ACC, b)
    assert not await engine._redis.exists(stream(engine))  # empty: gone, with its group
    assert [j.message_sid for j in await engine.queue.claim(T0, NORMAL, 5, T0 + 30, "w2")] == [c]
    assert await consumers(engine) == {"w2"}


async def test_a_dead_workers_jobs_are_claimed_from_it_once_their_lease_ended(engine: RedisEngine) -> None:
    sids = await enqueue(engine, 3)
    await engine.queue.claim(T0, NORMAL, 3, T0 + 10, "dead")
    assert await engine.queue.claim(T0 + 10, NORMAL, 3, T0 + 40, "w2") == []  # ends at T0 + 10, not before
    assert [j.message_sid for j in await engine.queue.claim(T0 + 11, NORMAL, 2, T0 + 40, "w2")] == sids[:2]
    assert await pending(engine) == {sids[0]: ("w2", 2), sids[1]: ("w2", 2), sids[2]: ("dead", 1)}
    assert await consumers(engine) == {"dead", "w2"}  # it still holds one
    assert [j.message_sid for j in await engine.queue.claim(T0 + 11, NORMAL, 2, T0 + 40, "w3")] == sids[2:]
    assert await consumers(engine) == {"w2", "w3"}  # it holds nothing: out of the group
    assert await engine.queue.release("dead") == 0


async def test_a_retry_leaves_the_stream_and_waits_in_the_due_set(engine: RedisEngine) -> None:
    (sid,) = await enqueue(engine, 1, priority=URGENT)
    await engine.queue.claim(T0, URGENT, 1, T0 + 30, "w1")
    assert await engine.queue.reschedule(ACC, sid, T0 + 60, 1, priority=NORMAL) is True
    assert not await engine._redis.exists(stream(engine, URGENT))
    assert await engine._redis.zscore(engine.keys.queue_due(ACC, NORMAL), await engine._redis.hget(engine.keys.queue_job(ACC, sid), "member")) == T0 + 60
    assert not await engine._redis.hexists(engine.keys.queue_job(ACC, sid), "entry")
    await engine.queue.claim(T0 + 60, NORMAL, 1, T0 + 90, "w2")
    assert await pending(engine) == {sid: ("w2", 1)}  # a new delivery of the retry


async def test_release_returns_a_workers_entries_and_takes_it_out_of_every_group(engine: RedisEngine) -> None:
    normal = await enqueue(engine, 3)
    (urgent,) = await enqueue(engine, 1, priority=URGENT)
    await engine.queue.claim(T0, NORMAL, 2, T0 + 30, "stopping")
    await engine.queue.claim(T0, NORMAL, 1, T0 + 30, "busy")
    await engine.queue.claim(T0, URGENT, 1, T0 + 30, "stopping")
    assert await engine.queue.release("stopping") == 3
    assert await pending(engine) == {normal[2]: ("busy", 1)}
    assert await consumers(engine) == {"busy"}
    assert not await engine._redis.exists(stream(engine, URGENT))
    assert not await engine._redis.exists(engine.keys.queue_consumer("stopping"))
    again = await engine.queue.claim(T0 + 1, NORMAL, 5, T0 + 30, "new")
    assert [j.message_sid for j in again] == normal[:2]  # at once, in their order
