"""The client's calls: placing them, the frames the server sends about them,
and the requests a :class:`~presence_client.calls.Call` makes.

Frames are applied in the reader, in order, so a call's state is always that
of the frames read so far. In particular the :class:`Call` for a placed call
is made when its ``call_created`` is read, before any later frame about it.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from websockets.exceptions import ConnectionClosed

from .calls import CONNECTION_LOST, Call, CallEnded, CallState, SignalCallback, StateCallback
from .errors import CallError, PresenceConnectionError, PresenceError, RequestTimeoutError
from .models import CallMedia, CallWarning
from .stream import ItemStream
from ._link import CLOSE_TIMEOUT, Link, LinkLost

if TYPE_CHECKING:
    from ._core import ClientCore

log = logging.getLogger("presence_client")

SERVER_CALL_FRAMES = frozenset({"call_created", "invite", "cancel", "call_progress", "signal", "hangup", "call_warning", "call_media"})


@dataclass
class _Placement:
    """A ``call`` request waiting for its ``call_created``."""

    link: Link
    to: str
    params: dict[str, str]
    on_signal: SignalCallback | None
    on_state: StateCallback | None


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _call_error(exc: PresenceError, call_sid: str | None) -> PresenceError:
    """A server refusal of a call frame as a CallError (31xxx codes); others as they are."""
    if exc.code is not None and 31000 <= exc.code < 32000:
        err = CallError(exc.code, exc.message, call_sid=call_sid)
        err.__cause__ = exc
        return err
    return exc


class CallDesk:
    def __init__(self, core: ClientCore) -> None:
        self._core = core
        self._calls: dict[str, Call] = {}  # the calls that have not ended, by sid
        self._placing: dict[int, _Placement] = {}  # request id -> the call request
        self.streams: set[ItemStream[Call]] = set()

    @property
    def active(self) -> tuple[Call, ...]:
        return tuple(self._calls.values())

    def forget(self, call: Call) -> None:
        if self._calls.get(call.sid) is call:
            del self._calls[call.sid]

    def callback(self, fn: Callable[..., Any] | None, *args: Any) -> None:
        self._core._call(fn, *args)

    def incoming(self, max_pending: int) -> ItemStream[Call]:
        stream: ItemStream[Call] = ItemStream(self.streams.discard, max_pending)
        if self._core._closing or self._core._closed_event.is_set():
            stream._end()
        else:
            self.streams.add(stream)
        return stream

    # -- placing a call -----------------------------------------------------------------

    async def place(
        self, to: str, params: dict[str, str], on_signal: SignalCallback | None, on_state: StateCallback | None
    ) -> Call:
        """Send ``call`` and return the Call once ``call_created`` arrives.

        Sent once, never again on another connection: placing a call is not
        idempotent. A connection lost before the answer fails the request
        (the server ends a call whose caller's connection dropped)."""
        core = self._core
        loop = asyncio.get_running_loop()
        deadline = loop.time() + core._request_timeout
        link = await core._wait_link(deadline)
        rid = next(core._ids)
        fut: asyncio.Future[Call] = loop.create_future()
        link.pending[rid] = fut
        self._placing[rid] = _Placement(link, to, params, on_signal, on_state)
        frame: dict[str, Any] = {"type": "call", "to": to, "id": rid}
        if params:
            frame["params"] = params
        try:
            try:
                await link.send(frame)
                return await asyncio.wait_for(fut, max(deadline - loop.time(), 0.0))
            except ConnectionClosed:
                raise PresenceConnectionError("the connection dropped before the call could be placed") from None
            except LinkLost:
                raise PresenceConnectionError(
                    "the connection dropped while placing the call (had the server created it, it ended it)"
                ) from None
            except TimeoutError:
                # A call_created that arrives later is hung up by the reader.
                raise RequestTimeoutError(f"no answer to 'call' within {core._request_timeout:g} s") from None
            except PresenceError as exc:
                raise _call_error(exc, None) from None
        except BaseException:
            # Cancelled just as the call was made: nobody holds it; end it.
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                call = fut.result()
                core._spawn(call.hangup())
            raise
        finally:
            link.pending.pop(rid, None)
            self._placing.pop(rid, None)

    # -- requests about a call ------------------------------------------------------------

    async def request(self, call: Call, frame: dict[str, Any], *, check_size: bool = False) -> None:
        """Send a frame about ``call`` on its connection and wait for ``ok``.

        Raises CallEnded when the call ends first (the server's answer to a
        frame about a call that ended meanwhile may never come), CallError for
        a refusal (31xxx) or a connection that is gone, RequestTimeoutError."""
        core = self._core
        link = call._link
        if link.ended:
            raise CallError(None, "the connection this call was on has dropped", call_sid=call.sid)
        rid = next(core._ids)
        data = link.codec.encode({**frame, "id": rid})
        if check_size:
            limit = link.info.max_frame_bytes
            size = len(data) if isinstance(data, bytes) else len(data.encode("utf-8"))
            if limit and size > limit:
                # Sent anyway, the server would close the whole session (4009).
                raise ValueError(f"the signal frame is {size} bytes encoded; the server takes frames of at most {limit} bytes")
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        link.pending[rid] = fut
        call._requests.add(fut)
        try:
            try:
                await link.ws.send(data)
            except ConnectionClosed:
                raise CallError(None, "the connection this call was on has dropped", call_sid=call.sid) from None
            await asyncio.wait_for(fut, core._request_timeout)
        except TimeoutError:
            raise RequestTimeoutError(f"no reply to {frame['type']!r} within {core._request_timeout:g} s") from None
        except LinkLost:
            raise CallError(None, "the connection this call was on has dropped", call_sid=call.sid) from None
        except (CallEnded, CallError, RequestTimeoutError):
            raise
        except PresenceError as exc:
            raise _call_error(exc, call.sid) from None
        finally:
            link.pending.pop(rid, None)
            call._requests.discard(fut)

    async def send(self, call: Call, frame: dict[str, Any]) -> None:
        """Send a frame about ``call`` that the server does not answer
        (``ringing``, ``hangup``). A connection that is gone is no error: the
        server has ended the call already."""
        await self._send_on(call._link, frame)

    async def _send_on(self, link: Link, frame: dict[str, Any]) -> None:
        if link.ended:
            return
        try:
            await link.send(frame)
        except ConnectionClosed:
            pass

    # -- frames from the server -------------------------------------------------------------

    def on_frame(self, link: Link, frame: dict[str, Any]) -> None:
        kind = frame["type"]
        sid = frame.get("call")
        if not isinstance(sid, str) or not sid:
            log.debug("ignoring a %r frame without a call sid", kind)
            return
        if kind == "call_created":
            self._created(link, sid, frame.get("id"))
            return
        if kind == "invite":
            self._invited(link, sid, frame)
            return
        call = self._calls.get(sid)
        if call is None or call._link is not link:
            log.debug("ignoring a %r frame for call %s, which is not in progress here", kind, sid)
            return
        if kind == "call_progress":
            reason = frame.get("reason")
            call._progress(_str(frame.get("status")), reason if isinstance(reason, str) else None)
        elif kind == "signal":
            payload = frame.get("payload")
            if isinstance(payload, dict):
                call._signal(payload)
        elif kind == "cancel":
            if call.direction == "incoming" and not call.answered:
                call._end(_str(frame.get("reason")) or "canceled")
        elif kind == "hangup":
            call._end(_str(frame.get("reason")) or "remote_hangup")
            if call.direction == "outgoing":
                # The other party is gone, and so is this call for the app.
                # Say so: the rest of the instructions (a Dial action's next
                # <Dial>, say) must not go on for a caller nobody holds.
                self._core._spawn(self._send_on(link, {"type": "hangup", "call": sid}))
        elif kind == "call_warning":
            code = frame.get("code")
            call._warning(CallWarning(code if isinstance(code, int) and not isinstance(code, bool) else 0, _str(frame.get("message"))))
        elif kind == "call_media":
            attributes = frame.get("attributes")
            call._media_verb(CallMedia(_str(frame.get("verb")), dict(attributes) if isinstance(attributes, dict) else {}))

    def _created(self, link: Link, sid: str, rid: Any) -> None:
        placement = self._placing.pop(rid, None) if isinstance(rid, int) else None
        fut = link.pending.get(rid) if placement is not None else None
        if placement is None or fut is None or fut.done() or placement.link is not link:
            # Nobody waits for it any more (timed out, cancelled): end it
            # rather than leave the callee ringing for nobody.
            log.info("hanging up call %s: created after its request was given up", sid)
            self._core._spawn(self._send_on(link, {"type": "hangup", "call": sid}))
            return
        identity = link.info.identity
        call = Call(
            self, link, sid=sid, direction="outgoing", from_=f"client:{identity}", to=placement.to,
            params=placement.params, state=CallState.INITIATED, on_signal=placement.on_signal,
            on_state=placement.on_state,
        )
        self._calls[sid] = call
        fut.set_result(call)

    def _invited(self, link: Link, sid: str, frame: dict[str, Any]) -> None:
        if sid in self._calls:
            return  # a repeated invite for a call this client already has
        params = frame.get("params")
        parent, sdp = frame.get("parent_call"), frame.get("sdp")
        call = Call(
            self, link, sid=sid, direction="incoming", from_=_str(frame.get("from")), to=_str(frame.get("to")),
            params={k: v for k, v in params.items() if isinstance(k, str) and isinstance(v, str)} if isinstance(params, dict) else {},
            state=CallState.RINGING, parent_sid=parent if isinstance(parent, str) else None,
            sdp=sdp if isinstance(sdp, str) else None,
        )
        self._calls[sid] = call
        on_invite = self._core.on_invite
        if on_invite is None and not self.streams:
            log.info("call %s rings with no on_invite callback or incoming_calls() stream to answer it", sid)
        for stream in list(self.streams):
            stream._put(call)
        self._core._call(on_invite, call)

    # -- the end of a connection, of the client ------------------------------------------------

    def link_lost(self, link: Link) -> None:
        """A connection ended: so did every call on it (the server ends a call
        whose leg drops; a new connection cannot take it over)."""
        for call in [c for c in self._calls.values() if c._link is link]:
            call._end(CONNECTION_LOST)

    async def hang_up_all(self, reason: str) -> None:
        """Closing: hang up every call on the live connection (the other
        parties hear ``remote_hangup`` rather than wait for the drop), and end
        them here with ``reason``."""
        calls = list(self._calls.values())
        for call in calls:
            call._end(reason)
        sends = [self._send_on(c._link, {"type": "hangup", "call": c.sid}) for c in calls]
        if sends:
            try:
                await asyncio.wait_for(asyncio.gather(*sends), CLOSE_TIMEOUT)
            except TimeoutError:
                pass

    def end_all(self, reason: str) -> None:
        for call in list(self._calls.values()):
            call._end(reason)

    def end_streams(self) -> None:
        for stream in list(self.streams):
            stream._end()
        self.streams.clear()
