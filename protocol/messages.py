"""One frozen dataclass per frame type, and the parsing that builds them.

Client frames are parsed from decoded objects (``parse_client_frame``);
server frames are built by the server and turned into objects with
``to_wire``. Unknown extra fields in client frames are ignored, so that a
newer client can talk to an older server; a known field of the wrong type
or value is refused with FRAME_INVALID_FIELD naming the field.

Adding a client frame type: a dataclass with ``TYPE`` and ``parse``, listed in
``CLIENT_FRAMES``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Mapping, Union

from .addresses import identity_problem, is_e164, is_sid
from .errors import ErrorCode, RemoteProtocolError
from .presence import (
    MAX_CAPABILITIES,
    MAX_TEXT_LENGTH,
    PRIORITY_RANGE,
    SETTABLE_STATUSES,
    Status,
    is_capability,
)

RequestId = Union[str, int, None]
MAX_TOKEN_LENGTH = 8192
MAX_IDENTITIES_PER_REQUEST = 100
_INT64 = 2**63


# -- field readers -------------------------------------------------------------


def _invalid(name: str, why: str) -> RemoteProtocolError:
    return RemoteProtocolError(ErrorCode.FRAME_INVALID_FIELD, f"'{name}' {why}")


def request_id(obj: Mapping[str, Any]) -> RequestId:
    """The frame's request id: a string of at most 64 characters or an integer."""
    rid = obj.get("id")
    if rid is None:
        return None
    if isinstance(rid, str) and len(rid) <= 64:
        return rid
    if isinstance(rid, int) and not isinstance(rid, bool) and -_INT64 <= rid < _INT64:
        return rid
    raise _invalid("id", "must be a string of at most 64 characters or an integer")


def _str(obj: Mapping[str, Any], name: str, *, required: bool = False, max_len: int = 256) -> str | None:
    value = obj.get(name)
    if value is None:
        if required:
            raise _invalid(name, "is required")
        return None
    if not isinstance(value, str):
        raise _invalid(name, "must be a string")
    if len(value) > max_len:
        raise _invalid(name, f"is longer than {max_len} characters")
    return value


def _status(obj: Mapping[str, Any]) -> Status | None:
    value = obj.get("status")
    if value is None:
        return None
    try:
        status = Status(value)
    except ValueError:
        status = None
    if status not in SETTABLE_STATUSES:
        raise RemoteProtocolError(ErrorCode.STATUS_INVALID, f"status {str(value)[:32]!r} is not one of available, away, busy, dnd")
    return status


def _priority(obj: Mapping[str, Any]) -> int | None:
    value = obj.get("priority")
    if value is None:
        return None
    lo, hi = PRIORITY_RANGE
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise _invalid("priority", f"must be an integer from {lo} to {hi}")
    return value


def _capabilities(obj: Mapping[str, Any]) -> tuple[str, ...] | None:
    value = obj.get("capabilities")
    if value is None:
        return None
    if not isinstance(value, list) or len(value) > MAX_CAPABILITIES or not all(is_capability(c) for c in value):
        raise _invalid(
            "capabilities",
            f"must be a list of at most {MAX_CAPABILITIES} names (lowercase letters, digits, _ and -)",
        )
    return tuple(dict.fromkeys(value))  # de-duplicated, order kept


def _identities(obj: Mapping[str, Any]) -> tuple[str, ...]:
    value = obj.get("identities")
    if not isinstance(value, list) or not value:
        raise _invalid("identities", "must be a non-empty list of identities")
    if len(value) > MAX_IDENTITIES_PER_REQUEST:
        raise _invalid("identities", f"holds more than {MAX_IDENTITIES_PER_REQUEST} identities")
    for item in value:
        problem = identity_problem(item)
        if problem:
            raise RemoteProtocolError(ErrorCode.IDENTITY_INVALID, f"{str(item)[:64]!r}: {problem}")
    return tuple(dict.fromkeys(value))


# -- client frames -------------------------------------------------------------


@dataclass(frozen=True)
class ClientFrame:
    TYPE: ClassVar[str] = ""
    id: RequestId = None


@dataclass(frozen=True)
class PresenceFields:
    status: Status | None = None
    text: str | None = None
    priority: int | None = None
    capabilities: tuple[str, ...] | None = None

    @staticmethod
    def read(obj: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "status": _status(obj),
            "text": _str(obj, "text", max_len=MAX_TEXT_LENGTH),
            "priority": _priority(obj),
            "capabilities": _capabilities(obj),
        }


@dataclass(frozen=True)
class Register(ClientFrame, PresenceFields):
    TYPE: ClassVar[str] = "register"
    token: str = ""
    resume: str | None = None  # the session id of a dropped session to take over

    @classmethod
    def parse(cls, obj: Mapping[str, Any]) -> Register:
        resume = _str(obj, "resume", max_len=34)
        if resume is not None and not is_sid(resume, "SE"):
            raise _invalid("resume", "must be a session id (SE + 32 hex digits)")
        token = _str(obj, "token", required=True, max_len=MAX_TOKEN_LENGTH)
        assert token is not None
        return cls(id=request_id(obj), token=token, resume=resume, **PresenceFields.read(obj))


@dataclass(frozen=True)
class SetPresence(ClientFrame, PresenceFields):
    TYPE: ClassVar[str] = "presence"

    @classmethod
    def parse(cls, obj: Mapping[str, Any]) -> SetPresence:
        fields = PresenceFields.read(obj)
        if all(v is None for v in fields.values()):
            raise _invalid("status", "or one of text, priority, capabilities is required")
        return cls(id=request_id(obj), **fields)


@dataclass(frozen=True)
class Subscribe(ClientFrame):
    TYPE: ClassVar[str] = "subscribe"
    identities: tuple[str, ...] = ()

    @classmethod
    def parse(cls, obj: Mapping[str, Any]) -> Subscribe:
        return cls(id=request_id(obj), identities=_identities(obj))


@dataclass(frozen=True)
class Unsubscribe(ClientFrame):
    TYPE: ClassVar[str] = "unsubscribe"
    identities: tuple[str, ...] = ()

    @classmethod
    def parse(cls, obj: Mapping[str, Any]) -> Unsubscribe:
        return cls(id=request_id(obj), identities=_identities(obj))


@dataclass(frozen=True)
class Ping(ClientFrame):
    TYPE: ClassVar[str] = "ping"

    @classmethod
    def parse(cls, obj: Mapping[str, Any]) -> Ping:
        return cls(id=request_id(obj))


@dataclass(frozen=True)
class UpdateToken(ClientFrame):
    TYPE: ClassVar[str] = "update_token"
    token: str = ""

    @classmethod
    def parse(cls, obj: Mapping[str, Any]) -> UpdateToken:
        token = _str(obj, "token", required=True, max_len=MAX_TOKEN_LENGTH)
        assert token is not None
        return cls(id=request_id(obj), token=token)


@dataclass(frozen=True)
class Bye(ClientFrame):
    TYPE: ClassVar[str] = "bye"

    @classmethod
    def parse(cls, obj: Mapping[str, Any]) -> Bye:
        return cls(id=request_id(obj))


# -- calls and messages (client side) ----------------------------------------------

MAX_CALL_PARAMS = 20


def _call_sid(obj: Mapping[str, Any]) -> str:
    value = obj.get("call")
    if not is_sid(value, "CA"):
        raise _invalid("call", "must be a call sid (CA + 32 hex digits)")
    assert isinstance(value, str)
    return value


def _params(obj: Mapping[str, Any]) -> dict[str, str]:
    value = obj.get("params")
    if value is None:
        return {}
    if (
        not isinstance(value, dict)
        or len(value) > MAX_CALL_PARAMS
        or not all(isinstance(k, str) and 0 < len(k) <= 64 and isinstance(v, str) and len(v) <= 1024 for k, v in value.items())
    ):
        raise _invalid("params", f"must be an object of at most {MAX_CALL_PARAMS} string values (names up to 64, values up to 1024 characters)")
    return dict(value)


def destination_problem(to: str) -> str | None:
    """A call's ``to``: ``client:<identity>``, an E.164 number, or a bare identity."""
    if is_e164(to):
        return None
    name = to[len("client:") :] if to.lower().startswith("client:") else to
    return identity_problem(name)


@dataclass(frozen=True)
class PlaceCall(ClientFrame):
    """The client calls someone: the application of its token's outgoing grant decides how."""

    TYPE: ClassVar[str] = "call"
    to: str = ""
    params: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, obj: Mapping[str, Any]) -> PlaceCall:
        to = _str(obj, "to", required=True, max_len=128)
        assert to is not None
        problem = destination_problem(to)
        if problem:
            raise RemoteProtocolError(ErrorCode.CALL_DESTINATION_INVALID, f"'to' {to[:64]!r}: {problem}")
        return cls(id=request_id(obj), to=to, params=_params(obj))


@dataclass(frozen=True)
class CallFrame(ClientFrame):
    call: str = ""

    @classmethod
    def parse(cls, obj: Mapping[str, Any]) -> Any:
        return cls(id=request_id(obj), call=_call_sid(obj))


@dataclass(frozen=True)
class Ringing(CallFrame):
    TYPE: ClassVar[str] = "ringing"


@dataclass(frozen=True)
class Accept(CallFrame):
    TYPE: ClassVar[str] = "accept"


@dataclass(frozen=True)
class Reject(CallFrame):
    TYPE: ClassVar[str] = "reject"
    reason: str = "rejected"

    @classmethod
    def parse(cls, obj: Mapping[str, Any]) -> Reject:
        reason = _str(obj, "reason", max_len=16) or "rejected"
        if reason not in ("rejected", "busy"):
            raise _invalid("reason", "must be 'rejected' or 'busy'")
        return cls(id=request_id(obj), call=_call_sid(obj), reason=reason)


@dataclass(frozen=True)
class Hangup(CallFrame):
    TYPE: ClassVar[str] = "hangup"


@dataclass(frozen=True)
class Signal(CallFrame):
    """SDP offers and answers, ICE candidates: relayed verbatim to the other leg."""

    TYPE: ClassVar[str] = "signal"
    payload: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, obj: Mapping[str, Any]) -> Signal:
        payload = obj.get("payload")
        if not isinstance(payload, dict):
            raise _invalid("payload", "must be an object")
        return cls(id=request_id(obj), call=_call_sid(obj), payload=payload)


@dataclass(frozen=True)
class Ack(ClientFrame):
    """The client has an in-app message (at-least-once delivery: ack every copy)."""

    TYPE: ClassVar[str] = "ack"
    sid: str = ""
    # True: the user has seen it (the message's status becomes 'read'); an ack
    # with read=true counts as the delivery ack too.
    read: bool = False

    @classmethod
    def parse(cls, obj: Mapping[str, Any]) -> Ack:
        sid = obj.get("sid")
        if not (is_sid(sid, "SM") or is_sid(sid, "MM")):
            raise _invalid("sid", "must be a message sid (SM or MM + 32 hex digits)")
        assert isinstance(sid, str)
        read = obj.get("read", False)
        if not isinstance(read, bool):
            raise _invalid("read", "must be true or false")
        return cls(id=request_id(obj), sid=sid, read=read)


CALL_FRAME_TYPES = frozenset({"call", "ringing", "accept", "reject", "hangup", "signal", "ack"})

CLIENT_FRAMES: dict[str, Any] = {
    c.TYPE: c
    for c in (Register, SetPresence, Subscribe, Unsubscribe, Ping, UpdateToken, Bye, PlaceCall, Ringing, Accept, Reject, Hangup, Signal, Ack)
}


def parse_client_frame(obj: Mapping[str, Any]) -> ClientFrame:
    """Build the frame object for a decoded client frame (which has a str 'type')."""
    frame_type = obj["type"]
    cls = CLIENT_FRAMES.get(frame_type)
    if cls is None:
        raise RemoteProtocolError(ErrorCode.FRAME_UNKNOWN_TYPE, f"unknown frame type {frame_type[:32]!r}")
    frame: ClientFrame = cls.parse(obj)
    return frame


# -- server frames -------------------------------------------------------------


@dataclass(frozen=True)
class ServerFrame:
    TYPE: ClassVar[str] = ""

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.TYPE}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None:
                out[f.name] = value
        return out


@dataclass(frozen=True)
class Registered(ServerFrame):
    TYPE: ClassVar[str] = "registered"
    id: RequestId = None
    session: str = ""
    account: str = ""
    identity: str = ""
    heartbeat: float = 0.0  # seconds between client pings
    idle_timeout: float = 0.0  # the server closes a session silent for this long
    expires: float = 0.0  # the token's expiry (epoch seconds)
    resumed: bool = False
    max_frame_bytes: int = 0


@dataclass(frozen=True)
class Error(ServerFrame):
    TYPE: ClassVar[str] = "error"
    code: int = 0
    message: str = ""
    id: RequestId = None
    fatal: bool = False

    @classmethod
    def of(cls, exc: RemoteProtocolError, request: RequestId = None) -> Error:
        return cls(code=exc.error.code, message=exc.message, id=request, fatal=exc.error.fatal)


@dataclass(frozen=True)
class Ok(ServerFrame):
    TYPE: ClassVar[str] = "ok"
    id: RequestId = None


@dataclass(frozen=True)
class Pong(ServerFrame):
    TYPE: ClassVar[str] = "pong"
    id: RequestId = None


@dataclass(frozen=True)
class Subscribed(ServerFrame):
    TYPE: ClassVar[str] = "subscribed"
    id: RequestId = None
    presences: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class TokenUpdated(ServerFrame):
    TYPE: ClassVar[str] = "token_updated"
    id: RequestId = None
    expires: float = 0.0
    unsubscribed: list[str] | None = None  # subscriptions the new token no longer grants


@dataclass(frozen=True)
class TokenExpiring(ServerFrame):
    TYPE: ClassVar[str] = "token_expiring"
    expires: float = 0.0
    seconds_left: float = 0.0


@dataclass(frozen=True)
class PresenceUpdate(ServerFrame):
    """A subscribed identity's merged presence changed. ``version`` grows per
    identity, so a client can drop an update older than one it has."""

    TYPE: ClassVar[str] = "presence_update"
    identity: str = ""
    status: str = ""
    text: str = ""
    last_seen: float | None = None
    sessions: list[dict[str, Any]] = field(default_factory=list)
    version: int = 0

    def to_wire(self) -> dict[str, Any]:
        # last_seen is kept even when None: it is part of the presence object.
        return {
            "type": self.TYPE,
            "identity": self.identity,
            "status": self.status,
            "text": self.text,
            "last_seen": self.last_seen,
            "sessions": self.sessions,
            "version": self.version,
        }


@dataclass(frozen=True)
class Reconnect(ServerFrame):
    """The server is going away: reconnect (with the given delay and jitter)."""

    TYPE: ClassVar[str] = "reconnect"
    reason: str = ""
    retry_after: float = 0.0


@dataclass(frozen=True)
class CallCreated(ServerFrame):
    """The answer to ``call``: the call exists; progress follows as ``call_progress``."""

    TYPE: ClassVar[str] = "call_created"
    id: RequestId = None
    call: str = ""


@dataclass(frozen=True)
class Invite(ServerFrame):
    TYPE: ClassVar[str] = "invite"
    call: str = ""
    parent_call: str | None = None
    to: str = ""
    params: dict[str, str] = field(default_factory=dict)
    sdp: str | None = None  # an offer that came with a carrier call, if any

    caller: str = ""  # 'from' on the wire (a Python keyword)

    def to_wire(self) -> dict[str, Any]:
        out = super().to_wire()
        out["from"] = out.pop("caller")
        return out


@dataclass(frozen=True)
class Cancel(ServerFrame):
    """Stop ringing: answered on another device, the caller gave up, or time ran out."""

    TYPE: ClassVar[str] = "cancel"
    call: str = ""
    reason: str = ""  # answered_elsewhere | caller_hangup | timeout


@dataclass(frozen=True)
class CallProgress(ServerFrame):
    """To the caller: ringing, answered, completed (with a reason)."""

    TYPE: ClassVar[str] = "call_progress"
    call: str = ""
    status: str = ""
    reason: str | None = None


@dataclass(frozen=True)
class SignalRelay(ServerFrame):
    TYPE: ClassVar[str] = "signal"
    call: str = ""
    payload: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class HangupNotice(ServerFrame):
    TYPE: ClassVar[str] = "hangup"
    call: str = ""
    reason: str = ""  # remote_hangup | connection_lost | time_limit


@dataclass(frozen=True)
class CallWarning(ServerFrame):
    """Something in the call's instructions was skipped (say, a media verb on a
    leg without media capability)."""

    TYPE: ClassVar[str] = "call_warning"
    call: str = ""
    code: int = 0
    message: str = ""


@dataclass(frozen=True)
class InAppMessage(ServerFrame):
    TYPE: ClassVar[str] = "message"
    sid: str = ""
    to: str = ""
    body: str = ""
    media: list[str] = field(default_factory=list)
    caller: str = ""  # 'from' on the wire
    # The in-app variant's rich content (any JSON value), when the sender gave one.
    payload: Any = None

    def to_wire(self) -> dict[str, Any]:
        out = super().to_wire()
        out["from"] = out.pop("caller")
        return out


SERVER_FRAMES = (
    Registered, Error, Ok, Pong, Subscribed, TokenUpdated, TokenExpiring, PresenceUpdate, Reconnect,
    CallCreated, Invite, Cancel, CallProgress, SignalRelay, HangupNotice, CallWarning, InAppMessage,
)
