"""The fault proxy itself (tests/helpers/faultproxy.py), against a real Redis:
each fault does what the suite relies on, and restore() undoes it."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis.asyncio

from tests.helpers.faultproxy import FaultProxy
from tests.helpers.redis_server import redis_server


async def round_trip(client: redis.asyncio.Redis) -> float:
    started = time.monotonic()
    assert await client.ping()
    return time.monotonic() - started


async def test_latency_drop_refuse_stall_and_restore() -> None:
    async with redis_server() as server:
        proxy = FaultProxy("127.0.0.1", server.port)
        await proxy.start()
        client = redis.asyncio.Redis.from_url(proxy.url, socket_timeout=1.0, retry_on_timeout=False)
        try:
            assert await round_trip(client) < 0.2
            assert proxy.connections == 1 and proxy.bytes_up > 0 and proxy.bytes_down > 0

            proxy.latency = 0.1  # each way
            assert await round_trip(client) >= 0.2
            proxy.restore()

            assert await proxy.drop_all() == 1 and proxy.open_connections == 0
            proxy.refuse = True
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            try:
                assert await reader.read() == b""  # accepted and closed at once: nothing listens
            except ConnectionResetError:
                pass  # as closed as it gets
            writer.close()
            assert proxy.refused == 1
            proxy.restore()
            with pytest.raises(redis.exceptions.ConnectionError):
                await client.ping()  # its connection was dropped under it
            assert await client.ping()  # and a new one goes through

            proxy.stall()
            with pytest.raises(redis.exceptions.TimeoutError):
                await client.ping()
            proxy.unstall()
            assert await client.ping()

            proxy.lose(b"chaos-key", "request")
            with pytest.raises(redis.exceptions.TimeoutError):
                await client.set("chaos-key", "1")
            assert server.command("EXISTS", "chaos-key") == 0  # never reached Redis
            proxy.lose(b"chaos-key", "reply")
            with pytest.raises(redis.exceptions.TimeoutError):
                await client.set("chaos-key", "2")
            assert server.command("GET", "chaos-key") == b"2"  # ran; its answer was lost
            assert proxy.lost == 2
        finally:
            await client.aclose()
            await proxy.close()
