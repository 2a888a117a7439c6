"""What a client follows and what it knows of it, without I/O.

The book holds the subscribed identities (with their callbacks), the last
presence known for each, and the open update streams. It is fed parsed
snapshots and updates and answers with the :class:`PresenceUpdate` objects to
deliver, having applied the version and de-duplication rules.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

from .models import Presence, PresenceUpdate
from .stream import PresenceUpdateStream

UpdateCallback = Callable[[PresenceUpdate], Any]  # may return an awaitable


class SubscriptionBook:
    def __init__(self) -> None:
        self._callbacks: dict[str, list[UpdateCallback]] = {}  # insertion order = subscription order
        self._presences: dict[str, Presence] = {}
        self.streams: set[PresenceUpdateStream] = set()

    # -- subscriptions ------------------------------------------------------------------

    @property
    def identities(self) -> tuple[str, ...]:
        return tuple(self._callbacks)

    def __contains__(self, identity: object) -> bool:
        return identity in self._callbacks

    def add(self, identities: Iterable[str], callback: UpdateCallback | None) -> list[str]:
        """Subscribe (locally); returns the identities that were new."""
        added = []
        for identity in identities:
            if identity not in self._callbacks:
                self._callbacks[identity] = []
                added.append(identity)
            if callback is not None and callback not in self._callbacks[identity]:
                self._callbacks[identity].append(callback)
        return added

    def undo_add(self, identities: Iterable[str], added: Iterable[str], callback: UpdateCallback | None) -> None:
        """Take back an :meth:`add` the server refused."""
        self.remove(added)
        if callback is not None:
            for identity in identities:
                callbacks = self._callbacks.get(identity)
                if callbacks is not None and callback in callbacks:
                    callbacks.remove(callback)

    def remove(self, identities: Iterable[str]) -> list[str]:
        """Unsubscribe (locally); returns the identities that were subscribed."""
        gone = []
        for identity in identities:
            if self._callbacks.pop(identity, None) is not None:
                self._presences.pop(identity, None)
                gone.append(identity)
        return gone

    def callbacks(self, identity: str) -> list[UpdateCallback]:
        return list(self._callbacks.get(identity, ()))

    def presence_of(self, identity: str) -> Presence | None:
        return self._presences.get(identity)

    # -- what the server says ---------------------------------------------------------------

    def apply_snapshot(self, presences: Iterable[Presence]) -> list[PresenceUpdate]:
        """A ``subscribed`` snapshot: the new baseline for each identity.

        The baseline's version is the snapshot's, even when lower than the
        last one seen: a restarted server counts versions from the start
        again. An identity whose visible state differs from what was known
        (after a reconnect, say) yields an update marked ``resync``.
        """
        updates = []
        for presence in presences:
            if presence.identity not in self._callbacks:
                continue  # unsubscribed while the snapshot was on its way
            previous = self._presences.get(presence.identity)
            self._presences[presence.identity] = presence
            if previous is not None and not presence.same_state(previous):
                updates.append(PresenceUpdate(presence, previous, resync=True))
        return updates

    def apply_update(self, presence: Presence) -> PresenceUpdate | None:
        """A ``presence_update``; None when it is not to be delivered: not
        subscribed (any more), or not newer than what is known."""
        if presence.identity not in self._callbacks:
            return None
        previous = self._presences.get(presence.identity)
        if previous is not None and presence.version <= previous.version:
            return None
        self._presences[presence.identity] = presence
        return PresenceUpdate(presence, previous)

    # -- streams ------------------------------------------------------------------------------

    def to_streams(self, update: PresenceUpdate) -> None:
        for stream in list(self.streams):
            stream._put(update)

    def end_streams(self) -> None:
        for stream in list(self.streams):
            stream._end()
        self.streams.clear()
