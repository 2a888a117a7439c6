"""The embedded engine's routing statistics: the ``route_totals`` (per account,
provider, route) and ``route_minutes`` (per minute, provider, route) tables of
the engine's SQLite file. Minute buckets older than a day are dropped while
recording, at most once a minute."""

from __future__ import annotations

import json
import math
import sqlite3
from typing import Any

from ..outbound import RouteOutcome, RouteStats
from .database import SqliteDatabase

BUCKET_SECONDS = 60.0
KEEP_BUCKETS_SECONDS = 86_400.0
PRUNE_EVERY_SECONDS = 60.0

_COUNTERS = ("submitted", "rejected", "delivered", "undelivered", "failed")
_VALUES = ", ".join((*_COUNTERS, "latency_sum", "latency_count", "errors"))


def _errors(text: str) -> dict[int, int]:
    return {int(code): int(count) for code, count in json.loads(text).items()}


def _add(conn: sqlite3.Connection, table: str, key: dict[str, Any], outcome: RouteOutcome) -> None:
    where = " AND ".join(f"{column} = ?" for column in key)
    row = conn.execute(f"SELECT errors FROM {table} WHERE {where}", tuple(key.values())).fetchone()
    errors = {} if row is None else _errors(row[0])
    if outcome.error_code is not None:
        errors[outcome.error_code] = errors.get(outcome.error_code, 0) + 1
    counts = [1 if outcome.outcome == name else 0 for name in _COUNTERS]
    latency = (outcome.latency, 1) if outcome.latency is not None else (0.0, 0)
    columns = ", ".join(key)
    sql = (
        f"INSERT INTO {table} ({columns}, {_VALUES}) VALUES ({', '.join('?' for _ in range(len(key) + 8))})"
        f" ON CONFLICT ({columns}) DO UPDATE SET "
        + ", ".join(f"{c} = {c} + excluded.{c}" for c in (*_COUNTERS, "latency_sum", "latency_count"))
        + ", errors = excluded.errors"
    )
    conn.execute(sql, (*key.values(), *counts, *latency, json.dumps({str(k): v for k, v in errors.items()})))


def _stats(provider: str, route: str, values: list[Any], errors: dict[int, int], minute: float | None = None) -> RouteStats:
    submitted, rejected, delivered, undelivered, failed, latency_sum, latency_count = values
    return RouteStats(
        provider=provider,
        route=route,
        submitted=int(submitted),
        rejected=int(rejected),
        delivered=int(delivered),
        undelivered=int(undelivered),
        failed=int(failed),
        latency_sum=float(latency_sum),
        latency_count=int(latency_count),
        errors=errors,
        minute=minute,
    )


class SqliteRoutingStats:
    """:class:`~presence_server.engines.outbound.RoutingStatsStore` on the engine's SQLite file."""

    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db
        self._pruned_at = -math.inf  # the ``at`` of the last prune (outcome time, not wall time)

    async def record(self, outcome: RouteOutcome) -> None:
        minute = math.floor(outcome.at / BUCKET_SECONDS) * BUCKET_SECONDS
        prune = outcome.at - self._pruned_at >= PRUNE_EVERY_SECONDS
        if prune:
            self._pruned_at = outcome.at

        def record(conn: sqlite3.Connection) -> None:
            key = {"account_sid": outcome.account_sid, "provider": outcome.provider, "route": outcome.route}
            _add(conn, "route_totals", key, outcome)
            _add(conn, "route_minutes", {"minute": float(minute), "provider": outcome.provider, "route": outcome.route}, outcome)
            if prune:
                conn.execute("DELETE FROM route_minutes WHERE minute < ?", (outcome.at - KEEP_BUCKETS_SECONDS,))

        await self._db.write(record)

    async def totals(self, account_sid: str | None = None) -> list[RouteStats]:
        def totals(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
            select = f"SELECT provider, route, {_VALUES} FROM route_totals"
            if account_sid is None:
                return conn.execute(f"{select} ORDER BY provider, route").fetchall()
            return conn.execute(f"{select} WHERE account_sid = ? ORDER BY provider, route", (account_sid,)).fetchall()

        rows = await self._db.read(totals)
        summed: dict[tuple[str, str], tuple[list[Any], dict[int, int]]] = {}
        for provider, route, *values in rows:
            counters, errors = summed.setdefault((provider, route), ([0, 0, 0, 0, 0, 0.0, 0], {}))
            for i in range(7):
                counters[i] += values[i]
            for code, count in _errors(values[7]).items():
                errors[code] = errors.get(code, 0) + count
        return [_stats(provider, route, counters, errors) for (provider, route), (counters, errors) in sorted(summed.items())]

    async def window(self, since: float) -> list[RouteStats]:
        sql = f"SELECT minute, provider, route, {_VALUES} FROM route_minutes WHERE minute >= ? ORDER BY minute, provider, route"
        rows = await self._db.read(lambda conn: conn.execute(sql, (since,)).fetchall())
        return [
            _stats(provider, route, values[:7], _errors(values[7]), minute=float(minute))
            for minute, provider, route, *values in rows
        ]
