"""The gateway role: this node's WebSocket sessions and their shared timers.

One heap of deadlines serves every session (register timeouts, idle
timeouts, token warnings and expiry), so an idle session owns no timer or
task of its own. Leases of all registered sessions are renewed in one batch.
"""

from __future__ import annotations

import asyncio
import collections
import heapq
import itertools
import weakref
from typing import Any, Callable

import structlog
from aiohttp import web

from protocol.addresses import new_sid
from protocol.forwarding import limit_key, parse_networks
from protocol.errors import CLOSE_SERVER_RESTART, CLOSE_SESSION_REPLACED, ErrorCode, RemoteProtocolError
from protocol.frames import JSON_CODEC, SUBPROTOCOLS, codec_for
from protocol.messages import Error, Reconnect
from protocol.session import SessionLimits

from ..accounts import AccountRegistry
from ..clock import Clock
from ..config import Config
from ..engines.ports import SessionKey
from ..http.admission import request_client_address
from ..http.errors import error_response
from ..mailbox import Mailbox
from ..tasks import TaskSet
from ..presence.service import PresenceService
from ..presence.subscriptions import SubscriptionHub
from .connection import Connection

log = structlog.get_logger(__name__)

TIMER_RESOLUTION = 0.25  # seconds; how late a timeout may fire at most
LEASE_RETRY = 1.0  # seconds; the next renewal after a failed one (the engine was away)
# A connection being closed whose close frame has not gone out this long after
# (its peer reads nothing, so the frame waits behind unread data) is cut off.
CLOSE_CUTOFF = 10.0
TOO_MANY_CONNECTIONS_RETRY = "10"  # seconds, Retry-After of a refused upgrade


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
        mailbox.on("place_call_refused", self._on_place_call_refused)
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
        # [deadline, seq, connection]: a connection's entry loses its connection
        # (None) when a later deadline supersedes it or the connection ends, so a
        # closed connection is not held (with its request, parser and buffers)
        # until its old idle deadline: a storm of short sessions kept tens of
        # thousands of them alive for a minute, and the GC walking them.
        self._deadlines: list[list[Any]] = []
        self._seq = itertools.count()
        self.accepting = True
        self._tasks = TaskSet("gateway")
        # Admission: counts by address and by account, not state per connection.
        self._trusted = parse_networks(config.server.trusted_proxies)
        self._per_address: dict[str, int] = {}
        self._per_account: dict[str, int] = {}
        self.refused_connections = 0
        # (deadline, connection) of connections being closed, in deadline order.
        # (weak: a connection that ended on its own is not kept for the cut-off).
        self._closing: collections.deque[tuple[float, weakref.ref[Connection]]] = collections.deque()

    def new_session_id(self) -> str:
        return new_sid("SE")

    # -- the WebSocket endpoint ----------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        # Counted before the upgrade, so a refused client costs no WebSocket.
        address = limit_key(request_client_address(request, self._trusted))
        limit = self.config.gateway.max_connections_per_address
        held = self._per_address.get(address, 0)
        if limit and held >= limit:
            self.refused_connections += 1
            if self.refused_connections & (self.refused_connections - 1) == 0:  # 1, 2, 4, ...: a flood does not flood the log
                log.warning("upgrades refused: too many connections from one address", address=address, limit=limit, refused=self.refused_connections)
            return error_response(
                ErrorCode.TOO_MANY_CONNECTIONS,
                f"this address holds {held} connections to this node; the limit is {limit}",
                headers={"Retry-After": TOO_MANY_CONNECTIONS_RETRY},
            )
        self._per_address[address] = held + 1
        try:
            return await self._serve(request)
        finally:
            left = self._per_address[address] - 1
            if left:
                self._per_address[address] = left
            else:
                del self._per_address[address]

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(
            protocols=SUBPROTOCOLS,
            # Frames up to twice the limit are read and answered with error
            # 10006; larger ones the transport refuses with close code 1009.
            max_msg_size=2 * self.limits.max_frame_bytes,
            autoping=True,
            heartbeat=None,
        )
        try:
            await ws.prepare(request)
        except ConnectionResetError:
            # The client left before the 101 went out (aiohttp's
            # ClientConnectionResetError is one): nothing to serve, and no error
            # of ours, so no error log a client could fill at will.
            log.debug("client left during the upgrade")
            return ws
        # No subprotocol offered (a hand-driven test client, say): JSON.
        codec = codec_for(ws.ws_protocol) or JSON_CODEC
        if not self.accepting:
            data = codec.encode(Error.of(RemoteProtocolError(ErrorCode.SERVER_SHUTTING_DOWN)).to_wire())
            await (ws.send_bytes(data) if isinstance(data, bytes) else ws.send_str(data))
            await ws.close(code=CLOSE_SERVER_RESTART, message=b"shutting down")
            return ws
        conn = Connection(self, ws, codec, self.clock.time(), request.transport)
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
            new.adopt(old)
            old.replaced = True
            self._count_session(old, -1)
            old.send_frame(Error.of(RemoteProtocolError(ErrorCode.SESSION_REPLACED)))
            old.session.closed()
            old.close_soon(CLOSE_SESSION_REPLACED, "session_replaced")

    def admit_session(self, account_sid: str, session_id: str) -> None:
        """Refuse (30005) a session past the account's limit on this node; taking
        over a session this node already holds adds none."""
        limit = self.config.gateway.max_sessions_per_account
        held = self._per_account.get(account_sid, 0)
        if limit and held >= limit and session_id not in self.sessions:
            raise RemoteProtocolError(
                ErrorCode.TOO_MANY_ACCOUNT_SESSIONS, f"this account holds {held} sessions on this node; the limit is {limit}"
            )

    def _count_session(self, conn: Connection, delta: int) -> None:
        assert conn.key is not None
        account = conn.key.account_sid
        held = self._per_account.get(account, 0) + delta
        if held > 0:
            self._per_account[account] = held
        else:
            self._per_account.pop(account, None)

    def attach(self, conn: Connection) -> None:
        assert conn.key is not None
        if self.sessions.get(conn.key.session_id) is not conn:
            self._count_session(conn, +1)
        self.sessions[conn.key.session_id] = conn

    def detach(self, conn: Connection) -> None:
        self.connections.discard(conn)
        self._unschedule(conn)
        if conn.key is not None and self.sessions.get(conn.key.session_id) is conn:
            del self.sessions[conn.key.session_id]
            self._count_session(conn, -1)

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

    def _on_place_call_refused(self, msg: dict[str, Any]) -> None:
        """A draining signaling node gave back a call one of our sessions placed:
        leave that node out and offer the call to another."""
        self.signaling_gone(msg["from_node"])
        conn = self.sessions.get(msg.get("session", ""))
        if conn is not None:
            self._tasks.spawn(conn.reoffer_call(msg))

    def calls_of(self, node_id: str) -> list[tuple[str, str]]:
        """(account, call sid) of the calls our sessions are in that ``node_id`` runs."""
        return [
            (c.key.account_sid, call)
            for c in self.sessions.values() if c.key is not None
            for call in c.live_calls if c.call_owners.get(call) == node_id
        ]

    def call_peers(self) -> set[str]:
        """The signaling nodes running calls this node's sessions are in."""
        return {c.call_owners[call] for c in self.sessions.values() for call in c.live_calls if call in c.call_owners}

    def peer_gone(self, node_id: str) -> int:
        """A signaling node died (peers.py): end its calls for our sessions."""
        return sum(conn.end_calls_of(node_id) for conn in list(self.sessions.values()))

    def local_keys(self) -> list[SessionKey]:
        return [c.key for c in self.sessions.values() if c.key is not None]

    def end_sessions_signed_by(self, key_sid: str) -> int:
        """An API key was revoked: end, now, every local session whose token it
        signed (20110, close 4003), rather than at their next frame, which an
        idle client may not send for minutes. Returns how many were ended."""
        ended = [c for c in self.sessions.values() if c.token is not None and c.token.key_sid == key_sid]
        for conn in ended:
            conn.key_revoked()
        return len(ended)

    # -- timers --------------------------------------------------------------------------

    def schedule(self, conn: Connection) -> None:
        deadline = conn.session.deadline()
        entry = conn.timer
        if deadline is None or (entry is not None and entry[0] == deadline):
            return
        if entry is not None:
            entry[2] = None  # superseded: the heap keeps the entry, not the connection
        conn.timer = entry = [deadline, next(self._seq), conn]
        heapq.heappush(self._deadlines, entry)

    def _unschedule(self, conn: Connection) -> None:
        if conn.timer is not None:
            conn.timer[2] = None
            conn.timer = None

    def cut_off_later(self, conn: Connection) -> None:
        """``conn`` is being closed: cut it off if it is still open CLOSE_CUTOFF from now."""
        self._closing.append((self.clock.time() + CLOSE_CUTOFF, weakref.ref(conn)))

    def run_due_timers(self) -> None:
        now = self.clock.time()
        closing = self._closing
        while closing and closing[0][0] <= now:
            _, ref = closing.popleft()
            conn = ref()
            if conn is not None and conn in self.connections:
                conn.abort()
        heap = self._deadlines
        while heap and heap[0][0] <= now:
            conn = heapq.heappop(heap)[2]
            if conn is None:
                continue  # superseded by a later schedule(), or the connection ended
            conn.timer = None
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
        for conn in list(self.connections):
            conn.abort()  # clients that read nothing, not even the close: shutdown does not wait on them
        await self._tasks.close()
