from __future__ import annotations

import asyncio

import pytest

from presence_server.engines.calls import CallRecord
from presence_server.engines.ports import Engine

ACC = "AC" + "1" * 32
OTHER = "AC" + "2" * 32


def call(n: int, account: str = ACC, **kw: object) -> CallRecord:
    return CallRecord(sid=f"CA{n:032x}", account_sid=account, from_="client:alice", to="client:bob", date_created=float(n), **kw)  # type: ignore[arg-type]


async def test_create_get_update(engine: Engine) -> None:
    store = engine.calls
    await store.create(call(1))
    with pytest.raises(ValueError):
        await store.create(call(1))
    got = await store.get(ACC, call(1).sid)
    assert got == call(1)
    updated = await store.update(ACC, call(1).sid, status="in-progress", start_time=10.0)
    assert updated is not None and updated.status == "in-progress" and updated.start_time == 10.0
    assert (await store.get(ACC, call(1).sid)) == updated


async def test_other_accounts_calls_are_invisible(engine: Engine) -> None:
    store = engine.calls
    await store.create(call(1, OTHER))
    assert await store.get(ACC, call(1).sid) is None
    assert await store.update(ACC, call(1).sid, status="completed") is None
    assert await store.list(ACC) == []
    assert (await store.get(OTHER, call(1).sid)) is not None


async def test_list_filters_and_pages_newest_first(engine: Engine) -> None:
    store = engine.calls
    for n in range(1, 6):
        await store.create(call(n, status="completed" if n % 2 else "in-progress", parent_call_sid=call(1).sid if n > 3 else None))
    assert [c.sid for c in await store.list(ACC, limit=2)] == [call(5).sid, call(4).sid]
    assert [c.sid for c in await store.list(ACC, limit=2, offset=2)] == [call(3).sid, call(2).sid]
    assert {c.sid for c in await store.list(ACC, status="in-progress")} == {call(2).sid, call(4).sid}
    assert {c.sid for c in await store.list(ACC, parent_call_sid=call(1).sid)} == {call(4).sid, call(5).sid}


def test_api_rendering() -> None:
    rec = call(1, status="completed", start_time=100.0, end_time=161.4, direction="outbound-dial")
    api = rec.to_api()
    assert api["duration"] == "61" and api["from"] == "client:alice" and api["uri"].endswith(f"/Calls/{rec.sid}.json")
    assert api["start_time"] == "Thu, 01 Jan 1970 00:01:40 +0000"


async def test_update_if_moves_a_call_only_from_the_expected_status(engine: Engine) -> None:
    store = engine.calls
    await store.create(call(1, status="in-progress"))
    moved = await store.update_if(ACC, call(1).sid, "in-progress", status="completed", end_time=20.0)
    assert moved is not None and moved.status == "completed" and moved.end_time == 20.0
    # A second process that read the same status loses: the record keeps the first's end.
    assert await store.update_if(ACC, call(1).sid, "in-progress", status="failed", end_time=30.0) is None
    assert await store.get(ACC, call(1).sid) == moved
    # Unknown calls and other accounts' calls are not touched.
    assert await store.update_if(ACC, call(2).sid, "in-progress", status="completed") is None
    await store.create(call(3, OTHER, status="ringing"))
    assert await store.update_if(ACC, call(3).sid, "ringing", status="canceled") is None
    assert (await store.get(OTHER, call(3).sid)).status == "ringing"  # type: ignore[union-attr]


async def test_update_if_applies_exactly_once_among_concurrent_callers(engine: Engine) -> None:
    """Several gateways notice the same dead signaling process at once: one of
    them finishes each call."""
    store = engine.calls
    await store.create(call(1, status="ringing"))
    results = await asyncio.gather(*(store.update_if(ACC, call(1).sid, "ringing", status="canceled", end_time=float(n)) for n in range(8)))
    won = [r for r in results if r is not None]
    assert len(won) == 1
    assert await store.get(ACC, call(1).sid) == won[0]
