"""A node that died is noticed when nobody listens at its address (the bus's
publish says how many nodes had the topic): an invite to a dead gateway's
session is not rung until the dial times out, a client-placed call goes to
another signaling node, and a call whose signaling node died says so.

(The registry forgets a dead node after three missed heartbeats and its
sessions vanish within one lease; these are what happens before that.
tests/integration/test_scale_processes.py does it with real processes.)"""

from __future__ import annotations

import random
from typing import Any, AsyncIterator

import pytest

from presence_server.clock import ManualClock
from presence_server.node import Node
from protocol.addresses import new_sid
from protocol.errors import ErrorCode
from protocol.presence import SessionPresence
from protocol.tokens import mint_token
from tests.helpers.instructions import InstructionServer
from tests.helpers.redis_server import redis_server
from tests.helpers.servers import TestAccount, make_config
from tests.helpers.signaling_env import BOB_PHONE, SignalingEnv, dial_client, signaling_env
from tests.helpers.wsclient import RawClient


async def test_an_invite_to_a_dead_nodes_session_is_not_rung_until_the_timeout(tmp_path: Any) -> None:
    """bob's session is still in the store (its node died less than a lease ago):
    the call does not ring it for the Dial's timeout, it falls back at once."""
    async with signaling_env(str(tmp_path)) as env:
        env.ins.on("/voice", dial_client(env.ins, "bob", timeout=30))
        ghost = SessionPresence(
            session_id=new_sid("SE"), account_sid=env.account.sid, identity="bob", node_id=new_sid("ND"),
            capabilities=("voice",), connected_at=env.server.clock.time(), last_activity=env.server.clock.time(),
        )
        await env.server.node.presence.connect(ghost)  # a session of a node that no longer exists
        alice = await env.client("alice")
        await alice.send({"type": "call", "to": "client:bob"})
        call_sid = (await alice.recv_type("call_created"))["call"]
        # No clock advance: nothing waits for the 30 s timeout.
        assert (await alice.recv_type("call_progress"))["status"] == "completed"
        (sms,) = await _outbox_soon(env)
        assert sms["to"] == BOB_PHONE and sms["body"] == "Missed call from client:alice"
        status, page = await env.rest("GET", f"/2010-04-01/Accounts/{env.account.sid}/Messages.json")
        (record,) = page["messages"]
        assert record["related_call_sid"] == call_sid and record["fallback_reason"] == "absent"
        await alice.close()


async def _outbox_soon(env: SignalingEnv) -> list[dict[str, Any]]:
    import asyncio

    for _ in range(200):
        entries = await env.outbox()
        if entries:
            return entries
        await asyncio.sleep(0.01)
    raise AssertionError("nothing in the outbox")


@pytest.fixture
async def split(tmp_path: Any) -> AsyncIterator[tuple[Node, Node, Node, TestAccount, InstructionServer, str]]:
    """A gateway-only node and two signaling-only nodes on one real Redis."""
    ins = InstructionServer(auth_token="")
    await ins.start()
    app_sid = new_sid("AP")
    account = TestAccount(identities=[{"identity": "bob", "phone": BOB_PHONE}])
    account.extra = {"applications": [{"sid": app_sid, "voice_url": ins.url("/voice")}]}
    ins.auth_token = account.auth_token
    ins.on("/voice", dial_client(ins, "bob"))
    async with redis_server() as redis:
        clock = ManualClock()
        nodes = []
        for i, roles in enumerate((("gateway",), ("signaling",), ("signaling",))):
            config = make_config(
                [account], engine={"kind": "redis", "url": redis.url, "data_dir": str(tmp_path / f"n{i}")},
                security={"allow_private_urls": True},
            )
            node = Node(config, clock=clock, roles=roles)
            await node.start("127.0.0.1", 0)
            nodes.append(node)
        try:
            yield nodes[0], nodes[1], nodes[2], account, ins, app_sid
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


async def test_a_call_goes_to_another_signaling_node_when_the_chosen_one_is_gone(
    split: tuple[Node, Node, Node, TestAccount, InstructionServer, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    gateway, dead, live, account, ins, app_sid = split
    await dead.stop()  # gone: nobody listens at its address any more
    # The gateway still lists it (the registry forgets a node only after three missed
    # heartbeats), and picks it first.
    gateway._signaling_nodes = [dead.node_id, live.node_id]
    monkeypatch.setattr(random, "choice", lambda seq: seq[0])
    bob = await RawClient.open(f"ws://127.0.0.1:{gateway.port}/v1/connect")
    assert (await bob.register(token(account, "bob", app_sid), capabilities=["voice"]))["type"] == "registered"
    alice = await RawClient.open(f"ws://127.0.0.1:{gateway.port}/v1/connect")
    assert (await alice.register(token(account, "alice", app_sid)))["type"] == "registered"

    await alice.send({"type": "call", "to": "client:bob", "id": 1})
    call_sid = (await alice.recv_type("call_created"))["call"]
    assert gateway._signaling_nodes == [live.node_id]
    invite = await bob.recv_type("invite")
    assert invite["parent_call"] == call_sid
    await bob.send({"type": "accept", "call": invite["call"], "id": 2})
    assert (await alice.recv_type("call_progress"))["status"] == "answered"

    # Now the node running the call goes too: the call is gone with it, and a
    # client that talks about it hears so instead of talking into the void.
    await live.stop()
    await alice.send({"type": "signal", "call": call_sid, "payload": {"sdp": "x"}, "id": 3})
    error = await alice.recv_type("error")
    assert error["code"] == ErrorCode.CALL_NOT_FOUND.code and error["id"] == 3
    # No signaling node left: a new call is refused at once (10016), not left unanswered.
    await alice.send({"type": "call", "to": "client:bob", "id": 4})
    error = await alice.recv_type("error")
    assert error["code"] == ErrorCode.ENGINE_UNAVAILABLE.code and error["id"] == 4
    await alice.close()
    await bob.close()
