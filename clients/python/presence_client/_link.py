"""One WebSocket connection of a client: a registered session on one socket.

A :class:`PresenceClient` outlives its connections; each reconnect makes a
new ``_Link``. Requests in flight belong to the link they were sent on, so a
lost connection fails exactly those (and the client sends the idempotent ones
again on the next link).
"""

from __future__ import annotations

import asyncio
from typing import Any, Mapping

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, WebSocketException

from protocol.errors import CLOSE_CODES, RemoteProtocolError
from protocol.frames import JSON_CODEC, Codec, codec_for

from .errors import PresenceConnectionError, PresenceError
from .models import SessionInfo

# Server frames can be larger than the server's limit on *client* frames: a
# snapshot of 100 identities with many sessions each, say.
MAX_INCOMING_FRAME = 16 * 1024 * 1024
# How long a closing handshake may take before the socket is dropped.
CLOSE_TIMEOUT = 2.0


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


async def open_link(
    url: str,
    codec: Codec,
    register: dict[str, Any],
    *,
    timeout: float,
    now: float,
    ws_options: Mapping[str, Any] | None = None,
) -> Link:
    """Connect and send ``register``; returns the registered link (its tasks
    not started). Raises :class:`PresenceError` for a refusal (the server's
    code), :class:`PresenceConnectionError` for everything else."""
    options: dict[str, Any] = {
        "subprotocols": [codec.subprotocol],
        "open_timeout": timeout,
        "ping_interval": None,  # the protocol's own ping frames keep the session alive
        "close_timeout": CLOSE_TIMEOUT,
        "max_size": MAX_INCOMING_FRAME,
        **(ws_options or {}),
    }
    try:
        ws = await ws_connect(url, **options)
    except (OSError, TimeoutError, WebSocketException) as exc:
        raise PresenceConnectionError(f"could not connect to {url}: {exc}") from exc
    agreed = codec_for(ws.subprotocol) or JSON_CODEC  # the server's default when none is agreed
    try:
        async with asyncio.timeout(timeout):
            await ws.send(agreed.encode(register))
            while True:
                reply = agreed.decode(await ws.recv(), max_bytes=MAX_INCOMING_FRAME)
                if reply["type"] == "registered":
                    return Link(ws, agreed, SessionInfo.from_wire(reply), now)
                if reply["type"] == "error":
                    raise PresenceError.from_frame(reply)
                # Nothing else comes before registered; skip what a newer server might add.
    except PresenceError:
        await ws.close()  # the server closes after a fatal refusal; this completes it
        raise
    except ConnectionClosed as exc:
        code = exc.rcvd.code if exc.rcvd else 1006
        raise PresenceConnectionError(
            f"the server closed the connection before registering (code {code})",
            close_code=code,
            reason=exc.rcvd.reason if exc.rcvd else "",
        ) from exc
    except TimeoutError:
        ws.transport.abort()
        raise PresenceConnectionError(f"no reply to register within {timeout:g} s") from None
    except (RemoteProtocolError, ValueError) as exc:
        ws.transport.abort()
        raise PresenceConnectionError(f"the server sent a bad frame while registering: {exc}") from exc
    except BaseException:  # cancelled (close() during a reconnect), or a bug
        ws.transport.abort()
        raise
