"""GET /v1/Nodes: the live nodes with their roles and session counts, for
operators only."""

from __future__ import annotations

import dataclasses
import socket

from tests.helpers.messaging import basic, call
from presence_server.clock import ManualClock
from presence_server.node import Node
from tests.helpers.servers import RunningServer, TestAccount, make_config, start_server
from tests.helpers.wsclient import RawClient

OPS = ("ops", "operator-password-123456")


async def test_nodes_lists_this_node_with_its_sessions_for_the_operator_only() -> None:
    server = await start_server(operator={"username": OPS[0], "password": OPS[1]}, server={"node_heartbeat": 2.0})
    try:
        for headers in ({}, basic(server.account.sid, server.account.auth_token), basic(OPS[0], "wrong-password-000000")):
            status, err, _ = await call(server, "GET", "/v1/Nodes", headers=headers)
            assert status == 401 and err["code"] == 40014
        client = await RawClient.open(server.ws_url)
        assert (await client.register(server.token("alice")))["type"] == "registered"
        status, body, _ = await call(server, "GET", "/v1/Nodes", headers=basic(*OPS))
        assert status == 200
        (node,) = body["nodes"]
        assert node["node_id"] == server.node.node_id and node["sessions"] == 1 and node["age"] == 0
        assert node["roles"] == ["gateway", "signaling", "messaging"] and node["address"] == f"127.0.0.1:{server.node.port}"
        await client.close()
        # Another node that announced itself, then stopped: listed until three heartbeats pass.
        ghost = dataclasses.replace(server.node.announcement(), node_id="ND" + "0" * 32)
        await server.node.engine.nodes.heartbeat(ghost, ttl=6.0)
        status, body, _ = await call(server, "GET", "/v1/Nodes", headers=basic(*OPS))
        assert [n["node_id"] for n in body["nodes"]] == sorted(["ND" + "0" * 32, server.node.node_id])
        await server.advance(6.5)
        status, body, _ = await call(server, "GET", "/v1/Nodes", headers=basic(*OPS))
        assert [n["node_id"] for n in body["nodes"]] == [server.node.node_id]
    finally:
        await server.node.stop()


async def test_without_operator_credentials_configured_nodes_is_closed() -> None:
    server = await start_server()
    try:
        status, err, _ = await call(server, "GET", "/v1/Nodes", headers=basic("operator", "anything-at-all-0000"))
        assert status == 401 and err["code"] == 40014 and "no operator credentials" in err["message"]
    finally:
        await server.node.stop()


async def test_a_node_bound_to_every_interface_is_listed_by_its_host_name() -> None:
    """`0.0.0.0:8080` would not tell an operator which process it is."""
    account = TestAccount()
    node = Node(make_config([account], operator={"username": OPS[0], "password": OPS[1]}), clock=ManualClock())
    port = await node.start("0.0.0.0", 0)
    try:
        server = RunningServer(node, node.clock, [account])  # type: ignore[arg-type]
        status, body, _ = await call(server, "GET", "/v1/Nodes", headers=basic(*OPS))
        assert status == 200
        (entry,) = body["nodes"]
        assert entry["address"] == f"{socket.gethostname()}:{port}"
    finally:
        await node.stop()
