"""The engine contract suite: every test here runs against every engine.

``memory`` is the embedded engine; ``redis`` runs against a real redis-server
(one per test session, flushed before each test: see tests/helpers/redis_server.py);
``redis-cluster`` against a real 3-master Redis Cluster (one per session, every
master flushed before each test: tests/helpers/redis_cluster.py). A script or
MULTI that touched two hash slots would fail there with CROSSSLOT, so the
cluster run also proves every multi-key operation stays in one slot.
"""

from __future__ import annotations

from typing import AsyncIterator

import pytest

from presence_server.engines.memory import MemoryEngine
from presence_server.engines.ports import Engine
from presence_server.engines.redis import RedisEngine
from tests.helpers.redis_cluster import shared_redis_cluster  # noqa: F401 - fixture, used by name
from tests.helpers.redis_server import redis_url, shared_redis_server  # noqa: F401 - fixtures, used by name


@pytest.fixture(params=["memory", "redis", "redis-cluster"])
async def engine(request: pytest.FixtureRequest) -> AsyncIterator[Engine]:
    eng: Engine
    if request.param == "memory":
        eng = MemoryEngine()
    elif request.param == "redis":
        server = request.getfixturevalue("shared_redis_server")
        server.flushall()  # each test gets an empty database
        eng = RedisEngine(server.url)
    else:
        cluster = request.getfixturevalue("shared_redis_cluster")
        cluster.flushall()
        eng = RedisEngine(cluster.url)
    await eng.start()
    try:
        yield eng
    finally:
        await eng.close()
