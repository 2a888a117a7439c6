"""The embedded engine's presence store: dicts in this process.

Every method runs without awaiting anything, so each is atomic with respect
to the event loop, which is what the port asks of "one atomic change".
"""

from __future__ import annotations

import dataclasses
import heapq
from typing import Iterable, Sequence

from protocol.presence import SessionPresence

from ..ports import IdentityChange, IdentitySnapshot, SessionKey

_IdentityKey = tuple[str, str]


class MemoryPresenceStore:
    def __init__(self) -> None:
        self._sessions: dict[_IdentityKey, dict[str, SessionPresence]] = {}
        self._leases: dict[SessionKey, float] = {}
        self._versions: dict[_IdentityKey, int] = {}
        self._last_seen: dict[_IdentityKey, float] = {}
        # Expiry index: (lease end, key). Entries go stale when a lease is
        # renewed; the sweeper checks each against _leases before acting.
        self._expiry: list[tuple[float, int, SessionKey]] = []
        self._seq = 0

    def _index(self, key: SessionKey, until: float) -> None:
        self._leases[key] = until
        self._seq += 1
        heapq.heappush(self._expiry, (until, self._seq, key))

    def _change(self, ik: _IdentityKey, before: tuple[SessionPresence, ...]) -> IdentityChange:
        version = self._versions.get(ik, 0) + 1
        self._versions[ik] = version
        after = tuple(self._sessions.get(ik, {}).values())
        return IdentityChange(ik[0], ik[1], before, after, version, self._last_seen.get(ik))

    async def upsert(self, session: SessionPresence, lease_expires: float) -> IdentityChange:
        ik = (session.account_sid, session.identity)
        sessions = self._sessions.setdefault(ik, {})
        before = tuple(sessions.values())
        sessions[session.session_id] = session
        self._index(SessionKey(session.account_sid, session.identity, session.session_id), lease_expires)
        return self._change(ik, before)

    def _remove(self, key: SessionKey, seen_at: float) -> IdentityChange | None:
        ik = (key.account_sid, key.identity)
        sessions = self._sessions.get(ik)
        if not sessions or key.session_id not in sessions:
            return None
        before = tuple(sessions.values())
        gone = sessions.pop(key.session_id)
        self._leases.pop(key, None)
        if not sessions:
            del self._sessions[ik]
            self._last_seen[ik] = seen_at
        return self._change(ik, before)

    async def remove(self, key: SessionKey, now: float) -> IdentityChange | None:
        return self._remove(key, now)

    async def linger(self, key: SessionKey, until: float, now: float) -> IdentityChange | None:
        sessions = self._sessions.get((key.account_sid, key.identity))
        current = sessions.get(key.session_id) if sessions else None
        if current is None or sessions is None:
            return None
        before = tuple(sessions.values())
        sessions[key.session_id] = dataclasses.replace(current, lingering=True, last_activity=now)
        self._index(key, until)
        return self._change((key.account_sid, key.identity), before)

    async def renew(self, keys: Sequence[SessionKey], lease_expires: float) -> list[SessionKey]:
        missing = []
        for key in keys:
            sessions = self._sessions.get((key.account_sid, key.identity))
            current = sessions.get(key.session_id) if sessions else None
            if current is None:
                missing.append(key)
            elif not current.lingering:
                self._index(key, lease_expires)
        return missing

    async def sweep(self, now: float, limit: int = 1000) -> list[IdentityChange]:
        changes = []
        while self._expiry and self._expiry[0][0] <= now and len(changes) < limit:
            until, _, key = heapq.heappop(self._expiry)
            if self._leases.get(key) != until:
                continue  # renewed or removed since this entry was made
            gone = self._sessions[(key.account_sid, key.identity)][key.session_id]
            # A lingering session was last seen when its connection dropped; a
            # live one whose node stopped renewing, when its lease ran out.
            change = self._remove(key, gone.last_activity if gone.lingering else until)
            if change is not None:
                changes.append(change)
        return changes

    async def get(self, key: SessionKey) -> SessionPresence | None:
        sessions = self._sessions.get((key.account_sid, key.identity))
        return sessions.get(key.session_id) if sessions else None

    async def snapshot(self, account_sid: str, identities: Iterable[str]) -> list[IdentitySnapshot]:
        out = []
        for identity in identities:
            ik = (account_sid, identity)
            out.append(
                IdentitySnapshot(
                    identity,
                    tuple(self._sessions.get(ik, {}).values()),
                    self._versions.get(ik, 0),
                    self._last_seen.get(ik),
                )
            )
        return out

    async def identities(self, account_sid: str, limit: int = 1000) -> list[str]:
        # A scan of every identity: the directory is asked for rarely (a page
        # load, a dashboard refresh), while sessions change all the time.
        return sorted(identity for (account, identity), sessions in self._sessions.items() if account == account_sid and sessions)[:limit]
