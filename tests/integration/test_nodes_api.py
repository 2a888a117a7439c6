"""GET /v1/Nodes: the live nodes with their roles and session counts, for
operators only."""

from __future__ import annotations

import dataclasses

from tests.helpers.messaging import basic, call
from tests.helpers.servers import start_server
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
