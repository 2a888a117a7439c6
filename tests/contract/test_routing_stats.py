"""The RoutingStatsStore contract (engines/outbound.py): per-route totals and minute buckets.

A latency is counted (latency_sum, latency_count) whenever an outcome carries
one, and an error code whenever an outcome carries one, whatever the outcome.
"""

from __future__ import annotations

import asyncio

import pytest

from presence_server.engines.outbound import RouteOutcome, RouteStats
from presence_server.engines.ports import Engine
from protocol.addresses import new_sid

MINUTE = 1_700_000_040.0  # the start of a minute (a multiple of 60)


def outcome(account: str, provider: str, route: str, what: str, at: float, **fields: object) -> RouteOutcome:
    return RouteOutcome(account_sid=account, provider=provider, route=route, outcome=what, at=at, **fields)  # type: ignore[arg-type]


async def test_totals_per_provider_and_route(engine: Engine) -> None:
    account = new_sid("AC")
    for o in (
        outcome(account, "carrier-a", "us", "submitted", MINUTE + 1),
        outcome(account, "carrier-a", "us", "submitted", MINUTE + 2),
        outcome(account, "carrier-a", "us", "delivered", MINUTE + 3, latency=1.5),
        outcome(account, "carrier-a", "us", "undelivered", MINUTE + 4, latency=2.0, error_code=30003),
        outcome(account, "carrier-a", "us", "rejected", MINUTE + 5, error_code=30007),
        outcome(account, "carrier-a", "us", "rejected", MINUTE + 6, error_code=30007),
        outcome(account, "carrier-a", "us", "failed", MINUTE + 7, error_code=30003),
        outcome(account, "app", "us", "delivered", MINUTE + 8, latency=0.25),
        outcome(account, "carrier-a", "eu", "submitted", MINUTE + 9),
    ):
        await engine.routing_stats.record(o)
    assert await engine.routing_stats.totals(account) == [
        RouteStats(provider="app", route="us", delivered=1, latency_sum=0.25, latency_count=1),
        RouteStats(provider="carrier-a", route="eu", submitted=1),
        RouteStats(
            provider="carrier-a",
            route="us",
            submitted=2,
            rejected=2,
            delivered=1,
            undelivered=1,
            failed=1,
            latency_sum=3.5,
            latency_count=2,
            errors={30003: 2, 30007: 2},
        ),
    ]
    assert await engine.routing_stats.totals(new_sid("AC")) == []


async def test_totals_of_everyone_sum_the_accounts(engine: Engine) -> None:
    a, b = new_sid("AC"), new_sid("AC")
    await engine.routing_stats.record(outcome(a, "carrier-b", "us", "submitted", MINUTE))
    await engine.routing_stats.record(outcome(a, "carrier-b", "us", "rejected", MINUTE, error_code=21610))
    await engine.routing_stats.record(outcome(b, "carrier-b", "us", "submitted", MINUTE))
    await engine.routing_stats.record(outcome(b, "carrier-b", "us", "delivered", MINUTE, latency=4.0))
    await engine.routing_stats.record(outcome(b, "carrier-b", "us", "rejected", MINUTE, error_code=21610))
    await engine.routing_stats.record(outcome(b, "carrier-a", "us", "rejected", MINUTE, error_code=30001))
    assert await engine.routing_stats.totals() == [
        RouteStats(provider="carrier-a", route="us", rejected=1, errors={30001: 1}),
        RouteStats(
            provider="carrier-b",
            route="us",
            submitted=2,
            rejected=2,
            delivered=1,
            latency_sum=4.0,
            latency_count=1,
            errors={21610: 2},
        ),
    ]
    assert await engine.routing_stats.totals(a) == [
        RouteStats(provider="carrier-b", route="us", submitted=1, rejected=1, errors={21610: 1})
    ]


async def test_window_has_minute_buckets_of_all_accounts(engine: Engine) -> None:
    a, b = new_sid("AC"), new_sid("AC")
    await engine.routing_stats.record(outcome(a, "carrier-a", "us", "submitted", MINUTE + 59.9))
    await engine.routing_stats.record(outcome(b, "carrier-a", "us", "submitted", MINUTE))
    await engine.routing_stats.record(outcome(b, "carrier-a", "us", "delivered", MINUTE + 60, latency=2.5))
    await engine.routing_stats.record(outcome(a, "app", "us", "failed", MINUTE + 61, error_code=30008))
    await engine.routing_stats.record(outcome(a, "carrier-a", "eu", "submitted", MINUTE + 125))
    await engine.routing_stats.record(outcome(a, "carrier-a", "us", "submitted", MINUTE - 1))  # the minute before
    window = await engine.routing_stats.window(MINUTE)
    assert window == [
        RouteStats(provider="carrier-a", route="us", submitted=2, minute=MINUTE),
        RouteStats(provider="app", route="us", failed=1, errors={30008: 1}, minute=MINUTE + 60),
        RouteStats(provider="carrier-a", route="us", delivered=1, latency_sum=2.5, latency_count=1, minute=MINUTE + 60),
        RouteStats(provider="carrier-a", route="eu", submitted=1, minute=MINUTE + 120),
    ]
    assert [s.minute for s in await engine.routing_stats.window(MINUTE + 60)] == [MINUTE + 60, MINUTE + 60, MINUTE + 120]
    assert [s.minute for s in await engine.routing_stats.window(MINUTE - 60)] == [MINUTE - 60] + [s.minute for s in window]
    assert await engine.routing_stats.window(MINUTE + 121) == []


async def test_concurrent_records_all_count(engine: Engine) -> None:
    account = new_sid("AC")
    await asyncio.gather(
        *(engine.routing_stats.record(outcome(account, "carrier-a", "us", "rejected", MINUTE, error_code=30000 + i % 3)) for i in range(60))
    )
    (total,) = await engine.routing_stats.totals(account)
    assert total.rejected == 60 and total.errors == {30000: 20, 30001: 20, 30002: 20}
    (bucket,) = await engine.routing_stats.window(MINUTE)
    assert bucket.rejected == 60


def test_outcomes_check_their_values() -> None:
    with pytest.raises(ValueError):
        outcome(new_sid("AC"), "carrier-a", "us", "lost", MINUTE)
