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
