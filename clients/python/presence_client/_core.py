"""The machinery under :class:`~presence_client.PresenceClient`.

:class:`ClientCore` owns the connections: opening and registering them, the
reader and keepalive tasks of each, the supervisor that reconnects, the frame
dispatch, token renewal and the application's callbacks. ``PresenceClient``
(client.py) adds the public API on top: argument checks and the requests.
The split is by audience, not by object: both halves are one client.

Concurrency model: one *supervisor* task per client owns the connection's
life (wait for the end, decide, back off, reconnect). Per connection there is
a *reader* task (every server frame is handled there, in order) and a
*keepalive* task (pings and the idle watchdog), plus an optional token
*renewal timer*. Application calls send a frame and wait for the reply the
reader matches by ``id``. ``close()`` ends every one of these tasks.

Calls and in-app messages have their own modules (``_calls.py``,
``_inbox.py``); the reader hands them their frames.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import inspect
import itertools
import logging
from typing import Any, Awaitable, Callable, Iterable

from websockets.exceptions import ConnectionClosed

from protocol.errors import RemoteProtocolError
from protocol.frames import Codec
from protocol.messages import MAX_IDENTITIES_PER_REQUEST

from . import _policy
from ._book import SubscriptionBook
from ._calls import SERVER_CALL_FRAMES, CallDesk
from ._inbox import Inbox
from .calls import CONNECTION_LOST, Call
from ._link import MAX_INCOMING_FRAME, Link, LinkLost, open_link
from ._tokens import TokenKeeper
from .backoff import Backoff
from .clock import Clock
from .errors import NotConnectedError, PresenceConnectionError, PresenceError, RequestTimeoutError, TokenError
from .models import Disconnect, Message, Presence, PresenceUpdate, SessionInfo

log = logging.getLogger("presence_client")


class ClientState(str, enum.Enum):
    IDLE = "idle"  # created; connect() not called (or it failed)
    CONNECTING = "connecting"  # connect() in progress
    CONNECTED = "connected"  # registered; requests go out at once
    RECONNECTING = "reconnecting"  # lost; backing off or re-registering
    CLOSED = "closed"  # close() was called, or the client gave up for good


def _chunks(items: list[str], size: int) -> Iterable[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class ClientCore:
    # Set by PresenceClient.__init__ (validated there) before it calls ours.
    _url: str
    _codec: Codec
    _desired: dict[str, Any]
    _reconnect_enabled: bool
    _backoff: Backoff
    _request_timeout: float
    _renew_before: float
    _clock: Clock
    _tokens: TokenKeeper
    _ws_options: dict[str, Any]
    on_connect: Callable[[SessionInfo], Any] | None
    on_disconnect: Callable[[Disconnect], Any] | None
    on_error: Callable[[Exception], Any] | None
    on_invite: Callable[[Call], Any] | None
    on_message: Callable[[Message], Any] | None

    def __init__(self) -> None:
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
        self._renewing = False
        self._book = SubscriptionBook()
        self._desk = CallDesk(self)
        self._inbox = Inbox(self)

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

    async def _renew(self, trigger: str, *, raise_errors: bool = False) -> None:
        if self._renewing:
            return  # one renewal at a time; a second trigger would only repeat it
        self._renewing = True
        old_expires = self._tokens.expires
        try:
            token = await self._tokens.fetch()
            try:
                reply = await self._request({"type": "update_token", "token": token})
            except PresenceError as exc:
                if exc.code is None:
                    raise TokenError(f"could not send the renewed token: {exc.message}") from exc
                raise TokenError(f"the server refused the renewed token: {exc.message}", exc.code) from exc
            expires = reply.get("expires")
            if isinstance(expires, (int, float)) and not isinstance(expires, bool):
                self._tokens.accepted(token, float(expires))
                if self._session is not None:
                    self._session = dataclasses.replace(self._session, expires=float(expires))
            unsubscribed = reply.get("unsubscribed")
            if isinstance(unsubscribed, list) and unsubscribed:
                # The new token grants fewer subscriptions; the server dropped these.
                self._book.remove(i for i in unsubscribed if isinstance(i, str))
            log.debug("token renewed (%s), expires %s", trigger, self._tokens.expires)
            new_expires = self._tokens.expires
            if old_expires is not None and new_expires is not None and new_expires <= old_expires:
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
        if not self._tokens.renewable or self._tokens.expires is None:
            return
        delay = _policy.renewal_delay(self._tokens.expires - self._clock.time(), self._renew_before)
        if delay is None:
            log.warning("the token has expired by this machine's clock; renewing on the server's warning only")
            return
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

    # -- connections ----------------------------------------------------------------------

    async def _open_link(self, token: str, resume: str | None) -> Link:
        register: dict[str, Any] = {"type": "register", "token": token, **self._desired, "id": next(self._ids)}
        if "capabilities" not in register:
            register["capabilities"] = default_capabilities(token)
        if resume is not None:
            register["resume"] = resume
        return await open_link(
            self._url,
            self._codec,
            register,
            timeout=self._request_timeout,
            now=self._clock.monotonic(),
            ws_options=self._ws_options,
        )

    def _adopt(self, link: Link) -> None:
        """Make a freshly registered link the current one and start its tasks."""
        loop = asyncio.get_running_loop()
        self._link = link
        self._session = link.info
        self._tokens.expires = link.info.expires
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
            self._desk.link_lost(link)
            self._notify_state()

    async def _supervise(self, link: Link) -> None:
        """Own the connection's life: when one ends, decide and reconnect."""
        try:
            await self._supervise_links(link)
        except Exception as exc:  # a bug: say so rather than die silently
            log.exception("presence client supervisor failed")
            self._give_up(PresenceError(None, f"internal error in the presence client: {exc!r}"))

    async def _supervise_links(self, link: Link) -> None:
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
        final = _policy.loss_is_final(
            code, link.error, reconnect=self._reconnect_enabled, renewable_token=self._tokens.renewable
        )
        if not final:
            return None
        return link.error or PresenceConnectionError(
            f"connection closed (code {code}{': ' + reason if reason else ''})", close_code=code, reason=reason
        )

    async def _reconnect(self, lost: Link) -> Link | None:
        """Back off and reconnect until registered again (or a final refusal)."""
        fresh_token_tried = False
        if _policy.is_auth_loss(lost.close_code, lost.error):
            self._tokens.forget()  # refused: the next attempt gets a new one
            fresh_token_tried = True
        delay = lost.retry_after + self._backoff.next_delay()
        while True:
            await self._clock.sleep(delay)
            delay = self._backoff.next_delay()
            try:
                link = await self._open_link(await self._tokens.for_connect(), resume=self._session.session_id if self._session else None)
            except TokenError as exc:
                self._report(exc)  # the app's token source is failing: worth knowing
                continue
            except PresenceError as exc:
                if _policy.attempt_refused_for_good(
                    exc, renewable_token=self._tokens.renewable, fresh_token_tried=fresh_token_tried
                ):
                    self._give_up(exc)
                    return None
                if exc.is_auth_refusal:
                    self._tokens.forget()
                    fresh_token_tried = True
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
        sent = list(self._book.identities)
        try:
            for chunk in _chunks(sent, MAX_IDENTITIES_PER_REQUEST):
                try:
                    await self._link_request(link, {"type": "subscribe", "identities": chunk})
                except PresenceError as exc:
                    self._report(exc)
            # Unsubscribed while we were re-subscribing: tell the server too.
            stale = [i for i in sent if i not in self._book]
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
        self._book.end_streams()
        self._desk.end_all(CONNECTION_LOST)  # normally ended already, with their connection
        self._desk.end_streams()
        self._inbox.end_streams()
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
        elif kind in SERVER_CALL_FRAMES:
            self._desk.on_frame(link, frame)
        elif kind == "message":
            self._inbox.on_frame(link, frame)
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
        presences = frame.get("presences")
        parsed = [self._parse_presence(obj) for obj in (presences if isinstance(presences, list) else [])]
        snapshot = {p.identity: p for p in parsed if p is not None}
        for update in self._book.apply_snapshot(snapshot.values()):
            self._deliver(update)
        return snapshot

    def _apply_update(self, frame: dict[str, Any]) -> None:
        presence = self._parse_presence(frame)
        update = self._book.apply_update(presence) if presence is not None else None
        if update is not None:
            self._deliver(update)

    def _deliver(self, update: PresenceUpdate) -> None:
        self._book.to_streams(update)
        for callback in self._book.callbacks(update.identity):
            self._call(callback, update)

    def _on_token_expiring(self, frame: dict[str, Any]) -> None:
        if not self._tokens.renewable:
            log.warning("the token expires in %ss and cannot be renewed: give PresenceClient a token callable", frame.get("seconds_left"))
            return
        expires = frame.get("expires")
        if isinstance(expires, (int, float)) and self._tokens.expires is not None and expires < self._tokens.expires:
            return  # about a token already replaced
        seconds_left = frame.get("seconds_left")
        if isinstance(seconds_left, (int, float)) and not isinstance(seconds_left, bool):
            delay = _policy.warning_deferral(float(seconds_left), self._tokens.age())
            if delay is not None:
                link = self._link
                due = self._clock.monotonic() + delay
                if link is not None and not link.ended and (link.renew_due is None or link.renew_due > due):
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

    def _call(
        self, fn: Callable[..., Any] | None, *args: Any, report: bool = True, then: Callable[[], None] | None = None
    ) -> None:
        """Run an application callback (plain or async); its failure is
        logged and passed to on_error, never raised into the SDK's tasks.
        ``then`` runs once the callback has returned (an async one: completed)
        without raising."""
        if fn is None:
            return
        try:
            result = fn(*args)
        except Exception as exc:
            self._callback_failed(fn, exc, report)
            return
        if inspect.isawaitable(result):
            task = asyncio.ensure_future(self._await_callback(fn, result, report, then))
            self._callback_tasks.add(task)
            task.add_done_callback(self._task_done)
        elif then is not None:
            then()

    async def _await_callback(
        self, fn: Callable[..., Any], result: Awaitable[Any], report: bool, then: Callable[[], None] | None = None
    ) -> None:
        try:
            await result
        except Exception as exc:
            self._callback_failed(fn, exc, report)
            return
        if then is not None:
            then()

    def _callback_failed(self, fn: Callable[..., Any], exc: Exception, report: bool) -> None:
        log.error("callback %s failed", getattr(fn, "__qualname__", fn), exc_info=exc)
        if report:
            self._report(exc)

    def _report(self, error: Exception) -> None:
        if self.on_error is None:
            log.warning("presence client error: %s", error)
        else:
            self._call(self.on_error, error, report=False)


def default_capabilities(token: str) -> list[str]:
    """What a client declares when its app did not say: in-app messages, and
    calls when its own token may receive them (the server refuses 'voice'
    without that grant). The payload is read, not verified: it is our own token."""
    import base64
    import json

    caps = ["messaging"]
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        if claims["grants"]["voice"]["incoming"]["allow"] is True:
            caps.insert(0, "voice")
    except (IndexError, KeyError, TypeError, ValueError):
        pass
    return caps
