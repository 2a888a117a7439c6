"""The engine contract suite: every test here runs against every engine.

``memory`` is the embedded engine; ``redis`` runs against a real redis-server
(one per test session, flushed before each test: see tests/helpers/redis_server.py).
"""

from __future__ import annotations

from typing import AsyncIterator

import pytest

from presence_server.engines.memory import MemoryEngine
from presence_server.engines.ports import Engine
from presence_server.engines.redis import RedisEngine
from tests.helpers.redis_server import redis_url, shared_redis_server  # noqa: F401 - fixtures, used by name


@pytest.fixture(params=["memory", "redis"])
async def engine(request: pytest.FixtureRequest) -> AsyncIterator[Engine]:
    eng: Engine
    if request.param == "memory":
        eng = MemoryEngine()
    else:
        server = request.getfixturevalue("shared_redis_server")
        server.flushall()  # each test gets an empty database
        eng = RedisEngine(server.url)
    await eng.start()
    try:
        yield eng
    finally:
        await eng.close()
