"""What only the redis engine promises, beyond the shared contract: many nodes on
one Redis (concurrent sweepers, the bus between engines), batched renewal,
outages, and one hash slot per account."""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import re
from typing import Any, AsyncIterator, Awaitable, Callable

import pytest
import redis.asyncio
from redis.asyncio.connection import Connection
from redis.crc import key_slot

from presence_server.engines.calls import CallRecord
from presence_server.engines.outbound import BroadcastRecord, RouteOutcome, SendJob, Submission, TrackedLink
from presence_server.engines.ports import EngineUnavailable, IdentityChange, MessageRecord, SessionKey
from presence_server.engines.redis import RedisEngine
from protocol.addresses import new_sid
from protocol.presence import SessionPresence, Status
from tests.helpers.redis_server import RedisServer, redis_server


ACC = "AC" + "1" * 32


def sess(sid: str, identity: str = "alice", account: str = ACC, **kw: Any) -> SessionPresence:
    return SessionPresence(sid, account, identity, "ND1", **kw)


def key(s: SessionPresence) -> SessionKey:
    return SessionKey(s.account_sid, s.identity, s.session_id)


@pytest.fixture
async def engines(redis_url: str) -> AsyncIterator[Callable[..., Awaitable[RedisEngine]]]:
    """Makes engines on the shared (flushed) server - many nodes on one Redis."""
    made: list[RedisEngine] = []

    async def make(**options: Any) -> RedisEngine:
        engine = RedisEngine(redis_url, **options)
        await engine.start()
        made.append(engine)
        return engine

    yield make
    for engine in made:
        await engine.close()


async def wait_until(predicate: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("timed out waiting")
        await asyncio.sleep(0.02)


def removed_sessions(change: IdentityChange) -> set[str]:
    return {s.session_id for s in change.before} - {s.session_id for s in change.after}


# -- presence across nodes --------------------------------------------------------------


async def test_concurrent_sweepers_report_each_expired_session_exactly_once(engines: Callable[..., Awaitable[RedisEngine]]) -> None:
    one, two = await engines(), await engines()
    accounts = [new_sid("AC") for _ in range(3)]
    expired: set[tuple[str, str, str]] = set()
    live: set[tuple[str, str, str]] = set()
    for n in range(240):
        s = sess(f"SE{n}", identity=f"user{n % 17}", account=accounts[n % 3])
        lease = 10.0 if n % 4 else 1000.0
        await (one if n % 2 else two).presence.upsert(s, lease)
        (expired if lease == 10.0 else live).add((s.account_sid, s.identity, s.session_id))

    async def sweeper(engine: RedisEngine) -> list[IdentityChange]:
        out: list[IdentityChange] = []
        while changes := await engine.presence.sweep(now=10.0, limit=7):
            out.extend(changes)
            await asyncio.sleep(0)  # let the other sweeper interleave
        return out

    first, second = await asyncio.gather(sweeper(one), sweeper(two))
    assert first and second, "both sweepers should have had work"
    reported: collections.Counter[tuple[str, str, str]] = collections.Counter()
    for change in first + second:
        (gone,) = removed_sessions(change)  # each change removes exactly one session
        reported[(change.account_sid, change.identity, gone)] += 1
    assert set(reported) == expired
    assert max(reported.values()) == 1
    # Versions stay a sequence per identity: no two changes claim the same one.
    versions = collections.Counter((c.account_sid, c.identity, c.version) for c in first + second)
    assert max(versions.values()) == 1
    for account, identity, session_id in live:
        assert await one.presence.get(SessionKey(account, identity, session_id)) is not None
    assert await one.presence.sweep(now=10.0) == []


async def test_renewing_a_thousand_sessions_is_one_round_trip(
    engines: Callable[..., Awaitable[RedisEngine]], shared_redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = await engines()
    accounts = [new_sid("AC") for _ in range(3)]
    sessions = [sess(f"SE{n}", identity=f"u{n % 50}", account=accounts[n % 3]) for n in range(1000)]
    for s in sessions:
        await engine.presence.upsert(s, 100.0)

    sends = 0
    original = Connection.send_packed_command

    async def counting(self: Connection, *args: Any, **kwargs: Any) -> None:
        nonlocal sends
        sends += 1
        await original(self, *args, **kwargs)

    shared_redis_server.command("CONFIG", "RESETSTAT")
    monkeypatch.setattr(Connection, "send_packed_command", counting)
    await engine.presence.renew([key(s) for s in sessions], 500.0)
    monkeypatch.undo()

    assert sends == 1  # one pipeline: one write, then its replies
    stats = commandstats(shared_redis_server)
    assert stats["evalsha"] == len(accounts)  # one script call per account, not per session
    assert stats.get("zadd", 0) <= 2 * len(accounts)  # the batch ZADD XX and the index update
    assert await engine.presence.sweep(now=400.0) == []
    assert len(await engine.presence.sweep(now=500.0, limit=5000)) == 1000


def commandstats(server: RedisServer) -> dict[str, int]:
    info = server.command("INFO", "commandstats").decode()
    return {m[1]: int(m[2]) for m in re.finditer(r"cmdstat_([\w|]+):calls=(\d+)", info)}


async def test_sessions_round_trip_exactly_through_the_scripts(engines: Callable[..., Awaitable[RedisEngine]]) -> None:
    # The linger and upsert scripts re-encode sessions in Lua: nothing may drift.
    engine = await engines()
    s = sess(
        "SE:x:1",
        identity="support@example.com:desk",  # ':' in both parts of the index member
        status=Status.DND,
        text="en réunion ☎ — back at 3",
        priority=-128,
        capabilities=("voice", "video"),
        connected_at=1_700_000_000.123456,
        last_activity=0.1,
    )
    change = await engine.presence.upsert(s, 1e9 + 0.5)
    assert change.after == (s,)
    assert await engine.presence.get(key(s)) == s
    now = 1_700_000_123.987654
    lingered = await engine.presence.linger(key(s), until=now + 5, now=now)
    assert lingered is not None and lingered.after == (dataclasses.replace(s, lingering=True, last_activity=now),)
    (gone,) = await engine.presence.sweep(now=now + 5)
    assert gone.last_seen == now and gone.after == ()


async def test_sessions_keep_their_order(engines: Callable[..., Awaitable[RedisEngine]]) -> None:
    # Redis hashes have no order; the engine keeps the memory engine's (insertion order,
    # a replaced session keeps its place), so both merge ties the same way.
    engine = await engines()
    names = [f"SE{c}" for c in "qbzam"]
    for name in names:
        await engine.presence.upsert(sess(name), 100.0)
    change = await engine.presence.upsert(sess("SEz", text="moved?"), 100.0)
    assert [s.session_id for s in change.after] == names


async def test_no_index_entries_outlive_the_sessions(engines: Callable[..., Awaitable[RedisEngine]], redis_url: str) -> None:
    engine = await engines()
    a, b = sess("SEa"), sess("SEb", identity="bob")
    await engine.presence.upsert(a, 10.0)
    await engine.presence.upsert(b, 20.0)
    await engine.presence.renew([SessionKey(new_sid("AC"), "ghost", "SEg")], 30.0)  # creates nothing
    client = redis.asyncio.from_url(redis_url)
    try:
        assert await client.zrange("ps:{i}:accounts", 0, -1, withscores=True) == [(ACC.encode(), 10.0)]
        await engine.presence.remove(key(a), now=5.0)
        # The entry is a lower bound: a removal leaves it early, a sweep that finds
        # nothing due raises it to the account's earliest lease.
        assert await client.zscore("ps:{i}:accounts", ACC) == 10.0
        assert await engine.presence.sweep(now=15.0) == []
        assert await client.zscore("ps:{i}:accounts", ACC) == 20.0
        await engine.presence.sweep(now=20.0)
        assert await client.zcard("ps:{i}:accounts") == 0
        assert await client.zcard(f"ps:{{{ACC}}}:expiry") == 0
    finally:
        await client.aclose()


async def test_scripts_are_reloaded_after_redis_forgets_them(
    engines: Callable[..., Awaitable[RedisEngine]], shared_redis_server: RedisServer
) -> None:
    engine = await engines()
    shared_redis_server.command("SCRIPT", "FLUSH")
    a = sess("SEa")
    await engine.presence.upsert(a, 10.0)  # a single call
    shared_redis_server.command("SCRIPT", "FLUSH")
    await engine.presence.renew([key(a)], 50.0)  # a pipeline
    assert await engine.presence.sweep(now=10.0) == []


async def test_key_prefixes_keep_deployments_apart(engines: Callable[..., Awaitable[RedisEngine]]) -> None:
    blue, green = await engines(key_prefix="blue"), await engines(key_prefix="green")
    await blue.presence.upsert(sess("SEa"), 10.0)
    (snap,) = await green.presence.snapshot(ACC, ["alice"])
    assert snap.sessions == () and snap.version == 0
    got: list[dict[str, Any]] = []
    await green.bus.subscribe("t", got.append)
    await blue.bus.publish("t", {"x": 1})
    await green.bus.publish("t", {"x": 2})
    assert got == [{"x": 2}]


# -- the bus between engines ----------------------------------------------------------------


async def test_the_bus_reaches_other_engines_in_order(engines: Callable[..., Awaitable[RedisEngine]]) -> None:
    sender, receiver = await engines(), await engines()
    got: list[dict[str, Any]] = []
    sub = await receiver.bus.subscribe("node:ND2", got.append)
    for i in range(100):
        await sender.bus.publish("node:ND2", {"n": i})

    async def all_there() -> bool:
        return len(got) == 100

    await wait_until(all_there)
    assert [m["n"] for m in got] == list(range(100))
    await sub.close()
    await sub.close()  # closing twice is harmless
    await sender.bus.publish("node:ND2", {"n": 100})
    await asyncio.sleep(0.05)
    assert len(got) == 100


# -- hash slots ---------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["redis", "redis-cluster"])
async def test_one_accounts_keys_share_a_hash_slot(where: str, request: pytest.FixtureRequest) -> None:
    """Every key the engine writes for an account - presence, records, the send
    queue, submissions, broadcast link counters, routing totals - is in the
    account's slot; the rest are the few global keys, named here. On the real
    cluster, every operation above also ran without a CROSSSLOT refusal."""
    cluster = where == "redis-cluster"
    if cluster:
        target = request.getfixturevalue("shared_redis_cluster")
    else:
        target = request.getfixturevalue("shared_redis_server")
    target.flushall()
    engine = RedisEngine(target.url)
    await engine.start()
    try:
        for identity in ("alice", "bob:desk"):
            s = sess("SE1", identity=identity)
            await engine.presence.upsert(s, 100.0)
            await engine.presence.upsert(sess("SE2", identity=identity), 100.0)
            await engine.presence.linger(key(s), until=50.0, now=40.0)
        await engine.presence.sweep(now=45.0)
        call = CallRecord(sid=new_sid("CA"), account_sid=ACC, from_="client:alice", to="client:bob")
        await engine.calls.create(call)
        bc = BroadcastRecord(new_sid("BC"), ACC, 1, {}, {}, 1.0)
        message = MessageRecord(
            sid=new_sid("SM"), account_sid=ACC, to="+15550100001", from_="+15550199999", body="hi",
            provider="outbox", provider_message_id="OB1", broadcast_sid=bc.sid, messaging_service_sid="MG" + "3" * 32,
        )  # fmt: skip
        await engine.messages.create_batch([message], [SendJob(ACC, message.sid, 1, 1.0, message.from_)], bc)
        await engine.queue.claim(2.0, 1, 10, 50.0, "w1")
        await engine.submissions.add(Submission("outbox", "OB1", ACC, message.sid, 2.0))
        await engine.links.add([TrackedLink("lnk1", "https://example.com", ACC, message.sid, 2.0, bc.sid, "a")])
        await engine.links.click("lnk1", 3.0, "agent")
        await engine.routing_stats.record(RouteOutcome(ACC, "outbox", "default", "delivered", 3.0, latency=0.5))
        await engine.bus.publish("presence:" + ACC, {"x": 1})
        client: Any = engine._redis
        names = sorted({k.decode() async for k in client.scan_iter(count=1000)})
    finally:
        await engine.close()
    if cluster:
        slots = {name: target.keyslot(name) for name in names}
    else:
        # CLUSTER KEYSLOT answers only on a cluster-enabled server: ask one.
        async with redis_server(extra_args=("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf")) as node:
            slots = {name: int(node.command("CLUSTER", "KEYSLOT", name)) for name in names}
    assert all(slots[name] == key_slot(name.encode()) for name in names)

    tagged = [name for name in names if name.startswith(f"ps:{{{ACC}}}:")]
    assert len({slots[name] for name in tagged}) == 1
    kinds = {re.sub(r":(alice|bob:desk|CA\w+|SM\w+|BC\w+|MG\w+)$", "", name.split("}:", 1)[1]) for name in tagged}
    assert kinds == {
        "sessions", "presence", "expiry",
        "call", "calls", "calls:seq", "msg", "msgs", "msgs:seq", "msgs:bc", "sender", "bc", "bcs", "bcs:seq",
        "q:job", "q:leases:1", "q:stream:1", "q:order", "q:depth", "subs", "bclinks", f"bclinks:{bc.sid}:clicked",
        "routes", "routes:6:outbox:default",
    }  # fmt: skip
    # Everything else is global, each key used alone or with keys of its own tag.
    assert set(names) - set(tagged) == {
        "ps:{i}:accounts",
        f"ps:sid:{call.sid}", f"ps:sid:{message.sid}", f"ps:sid:{bc.sid}",
        "ps:provider:6:outbox:OB1", "ps:sub:6:outbox:OB1",
        "ps:{q}:ready:1", "ps:q:consumer:w1",
        "ps:link:{lnk1}", "ps:link:{lnk1}:clicks",
        "ps:{routes}", "ps:{routes}:6:outbox:default", "ps:{routes}:mins", f"ps:{{routes}}:min:0.0:6:outbox:default",
    }  # fmt: skip


# -- outages --------------------------------------------------------------------------------


async def test_an_outage_raises_engine_unavailable_and_the_engine_recovers() -> None:
    async with redis_server() as server:
        engine = RedisEngine(server.url, socket_timeout=1.0)
        await engine.start()
        try:
            assert await engine.ready()
            a = sess("SEa")
            await engine.presence.upsert(a, 100.0)
            got: list[dict[str, Any]] = []
            kept = await engine.bus.subscribe("presence:AC1", got.append)
            dropped = await engine.bus.subscribe("presence:AC2", got.append)
            call = CallRecord(sid=new_sid("CA"), account_sid=ACC, from_="a", to="b")
            message = MessageRecord(sid=new_sid("SM"), account_sid=ACC, to="+1", from_="+2", body="x")

            await asyncio.to_thread(server.stop)

            attempts: list[Callable[[], Awaitable[Any]]] = [
                lambda: engine.presence.upsert(a, 200.0),
                lambda: engine.presence.remove(key(a), 1.0),
                lambda: engine.presence.linger(key(a), 5.0, 1.0),
                lambda: engine.presence.renew([key(a)], 300.0),
                lambda: engine.presence.sweep(1e12),
                lambda: engine.presence.get(key(a)),
                lambda: engine.presence.snapshot(ACC, ["alice"]),
                lambda: engine.bus.publish("presence:AC1", {"n": 1}),
                lambda: engine.bus.subscribe("presence:AC3", got.append),
                lambda: engine.calls.create(call),
                lambda: engine.calls.get(ACC, call.sid),
                lambda: engine.calls.update(ACC, call.sid, status="completed"),
                lambda: engine.calls.list(ACC),
                lambda: engine.calls.list(ACC, status="completed"),
                lambda: engine.messages.create(message),
                lambda: engine.messages.get(ACC, message.sid),
                lambda: engine.messages.update(ACC, message.sid, status="sent"),
                lambda: engine.messages.find_by_provider_id("outbox", "x"),
                lambda: engine.messages.list(ACC),
            ]
            for attempt in attempts:
                with pytest.raises(EngineUnavailable):
                    await attempt()
            assert not await engine.ready()
            await dropped.close()  # closing never fails, even now

            await asyncio.to_thread(server.start)  # same port, empty (no persistence)
            await wait_until(engine.ready)
            await engine.presence.upsert(a, 100.0)  # scripts loaded again after NOSCRIPT
            assert (await engine.presence.get(key(a))) == a
            await engine.calls.create(call)
            assert await engine.calls.get(ACC, call.sid) == call
            # The subscription made before the outage was renewed with the connection;
            # the one closed during it stays closed.
            await engine.bus.publish("presence:AC1", {"n": 2})
            await engine.bus.publish("presence:AC2", {"n": 3})
            assert got == [{"n": 2}]
            await kept.close()
        finally:
            await engine.close()


async def test_an_engine_started_while_redis_is_down_becomes_ready_when_it_comes_up() -> None:
    server = RedisServer()  # a port, but no server yet
    engine = RedisEngine(server.url, socket_timeout=1.0)
    try:
        await engine.start()  # not fatal: the engine reports not ready
        assert not await engine.ready()
        with pytest.raises(EngineUnavailable):
            await engine.bus.subscribe("t", lambda m: None)
        await asyncio.to_thread(server.start)
        await wait_until(engine.ready)
        got: list[dict[str, Any]] = []
        await engine.bus.subscribe("t", got.append)
        await engine.bus.publish("t", {"ok": True})
        assert got == [{"ok": True}]
        assert len(await engine.presence.sweep(now=0.0)) == 0
    finally:
        await engine.close()
        await asyncio.to_thread(server.cleanup)


async def test_a_redis_restart_between_calls_goes_unnoticed() -> None:
    # Pooled connections that Redis closed when it went down are replaced on first
    # use: the next call after a restart just works (on an empty Redis, here).
    async with redis_server() as server:
        engine = RedisEngine(server.url)
        await engine.start()
        try:
            a = sess("SEa")
            changes = await asyncio.gather(*(engine.presence.upsert(dataclasses.replace(a, text=str(i)), 100.0) for i in range(4)))
            await asyncio.to_thread(server.restart)
            assert await engine.presence.get(key(a)) is None
            # The versions go on upward, not from 1: subscribers that saw the old ones
            # would otherwise drop every update until the count caught up.
            assert (await engine.presence.upsert(a, 100.0)).version > max(c.version for c in changes)
            await wait_until(engine.ready)
        finally:
            await engine.close()


async def test_a_redis_that_stops_answering_is_unavailable_until_it_answers_again() -> None:
    # A hung server (or a partition) keeps connections open and answers nothing:
    # calls time out into EngineUnavailable, and the bus notices by its own probe.
    async with redis_server() as server:
        engine = RedisEngine(server.url, socket_timeout=0.3, health_check_interval=1)
        await engine.start()
        try:
            got: list[dict[str, Any]] = []
            await engine.bus.subscribe("t", got.append)
            await asyncio.to_thread(server.pause)
            try:
                with pytest.raises(EngineUnavailable):
                    await engine.presence.get(SessionKey(ACC, "alice", "SEa"))
                assert not await engine.ready()

                async def bus_down() -> bool:
                    return not engine.bus.connected

                await wait_until(bus_down, timeout=3.0)
            finally:
                await asyncio.to_thread(server.resume)
            await wait_until(engine.ready)
            await engine.bus.publish("t", {"back": True})
            assert got == [{"back": True}]
        finally:
            await engine.close()


async def test_two_processes_share_a_providers_rate_limit(engines: Callable[..., Awaitable[RedisEngine]]) -> None:
    # Two engines on one Redis stand for two messaging processes: together they
    # get no more than one limiter's worth, however they interleave.
    from presence_server.engines.outbound import RateLimit

    a, b = await engines(), await engines()
    limit = RateLimit(rate=20.0, burst=5.0, shares=(0.5, 0.3, 0.2))
    granted = 0
    for step in range(100):  # 1 s in steps of 10 ms
        now = 1000.0 + step * 0.01
        results = await asyncio.gather(*(engine.rate_limits.take("carrier", limit, step % 3, now) for engine in (a, b, a, b)))
        granted += results.count(0.0)
    assert limit.rate - 1 <= granted <= limit.rate * 1.0 + limit.burst


async def test_publish_counts_the_engines_that_listen(engines: Callable[..., Awaitable[RedisEngine]]) -> None:
    """Each engine subscribes through its one pub/sub connection, so PUBLISH's
    receiver count is the number of engines (nodes) listening."""
    a, b, c = await engines(), await engines(), await engines()
    await a.bus.subscribe("presence:AC1", lambda m: None)
    await b.bus.subscribe("presence:AC1", lambda m: None)
    await b.bus.subscribe("presence:AC1", lambda m: None)
    assert await c.bus.publish("presence:AC1", {"n": 1}) == 2
    assert await a.bus.publish("node:NDnobody", {"n": 1}) == 0
