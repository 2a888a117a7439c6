"""The embedded engine: everything in this process, nothing else to run."""

from __future__ import annotations

from .bus import MemoryBus
from .presence import MemoryPresenceStore


class MemoryEngine:
    kind = "memory"

    def __init__(self) -> None:
        self.presence = MemoryPresenceStore()
        self.bus = MemoryBus()

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def ready(self) -> bool:
        return True
