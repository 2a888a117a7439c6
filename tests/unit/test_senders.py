"""protocol/senders.py: picking a From from a sender pool."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.senders import is_alphanumeric_sender, pick_sender

SF_1 = "+14155550101"
SF_2 = "+14155550102"
NYC = "+12125550101"
TORONTO = "+14165550199"
PARIS = "+33612345678"
LONDON = "+447911123456"
BRAND = "ACME"


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("ACME", True),
        ("Acme Shop", True),
        ("A2345678901", True),
        ("A23456789012", False),  # 12 characters
        ("12345", False),  # no letter: a short code, not a name
        ("", False),
        ("Café", False),
        ("acme-shop", False),
        ("+14155550101", False),
    ],
)
def test_is_alphanumeric_sender(value: str, ok: bool) -> None:
    assert is_alphanumeric_sender(value) is ok


def test_empty_pool() -> None:
    with pytest.raises(ValueError):
        pick_sender([], SF_1)


def test_sticky_wins_while_it_is_in_the_pool() -> None:
    assert pick_sender([SF_1, NYC, PARIS], "+14155550123", sticky=PARIS) == PARIS
    assert pick_sender([SF_1, NYC], "+14155550123", sticky=PARIS) == SF_1  # gone: geomatch decides


def test_no_alphanumeric_sender_towards_nanp_unless_nothing_else() -> None:
    for i in range(50):
        assert pick_sender([BRAND, PARIS], f"+1415555{i:04d}") == PARIS
    assert pick_sender([BRAND], "+14155550123") == BRAND
    assert pick_sender([BRAND], "+33612345679") == BRAND


def test_geomatch_prefers_area_code_then_country() -> None:
    pool = [PARIS, NYC, SF_1, TORONTO, LONDON]
    assert pick_sender(pool, "+14155559999") == SF_1  # same area code
    assert pick_sender(pool, "+12125559999") == NYC
    assert pick_sender(pool, "+16135550123") == TORONTO  # Ottawa: no 613 number, but Canada
    assert pick_sender(pool, "+33698765432") == PARIS
    assert pick_sender(pool, "+447700900999") in pool  # a fictional UK number: no region, anyone


def test_geomatch_off_or_not_e164_spreads_over_everything() -> None:
    pool = [PARIS, NYC, SF_1]
    tos = [f"+1415555{i:04d}" for i in range(300)]
    assert set(pick_sender(pool, to, geomatch=False) for to in tos) == set(pool)
    assert pick_sender(pool, "client:alice") in pool


def test_same_to_same_sender_and_tos_spread_evenly() -> None:
    pool = [f"+1415555{i:04d}" for i in range(5)]
    tos = [f"+1415777{i:04d}" for i in range(5000)]
    counts = Counter(pick_sender(pool, to) for to in tos)
    assert set(counts) == set(pool)
    assert all(800 <= n <= 1200 for n in counts.values()), counts


def test_removing_a_sender_moves_only_its_tos() -> None:
    pool = [f"+1415555{i:04d}" for i in range(6)]
    smaller = pool[:-1]
    for i in range(1000):
        to = f"+1415777{i:04d}"
        before = pick_sender(pool, to)
        if before != pool[-1]:
            assert pick_sender(smaller, to) == before


numbers = st.from_regex(r"\+(1[2-9][0-9]{9}|33[67][0-9]{8}|44[0-9]{10})", fullmatch=True)
senders = st.one_of(numbers, st.sampled_from([BRAND, "Shop 24", "X"]))


@given(pool=st.lists(senders, min_size=1, max_size=8), to=numbers, geomatch=st.booleans(), data=st.data())
def test_pick_is_deterministic_in_the_pool_and_order_free(
    pool: list[str], to: str, geomatch: bool, data: st.DataObject
) -> None:
    chosen = pick_sender(pool, to, geomatch=geomatch)
    assert chosen in pool
    assert pick_sender(pool, to, geomatch=geomatch) == chosen
    assert pick_sender(data.draw(st.permutations(pool)), to, geomatch=geomatch) == chosen
    if to.startswith("+1") and any(not is_alphanumeric_sender(s) for s in pool):
        assert not is_alphanumeric_sender(chosen)
    if geomatch and to.startswith("+1") and any(s[:5] == to[:5] for s in pool):
        assert chosen[:5] == to[:5]
