"""The embedded engine: everything in this process, nothing else to run.

Presence and the bus live in memory; message records, which must survive a
restart, live in a SQLite file under ``data_dir`` (None: a private temporary
directory, removed on close).
"""

from __future__ import annotations

from .bus import MemoryBus
from .calls import MemoryCallStore
from .messages import SqliteMessageStore
from .presence import MemoryPresenceStore


class MemoryEngine:
    kind = "memory"

    def __init__(self, data_dir: str | None = None) -> None:
        self.presence = MemoryPresenceStore()
        self.bus = MemoryBus()
        self.messages = SqliteMessageStore(data_dir)
        self.calls = MemoryCallStore()

    async def start(self) -> None:
        await self.messages.open()

    async def close(self) -> None:
        await self.messages.close()

    async def ready(self) -> bool:
        return True
