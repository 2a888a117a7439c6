"""What the SDK hands to applications: presences, updates, session facts.

These are the client's view of the wire objects in ``protocol.messages``.
The server's own ``protocol.presence.Presence`` does not fit here: its
sessions carry server-side fields (node, account, lease state) that subscribers
never receive, and it has no ``version``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from protocol.presence import Status

__all__ = [
    "CallMedia",
    "CallWarning",
    "DeviceSession",
    "Disconnect",
    "Message",
    "Presence",
    "PresenceUpdate",
    "SessionInfo",
    "Status",
]


def _num(value: Any, default: float = 0.0) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return default


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


@dataclass(frozen=True)
class DeviceSession:
    """One connected device of an identity, as subscribers see it."""

    session_id: str
    status: Status
    text: str = ""
    priority: int = 0
    capabilities: tuple[str, ...] = ()
    connected_at: float = 0.0
    last_activity: float = 0.0

    @classmethod
    def from_wire(cls, obj: Mapping[str, Any]) -> DeviceSession:
        caps = obj.get("capabilities")
        priority = obj.get("priority")
        return cls(
            session_id=_str(obj.get("session")),
            status=Status(obj.get("status")),
            text=_str(obj.get("text")),
            priority=priority if isinstance(priority, int) and not isinstance(priority, bool) else 0,
            capabilities=tuple(c for c in caps if isinstance(c, str)) if isinstance(caps, list) else (),
            connected_at=_num(obj.get("connected_at")),
            last_activity=_num(obj.get("last_activity")),
        )


@dataclass(frozen=True)
class Presence:
    """The merged presence of one identity: the best session's status and
    text, every session, and the version the server gave this state."""

    identity: str
    status: Status
    text: str = ""
    last_seen: float | None = None
    sessions: tuple[DeviceSession, ...] = ()
    version: int = 0

    @property
    def online(self) -> bool:
        """True when at least one session is connected (any status but offline)."""
        return self.status is not Status.OFFLINE

    @classmethod
    def from_wire(cls, obj: Mapping[str, Any]) -> Presence:
        """Parse a presence object (a ``subscribed`` entry or a
        ``presence_update`` frame). Raises ValueError / KeyError / TypeError on
        a malformed one."""
        identity = obj["identity"]
        if not isinstance(identity, str):
            raise TypeError("presence identity is not a string")
        sessions = obj.get("sessions") or []
        if not isinstance(sessions, list):
            raise TypeError("presence sessions is not a list")
        version = obj.get("version", 0)
        last_seen = obj.get("last_seen")
        return cls(
            identity=identity,
            status=Status(obj["status"]),
            text=_str(obj.get("text")),
            last_seen=_num(last_seen) if last_seen is not None else None,
            sessions=tuple(DeviceSession.from_wire(s) for s in sessions if isinstance(s, Mapping)),
            version=version if isinstance(version, int) and not isinstance(version, bool) else 0,
        )

    def same_state(self, other: Presence | None) -> bool:
        """Whether ``other`` shows subscribers the same thing.

        Mirrors the server's notion of a visible change
        (``protocol.presence.Presence.visible``): activity times and versions
        alone are not a change, or a resync after every reconnect would
        report every identity as changed.
        """
        if other is None:
            return False
        return self._visible() == other._visible()

    def _visible(self) -> tuple[Any, ...]:
        return (
            self.status,
            self.text,
            tuple((s.session_id, s.status, s.text, s.priority, s.capabilities) for s in self.sessions),
        )


@dataclass(frozen=True)
class PresenceUpdate:
    """A subscribed identity's presence changed.

    ``previous`` is the presence the client knew before (None if it knew
    none). ``resync`` is True when the change was found by comparing a fresh
    snapshot (after a reconnect) rather than pushed by the server: the
    intermediate states, if any, were missed while disconnected.
    """

    presence: Presence
    previous: Presence | None = None
    resync: bool = False

    @property
    def identity(self) -> str:
        return self.presence.identity

    @property
    def status(self) -> Status:
        return self.presence.status

    @property
    def text(self) -> str:
        return self.presence.text


@dataclass(frozen=True)
class SessionInfo:
    """This client's own registered session (the ``registered`` frame)."""

    session_id: str
    account_sid: str
    identity: str
    heartbeat: float  # seconds between pings the server asks for
    idle_timeout: float  # the server drops a session silent this long
    expires: float  # the current token's expiry, epoch seconds (server clock)
    resumed: bool  # True: the server kept the previous session (same session_id)
    max_frame_bytes: int

    @classmethod
    def from_wire(cls, obj: Mapping[str, Any]) -> SessionInfo:
        session = obj.get("session")
        if not isinstance(session, str) or not session:
            raise ValueError("registered frame without a session id")
        max_frame = obj.get("max_frame_bytes")
        return cls(
            session_id=session,
            account_sid=_str(obj.get("account")),
            identity=_str(obj.get("identity")),
            heartbeat=_num(obj.get("heartbeat")),
            idle_timeout=_num(obj.get("idle_timeout")),
            expires=_num(obj.get("expires")),
            resumed=bool(obj.get("resumed", False)),
            max_frame_bytes=max_frame if isinstance(max_frame, int) and not isinstance(max_frame, bool) else 0,
        )


@dataclass(frozen=True)
class Disconnect:
    """Why a connection ended, passed to ``on_disconnect``.

    ``code`` is the WebSocket close code (1006: the connection dropped without
    one), ``error`` the server's error frame that preceded the close, if any,
    and ``will_reconnect`` whether the client is about to try again.
    """

    code: int | None
    reason: str
    will_reconnect: bool
    error: Exception | None = None


@dataclass(frozen=True)
class Message:
    """An in-app message for this client (the ``message`` frame).

    ``from_`` is the sender (a number, or ``client:<identity>``), ``to`` this
    client's address (``client:<identity>``), ``media`` the media URLs. The
    SDK acknowledges it once it has been handed to the application (see the
    README, "In-app messages")."""

    sid: str
    from_: str
    to: str
    body: str = ""
    media: tuple[str, ...] = ()

    @classmethod
    def from_wire(cls, obj: Mapping[str, Any]) -> Message:
        """Parse a ``message`` frame; ValueError when it has no sid."""
        sid = obj.get("sid")
        if not isinstance(sid, str) or not sid:
            raise ValueError("message frame without a sid")
        media = obj.get("media")
        return cls(
            sid=sid,
            from_=_str(obj.get("from")),
            to=_str(obj.get("to")),
            body=_str(obj.get("body")),
            media=tuple(u for u in media if isinstance(u, str)) if isinstance(media, list) else (),
        )


@dataclass(frozen=True)
class CallWarning:
    """Something in a call's instructions was skipped (the ``call_warning``
    frame): ``code`` from docs/instructions.md (13000: a media verb skipped
    on a leg without media capability, ...)."""

    code: int
    message: str


@dataclass(frozen=True)
class CallMedia:
    """A media verb for a caller leg that plays media itself (declared the
    ``media`` capability): ``verb`` is its name (``Say``, ``Play``, ...),
    ``attributes`` its fields."""

    verb: str
    attributes: Mapping[str, Any]
