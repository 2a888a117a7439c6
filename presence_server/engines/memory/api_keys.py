"""The embedded engine's API keys created at run time: the ``api_keys`` table of
the engine's SQLite file, so that a key created over REST survives a restart."""

from __future__ import annotations

import sqlite3

from ..ports import CreatedApiKey
from .database import SqliteDatabase


class SqliteApiKeyStore:
    """:class:`~presence_server.engines.ports.ApiKeyStore` on the engine's SQLite file."""

    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db

    async def create(self, key: CreatedApiKey) -> bool:
        def create(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(
                "INSERT OR IGNORE INTO api_keys (account_sid, key_sid, friendly_name, secret, date_created) VALUES (?, ?, ?, ?, ?)",
                (key.account_sid, key.sid, key.friendly_name, key.secret, key.date_created),
            )
            return cursor.rowcount == 1

        return await self._db.write(create)

    async def list(self, account_sid: str) -> list[CreatedApiKey]:
        rows = await self._db.read(
            lambda conn: conn.execute(
                "SELECT key_sid, friendly_name, secret, date_created FROM api_keys WHERE account_sid = ? ORDER BY date_created, key_sid",
                (account_sid,),
            ).fetchall()
        )
        return [CreatedApiKey(str(sid), account_sid, str(name), str(secret), float(at)) for sid, name, secret, at in rows]
