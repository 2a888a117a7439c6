"""The LinkStore contract (engines/outbound.py): tracked short links and their clicks."""

from __future__ import annotations

import dataclasses

import pytest

from presence_server.engines.outbound import LinkStats, TrackedLink
from presence_server.engines.ports import Engine
from protocol.addresses import new_sid

T0 = 1_700_000_000.0
_counter = iter(range(10**9))


def link(account: str, message: str | None = None, **fields: object) -> TrackedLink:
    data: dict[str, object] = {
        "code": f"c{next(_counter):07d}",
        "url": "https://example.com/offer?id=1",
        "account_sid": account,
        "message_sid": message or new_sid("SM"),
        "created_at": T0,
    }
    data.update(fields)
    return TrackedLink(**data)  # type: ignore[arg-type]


async def test_add_then_get_returns_every_field(engine: Engine) -> None:
    account = new_sid("AC")
    plain = link(account)
    full = link(account, broadcast_sid=new_sid("BC"), content_version="b", url="https://example.com/ü?q=a b")
    await engine.links.add([plain, full])
    assert await engine.links.get(plain.code) == plain
    assert await engine.links.get(full.code) == full
    assert await engine.links.get("unknown") is None
    await engine.links.add([])  # nothing to store


async def test_a_code_already_stored_stores_none_of_the_batch(engine: Engine) -> None:
    account = new_sid("AC")
    first = link(account)
    await engine.links.add([first])
    fresh = link(account)
    with pytest.raises(ValueError):
        await engine.links.add([fresh, dataclasses.replace(first, url="https://elsewhere.example")])
    assert await engine.links.get(fresh.code) is None
    assert await engine.links.get(first.code) == first
    twice = link(account)
    with pytest.raises(ValueError):
        await engine.links.add([twice, dataclasses.replace(twice, url="https://other.example")])
    assert await engine.links.get(twice.code) is None


async def test_click_records_and_returns_the_link(engine: Engine) -> None:
    account = new_sid("AC")
    l1 = link(account)
    await engine.links.add([l1])
    assert await engine.links.click(l1.code, T0 + 1, "Mozilla/5.0") == l1
    assert await engine.links.click(l1.code, T0 + 2, "curl/8") == l1
    assert await engine.links.clicks(account, l1.code) == [(T0 + 2, "curl/8"), (T0 + 1, "Mozilla/5.0")]


async def test_a_click_on_an_unknown_code_records_nothing(engine: Engine) -> None:
    account = new_sid("AC")
    assert await engine.links.click("nope", T0, "agent") is None
    assert await engine.links.clicks(account, "nope") == []


async def test_clicks_are_newest_first_limited_and_capped(engine: Engine) -> None:
    account = new_sid("AC")
    l1 = link(account)
    await engine.links.add([l1])
    for at in (T0 + 3, T0 + 1, T0 + 5, T0 + 2, T0 + 4):
        await engine.links.click(l1.code, at, f"agent-{at - T0:.0f}")
    assert await engine.links.clicks(account, l1.code, limit=3) == [(T0 + 5, "agent-5"), (T0 + 4, "agent-4"), (T0 + 3, "agent-3")]
    await engine.links.click(l1.code, T0 + 10, "x" * 2000)
    newest = await engine.links.clicks(account, l1.code, limit=1)
    assert newest == [(T0 + 10, "x" * 512)]


async def test_clicks_are_scoped_to_the_links_account(engine: Engine) -> None:
    account, other = new_sid("AC"), new_sid("AC")
    l1 = link(account)
    await engine.links.add([l1])
    await engine.links.click(l1.code, T0, "agent")
    assert await engine.links.clicks(other, l1.code) == []
    assert len(await engine.links.clicks(account, l1.code)) == 1


async def test_broadcast_stats_per_content_version(engine: Engine) -> None:
    account, broadcast = new_sid("AC"), new_sid("BC")
    m1, m2, m3, m4 = (new_sid("SM") for _ in range(4))
    a1 = link(account, m1, broadcast_sid=broadcast, content_version="a")
    a1_second = link(account, m1, broadcast_sid=broadcast, content_version="a", url="https://example.com/2")
    a2 = link(account, m2, broadcast_sid=broadcast, content_version="a")
    b3 = link(account, m3, broadcast_sid=broadcast, content_version="b")
    none4 = link(account, m4, broadcast_sid=broadcast)
    unclicked = link(account, new_sid("SM"), broadcast_sid=broadcast, content_version="c")
    elsewhere = link(account, broadcast_sid=new_sid("BC"), content_version="a")
    theirs = link(new_sid("AC"), broadcast_sid=broadcast, content_version="a")
    await engine.links.add([a1, a1_second, a2, b3, none4, unclicked, elsewhere, theirs])
    # m1: three clicks over its two links (one message); m2: one; m3: two; m4: one.
    for code in (a1.code, a1.code, a1_second.code, a2.code, b3.code, b3.code, none4.code, elsewhere.code, theirs.code):
        await engine.links.click(code, T0 + 1, "agent")
    stats = await engine.links.broadcast_stats(account, broadcast)
    assert stats == [
        LinkStats(content_version=None, clicks=1, unique=1),
        LinkStats(content_version="a", clicks=4, unique=2),
        LinkStats(content_version="b", clicks=2, unique=1),
        LinkStats(content_version="c", clicks=0, unique=0),  # a version with links but no clicks yet
    ]
    assert await engine.links.broadcast_stats(new_sid("AC"), broadcast) == []
    assert await engine.links.broadcast_stats(account, new_sid("BC")) == []
