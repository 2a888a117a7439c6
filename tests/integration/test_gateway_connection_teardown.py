"""A dropped client's connection is freed by reference counting, at once,
without waiting for the cyclic garbage collector.

Found by the soak (docs/reliability.md#6-soak): aiohttp keeps the exception
that closing a WebSocket over a dead transport meets (``ws.exception()``); its
traceback holds ``close()``'s frame, whose ``self`` is the response, so every
dropped connection (its transport, buffers, request, parser) stayed behind in
a reference cycle until a full collection, and the server's memory climbed by
about 2 MiB a minute at 5 dropped sessions a second."""

from __future__ import annotations

import asyncio
import gc
import weakref

import pytest

from tests.helpers.servers import RunningServer
from tests.helpers.wsclient import RawClient


@pytest.mark.parametrize("leave", ["abort", "close", "bye"])
async def test_ended_connections_are_freed_without_the_cycle_collector(server: RunningServer, leave: str) -> None:
    refs = []
    gc.collect()
    gc.disable()  # only reference counting frees anything from here on
    try:
        for _ in range(10):
            client = await RawClient.open(server.ws_url)
            registered = await client.register(server.token("alice"))
            conn = server.node.gateway.sessions[registered["session"]]
            refs.append(weakref.ref(conn.ws))
            del conn
            if leave == "abort":
                client.ws.transport.abort()  # the client vanishes: no close frame
            elif leave == "close":
                await client.close()  # a close handshake
            else:
                await client.send({"type": "bye"})
                await client.closed()
        for _ in range(100):
            await asyncio.sleep(0.02)
            if not server.node.gateway.connections:
                break
        assert not server.node.gateway.connections
        await asyncio.sleep(0.1)  # the request handlers return
        alive = sum(ref() is not None for ref in refs)
        assert alive == 0, f"{alive} of {len(refs)} ended connections ({leave}) are kept alive by a reference cycle"
    finally:
        gc.enable()
