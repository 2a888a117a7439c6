"""The embedded engine's revoked API keys: the ``revoked_keys`` table of the
engine's SQLite file, so that a key revoked over REST stays revoked after a
restart."""

from __future__ import annotations

import sqlite3

from .database import SqliteDatabase


class SqliteKeyRevocations:
    """:class:`~presence_server.engines.ports.KeyRevocations` on the engine's SQLite file."""

    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db

    async def revoke(self, account_sid: str, key_sid: str, at: float) -> bool:
        def revoke(conn: sqlite3.Connection) -> bool:
            # OR IGNORE: the first revocation's time is the one kept.
            cursor = conn.execute(
                "INSERT OR IGNORE INTO revoked_keys (account_sid, key_sid, revoked_at) VALUES (?, ?, ?)",
                (account_sid, key_sid, at),
            )
            return cursor.rowcount == 1

        return await self._db.write(revoke)

    async def revoked(self, account_sid: str) -> dict[str, float]:
        rows = await self._db.read(
            lambda conn: conn.execute(
                "SELECT key_sid, revoked_at FROM revoked_keys WHERE account_sid = ?", (account_sid,)
            ).fetchall()
        )
        return {str(key): float(at) for key, at in rows}
