"""How the server opens its SQLite files: the embedded engine's message
database and the ``outbox`` provider's entries.

* WAL: readers (``presence-server outbox``, another process) never wait for
  the writer, and a crash loses nothing committed.
* ``synchronous=NORMAL``: durable across process crashes in WAL mode (an OS
  crash may lose the last commits); FULL would fsync every commit for little gain.
* ``busy_timeout``: another process may hold the file for a moment.
* A page cache of :data:`CACHE_KIB` per file, stated rather than left to the
  library's default: the process grows by up to this much per file while the
  file grows, then stays there. The soak (bench/soak.py) showed that filling
  as memory growth of ~0.3 MiB a minute that stops at the bound; docs/operations.md
  counts it in the memory budget.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

CACHE_KIB = 2048
BUSY_TIMEOUT_MS = 5000


def connect(path: Path) -> sqlite3.Connection:
    """Open ``path`` in autocommit mode (callers BEGIN where they need to) with the settings above."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        conn.execute(f"PRAGMA cache_size=-{CACHE_KIB}")  # negative: KiB, not pages
    except BaseException:
        conn.close()
        raise
    return conn
