"""The embedded engine's message records and broadcasts, in SQLite
(``<data_dir>/messages.sqlite3``, see :mod:`.schema` for the tables).

Messages must survive a restart even on one machine with nothing else to run,
so the embedded engine keeps them in a SQLite file (WAL mode). All the
engine's SQLite stores share one :class:`~.database.SqliteDatabase`: one
thread, one connection, group commit. That is what lets :meth:`create_batch`
store records, their send jobs and their broadcast in one transaction.
"""

from __future__ import annotations

import builtins
import dataclasses
import json
import sqlite3
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from ..outbound import BroadcastRecord, SendJob
from ..ports import MessageRecord
from .database import FILE_NAME, SqliteDatabase
from .queue import insert_jobs
from .schema import SCHEMA_VERSION

__all__ = ["FILE_NAME", "SCHEMA_VERSION", "SqliteMessageStore"]

# Record field -> column, where the names differ ('to'/'from' are SQL keywords).
_COLUMN = {"to": "to_addr", "from_": "from_addr"}
_FIELDS = [f.name for f in dataclasses.fields(MessageRecord)]
_COLUMNS = [_COLUMN.get(name, name) for name in _FIELDS]
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM messages"
_INSERT = f"INSERT INTO messages ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' for _ in _COLUMNS)})"
_UPDATE = f"UPDATE messages SET {', '.join(f'{c} = ?' for c in _COLUMNS)} WHERE sid = ?"
_TUPLES = ("media_urls", "channels", "tried_providers")  # stored as JSON arrays
_BOOLEANS = ("track_links", "smart_encoded", "send_as_mms")  # stored as 0/1
_TUPLE_AT = [i for i, name in enumerate(_FIELDS) if name in _TUPLES]
_BOOLEAN_AT = [i for i, name in enumerate(_FIELDS) if name in _BOOLEANS]

_BROADCAST_COLUMNS = "sid, account_sid, destinations, intent, content, date_created, messaging_service_sid, from_addr"
_INSERT_BROADCAST = f"INSERT INTO broadcasts ({_BROADCAST_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"


def _row(record: MessageRecord) -> list[Any]:
    values = [getattr(record, name) for name in _FIELDS]
    for i in _TUPLE_AT:
        values[i] = json.dumps(list(values[i]))
    for i in _BOOLEAN_AT:
        values[i] = int(values[i])
    return values


def _record(row: tuple[Any, ...]) -> MessageRecord:
    values = list(row)
    for i in _TUPLE_AT:
        values[i] = tuple(json.loads(values[i]))
    for i in _BOOLEAN_AT:
        values[i] = bool(values[i])
    return MessageRecord(**dict(zip(_FIELDS, values)))


def _broadcast_row(b: BroadcastRecord) -> tuple[Any, ...]:
    return (
        b.sid,
        b.account_sid,
        b.destinations,
        json.dumps(b.intent),
        json.dumps(b.content),
        b.date_created,
        b.messaging_service_sid,
        b.from_,
    )


def _broadcast(row: tuple[Any, ...]) -> BroadcastRecord:
    sid, account_sid, destinations, intent, content, date_created, service, from_ = row
    return BroadcastRecord(
        sid=sid,
        account_sid=account_sid,
        destinations=destinations,
        intent=json.loads(intent),
        content=json.loads(content),
        date_created=date_created,
        messaging_service_sid=service,
        from_=from_,
    )


class SqliteMessageStore:
    """:class:`~presence_server.engines.ports.MessageStore` on the engine's SQLite file.

    Made alone (``db=None``) it opens its own :class:`SqliteDatabase` under
    ``data_dir`` and closes it in :meth:`close`; ``data_dir=None`` keeps the file
    in a private temporary directory that closing removes.
    """

    def __init__(
        self,
        data_dir: str | None = None,
        *,
        db: SqliteDatabase | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._owns_db = db is None
        self._db = db if db is not None else SqliteDatabase(data_dir)
        self._clock = clock

    @property
    def path(self) -> Path | None:
        return self._db.path

    async def open(self) -> None:
        await self._db.open()

    async def close(self) -> None:
        if self._owns_db:
            await self._db.close()

    # -- MessageStore -------------------------------------------------------------------

    async def create(self, record: MessageRecord) -> None:
        values = _row(record)
        try:
            await self._db.write(lambda conn: conn.execute(_INSERT, values))
        except sqlite3.IntegrityError:
            raise ValueError(f"message {record.sid} already exists") from None

    async def update(self, account_sid: str, sid: str, **changes: Any) -> MessageRecord | None:
        unknown = changes.keys() - set(_FIELDS)
        if unknown:
            raise ValueError(f"a message record has no field(s) {sorted(unknown)}")
        if "sid" in changes or "account_sid" in changes:
            raise ValueError("sid and account_sid name the record; they cannot be changed")
        changes.setdefault("date_updated", self._clock())

        def apply(conn: sqlite3.Connection) -> MessageRecord | None:
            row = conn.execute(f"{_SELECT} WHERE account_sid = ? AND sid = ?", (account_sid, sid)).fetchone()
            if row is None:
                return None
            # replace() re-runs MessageRecord's checks: a bad status is refused here.
            updated = dataclasses.replace(_record(row), **changes)
            conn.execute(_UPDATE, [*_row(updated), sid])
            return updated

        return await self._db.write(apply)

    async def get(self, account_sid: str, sid: str) -> MessageRecord | None:
        row = await self._db.read(
            lambda conn: conn.execute(f"{_SELECT} WHERE account_sid = ? AND sid = ?", (account_sid, sid)).fetchone()
        )
        return None if row is None else _record(row)

    async def find_by_provider_id(self, provider: str, provider_message_id: str) -> MessageRecord | None:
        sql = f"{_SELECT} WHERE provider = ? AND provider_message_id = ? ORDER BY date_created DESC, seq DESC LIMIT 1"
        row = await self._db.read(lambda conn: conn.execute(sql, (provider, provider_message_id)).fetchone())
        return None if row is None else _record(row)

    async def list(
        self,
        account_sid: str,
        *,
        to: str | None = None,
        from_: str | None = None,
        sent_after: float | None = None,
        sent_before: float | None = None,
        broadcast_sid: str | None = None,
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
            ("broadcast_sid = ?", broadcast_sid),
        ):
            if value is not None:
                where.append(clause)
                args.append(value)
        sql = f"{_SELECT} WHERE {' AND '.join(where)} ORDER BY date_created DESC, seq DESC LIMIT ? OFFSET ?"
        rows = await self._db.read(lambda conn: conn.execute(sql, [*args, limit, offset]).fetchall())
        return [_record(r) for r in rows]

    async def create_batch(
        self,
        records: Sequence[MessageRecord],
        jobs: Sequence[SendJob] = (),
        broadcast: BroadcastRecord | None = None,
    ) -> None:
        rows = [_row(r) for r in records]
        job_list = list(jobs)
        broadcast_row = None if broadcast is None else _broadcast_row(broadcast)
        if not rows and not job_list and broadcast_row is None:
            return

        def store(conn: sqlite3.Connection) -> None:
            # One savepoint of the shared transaction: any failure undoes all three.
            if len(rows) == 1:
                conn.execute(_INSERT, rows[0])
            elif rows:
                conn.executemany(_INSERT, rows)
            if broadcast_row is not None:
                conn.execute(_INSERT_BROADCAST, broadcast_row)
            if job_list:
                insert_jobs(conn, job_list)

        try:
            await self._db.write(store)
        except sqlite3.IntegrityError as exc:
            raise ValueError(f"a message, job or broadcast of this batch is already stored: {exc}") from None

    async def last_sender(self, account_sid: str, messaging_service_sid: str, to: str) -> str | None:
        sql = (
            "SELECT from_addr FROM messages WHERE account_sid = ? AND messaging_service_sid = ? AND to_addr = ?"
            " ORDER BY date_created DESC, seq DESC LIMIT 1"
        )
        row = await self._db.read(lambda conn: conn.execute(sql, (account_sid, messaging_service_sid, to)).fetchone())
        return None if row is None else str(row[0])

    async def get_broadcast(self, account_sid: str, sid: str) -> BroadcastRecord | None:
        sql = f"SELECT {_BROADCAST_COLUMNS} FROM broadcasts WHERE account_sid = ? AND sid = ?"
        row = await self._db.read(lambda conn: conn.execute(sql, (account_sid, sid)).fetchone())
        return None if row is None else _broadcast(row)

    async def list_broadcasts(self, account_sid: str, *, limit: int = 50, offset: int = 0) -> builtins.list[BroadcastRecord]:
        if limit < 0 or offset < 0:
            raise ValueError("limit and offset must not be negative")
        sql = (
            f"SELECT {_BROADCAST_COLUMNS} FROM broadcasts WHERE account_sid = ?"
            " ORDER BY date_created DESC, seq DESC LIMIT ? OFFSET ?"
        )
        rows = await self._db.read(lambda conn: conn.execute(sql, (account_sid, limit, offset)).fetchall())
        return [_broadcast(r) for r in rows]
