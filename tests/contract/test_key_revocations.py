"""Revoked API keys (DELETE .../Keys/{KeySid}.json): recorded once, per account,
durable across a restart of the engine."""

from __future__ import annotations

from pathlib import Path

from presence_server.engines.memory import MemoryEngine
from presence_server.engines.ports import Engine
from presence_server.engines.redis import RedisEngine
from protocol.addresses import new_sid
from tests.helpers.redis_server import RedisServer


async def test_a_key_is_revoked_once_and_keeps_its_first_time(engine: Engine) -> None:
    account, key, other_key = new_sid("AC"), new_sid("SK"), new_sid("SK")
    assert await engine.revocations.revoked(account) == {}
    assert await engine.revocations.revoke(account, key, at=100.5) is True
    assert await engine.revocations.revoke(account, key, at=200.0) is False  # already revoked
    assert await engine.revocations.revoke(account, other_key, at=150.0) is True
    assert await engine.revocations.revoked(account) == {key: 100.5, other_key: 150.0}


async def test_revocations_are_per_account(engine: Engine) -> None:
    mine, theirs, key = new_sid("AC"), new_sid("AC"), new_sid("SK")
    await engine.revocations.revoke(mine, key, at=1.0)
    # Another account's listing never shows it, even under the same key sid.
    assert await engine.revocations.revoked(theirs) == {}
    assert await engine.revocations.revoke(theirs, key, at=2.0) is True
    assert await engine.revocations.revoked(mine) == {key: 1.0}


async def test_memory_engine_keeps_revocations_across_a_restart(tmp_path: Path) -> None:
    account, key = new_sid("AC"), new_sid("SK")
    first = MemoryEngine(data_dir=str(tmp_path))
    await first.start()
    await first.revocations.revoke(account, key, at=42.0)
    await first.close()
    second = MemoryEngine(data_dir=str(tmp_path))
    await second.start()
    try:
        assert await second.revocations.revoked(account) == {key: 42.0}
    finally:
        await second.close()


async def test_redis_engine_keeps_revocations_under_the_account_hash_tag(shared_redis_server: RedisServer) -> None:
    shared_redis_server.flushall()
    account, key = new_sid("AC"), new_sid("SK")
    first = RedisEngine(shared_redis_server.url)
    await first.start()
    await first.revocations.revoke(account, key, at=7.0)
    await first.close()
    # Stored in the account's slot (Redis Cluster: one hash tag per account).
    assert shared_redis_server.command("EXISTS", f"ps:{{{account}}}:revoked") == 1
    # A second engine (another node, or this one restarted) reads the same answer.
    second = RedisEngine(shared_redis_server.url)
    await second.start()
    try:
        assert await second.revocations.revoked(account) == {key: 7.0}
    finally:
        await second.close()
