"""The gateway role: this node's WebSocket sessions and their shared timers.

One heap of deadlines serves every session (register timeouts, idle
timeouts, token warnings and expiry), so an idle session owns no timer or
task of its own. Leases of all registered sessions are renewed in one batch.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from typing import Any, Callable

import structlog
from aiohttp import web

from protocol.addresses import new_sid
from protocol.errors import CLOSE_SERVER_RESTART, CLOSE_SESSION_REPLACED, ErrorCode, RemoteProtocolError
from protocol.frames import JSON_CODEC, SUBPROTOCOLS, codec_for
from protocol.messages import Error, Reconnect
from protocol.session import SessionLimits

from ..accounts import AccountRegistry
from ..clock import Clock
from ..config import Config
from ..engines.ports import SessionKey
from ..mailbox import Mailbox
from ..tasks import TaskSet
from ..presence.service import PresenceService
from ..presence.subscriptions import SubscriptionHub
from .connection import Connection

log = structlog.get_logger(__name__)

TIMER_RESOLUTION = 0.25  # seconds; how late a timeout may fire at most
LEASE_RETRY = 1.0  # seconds; the next renewal after a failed one (the engine was away)


class Gateway:
    def __init__(
        self,
        *,
        config: Config,
        accounts: AccountRegistry,
        presence: PresenceService,
        hub: SubscriptionHub,
        clock: Clock,
        node_id: str,
        mailbox: Mailbox,
        signaling_node: Callable[[], str | None] = lambda: None,
        signaling_gone: Callable[[str], None] = lambda node_id: None,
    ) -> None:
        self.config = config
        self.accounts = accounts
        self.presence = presence
        self.hub = hub
        self.clock = clock
        self.node_id = node_id
        self.mailbox = mailbox
        self.signaling_node = signaling_node  # where client-placed calls go
        self.signaling_gone = signaling_gone  # a signaling node nobody answers at: pick another
        mailbox.on("deliver", self._on_deliver)
        g = config.gateway
        self.limits = SessionLimits(
            max_frame_bytes=g.max_frame_bytes,
            rate=g.rate,
            burst=g.burst,
            register_timeout=g.register_timeout,
            heartbeat=g.heartbeat,
            idle_timeout=g.idle_timeout,
            token_warning=g.token_warning,
            # Verification accepts a token up to clock_skew past its exp; the
            # session honours the same allowance rather than closing at once.
            clock_skew=config.tokens.clock_skew,
        )
        self.connections: set[Connection] = set()
        self.sessions: dict[str, Connection] = {}  # session id -> registered connection
        self._deadlines: list[tuple[float, int, Connection]] = []
        self._seq = itertools.count()
        self.accepting = True
        self._tasks = TaskSet("gateway")

    def new_session_id(self) -> str:
        return new_sid("SE")

    # -- the WebSocket endpoint ----------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(
            protocols=SUBPROTOCOLS,
            # Frames up to twice the limit are read and answered with error
            # 10006; larger ones the transport refuses with close code 1009.
            max_msg_size=2 * self.limits.max_frame_bytes,
            autoping=True,
            heartbeat=None,
        )
        await ws.prepare(request)
        # No subprotocol offered (a hand-driven test client, say): JSON.
        codec = codec_for(ws.ws_protocol) or JSON_CODEC
        if not self.accepting:
            data = codec.encode(Error.of(RemoteProtocolError(ErrorCode.SERVER_SHUTTING_DOWN)).to_wire())
            await (ws.send_bytes(data) if isinstance(data, bytes) else ws.send_str(data))
            await ws.close(code=CLOSE_SERVER_RESTART, message=b"shutting down")
            return ws
        conn = Connection(self, ws, codec, self.clock.time())
        self.connections.add(conn)
        self.schedule(conn)
        await conn.run()
        return ws

    # -- the session table ------------------------------------------------------------

    def claim(self, session_id: str, new: Connection) -> None:
        """A connection is resuming this session. The local connection that still
        holds it (a half-open socket, say) is told and closed, and leaves the
        session's presence alone when it ends; the calls and messages it knew
        of are the new connection's now."""
        old = self.sessions.pop(session_id, None)
        if old is not None:
            new.call_owners.update(old.call_owners)
            new.message_owners.update(old.message_owners)
            old.replaced = True
            old.send_frame(Error.of(RemoteProtocolError(ErrorCode.SESSION_REPLACED)))
            old.session.closed()
            old.close_soon(CLOSE_SESSION_REPLACED, "session_replaced")

    def attach(self, conn: Connection) -> None:
        assert conn.key is not None
        self.sessions[conn.key.session_id] = conn

    def detach(self, conn: Connection) -> None:
        self.connections.discard(conn)
        if conn.key is not None and self.sessions.get(conn.key.session_id) is conn:
            del self.sessions[conn.key.session_id]

    def _on_deliver(self, msg: dict[str, Any]) -> None:
        """A frame from another role (signaling) for one of our sessions."""
        frame = msg["frame"]
        conn = self.sessions.get(msg["session"])
        if conn is None:
            if frame.get("type") == "invite":
                # Gone from here (dropped, or resumed on another node): say so,
                # so the ringing call does not wait for it until its timeout.
                self._tasks.spawn(
                    self.mailbox.send(msg["from_node"], "call_event", event="undeliverable", call=frame["call"], session=msg["session"])
                )
            return
        conn.learn_owner(frame, msg["from_node"])
        conn.send_wire(frame)

    def local_keys(self) -> list[SessionKey]:
        return [c.key for c in self.sessions.values() if c.key is not None]

    # -- timers --------------------------------------------------------------------------

    def schedule(self, conn: Connection) -> None:
        deadline = conn.session.deadline()
        if deadline is None or deadline == conn.scheduled_at:
            return
        conn.scheduled_at = deadline
        heapq.heappush(self._deadlines, (deadline, next(self._seq), conn))

    def run_due_timers(self) -> None:
        now = self.clock.time()
        heap = self._deadlines
        while heap and heap[0][0] <= now:
            deadline, _, conn = heapq.heappop(heap)
            if conn.scheduled_at != deadline:
                continue  # superseded by a later schedule()
            conn.scheduled_at = None
            if conn not in self.connections:
                continue
            conn.on_timer(now)
            self.schedule(conn)  # idle deadlines move with every frame; re-arm

    async def timer_loop(self) -> None:
        while True:
            await self.clock.sleep(TIMER_RESOLUTION)
            try:
                self.run_due_timers()
            except Exception:
                log.exception("timer pass failed")

    async def lease_loop(self) -> None:
        """Renew every local session's lease, in one batch per round. After a
        failed round (the engine is away) the next comes sooner, and sessions
        the engine lost meanwhile are written again (see :meth:`renew_leases`)."""
        interval = self.presence.config.lease_ttl / 3
        wait = interval
        while True:
            await self.clock.sleep(wait)
            try:
                await self.renew_leases()
                wait = interval
            except Exception:
                log.warning("lease renewal failed; retrying soon", exc_info=True)
                wait = min(interval, LEASE_RETRY)

    async def renew_leases(self) -> int:
        """Renew, then re-assert the sessions the store no longer holds (a Redis
        restarted empty, or our sessions swept while we could not renew them):
        their clients are still connected here, so they are present. Returns how
        many were re-asserted."""
        lost = await self.presence.renew(self.local_keys())
        reasserted = 0
        for key in lost:
            conn = self.sessions.get(key.session_id)
            if conn is None or conn.key != key or conn.presence is None:
                continue  # ended meanwhile
            await self.presence.connect(conn.presence)
            reasserted += 1
        if reasserted:
            log.info("re-asserted sessions the engine had lost", count=reasserted)
        return reasserted

    # -- shutdown ---------------------------------------------------------------------------

    async def shutdown(self, grace: float) -> None:
        """Tell every client to reconnect, then close. Sessions linger through
        the grace period, so a client that reconnects elsewhere resumes them."""
        self.accepting = False
        for conn in list(self.connections):
            conn.send_frame(Reconnect(reason="server shutting down", retry_after=1.0))
            conn.session.closed()
            conn.close_soon(CLOSE_SERVER_RESTART, "server_restart")
        deadline = asyncio.get_running_loop().time() + grace
        while self.connections and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        await self._tasks.close()
