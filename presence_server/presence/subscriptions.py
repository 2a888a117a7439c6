"""This node's presence subscriptions, fed from the accounts' presence topics.

A node listens to an account's topic while at least one of its sessions
watches an identity of that account. Updates reach each watcher in version
order: an update older than what the watcher has is dropped, and updates that
arrive while a watcher's snapshot is being taken are held and replayed after
it, so nothing between the snapshot and the first update is lost.
"""

from __future__ import annotations

from typing import Any, Protocol

from protocol.messages import PresenceUpdate

from ..engines.ports import Bus, Subscription, presence_topic


class Watcher(Protocol):
    def send_frame(self, frame: PresenceUpdate, cache: dict[str, Any] | None = None) -> None: ...




class SubscriptionHub:
    def __init__(self, bus: Bus) -> None:
        self._bus = bus
        self._watchers: dict[tuple[str, str], dict[Watcher, int | list[PresenceUpdate]]] = {}
        self._topics: dict[str, Subscription] = {}
        self._account_refs: dict[str, int] = {}

    async def watch(self, watcher: Watcher, account_sid: str, identities: tuple[str, ...]) -> list[str]:
        """Start holding updates for these identities; returns the ones that
        were new for this watcher. Follow with :meth:`snapshot_sent`."""
        if account_sid not in self._topics:
            self._topics[account_sid] = await self._bus.subscribe(
                presence_topic(account_sid), lambda msg, a=account_sid: self._on_update(a, msg)
            )
        added = []
        for identity in identities:
            watchers = self._watchers.setdefault((account_sid, identity), {})
            if watcher not in watchers:
                watchers[watcher] = []
                self._account_refs[account_sid] = self._account_refs.get(account_sid, 0) + 1
                added.append(identity)
        return added

    def snapshot_sent(self, watcher: Watcher, account_sid: str, versions: dict[str, int]) -> None:
        """The watcher has these versions; replay what was held since."""
        for identity, version in versions.items():
            watchers = self._watchers.get((account_sid, identity))
            if watchers is None or watcher not in watchers:
                continue
            held = watchers[watcher]
            last = version
            if isinstance(held, list):
                for update in held:
                    if update.version > last:
                        watcher.send_frame(update)
                        last = update.version
            elif held > last:
                last = held
            watchers[watcher] = last

    async def unwatch(self, watcher: Watcher, account_sid: str, identities: tuple[str, ...]) -> None:
        for identity in identities:
            watchers = self._watchers.get((account_sid, identity))
            if watchers is not None and watchers.pop(watcher, None) is not None:
                self._account_refs[account_sid] -= 1
                if not watchers:
                    del self._watchers[(account_sid, identity)]
        if self._account_refs.get(account_sid, 0) <= 0:
            self._account_refs.pop(account_sid, None)
            sub = self._topics.pop(account_sid, None)
            if sub is not None:
                await sub.close()

    def _on_update(self, account_sid: str, message: dict[str, Any]) -> None:
        watchers = self._watchers.get((account_sid, message["identity"]))
        if not watchers:
            return
        presence = message["presence"]
        update = PresenceUpdate(
            identity=presence["identity"],
            status=presence["status"],
            text=presence["text"],
            last_seen=presence["last_seen"],
            sessions=presence["sessions"],
            version=message["version"],
        )
        cache: dict[str, Any] = {}  # encoded once per subprotocol, sent to every watcher
        for watcher, state in watchers.items():
            if isinstance(state, list):
                state.append(update)
            elif update.version > state:
                watchers[watcher] = update.version
                watcher.send_frame(update, cache)

    async def close(self) -> None:
        for sub in self._topics.values():
            await sub.close()
        self._topics.clear()
        self._watchers.clear()
        self._account_refs.clear()
