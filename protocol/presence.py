"""The presence model: statuses, one session's presence, and the merge.

An identity may be connected from many devices (sessions). What others see
is the merge: the session with the best status wins, ties broken by the
higher priority, then by the most recent activity. The winner's status and
text are the identity's; every session is listed as well.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from typing import Any, Iterable


class Status(str, enum.Enum):
    AVAILABLE = "available"
    AWAY = "away"
    BUSY = "busy"
    DND = "dnd"
    OFFLINE = "offline"


# Lower is better. 'away' outranks 'busy': an away device is idle but would
# take a call, a busy one is occupied. 'dnd' asks not to be disturbed at all.
STATUS_RANK = {Status.AVAILABLE: 0, Status.AWAY: 1, Status.BUSY: 2, Status.DND: 3, Status.OFFLINE: 4}

# What a client may set. 'offline' is never set: it is what an identity with
# no sessions is.
SETTABLE_STATUSES = frozenset({Status.AVAILABLE, Status.AWAY, Status.BUSY, Status.DND})

MAX_TEXT_LENGTH = 256
PRIORITY_RANGE = (-128, 127)
MAX_CAPABILITIES = 16
_CAPABILITY_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
KNOWN_CAPABILITIES = ("voice", "video", "messaging", "media", "data")


def is_capability(value: object) -> bool:
    return isinstance(value, str) and _CAPABILITY_RE.match(value) is not None


@dataclass(frozen=True)
class SessionPresence:
    """One device session of an identity, as stored and as shown."""

    session_id: str
    account_sid: str
    identity: str
    node_id: str
    status: Status = Status.AVAILABLE
    text: str = ""
    priority: int = 0
    capabilities: tuple[str, ...] = ()
    connected_at: float = 0.0
    last_activity: float = 0.0
    # True between a connection loss and the end of the reconnect grace
    # period: still counted (so subscribers see no flap), but not reachable.
    lingering: bool = False

    def to_wire(self) -> dict[str, Any]:
        return {
            "session": self.session_id,
            "status": self.status.value,
            "text": self.text,
            "priority": self.priority,
            "capabilities": list(self.capabilities),
            "connected_at": self.connected_at,
            "last_activity": self.last_activity,
        }


@dataclass(frozen=True)
class Presence:
    """The merged presence of one identity."""

    identity: str
    status: Status
    text: str = ""
    last_seen: float | None = None
    sessions: tuple[SessionPresence, ...] = field(default=())

    def to_wire(self) -> dict[str, Any]:
        return {
            "identity": self.identity,
            "status": self.status.value,
            "text": self.text,
            "last_seen": self.last_seen,
            "sessions": [s.to_wire() for s in self.sessions],
        }

    def visible(self) -> tuple[Any, ...]:
        """What subscribers are told about; a change here is a notification.

        Activity times alone do not notify, or every heartbeat would.
        """
        return (
            self.status,
            self.text,
            tuple((s.session_id, s.status, s.text, s.priority, s.capabilities) for s in self.sessions),
        )


def _winner_key(s: SessionPresence) -> tuple[int, int, float]:
    return (STATUS_RANK[s.status], -s.priority, -s.last_activity)


def merge(identity: str, sessions: Iterable[SessionPresence], last_seen: float | None = None) -> Presence:
    """Merge an identity's sessions. ``last_seen`` is used when there are none."""
    ordered = tuple(sorted(sessions, key=_winner_key))
    if not ordered:
        return Presence(identity, Status.OFFLINE, "", last_seen, ())
    best = ordered[0]
    seen = max(s.last_activity for s in ordered)
    return Presence(identity, best.status, best.text, seen, ordered)
