"""The server side of one client session, sans I/O.

The I/O layer hands every received WebSocket frame to :meth:`ServerSession.receive`
and acts on what comes back; it calls :meth:`ServerSession.tick` when
:meth:`ServerSession.deadline` passes. The session knows the rules - which
frame is allowed in which state, the size and rate limits, the register and
idle timeouts, the token's expiry - and nothing about sockets, tokens'
signatures or presence storage.

States and the frames each allows (the transition table):

    AWAITING_REGISTER --register ok--> REGISTERED --bye / fatal error--> CLOSED
    AWAITING_REGISTER --bye / timeout / fatal--> CLOSED
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Union

from .errors import ErrorCode, RemoteProtocolError
from .frames import Codec
from .messages import CALL_FRAME_TYPES, CLIENT_FRAMES, Bye, ClientFrame, RequestId, parse_client_frame, request_id
from .ratelimit import TokenBucket


class SessionState(enum.Enum):
    AWAITING_REGISTER = "awaiting_register"
    REGISTERED = "registered"
    CLOSED = "closed"


# Which client frame types each state accepts. A frame outside its state's set
# is answered with the error named here.
ALLOWED_FRAMES: dict[SessionState, frozenset[str]] = {
    SessionState.AWAITING_REGISTER: frozenset({"register", "bye"}),
    SessionState.REGISTERED: frozenset(
        {"presence", "subscribe", "unsubscribe", "ping", "update_token", "bye"} | CALL_FRAME_TYPES
    ),
    SessionState.CLOSED: frozenset(),
}
REFUSAL_IN_STATE: dict[SessionState, ErrorCode] = {
    SessionState.AWAITING_REGISTER: ErrorCode.NOT_REGISTERED,
    SessionState.REGISTERED: ErrorCode.ALREADY_REGISTERED,
}


@dataclass(frozen=True)
class SessionLimits:
    max_frame_bytes: int = 64 * 1024
    rate: float = 20.0  # frames per second, sustained
    burst: int = 60  # frames allowed at once
    register_timeout: float = 10.0
    heartbeat: float = 25.0  # how often the client is told to ping
    idle_timeout: float = 60.0  # silence after which the session is closed
    token_warning: float = 60.0  # token_expiring is sent this long before expiry
    clock_skew: float = 0.0  # a token is honoured this long past its exp, as at verification


# -- events --------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    pass


@dataclass(frozen=True)
class FrameAccepted(Event):
    frame: ClientFrame


@dataclass(frozen=True)
class FrameRefused(Event):
    """Answer with an error frame; close with the error's close code when fatal."""

    error: RemoteProtocolError
    request_id: RequestId = None

    @property
    def fatal(self) -> bool:
        return self.error.error.fatal


@dataclass(frozen=True)
class TokenExpiring(Event):
    expires: float
    seconds_left: float


ReceiveResult = Union[FrameAccepted, FrameRefused]


class ServerSession:
    def __init__(self, codec: Codec, limits: SessionLimits, now: float) -> None:
        self.codec = codec
        self.limits = limits
        self.state = SessionState.AWAITING_REGISTER
        self.opened_at = now
        self.last_frame_at = now
        self.token_expires: float | None = None
        self._warned = False
        self._bucket = TokenBucket(limits.rate, limits.burst, now)
        # Frames refused for rate: when these outrun another full burst, the
        # client is not slowing down and the session is closed.
        self._over = TokenBucket(limits.rate, limits.burst, now)

    # -- frames in -------------------------------------------------------------

    def receive(self, data: str | bytes, now: float) -> ReceiveResult:
        if self.state is SessionState.CLOSED:
            raise RuntimeError("frame received on a closed session")
        self.last_frame_at = now
        # Every frame counts against the rate, undecodable ones too: refusing
        # garbage costs us an answer each time, so garbage must not be free.
        within_rate = self._bucket.take(now)
        rid: RequestId = None
        try:
            obj = self.codec.decode(data, max_bytes=self.limits.max_frame_bytes)
            try:
                rid = request_id(obj)
            except RemoteProtocolError:
                rid = None
            if not within_rate:
                raise RemoteProtocolError(ErrorCode.RATE_LIMITED)
            frame_type = obj["type"]
            if frame_type not in ALLOWED_FRAMES[self.state]:
                # Refused on its type alone, before its fields are read: an
                # unknown type is that error in any state, a known frame out of
                # order is the state's refusal.
                if frame_type not in CLIENT_FRAMES:
                    raise RemoteProtocolError(ErrorCode.FRAME_UNKNOWN_TYPE, f"unknown frame type {frame_type[:32]!r}")
                raise RemoteProtocolError(REFUSAL_IN_STATE[self.state], f"'{frame_type}' is not allowed now")
            frame = parse_client_frame(obj)
        except RemoteProtocolError as exc:
            if not within_rate and not self._over.take(now):
                return self._refuse(RemoteProtocolError(ErrorCode.RATE_LIMIT_CLOSE), rid)
            if not within_rate:
                exc = RemoteProtocolError(ErrorCode.RATE_LIMITED)
            return self._refuse(exc, rid)
        if isinstance(frame, Bye):
            self.state = SessionState.CLOSED
        return FrameAccepted(frame)

    def _refuse(self, exc: RemoteProtocolError, rid: RequestId) -> FrameRefused:
        if exc.error.fatal:
            self.state = SessionState.CLOSED
        return FrameRefused(exc, rid)

    # -- what the I/O layer reports back -----------------------------------------

    def registered(self, token_expires: float) -> None:
        if self.state is not SessionState.AWAITING_REGISTER:
            raise RuntimeError(f"registered() in state {self.state}")
        self.state = SessionState.REGISTERED
        self.token_renewed(token_expires)

    def token_renewed(self, token_expires: float) -> None:
        self.token_expires = token_expires
        self._warned = False

    def closed(self) -> None:
        self.state = SessionState.CLOSED

    # -- time ------------------------------------------------------------------

    def deadline(self) -> float | None:
        """When :meth:`tick` next has something to do (None: closed)."""
        if self.state is SessionState.CLOSED:
            return None
        if self.state is SessionState.AWAITING_REGISTER:
            return self.opened_at + self.limits.register_timeout
        assert self.token_expires is not None
        due = [self.last_frame_at + self.limits.idle_timeout, self.token_expires + self.limits.clock_skew]
        if not self._warned:
            due.append(self.token_expires - self.limits.token_warning)
        return min(due)

    def tick(self, now: float) -> FrameRefused | TokenExpiring | None:
        """Apply the timers: a fatal refusal (timeout, token expired), a warning, or nothing."""
        if self.state is SessionState.AWAITING_REGISTER:
            if now >= self.opened_at + self.limits.register_timeout:
                return self._refuse(RemoteProtocolError(ErrorCode.REGISTER_TIMEOUT), None)
            return None
        if self.state is not SessionState.REGISTERED:
            return None
        assert self.token_expires is not None
        if now >= self.token_expires + self.limits.clock_skew:
            return self._refuse(RemoteProtocolError(ErrorCode.TOKEN_EXPIRED, "the access token expired and was not renewed"), None)
        if now >= self.last_frame_at + self.limits.idle_timeout:
            return self._refuse(RemoteProtocolError(ErrorCode.IDLE_TIMEOUT), None)
        if not self._warned and now >= self.token_expires - self.limits.token_warning:
            self._warned = True
            return TokenExpiring(self.token_expires, max(0.0, self.token_expires - now))
        return None
