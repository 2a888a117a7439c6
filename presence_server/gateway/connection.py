"""One client WebSocket's life: the thin I/O layer over protocol.session.

Reads frames, lets the sans-I/O :class:`ServerSession` judge them, runs the
accepted ones against the presence service, and writes replies through a
bounded outgoing queue. The queue's writer task exists only while there is
something to write, so an idle session costs no task beyond its reader.
"""

from __future__ import annotations

import asyncio
import collections
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final, cast

import structlog
from aiohttp import WSMsgType, web

from protocol import messages as m
from protocol.errors import CLOSE_NORMAL, CLOSE_TRY_AGAIN_LATER, ErrorCode, RemoteProtocolError
from protocol.frames import Codec
from protocol.presence import SessionPresence, Status
from protocol.session import FrameRefused, ServerSession, SessionState, TokenExpiring
from protocol.tokens import AccessToken, check_renewal, verify_token

from ..engines.ports import EngineUnavailable, SessionKey
from .wsframe import ws_frame

if TYPE_CHECKING:
    from .gateway import Gateway

log = structlog.get_logger(__name__)


class Connection:
    # No __slots__: CPython 3.11 keeps an instance's attributes inline already
    # (measured: 240 bytes with a __dict__, 192 with slots), not worth tests and
    # tools losing the ability to patch one connection's methods.

    def __init__(
        self, gateway: Gateway, ws: web.WebSocketResponse, codec: Codec, now: float, transport: asyncio.Transport | None = None
    ) -> None:
        self.gateway = gateway
        self.ws = ws
        # The socket under ``ws``: frames are written to it directly while nothing
        # waits in the queue (see _queue); None writes everything through aiohttp.
        self._transport = transport
        self.codec = codec
        self.session = ServerSession(codec, gateway.limits, now)
        self.token: AccessToken | None = None
        self.key: SessionKey | None = None
        # This session's presence as last written: what the gateway writes again
        # if the engine loses it (an outage), see Gateway.lease_loop.
        self.presence: SessionPresence | None = None
        self.watched: set[str] = _NOTHING_WATCHED
        self.timer: list[Any] | None = None  # its entry in the gateway's deadline heap
        self.replaced = False  # another connection resumed our session: leave presence alone
        self._graceful = False  # ended with bye: no grace period
        # Frames waiting for a slow reader, and the task writing them: both exist
        # only while a client is not keeping up (an empty deque is 600 bytes).
        self._out: collections.deque[str | bytes] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._close_after_flush: tuple[int, str] | None = None
        # Which signaling node owns each call / awaits each ack this session
        # knows of: learnt from the frames delivered to it, bounded.
        self.call_owners: collections.OrderedDict[str, str] = _NO_OWNERS
        self.message_owners: collections.OrderedDict[str, str] = _NO_OWNERS
        # The calls this session is in now, and its part in each (caller, ringing,
        # answered): what it is told if the call's signaling node dies (end_calls_of).
        self.live_calls: collections.OrderedDict[str, str] = _NO_OWNERS

    @property
    def log(self) -> Any:
        """The module's logger with this session's context, bound when a line is
        logged: a bound logger kept by every connection was ~370 bytes of each
        idle session."""
        key = self.key
        if key is None:
            return log
        return log.bind(account_sid=key.account_sid, session_id=key.session_id, identity=key.identity)

    # -- reading ----------------------------------------------------------------

    async def run(self) -> None:
        try:
            async for msg in self.ws:
                if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                    await self._on_frame(msg.data)
                    if self.session.state is SessionState.CLOSED:
                        break
                elif msg.type == WSMsgType.ERROR:
                    break
        finally:
            await self._ended()

    async def _on_frame(self, data: str | bytes) -> None:
        now = self.gateway.clock.time()
        result = self.session.receive(data, now)
        if isinstance(result, FrameRefused):
            self._refuse(result.error, result.request_id)
            return
        frame = result.frame
        handler = _HANDLERS[type(frame)]
        try:
            if self.token is not None:
                self._check_token_still_good()
            await handler(self, frame)
        except RemoteProtocolError as exc:
            self._refuse(exc, frame.id)
        except EngineUnavailable:
            self._refuse(RemoteProtocolError(ErrorCode.ENGINE_UNAVAILABLE), frame.id)
        except Exception:
            self.log.exception("frame handler failed", frame_type=frame.TYPE)
            self._refuse(RemoteProtocolError(ErrorCode.INTERNAL), frame.id)

    def _refuse(self, exc: RemoteProtocolError, request_id: m.RequestId) -> None:
        self.send_frame(m.Error.of(exc, request_id))
        if exc.error.fatal:
            self.session.closed()
            assert exc.error.close_code is not None
            self.close_soon(exc.error.close_code, exc.error.name.lower())

    def _check_token_still_good(self) -> None:
        # Permissions are re-checked on every request, not only at register: a
        # revocation this node applied while the frame was in flight still counts.
        assert self.token is not None
        if not self.gateway.accounts.key_is_live(self.token.key_sid):
            raise RemoteProtocolError(ErrorCode.TOKEN_KEY_REVOKED, "the key that signed this session's token was revoked")

    def key_revoked(self) -> None:
        """The key that signed this session's token was revoked: end the session now."""
        self._refuse(RemoteProtocolError(ErrorCode.TOKEN_KEY_REVOKED, "the key that signed this session's token was revoked"), None)

    def _verify(self, token: str) -> AccessToken:
        cfg = self.gateway.config.tokens
        return verify_token(
            token, self.gateway.accounts.signing_key, self.gateway.clock.time(), leeway=cfg.clock_skew, max_ttl=cfg.max_ttl
        )

    # -- frame handlers ---------------------------------------------------------------

    @staticmethod
    def _check_capabilities(token: AccessToken, capabilities: tuple[str, ...] | None) -> None:
        # Declaring 'voice' makes a session ringable, which is what the
        # incoming-voice grant is for.
        if capabilities and "voice" in capabilities and not token.grants.voice_incoming:
            raise RemoteProtocolError(ErrorCode.GRANT_MISSING, "the 'voice' capability needs grants.voice.incoming.allow")

    async def _register(self, frame: m.Register) -> None:
        token = self._verify(frame.token)
        if not token.grants.can_register_presence():
            raise RemoteProtocolError(
                ErrorCode.GRANT_MISSING_FATAL, "registering presence needs grants.presence.publish or grants.voice.incoming.allow"
            )
        self._check_capabilities(token, frame.capabilities)
        gw = self.gateway
        account, identity = token.account_sid, token.identity
        now = gw.clock.time()
        resumed = None
        if frame.resume is not None:
            resumed = await gw.presence.get(SessionKey(account, identity, frame.resume))
        if resumed is None:
            (snap,) = await gw.presence.query(account, [identity])
            if len(snap.presence.sessions) >= gw.config.gateway.max_sessions_per_identity:
                raise RemoteProtocolError(ErrorCode.TOO_MANY_SESSIONS)
            base = SessionPresence(
                session_id=gw.new_session_id(), account_sid=account, identity=identity, node_id=gw.node_id, connected_at=now
            )
        else:
            base = resumed
        session = SessionPresence(
            session_id=base.session_id,
            account_sid=account,
            identity=identity,
            node_id=gw.node_id,
            status=frame.status or (base.status if resumed else Status.AVAILABLE),
            text=frame.text if frame.text is not None else base.text,
            priority=frame.priority if frame.priority is not None else base.priority,
            capabilities=frame.capabilities if frame.capabilities is not None else base.capabilities,
            connected_at=base.connected_at,
            last_activity=now,
        )
        gw.admit_session(account, session.session_id)
        # Claim before the store write: a local connection that held the
        # resumed session must not mark it lingering while we write.
        gw.claim(session.session_id, self)
        await gw.presence.connect(session)
        self.presence = session
        self.token = token.for_session()
        self.key = SessionKey(account, identity, session.session_id)
        gw.attach(self)
        if not gw.accounts.key_is_live(token.key_sid):
            # Revoked while we wrote presence (after verify, before attach): the
            # revocation's sweep of the session table could not see us yet.
            raise RemoteProtocolError(ErrorCode.TOKEN_KEY_REVOKED, f"API key {token.key_sid} was revoked")
        self.session.registered(token.expires)
        gw.schedule(self)
        limits = gw.limits
        self.send_frame(
            m.Registered(
                id=frame.id,
                session=session.session_id,
                account=account,
                identity=identity,
                heartbeat=limits.heartbeat,
                idle_timeout=limits.idle_timeout,
                expires=token.expires,
                resumed=resumed is not None,
                max_frame_bytes=limits.max_frame_bytes,
            )
        )
        self.log.info("session registered", resumed=resumed is not None)

    async def _presence(self, frame: m.SetPresence) -> None:
        assert self.key is not None and self.token is not None
        self._check_capabilities(self.token, frame.capabilities)
        updated = await self.gateway.presence.change(
            self.key, status=frame.status, text=frame.text, priority=frame.priority, capabilities=frame.capabilities
        )
        if updated is None:
            # Our session vanished from the store (swept during an engine outage):
            # say so rather than pretend the change took.
            raise RemoteProtocolError(ErrorCode.ENGINE_UNAVAILABLE, "this session's presence was lost; reconnect")
        self.presence = updated
        self.send_frame(m.Ok(id=frame.id))

    async def _subscribe(self, frame: m.Subscribe) -> None:
        assert self.token is not None
        grants = self.token.grants
        refused = [i for i in frame.identities if not grants.can_subscribe(i)]
        if refused:
            raise RemoteProtocolError(ErrorCode.GRANT_MISSING, f"the token does not grant subscribing to {refused[0]!r}")
        new = [i for i in frame.identities if i not in self.watched]
        if len(self.watched) + len(new) > self.gateway.config.gateway.max_subscriptions:
            raise RemoteProtocolError(
                ErrorCode.TOO_MANY_SUBSCRIPTIONS, f"at most {self.gateway.config.gateway.max_subscriptions} per session"
            )
        account = self.token.account_sid
        hub = self.gateway.hub
        await hub.watch(self, account, frame.identities)
        if self.watched is _NOTHING_WATCHED:
            self.watched = set()
        self.watched.update(frame.identities)
        try:
            snapshot = await self.gateway.presence.query(account, frame.identities)
        except BaseException:
            await hub.unwatch(self, account, tuple(new))
            self.watched.difference_update(new)
            raise
        self.send_frame(m.Subscribed(id=frame.id, presences=[p.to_wire() for p in snapshot]))
        hub.snapshot_sent(self, account, {p.presence.identity: p.version for p in snapshot})

    async def _unsubscribe(self, frame: m.Unsubscribe) -> None:
        assert self.token is not None
        gone = tuple(i for i in frame.identities if i in self.watched)
        if gone:
            self.watched.difference_update(gone)
        await self.gateway.hub.unwatch(self, self.token.account_sid, gone)
        self.send_frame(m.Ok(id=frame.id))

    async def _ping(self, frame: m.Ping) -> None:
        self.send_frame(m.Pong(id=frame.id))

    async def _update_token(self, frame: m.UpdateToken) -> None:
        assert self.token is not None
        renewed = self._verify(frame.token)
        check_renewal(self.token, renewed)
        if not renewed.grants.can_register_presence():
            raise RemoteProtocolError(ErrorCode.GRANT_MISSING_FATAL, "the renewed token no longer grants presence registration")
        # A narrower token narrows the subscriptions too.
        dropped = tuple(sorted(i for i in self.watched if not renewed.grants.can_subscribe(i)))
        if dropped:
            self.watched.difference_update(dropped)
            await self.gateway.hub.unwatch(self, renewed.account_sid, dropped)
        self.token = renewed.for_session()
        self.session.token_renewed(renewed.expires)
        self.gateway.schedule(self)
        self.send_frame(m.TokenUpdated(id=frame.id, expires=renewed.expires, unsubscribed=list(dropped) or None))

    # -- calls and messages: forwarded to the signaling node that owns them ----------------

    def learn_owner(self, frame: dict[str, Any], node_id: str) -> None:
        """Remember which node sent a call or message frame, so this session's
        answers about it go back there."""
        kind = frame.get("type")
        if kind in ("invite", "call_created") and isinstance(frame.get("call"), str):
            self.call_owners = _remember(self.call_owners, frame["call"], node_id)
            self.live_calls = _remember(self.live_calls, frame["call"], "caller" if kind == "call_created" else "ringing")
        elif kind == "message" and isinstance(frame.get("sid"), str):
            self.message_owners = _remember(self.message_owners, frame["sid"], node_id)
        elif kind in ("cancel", "hangup", "call_progress") and frame.get("call") in self.live_calls:
            # Over for this session: a cancel, the caller's completed call, or a
            # hangup to a callee (to the caller it ends the dialled leg only).
            role = self.live_calls[frame["call"]]
            if kind == "cancel" or (kind == "hangup" and role != "caller") or frame.get("status") == "completed":
                del self.live_calls[frame["call"]]

    def adopt(self, old: Connection) -> None:
        """This connection resumes ``old``'s session: the calls and messages it
        knew of, and which node owns each, are this one's now."""
        self.call_owners = _merged(self.call_owners, old.call_owners)
        self.message_owners = _merged(self.message_owners, old.message_owners)
        self.live_calls = _merged(self.live_calls, old.live_calls)

    def end_calls_of(self, node_id: str) -> int:
        """The signaling node running these calls died: nobody will tell this
        session they ended, so say it here (reason ``signaling_lost``), each the
        way a call in that state ends. Returns how many ended."""
        ended = [(call, role) for call, role in self.live_calls.items() if self.call_owners.get(call) == node_id]
        for call, role in ended:
            del self.live_calls[call]
            if role == "caller":
                self.send_frame(m.CallProgress(call=call, status="completed", reason="signaling_lost"))
            elif role == "ringing":
                self.send_frame(m.Cancel(call=call, reason="signaling_lost"))
            else:
                self.send_frame(m.HangupNotice(call=call, reason="signaling_lost"))
        return len(ended)

    def _identity_fields(self) -> dict[str, Any]:
        assert self.key is not None
        return {"session": self.key.session_id, "account": self.key.account_sid, "identity": self.key.identity}

    async def _place_call(self, frame: m.PlaceCall) -> None:
        assert self.token is not None and self.key is not None
        app = self.token.grants.voice_outgoing_application_sid
        if app is None:
            raise RemoteProtocolError(ErrorCode.GRANT_MISSING, "placing calls needs grants.voice.outgoing.application_sid")
        session = await self.gateway.presence.get(self.key)
        call = dict(
            to=frame.to, params=frame.params, application_sid=app, request_id=frame.id,
            capabilities=list(session.capabilities) if session else [], **self._identity_fields(),
        )
        await self.offer_call(call, offers=0)

    async def offer_call(self, call: dict[str, Any], offers: int) -> None:
        """Hand a placed call to a signaling node; ``offers`` made already (a
        node that refused it while draining sends it back: reoffer_call)."""
        while offers < _SIGNALING_TRIES:
            node = self.gateway.signaling_node()
            if node is None:
                break
            offers += 1
            # reoffer: this gateway takes the call back from a draining node.
            if await self.gateway.mailbox.send(node, "place_call", **call, reoffer=True, offers=offers):
                return
            # Nobody listens at that node's address: it died after the registry last
            # listed it (a dead node stays listed for up to three heartbeats).
            self.log.warning("signaling node gone; trying another", node_id=node)
            self.gateway.signaling_gone(node)
        raise RemoteProtocolError(ErrorCode.ENGINE_UNAVAILABLE, "no signaling node is available")

    async def reoffer_call(self, refused: dict[str, Any]) -> None:
        """A signaling node refused our call because it is draining: offer it to another."""
        call = {k: v for k, v in refused.items() if k not in ("kind", "from_node", "reoffer", "offers")}
        try:
            await self.offer_call(call, offers=int(refused.get("offers", _SIGNALING_TRIES)))
        except RemoteProtocolError as exc:
            self._refuse(exc, refused.get("request_id"))
        except EngineUnavailable:
            self._refuse(RemoteProtocolError(ErrorCode.ENGINE_UNAVAILABLE), refused.get("request_id"))

    async def _call_event(self, frame: m.CallFrame) -> None:
        owner = self.call_owners.get(frame.call)
        if owner is None:
            # Never invited to it, or another account's: the same answer either way.
            raise RemoteProtocolError(ErrorCode.CALL_NOT_FOUND)
        extra: dict[str, Any] = {}
        if isinstance(frame, m.Signal):
            extra["payload"] = frame.payload
        elif isinstance(frame, m.Reject):
            extra["reason"] = frame.reason
        reached = await self.gateway.mailbox.send(
            owner, "call_event", event=frame.TYPE, call=frame.call, request_id=frame.id, **extra, **self._identity_fields()
        )
        role = self.live_calls.get(frame.call)
        if reached and role is not None:
            if isinstance(frame, m.Accept) and role == "ringing":
                self.live_calls[frame.call] = "answered"
            elif isinstance(frame, m.Reject) or (isinstance(frame, m.Hangup) and role != "caller"):
                del self.live_calls[frame.call]
        if not reached:
            # Nobody listens at the address of the signaling node that runs the call:
            # it is gone, and the call with it. (The owner is kept: should the node
            # only have been reconnecting to Redis, the next frame reaches it.)
            raise RemoteProtocolError(ErrorCode.CALL_NOT_FOUND, "the call's signaling node is gone")

    async def _ack(self, frame: m.Ack) -> None:
        owner = self.message_owners.get(frame.sid)
        if owner is None:
            raise RemoteProtocolError(ErrorCode.MESSAGE_NOT_FOUND)
        await self.gateway.mailbox.send(owner, "ack", sid=frame.sid, read=frame.read, **self._identity_fields())
        if frame.id is not None:
            self.send_frame(m.Ok(id=frame.id))

    async def _bye(self, frame: m.Bye) -> None:
        self._graceful = True
        self.close_soon(CLOSE_NORMAL, "bye")

    # -- timers -------------------------------------------------------------------

    def on_timer(self, now: float) -> None:
        event = self.session.tick(now)
        if isinstance(event, FrameRefused):
            self._refuse(event.error, None)
        elif isinstance(event, TokenExpiring):
            self.send_frame(m.TokenExpiring(expires=event.expires, seconds_left=event.seconds_left))

    # -- writing --------------------------------------------------------------------

    def send_frame(self, frame: m.ServerFrame, cache: dict[str, Any] | None = None) -> None:
        """Send a frame. ``cache`` shares one encoding, and one WebSocket frame,
        among many recipients (a presence change's subscribers)."""
        if cache is None:
            self.send_wire(frame.to_wire())
            return
        encoded = cache.get(self.codec.subprotocol)
        if encoded is None:
            data = self.codec.encode(frame.to_wire())
            encoded = cache[self.codec.subprotocol] = (data, ws_frame(data))
        self._queue(*encoded)

    def send_wire(self, obj: dict[str, Any]) -> None:
        """Queue a frame given as its wire object (as another node sent it)."""
        self._queue(self.codec.encode(obj))

    def _queue(self, data: str | bytes, framed: bytes | None = None) -> None:
        if self.ws.closed or self._close_after_flush is not None:
            return
        out = self._out
        if not out and (self._writer is None or self._writer.done()):
            transport = self._transport
            if transport is not None and not transport.is_closing() and not transport.get_write_buffer_size():
                # Nothing queued, nothing being written, the socket keeping up:
                # the frame goes out now, with no task and no coroutine. (Under
                # permessage-deflate it goes uncompressed, which RFC 7692 allows.)
                transport.write(framed if framed is not None else ws_frame(data))
                return
        if out is None:
            out = self._out = collections.deque()
        if len(out) >= self.gateway.config.gateway.max_pending_frames:
            # A client that does not read its frames would make us hold them
            # without bound; it is closed instead, and will resync on reconnect.
            self.log.warning("closing a session that does not read", pending=len(out))
            out.clear()
            self.session.closed()
            self.close_soon(CLOSE_TRY_AGAIN_LATER, "slow_consumer")
            return
        out.append(data)
        self._ensure_writer()

    def close_soon(self, code: int, reason: str) -> None:
        """Close after the queued frames are written."""
        if self._close_after_flush is None:
            self._close_after_flush = (code, reason)
            # A peer that reads nothing never takes the close frame queued behind
            # its unread data: the gateway cuts it off after a while instead.
            self.gateway.cut_off_later(self)
        self._ensure_writer()

    def abort(self) -> None:
        """Cut the connection off (TCP reset), dropping whatever is unsent."""
        self.log.warning("cutting off a connection that did not take its close frame")
        if self._writer is not None:
            self._writer.cancel()
        # aiohttp has no public abort for a WebSocket; the request's transport is the socket.
        transport = self._transport
        if transport is None and self.ws._req is not None:
            transport = self.ws._req.transport
        if transport is not None:
            transport.abort()

    def _ensure_writer(self) -> None:
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._write())

    async def _write(self) -> None:
        ws = self.ws
        try:
            while self._out:
                data = self._out.popleft()
                if isinstance(data, str):
                    await ws.send_str(data)
                else:
                    await ws.send_bytes(data)
            # Caught up: the queue goes, and frames go straight out again.
            self._out = None
            if self._close_after_flush is not None and not ws.closed:
                code, reason = self._close_after_flush
                await ws.close(code=code, message=reason.encode())
        except (ConnectionError, RuntimeError, asyncio.CancelledError):
            self._out = None  # the peer is gone; the reader sees the end
        finally:
            # A finished task is ~650 bytes a session would otherwise keep.
            if self._writer is asyncio.current_task():
                self._writer = None

    # -- the end ------------------------------------------------------------------------

    async def _ended(self) -> None:
        self.session.closed()
        gw = self.gateway
        gw.detach(self)
        if self.token is not None and self.watched:
            await gw.hub.unwatch(self, self.token.account_sid, tuple(self.watched))
        if self.key is not None and not self.replaced:
            # A session that drops mid-call ends its calls for the other party.
            for call, owner in self.call_owners.items():
                try:
                    await gw.mailbox.send(owner, "call_event", event="hangup", call=call, reason="connection_lost", **self._identity_fields())
                except EngineUnavailable:
                    self.log.warning("could not tell a call's node that its leg dropped", call_sid=call)
        if self.key is not None and not self.replaced:
            try:
                if self._graceful:
                    await gw.presence.leave(self.key)
                else:
                    await gw.presence.drop(self.key)
            except EngineUnavailable:
                # The lease will expire on its own; nothing else to do.
                self.log.warning("could not record the end of a session")
        if self._writer is not None and not self._writer.done():
            await asyncio.wait([self._writer], timeout=1.0)
        if not self.ws.closed:
            await self.ws.close()
        _drop_tracebacks(self.ws.exception())
        self.log.info("session ended", graceful=self._graceful)


def _drop_tracebacks(exc: BaseException | None) -> None:
    """aiohttp keeps the exception that closing met (a dead transport) on the
    response; its traceback holds close()'s frame, whose ``self`` is the
    response: a reference cycle that kept every dropped connection (transport,
    buffers, request) until a full collection, which the soak saw as memory
    climbing. Without the tracebacks (of the chained exceptions too),
    reference counting frees the connection at once."""
    pending = [exc]
    seen: set[int] = set()
    while pending:
        e = pending.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        e.__traceback__ = None
        pending += [e.__context__, e.__cause__]


_HANDLERS: dict[type, Any] = {
    m.Register: Connection._register,
    m.SetPresence: Connection._presence,
    m.Subscribe: Connection._subscribe,
    m.Unsubscribe: Connection._unsubscribe,
    m.Ping: Connection._ping,
    m.UpdateToken: Connection._update_token,
    m.Bye: Connection._bye,
    m.PlaceCall: Connection._place_call,
    m.Ringing: Connection._call_event,
    m.Accept: Connection._call_event,
    m.Reject: Connection._call_event,
    m.Hangup: Connection._call_event,
    m.Signal: Connection._call_event,
    m.Ack: Connection._ack,
}

_MAX_REMEMBERED = 256
_SIGNALING_TRIES = 3  # signaling nodes a client's call is offered to before it is refused (10016)


# Shared, read-only empties: a connection gets its own set or dict when it first
# has something to put in it, which most never do (~0.6 kB of each idle
# session). Writing to them fails (TypeError, AttributeError), never shares state.
_NOTHING_WATCHED: Final = cast("set[str]", frozenset())
_NO_OWNERS: Final = cast("collections.OrderedDict[str, str]", MappingProxyType({}))


def _remember(owners: collections.OrderedDict[str, str], key: str, node_id: str) -> collections.OrderedDict[str, str]:
    """``owners`` with key -> node_id newest (a new dict in place of the shared empty one)."""
    if owners is _NO_OWNERS:
        owners = collections.OrderedDict()
    owners[key] = node_id
    owners.move_to_end(key)
    while len(owners) > _MAX_REMEMBERED:
        owners.popitem(last=False)
    return owners


def _merged(mine: collections.OrderedDict[str, str], theirs: collections.OrderedDict[str, str]) -> collections.OrderedDict[str, str]:
    if not theirs:
        return mine
    merged = collections.OrderedDict(mine)
    merged.update(theirs)
    return merged
