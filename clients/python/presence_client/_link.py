"""One WebSocket connection of a client: a registered session on one socket.

A :class:`PresenceClient` outlives its connections; each reconnect makes a
new ``_Link``. Requests in flight belong to the link they were sent on, so a
lost connection fails exactly those (and the client sends the idempotent ones
again on the next link).
"""

from __future__ import annotations

import asyncio
from typing import Any

from websockets.asyncio.client import ClientConnection

from protocol.errors import CLOSE_CODES
from protocol.frames import Codec

from .errors import PresenceError
from .models import SessionInfo


class LinkLost(Exception):
    """Internal: the link ended while a request on it waited for its reply."""


class Link:
    def __init__(self, ws: ClientConnection, codec: Codec, info: SessionInfo, now: float) -> None:
        self.ws = ws
        self.codec = codec
        self.info = info
        self.last_rx = now  # clock.monotonic() when the last frame arrived
        self.pending: dict[int, asyncio.Future[Any]] = {}
        self.reader: asyncio.Task[None] | None = None
        self.keepalive: asyncio.Task[None] | None = None
        self.renew_timer: asyncio.Task[None] | None = None
        self.renew_due: float | None = None  # clock.monotonic() when renew_timer fires
        self.ended = False
        self.error: PresenceError | None = None  # the fatal error frame that preceded the close
        self.retry_after = 0.0  # from a `reconnect` frame
        self.lost_reason: str | None = None  # set when this side gave up on the socket

    async def send(self, frame: dict[str, Any]) -> None:
        await self.ws.send(self.codec.encode(frame))

    def abort(self, why: str) -> None:
        """Drop the socket at once, without a closing handshake: used when the
        peer is presumed dead, where a handshake would only wait for a timeout."""
        if self.lost_reason is None:
            self.lost_reason = why
        self.ws.transport.abort()

    def fail_pending(self) -> None:
        for fut in self.pending.values():
            if not fut.done():
                fut.set_exception(LinkLost())
        self.pending.clear()

    def timers(self) -> list[asyncio.Task[None]]:
        return [t for t in (self.keepalive, self.renew_timer) if t is not None]

    @property
    def close_code(self) -> int | None:
        if self.lost_reason is not None:
            return 1006  # we dropped it; no close frame was exchanged
        return self.ws.close_code

    @property
    def close_reason(self) -> str:
        if self.lost_reason is not None:
            return self.lost_reason
        reason = self.ws.close_reason
        if reason:
            return reason
        code = self.ws.close_code
        if code == 1006:
            return "the connection dropped without a close frame"
        return CLOSE_CODES.get(code, "") if code is not None else ""
