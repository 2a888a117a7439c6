"""The ``outbox`` provider: records every outgoing message instead of sending it.

It is the default provider, so a fresh install (or a dev machine) shows what
would have been texted - ``presence-server outbox`` prints it - without a
carrier account. Entries live in ``<data_dir>/outbox.sqlite3`` (WAL), so they
survive a restart and the CLI can read them while the server runs.

Sending the same message sid twice records it once and answers the same
provider message id, so a retry after a crash does not double the outbox.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, TypeVar

import structlog

from .. import sqlite_files
from ..clock import Clock
from ..config import ProviderConfig
from .base import UNKNOWN_ERROR, OutboundMessage, SendResult, capability_refusal

log = structlog.get_logger(__name__)

T = TypeVar("T")

FILE_NAME = "outbox.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY,
    provider TEXT NOT NULL,
    provider_message_id TEXT NOT NULL UNIQUE,
    message_sid TEXT NOT NULL,
    account_sid TEXT NOT NULL,
    to_addr TEXT NOT NULL,
    from_addr TEXT NOT NULL,
    body TEXT NOT NULL,
    media_urls TEXT NOT NULL,   -- JSON array
    status TEXT NOT NULL,
    created REAL NOT NULL,
    UNIQUE (provider, message_sid)
);
"""

_ENTRY_COLUMNS = "seq, provider, provider_message_id, message_sid, account_sid, to_addr, from_addr, body, media_urls, status, created"


def _entry(row: tuple[Any, ...]) -> dict[str, Any]:
    seq, provider, pmid, sid, account, to, from_, body, media, status, created = row
    return {
        "provider": provider,
        "provider_message_id": pmid,
        "message_sid": sid,
        "account_sid": account,
        "to": to,
        "from": from_,
        "body": body,
        "media_urls": json.loads(media),
        "status": status,
        "created": created,
    }


def query_entries(conn: sqlite3.Connection, limit: int, provider: str | None = None) -> list[dict[str, Any]]:
    """The last ``limit`` entries (of one provider, or all), oldest first - newest last,
    as a terminal shows a log."""
    where, args = ("WHERE provider = ?", [provider]) if provider is not None else ("", [])
    rows = conn.execute(f"SELECT {_ENTRY_COLUMNS} FROM outbox {where} ORDER BY seq DESC LIMIT ?", [*args, limit]).fetchall()
    return [_entry(r) for r in reversed(rows)]


def read_entries(path: Path, limit: int) -> list[dict[str, Any]]:
    """Read an outbox file without writing to it (the CLI, while a server may run)."""
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        conn.execute(f"PRAGMA busy_timeout={sqlite_files.BUSY_TIMEOUT_MS}")
        return query_entries(conn, limit)
    finally:
        conn.close()


class OutboxProvider:
    kind = "outbox"

    def __init__(self, config: ProviderConfig, *, data_dir: str, clock: Clock | None = None) -> None:
        self.config = config
        self.name = config.name
        self.capabilities: frozenset[str] = frozenset(config.capabilities)
        self.path = Path(data_dir) / FILE_NAME
        self._now: Callable[[], float] = clock.time if clock is not None else time.time
        self._conn: sqlite3.Connection | None = None
        # One thread owns the connection: sqlite3 blocks, and a connection must not be
        # shared between threads; serializing on it also makes send() idempotent.
        self._executor: ThreadPoolExecutor | None = None
        self._closed = False
        self._log = log.bind(provider=self.name)

    async def start(self) -> None:
        """Open (and create) the file now, so that a bad data_dir fails at start."""
        await self._run(lambda conn: None)
        self._log.info("outbox provider started", path=str(self.path))

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._executor is not None:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._close_connection)
            self._executor.shutdown(wait=True)
            self._executor = None

    def _close_connection(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite_files.connect(self.path)  # WAL: the CLI reads while we write
            try:
                conn.executescript(_SCHEMA)
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._closed:
            raise RuntimeError(f"outbox provider {self.name!r} is closed")
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"outbox-{self.name}")
        return await asyncio.get_running_loop().run_in_executor(self._executor, lambda: fn(self._connect()))

    async def send(self, message: OutboundMessage) -> SendResult:
        refusal = capability_refusal(self, message)
        if refusal is not None:
            return refusal
        new_id = "OB" + secrets.token_hex(16)
        created = self._now()

        def record(conn: sqlite3.Connection) -> str:
            conn.execute(
                "INSERT INTO outbox (provider, provider_message_id, message_sid, account_sid, to_addr, from_addr,"
                " body, media_urls, status, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'sent', ?)"
                " ON CONFLICT (provider, message_sid) DO NOTHING",
                (self.name, new_id, message.message_sid, message.account_sid, message.to, message.from_,
                 message.body, json.dumps(list(message.media_urls)), created),
            )
            row = conn.execute(
                "SELECT provider_message_id FROM outbox WHERE provider = ? AND message_sid = ?", (self.name, message.message_sid)
            ).fetchone()
            return str(row[0])

        bound = self._log.bind(message_sid=message.message_sid, account_sid=message.account_sid)
        try:
            provider_message_id = await self._run(record)
        except Exception as exc:  # never raise for trouble on the "carrier" side: report it
            bound.warning("outbox could not record a message", error=type(exc).__name__, detail=str(exc))
            return SendResult(False, error_code=UNKNOWN_ERROR, error_message=f"the outbox could not record the message ({type(exc).__name__})", temporary=True)
        bound.info("message recorded in the outbox", provider_message_id=provider_message_id, media=len(message.media_urls))
        return SendResult(True, provider_message_id=provider_message_id, status="sent")

    async def entries(self, limit: int = 50) -> list[dict[str, Any]]:
        """This provider's last ``limit`` entries, newest last."""
        if limit < 1:
            raise ValueError("limit must be at least 1")
        return await self._run(lambda conn: query_entries(conn, limit, self.name))
