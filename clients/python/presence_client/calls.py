"""A call, as the application holds it: placed by this client or ringing it.

A :class:`Call` is created by the client (``await client.call(...)`` for an
outgoing call, an ``invite`` for an incoming one) and moved through its
states by the frames the server sends about it, in the client's reader; the
application reads its state, waits for it, and acts on it (accept, reject,
signal, hang up).

Each side of a call names it by its own sid: the caller's call is the parent
call (``call_created.call``), each callee device sees the child call the
instructions' ``<Dial>`` created (``invite.call``, with ``parent_call``).
A call belongs to the connection it was made or received on: the server ends
a call whose leg drops, so a call never survives a reconnect.
"""

from __future__ import annotations

import asyncio
import enum
import types
from typing import TYPE_CHECKING, Any, Callable, Literal, Mapping

from . import _validate
from .errors import CallError
from .models import CallMedia, CallWarning
from .stream import ItemStream

if TYPE_CHECKING:
    from ._calls import CallDesk
    from ._link import Link

__all__ = ["Call", "CallDirection", "CallState", "SignalCallback", "StateCallback"]

CallDirection = Literal["outgoing", "incoming"]
SignalCallback = Callable[[dict[str, Any]], Any]  # may return an awaitable
StateCallback = Callable[["Call"], Any]  # may return an awaitable

# Received signal payloads kept for call.signals() until read; a call's
# signaling is a handful of SDP and ICE messages, so this is only reached by
# an application that never reads them (it may use on_signal instead).
MAX_PENDING_SIGNALS = 256

# End reasons this side gives (the others are the server's: see the README).
LOCAL_HANGUP = "local_hangup"
CONNECTION_LOST = "connection_lost"
CLIENT_CLOSED = "client_closed"


class CallState(str, enum.Enum):
    INITIATED = "initiated"  # outgoing: created; the instructions decide whom to ring
    RINGING = "ringing"  # outgoing: a callee device rings; incoming: this device is invited
    ANSWERED = "answered"  # connected: signals flow both ways
    COMPLETED = "completed"  # ended; end_reason says why


class CallEnded(Exception):
    """Internal: the call ended while a request about it waited for its reply."""


class Call:
    """One call of this client. Not created by applications: see
    ``client.call()``, ``on_invite`` and ``client.incoming_calls()``."""

    def __init__(
        self,
        desk: CallDesk,
        link: Link,
        *,
        sid: str,
        direction: CallDirection,
        from_: str,
        to: str,
        params: Mapping[str, str] | None = None,
        state: CallState,
        parent_sid: str | None = None,
        sdp: str | None = None,
        on_signal: SignalCallback | None = None,
        on_state: StateCallback | None = None,
    ) -> None:
        self._desk = desk
        self._link = link
        self._sid = sid
        self._direction: CallDirection = direction
        self._from = from_
        self._to = to
        self._params = types.MappingProxyType(dict(params or {}))
        self._parent_sid = parent_sid
        self._sdp = sdp
        self._state = state
        self._answered = False  # ever answered (stays True once the call ends)
        self._end_reason: str | None = None
        self._signals: ItemStream[dict[str, Any]] = ItemStream(None, MAX_PENDING_SIGNALS)
        self._waiters: list[asyncio.Future[None]] = []
        self._requests: set[asyncio.Future[Any]] = set()  # replies awaited about this call
        self._accepting = False
        self._rang = False
        self._warnings: list[CallWarning] = []
        self._media: list[CallMedia] = []
        self._on_signal: SignalCallback | None = None
        self._on_warning: Callable[[CallWarning], Any] | None = None
        self._on_media: Callable[[CallMedia], Any] | None = None
        self._on_state: StateCallback | None = None
        self.on_signal = on_signal
        self.on_state = on_state

    def __repr__(self) -> str:
        ended = f" ({self._end_reason})" if self._end_reason else ""
        return f"<Call {self._sid} {self._direction} {self.remote} {self._state.value}{ended}>"

    # -- what the call is ----------------------------------------------------------------

    @property
    def sid(self) -> str:
        """This side's call sid (CA...): the parent call for the caller, the
        child call for a callee."""
        return self._sid

    @property
    def direction(self) -> CallDirection:
        return self._direction

    @property
    def from_(self) -> str:
        """The caller: ``client:<identity>`` or a number."""
        return self._from

    @property
    def to(self) -> str:
        """Whom the call is for: as the caller dialled it (outgoing), or this
        client's address (incoming: ``client:<identity>``)."""
        return self._to

    @property
    def remote(self) -> str:
        """The other party: ``to`` for an outgoing call, ``from_`` for an incoming one."""
        return self._to if self._direction == "outgoing" else self._from

    @property
    def params(self) -> Mapping[str, str]:
        """Custom parameters: those the caller passed (outgoing), or those the
        instructions' ``<Client><Parameter>`` set (incoming)."""
        return self._params

    @property
    def parent_sid(self) -> str | None:
        """Incoming: the caller's call (``invite.parent_call``)."""
        return self._parent_sid

    @property
    def sdp(self) -> str | None:
        """Incoming: an SDP offer that came with a carrier call, if any."""
        return self._sdp

    @property
    def state(self) -> CallState:
        return self._state

    @property
    def answered(self) -> bool:
        """True once the call was answered (and still after it ends)."""
        return self._answered

    @property
    def ended(self) -> bool:
        return self._state is CallState.COMPLETED

    @property
    def end_reason(self) -> str | None:
        """Why the call ended (None while it goes on): see the README's table."""
        return self._end_reason

    @property
    def warnings(self) -> tuple[CallWarning, ...]:
        """``call_warning`` frames received: instructions skipped on this call."""
        return tuple(self._warnings)

    @property
    def media(self) -> tuple[CallMedia, ...]:
        """``call_media`` frames received: media verbs for a leg that declared ``media``."""
        return tuple(self._media)

    # -- callbacks -----------------------------------------------------------------------

    @property
    def on_signal(self) -> SignalCallback | None:
        """Called (plain or async) with every signal payload received; they
        also go to :meth:`signals`."""
        return self._on_signal

    @on_signal.setter
    def on_signal(self, fn: SignalCallback | None) -> None:
        _validate.callback("on_signal", fn)
        self._on_signal = fn

    @property
    def on_state(self) -> StateCallback | None:
        """Called (plain or async) with the call after each change of
        :attr:`state` (ringing, answered, completed)."""
        return self._on_state

    @on_state.setter
    def on_state(self, fn: StateCallback | None) -> None:
        _validate.callback("on_state", fn)
        self._on_state = fn

    @property
    def on_warning(self) -> Callable[[CallWarning], Any] | None:
        return self._on_warning

    @on_warning.setter
    def on_warning(self, fn: Callable[[CallWarning], Any] | None) -> None:
        _validate.callback("on_warning", fn)
        self._on_warning = fn

    @property
    def on_media(self) -> Callable[[CallMedia], Any] | None:
        return self._on_media

    @on_media.setter
    def on_media(self, fn: Callable[[CallMedia], Any] | None) -> None:
        _validate.callback("on_media", fn)
        self._on_media = fn

    # -- waiting ---------------------------------------------------------------------------

    async def wait_answered(self, timeout: float | None = None) -> None:
        """Return once the call is answered. Raises :class:`CallError` (with
        ``end_reason``) if it ends first, TimeoutError after ``timeout`` seconds."""
        async with asyncio.timeout(timeout):
            while not self._answered:
                if self.ended:
                    raise CallError(
                        None, f"the call ended before it was answered ({self._end_reason})",
                        call_sid=self._sid, end_reason=self._end_reason,
                    )
                await self._wait_change()

    async def wait_ended(self, timeout: float | None = None) -> str:
        """Return the end reason once the call has ended (TimeoutError after ``timeout``)."""
        async with asyncio.timeout(timeout):
            while self._end_reason is None:
                await self._wait_change()
        return self._end_reason

    def signals(self) -> ItemStream[dict[str, Any]]:
        """The signal payloads received on this call, as an async iterator
        that ends when the call ends. Payloads are kept from the call's start,
        so none is missed before the first read. One stream per call: every
        call to ``signals()`` returns it."""
        return self._signals

    # -- acting on the call ---------------------------------------------------------------

    async def send_signal(self, payload: Mapping[str, Any]) -> None:
        """Send a payload (SDP offer/answer, ICE candidate: any JSON object) to
        the other party, who receives it verbatim. Only once the call is
        answered. Raises :class:`CallError` when the call is not answered or
        the server refuses; ValueError when the payload is over the server's
        frame size limit."""
        body = _validate.signal_payload(payload)
        if self._state is not CallState.ANSWERED:
            raise self._state_error("send a signal", "only an answered call carries signals")
        try:
            await self._desk.request(self, {"type": "signal", "call": self._sid, "payload": body}, check_size=True)
        except CallEnded:
            raise self._state_error("send a signal", "") from None

    async def hangup(self) -> None:
        """End the call (any state; nothing happens if it has ended). The
        other party gets ``hangup`` (``remote_hangup``); this call ends with
        ``local_hangup``. An incoming call that still rings is better
        declined with :meth:`reject`."""
        if self.ended:
            return
        self._end(LOCAL_HANGUP)
        await self._desk.send(self, {"type": "hangup", "call": self._sid})

    async def accept(self) -> None:
        """Answer an incoming call. The first device to accept wins: the
        others get ``cancel`` (``answered_elsewhere``). Raises
        :class:`CallError` when the call has ended (``end_reason`` says why:
        ``answered_elsewhere``, ``caller_hangup``, ``timeout``) or the server
        refuses (31002 answered on another device). Nothing happens when it
        is already answered."""
        self._require_incoming("accept")
        if self._answered and not self.ended:
            return
        if self.ended:
            raise self._state_error("accept", "")
        if self._accepting:  # a second accept() while the first waits: share its outcome
            while not self._answered and not self.ended:
                await self._wait_change()
            if not self._answered:
                raise self._state_error("accept", "")
            return
        self._accepting = True
        try:
            await self._desk.request(self, {"type": "accept", "call": self._sid})
        except CallEnded:
            raise self._state_error("accept", "") from None
        except CallError as exc:
            if exc.code == 31002 and not self.ended:
                self._end("answered_elsewhere")
            raise
        finally:
            self._accepting = False
            self._changed()
        if self.ended:
            # Answered, then ended (the caller hung up at once) before this
            # task resumed: it was answered all the same.
            self._answered = True
        else:
            self._set_answered()

    async def reject(self, busy: bool = False) -> None:
        """Decline an incoming call that rings (``busy=True``: say busy rather
        than rejected). The call ends with ``rejected`` / ``busy``. Nothing
        happens when it has already ended; :class:`CallError` once answered
        (use :meth:`hangup`)."""
        if not isinstance(busy, bool):
            raise TypeError("busy must be True or False")
        self._require_incoming("reject")
        if self.ended:
            return
        if self._answered:
            raise CallError(None, "the call is answered: end it with hangup()", call_sid=self._sid)
        reason = "busy" if busy else "rejected"
        try:
            await self._desk.request(self, {"type": "reject", "call": self._sid, "reason": reason})
        except CallEnded:
            return  # ended meanwhile (cancelled, connection lost): nothing rings to decline
        except CallError as exc:
            if exc.code is None and not self.ended:
                raise
            # Refused by the server: the call no longer rings here (cancelled
            # meanwhile). Either way it is over for this device.
        finally:
            if not self.ended:
                self._end(reason)

    async def ringing(self) -> None:
        """Tell the caller this device is ringing (``call_progress`` ringing on
        their side). Optional; sent once; nothing happens after an answer or end."""
        self._require_incoming("ringing")
        if self._rang or self._state is not CallState.RINGING:
            return
        self._rang = True
        await self._desk.send(self, {"type": "ringing", "call": self._sid})

    # -- driven by the client's reader -------------------------------------------------------

    def _progress(self, status: str, reason: str | None) -> None:
        if self.ended:
            return
        if status == "ringing" and self._state is CallState.INITIATED:
            self._set_state(CallState.RINGING)
        elif status == "answered":
            self._set_answered()
        elif status == "completed":
            self._end(reason or "completed")

    def _set_answered(self) -> None:
        if self.ended or self._answered:
            return
        self._answered = True
        self._set_state(CallState.ANSWERED)

    def _end(self, reason: str) -> None:
        if self.ended:
            return
        self._end_reason = reason
        self._signals._end()
        for fut in list(self._requests):
            if not fut.done():
                fut.set_exception(CallEnded())
        self._desk.forget(self)
        self._set_state(CallState.COMPLETED)

    def _signal(self, payload: dict[str, Any]) -> None:
        if self.ended:
            return
        self._signals._put(payload)
        self._desk.callback(self._on_signal, payload)

    def _warning(self, warning: CallWarning) -> None:
        self._warnings.append(warning)
        self._desk.callback(self._on_warning, warning)

    def _media_verb(self, media: CallMedia) -> None:
        self._media.append(media)
        self._desk.callback(self._on_media, media)

    # -- helpers -------------------------------------------------------------------------

    def _set_state(self, state: CallState) -> None:
        self._state = state
        self._changed()
        self._desk.callback(self._on_state, self)

    def _changed(self) -> None:
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    async def _wait_change(self) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut
        finally:
            if fut in self._waiters:
                self._waiters.remove(fut)

    def _require_incoming(self, what: str) -> None:
        if self._direction != "incoming":
            raise CallError(None, f"{what}() is for incoming calls; this call is outgoing", call_sid=self._sid)

    def _state_error(self, what: str, why: str) -> CallError:
        if self.ended:
            message = f"cannot {what}: the call has ended ({self._end_reason})"
        else:
            message = f"cannot {what} in state {self._state.value}" + (f": {why}" if why else "")
        return CallError(None, message, call_sid=self._sid, end_reason=self._end_reason)
