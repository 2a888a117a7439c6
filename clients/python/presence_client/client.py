"""PresenceClient: one app's live presence session, kept alive across drops.

The client registers presence over the gateway's WebSocket (see
``docs/protocol.md``), keeps the session alive with pings, renews its token
before it expires, and when the connection drops reconnects with jittered
backoff, resuming the same session so subscribers see no offline/online flap,
then re-subscribes and reports what changed while it was away.

It also places and answers calls (:class:`~presence_client.calls.Call`) and
receives in-app messages (:class:`~presence_client.models.Message`).

This module is the public API; the machinery is in ``_core.py``.
"""

from __future__ import annotations

import asyncio
from ssl import SSLContext
from typing import Any, Callable, Iterable, Mapping

from websockets.exceptions import ConnectionClosed

from protocol.frames import JSON_CODEC, MSGPACK_CODEC
from protocol.messages import MAX_IDENTITIES_PER_REQUEST

from . import _validate
from ._book import UpdateCallback
from ._core import ClientCore, ClientState, _chunks
from ._link import CLOSE_TIMEOUT, LinkLost
from ._tokens import TokenKeeper, TokenSource
from .backoff import Backoff
from .clock import Clock, SystemClock
from .calls import CLIENT_CLOSED, Call, SignalCallback, StateCallback
from .errors import NotConnectedError, PresenceError
from .models import Disconnect, Message, Presence, SessionInfo
from .stream import DEFAULT_MAX_PENDING, ItemStream, PresenceUpdateStream

__all__ = ["ClientState", "PresenceClient", "TokenSource", "UpdateCallback"]


class PresenceClient(ClientCore):
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
        capabilities: Iterable[str] | None = None,
        reconnect: bool = True,
        backoff: Backoff | None = None,
        request_timeout: float = 10.0,
        renew_before: float = 60.0,
        on_connect: Callable[[SessionInfo], Any] | None = None,
        on_disconnect: Callable[[Disconnect], Any] | None = None,
        on_error: Callable[[Exception], Any] | None = None,
        on_invite: Callable[[Call], Any] | None = None,
        on_message: Callable[[Message], Any] | None = None,
        clock: Clock | None = None,
        websocket_options: Mapping[str, Any] | None = None,
        ssl: SSLContext | None = None,
    ) -> None:
        self._url = _validate.url(url)
        self._codec = MSGPACK_CODEC if _validate.encoding(encoding) == "msgpack" else JSON_CODEC
        # What this client wants to show; sent in every register, so a
        # reconnect restores it even if a change was made while disconnected.
        self._desired = {
            "status": _validate.status(status),
            "text": _validate.text(text),
            "priority": _validate.priority(priority),
        }
        if capabilities is not None:
            self._desired["capabilities"] = list(_validate.capabilities(capabilities))
        if not isinstance(reconnect, bool):
            raise TypeError("reconnect must be True or False")
        self._reconnect_enabled = reconnect
        if backoff is not None and not isinstance(backoff, Backoff):
            raise TypeError("backoff must be a presence_client.Backoff")
        self._backoff = backoff or Backoff()
        self._request_timeout = _validate.seconds("request_timeout", request_timeout)
        self._renew_before = _validate.seconds("renew_before", renew_before, positive=False)
        for name, fn in (
            ("on_connect", on_connect), ("on_disconnect", on_disconnect), ("on_error", on_error),
            ("on_invite", on_invite), ("on_message", on_message),
        ):
            if fn is not None and not callable(fn):
                raise TypeError(f"{name} must be callable")
        self.on_connect = on_connect
        self.on_disconnect = on_disconnect
        self.on_error = on_error
        self.on_invite = on_invite
        self.on_message = on_message
        if clock is not None and not isinstance(clock, Clock):
            raise TypeError("clock must have time(), monotonic() and async sleep(seconds)")
        self._clock = clock or SystemClock()
        self._tokens = TokenKeeper(token, self._clock, self._request_timeout, self._renew_before)
        if websocket_options is not None and not isinstance(websocket_options, Mapping):
            raise TypeError("websocket_options must be a mapping of websockets.connect() arguments")
        self._ws_options = dict(websocket_options or {})
        # An explicit ssl= (as aiohttp and websockets spell it): the context that
        # verifies a wss:// server, e.g. one with a private CA. The default for
        # wss:// is the system's trust store with host name checking.
        if ssl is not None:
            if not isinstance(ssl, SSLContext):
                raise TypeError(f"ssl must be an ssl.SSLContext, not {type(ssl).__name__}")
            if not self._url.startswith("wss://"):
                raise ValueError("ssl is for wss:// URLs; this url is ws:// (plain, no TLS)")
            self._ws_options["ssl"] = ssl
        super().__init__()

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
        return self._tokens.expires

    @property
    def subscriptions(self) -> tuple[str, ...]:
        return self._book.identities

    @property
    def calls(self) -> tuple[Call, ...]:
        """The calls in progress (placed or ringing here, not ended)."""
        return self._desk.active

    def presence_of(self, identity: str) -> Presence | None:
        """The last known presence of a subscribed identity (None: not subscribed
        or not known yet)."""
        return self._book.presence_of(identity)

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
            link = await self._open_link(await self._tokens.for_connect(), resume=None)
        except BaseException:
            if not self._closing:
                self._set_state(ClientState.IDLE)  # connect() may be tried again
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
        # Hang up first: the other parties hear remote_hangup at once.
        await self._desk.hang_up_all(CLIENT_CLOSED)
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
        Subscriptions survive reconnects. A refusal (:class:`PresenceError`
        with the server's code, e.g. 20150 without the grant) leaves the
        subscriptions as they were; a timeout while reconnecting keeps them,
        to be made on the next connection.
        """
        wanted = _validate.identities(identities, what="subscribe")
        if callback is not None and not callable(callback):
            raise TypeError("callback must be callable")
        self._require_started()
        added = self._book.add(wanted, callback)
        snapshot: dict[str, Presence] = {}
        try:
            for chunk in _chunks(list(wanted), MAX_IDENTITIES_PER_REQUEST):
                snapshot.update(await self._request({"type": "subscribe", "identities": chunk}))
        except PresenceError as exc:
            if exc.code is None:
                raise  # a timeout while reconnecting: kept, subscribed on the next connection
            # Refused (e.g. no grant for one of them): forget what this call
            # added, or every reconnect would ask for it again.
            self._book.undo_add(wanted, added, callback)
            raise
        return snapshot

    async def unsubscribe(self, *identities: str) -> None:
        """Stop following these identities (their callbacks are dropped too)."""
        wanted = _validate.identities(identities, what="unsubscribe")
        self._require_started()
        gone = self._book.remove(wanted)
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
        if not self._tokens.renewable:
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
        stream = PresenceUpdateStream(only, self._book.streams.discard, max_pending)
        if self._state is ClientState.CLOSED:
            stream._end()
        else:
            self._book.streams.add(stream)
        return stream


    # -- calls ------------------------------------------------------------------------------

    async def call(
        self,
        to: str,
        params: Mapping[str, str] | None = None,
        *,
        on_signal: SignalCallback | None = None,
        on_state: StateCallback | None = None,
    ) -> Call:
        """Place a call; returns it once the server has created it.

        ``to`` is ``client:<identity>``, a bare identity, or an E.164 number;
        the token's outgoing application (``grants.voice.outgoing.application_sid``)
        decides what happens (its instructions are fetched with ``to`` and
        ``params``). Follow the call with ``call.state``, ``on_state`` or
        ``await call.wait_answered()``; signal with ``call.send_signal()``.
        ``on_signal`` and ``on_state`` are set on the call before any frame
        about it is read (the same as setting ``call.on_signal`` /
        ``call.on_state`` later, without the chance of missing one).

        Sent once: placing a call is not repeated on another connection. Raises
        :class:`PresenceError` when the server refuses (e.g. 20150: the token
        has no outgoing application), :class:`CallError` for call refusals
        (31004 the application has no voice URL), :class:`PresenceConnectionError`
        when the connection drops first, :class:`RequestTimeoutError`.
        """
        destination = _validate.destination(to)
        custom = _validate.call_params(params)
        _validate.callback("on_signal", on_signal)
        _validate.callback("on_state", on_state)
        self._require_started()
        return await self._desk.place(destination, custom, on_signal, on_state)

    def incoming_calls(self, *, max_pending: int = DEFAULT_MAX_PENDING) -> ItemStream[Call]:
        """An async iterator of incoming calls (each a ringing :class:`Call`),
        from the moment it is created until it or the client is closed::

            async for call in client.incoming_calls():
                await call.accept()

        ``on_invite`` gets them too. A call nobody answers rings until the
        instructions' timeout (or another device answers)."""
        return self._desk.incoming(_validate.max_pending(max_pending))

    # -- in-app messages ----------------------------------------------------------------------

    def messages(self, *, max_pending: int = DEFAULT_MAX_PENDING) -> ItemStream[Message]:
        """An async iterator of in-app messages, from the moment it is created
        until it or the client is closed. A message is acked when the first
        stream yields it (or ``on_message`` returns); see the README for the
        delivery rules."""
        return self._inbox.stream(_validate.max_pending(max_pending))
