"""The node registry (GET /v1/Nodes): announcements, run-out and leaving."""

from __future__ import annotations

import dataclasses

from presence_server.engines.ports import Engine, NodeInfo


def info(node_id: str, at: float, sessions: int = 0) -> NodeInfo:
    return NodeInfo(node_id, ("gateway", "signaling"), "1.2.3", "10.0.0.1:8080", sessions, started=10.0, heartbeat=at)


async def test_announced_nodes_are_live_until_their_ttl_runs_out(engine: Engine) -> None:
    nodes = engine.nodes
    await nodes.heartbeat(info("ND2", at=100.0, sessions=7), ttl=15)
    await nodes.heartbeat(info("ND1", at=104.0), ttl=15)
    assert await nodes.live(now=110.0) == [info("ND1", 104.0), info("ND2", 100.0, 7)]
    assert [n.node_id for n in await nodes.live(now=115.0)] == ["ND1"]  # ND2 ran out at 115
    assert await nodes.live(now=118.0) == [info("ND1", 104.0)]  # ND2 stays out
    assert await nodes.live(now=119.0) == []  # ND1 ran out at 119


async def test_a_heartbeat_refreshes_the_entry(engine: Engine) -> None:
    nodes = engine.nodes
    await nodes.heartbeat(info("ND1", at=100.0, sessions=1), ttl=15)
    fresh = dataclasses.replace(info("ND1", at=112.0, sessions=5), roles=("messaging",))
    await nodes.heartbeat(fresh, ttl=15)
    assert await nodes.live(now=120.0) == [fresh]


async def test_a_node_that_leaves_is_gone_at_once(engine: Engine) -> None:
    nodes = engine.nodes
    await nodes.heartbeat(info("ND1", at=100.0), ttl=15)
    await nodes.heartbeat(info("ND2", at=100.0), ttl=15)
    await nodes.leave("ND1")
    await nodes.leave("ND9")  # unknown: nothing happens
    assert [n.node_id for n in await nodes.live(now=101.0)] == ["ND2"]
