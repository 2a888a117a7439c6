"""A node's mailbox: messages to other nodes cross the bus; a message to the
node itself (its signaling ringing its own gateway's sessions) is handed over
in the process, with the bus's guarantees and none of its round trips."""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator

import pytest
from redis.asyncio.connection import Connection

from presence_server.engines.memory import MemoryEngine
from presence_server.engines.ports import Engine
from presence_server.engines.redis import RedisEngine
from presence_server.mailbox import Mailbox
from tests.helpers.redis_server import redis_url, shared_redis_server  # noqa: F401 - fixtures, used by name


@pytest.fixture(params=["memory", "redis"])
async def engine(request: pytest.FixtureRequest) -> AsyncIterator[Engine]:
    eng: Engine = MemoryEngine() if request.param == "memory" else RedisEngine(request.getfixturevalue("redis_url"))
    await eng.start()
    try:
        yield eng
    finally:
        await eng.close()


async def started(engine: Engine, node_id: str, got: list[dict[str, Any]]) -> Mailbox:
    box = Mailbox(engine.bus, node_id)
    box.on("deliver", got.append)
    await box.start()
    return box


async def test_a_message_to_the_node_itself_is_delivered_at_once_as_a_copy(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    got: list[dict[str, Any]] = []
    box = await started(engine, "ND1", got)
    frame = {"type": "invite", "call": "CA1", "params": {"a": [1, 2]}}
    sends = 0
    original = Connection.send_packed_command

    async def counting(self: Connection, *args: Any, **kwargs: Any) -> None:
        nonlocal sends
        sends += 1
        await original(self, *args, **kwargs)

    monkeypatch.setattr(Connection, "send_packed_command", counting)
    assert await box.send("ND1", "deliver", session="SE1", frame=frame)
    monkeypatch.undo()
    assert sends == 0  # nothing sent to Redis (nor to anything else)
    assert got == [{"kind": "deliver", "from_node": "ND1", "session": "SE1", "frame": {**frame, "params": {"a": [1, 2]}}}]
    assert got[0]["frame"] is not frame and got[0]["frame"]["params"] is not frame["params"]
    await box.close()


async def test_a_message_to_itself_refuses_what_the_bus_refuses(engine: Engine) -> None:
    got: list[dict[str, Any]] = []
    box = await started(engine, "ND1", got)
    with pytest.raises(TypeError):
        await box.send("ND1", "deliver", frame={"x": object()})
    assert got == []
    await box.close()


async def test_a_failing_handler_does_not_fail_the_sender(engine: Engine) -> None:
    box = Mailbox(engine.bus, "ND1")

    def broken(message: dict[str, Any]) -> None:
        raise RuntimeError("handler bug")

    box.on("deliver", broken)
    await box.start()
    assert await box.send("ND1", "deliver", frame={})
    await box.close()


async def test_other_nodes_are_reached_over_the_bus_and_a_gone_one_is_reported(engine: Engine) -> None:
    got: list[dict[str, Any]] = []
    one = await started(engine, "ND1", [])
    two = await started(engine, "ND2", got)
    assert await one.send("ND2", "deliver", frame={"n": 1})
    for _ in range(200):
        if got:
            break
        await asyncio.sleep(0.01)
    assert got == [{"kind": "deliver", "from_node": "ND1", "frame": {"n": 1}}]
    await two.close()
    assert not await one.send("ND2", "deliver", frame={"n": 2})  # nobody listens there any more
    await one.close()
    assert not await one.send("ND1", "deliver", frame={"n": 3})  # nor, once closed, at its own address
