"""Two server nodes sharing one real redis-server: presence and calls cross nodes.

(One process, two nodes: every role of each node talks to the other only
through Redis, exactly as separate processes would.)"""

from __future__ import annotations

from typing import Any, AsyncIterator

import pytest

from presence_server.clock import ManualClock
from presence_server.node import Node
from protocol.addresses import new_sid
from protocol.tokens import mint_token
from tests.helpers.instructions import InstructionServer
from tests.helpers.redis_server import redis_server
from tests.helpers.servers import TestAccount, make_config
from tests.helpers.signaling_env import dial_client
from tests.helpers.wsclient import RawClient


@pytest.fixture
async def two_nodes(tmp_path: Any) -> AsyncIterator[tuple[Node, Node, TestAccount, InstructionServer, str]]:
    ins = InstructionServer(auth_token="")
    await ins.start()
    app_sid = new_sid("AP")
    account = TestAccount(identities=[{"identity": "bob", "phone": "+15550100002"}])
    account.extra = {"applications": [{"sid": app_sid, "voice_url": ins.url("/voice")}]}
    ins.auth_token = account.auth_token
    async with redis_server() as redis:
        clock = ManualClock()
        nodes = []
        for i in range(2):
            config = make_config(
                [account], engine={"kind": "redis", "url": redis.url, "data_dir": str(tmp_path / f"n{i}")},
                security={"allow_private_urls": True},
            )
            node = Node(config, clock=clock)
            await node.start("127.0.0.1", 0)
            nodes.append(node)
        try:
            yield nodes[0], nodes[1], account, ins, app_sid
        finally:
            for node in nodes:
                await node.stop()
            await ins.stop()


def token(account: TestAccount, identity: str, app_sid: str) -> str:
    grants = {
        "identity": identity,
        "presence": {"publish": True, "subscribe": True},
        "voice": {"incoming": {"allow": True}, "outgoing": {"application_sid": app_sid}},
    }
    return mint_token(key_sid=account.key_sid, account_sid=account.sid, identity=identity, secret=account.key_secret, now=1_800_000_000.0, grants=grants)


async def test_presence_and_a_call_cross_nodes(two_nodes: tuple[Node, Node, TestAccount, InstructionServer, str]) -> None:
    node1, node2, account, ins, app_sid = two_nodes
    bob = await RawClient.open(f"ws://127.0.0.1:{node2.port}/v1/connect")
    assert (await bob.register(token(account, "bob", app_sid), capabilities=["voice"]))["type"] == "registered"
    await bob.send({"type": "subscribe", "identities": ["alice"]})
    assert (await bob.recv_type("subscribed"))["presences"][0]["status"] == "offline"

    alice = await RawClient.open(f"ws://127.0.0.1:{node1.port}/v1/connect")
    assert (await alice.register(token(account, "alice", app_sid), status="busy"))["type"] == "registered"
    update = await bob.recv_type("presence_update")
    assert update["identity"] == "alice" and update["status"] == "busy"

    ins.on("/voice", dial_client(ins, "bob"))
    await alice.send({"type": "call", "to": "client:bob"})
    call_sid = (await alice.recv_type("call_created"))["call"]
    invite = await bob.recv_type("invite")
    assert invite["parent_call"] == call_sid
    await bob.send({"type": "accept", "call": invite["call"], "id": 1})
    assert (await bob.recv_type("ok"))["id"] == 1
    assert (await alice.recv_type("call_progress"))["status"] == "answered"
    await alice.send({"type": "signal", "call": call_sid, "payload": {"sdp": "offer"}})
    assert (await bob.recv_type("signal"))["payload"] == {"sdp": "offer"}
    await bob.send({"type": "signal", "call": invite["call"], "payload": {"sdp": "answer"}})
    assert (await alice.recv_type("signal"))["payload"] == {"sdp": "answer"}
    await bob.send({"type": "hangup", "call": invite["call"]})
    assert (await alice.recv_type("hangup"))["reason"] == "remote_hangup"
    assert ins.all_signed()
