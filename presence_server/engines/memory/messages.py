"""The embedded engine's message records, in SQLite (``<data_dir>/messages.sqlite3``).

Messages must survive a restart even on one machine with nothing else to run,
so the embedded engine keeps them in a SQLite file in WAL mode (readers never
wait for the writer, and a crash loses nothing that was committed).

sqlite3 calls block. They run on one dedicated thread per store rather than on
the event loop (a slow disk would stall every socket) or on the shared default
executor (a sqlite3 connection must not be used by two threads at once): one
thread owns the connection, so every call is serialized without a lock and a
read-modify-write such as :meth:`update` is atomic.
"""

from __future__ import annotations

import asyncio
import builtins
import dataclasses
import json
import shutil
import sqlite3
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, TypeVar

import structlog

from ..ports import EngineUnavailable, MessageRecord

log = structlog.get_logger(__name__)

T = TypeVar("T")

FILE_NAME = "messages.sqlite3"
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    -- An explicit INTEGER PRIMARY KEY keeps storage order stable (VACUUM may renumber
    -- an implicit rowid): it is the tie-break of 'newest first'.
    seq INTEGER PRIMARY KEY,
    sid TEXT NOT NULL UNIQUE,
    account_sid TEXT NOT NULL,
    to_addr TEXT NOT NULL,
    from_addr TEXT NOT NULL,
    body TEXT NOT NULL,
    media_urls TEXT NOT NULL,            -- JSON array
    direction TEXT NOT NULL,
    status TEXT NOT NULL,
    channel TEXT NOT NULL,
    provider TEXT,
    provider_message_id TEXT,
    error_code INTEGER,
    error_message TEXT,
    fallback_reason TEXT,
    related_call_sid TEXT,
    messaging_service_sid TEXT,
    num_segments INTEGER NOT NULL,
    date_created REAL NOT NULL,
    date_updated REAL NOT NULL,
    date_sent REAL
);
CREATE INDEX IF NOT EXISTS messages_by_account ON messages (account_sid, date_created DESC, seq DESC);
CREATE INDEX IF NOT EXISTS messages_by_to ON messages (account_sid, to_addr, date_created DESC);
CREATE INDEX IF NOT EXISTS messages_by_from ON messages (account_sid, from_addr, date_created DESC);
CREATE INDEX IF NOT EXISTS messages_by_provider_id ON messages (provider, provider_message_id) WHERE provider_message_id IS NOT NULL;
"""

# Record field -> column, where the names differ ('to'/'from' are SQL keywords).
_COLUMN = {"to": "to_addr", "from_": "from_addr"}
_FIELDS = [f.name for f in dataclasses.fields(MessageRecord)]
_COLUMNS = [_COLUMN.get(name, name) for name in _FIELDS]
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM messages"


def _row(record: MessageRecord) -> list[Any]:
    values = dataclasses.astuple(record)
    return [json.dumps(list(v)) if name == "media_urls" else v for name, v in zip(_FIELDS, values)]


def _record(row: tuple[Any, ...]) -> MessageRecord:
    data = dict(zip(_FIELDS, row))
    data["media_urls"] = tuple(json.loads(data["media_urls"]))
    return MessageRecord(**data)


class SqliteMessageStore:
    """:class:`~presence_server.engines.ports.MessageStore` on a SQLite file.

    ``data_dir=None`` keeps the file in a private temporary directory that
    :meth:`close` removes (tests, and engines made without a configuration).
    """

    def __init__(self, data_dir: str | None = None, *, clock: Callable[[], float] = time.time) -> None:
        self._data_dir = data_dir
        self._clock = clock
        self._private_dir: str | None = None
        self._conn: sqlite3.Connection | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._closed = False
        self.path: Path | None = None

    # -- lifetime -----------------------------------------------------------------------

    async def open(self) -> None:
        """Open (and create) the file now, so that a bad data_dir fails at start."""
        await self._run(lambda conn: None)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._executor is not None:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._close_connection)
            self._executor.shutdown(wait=True)
            self._executor = None
        if self._private_dir is not None:
            shutil.rmtree(self._private_dir, ignore_errors=True)
            self._private_dir = None

    def _close_connection(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _connect(self) -> sqlite3.Connection:
        # Runs on the store's thread, the only one that ever touches the connection.
        if self._conn is None:
            if self._data_dir is None:
                self._private_dir = tempfile.mkdtemp(prefix="presence-messages-")
                directory = Path(self._private_dir)
            else:
                directory = Path(self._data_dir)
                directory.mkdir(parents=True, exist_ok=True)
            self.path = directory / FILE_NAME
            conn = sqlite3.connect(self.path, isolation_level=None)  # autocommit; explicit BEGIN where needed
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                # NORMAL is durable across process crashes in WAL mode (an OS crash may lose
                # the last commits); FULL would fsync every message for little gain here.
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute("PRAGMA busy_timeout=5000")  # the outbox CLI may read concurrently
                conn.executescript(_SCHEMA)
                conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            except BaseException:
                conn.close()
                raise
            self._conn = conn
            log.info("message store opened", path=str(self.path))
        return self._conn

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._closed:
            raise EngineUnavailable("the message store is closed")
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="messages-sqlite")

        def call() -> T:
            return fn(self._connect())

        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, call)
        except sqlite3.IntegrityError:
            raise
        except (sqlite3.OperationalError, sqlite3.DatabaseError, OSError) as exc:
            # Disk full, file locked for too long, unreadable directory: the engine
            # cannot serve now; entry points answer that with a temporary error.
            log.warning("message store unavailable", error=type(exc).__name__, detail=str(exc))
            raise EngineUnavailable(f"message store: {exc}") from exc

    # -- MessageStore -------------------------------------------------------------------

    async def create(self, record: MessageRecord) -> None:
        placeholders = ", ".join("?" for _ in _COLUMNS)
        sql = f"INSERT INTO messages ({', '.join(_COLUMNS)}) VALUES ({placeholders})"
        values = _row(record)
        try:
            await self._run(lambda conn: conn.execute(sql, values))
        except sqlite3.IntegrityError:
            raise ValueError(f"message {record.sid} already exists") from None

    async def update(self, account_sid: str, sid: str, **changes: Any) -> MessageRecord | None:
        unknown = changes.keys() - set(_FIELDS)
        if unknown:
            raise ValueError(f"a message record has no field(s) {sorted(unknown)}")
        changes.setdefault("date_updated", self._clock())

        def apply(conn: sqlite3.Connection) -> MessageRecord | None:
            row = conn.execute(f"{_SELECT} WHERE account_sid = ? AND sid = ?", (account_sid, sid)).fetchone()
            if row is None:
                return None
            # replace() re-runs MessageRecord's checks: a bad status is refused here.
            updated = dataclasses.replace(_record(row), **changes)
            assignments = ", ".join(f"{c} = ?" for c in _COLUMNS)
            conn.execute(f"UPDATE messages SET {assignments} WHERE sid = ?", [*_row(updated), sid])
            return updated

        return await self._run(apply)

    async def get(self, account_sid: str, sid: str) -> MessageRecord | None:
        row = await self._run(
            lambda conn: conn.execute(f"{_SELECT} WHERE account_sid = ? AND sid = ?", (account_sid, sid)).fetchone()
        )
        return None if row is None else _record(row)

    async def find_by_provider_id(self, provider: str, provider_message_id: str) -> MessageRecord | None:
        sql = f"{_SELECT} WHERE provider = ? AND provider_message_id = ? ORDER BY date_created DESC, seq DESC LIMIT 1"
        row = await self._run(lambda conn: conn.execute(sql, (provider, provider_message_id)).fetchone())
        return None if row is None else _record(row)

    async def list(
        self,
        account_sid: str,
        *,
        to: str | None = None,
        from_: str | None = None,
        sent_after: float | None = None,
        sent_before: float | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> builtins.list[MessageRecord]:
        if limit < 0 or offset < 0:
            raise ValueError("limit and offset must not be negative")
        where = ["account_sid = ?"]
        args: builtins.list[Any] = [account_sid]
        for clause, value in (
            ("to_addr = ?", to),
            ("from_addr = ?", from_),
            ("date_sent >= ?", sent_after),
            ("date_sent < ?", sent_before),
        ):
            if value is not None:
                where.append(clause)
                args.append(value)
        sql = f"{_SELECT} WHERE {' AND '.join(where)} ORDER BY date_created DESC, seq DESC LIMIT ? OFFSET ?"
        rows = await self._run(lambda conn: conn.execute(sql, [*args, limit, offset]).fetchall())
        return [_record(r) for r in rows]
