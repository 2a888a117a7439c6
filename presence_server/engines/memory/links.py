"""The embedded engine's tracked links: the ``links`` and ``clicks`` tables of
the engine's SQLite file."""

from __future__ import annotations

import sqlite3
from typing import Any, Sequence

from ..outbound import LinkStats, TrackedLink
from .database import SqliteDatabase

USER_AGENT_MAX = 512

_COLUMNS = "code, url, account_sid, message_sid, created_at, broadcast_sid, content_version"


def _link(row: tuple[Any, ...]) -> TrackedLink:
    return TrackedLink(*row)


class SqliteLinkStore:
    """:class:`~presence_server.engines.outbound.LinkStore` on the engine's SQLite file."""

    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db

    async def add(self, links: Sequence[TrackedLink]) -> None:
        rows = [
            (link.code, link.url, link.account_sid, link.message_sid, link.created_at, link.broadcast_sid, link.content_version)
            for link in links
        ]
        if not rows:
            return
        sql = f"INSERT INTO links ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"
        try:
            # One savepoint: a code already stored (or twice in ``links``) stores none.
            await self._db.write(lambda conn: conn.executemany(sql, rows))
        except sqlite3.IntegrityError:
            raise ValueError("a link code of this batch is already stored") from None

    async def get(self, code: str) -> TrackedLink | None:
        row = await self._db.read(lambda conn: conn.execute(f"SELECT {_COLUMNS} FROM links WHERE code = ?", (code,)).fetchone())
        return None if row is None else _link(row)

    async def click(self, code: str, at: float, user_agent: str) -> TrackedLink | None:
        agent = user_agent[:USER_AGENT_MAX]

        def click(conn: sqlite3.Connection) -> TrackedLink | None:
            row = conn.execute(f"SELECT {_COLUMNS} FROM links WHERE code = ?", (code,)).fetchone()
            if row is None:
                return None
            conn.execute("INSERT INTO clicks (code, at, user_agent) VALUES (?, ?, ?)", (code, at, agent))
            return _link(row)

        return await self._db.write(click)

    async def clicks(self, account_sid: str, code: str, limit: int = 100) -> list[tuple[float, str]]:
        if limit < 0:
            raise ValueError("limit must not be negative")
        sql = (
            "SELECT c.at, c.user_agent FROM clicks c JOIN links l ON l.code = c.code"
            " WHERE c.code = ? AND l.account_sid = ? ORDER BY c.at DESC, c.seq DESC LIMIT ?"
        )
        rows = await self._db.read(lambda conn: conn.execute(sql, (code, account_sid, limit)).fetchall())
        return [(float(at), str(agent)) for at, agent in rows]

    async def broadcast_stats(self, account_sid: str, broadcast_sid: str) -> list[LinkStats]:
        # Every content version with links in the broadcast, even one never clicked (0, 0).
        sql = (
            "SELECT l.content_version, COUNT(c.seq), COUNT(DISTINCT CASE WHEN c.seq IS NOT NULL THEN l.message_sid END)"
            " FROM links l LEFT JOIN clicks c ON c.code = l.code"
            " WHERE l.broadcast_sid = ? AND l.account_sid = ?"
            " GROUP BY l.content_version ORDER BY l.content_version IS NOT NULL, l.content_version"
        )
        rows = await self._db.read(lambda conn: conn.execute(sql, (broadcast_sid, account_sid)).fetchall())
        return [LinkStats(content_version=v, clicks=int(c), unique=int(u)) for v, c, u in rows]
