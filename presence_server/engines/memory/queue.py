"""The embedded engine's send queue: the ``jobs`` table of the engine's SQLite file.

Every call runs on the database's one thread, so a claim (select the due,
unleased jobs, then lease them) is atomic: two claims never return the same
job. Jobs are inserted by :meth:`SqliteMessageStore.create_batch`, in the same
transaction as their records (:func:`insert_jobs`).

The file belongs to one process: when the engine starts, no live worker can
hold a lease in it, so :meth:`SqliteSendQueue.release_all` drops every lease
(after a restart, even a ``kill -9``, the jobs are claimable at once rather
than after their leases run out).
"""

from __future__ import annotations

import sqlite3
from typing import Sequence

from ..outbound import PRIORITIES, SendJob
from .database import SqliteDatabase

_INSERT = "INSERT INTO jobs (account_sid, message_sid, priority, due_at, sender, attempt) VALUES (?, ?, ?, ?, ?, ?)"
_JOB_COLUMNS = "seq, account_sid, message_sid, priority, due_at, sender, attempt"


def insert_jobs(conn: sqlite3.Connection, jobs: Sequence[SendJob]) -> None:
    """Enqueue jobs (on the database's thread, inside the caller's transaction).
    A job already held for a message raises sqlite3.IntegrityError."""
    rows = [(j.account_sid, j.message_sid, j.priority, j.due_at, j.sender, j.attempt) for j in jobs]
    if len(rows) == 1:
        conn.execute(_INSERT, rows[0])
    else:
        conn.executemany(_INSERT, rows)


def _job(row: tuple[object, ...]) -> SendJob:
    _, account_sid, message_sid, priority, due_at, sender, attempt = row
    return SendJob(
        account_sid=str(account_sid),
        message_sid=str(message_sid),
        priority=int(priority),  # type: ignore[call-overload]
        due_at=float(due_at),  # type: ignore[arg-type]
        sender=str(sender),
        attempt=int(attempt),  # type: ignore[call-overload]
    )


class SqliteSendQueue:
    """:class:`~presence_server.engines.outbound.SendQueue` on the engine's SQLite file."""

    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db

    async def claim(self, now: float, priority: int, limit: int, lease_until: float, worker: str) -> list[SendJob]:
        if priority not in PRIORITIES:
            raise ValueError(f"priority must be one of {PRIORITIES}")
        if limit <= 0:
            return []

        def claim(conn: sqlite3.Connection) -> list[SendJob]:
            rows = conn.execute(
                f"SELECT {_JOB_COLUMNS} FROM jobs"
                " WHERE priority = ? AND due_at <= ? AND (lease_until IS NULL OR lease_until < ?)"
                " ORDER BY due_at, seq LIMIT ?",
                (priority, now, now, limit),
            ).fetchall()
            conn.executemany(
                "UPDATE jobs SET lease_until = ?, worker = ? WHERE seq = ?", [(lease_until, worker, r[0]) for r in rows]
            )
            return [_job(r) for r in rows]

        return await self._db.write(claim)

    async def complete(self, account_sid: str, message_sid: str) -> None:
        await self._db.write(
            lambda conn: conn.execute("DELETE FROM jobs WHERE account_sid = ? AND message_sid = ?", (account_sid, message_sid))
        )

    async def reschedule(
        self, account_sid: str, message_sid: str, due_at: float, attempt: int, priority: int | None = None
    ) -> bool:
        if priority is not None and priority not in PRIORITIES:
            raise ValueError(f"priority must be one of {PRIORITIES}")
        if attempt < 0:
            raise ValueError("attempt must not be negative")

        def reschedule(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(
                "UPDATE jobs SET due_at = ?, attempt = ?, priority = COALESCE(?, priority), lease_until = NULL, worker = NULL"
                " WHERE account_sid = ? AND message_sid = ?",
                (due_at, attempt, priority, account_sid, message_sid),
            )
            return cursor.rowcount > 0

        return await self._db.write(reschedule)

    async def cancel(self, account_sid: str, message_sid: str, now: float) -> bool:
        def cancel(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(
                "DELETE FROM jobs WHERE account_sid = ? AND message_sid = ? AND (lease_until IS NULL OR lease_until < ?)",
                (account_sid, message_sid, now),
            )
            return cursor.rowcount > 0

        return await self._db.write(cancel)

    async def release(self, worker: str) -> int:
        def release(conn: sqlite3.Connection) -> int:
            cursor = conn.execute("UPDATE jobs SET lease_until = NULL, worker = NULL WHERE worker = ?", (worker,))
            return cursor.rowcount

        return await self._db.write(release)

    async def release_all(self) -> int:
        """Drop every lease (the embedded engine at start: see the module docstring)."""

        def release(conn: sqlite3.Connection) -> int:
            cursor = conn.execute("UPDATE jobs SET lease_until = NULL, worker = NULL WHERE lease_until IS NOT NULL")
            return cursor.rowcount

        return await self._db.write(release)

    async def depth(self, account_sid: str | None = None, sender: str | None = None) -> int:
        if sender is not None and account_sid is None:
            raise ValueError("depth by sender needs the account_sid")
        args: tuple[str, ...]
        if account_sid is None:
            sql, args = "SELECT COUNT(*) FROM jobs", ()
        elif sender is None:
            sql, args = "SELECT COUNT(*) FROM jobs WHERE account_sid = ?", (account_sid,)
        else:
            sql, args = "SELECT COUNT(*) FROM jobs WHERE account_sid = ? AND sender = ?", (account_sid, sender)
        row = await self._db.read(lambda conn: conn.execute(sql, args).fetchone())
        return int(row[0])

    async def next_due(self) -> float | None:
        def next_due(conn: sqlite3.Connection) -> float | None:
            # Unleased: claimable at due_at. Leased: once the lease ends (and it is due).
            (waiting,) = conn.execute("SELECT MIN(due_at) FROM jobs WHERE lease_until IS NULL").fetchone()
            (leased,) = conn.execute(
                "SELECT MIN(MAX(due_at, lease_until)) FROM jobs WHERE lease_until IS NOT NULL"
            ).fetchone()
            times = [t for t in (waiting, leased) if t is not None]
            return float(min(times)) if times else None

        return await self._db.read(next_due)
