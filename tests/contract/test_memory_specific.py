"""The embedded engine's own promises, beyond the shared contract: its SQLite
file survives restarts (and kill -9) with every lease dropped, old files are
migrated, and concurrent writes are committed in groups."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from presence_server.engines.memory import MemoryEngine
from presence_server.engines.memory.schema import SCHEMA_VERSION
from presence_server.engines.outbound import NORMAL, BroadcastRecord, RouteOutcome, SendJob
from presence_server.engines.ports import EngineUnavailable, MessageRecord
from protocol.addresses import new_sid

T = 1_700_000_000.0
ROOT = Path(__file__).resolve().parents[2]


def record(account: str, **fields: Any) -> MessageRecord:
    data: dict[str, Any] = {
        "sid": new_sid("SM"),
        "account_sid": account,
        "to": "+15550100001",
        "from_": "+15550199999",
        "body": "hello",
        "date_created": T,
        "date_updated": T,
    }
    data.update(fields)
    return MessageRecord(**data)


def job(rec: MessageRecord, due_at: float = T) -> SendJob:
    return SendJob(rec.account_sid, rec.sid, rec.priority, due_at, sender=rec.from_)


async def test_a_restart_keeps_records_and_jobs_and_drops_every_lease(tmp_path: Path) -> None:
    account = new_sid("AC")
    first = MemoryEngine(data_dir=str(tmp_path))
    await first.start()
    recs = [record(account, date_created=T + i) for i in range(3)]
    bc = BroadcastRecord(new_sid("BC"), account, 3, {"channels": ["sms"]}, {"sms": {"body": "hi"}}, T)
    await first.messages.create_batch(recs, [job(r) for r in recs], bc)
    leased = await first.queue.claim(T, NORMAL, 2, T + 3600, "worker-1")
    assert len(leased) == 2
    await first.close()
    await first.close()  # once only

    second = MemoryEngine(data_dir=str(tmp_path))
    await second.start()
    try:
        for r in recs:
            assert await second.messages.get(account, r.sid) == r
        assert await second.messages.get_broadcast(account, bc.sid) == bc
        assert await second.queue.depth(account) == 3
        # Nobody from before the restart holds a lease: all three are claimable now.
        again = await second.queue.claim(T + 1, NORMAL, 10, T + 60, "worker-2")
        assert [j.message_sid for j in again] == [r.sid for r in recs]
    finally:
        await second.close()
    with pytest.raises(EngineUnavailable):
        await second.queue.depth()


async def test_after_kill_9_the_jobs_being_sent_are_claimable_at_once(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import asyncio, os, signal
        from presence_server.engines.memory import MemoryEngine
        from presence_server.engines.outbound import SendJob
        from presence_server.engines.ports import MessageRecord

        async def main():
            engine = MemoryEngine(data_dir={str(tmp_path)!r})
            await engine.start()
            rec = MessageRecord(sid="SM" + "1" * 32, account_sid="AC" + "1" * 32, to="+15550100001",
                                from_="+15550199999", body="hi", date_created={T}, date_updated={T})
            await engine.messages.create_batch([rec], [SendJob(rec.account_sid, rec.sid, 1, {T})])
            assert len(await engine.queue.claim({T}, 1, 10, {T} + 3600, "doomed")) == 1
            os.kill(os.getpid(), signal.SIGKILL)

        asyncio.run(main())
        """
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = await asyncio.to_thread(subprocess.run, [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True)
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()

    engine = MemoryEngine(data_dir=str(tmp_path))
    await engine.start()
    try:
        assert (await engine.messages.get("AC" + "1" * 32, "SM" + "1" * 32)) is not None
        claimed = await engine.queue.claim(T + 1, NORMAL, 10, T + 60, "survivor")
        assert [j.message_sid for j in claimed] == ["SM" + "1" * 32]
    finally:
        await engine.close()


# The first release's file, as it wrote it (presence_server/engines/memory/messages.py, schema 1).
_V1_SCHEMA = """
CREATE TABLE messages (
    seq INTEGER PRIMARY KEY,
    sid TEXT NOT NULL UNIQUE,
    account_sid TEXT NOT NULL,
    to_addr TEXT NOT NULL,
    from_addr TEXT NOT NULL,
    body TEXT NOT NULL,
    media_urls TEXT NOT NULL,
    direction TEXT NOT NULL,
    status TEXT NOT NULL,
    channel TEXT NOT NULL,
    provider TEXT,
    provider_message_id TEXT,
    error_code INTEGER,
    error_message TEXT,
    fallback_reason TEXT,
    related_call_sid TEXT,
    messaging_service_sid TEXT,
    num_segments INTEGER NOT NULL,
    date_created REAL NOT NULL,
    date_updated REAL NOT NULL,
    date_sent REAL
);
CREATE INDEX messages_by_account ON messages (account_sid, date_created DESC, seq DESC);
CREATE INDEX messages_by_to ON messages (account_sid, to_addr, date_created DESC);
CREATE INDEX messages_by_from ON messages (account_sid, from_addr, date_created DESC);
CREATE INDEX messages_by_provider_id ON messages (provider, provider_message_id) WHERE provider_message_id IS NOT NULL;
PRAGMA user_version=1;
"""


def _write_v1_file(path: Path, account: str, sid: str) -> None:
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.executescript(_V1_SCHEMA)
        conn.execute(
            "INSERT INTO messages (sid, account_sid, to_addr, from_addr, body, media_urls, direction, status, channel,"
            " provider, provider_message_id, error_code, error_message, fallback_reason, related_call_sid,"
            " messaging_service_sid, num_segments, date_created, date_updated, date_sent)"
            " VALUES (?, ?, '+15550100001', 'client:alice', 'old', '[\"https://x/a.png\"]', 'outbound-call', 'delivered',"
            " 'mms', 'outbox', 'OB1', NULL, NULL, 'no-answer', NULL, ?, 2, ?, ?, ?)",
            (sid, account, "MG" + "0" * 32, T, T + 1, T + 2),
        )
        conn.commit()
    finally:
        conn.close()


async def test_a_version_1_file_is_migrated_and_its_records_stay_readable(tmp_path: Path) -> None:
    account, sid = new_sid("AC"), new_sid("MM")
    _write_v1_file(tmp_path / "messages.sqlite3", account, sid)
    engine = MemoryEngine(data_dir=str(tmp_path))
    await engine.start()
    try:
        old = await engine.messages.get(account, sid)
        assert old == MessageRecord(
            sid=sid,
            account_sid=account,
            to="+15550100001",
            from_="client:alice",
            body="old",
            media_urls=("https://x/a.png",),
            direction="outbound-call",
            status="delivered",
            channel="mms",
            provider="outbox",
            provider_message_id="OB1",
            fallback_reason="no-answer",
            messaging_service_sid="MG" + "0" * 32,
            num_segments=2,
            date_created=T,
            date_updated=T + 1,
            date_sent=T + 2,
        )  # every new field at its default
        assert old.track_links is False and old.channels == () and old.priority == 1
        assert [r.sid for r in await engine.messages.list(account)] == [sid]
        # The migrated file takes everything new.
        new = record(account, channels=("app", "sms"), tried_providers=("a",), track_links=True, date_created=T + 5)
        await engine.messages.create_batch([new], [job(new)])
        assert await engine.messages.get(account, new.sid) == new
        assert await engine.messages.last_sender(account, "MG" + "0" * 32, "+15550100001") == "client:alice"
        assert await engine.queue.depth(account) == 1
        updated = await engine.messages.update(account, sid, attempts=1, tried_providers=("outbox",))
        assert updated is not None and await engine.messages.get(account, sid) == updated
    finally:
        await engine.close()
    with sqlite3.connect(tmp_path / "messages.sqlite3") as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 4
        migrated = conn.execute("PRAGMA table_info(messages)").fetchall()
    # A migrated file has exactly the table a new file gets.
    fresh_dir = tmp_path / "fresh"
    fresh = MemoryEngine(data_dir=str(fresh_dir))
    await fresh.start()
    await fresh.close()
    with sqlite3.connect(fresh_dir / "messages.sqlite3") as conn:
        assert conn.execute("PRAGMA table_info(messages)").fetchall() == migrated


async def test_a_file_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "messages.sqlite3") as conn:
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    engine = MemoryEngine(data_dir=str(tmp_path))
    with pytest.raises(EngineUnavailable, match="schema version"):
        await engine.start()
    await engine.close()


async def _hold_the_thread(engine: MemoryEngine, seconds: float) -> "asyncio.Task[None]":
    # A write that keeps the database thread busy, so that the next calls queue up behind it.
    started = asyncio.Event()
    loop = asyncio.get_running_loop()

    def busy(conn: sqlite3.Connection) -> None:
        loop.call_soon_threadsafe(started.set)
        time.sleep(seconds)

    task = asyncio.create_task(engine.database.write(busy))
    await started.wait()
    return task


async def test_concurrent_writes_share_one_commit_and_fail_alone() -> None:
    engine = MemoryEngine()
    await engine.start()
    try:
        account = new_sid("AC")
        existing = record(account)
        await engine.messages.create(existing)
        busy = await _hold_the_thread(engine, 0.2)
        before = engine.database.commits
        good = [record(account, date_created=T + i) for i in range(100)]
        calls = [engine.messages.create_batch([r], [job(r)]) for r in good]
        calls.insert(50, engine.messages.create_batch([record(account, sid=existing.sid)], [job(existing)]))
        calls.append(engine.messages.update(account, existing.sid, status="sent"))
        results = await asyncio.gather(*calls, return_exceptions=True)
        await busy
        assert engine.database.commits - before == 2  # the busy write's, then everyone else's
        assert [i for i, r in enumerate(results) if isinstance(r, BaseException)] == [50]
        assert isinstance(results[50], ValueError)
        assert await engine.queue.depth(account) == 100
        assert (await engine.messages.get(account, existing.sid)).status == "sent"  # type: ignore[union-attr]
    finally:
        await engine.close()


async def test_when_the_shared_transaction_fails_nobody_is_told_done() -> None:
    engine = MemoryEngine()
    await engine.start()
    try:
        account = new_sid("AC")
        busy = await _hold_the_thread(engine, 0.2)
        a, b = record(account), record(account)
        results = await asyncio.gather(
            engine.messages.create(a),
            engine.database.write(lambda conn: conn.execute("ROLLBACK")),  # ends the shared transaction
            engine.messages.create(b),
            return_exceptions=True,
        )
        await busy
        assert all(isinstance(r, EngineUnavailable) for r in results)
        assert await engine.messages.get(account, a.sid) is None
        assert await engine.messages.get(account, b.sid) is None
        await engine.messages.create(a)  # and the database carries on
        assert await engine.messages.get(account, a.sid) == a
    finally:
        await engine.close()


async def test_minute_buckets_older_than_a_day_are_dropped() -> None:
    engine = MemoryEngine()
    await engine.start()
    try:
        account = new_sid("AC")
        await engine.routing_stats.record(RouteOutcome(account, "carrier-a", "us", "submitted", T))
        await engine.routing_stats.record(RouteOutcome(account, "carrier-a", "us", "submitted", T + 2 * 86_400))
        assert [s.minute for s in await engine.routing_stats.window(0)] == [(T + 2 * 86_400) // 60 * 60]
        (total,) = await engine.routing_stats.totals(account)  # totals are kept
        assert total.submitted == 2
    finally:
        await engine.close()


async def test_the_call_store_forgets_the_oldest_finished_call_past_its_bound() -> None:
    from presence_server.engines.calls import CallRecord
    from presence_server.engines.memory.calls import MemoryCallStore

    acc = "AC" + "1" * 32

    def call(n: int, status: str) -> CallRecord:
        return CallRecord(sid=f"CA{n:032x}", account_sid=acc, from_="client:a", to="client:b", date_created=float(n), status=status)

    store = MemoryCallStore(keep=3)
    await store.create(call(1, "in-progress"))  # live calls are never forgotten
    await store.create(call(2, "completed"))
    await store.create(call(3, "completed"))
    await store.create(call(4, "ringing"))  # over the bound: call 2 goes
    assert [c.sid[-1] for c in await store.list(acc)] == ["4", "3", "1"]
    await store.create(call(5, "in-progress"))  # call 3 goes
    await store.create(call(6, "in-progress"))  # nothing finished left: kept over the bound
    assert [c.sid[-1] for c in await store.list(acc)] == ["6", "5", "4", "1"]
