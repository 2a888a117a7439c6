from __future__ import annotations

from typing import Any

import pytest

from presence_server.engines.ports import Engine


async def test_publish_reaches_subscribers_in_order(engine: Engine) -> None:
    got: list[dict[str, Any]] = []
    sub = await engine.bus.subscribe("presence:AC1", got.append)
    for i in range(5):
        await engine.bus.publish("presence:AC1", {"n": i, "nested": {"list": [1, "a", None, 1.5, True]}})
    await engine.bus.publish("presence:AC2", {"n": 99})
    assert [m["n"] for m in got] == [0, 1, 2, 3, 4]
    assert got[0]["nested"] == {"list": [1, "a", None, 1.5, True]}
    await sub.close()
    await engine.bus.publish("presence:AC1", {"n": 5})
    assert len(got) == 5


async def test_each_subscriber_gets_its_own_copy(engine: Engine) -> None:
    a: list[dict[str, Any]] = []
    b: list[dict[str, Any]] = []
    await engine.bus.subscribe("t", a.append)
    await engine.bus.subscribe("t", b.append)
    await engine.bus.publish("t", {"x": [1]})
    a[0]["x"].append(2)
    assert b[0] == {"x": [1]}


async def test_a_failing_handler_does_not_stop_the_others(engine: Engine) -> None:
    got: list[dict[str, Any]] = []

    def broken(_: dict[str, Any]) -> None:
        raise RuntimeError("handler bug")

    await engine.bus.subscribe("t", broken)
    await engine.bus.subscribe("t", got.append)
    await engine.bus.publish("t", {"x": 1})
    assert got == [{"x": 1}]


async def test_messages_must_be_plain_data(engine: Engine) -> None:
    await engine.bus.subscribe("t", lambda m: None)
    with pytest.raises(TypeError):
        await engine.bus.publish("t", {"x": object()})


async def test_publish_says_whether_anyone_listens(engine: Engine) -> None:
    """0 for a topic nobody subscribes to (a dead node's address); this engine
    counts once however many handlers it has."""
    assert await engine.bus.publish("node:NDgone", {"x": 1}) == 0
    first = await engine.bus.subscribe("node:NDhere", lambda m: None)
    second = await engine.bus.subscribe("node:NDhere", lambda m: None)
    assert await engine.bus.publish("node:NDhere", {"x": 1}) == 1
    await first.close()
    await second.close()
    assert await engine.bus.publish("node:NDhere", {"x": 1}) == 0
