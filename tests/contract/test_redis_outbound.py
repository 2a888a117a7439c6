"""What only the redis engine promises about the messaging pipeline's stores,
beyond the shared contract: many workers on one Redis (claims never overlap,
ended leases come back), create_batch is all or nothing, the new record fields
round-trip exactly, scripts come back after SCRIPT FLUSH, and an outage is
EngineUnavailable everywhere."""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator, Awaitable, Callable

import pytest
import redis.asyncio

from presence_server.engines.outbound import (
    BULK,
    NORMAL,
    URGENT,
    BroadcastRecord,
    LinkStats,
    RouteOutcome,
    SendJob,
    Submission,
    TrackedLink,
)
from presence_server.engines.ports import EngineUnavailable, MessageRecord
from presence_server.engines.redis import RedisEngine
from protocol.addresses import new_sid
from tests.helpers.redis_server import redis_server

ACC = "AC" + "1" * 32
OTHER = "AC" + "2" * 32
MG = "MG" + "3" * 32
T0 = 1_700_000_000.0

Make = Callable[..., Awaitable[RedisEngine]]


@pytest.fixture
async def engines(redis_url: str) -> AsyncIterator[Make]:
    """Engines on the shared (flushed) server: many processes on one Redis."""
    made: list[RedisEngine] = []

    async def make(**options: Any) -> RedisEngine:
        engine = RedisEngine(redis_url, **options)
        await engine.start()
        made.append(engine)
        return engine

    yield make
    for engine in made:
        await engine.close()


def msg(account: str = ACC, **fields: Any) -> MessageRecord:
    data: dict[str, Any] = dict(
        sid=new_sid("SM"), account_sid=account, to="+15550100001", from_="+15550199999", body="hi",
        date_created=T0, date_updated=T0,
    )
    data.update(fields)
    return MessageRecord(**data)


def job(record: MessageRecord, due: float = T0, priority: int = NORMAL, **kw: Any) -> SendJob:
    return SendJob(record.account_sid, record.sid, priority, due, record.from_, **kw)


async def enqueue(engine: RedisEngine, n: int, due: float = T0, priority: int = NORMAL, account: str = ACC) -> list[MessageRecord]:
    records = [msg(account) for _ in range(n)]
    await engine.messages.create_batch(records, [job(r, due, priority) for r in records])
    return records


async def all_keys(redis_url: str) -> dict[str, Any]:
    client = redis.asyncio.from_url(redis_url)
    try:
        out = {}
        for name in [k async for k in client.scan_iter(count=1000)]:
            out[name.decode()] = await client.dump(name)
        return out
    finally:
        await client.aclose()


# -- records and create_batch -------------------------------------------------------------


async def test_every_new_record_field_round_trips_exactly(engines: Make) -> None:
    engine = await engines()
    rec = msg(
        status_callback="https://example.com/cb", priority=URGENT, send_at=T0 + 0.125, valid_until=T0 + 3600.5,
        broadcast_sid=new_sid("BC"), channels=("app", "sms"), app_payload='{"title": "x"}', content_version="app",
        channel_reason="online", route="us", attempts=2, tried_providers=("a", "b"), track_links=True,
        smart_encoded=True, send_as_mms=False, max_segments=3, max_cost=0.1 + 0.2, encoding="UCS-2",
        messaging_service_sid=MG,
    )
    await engine.messages.create(rec)
    got = await engine.messages.get(ACC, rec.sid)
    assert got == rec
    assert got is not None and type(got.channels) is tuple and got.track_links is True and got.send_as_mms is False
    assert got.max_cost == 0.1 + 0.2
    updated = await engine.messages.update(ACC, rec.sid, tried_providers=("a", "b", "c"), track_links=False)
    assert updated is not None and updated.tried_providers == ("a", "b", "c") and updated.track_links is False
    assert await engine.messages.get(ACC, rec.sid) == updated


async def test_create_batch_stores_records_jobs_and_broadcast_together(engines: Make) -> None:
    engine = await engines()
    bc = BroadcastRecord(new_sid("BC"), ACC, 2, {"channels": ["app", "sms"], "n": 1.5}, {"text": "hi"}, T0, MG, None)
    records = [msg(broadcast_sid=bc.sid, to=f"+1555010000{i}", date_created=T0 + i) for i in range(2)]
    loose = msg()
    await engine.messages.create(loose)
    await engine.messages.create_batch(records, [job(r) for r in records], bc)
    assert await engine.messages.get_broadcast(ACC, bc.sid) == bc
    assert await engine.messages.get_broadcast(OTHER, bc.sid) is None
    assert [r.sid for r in await engine.messages.list(ACC, broadcast_sid=bc.sid)] == [records[1].sid, records[0].sid]
    assert [r.sid for r in await engine.messages.list(ACC, broadcast_sid=bc.sid, to="+15550100000")] == [records[0].sid]
    assert await engine.messages.list(OTHER, broadcast_sid=bc.sid) == []
    assert await engine.queue.depth() == 2
    assert await engine.queue.depth(ACC, loose.from_) == 2
    bc2 = BroadcastRecord(new_sid("BC"), ACC, 0, {}, {}, T0 + 10)
    await engine.messages.create_batch([], [], bc2)
    assert [b.sid for b in await engine.messages.list_broadcasts(ACC)] == [bc2.sid, bc.sid]
    assert [b.sid for b in await engine.messages.list_broadcasts(ACC, limit=1, offset=1)] == [bc.sid]


@pytest.mark.parametrize(
    "clash", ["stored", "other-account", "twice-in-batch", "job-queued", "broadcast-stored", "broadcast-other-account"]
)
async def test_create_batch_with_a_stored_sid_stores_nothing(engines: Make, redis_url: str, clash: str) -> None:
    engine = await engines()
    stored = msg(account=OTHER if clash == "other-account" else ACC)
    bc = BroadcastRecord(new_sid("BC"), ACC, 3, {}, {}, T0)
    if clash == "broadcast-other-account":
        await engine.messages.create_batch([], [], BroadcastRecord(bc.sid, OTHER, 0, {}, {}, T0))
    await engine.messages.create_batch([stored], [job(stored)], bc if clash == "broadcast-stored" else None)
    before = await all_keys(redis_url)

    fresh = [msg(broadcast_sid=bc.sid, messaging_service_sid=MG, provider="p", provider_message_id=f"X{i}") for i in range(3)]
    batch = list(fresh)
    jobs = [job(r) for r in fresh]
    if clash in ("stored", "other-account"):
        batch.append(msg(sid=stored.sid))
    elif clash == "twice-in-batch":
        batch.append(msg(sid=fresh[0].sid))
    elif clash == "job-queued":
        jobs.append(job(stored))
    with pytest.raises(ValueError):
        await engine.messages.create_batch(batch, jobs, bc)
    assert await all_keys(redis_url) == before
    for r in fresh:
        assert await engine.messages.get(ACC, r.sid) is None


async def test_create_refuses_a_duplicate_and_accepts_a_half_done_claim(engines: Make, redis_url: str) -> None:
    engine = await engines()
    rec = msg()
    await engine.messages.create(rec)
    with pytest.raises(ValueError):
        await engine.messages.create(rec)
    with pytest.raises(ValueError):
        await engine.messages.create(msg(OTHER, sid=rec.sid))
    # A claim left by an older create that failed half-way is this account's: retrying works.
    half = msg()
    client = redis.asyncio.from_url(redis_url)
    try:
        await client.set(f"ps:sid:{half.sid}", ACC)
    finally:
        await client.aclose()
    await engine.messages.create(half)
    assert await engine.messages.get(ACC, half.sid) == half


async def test_last_sender_is_the_newest_records_and_follows_updates(engines: Make) -> None:
    engine = await engines()
    assert await engine.messages.last_sender(ACC, MG, "+15550100001") is None
    first = msg(messaging_service_sid=MG, from_="+15550000001", date_created=T0 + 10)
    await engine.messages.create(first)
    # Created later but older: not the newest.
    await engine.messages.create(msg(messaging_service_sid=MG, from_="+15550000002", date_created=T0))
    await engine.messages.create(msg(from_="+15550000003", date_created=T0 + 20))  # no service
    await engine.messages.create(msg(messaging_service_sid=MG, to="+15550100009", from_="+15550000004", date_created=T0 + 30))
    assert await engine.messages.last_sender(ACC, MG, "+15550100001") == "+15550000001"
    assert await engine.messages.last_sender(OTHER, MG, "+15550100001") is None
    same_time = msg(messaging_service_sid=MG, from_="+15550000005", date_created=T0 + 10)
    await engine.messages.create(same_time)  # same date_created, stored later: newest
    assert await engine.messages.last_sender(ACC, MG, "+15550100001") == "+15550000005"
    await engine.messages.update(ACC, first.sid, from_="+15550000006")  # not the newest: no change
    assert await engine.messages.last_sender(ACC, MG, "+15550100001") == "+15550000005"
    await engine.messages.update(ACC, same_time.sid, from_="+15550000007")
    assert await engine.messages.last_sender(ACC, MG, "+15550100001") == "+15550000007"


# -- the send queue ---------------------------------------------------------------------


async def test_claim_order_leases_and_release(engines: Make) -> None:
    engine = await engines()
    q = engine.queue
    late = await enqueue(engine, 1, due=T0 + 5)
    early = await enqueue(engine, 3, due=T0)
    urgent = await enqueue(engine, 1, due=T0, priority=URGENT)
    assert await q.next_due() == T0
    assert await q.claim(T0 - 1, NORMAL, 10, T0 + 30, "w1") == []
    got = await q.claim(T0, NORMAL, 2, T0 + 30, "w1")
    assert [j.message_sid for j in got] == [r.sid for r in early[:2]]  # enqueue order
    assert got[0] == SendJob(ACC, early[0].sid, NORMAL, T0, early[0].from_, 0)
    got = await q.claim(T0 + 10, NORMAL, 10, T0 + 30, "w2")
    assert [j.message_sid for j in got] == [early[2].sid, late[0].sid]
    assert await q.claim(T0 + 10, NORMAL, 10, T0 + 30, "w3") == []
    assert [j.message_sid for j in await q.claim(T0, URGENT, 10, T0 + 30, "w1")] == [urgent[0].sid]
    assert await q.next_due() == T0 + 30
    assert await q.depth() == 5 and await q.depth(ACC) == 5 and await q.depth(OTHER) == 0

    assert await q.release("w1") == 3
    assert await q.release("w1") == 0
    again = await q.claim(T0 + 10, NORMAL, 10, T0 + 60, "w3")
    assert [j.message_sid for j in again] == [r.sid for r in early[:2]]
    assert await q.next_due() == T0  # the urgent job is waiting again


async def test_an_ended_lease_is_claimable_in_due_order(engines: Make) -> None:
    engine = await engines()
    q = engine.queue
    first = await enqueue(engine, 1, due=T0)
    second = await enqueue(engine, 1, due=T0 + 1)
    assert [j.message_sid for j in await q.claim(T0, NORMAL, 1, T0 + 10, "dead")] == [first[0].sid]
    assert await q.claim(T0 + 9, NORMAL, 1, T0 + 40, "w2") == [job(second[0], T0 + 1)]
    assert await q.cancel(ACC, first[0].sid, T0 + 9) is False  # still leased
    # The dead worker's lease ended: its job comes back first (due earliest).
    assert await q.claim(T0 + 10, NORMAL, 5, T0 + 50, "w2") == []  # it ends at T0 + 10: not *before*
    assert await q.claim(T0 + 10.5, NORMAL, 5, T0 + 50, "w2") == [job(first[0], T0)]
    assert await q.release("dead") == 0  # it no longer holds it
    assert await q.release("w2") == 2


async def test_reschedule_cancel_complete_and_depth(engines: Make) -> None:
    engine = await engines()
    q = engine.queue
    a, b = await enqueue(engine, 2)
    other = await enqueue(engine, 1, account=OTHER)
    await q.claim(T0, NORMAL, 1, T0 + 30, "w1")
    assert await q.reschedule(ACC, a.sid, T0 + 100, 1, priority=BULK) is True
    assert await q.reschedule(ACC, new_sid("SM"), T0, 1) is False
    assert await q.next_due() == T0
    assert [j.message_sid for j in await q.claim(T0 + 100, NORMAL, 5, T0 + 200, "w1")] == [b.sid, other[0].sid]
    assert await q.claim(T0 + 100, BULK, 5, T0 + 200, "w1") == [SendJob(ACC, a.sid, BULK, T0 + 100, a.from_, 1)]
    assert await q.cancel(ACC, a.sid, T0 + 150) is False
    assert await q.cancel(ACC, a.sid, T0 + 201) is True  # the lease ended
    assert await q.cancel(ACC, a.sid, T0 + 201) is False
    assert await q.depth(ACC) == 1 and await q.depth(ACC, b.from_) == 1 and await q.depth() == 2
    await q.complete(ACC, b.sid)
    await q.complete(ACC, b.sid)  # no-op
    await q.complete(OTHER, other[0].sid)
    assert await q.depth() == 0 and await q.depth(ACC, b.from_) == 0
    assert await q.next_due() is None
    assert await q.release("w1") == 0


async def test_concurrent_claims_from_many_processes_never_share_a_job(engines: Make) -> None:
    nodes = [await engines() for _ in range(4)]
    records = await enqueue(nodes[0], 300)

    async def worker(engine: RedisEngine, name: str, lease_until: float) -> list[str]:
        got: list[str] = []
        while True:
            jobs = await engine.queue.claim(T0, NORMAL, 7, lease_until, name)
            if not jobs:
                return got
            got.extend(j.message_sid for j in jobs)

    results = await asyncio.gather(*(worker(n, f"w{i}-{k}", T0 + 30) for i, n in enumerate(nodes) for k in range(3)))
    claimed = [sid for r in results for sid in r]
    assert len(claimed) == len(set(claimed)) == 300
    assert set(claimed) == {r.sid for r in records}
    # Claims at T0 do not see leases ending at T0 + 30: nothing is reclaimed before then.
    results = await asyncio.gather(*(worker(n, f"v{i}-{k}", T0 + 90) for i, n in enumerate(nodes) for k in range(3)))
    assert [sid for r in results for sid in r] == []
    # Every lease ended at T0 + 30: concurrent claimers after that get each job once.

    async def late_worker(engine: RedisEngine, name: str) -> list[str]:
        got: list[str] = []
        while True:
            jobs = await engine.queue.claim(T0 + 31, NORMAL, 5, T0 + 90, name)
            if not jobs:
                return got
            got.extend(j.message_sid for j in jobs)

    results = await asyncio.gather(*(late_worker(n, f"x{i}-{k}") for i, n in enumerate(nodes) for k in range(3)))
    reclaimed = [sid for r in results for sid in r]
    assert len(reclaimed) == len(set(reclaimed)) == 300


# -- submissions, links, routing statistics -------------------------------------------------


async def test_concurrent_reports_are_applied_one_after_the_other(engines: Make) -> None:
    one, two = await engines(), await engines()
    sub = Submission("smpp", "ID1", ACC, new_sid("SM"), T0)
    assert await one.submissions.add(sub) is True
    assert await two.submissions.add(sub) is False
    results = await asyncio.gather(
        *(e.submissions.report("smpp", "ID1", "delivered", None, T0 + 5) for e in (one, two) for _ in range(10))
    )
    changed = [r for r in results if r is not None and r[0] != r[1]]
    assert len(changed) == 1 and changed[0][1].status == "delivered"
    assert await one.submissions.report("smpp", "ID1", "sent", None, T0 + 6) == (changed[0][1], changed[0][1])
    assert await one.submissions.of_message(ACC, sub.message_sid) == [changed[0][1]]


async def test_links_add_is_all_or_nothing_and_clicks_are_capped(engines: Make, redis_url: str) -> None:
    engine = await engines()
    bc, sm = new_sid("BC"), new_sid("SM")
    await engine.links.add([TrackedLink("abc", "https://x", ACC, sm, T0, bc, "sms")])
    before = await all_keys(redis_url)
    with pytest.raises(ValueError):
        await engine.links.add([TrackedLink("new", "https://y", ACC, sm, T0, bc, None), TrackedLink("abc", "https://z", ACC, sm, T0)])
    with pytest.raises(ValueError):
        await engine.links.add([TrackedLink("two", "https://y", ACC, sm, T0), TrackedLink("two", "https://z", ACC, sm, T0)])
    assert await all_keys(redis_url) == before
    for n in range(1010):
        await engine.links.click("abc", T0 + n, "x" * 600)
    latest = await engine.links.clicks(ACC, "abc", limit=2000)
    assert len(latest) == 1000 and latest[0] == (T0 + 1009, "x" * 512)
    assert await engine.links.clicks(OTHER, "abc") == []
    assert await engine.links.broadcast_stats(ACC, bc) == [LinkStats("sms", 1010, 1)]


async def test_routing_totals_sum_latency_like_python(engines: Make) -> None:
    engine = await engines()
    for latency in (0.1, 0.2, 0.3):
        await engine.routing_stats.record(RouteOutcome(ACC, "p", "r", "delivered", T0, latency=latency))
    await engine.routing_stats.record(RouteOutcome(OTHER, "p", "r", "rejected", T0 + 61, error_code=21610))
    [mine] = await engine.routing_stats.totals(ACC)
    assert mine.latency_sum == 0.1 + 0.2 + 0.3 and mine.delivered == 3 and mine.latency_count == 3
    [everyone] = await engine.routing_stats.totals()
    assert (everyone.delivered, everyone.rejected, everyone.errors) == (3, 1, {21610: 1})
    window = await engine.routing_stats.window(T0 - 60)
    assert [(s.minute, s.delivered, s.rejected) for s in window] == [(T0 - 20, 3, 0), (T0 + 40, 0, 1)]


# -- operations -------------------------------------------------------------------------------


async def test_the_new_scripts_are_reloaded_after_redis_forgets_them(engines: Make, redis_url: str) -> None:
    engine = await engines()
    records = await enqueue(engine, 1)
    client = redis.asyncio.from_url(redis_url)
    try:
        await client.script_flush()
    finally:
        await client.aclose()
    assert [j.message_sid for j in await engine.queue.claim(T0, NORMAL, 1, T0 + 1, "w")] == [records[0].sid]


async def test_every_new_method_raises_engine_unavailable_when_redis_is_down() -> None:
    async with redis_server() as server:
        engine = RedisEngine(server.url, socket_timeout=1.0)
        await engine.start()
        try:
            rec = msg()
            bc = BroadcastRecord(new_sid("BC"), ACC, 1, {}, {}, T0)
            await asyncio.to_thread(server.stop)
            attempts: list[Callable[[], Awaitable[Any]]] = [
                lambda: engine.messages.create_batch([rec], [job(rec)], bc),
                lambda: engine.messages.last_sender(ACC, MG, "+1"),
                lambda: engine.messages.get_broadcast(ACC, bc.sid),
                lambda: engine.messages.list_broadcasts(ACC),
                lambda: engine.messages.list(ACC, broadcast_sid=bc.sid),
                lambda: engine.queue.claim(T0, NORMAL, 1, T0 + 1, "w"),
                lambda: engine.queue.complete(ACC, rec.sid),
                lambda: engine.queue.reschedule(ACC, rec.sid, T0, 1),
                lambda: engine.queue.cancel(ACC, rec.sid, T0),
                lambda: engine.queue.release("w"),
                lambda: engine.queue.depth(),
                lambda: engine.queue.next_due(),
                lambda: engine.submissions.add(Submission("p", "1", ACC, rec.sid, T0)),
                lambda: engine.submissions.find("p", "1"),
                lambda: engine.submissions.report("p", "1", "delivered", None, T0),
                lambda: engine.submissions.of_message(ACC, rec.sid),
                lambda: engine.links.add([TrackedLink("c", "u", ACC, rec.sid, T0)]),
                lambda: engine.links.get("c"),
                lambda: engine.links.click("c", T0, "ua"),
                lambda: engine.links.clicks(ACC, "c"),
                lambda: engine.links.broadcast_stats(ACC, bc.sid),
                lambda: engine.routing_stats.record(RouteOutcome(ACC, "p", "r", "submitted", T0)),
                lambda: engine.routing_stats.totals(),
                lambda: engine.routing_stats.window(T0),
            ]
            for attempt in attempts:
                with pytest.raises(EngineUnavailable):
                    await attempt()
        finally:
            await engine.close()
