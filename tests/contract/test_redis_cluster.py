"""What the redis engine promises where a global index lives in another hash slot
than the account's keys (always so on a Redis Cluster, and the same code runs on
one server): a writer that dies between its script and its index update loses
nothing, and the bus on a cluster keeps the single-server bus's promises."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any, AsyncIterator

import pytest

from presence_server.engines.outbound import NORMAL, SendJob
from presence_server.engines.ports import MessageRecord
from presence_server.engines.redis import RedisEngine
from presence_server.engines.redis.batch import batch_arguments
from presence_server.engines.redis.keys import lease_member
from presence_server.engines.redis.presence import encode_session
from presence_server.engines.redis.queue_scripts import CREATE_BATCH
from presence_server.engines.redis.scripts import UPSERT
from protocol.addresses import new_sid
from protocol.presence import SessionPresence

T0 = 1_700_000_000.0


@pytest.fixture(params=["redis", "redis-cluster"])
async def make(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    target = request.getfixturevalue("shared_redis_cluster" if request.param == "redis-cluster" else "shared_redis_server")
    target.flushall()
    made: list[RedisEngine] = []

    async def new() -> RedisEngine:
        engine = RedisEngine(target.url)
        await engine.start()
        made.append(engine)
        return engine

    yield new
    for engine in made:
        await engine.close()


async def test_a_batch_whose_writer_died_after_its_script_is_still_claimed(make: Any) -> None:
    """create_batch's steps 1 and 2 (pending token, records and jobs), then the
    process dies before step 3 (the ready index): another worker still finds the job."""
    dying, survivor = await make(), await make()
    account = new_sid("AC")
    record = MessageRecord(sid=new_sid("SM"), account_sid=account, to="+15550100001", from_="+15550199999", body="hi")
    job = SendJob(account, record.sid, NORMAL, T0, record.from_)
    names, args = batch_arguments(dying.keys, account, [record], [job], None)
    token = f"{account}:{uuid.uuid4().hex}"
    # Step 1, as a writer that started a minute ago; step 2; no step 3.
    await dying._redis.zadd(dying.keys.queue_pending(), {token: time.time() - 61})
    assert await dying._scripts.call(CREATE_BATCH, names, args) == 1
    await dying.close()

    assert await survivor.queue.next_due() is None  # not indexed: only the token knows
    assert await survivor.queue.claim(T0, NORMAL, 10, T0 + 30, "w") == [job]
    assert await survivor.messages.get(account, record.sid) == record
    assert await survivor._redis.zcard(survivor.keys.queue_pending()) == 0  # repaired once


async def test_a_writer_in_flight_is_not_repaired_early(make: Any) -> None:
    """A fresh token is a writer still running: claims leave it to that writer."""
    engine = await make()
    account = new_sid("AC")
    token = f"{account}:{uuid.uuid4().hex}"
    await engine._redis.zadd(engine.keys.queue_pending(), {token: time.time()})
    assert await engine.queue.claim(T0, NORMAL, 10, T0 + 30, "w") == []
    assert await engine._redis.zscore(engine.keys.queue_pending(), token) is not None


async def test_a_session_whose_gateway_died_before_indexing_it_is_swept(make: Any) -> None:
    """The upsert script ran, the gateway died before lowering the due-accounts
    index (on a cluster: with its pending token written): the session is still
    swept when its lease ends, so it leaves no ghost."""
    dying, sweeper = await make(), await make()
    account = new_sid("AC")
    session = SessionPresence("SE1", account, "alice", "ND1")
    keys = dying.keys
    if dying.cluster:
        await dying._redis.zadd(keys.accounts_pending(), {f"{account}:{uuid.uuid4().hex}": time.time() - 61})
    await dying._scripts.call(
        UPSERT,
        [keys.sessions(account, "alice"), keys.presence(account, "alice"), keys.expiry(account)],
        ["SE1", encode_session(session), 10.0, lease_member("alice", "SE1", False), lease_member("alice", "SE1", True)],
    )
    if not dying.cluster:
        # One server: the script and the index update go in one pipeline write, so a
        # writer cannot die between them; lower the index as that pipeline does.
        await dying._redis.zadd(keys.accounts(), {account: 10.0}, lt=True)
    await dying.close()

    (change,) = await sweeper.presence.sweep(now=10.0)
    assert [s.session_id for s in change.before] == ["SE1"] and change.after == ()
    assert await sweeper._redis.zcard(keys.accounts()) == 0


async def test_the_bus_on_a_cluster_counts_listeners_and_keeps_order(shared_redis_cluster: Any) -> None:
    shared_redis_cluster.flushall()
    engines = [RedisEngine(shared_redis_cluster.url) for _ in range(3)]
    for engine in engines:
        await engine.start()
    try:
        got: list[list[int]] = [[], []]
        for engine, seen in zip(engines, got):

            def handler(message: dict[str, Any], seen: list[int] = seen) -> None:
                seen.append(message["n"])

            await engine.bus.subscribe("presence:AC1", handler)
        # Sharded pub/sub on one slot: every engine listens on the same master,
        # so SPUBLISH counts them all, and a topic's order is the same for each.
        for n in range(50):
            assert await engines[2].bus.publish("presence:AC1", {"n": n}) == 2
            await engines[n % 2].bus.publish("presence:AC1", {"n": 100 + n})
        assert await engines[2].bus.publish("node:NDgone", {"n": 0}) == 0

        async def settled() -> None:
            while len(got[0]) < 100 or len(got[1]) < 100:
                await asyncio.sleep(0.01)

        await asyncio.wait_for(settled(), 5)
        assert got[0] == got[1] and sorted(got[0]) == sorted([*range(50), *range(100, 150)])
    finally:
        for engine in engines:
            await engine.close()
