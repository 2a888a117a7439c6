"""The redis engine's routing statistics.

Totals are a hash per (provider, route) per account (``ps:{AC}:routes:<id>``)
and one for everyone (``ps:{routes}:<id>``), each listed in a set of ids
(``ps:{AC}:routes``, ``ps:{routes}``). Minute buckets are a hash per (minute,
provider, route) (``ps:{routes}:min:<minute>:<id>``) that expires a day after
its last write, indexed by minute in ``ps:{routes}:mins``. The account's keys
and everyone's are two hash slots, so an outcome is counted by two calls of
one script (``record_route``), sent together in one pipeline. Counter fields: the outcomes, ``latency_sum``,
``latency_count`` and ``e:<error code>``; plus ``provider`` and ``route``.
"""

from __future__ import annotations

import math
from typing import Any

from redis.asyncio import Redis

from ..outbound import OUTCOMES, RouteOutcome, RouteStats
from .batch import number
from .keys import KeySpace, as_text, route_id
from .outbound_scripts import RECORD_ROUTE
from .scripts import Scripts, unavailable_on_redis_errors

DAY = 86_400


def minute_of(at: float) -> float:
    return float(math.floor(at / 60.0) * 60)


def _stats(raw: dict[bytes, bytes], minute: float | None = None) -> RouteStats | None:
    if not raw:
        return None
    fields = {as_text(k): as_text(v) for k, v in raw.items()}
    errors = {int(name[2:]): int(value) for name, value in fields.items() if name.startswith("e:")}
    return RouteStats(
        provider=fields["provider"],
        route=fields["route"],
        **{outcome: int(fields.get(outcome, 0)) for outcome in OUTCOMES},
        latency_sum=float(fields.get("latency_sum", 0.0)),
        latency_count=int(fields.get("latency_count", 0)),
        errors=dict(sorted(errors.items())),
        minute=minute,
    )


class RedisRoutingStatsStore:
    def __init__(self, client: Redis, keys: KeySpace, scripts: Scripts) -> None:
        self._redis = client
        self._keys = keys
        self._scripts = scripts

    @unavailable_on_redis_errors
    async def record(self, outcome: RouteOutcome) -> None:
        k = self._keys
        rid = route_id(outcome.provider, outcome.route)
        minute = number(minute_of(outcome.at))
        bucket = f"{minute}:{rid}"
        args = [
                rid,
                outcome.provider,
                outcome.route,
                outcome.outcome,
                "" if outcome.latency is None else number(outcome.latency),
                "" if outcome.error_code is None else int(outcome.error_code),
                minute,
                bucket,
                DAY,
                number(minute_of(outcome.at) - DAY),
        ]

        def build(pipe: Any) -> None:
            self._scripts.queue(pipe, RECORD_ROUTE, [k.route_totals(outcome.account_sid, rid), k.route_index(outcome.account_sid)], args)
            keys = [k.route_totals(None, rid), k.route_index(None), k.route_minute(bucket), k.route_minutes()]
            self._scripts.queue(pipe, RECORD_ROUTE, keys, args)

        await self._scripts.pipeline(build)

    @unavailable_on_redis_errors
    async def totals(self, account_sid: str | None = None) -> list[RouteStats]:
        ids = [as_text(i) for i in await self._redis.smembers(self._keys.route_index(account_sid))]
        if not ids:
            return []
        pipe = self._redis.pipeline(transaction=False)
        for rid in ids:
            pipe.hgetall(self._keys.route_totals(account_sid, rid))
        out = [s for s in (_stats(raw) for raw in await pipe.execute()) if s is not None]
        return sorted(out, key=lambda s: (s.provider, s.route))

    @unavailable_on_redis_errors
    async def window(self, since: float) -> list[RouteStats]:
        index = self._keys.route_minutes()
        entries: list[Any] = await self._redis.zrangebyscore(index, number(since), "+inf", withscores=True)
        if not entries:
            return []
        pipe = self._redis.pipeline(transaction=False)
        for bucket, _ in entries:
            pipe.hgetall(self._keys.route_minute(as_text(bucket)))
        out: list[RouteStats] = []
        gone: list[Any] = []
        for (bucket, minute), raw in zip(entries, await pipe.execute()):
            stats = _stats(raw, float(minute))
            if stats is None:
                gone.append(bucket)  # expired: drop its index entry too
            else:
                out.append(stats)
        if gone:
            await self._redis.zrem(index, *gone)
        return sorted(out, key=lambda s: (s.minute, s.provider, s.route))
