"""A connection that ended is gone: the gateway's timers do not hold it (with its
request, parser and buffers) until its idle deadline, so a storm of short
sessions does not pile up for the garbage collector to walk."""

from __future__ import annotations

import asyncio
import gc
import weakref
from typing import AsyncIterator

import pytest

from protocol.errors import ErrorCode
from tests.helpers.servers import RunningServer, start_server
from tests.helpers.wsclient import RawClient


@pytest.fixture
async def running() -> AsyncIterator[RunningServer]:
    server = await start_server()
    try:
        yield server
    finally:
        await server.node.stop()


async def ended(server: RunningServer, conn: object) -> None:
    for _ in range(500):
        if conn not in server.node.gateway.connections:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the connection did not end")


@pytest.mark.parametrize("how", ["bye", "drop"])
async def test_an_ended_connection_is_not_kept_by_the_gateway(running: RunningServer, how: str) -> None:
    client = await RawClient.open(running.ws_url)
    assert (await client.register(running.token("bob")))["type"] == "registered"
    (conn,) = running.node.gateway.sessions.values()
    assert conn.timer is not None  # queued under its idle deadline, a minute away
    ref = weakref.ref(conn)
    if how == "bye":
        await client.send({"type": "bye"})  # also queues the close cut-off, ten seconds away
        await client.closed()
    else:
        client.ws.transport.abort()  # the socket dies under the session
    await ended(running, conn)
    del conn
    for _ in range(50):
        gc.collect()
        if ref() is None:
            break
        await asyncio.sleep(0.02)  # the handler's last steps
    assert ref() is None, gc.get_referrers(ref())


async def test_a_superseded_deadline_lets_go_and_the_live_one_still_fires(running: RunningServer) -> None:
    gateway = running.node.gateway
    client = await RawClient.open(running.ws_url)
    assert (await client.register(running.token("bob", ttl=3600)))["type"] == "registered"
    (conn,) = gateway.sessions.values()
    first = conn.timer
    assert first is not None and first[2] is conn
    # A token renewed to expire sooner moves the deadline earlier: a new entry.
    conn.session.token_renewed(running.clock.time() + 30)
    gateway.schedule(conn)
    assert first[2] is None and conn.timer is not None and conn.timer[2] is conn
    await running.advance(31)  # past the new expiry (and the clock skew allowance)
    await running.advance(30)
    error = await client.recv_type("error")
    assert error["code"] == ErrorCode.TOKEN_EXPIRED.code
    await ended(running, conn)
