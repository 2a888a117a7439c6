"""The presence service: sessions come, change and go; subscribers hear of it.

Every change goes through the engine's presence store as one atomic step
that returns the identity's sessions before and after; when the merged
presence that subscribers see differs, the change is published on the
account's presence topic with the identity's new version.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable, Sequence

import structlog

from protocol.presence import Presence, SessionPresence, Status, merge

from ..clock import Clock
from ..config import PresenceConfig
from ..engines.ports import Engine, IdentityChange, SessionKey, presence_topic

log = structlog.get_logger(__name__)


def key_of(session: SessionPresence) -> SessionKey:
    return SessionKey(session.account_sid, session.identity, session.session_id)


@dataclasses.dataclass(frozen=True)
class VersionedPresence:
    presence: Presence
    version: int

    def to_wire(self) -> dict[str, object]:
        return {**self.presence.to_wire(), "version": self.version}


class PresenceService:
    def __init__(self, engine: Engine, clock: Clock, config: PresenceConfig) -> None:
        self._store = engine.presence
        self._bus = engine.bus
        self._clock = clock
        self.config = config

    def _lease(self) -> float:
        return self._clock.time() + self.config.lease_ttl

    async def _publish(self, change: IdentityChange | None) -> None:
        if change is None:
            return
        topic = presence_topic(change.account_sid)
        if not self._bus.may_have_listeners(topic):
            return  # nobody watches this account anywhere: no merge, no encoding
        before = merge(change.identity, change.before, change.last_seen)
        after = merge(change.identity, change.after, change.last_seen)
        if before.visible() == after.visible():
            return
        await self._bus.publish(
            topic,
            {"identity": change.identity, "presence": after.to_wire(), "version": change.version},
        )

    async def connect(self, session: SessionPresence) -> None:
        """A registered session (new, or resumed under its old id) is present."""
        await self._publish(await self._store.upsert(session, self._lease()))

    async def change(
        self,
        key: SessionKey,
        *,
        status: Status | None = None,
        text: str | None = None,
        priority: int | None = None,
        capabilities: tuple[str, ...] | None = None,
    ) -> SessionPresence | None:
        current = await self._store.get(key)
        if current is None:
            return None
        updates = {"status": status, "text": text, "priority": priority, "capabilities": capabilities}
        updated = dataclasses.replace(
            current,
            last_activity=self._clock.time(),
            lingering=False,
            **{k: v for k, v in updates.items() if v is not None},
        )
        await self._publish(await self._store.upsert(updated, self._lease()))
        return updated

    async def leave(self, key: SessionKey) -> None:
        """The client said bye: gone at once, no grace period."""
        await self._publish(await self._store.remove(key, self._clock.time()))

    async def drop(self, key: SessionKey) -> None:
        """The connection was lost: keep the session through the grace period,
        so a quick reconnect (resume) causes no offline/online flap."""
        now = self._clock.time()
        if self.config.grace_period <= 0:
            await self._publish(await self._store.remove(key, now))
        else:
            await self._publish(await self._store.linger(key, now + self.config.grace_period, now))

    async def get(self, key: SessionKey) -> SessionPresence | None:
        return await self._store.get(key)

    async def query(self, account_sid: str, identities: Iterable[str]) -> list[VersionedPresence]:
        snaps = await self._store.snapshot(account_sid, identities)
        return [VersionedPresence(merge(s.identity, s.sessions, s.last_seen), s.version) for s in snaps]

    async def renew(self, keys: Sequence[SessionKey]) -> list[SessionKey]:
        """Extend these sessions' leases; returns those the store lost (an engine
        outage), for the caller to re-assert with :meth:`connect`."""
        if not keys:
            return []
        return await self._store.renew(keys, self._lease())

    async def sweep(self) -> int:
        """Remove sessions whose lease ended (dead nodes, ended grace periods)."""
        changes = await self._store.sweep(self._clock.time())
        for change in changes:
            await self._publish(change)
        if changes:
            log.debug("swept expired sessions", count=len(changes))
        return len(changes)
