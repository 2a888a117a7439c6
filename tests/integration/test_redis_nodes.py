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


async def test_a_message_accepted_on_one_node_is_sent_by_another(tmp_path: Any) -> None:
    """Node 1 only accepts (no messaging role); node 2's dispatcher finds the job
    in Redis, delivers it in-app to alice on node 1's gateway, and her ack goes
    back to node 2. A second message for an absent identity goes out by SMS."""
    import aiohttp

    from tests.helpers.messaging import NUMBER, auth, messages_path

    account = TestAccount(
        identities=[{"identity": "alice", "phone": "+15550100001"}, {"identity": "bob", "phone": "+15550100002"}],
        extra={"phone_numbers": [{"number": NUMBER}]},
    )
    async with redis_server() as redis:
        clock = ManualClock()
        nodes = []
        for i, roles in enumerate((("gateway", "signaling"), ("messaging",))):
            config = make_config([account], engine={"kind": "redis", "url": redis.url, "data_dir": str(tmp_path / f"n{i}")})
            node = Node(config, clock=clock, roles=roles)
            await node.start("127.0.0.1", 0)
            nodes.append(node)
        front, sender = nodes
        try:
            alice = await RawClient.open(f"ws://127.0.0.1:{front.port}/v1/connect")
            assert (await alice.register(token(account, "alice", new_sid("AP")), capabilities=["messaging"]))["type"] == "registered"
            async with aiohttp.ClientSession() as http:
                sids = []
                for to in ("client:alice", "client:bob"):
                    async with http.post(f"http://127.0.0.1:{front.port}{messages_path(account.sid)}", headers=auth(account),
                                         data={"To": to, "From": NUMBER, "Body": f"hello {to}"}) as resp:
                        assert resp.status == 201
                        sids.append((await resp.json())["sid"])
            await clock.advance(1.0)  # node 2 polls the shared queue
            frame = await alice.recv_type("message")
            assert frame["sid"] == sids[0]
            await alice.send({"type": "ack", "sid": frame["sid"]})

            async def status(sid: str) -> str:
                for _ in range(500):
                    record = await front.engine.messages.get(account.sid, sid)
                    assert record is not None
                    if record.status in ("delivered", "sent"):
                        return f"{record.status}/{record.channel}"
                    await clock.advance(0.3)
                raise AssertionError(f"{sid} never left the queue")

            assert await status(sids[0]) == "delivered/app"
            assert await status(sids[1]) == "sent/sms"
            (entry,) = await sender.providers["outbox"].entries(10)  # type: ignore[attr-defined]
            assert entry["message_sid"] == sids[1] and entry["to"] == "+15550100002"
            await alice.close()
        finally:
            for node in nodes:
                await node.stop()
