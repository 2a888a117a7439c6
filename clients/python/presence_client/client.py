"""PresenceClient: one app's live presence session, kept alive across drops.

The client registers presence over the gateway's WebSocket (see
``docs/protocol.md``), keeps the session alive with pings, renews its token
before it expires, and when the connection drops reconnects with jittered
backoff, resuming the same session so subscribers see no offline/online flap,
then re-subscribes and reports what changed while it was away.

Concurrency model: one *supervisor* task per client owns the connection's
life (wait for the end, decide, back off, reconnect). Per connection there is
a *reader* task (every server frame is handled there, in order) and a
*keepalive* task (pings and the idle watchdog), plus an optional token
*renewal timer*. Application calls (``set_presence``, ``subscribe`` ...) send a
frame and wait for the reply the reader matches by ``id``. ``close()`` ends
every one of these tasks.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import inspect
import itertools
import logging
from typing import Any, Awaitable, Callable, Iterable, Union

from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, WebSocketException

from protocol.errors import CLOSE_FRAME_TOO_LARGE, CLOSE_PROTOCOL_ERROR, CLOSE_SESSION_REPLACED, RemoteProtocolError
from protocol.frames import JSON_CODEC, MSGPACK_CODEC, codec_for
from protocol.messages import MAX_IDENTITIES_PER_REQUEST

from . import _validate
from ._link import Link, LinkLost
from .backoff import Backoff
from .clock import Clock, SystemClock
from .errors import (
    AUTH_CLOSE_CODES,
    NotConnectedError,
    PresenceConnectionError,
    PresenceError,
    RequestTimeoutError,
    TokenError,
)
from .models import Disconnect, Presence, PresenceUpdate, SessionInfo
from .stream import DEFAULT_MAX_PENDING, PresenceUpdateStream

log = logging.getLogger("presence_client")

TokenSource = Union[str, Callable[[], Awaitable[str]], Callable[[], str]]
UpdateCallback = Callable[[PresenceUpdate], Any]  # may return an awaitable

# Server frames can be larger than the server's limit on *client* frames: a
# snapshot of 100 identities with many sessions each, say.
MAX_INCOMING_FRAME = 16 * 1024 * 1024
# How long close() waits for the server to answer `bye` before dropping the socket.
CLOSE_TIMEOUT = 2.0
# Closes after which reconnecting would only repeat the failure: the server
# judged our frames broken, or another connection took the session over.
FINAL_CLOSE_CODES = frozenset({CLOSE_PROTOCOL_ERROR, CLOSE_FRAME_TOO_LARGE, CLOSE_SESSION_REPLACED})


class ClientState(str, enum.Enum):
    IDLE = "idle"  # created; connect() not called (or it failed)
    CONNECTING = "connecting"  # connect() in progress
    CONNECTED = "connected"  # registered; requests go out at once
    RECONNECTING = "reconnecting"  # lost; backing off or re-registering
    CLOSED = "closed"  # close() was called, or the client gave up for good


def _chunks(items: list[str], size: int) -> Iterable[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class PresenceClient:
    """A presence session with the server, kept alive across connection losses.

    ``token`` is an access token, or a callable (plain or async) returning
    one. Only with a callable can the client renew its token before expiry
    and recover from a refused token.

    ``clock`` drives the protocol timers (heartbeat, idle watchdog, token
    renewal, reconnect backoff); request and connect timeouts use real time.
    """

    def __init__(
        self,
        url: str,
        token: TokenSource,
        *,
        encoding: str = "json",
        status: str = "available",
        text: str = "",
        priority: int = 0,
        capabilities: Iterable[str] = ("voice", "messaging"),
        reconnect: bool = True,
        backoff: Backoff | None = None,
        request_timeout: float = 10.0,
        renew_before: float = 60.0,
        on_connect: Callable[[SessionInfo], Any] | None = None,
        on_disconnect: Callable[[Disconnect], Any] | None = None,
        on_error: Callable[[Exception], Any] | None = None,
        clock: Clock | None = None,
        websocket_options: dict[str, Any] | None = None,
    ) -> None:
        self._url = _validate.url(url)
        if isinstance(token, str):
            _validate.token(token)
        elif not callable(token):
            raise TypeError(f"token must be a string or a callable returning one, not {type(token).__name__}")
        self._token_source = token
        self._codec = MSGPACK_CODEC if _validate.encoding(encoding) == "msgpack" else JSON_CODEC
        # What this client wants to show; sent in every register, so a
        # reconnect restores it even if a change was made while disconnected.
        self._desired: dict[str, Any] = {
            "status": _validate.status(status),
            "text": _validate.text(text),
            "priority": _validate.priority(priority),
            "capabilities": list(_validate.capabilities(capabilities)),
        }
        if not isinstance(reconnect, bool):
            raise TypeError("reconnect must be True or False")
        self._reconnect_enabled = reconnect
        if backoff is not None and not isinstance(backoff, Backoff):
            raise TypeError("backoff must be a presence_client.Backoff")
        self._backoff = backoff or Backoff()
        self._request_timeout = _validate.seconds("request_timeout", request_timeout)
        self._renew_before = _validate.seconds("renew_before", renew_before, positive=False)
        for name, fn in (("on_connect", on_connect), ("on_disconnect", on_disconnect), ("on_error", on_error)):
            if fn is not None and not callable(fn):
                raise TypeError(f"{name} must be callable")
        self.on_connect = on_connect
        self.on_disconnect = on_disconnect
        self.on_error = on_error
        self._clock: Clock = clock or SystemClock()
        self._ws_options = dict(websocket_options or {})

        self._state = ClientState.IDLE
        self._closing = False
        self._close_error: PresenceError | None = None
        self._closed_event = asyncio.Event()
        self._state_waiters: list[asyncio.Future[None]] = []
        self._link: Link | None = None
        self._session: SessionInfo | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()  # renewals: cancelled at close
        self._callback_tasks: set[asyncio.Task[Any]] = set()  # async callbacks: given a moment at close
        self._ids = itertools.count(1)
        self._token_value: str | None = token if isinstance(token, str) else None
        self._token_expires: float | None = None
        self._token_fetched_at: float | None = None  # clock.monotonic() of the last token from the callable
        self._renewing = False
        self._subscriptions: dict[str, list[UpdateCallback]] = {}
        self._presences: dict[str, Presence] = {}
        self._streams: set[PresenceUpdateStream] = set()

    # -- properties -------------------------------------------------------------------

    @property
    def state(self) -> ClientState:
        return self._state

    @property
    def connected(self) -> bool:
        """True while registered on a live connection."""
        return self._state is ClientState.CONNECTED and self._link is not None and not self._link.ended

    @property
    def closed(self) -> bool:
        return self._state is ClientState.CLOSED

    @property
    def close_error(self) -> PresenceError | None:
        """Why the client stopped on its own (a refused token, a replaced
        session, reconnect disabled), or None."""
        return self._close_error

    @property
    def session(self) -> SessionInfo | None:
        """The current (or last) registered session."""
        return self._session

    @property
    def session_id(self) -> str | None:
        return self._session.session_id if self._session else None

    @property
    def identity(self) -> str | None:
        return self._session.identity if self._session else None

    @property
    def account_sid(self) -> str | None:
        return self._session.account_sid if self._session else None

    @property
    def token_expires(self) -> float | None:
        """The current token's expiry (epoch seconds, as the server reported it)."""
        return self._token_expires

    @property
    def subscriptions(self) -> tuple[str, ...]:
        return tuple(self._subscriptions)

    def presence_of(self, identity: str) -> Presence | None:
        """The last known presence of a subscribed identity (None: not subscribed
        or not known yet)."""
        return self._presences.get(identity)

    # -- lifecycle --------------------------------------------------------------------

    async def connect(self) -> SessionInfo:
        """Open the connection and register presence.

        Raises :class:`PresenceError` with the server's code when it refuses
        (a bad token: 201xx), :class:`PresenceConnectionError` when the server
        cannot be reached. One attempt: automatic reconnects start only after
        a first success.
        """
        if self._state is ClientState.CLOSED:
            raise NotConnectedError("this client is closed; create a new PresenceClient")
        if self._state is not ClientState.IDLE:
            raise RuntimeError(f"connect() was already called (state: {self._state.value})")
        self._set_state(ClientState.CONNECTING)
        try:
            token = await self._token_for_connect(refetch=False)
            link = await self._open_link(token, resume=None)
        except BaseException:
            self._set_state(ClientState.IDLE)
            raise
        if self._closing:  # close() was called while we connected
            link.abort("closed during connect")
            raise NotConnectedError("the client was closed while connecting")
        self._adopt(link)
        self._supervisor = asyncio.get_running_loop().create_task(self._supervise(link), name="presence-client-supervisor")
        self._set_state(ClientState.CONNECTED)
        self._call(self.on_connect, link.info)
        return link.info

    async def close(self) -> None:
        """Say ``bye`` (the server removes the session at once, no grace
        period) and stop every task of this client. Safe to call twice."""
        if self._closed_event.is_set():
            return
        if self._closing:
            await self._closed_event.wait()
            return
        self._closing = True
        self._notify_state()  # waiting requests fail now rather than at their timeout
        current = asyncio.current_task()
        link = self._link
        said_bye = False
        if link is not None and not link.ended:
            try:
                await asyncio.wait_for(link.send({"type": "bye"}), CLOSE_TIMEOUT)
                said_bye = True
            except (ConnectionClosed, TimeoutError, OSError):
                pass
        if self._supervisor is not None and self._supervisor is not current:
            if said_bye:
                # The server answers bye by closing; the supervisor sees the
                # end, reports it and returns. No answer: drop the socket.
                done, _ = await asyncio.wait({self._supervisor}, timeout=CLOSE_TIMEOUT)
                if not done and link is not None and not link.ended:
                    link.abort("the server did not answer bye")
                    await asyncio.wait({self._supervisor}, timeout=CLOSE_TIMEOUT)
            self._supervisor.cancel()  # backing off or mid-handshake: stop there
            await asyncio.gather(self._supervisor, return_exceptions=True)
        if self._link is not None:  # the supervisor may have made a newer one
            await self._stop_link_tasks(self._link, current)
        callbacks = [t for t in self._callback_tasks if t is not current]
        if callbacks:
            await asyncio.wait(callbacks, timeout=CLOSE_TIMEOUT)
        pending = [t for t in (*self._tasks, *self._callback_tasks) if t is not current and not t.done()]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        self._stop(None)
        self._closed_event.set()

    async def wait_closed(self) -> None:
        """Return once the client has stopped: closed, or given up (see :attr:`close_error`)."""
        while self._state is not ClientState.CLOSED:
            await self._wait_state_change(None)

    async def __aenter__(self) -> PresenceClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- requests ---------------------------------------------------------------------

    async def set_presence(
        self,
        status: str | None = None,
        *,
        text: str | None = None,
        priority: int | None = None,
        capabilities: Iterable[str] | None = None,
    ) -> None:
        """Change this session's presence (only the fields given).

        While reconnecting, waits up to ``request_timeout`` for the connection;
        the change is kept either way and sent with the next register.
        """
        fields: dict[str, Any] = {}
        if status is not None:
            fields["status"] = _validate.status(status)
        if text is not None:
            fields["text"] = _validate.text(text)
        if priority is not None:
            fields["priority"] = _validate.priority(priority)
        if capabilities is not None:
            fields["capabilities"] = list(_validate.capabilities(capabilities))
        if not fields:
            raise ValueError("set_presence() needs at least one of status, text, priority, capabilities")
        self._require_started()
        self._desired.update(fields)
        await self._request({"type": "presence", **fields})

    async def subscribe(self, *identities: str, callback: UpdateCallback | None = None) -> dict[str, Presence]:
        """Follow these identities' presence; returns their current presence.

        Updates then go to ``callback`` (plain or async; called in order, for
        these identities only) and to every :meth:`presence_updates` stream.
        Subscriptions survive reconnects.
        """
        wanted = _validate.identities(identities, what="subscribe")
        if callback is not None and not callable(callback):
            raise TypeError("callback must be callable")
        self._require_started()
        added = [i for i in wanted if i not in self._subscriptions]
        for identity in wanted:
            callbacks = self._subscriptions.setdefault(identity, [])
            if callback is not None and callback not in callbacks:
                callbacks.append(callback)
        snapshot: dict[str, Presence] = {}
        try:
            for chunk in _chunks(list(wanted), MAX_IDENTITIES_PER_REQUEST):
                snapshot.update(await self._request({"type": "subscribe", "identities": chunk}))
        except BaseException:
            # Refused (e.g. no grant for one of them): forget what this call
            # added, or every reconnect would ask for it again.
            for identity in added:
                self._subscriptions.pop(identity, None)
                self._presences.pop(identity, None)
            if callback is not None:
                for identity in wanted:
                    if identity in self._subscriptions and callback in self._subscriptions[identity]:
                        self._subscriptions[identity].remove(callback)
            raise
        return snapshot

    async def unsubscribe(self, *identities: str) -> None:
        """Stop following these identities (their callbacks are dropped too)."""
        wanted = _validate.identities(identities, what="unsubscribe")
        self._require_started()
        gone = [i for i in wanted if self._subscriptions.pop(i, None) is not None]
        for identity in gone:
            self._presences.pop(identity, None)
        link = self._link
        if not gone or not self.connected or link is None:
            return  # a connection made later will not subscribe to them at all
        try:
            for chunk in _chunks(gone, MAX_IDENTITIES_PER_REQUEST):
                await self._link_request(link, {"type": "unsubscribe", "identities": chunk})
        except LinkLost:
            pass  # same as above: the next connection does not have them

    async def ping(self) -> float:
        """Round trip to the server and back, in seconds."""
        self._require_started()
        loop = asyncio.get_running_loop()
        started = loop.time()
        await self._request({"type": "ping"})
        return loop.time() - started

    async def renew_token(self) -> None:
        """Get a new token from the token callable and hand it to the server
        now (normally automatic). Raises :class:`TokenError` on failure."""
        if isinstance(self._token_source, str):
            raise TypeError("renew_token() needs a token callable; this client was given a fixed token")
        self._require_started()
        await self._renew("explicit", raise_errors=True)

    def presence_updates(self, *identities: str, max_pending: int = DEFAULT_MAX_PENDING) -> PresenceUpdateStream:
        """An async iterator of presence updates (all subscriptions, or only
        these identities). It receives updates from the moment it is created
        and ends when it or the client is closed::

            async for update in client.presence_updates():
                print(update.identity, update.status)
        """
        only = frozenset(_validate.identities(identities, what="presence_updates")) if identities else None
        if isinstance(max_pending, bool) or not isinstance(max_pending, int) or max_pending < 1:
            raise ValueError("max_pending must be a positive integer")
        stream = PresenceUpdateStream(only, self._streams.discard, max_pending)
        if self._state is ClientState.CLOSED:
            stream._end()
        else:
            self._streams.add(stream)
        return stream

    # -- requests: plumbing ---------------------------------------------------------------

    def _require_started(self) -> None:
        if self._state is ClientState.IDLE:
            raise NotConnectedError("call connect() first")
        if self._state is ClientState.CLOSED or self._closing:
            raise self._closed_error()

    def _closed_error(self) -> NotConnectedError:
        err = NotConnectedError(
            "the client is closed" + (f": {self._close_error.message}" if self._close_error else "")
        )
        err.__cause__ = self._close_error
        return err

    async def _request(self, frame: dict[str, Any]) -> Any:
        """Send on the current connection and wait for the reply, within
        ``request_timeout`` overall. Only idempotent frames go through here: if
        the connection is lost first, the frame is sent again on the next."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._request_timeout
        while True:
            link = await self._wait_link(deadline)
            try:
                return await self._link_request(link, frame, deadline - loop.time())
            except LinkLost:
                continue  # _wait_link raises if the client will not reconnect

    async def _link_request(self, link: Link, frame: dict[str, Any], timeout: float | None = None) -> Any:
        rid = next(self._ids)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        link.pending[rid] = fut
        try:
            try:
                await link.send({**frame, "id": rid})
            except ConnectionClosed:
                raise LinkLost() from None
            return await asyncio.wait_for(fut, self._request_timeout if timeout is None else max(timeout, 0.0))
        except TimeoutError:
            raise RequestTimeoutError(f"no reply to {frame['type']!r} within {self._request_timeout:g} s") from None
        finally:
            link.pending.pop(rid, None)

    async def _wait_link(self, deadline: float) -> Link:
        loop = asyncio.get_running_loop()
        while True:
            self._require_started()
            link = self._link
            if self._state is ClientState.CONNECTED and link is not None and not link.ended:
                return link
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise RequestTimeoutError(f"not connected within {self._request_timeout:g} s (reconnecting)")
            await self._wait_state_change(remaining)

    async def _wait_state_change(self, timeout: float | None) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._state_waiters.append(fut)
        try:
            await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            pass
        finally:
            if fut in self._state_waiters:
                self._state_waiters.remove(fut)

    def _set_state(self, state: ClientState) -> None:
        self._state = state
        self._notify_state()

    def _notify_state(self) -> None:
        waiters, self._state_waiters = self._state_waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    # -- tokens -------------------------------------------------------------------------

    async def _fetch_token(self) -> str:
        source = self._token_source
        if isinstance(source, str):
            return source
        try:
            async with asyncio.timeout(self._request_timeout):
                value = source()
                if inspect.isawaitable(value):
                    value = await value
        except TimeoutError:
            raise TokenError(f"the token callable did not return within {self._request_timeout:g} s") from None
        except Exception as exc:
            raise TokenError(f"the token callable failed: {exc!r}") from exc
        try:
            checked = _validate.token(value)
        except (TypeError, ValueError) as exc:
            raise TokenError(f"the token callable returned a bad token: {exc}") from exc
        self._token_fetched_at = self._clock.monotonic()
        return checked

    async def _token_for_connect(self, *, refetch: bool) -> str:
        """The token to register with: the current one while it has more than
        ``renew_before`` left, else (or when ``refetch``) a new one."""
        if isinstance(self._token_source, str):
            return self._token_source
        near_expiry = self._token_expires is not None and self._token_expires - self._clock.time() <= self._renew_before
        if refetch or self._token_value is None or near_expiry:
            self._token_value = await self._fetch_token()
            self._token_expires = None  # known once the server has read it
        return self._token_value

    async def _renew(self, trigger: str, *, raise_errors: bool = False) -> None:
        if self._renewing:
            return  # one renewal at a time; a second trigger would only repeat it
        self._renewing = True
        old_expires = self._token_expires
        try:
            token = await self._fetch_token()
            try:
                reply = await self._request({"type": "update_token", "token": token})
            except PresenceError as exc:
                if exc.code is None:
                    raise TokenError(f"could not send the renewed token: {exc.message}") from exc
                raise TokenError(f"the server refused the renewed token: {exc.message}", exc.code) from exc
            expires = reply.get("expires")
            if isinstance(expires, (int, float)) and not isinstance(expires, bool):
                self._token_value = token
                self._token_expires = float(expires)
                if self._session is not None:
                    self._session = dataclasses.replace(self._session, expires=float(expires))
            self._drop_subscriptions(reply.get("unsubscribed"))
            log.debug("token renewed (%s), expires %s", trigger, self._token_expires)
            if old_expires is not None and self._token_expires is not None and self._token_expires <= old_expires:
                # Re-arming would renew again at once, forever; the server's
                # token_expiring warning will still come.
                raise TokenError("the token callable returned a token that expires no later than the current one")
            link = self._link
            if link is not None and not link.ended:
                self._arm_renewal(link)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            err = exc if isinstance(exc, TokenError) else TokenError(f"token renewal failed: {exc!r}")
            if err is not exc:
                err.__cause__ = exc
            if raise_errors:
                raise err
            if not self._closing:  # a renewal cut short by close() is no error
                self._report(err)
        finally:
            self._renewing = False

    def _arm_renewal(self, link: Link) -> None:
        if isinstance(self._token_source, str) or self._token_expires is None:
            return
        remaining = self._token_expires - self._clock.time()
        if remaining <= 0:
            # Our clock is ahead of the server's; a timer would fire at once,
            # again and again. The server's token_expiring warning still comes.
            log.warning("token already expired by this machine's clock; renewing on the server's warning only")
            return
        # renew_before ahead of expiry; a token living shorter than that is
        # renewed at half its remaining life, so renewals cannot spin.
        delay = remaining - self._renew_before if remaining > self._renew_before else remaining / 2
        self._schedule_renewal(link, delay)

    def _schedule_renewal(self, link: Link, delay: float) -> None:
        if link.renew_timer is not None:
            link.renew_timer.cancel()
        link.renew_due = self._clock.monotonic() + delay
        link.renew_timer = asyncio.get_running_loop().create_task(self._renew_after(link, delay), name="presence-client-renew")

    async def _renew_after(self, link: Link, delay: float) -> None:
        await self._clock.sleep(delay)
        link.renew_due = None
        # Not awaited here: the link (and this timer) may end while the
        # renewal waits for the next connection.
        self._spawn(self._renew("timer"))

    def _drop_subscriptions(self, identities: Any) -> None:
        if not isinstance(identities, list) or not identities:
            return
        for identity in identities:
            self._subscriptions.pop(identity, None)
            self._presences.pop(identity, None)
        log.info("the renewed token no longer grants %d subscriptions; dropped", len(identities))

    # -- connections ----------------------------------------------------------------------

    async def _open_link(self, token: str, resume: str | None) -> Link:
        """Connect and register; returns a registered link (not yet started)."""
        options: dict[str, Any] = {
            "subprotocols": [self._codec.subprotocol],
            "open_timeout": self._request_timeout,
            "ping_interval": None,  # the protocol's own ping frames keep the session alive
            "close_timeout": CLOSE_TIMEOUT,
            "max_size": MAX_INCOMING_FRAME,
        }
        options.update(self._ws_options)
        try:
            ws = await ws_connect(self._url, **options)
        except (OSError, TimeoutError, WebSocketException) as exc:
            raise PresenceConnectionError(f"could not connect to {self._url}: {exc}") from exc
        codec = codec_for(ws.subprotocol) or JSON_CODEC  # the server's default when none is agreed
        frame: dict[str, Any] = {"type": "register", "token": token, **self._desired, "id": next(self._ids)}
        if resume is not None:
            frame["resume"] = resume
        try:
            async with asyncio.timeout(self._request_timeout):
                await ws.send(codec.encode(frame))
                while True:
                    reply = codec.decode(await ws.recv(), max_bytes=MAX_INCOMING_FRAME)
                    if reply["type"] == "registered":
                        info = SessionInfo.from_wire(reply)
                        break
                    if reply["type"] == "error":
                        raise PresenceError.from_frame(reply)
                    # Nothing else is sent before registered; skip whatever a newer server might add.
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
            raise PresenceConnectionError(f"no reply to register within {self._request_timeout:g} s") from None
        except (RemoteProtocolError, ValueError) as exc:
            ws.transport.abort()
            raise PresenceConnectionError(f"the server sent a bad frame while registering: {exc}") from exc
        except BaseException:  # cancelled (close() during a reconnect), or a bug
            ws.transport.abort()
            raise
        return Link(ws, codec, info, self._clock.monotonic())

    def _adopt(self, link: Link) -> None:
        """Make a freshly registered link the current one and start its tasks."""
        loop = asyncio.get_running_loop()
        self._link = link
        self._session = link.info
        self._token_expires = link.info.expires
        link.reader = loop.create_task(self._read(link), name="presence-client-reader")
        if link.info.heartbeat > 0:
            link.keepalive = loop.create_task(self._keepalive(link), name="presence-client-keepalive")
        self._arm_renewal(link)
        log.info("registered session %s (resumed: %s)", link.info.session_id, link.info.resumed)

    async def _stop_link_tasks(self, link: Link, current: asyncio.Task[Any] | None = None) -> None:
        tasks = [t for t in (*link.timers(), link.reader) if t is not None and t is not current and not t.done()]
        for task in tasks:
            if task is not link.reader:
                task.cancel()
        if link.reader in tasks and not link.ended:
            link.abort("closing")
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _keepalive(self, link: Link) -> None:
        """Ping every ``heartbeat`` seconds; a connection silent for
        ``idle_timeout`` (not even a pong) is dead, whatever TCP believes."""
        clock = self._clock
        heartbeat, idle = link.info.heartbeat, link.info.idle_timeout
        next_ping = clock.monotonic() + heartbeat
        while not link.ended:
            now = clock.monotonic()
            if idle > 0 and now - link.last_rx >= idle:
                log.warning("no frame from the server for %g s; reconnecting", idle)
                link.abort(f"no frame from the server within the idle timeout ({idle:g} s)")
                return
            if now >= next_ping:
                try:
                    await link.send({"type": "ping"})
                except ConnectionClosed:
                    return
                next_ping = now + heartbeat
            wake = min(next_ping, link.last_rx + idle) if idle > 0 else next_ping
            await clock.sleep(max(wake - now, 0.0))

    async def _read(self, link: Link) -> None:
        try:
            async for data in link.ws:
                link.last_rx = self._clock.monotonic()
                try:
                    self._on_frame(link, data)
                except Exception as exc:  # our bug or a malformed frame; the session goes on
                    log.exception("could not handle a frame from the server")
                    self._report(PresenceError(None, f"could not handle a frame from the server: {exc!r}"))
        except ConnectionClosed:
            pass
        finally:
            link.ended = True
            link.fail_pending()
            self._notify_state()

    async def _supervise(self, link: Link) -> None:
        """Own the connection's life: when one ends, decide and reconnect."""
        current: Link | None = link
        while current is not None:
            assert current.reader is not None
            await asyncio.wait({current.reader})
            await self._stop_link_tasks(current)
            code, reason = current.close_code, current.close_reason
            if self._closing:
                self._call(self.on_disconnect, Disconnect(code, reason, False, current.error))
                return
            final = self._final_error(current, code, reason)
            log.info("connection lost (code %s: %s)%s", code, reason, "" if final else "; reconnecting")
            self._call(self.on_disconnect, Disconnect(code, reason, final is None, final or current.error))
            if final is not None:
                self._give_up(final)
                return
            self._set_state(ClientState.RECONNECTING)
            current = await self._reconnect(current)

    def _final_error(self, link: Link, code: int | None, reason: str) -> PresenceError | None:
        """None when the loss is worth a reconnect, else the error that ends the client."""
        error = link.error or PresenceConnectionError(
            f"connection closed (code {code}{': ' + reason if reason else ''})", close_code=code, reason=reason
        )
        if not self._reconnect_enabled:
            return error
        if code in FINAL_CLOSE_CODES:
            return error
        auth = code in AUTH_CLOSE_CODES or (link.error is not None and link.error.is_auth_refusal)
        if auth and isinstance(self._token_source, str):
            return error  # the same token would be refused again
        return None

    async def _reconnect(self, lost: Link) -> Link | None:
        """Back off and reconnect until registered again (or a final refusal)."""
        auth = lost.close_code in AUTH_CLOSE_CODES or (lost.error is not None and lost.error.is_auth_refusal)
        fresh_token_tried = False
        refetch = auth  # the old token was refused: one try with a new one
        delay = lost.retry_after + self._backoff.next_delay()
        while True:
            await self._clock.sleep(delay)
            delay = self._backoff.next_delay()
            try:
                token = await self._token_for_connect(refetch=refetch)
                fresh_token_tried = fresh_token_tried or refetch
                refetch = False
                link = await self._open_link(token, resume=self.session_id)
            except TokenError as exc:
                self._report(exc)  # the app's token source is failing: worth knowing
                continue
            except PresenceError as exc:
                if exc.is_auth_refusal:
                    if fresh_token_tried or isinstance(self._token_source, str):
                        self._give_up(exc)
                        return None
                    refetch = True
                elif exc.close_code in FINAL_CLOSE_CODES:
                    self._give_up(exc)
                    return None
                log.info("reconnect failed: %s; retrying in %.2f s", exc, delay)
                continue
            self._backoff.reset()
            self._adopt(link)
            await self._resubscribe(link)
            if self._closing:
                return link  # close() is saying bye on it; the loop above sees the end
            self._set_state(ClientState.CONNECTED)
            self._call(self.on_connect, link.info)
            return link

    async def _resubscribe(self, link: Link) -> None:
        """Subscribe the new session to everything the old one had. Each
        snapshot is compared with what was known: differences are delivered
        as updates (``resync=True``), so nothing that changed is missed."""
        sent = list(self._subscriptions)
        try:
            for chunk in _chunks(sent, MAX_IDENTITIES_PER_REQUEST):
                try:
                    await self._link_request(link, {"type": "subscribe", "identities": chunk})
                except PresenceError as exc:
                    self._report(exc)
            # Unsubscribed while we were re-subscribing: tell the server too.
            stale = [i for i in sent if i not in self._subscriptions]
            for chunk in _chunks(stale, MAX_IDENTITIES_PER_REQUEST):
                await self._link_request(link, {"type": "unsubscribe", "identities": chunk})
        except LinkLost:
            pass  # the supervisor sees the end and reconnects again

    def _give_up(self, error: PresenceError) -> None:
        log.warning("presence client stopped: %s", error)
        self._report(error)
        self._stop(error)

    def _stop(self, error: PresenceError | None) -> None:
        if error is not None and self._close_error is None:
            self._close_error = error
        for stream in list(self._streams):
            stream._end()
        self._streams.clear()
        self._set_state(ClientState.CLOSED)

    # -- frames from the server -------------------------------------------------------------

    def _on_frame(self, link: Link, data: str | bytes) -> None:
        try:
            frame = link.codec.decode(data, max_bytes=MAX_INCOMING_FRAME)
        except RemoteProtocolError as exc:
            self._report(PresenceError(None, f"undecodable frame from the server: {exc.message}"))
            return
        kind = frame["type"]
        rid = frame.get("id")
        if kind in ("ok", "pong", "token_updated"):
            self._resolve(link, rid, frame)
        elif kind == "subscribed":
            self._resolve(link, rid, self._apply_snapshot(frame))
        elif kind == "presence_update":
            self._apply_update(frame)
        elif kind == "token_expiring":
            self._on_token_expiring(frame)
        elif kind == "reconnect":
            retry_after = frame.get("retry_after")
            if isinstance(retry_after, (int, float)) and not isinstance(retry_after, bool):
                link.retry_after = min(max(float(retry_after), 0.0), self._backoff.maximum)
            log.info("the server asks to reconnect: %s", frame.get("reason"))
        elif kind == "error":
            error = PresenceError.from_frame(frame)
            if error.fatal:
                link.error = error  # the close that follows is explained by it
            fut = link.pending.get(rid) if rid is not None else None
            if fut is not None and not fut.done():
                fut.set_exception(error)
            else:
                self._report(error)
        else:
            log.debug("ignoring a %r frame", kind)  # from a newer server

    def _resolve(self, link: Link, rid: Any, value: Any) -> None:
        fut = link.pending.get(rid) if rid is not None else None
        if fut is not None and not fut.done():
            fut.set_result(value)

    def _parse_presence(self, obj: Any) -> Presence | None:
        try:
            return Presence.from_wire(obj)
        except (KeyError, TypeError, ValueError) as exc:
            self._report(PresenceError(None, f"malformed presence from the server: {exc!r}"))
            return None

    def _apply_snapshot(self, frame: dict[str, Any]) -> dict[str, Presence]:
        # Applied here in the reader, before any later frame: the updates
        # that follow a snapshot are judged against it.
        snapshot: dict[str, Presence] = {}
        presences = frame.get("presences")
        for obj in presences if isinstance(presences, list) else []:
            presence = self._parse_presence(obj)
            if presence is None:
                continue
            snapshot[presence.identity] = presence
            if presence.identity not in self._subscriptions:
                continue  # unsubscribed meanwhile
            previous = self._presences.get(presence.identity)
            # The snapshot is the new baseline, version included: a restarted
            # server counts versions from the start again.
            self._presences[presence.identity] = presence
            if previous is not None and not presence.same_state(previous):
                self._deliver(PresenceUpdate(presence, previous, resync=True))
        return snapshot

    def _apply_update(self, frame: dict[str, Any]) -> None:
        presence = self._parse_presence(frame)
        if presence is None or presence.identity not in self._subscriptions:
            return
        previous = self._presences.get(presence.identity)
        if previous is not None and presence.version <= previous.version:
            return  # older than (or the same as) what we have
        self._presences[presence.identity] = presence
        self._deliver(PresenceUpdate(presence, previous))

    def _deliver(self, update: PresenceUpdate) -> None:
        for stream in list(self._streams):
            stream._put(update)
        for callback in list(self._subscriptions.get(update.identity, ())):
            self._call(callback, update)

    def _on_token_expiring(self, frame: dict[str, Any]) -> None:
        if isinstance(self._token_source, str):
            log.warning("the token expires in %ss and cannot be renewed: give PresenceClient a token callable", frame.get("seconds_left"))
            return
        expires = frame.get("expires")
        if isinstance(expires, (int, float)) and self._token_expires is not None and expires < self._token_expires:
            return  # about a token already replaced
        seconds_left = frame.get("seconds_left")
        age = self._clock.monotonic() - self._token_fetched_at if self._token_fetched_at is not None else None
        if (
            isinstance(seconds_left, (int, float))
            and not isinstance(seconds_left, bool)
            and age is not None
            and age < seconds_left / 2
        ):
            # The token is new yet already "expiring": the callable hands out
            # tokens shorter-lived than the server's warning period, and the
            # server warns again right after each renewal. Renewing at once
            # would spin; renew at half the time left instead.
            link = self._link
            delay = seconds_left / 2 - age
            if link is not None and not link.ended and (link.renew_due is None or link.renew_due > self._clock.monotonic() + delay):
                self._schedule_renewal(link, delay)
            return
        self._spawn(self._renew("token_expiring"))

    # -- callbacks and tasks ----------------------------------------------------------------

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        self._callback_tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("presence client task failed", exc_info=task.exception())

    def _call(self, fn: Callable[..., Any] | None, *args: Any, report: bool = True) -> None:
        """Run an application callback (plain or async); its failure is
        logged and passed to on_error, never raised into the SDK's tasks."""
        if fn is None:
            return
        try:
            result = fn(*args)
        except Exception as exc:
            self._callback_failed(fn, exc, report)
            return
        if inspect.isawaitable(result):
            task = asyncio.ensure_future(self._await_callback(fn, result, report))
            self._callback_tasks.add(task)
            task.add_done_callback(self._task_done)

    async def _await_callback(self, fn: Callable[..., Any], result: Awaitable[Any], report: bool) -> None:
        try:
            await result
        except Exception as exc:
            self._callback_failed(fn, exc, report)

    def _callback_failed(self, fn: Callable[..., Any], exc: Exception, report: bool) -> None:
        log.error("callback %s failed", getattr(fn, "__qualname__", fn), exc_info=exc)
        if report:
            self._report(exc)

    def _report(self, error: Exception) -> None:
        if self.on_error is None:
            log.warning("presence client error: %s", error)
        else:
            self._call(self.on_error, error, report=False)
