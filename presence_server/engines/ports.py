"""Engine ports: everything the services need from storage and from other nodes.

Two engines implement them - ``memory`` (one process) and ``redis`` (many) -
and one contract test suite (tests/contract/) holds both to the same
behaviour. Services only ever see these interfaces.

Bus messages are plain data (dicts of str, int, float, bool, None, lists and
dicts): the redis engine sends them as msgpack, and the memory engine
round-trips them through msgpack too, so a message that would not survive
Redis fails in the embedded engine's tests as well.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Protocol, Sequence

from protocol.presence import SessionPresence


@dataclass(frozen=True)
class SessionKey:
    account_sid: str
    identity: str
    session_id: str


@dataclass(frozen=True)
class IdentityChange:
    """One atomic change to an identity's sessions, with the sessions before
    and after it and the identity's presence version after it."""

    account_sid: str
    identity: str
    before: tuple[SessionPresence, ...]
    after: tuple[SessionPresence, ...]
    version: int
    last_seen: float | None


@dataclass(frozen=True)
class IdentitySnapshot:
    identity: str
    sessions: tuple[SessionPresence, ...]
    version: int
    last_seen: float | None


class PresenceStore(Protocol):
    """Sessions per identity, each with a lease; a version counter per identity."""

    async def upsert(self, session: SessionPresence, lease_expires: float) -> IdentityChange:
        """Insert the session, or replace the one with its session id (a resume
        or a presence change). Bumps the identity's version."""

    async def remove(self, key: SessionKey, now: float) -> IdentityChange | None:
        """Remove a session (None if it was not there). Records last_seen = now
        when it was the identity's last session."""

    async def linger(self, key: SessionKey, until: float, now: float) -> IdentityChange | None:
        """Mark a session as lingering (its connection dropped at ``now``) with
        its lease cut to ``until``; it is removed then unless resumed first."""

    async def renew(self, keys: Sequence[SessionKey], lease_expires: float) -> None:
        """Extend the leases of these (non-lingering) sessions, in one batch."""

    async def sweep(self, now: float, limit: int = 1000) -> list[IdentityChange]:
        """Remove up to ``limit`` sessions whose lease ended. Each removed
        session is in exactly one returned change, even with many sweepers."""

    async def get(self, key: SessionKey) -> SessionPresence | None: ...

    async def snapshot(self, account_sid: str, identities: Iterable[str]) -> list[IdentitySnapshot]:
        """The sessions, version and last_seen of each identity, in order."""


MessageHandler = Callable[[dict[str, Any]], None]


class Subscription(Protocol):
    async def close(self) -> None: ...


class Bus(Protocol):
    """Publish/subscribe between nodes: per-account topics and per-node addresses.

    Delivery is in publish order per topic, at most once (a node that is not
    subscribed when a message is published does not get it). Handlers are
    plain functions, called one at a time, that must not block.
    """

    async def publish(self, topic: str, message: dict[str, Any]) -> None: ...

    async def subscribe(self, topic: str, handler: MessageHandler) -> Subscription: ...


def presence_topic(account_sid: str) -> str:
    return f"presence:{account_sid}"


def node_topic(node_id: str) -> str:
    return f"node:{node_id}"


class Engine(Protocol):
    presence: PresenceStore
    bus: Bus

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def ready(self) -> bool:
        """True while the engine can serve (for /readyz)."""


class EngineUnavailable(Exception):
    """The engine cannot serve right now (for example, Redis is unreachable).
    Entry points answer it with a temporary error; nothing is half-done."""
