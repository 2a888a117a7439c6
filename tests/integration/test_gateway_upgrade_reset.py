"""A client that sends the WebSocket upgrade and resets the connection before
the 101 goes out: the server has nothing to serve and must not log an error
with a traceback for it (found by the soak: before the fix every such client
wrote a "request failed" error line, so any client could fill the error log)."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import struct

import pytest

from tests.helpers.servers import RunningServer
from tests.helpers.wsclient import RawClient


def upgrade_then_reset(port: int) -> None:
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET /v1/connect HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: presence.v1.json\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close = RST
        sock.sendall(request)


async def test_a_client_that_resets_during_the_upgrade_logs_no_error(server: RunningServer, capsys: pytest.CaptureFixture[str]) -> None:
    for _ in range(20):
        upgrade_then_reset(server.node.port)
    await asyncio.sleep(0.5)  # the handlers run and find the transport gone
    out = capsys.readouterr().out
    assert "request failed" not in out and "Traceback" not in out
    assert not server.node.gateway.connections  # nothing held for them
    client = await RawClient.open(server.ws_url)  # and the gateway serves the next client
    assert (await client.register(server.token("alice")))["type"] == "registered"
    await client.close()
