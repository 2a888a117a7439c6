"""protocol/routing.py: routes, matching, provider health and ranking."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.routing import (
    DEFAULT_ROUTE,
    STRATEGIES,
    ProviderHealth,
    Route,
    RouteEntry,
    country_of,
    default_route,
    match_route,
    rank,
    score,
)

ALL = frozenset({"a", "b", "c", "d", "e"})


def route(strategy: str, *providers: str | RouteEntry, **criteria: object) -> Route:
    entries = tuple(p if isinstance(p, RouteEntry) else RouteEntry(p) for p in providers)
    return Route("r", strategy, entries, **criteria)  # type: ignore[arg-type]


# -- routes and matching ---------------------------------------------------------


def test_route_validation() -> None:
    with pytest.raises(ValueError, match="failover, weighted, adaptive, broadcast"):
        route("random", "a")
    with pytest.raises(ValueError, match="no providers"):
        route("failover")
    with pytest.raises(ValueError):
        RouteEntry("a", weight=-1)
    with pytest.raises(ValueError):
        RouteEntry("a", cost=float("nan"))


def test_route_normalises_configuration_shapes() -> None:
    r = Route("r", "failover", [RouteEntry("a")], countries=["us"], prefixes=["+44"])  # type: ignore[arg-type]
    assert r.entries == (RouteEntry("a"),)
    assert r.countries == frozenset({"US"})
    assert r.prefixes == ("+44",)


@pytest.mark.parametrize(
    ("number", "region"),
    [
        ("+14155550100", "US"),
        ("+16135550123", "CA"),
        ("+33612345678", "FR"),
        ("+8613800138000", "CN"),
        ("+15555550100", "US"),  # valid in no NANP country: the calling code's main one
        ("+447700900123", "GB"),  # a drama range
        ("0612345678", None),  # not E.164
        ("", None),
        ("client:alice", None),
        ("+", None),
    ],
)
def test_country_of(number: str, region: str | None) -> None:
    assert country_of(number) == region


@given(st.text(max_size=20))
@settings(max_examples=200)
def test_country_of_never_raises(text: str) -> None:
    result = country_of(text)
    assert result is None or (len(result) == 2 and result.isupper())


def test_matching_any_criterion_suffices() -> None:
    r = route("failover", "a", countries=frozenset({"FR"}), prefixes=("+4477",), identities=frozenset({"ops"}))
    assert r.matches("+33612345678", None)
    assert r.matches("+447700900123", None)
    assert r.matches("+14155550100", "ops")
    assert not r.matches("+14155550100", None)
    assert not r.matches("+14155550100", "alice")
    assert route("failover", "a").matches("anything", None)


def test_match_route_takes_the_first_match() -> None:
    france = Route("fr", "failover", (RouteEntry("a"),), countries=frozenset({"FR"}))
    catch_all = Route("all", "failover", (RouteEntry("b"),))
    assert match_route([france, catch_all], "+33612345678", None) is france
    assert match_route([france, catch_all], "+14155550100", None) is catch_all
    assert match_route([france], "+14155550100", None) is None


def test_default_route() -> None:
    r = default_route(["x", "y"])
    assert (r.name, r.strategy, [e.provider for e in r.entries]) == (DEFAULT_ROUTE, "failover", ["x", "y"])
    with pytest.raises(ValueError):
        default_route([])


# -- health and score ------------------------------------------------------------

healths = st.builds(
    ProviderHealth,
    submitted=st.integers(0, 1000),
    rejected=st.integers(0, 1000),
    delivered=st.integers(0, 1000),
    undelivered=st.integers(0, 1000),
    failed=st.integers(0, 1000),
    latency_sum=st.floats(0.0, 1e5),
    latency_count=st.integers(0, 1000),
)


def test_health_arithmetic() -> None:
    h = ProviderHealth(submitted=3, delivered=2, failed=1, latency_sum=10.0, latency_count=2)
    assert (h + h).delivered == 4
    assert h.outcomes == 3
    assert h.delivered_ratio == pytest.approx(2 / 3)
    assert h.mean_latency == 5.0
    assert ProviderHealth().delivered_ratio is None and ProviderHealth().mean_latency is None


def test_score_prior_and_latency_penalty() -> None:
    assert score(None) == 0.9
    assert score(ProviderHealth()) == 0.9
    fast = ProviderHealth(delivered=100, latency_sum=100.0, latency_count=100)  # 1 s
    slow = ProviderHealth(delivered=100, latency_sum=3000.0, latency_count=100)  # 30 s
    glacial = ProviderHealth(delivered=100, latency_sum=1e6, latency_count=100)
    assert score(fast) > score(slow) > score(glacial)
    assert score(fast) - score(glacial) < 0.05
    # A fast provider that loses messages does not beat a slow one that delivers.
    lossy = ProviderHealth(delivered=80, failed=20, latency_sum=0.0, latency_count=0)
    assert score(glacial) > score(lossy)


@given(healths, st.integers(1, 100))
def test_more_deliveries_never_lower_the_score(health: ProviderHealth, more: int) -> None:
    assert score(health + ProviderHealth(delivered=more)) >= score(health)


@given(healths, st.integers(1, 100), st.sampled_from(["rejected", "undelivered", "failed"]))
def test_more_failures_never_raise_the_score(health: ProviderHealth, more: int, kind: str) -> None:
    assert score(health + ProviderHealth(**{kind: more})) <= score(health)


# -- ranking ---------------------------------------------------------------------

entry_lists = st.lists(
    st.builds(RouteEntry, st.sampled_from(sorted(ALL)), st.floats(0.0, 10.0), st.floats(0.0, 5.0)),
    min_size=1,
    max_size=8,
)


@given(
    entries=entry_lists,
    strategy=st.sampled_from(STRATEGIES),
    capable=st.sets(st.sampled_from(sorted(ALL))),
    exclude=st.sets(st.sampled_from(sorted(ALL))),
    max_cost=st.none() | st.floats(0.0, 10.0),
    segments=st.integers(1, 4),
    exploration=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**32),
)
@settings(max_examples=200)
def test_rank_is_a_permutation_of_the_usable_entries(
    entries: list[RouteEntry],
    strategy: str,
    capable: set[str],
    exclude: set[str],
    max_cost: float | None,
    segments: int,
    exploration: float,
    seed: int,
) -> None:
    r = Route("r", strategy, tuple(entries))
    health = {"a": ProviderHealth(delivered=9, failed=1), "b": ProviderHealth(failed=5)}
    ranked = rank(
        r, health, capable=capable, exclude=exclude, rng=random.Random(seed),
        exploration=exploration, segments=segments, max_cost=max_cost,
    )  # fmt: skip
    usable = [
        e.provider
        for e in entries
        if e.provider in capable and e.provider not in exclude and (max_cost is None or e.cost * segments <= max_cost)
    ]
    assert len(ranked) == len(set(ranked))
    assert set(ranked) == set(usable)
    if strategy in ("failover", "broadcast"):
        assert ranked == list(dict.fromkeys(usable))  # config order, a repeated provider at its first place


def test_max_cost_counts_segments() -> None:
    r = route("failover", RouteEntry("a", cost=0.05), RouteEntry("b", cost=0.01))
    rng = random.Random(0)
    assert rank(r, {}, capable=ALL, rng=rng, segments=3, max_cost=0.1) == ["b"]
    assert rank(r, {}, capable=ALL, rng=rng, segments=2, max_cost=0.1) == ["a", "b"]


def test_weighted_first_places_follow_the_weights() -> None:
    r = route("weighted", RouteEntry("a", weight=6), RouteEntry("b", weight=3), RouteEntry("c", weight=1))
    rng = random.Random(1234)
    n = 20_000
    firsts = Counter(rank(r, {}, capable=ALL, rng=rng)[0] for _ in range(n))
    assert firsts["a"] / n == pytest.approx(0.6, abs=0.02)
    assert firsts["b"] / n == pytest.approx(0.3, abs=0.02)
    assert firsts["c"] / n == pytest.approx(0.1, abs=0.02)


def test_weighted_zero_weight_goes_last() -> None:
    r = route("weighted", RouteEntry("z", weight=0), RouteEntry("a"), RouteEntry("b"))
    rng = random.Random(7)
    assert all(rank(r, {}, capable={"z", "a", "b"}, rng=rng)[-1] == "z" for _ in range(200))


def test_adaptive_prefers_the_better_score_then_the_cheaper() -> None:
    good = ProviderHealth(delivered=95, failed=5)
    bad = ProviderHealth(delivered=40, failed=60)
    r = route("adaptive", "bad", "good")
    rng = random.Random(0)
    assert rank(r, {"good": good, "bad": bad}, capable={"good", "bad"}, rng=rng) == ["good", "bad"]
    # Equal scores: cheaper first, then config order.
    tie = route("adaptive", RouteEntry("x", cost=2), RouteEntry("y", cost=1), RouteEntry("z", cost=1))
    assert rank(tie, {}, capable={"x", "y", "z"}, rng=rng) == ["y", "z", "x"]


@pytest.mark.parametrize("n", [2, 4])
def test_adaptive_exploration_rate(n: int) -> None:
    providers = [f"p{i}" for i in range(n)]
    health = {p: ProviderHealth(delivered=95 - 10 * i, failed=5 + 10 * i) for i, p in enumerate(providers)}
    r = route("adaptive", *providers)
    rng = random.Random(99)
    draws = 20_000
    firsts = Counter(rank(r, health, capable=set(providers), rng=rng, exploration=0.2)[0] for _ in range(draws))
    assert firsts["p0"] / draws == pytest.approx(0.8, abs=0.02)
    for p in providers[1:]:
        assert firsts[p] / draws == pytest.approx(0.2 / (n - 1), abs=0.02)
