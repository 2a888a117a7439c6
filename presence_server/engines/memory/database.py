"""The embedded engine's SQLite file, on one dedicated thread, with group commit.

sqlite3 calls block. They run on one thread that owns the only connection
rather than on the event loop (a slow disk would stall every socket) or on the
shared default executor (a connection must not be used by two threads at once).
Every store of the engine (messages, broadcasts, queue, submissions, links,
routing statistics) shares this one :class:`SqliteDatabase`, so every call is
serialized without a lock, a read-modify-write is atomic, and a record and its
send job can be written in one transaction.

Group commit: the thread takes every call waiting when it gets to work. All
the waiting writes run in ONE transaction (``BEGIN IMMEDIATE ... COMMIT``), each
in its own SAVEPOINT: a write that raises is rolled back to its savepoint and
fails alone, while the others commit together. Nobody hears "done" before the
COMMIT, so a caller that got its answer has its write in the file. One commit
for many writes is what makes thousands of accepted messages per second cheap.
The waiting reads run after the writes, each on its own.

The file is opened as every SQLite file of the server is
(:mod:`presence_server.sqlite_files`: WAL, ``synchronous=NORMAL``, a bounded
page cache).
"""

from __future__ import annotations

import asyncio
import queue
import shutil
import sqlite3
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TypeVar

import structlog

from ... import sqlite_files
from ..ports import EngineUnavailable
from . import schema

log = structlog.get_logger(__name__)

T = TypeVar("T")

FILE_NAME = "messages.sqlite3"

# Writes committed together at most: bounds one transaction's time and WAL growth.
MAX_GROUP = 1000


@dataclass
class _Call:
    write: bool
    fn: Callable[[sqlite3.Connection], Any] | None  # None: stop the thread
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]


class _GroupFailed(Exception):
    """The shared transaction itself failed: every write in it fails."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


def _deliver(outcomes: list[tuple[asyncio.Future[Any], BaseException | None, Any]]) -> None:
    # On the event loop: one callback per group and loop, not one per call.
    for future, error, value in outcomes:
        if future.done():  # the caller was cancelled
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)


class SqliteDatabase:
    """The file under ``data_dir`` (None: a private temporary directory that
    :meth:`close` removes) and the thread that owns its connection."""

    def __init__(self, data_dir: str | None = None, *, thread_name: str = "engine-sqlite") -> None:
        self._data_dir = data_dir
        self._thread_name = thread_name
        self._private_dir: str | None = None
        self._conn: sqlite3.Connection | None = None
        self._calls: queue.SimpleQueue[_Call] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._closed = False
        self.path: Path | None = None
        self.opened_version: int | None = None  # the schema version the file had when opened
        self.commits = 0  # write transactions committed (each holds one or more writes)

    # -- lifetime -----------------------------------------------------------------------

    async def open(self) -> None:
        """Open (create, migrate) the file now, so that a bad data_dir fails at start."""
        await self.read(lambda conn: None)

    async def close(self) -> None:
        """Finish the calls already made, close the connection, stop the thread.
        Later calls raise EngineUnavailable. Closing twice is a no-op."""
        if self._closed:
            return
        self._closed = True
        if self._thread is not None:
            loop = asyncio.get_running_loop()
            stopped: asyncio.Future[Any] = loop.create_future()
            self._calls.put(_Call(True, None, loop, stopped))
            await stopped
            self._thread.join()
            self._thread = None
        if self._private_dir is not None:
            shutil.rmtree(self._private_dir, ignore_errors=True)
            self._private_dir = None

    @property
    def closed(self) -> bool:
        return self._closed

    # -- calls --------------------------------------------------------------------------

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(conn)`` on the thread, outside any transaction."""
        result: T = await self._call(False, fn)
        return result

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(conn)`` on the thread inside a transaction (shared with other
        writes, in a savepoint of its own): its changes are committed when this
        returns, and none of them are if ``fn`` raises (its exception is raised)."""
        result: T = await self._call(True, fn)
        return result

    async def _call(self, write: bool, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        if self._closed:
            raise EngineUnavailable("the embedded engine's database is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if self._thread is None:
            self._thread = threading.Thread(target=self._serve, name=self._thread_name, daemon=True)
            self._thread.start()
        self._calls.put(_Call(write, fn, loop, future))
        try:
            return await future
        except sqlite3.IntegrityError:
            raise
        except (sqlite3.OperationalError, sqlite3.DatabaseError, OSError) as exc:
            # Disk full, file locked for too long, unreadable directory: the engine
            # cannot serve now; entry points answer that with a temporary error.
            log.warning("embedded database unavailable", error=type(exc).__name__, detail=str(exc))
            raise EngineUnavailable(f"embedded database: {exc}") from exc

    # -- the thread ---------------------------------------------------------------------

    def _serve(self) -> None:
        while True:
            calls = [self._calls.get()]
            while len(calls) < MAX_GROUP:
                try:
                    calls.append(self._calls.get_nowait())
                except queue.Empty:
                    break
            stop = next((c for c in calls if c.fn is None), None)
            work = [c for c in calls if c.fn is not None and not c.future.cancelled()]
            outcomes: list[tuple[_Call, BaseException | None, Any]] = []
            try:
                conn = self._connect() if work else None
            except BaseException as exc:  # noqa: BLE001 - handed to every caller
                outcomes = [(c, exc, None) for c in work]
            else:
                writes = [c for c in work if c.write]
                if conn is not None and writes:
                    outcomes.extend(self._run_writes(conn, writes))
                for call in (c for c in work if not c.write):
                    assert call.fn is not None and conn is not None
                    try:
                        outcomes.append((call, None, call.fn(conn)))
                    except BaseException as exc:  # noqa: BLE001 - handed to the caller
                        outcomes.append((call, exc, None))
            if stop is not None:
                self._close_connection()
                outcomes.append((stop, None, None))
            by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], BaseException | None, Any]]] = {}
            for call, error, value in outcomes:
                by_loop.setdefault(call.loop, []).append((call.future, error, value))
            for loop, items in by_loop.items():
                try:
                    loop.call_soon_threadsafe(_deliver, items)
                except RuntimeError:  # that loop is closed: nobody is waiting
                    pass
            if stop is not None:
                return

    def _run_writes(self, conn: sqlite3.Connection, writes: list[_Call]) -> list[tuple[_Call, BaseException | None, Any]]:
        done: list[tuple[_Call, BaseException | None, Any]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for call in writes:
                assert call.fn is not None
                conn.execute("SAVEPOINT call")
                try:
                    value = call.fn(conn)
                except BaseException as exc:  # noqa: BLE001 - this caller's failure only
                    try:
                        conn.execute("ROLLBACK TO call")
                        conn.execute("RELEASE call")
                    except sqlite3.Error as undo:
                        raise _GroupFailed(undo) from exc
                    if not conn.in_transaction:  # SQLite rolled back everything (disk full, I/O)
                        raise _GroupFailed(exc) from exc
                    done.append((call, exc, None))
                else:
                    conn.execute("RELEASE call")
                    done.append((call, None, value))
            conn.execute("COMMIT")
            self.commits += 1
            return done
        except BaseException as exc:  # noqa: BLE001 - the transaction failed: so does every write in it
            error = exc.error if isinstance(exc, _GroupFailed) else exc
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
            own = {id(call): err for call, err, _ in done if err is not None}
            # A caller whose own write failed keeps its own error (nothing of it was kept anyway).
            return [(call, own.get(id(call), error), None) for call in writes]

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            if self._data_dir is None:
                if self._private_dir is None:
                    self._private_dir = tempfile.mkdtemp(prefix="presence-engine-")
                directory = Path(self._private_dir)
            else:
                directory = Path(self._data_dir)
                directory.mkdir(parents=True, exist_ok=True)
            self.path = directory / FILE_NAME
            conn = sqlite_files.connect(self.path)
            try:
                # Each write's SAVEPOINT keeps the pages it changes in a sub-journal: in
                # memory, that costs a third of a write instead of more than a whole one.
                conn.execute("PRAGMA temp_store=MEMORY")
                self.opened_version = schema.apply(conn)
            except BaseException:
                conn.close()
                raise
            self._conn = conn
            log.info("embedded database opened", path=str(self.path), schema_version=schema.SCHEMA_VERSION, was=self.opened_version)
        return self._conn

    def _close_connection(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None
