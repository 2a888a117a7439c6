"""Every SQLite file the server opens gets the same settings (presence_server/sqlite_files.py),
checked on the live connections of the embedded engine and of the outbox provider."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from presence_server import sqlite_files
from presence_server.carriers.outbox import OutboxProvider
from presence_server.config import ProviderConfig
from presence_server.engines.memory import MemoryEngine

SETTINGS = ("journal_mode", "synchronous", "busy_timeout", "cache_size")
EXPECTED = ("wal", 1, sqlite_files.BUSY_TIMEOUT_MS, -sqlite_files.CACHE_KIB)  # synchronous 1 = NORMAL


def settings(conn: sqlite3.Connection) -> tuple[object, ...]:
    return tuple(conn.execute(f"PRAGMA {name}").fetchone()[0] for name in SETTINGS)


async def test_the_engine_database_is_opened_with_the_shared_settings(tmp_path: Path) -> None:
    engine = MemoryEngine(data_dir=str(tmp_path))
    await engine.start()
    try:
        assert await engine.database.read(settings) == EXPECTED
    finally:
        await engine.close()


async def test_the_outbox_is_opened_with_the_shared_settings(tmp_path: Path) -> None:
    provider = OutboxProvider(ProviderConfig(name="outbox"), data_dir=str(tmp_path))
    await provider.start()
    try:
        assert await provider._run(settings) == EXPECTED
    finally:
        await provider.close()


def test_the_cache_bound_is_per_connection_in_kib(tmp_path: Path) -> None:
    conn = sqlite_files.connect(tmp_path / "x.sqlite3")
    try:
        # Negative means KiB: 2048 KiB whatever the page size, not 2048 pages (8 MiB at 4 KiB).
        assert conn.execute("PRAGMA cache_size").fetchone()[0] == -2048
        assert conn.isolation_level is None  # autocommit: the callers BEGIN themselves
    finally:
        conn.close()
