"""The embedded engine's carrier submissions: the ``submissions`` table of the
engine's SQLite file, keyed by (provider, provider_message_id)."""

from __future__ import annotations

import dataclasses
import sqlite3
from typing import Any

from ..outbound import Submission
from .database import SqliteDatabase

SUBMISSION_STATUSES = frozenset({"sent", "delivered", "undelivered", "failed"})
FINAL_STATUSES = frozenset({"delivered", "undelivered", "failed"})

_COLUMNS = (
    "provider, provider_message_id, account_sid, message_sid, submitted_at, route, part, parts, status, error_code, reported_at"
)
_SELECT = f"SELECT {_COLUMNS} FROM submissions"


def _row(s: Submission) -> tuple[Any, ...]:
    return (
        s.provider,
        s.provider_message_id,
        s.account_sid,
        s.message_sid,
        s.submitted_at,
        s.route,
        s.part,
        s.parts,
        s.status,
        s.error_code,
        s.reported_at,
    )


def _submission(row: tuple[Any, ...]) -> Submission:
    return Submission(*row)


def unchanged_by(before: Submission, status: str, error_code: int | None) -> bool:
    """Whether a report changes nothing: a duplicate (same status, and the same
    error code or none given), or 'sent' after a final status."""
    if status == before.status and (error_code is None or error_code == before.error_code):
        return True
    return status == "sent" and before.status in FINAL_STATUSES


class SqliteSubmissionStore:
    """:class:`~presence_server.engines.outbound.SubmissionStore` on the engine's SQLite file."""

    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db

    async def add(self, submission: Submission) -> bool:
        sql = (
            f"INSERT INTO submissions ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (provider, provider_message_id) DO NOTHING"
        )
        values = _row(submission)
        return await self._db.write(lambda conn: conn.execute(sql, values).rowcount > 0)

    async def find(self, provider: str, provider_message_id: str) -> Submission | None:
        sql = f"{_SELECT} WHERE provider = ? AND provider_message_id = ?"
        row = await self._db.read(lambda conn: conn.execute(sql, (provider, provider_message_id)).fetchone())
        return None if row is None else _submission(row)

    async def report(
        self, provider: str, provider_message_id: str, status: str, error_code: int | None, at: float
    ) -> tuple[Submission, Submission] | None:
        if status not in SUBMISSION_STATUSES:
            raise ValueError(f"a delivery report's status must be one of {sorted(SUBMISSION_STATUSES)}")

        def report(conn: sqlite3.Connection) -> tuple[Submission, Submission] | None:
            row = conn.execute(f"{_SELECT} WHERE provider = ? AND provider_message_id = ?", (provider, provider_message_id)).fetchone()
            if row is None:
                return None
            before = _submission(row)
            if unchanged_by(before, status, error_code):
                return before, before
            conn.execute(
                "UPDATE submissions SET status = ?, error_code = ?, reported_at = ? WHERE provider = ? AND provider_message_id = ?",
                (status, error_code, at, provider, provider_message_id),
            )
            after = dataclasses.replace(before, status=status, error_code=error_code, reported_at=at)
            return before, after

        return await self._db.write(report)

    async def of_message(self, account_sid: str, message_sid: str) -> list[Submission]:
        sql = f"{_SELECT} WHERE account_sid = ? AND message_sid = ? ORDER BY seq"
        rows = await self._db.read(lambda conn: conn.execute(sql, (account_sid, message_sid)).fetchall())
        return [_submission(r) for r in rows]
