"""Message routes: which providers may carry a message, and in which order to try them.

A *route* is an address record: criteria saying which messages it is for
(destination country, number prefix, sending identity) and the providers
that may carry them, with a strategy for ordering those providers. The first
route whose criteria match wins, like a routing table read top to bottom.

Provider health is counted by the caller (submissions, delivery receipts,
latency) and turned into a score here; ``adaptive`` routes try the best
score first. Randomness comes from an ``random.Random`` the caller passes in,
so rankings are reproducible under test.
"""

from __future__ import annotations

import functools
import math
import random
from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Final

import phonenumbers

STRATEGIES: Final = ("failover", "weighted", "adaptive", "broadcast")
DEFAULT_ROUTE: Final = "default"


@dataclass(frozen=True)
class RouteEntry:
    provider: str
    weight: float = 1.0  # for "weighted": relative share of first tries
    cost: float = 0.0  # per segment, in whatever unit max_cost is given in

    def __post_init__(self) -> None:
        if not self.provider:
            raise ValueError("a route entry needs a provider")
        if not (math.isfinite(self.weight) and self.weight >= 0):
            raise ValueError(f"weight of {self.provider!r} must be a finite number >= 0")
        if not (math.isfinite(self.cost) and self.cost >= 0):
            raise ValueError(f"cost of {self.provider!r} must be a finite number >= 0")


@dataclass(frozen=True)
class Route:
    name: str
    strategy: str
    entries: tuple[RouteEntry, ...]
    countries: frozenset[str] = frozenset()  # ISO 3166 alpha-2, e.g. "US"
    prefixes: tuple[str, ...] = ()  # E.164 prefixes, e.g. "+4477"
    identities: frozenset[str] = frozenset()  # client identities sending or receiving

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            choices = ", ".join(STRATEGIES)
            raise ValueError(f"route {self.name!r}: unknown strategy {self.strategy!r}: expected one of {choices}")
        if not self.entries:
            raise ValueError(f"route {self.name!r} has no providers")
        # Configuration hands over lists and lower-case country codes; normalise
        # once here rather than on every match.
        object.__setattr__(self, "entries", tuple(self.entries))
        object.__setattr__(self, "countries", frozenset(c.upper() for c in self.countries))
        object.__setattr__(self, "prefixes", tuple(self.prefixes))
        object.__setattr__(self, "identities", frozenset(self.identities))

    def matches(self, number: str, identity: str | None) -> bool:
        """True if any criterion matches; a route without criteria matches everything."""
        if not (self.countries or self.prefixes or self.identities):
            return True
        if identity is not None and identity in self.identities:
            return True
        if any(number.startswith(prefix) for prefix in self.prefixes):
            return True
        return bool(self.countries) and country_of(number) in self.countries


@functools.lru_cache(maxsize=4096)
def country_of(number: str) -> str | None:
    """The ISO 3166 alpha-2 region of an E.164 number, or None.

    A number that parses but is valid in no region of its country code (the
    fictional +1 555 01xx, a range too new for the library's metadata) counts
    as the calling code's main country (+1: US, +44: GB): routing it like its
    neighbours beats leaving it to the catch-all route. None when the text is
    not a phone number at all.
    """
    try:
        parsed = phonenumbers.parse(number, None)
    except phonenumbers.NumberParseException:
        return None
    except Exception:  # never let a parser corner case take down the send path
        return None
    region = phonenumbers.region_code_for_number(parsed)
    if (not region or region == phonenumbers.UNKNOWN_REGION) and parsed.country_code:
        region = phonenumbers.region_code_for_country_code(parsed.country_code)
    return region if region and region != phonenumbers.UNKNOWN_REGION else None


def match_route(routes: Sequence[Route], number: str, identity: str | None) -> Route | None:
    """The first route in ``routes`` that matches, or None."""
    return next((route for route in routes if route.matches(number, identity)), None)


def default_route(providers: Sequence[str]) -> Route:
    """Failover over ``providers`` in the order given (ValueError if there are none)."""
    return Route(DEFAULT_ROUTE, "failover", tuple(RouteEntry(provider) for provider in providers))


@dataclass(frozen=True)
class ProviderHealth:
    submitted: int = 0
    rejected: int = 0  # refused at submission
    delivered: int = 0
    undelivered: int = 0
    failed: int = 0
    latency_sum: float = 0.0  # seconds from submission to the delivery receipt
    latency_count: int = 0

    def __add__(self, other: object) -> ProviderHealth:
        if not isinstance(other, ProviderHealth):
            return NotImplemented
        return ProviderHealth(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    @property
    def outcomes(self) -> int:
        """Messages whose fate is known (a submission still pending is not an outcome)."""
        return self.rejected + self.delivered + self.undelivered + self.failed

    @property
    def delivered_ratio(self) -> float | None:
        return self.delivered / self.outcomes if self.outcomes else None

    @property
    def mean_latency(self) -> float | None:
        return self.latency_sum / self.latency_count if self.latency_count else None


# 0.01 per 10 s of mean latency, at most 0.05: enough to order providers that
# deliver equally well, too little to prefer a fast provider that loses messages.
_LATENCY_PENALTY_PER_SECOND: Final = 0.001
_LATENCY_PENALTY_CAP: Final = 0.05


def score(health: ProviderHealth | None, *, prior: float = 0.9, prior_weight: float = 4.0) -> float:
    """How good a provider is at delivering, in about [-0.05, 1].

    The delivered ratio is smoothed towards ``prior`` as if ``prior_weight``
    messages had already gone that way: one lost message out of one must not
    rank a provider below one that has never been tried, and a new provider
    starts at the prior instead of at 0 or 1.
    """
    if not 0.0 <= prior <= 1.0 or not prior_weight > 0:
        raise ValueError("prior must be in [0, 1] and prior_weight > 0")
    if health is None:
        return prior
    ratio = (health.delivered + prior * prior_weight) / (health.outcomes + prior_weight)
    latency = health.mean_latency
    if latency is None or latency <= 0:
        return ratio
    return ratio - min(_LATENCY_PENALTY_CAP, latency * _LATENCY_PENALTY_PER_SECOND)


def rank(
    route: Route,
    health: Mapping[str, ProviderHealth],
    *,
    capable: Container[str],
    exclude: Container[str] = (),
    rng: random.Random,
    exploration: float = 0.0,
    segments: int = 1,
    max_cost: float | None = None,
) -> list[str]:
    """The providers of ``route`` to try, best first (for "broadcast": all to send to).

    Entries are kept if the provider is ``capable`` (can carry this message:
    MMS, this sender, ...), not in ``exclude`` (already tried) and, with
    ``max_cost``, cost no more than that for ``segments`` segments. A provider
    listed twice counts once, at the first of its entries that is kept.
    """
    entries: list[RouteEntry] = []
    seen: set[str] = set()
    for entry in route.entries:
        if entry.provider in seen or entry.provider not in capable or entry.provider in exclude:
            continue
        if max_cost is not None and entry.cost * segments > max_cost:
            continue
        seen.add(entry.provider)
        entries.append(entry)

    if route.strategy == "weighted":
        return [entry.provider for entry in _weighted_order(entries, rng)]
    if route.strategy == "adaptive":
        return _adaptive_order(entries, health, rng, exploration)
    return [entry.provider for entry in entries]  # failover and broadcast: config order


def _weighted_order(entries: list[RouteEntry], rng: random.Random) -> list[RouteEntry]:
    # Efraimidis-Spirakis: sorting by Exp(1)/weight draws without replacement
    # with probability proportional to weight at every position. A zero weight
    # (a provider kept only as a last resort) sorts last, in config order.
    def key(item: tuple[int, RouteEntry]) -> tuple[float, int]:
        index, entry = item
        draw = -math.log(1.0 - rng.random())  # 1 - random() is in (0, 1]
        return (draw / entry.weight if entry.weight > 0 else math.inf, index)

    return [entry for _, entry in sorted(enumerate(entries), key=key)]


def _adaptive_order(
    entries: list[RouteEntry], health: Mapping[str, ProviderHealth], rng: random.Random, exploration: float
) -> list[str]:
    indexed = list(enumerate(entries))
    indexed.sort(key=lambda item: (-score(health.get(item[1].provider)), item[1].cost, item[0]))
    order = [entry.provider for _, entry in indexed]
    # Without exploration a provider that once did badly would never be tried
    # again, so its score could never recover after the provider does.
    if len(order) > 1 and exploration > 0 and rng.random() < exploration:
        order.insert(0, order.pop(rng.randrange(1, len(order))))
    return order
