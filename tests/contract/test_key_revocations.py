"""API keys revoked (DELETE .../Keys/{KeySid}.json) and created (POST .../Keys.json) at run time: recorded once, per account,
durable across a restart of the engine."""

from __future__ import annotations

from pathlib import Path

from presence_server.engines.memory import MemoryEngine
from presence_server.engines.ports import CreatedApiKey, Engine
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


# -- API keys created at run time (POST .../Keys.json) ------------------------------------------


def created(account: str, name: str = "", at: float = 1.0) -> CreatedApiKey:
    return CreatedApiKey(new_sid("SK"), account, name, "s" * 32, at)


async def test_a_created_key_is_listed_oldest_first_and_never_twice(engine: Engine) -> None:
    account = new_sid("AC")
    assert await engine.api_keys.list(account) == []
    second, first = created(account, "ci runner", at=20.0), created(account, "laptop", at=10.0)
    assert await engine.api_keys.create(second) is True
    assert await engine.api_keys.create(first) is True
    clash = CreatedApiKey(second.sid, account, "other", "t" * 32, 30.0)
    assert await engine.api_keys.create(clash) is False  # the first one stays as it was
    assert await engine.api_keys.list(account) == [first, second]


async def test_created_keys_are_per_account(engine: Engine) -> None:
    mine, theirs = new_sid("AC"), new_sid("AC")
    key = created(mine, "mine")
    await engine.api_keys.create(key)
    assert await engine.api_keys.list(theirs) == []
    assert await engine.api_keys.list(mine) == [key]


async def test_memory_engine_keeps_created_keys_across_a_restart(tmp_path: Path) -> None:
    key = created(new_sid("AC"), "büro ✓", at=42.5)
    first = MemoryEngine(data_dir=str(tmp_path))
    await first.start()
    await first.api_keys.create(key)
    await first.close()
    second = MemoryEngine(data_dir=str(tmp_path))
    await second.start()
    try:
        assert await second.api_keys.list(key.account_sid) == [key]
    finally:
        await second.close()


async def test_redis_engine_keeps_created_keys_under_the_account_hash_tag(shared_redis_server: RedisServer) -> None:
    shared_redis_server.flushall()
    key = created(new_sid("AC"), "ci", at=7.0)
    first = RedisEngine(shared_redis_server.url)
    await first.start()
    await first.api_keys.create(key)
    await first.close()
    assert shared_redis_server.command("EXISTS", f"ps:{{{key.account_sid}}}:apikeys") == 1
    second = RedisEngine(shared_redis_server.url)
    await second.start()
    try:
        assert await second.api_keys.list(key.account_sid) == [key]
    finally:
        await second.close()
