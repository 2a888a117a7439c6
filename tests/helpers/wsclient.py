"""A raw WebSocket client for driving the wire protocol by hand in tests."""

from __future__ import annotations

import asyncio
import json
from ssl import SSLContext
from typing import Any

import msgpack
from websockets.asyncio.client import ClientConnection, connect

from protocol.frames import JSON_SUBPROTOCOL, MSGPACK_SUBPROTOCOL


class RawClient:
    def __init__(self, ws: ClientConnection, binary: bool) -> None:
        self.ws = ws
        self.binary = binary

    @classmethod
    async def open(cls, url: str, encoding: str = "json", ssl: SSLContext | None = None) -> RawClient:
        sub = MSGPACK_SUBPROTOCOL if encoding == "msgpack" else JSON_SUBPROTOCOL
        ws = await connect(url, subprotocols=[sub], max_size=None, ssl=ssl)  # type: ignore[list-item]
        return cls(ws, encoding == "msgpack")

    async def send(self, obj: Any) -> None:
        await self.ws.send(msgpack.packb(obj, use_bin_type=True) if self.binary else json.dumps(obj))

    async def send_raw(self, data: str | bytes) -> None:
        await self.ws.send(data)

    async def recv(self, timeout: float = 5.0) -> dict[str, Any]:
        data = await asyncio.wait_for(self.ws.recv(), timeout)
        if isinstance(data, bytes):
            obj: dict[str, Any] = msgpack.unpackb(data, raw=False)
        else:
            obj = json.loads(data)
        return obj

    async def recv_type(self, frame_type: str, timeout: float = 5.0) -> dict[str, Any]:
        """Receive until a frame of this type arrives (others are skipped)."""
        while True:
            frame = await self.recv(timeout)
            if frame.get("type") == frame_type:
                return frame

    async def register(self, token: str, **fields: Any) -> dict[str, Any]:
        await self.send({"type": "register", "token": token, **fields})
        return await self.recv()

    async def closed(self, timeout: float = 5.0) -> tuple[int | None, str]:
        """Wait for the server to close; returns (code, reason)."""
        try:
            while True:
                await asyncio.wait_for(self.ws.recv(), timeout)
        except Exception:
            pass
        await asyncio.wait_for(self.ws.wait_closed(), timeout)
        rcvd = self.ws.protocol.close_rcvd
        return (rcvd.code, rcvd.reason) if rcvd else (None, "")

    async def close(self) -> None:
        await self.ws.close()
