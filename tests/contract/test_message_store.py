"""The MessageStore contract: every engine keeps message records the same way."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from presence_server.engines.memory import MemoryEngine
from presence_server.engines.outbound import BroadcastRecord, SendJob
from presence_server.engines.ports import Engine, EngineUnavailable, MessageRecord
from protocol.addresses import new_sid

ACCOUNT = new_sid("AC")
OTHER = new_sid("AC")


def record(account: str = ACCOUNT, **fields: Any) -> MessageRecord:
    data: dict[str, Any] = {
        "sid": new_sid("SM"),
        "account_sid": account,
        "to": "+15550100001",
        "from_": "+15550199999",
        "body": "Missed call from client:bob",
        "date_created": 1_700_000_000.0,
        "date_updated": 1_700_000_000.0,
    }
    data.update(fields)
    return MessageRecord(**data)


async def test_create_then_get_returns_every_field(engine: Engine) -> None:
    rec = record(
        sid=new_sid("MM"),
        media_urls=("https://example.com/a.png", "https://example.com/b.jpg"),
        direction="outbound-call",
        status="sent",
        channel="mms",
        provider="outbox",
        provider_message_id="OB123",
        error_code=30003,
        error_message="unreachable",
        fallback_reason="no-answer",
        related_call_sid=new_sid("CA"),
        messaging_service_sid="MG" + "0" * 32,
        num_segments=3,
        date_sent=1_700_000_001.25,
    )
    await engine.messages.create(rec)  # type: ignore[attr-defined]
    assert await engine.messages.get(ACCOUNT, rec.sid) == rec  # type: ignore[attr-defined]


async def test_a_duplicate_sid_is_refused(engine: Engine) -> None:
    rec = record()
    await engine.messages.create(rec)  # type: ignore[attr-defined]
    with pytest.raises(ValueError):
        await engine.messages.create(dataclasses.replace(rec, body="other"))  # type: ignore[attr-defined]
    with pytest.raises(ValueError):  # even under another account: sids are global
        await engine.messages.create(dataclasses.replace(rec, account_sid=OTHER))  # type: ignore[attr-defined]
    assert (await engine.messages.get(ACCOUNT, rec.sid)).body == rec.body  # type: ignore[attr-defined]


async def test_another_accounts_sid_is_not_found(engine: Engine) -> None:
    rec = record()
    await engine.messages.create(rec)  # type: ignore[attr-defined]
    assert await engine.messages.get(OTHER, rec.sid) is None  # type: ignore[attr-defined]
    assert await engine.messages.get(ACCOUNT, new_sid("SM")) is None  # type: ignore[attr-defined]
    assert await engine.messages.update(OTHER, rec.sid, status="failed") is None  # type: ignore[attr-defined]
    assert (await engine.messages.get(ACCOUNT, rec.sid)).status == "accepted"  # type: ignore[attr-defined]


async def test_update_changes_fields_and_date_updated(engine: Engine) -> None:
    rec = record()
    await engine.messages.create(rec)  # type: ignore[attr-defined]
    updated = await engine.messages.update(  # type: ignore[attr-defined]
        ACCOUNT, rec.sid, status="sent", provider="outbox", provider_message_id="OB1", date_sent=1_700_000_005.0
    )
    assert updated is not None
    assert (updated.status, updated.provider, updated.provider_message_id, updated.date_sent) == ("sent", "outbox", "OB1", 1_700_000_005.0)
    assert updated.date_updated > rec.date_updated  # "now", from the store's clock
    assert await engine.messages.get(ACCOUNT, rec.sid) == updated  # type: ignore[attr-defined]
    explicit = await engine.messages.update(ACCOUNT, rec.sid, status="delivered", date_updated=1_700_000_009.0)  # type: ignore[attr-defined]
    assert explicit is not None and explicit.date_updated == 1_700_000_009.0
    assert explicit.date_created == rec.date_created and explicit.body == rec.body


@pytest.mark.parametrize(
    "changes",
    [{"no_such_field": 1}, {"status": "teleported"}, {"channel": "pigeon"}, {"body": "\ud800"}],
)
async def test_update_refuses_bad_changes(engine: Engine, changes: dict[str, Any]) -> None:
    rec = record()
    await engine.messages.create(rec)  # type: ignore[attr-defined]
    with pytest.raises(ValueError):
        await engine.messages.update(ACCOUNT, rec.sid, **changes)  # type: ignore[attr-defined]
    assert await engine.messages.get(ACCOUNT, rec.sid) == rec  # type: ignore[attr-defined]


async def test_find_by_provider_id(engine: Engine) -> None:
    rec = record(provider="carrier-a", provider_message_id="abc-1")
    await engine.messages.create(rec)  # type: ignore[attr-defined]
    await engine.messages.create(record(OTHER, provider="carrier-b", provider_message_id="abc-1"))  # type: ignore[attr-defined]
    found = await engine.messages.find_by_provider_id("carrier-a", "abc-1")  # type: ignore[attr-defined]
    assert found == rec
    assert await engine.messages.find_by_provider_id("carrier-c", "abc-1") is None  # type: ignore[attr-defined]
    assert await engine.messages.find_by_provider_id("carrier-a", "abc-2") is None  # type: ignore[attr-defined]
    # A provider id set later (after the carrier accepted the message) is found too.
    late = record()
    await engine.messages.create(late)  # type: ignore[attr-defined]
    await engine.messages.update(ACCOUNT, late.sid, provider="carrier-a", provider_message_id="abc-9")  # type: ignore[attr-defined]
    assert (await engine.messages.find_by_provider_id("carrier-a", "abc-9")).sid == late.sid  # type: ignore[attr-defined]


async def test_list_is_newest_first_and_scoped_to_the_account(engine: Engine) -> None:
    account = new_sid("AC")
    recs = [record(account, date_created=1_700_000_000.0 + i) for i in range(5)]
    same_time = [record(account, date_created=1_700_000_010.0) for _ in range(3)]
    for r in recs + same_time:
        await engine.messages.create(r)  # type: ignore[attr-defined]
    await engine.messages.create(record(new_sid("AC")))  # type: ignore[attr-defined]
    listed = await engine.messages.list(account)  # type: ignore[attr-defined]
    # Records created in the same instant come newest-stored first.
    assert [r.sid for r in listed] == [r.sid for r in reversed(same_time)] + [r.sid for r in reversed(recs)]


async def test_list_filters_and_pages(engine: Engine) -> None:
    account = new_sid("AC")
    day = 86_400.0
    base = 1_700_006_400.0  # a UTC midnight
    rows = [
        record(account, to="+15550000001", from_="+15559990000", date_created=base + 1, date_sent=base + 1),
        record(account, to="+15550000002", from_="+15559990000", date_created=base + 2, date_sent=base + day),
        record(account, to="client:alice", from_="+15559990001", date_created=base + 3, date_sent=base + 2 * day - 0.5),
        record(account, to="+15550000001", from_="+15559990001", date_created=base + 4, date_sent=None),
    ]
    for r in rows:
        await engine.messages.create(r)  # type: ignore[attr-defined]
    store = engine.messages  # type: ignore[attr-defined]

    async def sids(**filters: Any) -> list[str]:
        return [r.sid for r in await store.list(account, **filters)]

    s = [r.sid for r in rows]
    assert await sids(to="+15550000001") == [s[3], s[0]]
    assert await sids(to="client:alice") == [s[2]]
    assert await sids(from_="+15559990000") == [s[1], s[0]]
    assert await sids(to="+15550000001", from_="+15559990001") == [s[3]]
    assert await sids(to="+1555") == []  # exact match, not a prefix
    # Dates: sent_after inclusive, sent_before exclusive; never-sent records never match.
    assert await sids(sent_after=base + day) == [s[2], s[1]]
    assert await sids(sent_before=base + day) == [s[0]]
    assert await sids(sent_after=base + day, sent_before=base + 2 * day) == [s[2], s[1]]
    assert await sids(sent_after=base + 2 * day) == []
    # Paging.
    assert await sids(limit=2) == [s[3], s[2]]
    assert await sids(limit=2, offset=2) == [s[1], s[0]]
    assert await sids(limit=2, offset=4) == []
    assert await sids(limit=0) == []
    with pytest.raises(ValueError):
        await store.list(account, limit=-1)


async def test_concurrent_creates_and_updates_all_land(engine: Engine) -> None:
    account = new_sid("AC")
    recs = [record(account, date_created=1_700_000_000.0 + i) for i in range(50)]
    await asyncio.gather(*(engine.messages.create(r) for r in recs))  # type: ignore[attr-defined]
    await asyncio.gather(*(engine.messages.update(account, r.sid, status="sent") for r in recs))  # type: ignore[attr-defined]
    listed = await engine.messages.list(account, limit=1000)  # type: ignore[attr-defined]
    assert len(listed) == 50 and {r.status for r in listed} == {"sent"}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=st.text(max_size=400),
    media=st.lists(st.text(min_size=1, max_size=60), max_size=3),
    to=st.text(min_size=1, max_size=40),
)
async def test_any_text_round_trips(engine: Engine, body: str, media: list[str], to: str) -> None:
    try:
        rec = record(body=body, media_urls=tuple(media), to=to)
    except ValueError:
        # Only text that UTF-8 cannot hold (lone surrogates) is refused, at construction.
        with pytest.raises(UnicodeEncodeError):
            (body + to + "".join(media)).encode("utf-8")
        return
    await engine.messages.create(rec)  # type: ignore[attr-defined]
    assert await engine.messages.get(ACCOUNT, rec.sid) == rec  # type: ignore[attr-defined]


def test_records_check_their_values() -> None:
    with pytest.raises(ValueError):
        record(status="teleported")
    with pytest.raises(ValueError):
        record(direction="sideways")
    with pytest.raises(ValueError):
        record(fallback_reason="bored")
    with pytest.raises(ValueError):
        record(body="\ud800")
    assert record(media_urls=["https://x"]).media_urls == ("https://x",)  # type: ignore[arg-type]


# -- The messaging pipeline: record fields, batches, broadcasts, sticky senders -----------

T = 1_700_000_000.0


def full_record(account: str = ACCOUNT, **fields: Any) -> MessageRecord:
    data: dict[str, Any] = {
        "status_callback": "https://example.com/status?x=1&y=ü",
        "priority": 0,
        "send_at": T + 60,
        "valid_until": T + 3600.5,
        "broadcast_sid": new_sid("BC"),
        "channels": ("app", "sms"),
        "app_payload": '{"title": "Your code", "data": {"code": "123456"}}',
        "content_version": "app",
        "channel_reason": "app-online",
        "route": "us-otp",
        "attempts": 2,
        "tried_providers": ("carrier-a", "carrier-b"),
        "track_links": True,
        "smart_encoded": True,
        "send_as_mms": True,
        "max_segments": 3,
        "max_cost": 0.0375,
        "encoding": "UCS-2",
    }
    data.update(fields)
    return record(account, **data)


def send_job(rec: MessageRecord, **fields: Any) -> SendJob:
    return SendJob(rec.account_sid, rec.sid, rec.priority, fields.pop("due_at", T), sender=rec.from_, **fields)


def broadcast(account: str = ACCOUNT, **fields: Any) -> BroadcastRecord:
    data: dict[str, Any] = {
        "sid": new_sid("BC"),
        "account_sid": account,
        "destinations": 2,
        "intent": {"channels": ["app", "sms"], "ttl": 3600, "fallback": {"after": 30.5, "to": None}, "track": True},
        "content": {"sms": {"body": "Hi ü 👋"}, "app": {"title": "Hi", "data": {"k": [1, 2.5, "x"]}}},
        "date_created": T,
        "messaging_service_sid": new_sid("MG"),
        "from_": "+15550199999",
    }
    data.update(fields)
    return BroadcastRecord(**data)


async def test_pipeline_fields_round_trip(engine: Engine) -> None:
    rec = full_record()
    await engine.messages.create(rec)
    assert await engine.messages.get(ACCOUNT, rec.sid) == rec
    in_batch = full_record(priority=2, channels=("sms",), send_as_mms=False, max_cost=None)
    await engine.messages.create_batch([in_batch])
    assert await engine.messages.get(ACCOUNT, in_batch.sid) == in_batch
    updated = await engine.messages.update(
        ACCOUNT, rec.sid, attempts=3, tried_providers=["carrier-a", "carrier-b", "carrier-c"], track_links=False, route=None
    )
    assert updated is not None
    assert updated.tried_providers == ("carrier-a", "carrier-b", "carrier-c") and updated.track_links is False
    assert await engine.messages.get(ACCOUNT, rec.sid) == updated
    # The defaults round-trip too, with their types (a tuple, a bool).
    plain = record()
    await engine.messages.create(plain)
    got = await engine.messages.get(ACCOUNT, plain.sid)
    assert got == plain
    assert got is not None and got.channels == () and got.tried_providers == () and got.track_links is False
    assert isinstance(got.track_links, bool) and isinstance(got.smart_encoded, bool) and isinstance(got.send_as_mms, bool)


@pytest.mark.parametrize("changes", [{"priority": 3}, {"attempts": -1}, {"channels": ("pigeon",)}])
async def test_update_refuses_bad_pipeline_values(engine: Engine, changes: dict[str, Any]) -> None:
    rec = full_record()
    await engine.messages.create(rec)
    with pytest.raises(ValueError):
        await engine.messages.update(ACCOUNT, rec.sid, **changes)
    assert await engine.messages.get(ACCOUNT, rec.sid) == rec


async def test_create_batch_stores_records_jobs_and_broadcast(engine: Engine) -> None:
    bc = broadcast()
    recs = [full_record(broadcast_sid=bc.sid, to=f"+1555010000{i}", date_created=T + i) for i in range(2)]
    await engine.messages.create_batch(recs, [send_job(r) for r in recs], bc)
    for r in recs:
        assert await engine.messages.get(ACCOUNT, r.sid) == r
    assert await engine.messages.get_broadcast(ACCOUNT, bc.sid) == bc
    assert await engine.queue.depth(ACCOUNT) == 2
    claimed = await engine.queue.claim(T, 0, 10, T + 30, "w")
    assert [j.message_sid for j in claimed] == [r.sid for r in recs]
    await engine.messages.create_batch([])  # nothing: a no-op


async def test_create_batch_is_all_or_nothing(engine: Engine) -> None:
    existing = record()
    await engine.messages.create(existing)
    bc = broadcast()
    fresh = record(broadcast_sid=bc.sid)
    clash = dataclasses.replace(existing, body="again", broadcast_sid=bc.sid)
    with pytest.raises(ValueError):
        await engine.messages.create_batch([fresh, clash], [send_job(fresh), send_job(clash)], bc)
    assert await engine.messages.get(ACCOUNT, fresh.sid) is None
    assert await engine.messages.get(ACCOUNT, existing.sid) == existing
    assert await engine.messages.get_broadcast(ACCOUNT, bc.sid) is None
    assert await engine.messages.list_broadcasts(ACCOUNT) == []
    assert await engine.messages.list(ACCOUNT, broadcast_sid=bc.sid) == []
    assert await engine.queue.depth() == 0
    assert await engine.queue.next_due() is None
    # A sid twice in the batch itself stores nothing either.
    twice = record()
    with pytest.raises(ValueError):
        await engine.messages.create_batch([twice, dataclasses.replace(twice, body="b")], [send_job(twice)])
    assert await engine.messages.get(ACCOUNT, twice.sid) is None
    assert await engine.queue.depth() == 0
    # The same batch without the clash is stored whole.
    await engine.messages.create_batch([fresh], [send_job(fresh)], bc)
    assert await engine.messages.get(ACCOUNT, fresh.sid) == fresh
    assert await engine.messages.get_broadcast(ACCOUNT, bc.sid) == bc
    assert await engine.queue.depth(ACCOUNT) == 1


async def test_create_batch_refuses_a_broadcast_sid_already_stored(engine: Engine) -> None:
    bc = broadcast()
    await engine.messages.create_batch([record(broadcast_sid=bc.sid)], (), bc)
    fresh = record(broadcast_sid=bc.sid)
    with pytest.raises(ValueError):
        await engine.messages.create_batch([fresh], [send_job(fresh)], dataclasses.replace(bc, destinations=9))
    assert await engine.messages.get(ACCOUNT, fresh.sid) is None
    assert await engine.queue.depth() == 0
    assert await engine.messages.get_broadcast(ACCOUNT, bc.sid) == bc


async def test_concurrent_batches_fail_alone(engine: Engine) -> None:
    existing = record()
    await engine.messages.create(existing)
    good = [record(date_created=T + i) for i in range(40)]
    calls = [engine.messages.create_batch([r], [send_job(r)]) for r in good]
    calls.insert(17, engine.messages.create_batch([dataclasses.replace(existing, body="x")], [send_job(existing)]))
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert [i for i, r in enumerate(results) if r is not None] == [17]
    assert isinstance(results[17], ValueError)
    assert len(await engine.messages.list(ACCOUNT, limit=100)) == 41
    assert await engine.queue.depth(ACCOUNT) == 40


async def test_list_by_broadcast(engine: Engine) -> None:
    account = new_sid("AC")
    bc, other_bc = broadcast(account), broadcast(account)
    mine = [record(account, broadcast_sid=bc.sid, to=f"+1555010000{i}", date_created=T + i) for i in range(4)]
    await engine.messages.create_batch(mine, (), bc)
    await engine.messages.create_batch([record(account, broadcast_sid=other_bc.sid, date_created=T + 9)], (), other_bc)
    await engine.messages.create(record(account, date_created=T + 10))
    await engine.messages.create(record(OTHER, broadcast_sid=bc.sid, date_created=T + 11))  # another account's
    store = engine.messages

    async def sids(**filters: Any) -> list[str]:
        return [r.sid for r in await store.list(account, **filters)]

    newest_first = [r.sid for r in reversed(mine)]
    assert await sids(broadcast_sid=bc.sid) == newest_first
    assert await sids(broadcast_sid=bc.sid, limit=2, offset=1) == newest_first[1:3]
    assert await sids(broadcast_sid=bc.sid, to="+15550100002") == [mine[2].sid]
    assert await sids(broadcast_sid=new_sid("BC")) == []
    assert len(await sids()) == 6


async def test_last_sender_is_the_newest_records_from(engine: Engine) -> None:
    account = new_sid("AC")
    service, other_service = new_sid("MG"), new_sid("MG")
    dest = "+15550100001"
    assert await engine.messages.last_sender(account, service, dest) is None

    async def create(from_: str, at: float, *, to: str = dest, svc: str | None = service, acc: str = account) -> MessageRecord:
        rec = record(acc, from_=from_, to=to, messaging_service_sid=svc, date_created=at)
        await engine.messages.create(rec)
        return rec

    await create("+15550000001", T)
    await create("+15550000002", T + 10)
    await create("+15550000003", T + 5)  # stored later, but older
    await create("+15550000004", T + 20, svc=other_service)
    await create("+15550000005", T + 30, to="+15550100002")
    await create("+15550000006", T + 40, svc=None)
    await create("+15550000007", T + 50, acc=OTHER)
    assert await engine.messages.last_sender(account, service, dest) == "+15550000002"
    latest = await create("+15550000008", T + 10)  # the same instant: the one stored last is newer
    assert await engine.messages.last_sender(account, service, dest) == "+15550000008"
    assert await engine.messages.last_sender(account, other_service, dest) == "+15550000004"
    assert await engine.messages.last_sender(account, service, "+15550100002") == "+15550000005"
    assert await engine.messages.last_sender(account, service, "+15550100003") is None
    assert await engine.messages.last_sender(OTHER, service, dest) == "+15550000007"
    assert await engine.messages.last_sender(new_sid("AC"), service, dest) is None
    # The record's from as it is now (a sender chosen after the record was made).
    await engine.messages.update(account, latest.sid, from_="+15550000009")
    assert await engine.messages.last_sender(account, service, dest) == "+15550000009"


async def test_broadcasts_get_and_list_newest_first(engine: Engine) -> None:
    account = new_sid("AC")
    made = [broadcast(account, date_created=T + i) for i in (3, 1, 2)]
    same_time = [broadcast(account, date_created=T + 5, messaging_service_sid=None, from_=None) for _ in range(2)]
    for b in made + same_time:
        await engine.messages.create_batch([record(account, broadcast_sid=b.sid)], (), b)
    for b in made + same_time:
        assert await engine.messages.get_broadcast(account, b.sid) == b
    listed = await engine.messages.list_broadcasts(account)
    expected = [same_time[1], same_time[0], made[0], made[2], made[1]]
    assert listed == expected
    assert await engine.messages.list_broadcasts(account, limit=2, offset=2) == expected[2:4]
    assert await engine.messages.list_broadcasts(account, limit=2, offset=5) == []
    assert await engine.messages.list_broadcasts(account, limit=0) == []
    assert await engine.messages.get_broadcast(account, new_sid("BC")) is None


async def test_another_accounts_broadcast_is_not_found(engine: Engine) -> None:
    account = new_sid("AC")
    bc = broadcast(account)
    await engine.messages.create_batch([record(account, broadcast_sid=bc.sid)], (), bc)
    assert await engine.messages.get_broadcast(OTHER, bc.sid) is None
    assert await engine.messages.list_broadcasts(OTHER) == []
    assert await engine.messages.list(OTHER, broadcast_sid=bc.sid) == []
    assert await engine.messages.get_broadcast(account, bc.sid) == bc


# -- The embedded engine's own promises (its file), beyond the shared contract -------------


async def test_embedded_records_survive_a_restart(tmp_path: Path) -> None:
    first = MemoryEngine(data_dir=str(tmp_path))
    await first.start()
    rec = record()
    await first.messages.create(rec)
    await first.close()
    assert (tmp_path / "messages.sqlite3").exists()
    with sqlite3.connect(tmp_path / "messages.sqlite3") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"

    second = MemoryEngine(data_dir=str(tmp_path))
    await second.start()
    try:
        assert await second.messages.get(ACCOUNT, rec.sid) == rec
    finally:
        await second.close()


async def test_embedded_engine_without_a_data_dir_cleans_up() -> None:
    engine = MemoryEngine()
    await engine.start()
    await engine.messages.create(record())
    path = engine.messages.path
    assert path is not None and path.exists()
    await engine.close()
    assert not path.parent.exists()
    with pytest.raises(EngineUnavailable):
        await engine.messages.get(ACCOUNT, new_sid("SM"))


async def test_an_unusable_data_dir_fails_at_start(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    engine = MemoryEngine(data_dir=str(blocker / "data"))
    with pytest.raises(EngineUnavailable):
        await engine.start()
    await engine.close()
