"""The embedded engine: everything in this process, nothing else to run.

Presence and the bus live in memory. Everything that must survive a restart -
message records, broadcasts, the send queue, carrier submissions, tracked
links, routing statistics, API keys created and revoked at run time - lives in one SQLite file under ``data_dir``
(``messages.sqlite3``; None: a private temporary directory, removed on close),
on one thread with group commit (see :mod:`.database`, and :mod:`.schema` for
the tables and their migrations).

The file belongs to this one process. So when the engine starts, no live
worker can hold a lease on a send job in it: :meth:`MemoryEngine.start` drops
every lease, and after a restart - even a ``kill -9`` in the middle of a send -
the jobs that were being sent are claimable at once (sent at least once, as
the queue promises), not after their leases would have run out.
"""

from __future__ import annotations

from .bus import MemoryBus
from .calls import MemoryCallStore
from .database import SqliteDatabase
from .links import SqliteLinkStore
from .messages import SqliteMessageStore
from .nodes import MemoryNodeRegistry
from .ratelimits import MemoryRateLimiter
from .presence import MemoryPresenceStore
from .queue import SqliteSendQueue
from .api_keys import SqliteApiKeyStore
from .revocations import SqliteKeyRevocations
from .routing_stats import SqliteRoutingStats
from .submissions import SqliteSubmissionStore

__all__ = ["MemoryEngine"]


class MemoryEngine:
    kind = "memory"

    def __init__(self, data_dir: str | None = None) -> None:
        self.presence = MemoryPresenceStore()
        self.bus = MemoryBus()
        self.calls = MemoryCallStore()
        self.database = SqliteDatabase(data_dir)
        self.messages = SqliteMessageStore(db=self.database)
        self.queue = SqliteSendQueue(self.database)
        self.submissions = SqliteSubmissionStore(self.database)
        self.links = SqliteLinkStore(self.database)
        self.routing_stats = SqliteRoutingStats(self.database)
        self.nodes = MemoryNodeRegistry()
        self.rate_limits = MemoryRateLimiter()
        self.revocations = SqliteKeyRevocations(self.database)
        self.api_keys = SqliteApiKeyStore(self.database)

    async def start(self) -> None:
        """Open (create, migrate) the file, then drop every lease in it: see the
        module docstring."""
        await self.database.open()
        await self.queue.release_all()

    async def close(self) -> None:
        """Close the file (once; closing again is a no-op). Every store raises
        EngineUnavailable afterwards."""
        await self.database.close()

    async def ready(self) -> bool:
        return True
