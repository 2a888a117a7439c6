"""Routes in use: the configured routing address records, what has been learned
about each provider on each route, and the per-provider throughput limits.

The ranking itself is pure (protocol/routing.py). This module feeds it the
providers' recent health: every outcome this process sees is counted here at
once (so the very next message uses the new ranking), and the shared
statistics (other processes' outcomes, through the engine) are reloaded every
few seconds.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass

import structlog

from protocol.plans import Priority
from protocol.routing import DEFAULT_ROUTE, ProviderHealth, Route, RouteEntry, default_route, match_route, rank

from ..carriers.base import Provider
from ..clock import Clock
from ..config import Config
from ..engines.outbound import RateLimit, RateLimiter, RouteOutcome, RoutingStatsStore

log = structlog.get_logger(__name__)

RELOAD_EVERY = 2.0  # seconds between reloads of the shared statistics


@dataclass(frozen=True)
class RoutePlan:
    route: Route
    providers: list[str]  # to try, best first (all of them, for 'broadcast')

    @property
    def broadcast(self) -> bool:
        return self.route.strategy == "broadcast"


def routes_from_config(config: Config) -> list[Route]:
    return [
        Route(
            name=r.name,
            strategy=r.strategy,
            entries=tuple(RouteEntry(e.name, e.weight, e.cost) for e in r.providers),
            countries=frozenset(r.countries),
            prefixes=tuple(r.prefixes),
            identities=frozenset(r.identities),
        )
        for r in config.routes
    ]


class RouteTable:
    def __init__(
        self,
        config: Config,
        providers: dict[str, Provider],
        stats: RoutingStatsStore,
        rate_limiter: RateLimiter,
        clock: Clock,
        rng: random.Random | None = None,
    ) -> None:
        self.providers = providers
        self.stats = stats
        self.clock = clock
        self.rng = rng or random.Random()
        self.window = config.messaging.stats_window
        self.exploration = config.messaging.exploration
        self.routes = routes_from_config(config)
        # Destinations no route matches go over every provider, in config order.
        self.fallback = default_route(list(providers))
        shares = {Priority.URGENT: 0.0, Priority.NORMAL: 0.0, Priority.BULK: 0.0}
        for name, share in config.messaging.class_shares.items():
            shares[Priority[name.upper()]] = share
        # Kept in the engine, so every sending process draws on the same buckets.
        self.rate_limiter = rate_limiter
        self.limits = {
            p.name: RateLimit(p.config.mps, float(p.config.burst or max(1.0, p.config.mps)), (shares[Priority.URGENT], shares[Priority.NORMAL], shares[Priority.BULK]))
            for p in providers.values()
            if p.config.mps is not None
        }
        # (route, provider) -> health over the window: the last reload plus what
        # this process saw since.
        self._health: dict[tuple[str, str], ProviderHealth] = {}
        self._loaded_at: float | None = None

    def route_for(self, number: str, identity: str | None) -> Route:
        return match_route(self.routes, number, identity) or self.fallback

    def can_carry(self, number: str, identity: str | None, capability: str) -> bool:
        route = self.route_for(number, identity)
        return any(capability in self.providers[e.provider].capabilities for e in route.entries if e.provider in self.providers)

    async def plan(
        self, number: str, identity: str | None, capability: str, *, exclude: tuple[str, ...], segments: int, max_cost: float | None
    ) -> RoutePlan:
        await self._maybe_reload()
        route = self.route_for(number, identity)
        capable = {n for n, p in self.providers.items() if capability in p.capabilities}
        health = {e.provider: self._health.get((route.name, e.provider), ProviderHealth()) for e in route.entries}
        order = rank(
            route, health, capable=capable, exclude=set(exclude), rng=self.rng,
            exploration=self.exploration if route.strategy == "adaptive" else 0.0, segments=segments, max_cost=max_cost,
        )
        return RoutePlan(route, order)

    async def throttle_wait(self, provider: str, priority: int) -> float:
        """0 when a send may go to ``provider`` now (a token is taken); else the
        seconds to wait before trying again."""
        limit = self.limits.get(provider)
        if limit is None:
            return 0.0
        wait = await self.rate_limiter.take(provider, limit, priority, self.clock.time())
        return 0.0 if wait == 0.0 else max(0.01, wait)

    async def observe(self, outcome: RouteOutcome) -> None:
        """Count an outcome: here at once, and in the shared statistics."""
        self._add(outcome)
        await self.stats.record(outcome)

    def _add(self, o: RouteOutcome) -> None:
        key = (o.route, o.provider)
        h = self._health.get(key, ProviderHealth())
        delta = ProviderHealth(**{o.outcome: 1}, latency_sum=o.latency or 0.0, latency_count=1 if o.latency is not None else 0)
        self._health[key] = h + delta

    async def _maybe_reload(self) -> None:
        now = self.clock.monotonic()
        if self._loaded_at is not None and now - self._loaded_at < RELOAD_EVERY:
            return
        self._loaded_at = now
        since = self.clock.time() - self.window
        try:
            buckets = await self.stats.window(since)
        except Exception:  # the engine is away: rank on what this process knows
            log.warning("routing statistics unavailable; ranking on local knowledge", exc_info=True)
            return
        health: dict[tuple[str, str], ProviderHealth] = defaultdict(ProviderHealth)
        for b in buckets:
            health[(b.route, b.provider)] += ProviderHealth(
                submitted=b.submitted, rejected=b.rejected, delivered=b.delivered, undelivered=b.undelivered,
                failed=b.failed, latency_sum=b.latency_sum, latency_count=b.latency_count,
            )
        # observe() awaits its record() before returning, so what this process
        # counted is in the buckets: replacing the local counts loses nothing.
        self._health = dict(health)


__all__ = ["DEFAULT_ROUTE", "RoutePlan", "RouteTable"]
