"""A signaling process stopped gracefully drains its calls (Node.stop,
SignalingService.drain): it takes no new call from the start (clients' calls
go to another signaling node, REST and carrier calls get 503 10014, /readyz
answers 503), lets the calls in progress go on for up to
``[signaling] drain_timeout`` and returns as soon as the last one ends; the
calls still up when the drain runs out end for both parties with reason
``server_shutdown``, their records final.

The drain's timeout runs on the node's ManualClock: nothing here sleeps it.
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any, AsyncIterator

import aiohttp
import pytest

from presence_server.clock import ManualClock
from presence_server.node import Node
from protocol.errors import ErrorCode
from tests.helpers.signaling_env import INGRESS, NUMBER, Deployment, SignalingEnv, dial_client, signaling_env, split_deployment
from tests.helpers.wsclient import RawClient

DRAIN = 20.0  # seconds of the manual clock


@pytest.fixture
async def env(tmp_path: Any) -> AsyncIterator[SignalingEnv]:
    async with signaling_env(str(tmp_path), status_callback="/status", signaling={"drain_timeout": DRAIN}) as running:
        running.ins.on("/status", "")
        yield running


async def readyz(base_url: str) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as http:
        async with http.get(base_url + "/readyz") as resp:
            return resp.status, await resp.json()


async def post(base_url: str, path: str, data: dict[str, str], auth: tuple[str, str]) -> tuple[int, dict[str, Any], str | None]:
    headers = {"Authorization": "Basic " + base64.b64encode(":".join(auth).encode()).decode()}
    async with aiohttp.ClientSession() as http:
        async with http.post(base_url + path, data=data, headers=headers) as resp:
            return resp.status, await resp.json(), resp.headers.get("Retry-After")


async def answered(caller: RawClient, callee: RawClient, request_id: int = 1) -> tuple[str, str]:
    """``caller`` calls bob (the voice URL dials him) and ``callee`` answers: (call, leg)."""
    await caller.send({"type": "call", "to": "client:bob", "id": request_id})
    call = (await caller.recv_type("call_created"))["call"]
    invite = await callee.recv_type("invite")
    await callee.send({"type": "accept", "call": invite["call"], "id": request_id})
    assert (await callee.recv_type("ok"))["id"] == request_id
    assert (await caller.recv_type("call_progress"))["status"] == "answered"
    return call, invite["call"]


def stop(node: Node) -> asyncio.Task[None]:
    return asyncio.get_running_loop().create_task(node.stop())


async def until_draining(node: Node) -> None:
    async with asyncio.timeout(5):
        while not node.draining:
            await asyncio.sleep(0.01)


async def test_a_call_goes_on_through_the_drain_and_the_stop_returns_when_it_ends(env: SignalingEnv) -> None:
    ins, node = env.ins, env.server.node
    ins.on("/voice", dial_client(ins, "bob"))
    bob, alice, carol = await env.client("bob"), await env.client("alice"), await env.client("carol")
    call, leg = await answered(alice, bob)

    env.stopped = True
    stopping = stop(node)
    await until_draining(node)
    status, ready = await readyz(env.server.http_url)
    assert status == 503 and ready["checks"]["accepting_calls"] is False
    # The call goes on: signals are relayed both ways.
    await alice.send({"type": "signal", "call": call, "payload": {"type": "offer", "sdp": "v=0"}, "id": 5})
    assert await bob.recv_type("signal") == {"type": "signal", "call": leg, "payload": {"type": "offer", "sdp": "v=0"}}
    # New calls are refused, each with the documented temporary error. carol's
    # gateway is this node, with no other signaling node to hand her call to.
    await carol.send({"type": "call", "to": "client:bob", "id": "c1"})
    refused = await carol.recv_type("error")
    assert (refused["code"], refused["id"]) == (ErrorCode.ENGINE_UNAVAILABLE.code, "c1")
    calls_path = f"/2010-04-01/Accounts/{env.account.sid}/Calls.json"
    auth = (env.account.sid, env.account.auth_token)
    status, body, retry = await post(env.server.http_url, calls_path, {"To": "client:bob", "From": NUMBER, "Url": ins.url("/voice")}, auth)
    assert (status, body["code"], retry) == (503, ErrorCode.SERVER_SHUTTING_DOWN.code, "1")
    status, body, retry = await post(env.server.http_url, "/v1/Ingress/outbox/Voice", {"From": "+15557770000", "To": NUMBER}, INGRESS)
    assert (status, body["code"], retry) == (503, ErrorCode.SERVER_SHUTTING_DOWN.code, "1")
    assert not stopping.done()

    await bob.send({"type": "hangup", "call": leg})
    assert (await alice.recv_type("hangup"))["reason"] == "remote_hangup"
    assert (await alice.recv_type("call_progress"))["reason"] == "instructions-ended"
    # The clock never moved: the stop returned because the last call ended.
    await asyncio.wait_for(stopping, 10)
    for sid in (call, leg):
        record = await node.engine.calls.get(env.account.sid, sid)
        assert record is not None and record.status == "completed" and record.end_time is not None
    for c in (alice, bob, carol):
        await c.close()


async def test_calls_still_up_when_the_drain_runs_out_end_for_both_parties(env: SignalingEnv) -> None:
    ins, node, acc = env.ins, env.server.node, env.account.sid
    legs_hook = ins.on("/leg-status", "")
    ins.on("/voice", f'<Response><Dial timeout="600"><Client statusCallback="{legs_hook}">bob</Client></Dial></Response>')
    bob, alice, carol = await env.client("bob"), await env.client("alice"), await env.client("carol")
    call, leg = await answered(alice, bob)
    # carol's call rings bob, who does not answer it.
    await carol.send({"type": "call", "to": "client:bob", "id": 1})
    ringing_call = (await carol.recv_type("call_created"))["call"]
    ringing_leg = (await bob.recv_type("invite"))["call"]

    env.stopped = True
    stopping = stop(node)
    await until_draining(node)
    await env.server.advance(DRAIN - 1)
    assert not stopping.done()
    await env.server.advance(1)

    assert await alice.recv_type("hangup") == {"type": "hangup", "call": call, "reason": "server_shutdown"}
    assert await alice.recv_type("call_progress") == {"type": "call_progress", "call": call, "status": "completed", "reason": "server_shutdown"}
    told = {(f["type"], f["call"], f["reason"]) for f in [await bob.recv(), await bob.recv()]}
    assert told == {("hangup", leg, "server_shutdown"), ("cancel", ringing_leg, "server_shutdown")}
    assert await carol.recv_type("call_progress") == {
        "type": "call_progress", "call": ringing_call, "status": "completed", "reason": "server_shutdown",
    }
    # Records final through the state table: answered calls completed, the
    # leg that was ringing canceled; each with its end.
    statuses = {}
    for sid in (call, leg, ringing_call, ringing_leg):
        record = await node.engine.calls.get(acc, sid)
        assert record is not None and record.end_time == env.server.clock.time()
        statuses[sid] = record.status
    assert statuses == {call: "completed", leg: "completed", ringing_call: "completed", ringing_leg: "canceled"}
    await asyncio.wait_for(stopping, 15)
    # Status callbacks went out before the process stopped (it waits for them).
    assert {(r.params["CallSid"], r.params["CallStatus"]) for r in ins.received if r.path == "/status"} == {
        (call, "completed"), (ringing_call, "completed"),
    }
    assert {(r.params["CallSid"], r.params["CallStatus"]) for r in ins.received if r.path == "/leg-status"} == {
        (leg, "completed"), (ringing_leg, "canceled"),
    }
    for c in (alice, bob, carol):
        await c.close()


async def test_a_call_waiting_for_its_instructions_ends_when_the_drain_runs_out(env: SignalingEnv) -> None:
    """A fetch in flight does not hold the stop up: the call ends then, for the caller too."""
    ins, node = env.ins, env.server.node
    answered_never = asyncio.Event()

    async def hang(params: dict[str, str]) -> str:
        await answered_never.wait()
        return "<Response/>"

    ins.on("/voice", hang)
    alice = await env.client("alice")
    await alice.send({"type": "call", "to": "client:bob", "id": 1})
    call = (await alice.recv_type("call_created"))["call"]
    await ins.wait_for("/voice")

    env.stopped = True
    stopping = stop(node)
    await until_draining(node)
    await env.server.advance(DRAIN)
    assert await alice.recv_type("call_progress") == {"type": "call_progress", "call": call, "status": "completed", "reason": "server_shutdown"}
    record = await node.engine.calls.get(env.account.sid, call)
    # Never answered (no verb ran): canceled, as a caller's hangup would leave it.
    assert record is not None and record.status == "canceled" and record.end_time is not None
    await asyncio.wait_for(stopping, 15)
    answered_never.set()
    await alice.close()


# -- split roles: a gateway hands a refused call to another signaling node ------------------------


@pytest.fixture
async def split(tmp_path: Any) -> AsyncIterator[Deployment]:
    """Gateway A and signaling nodes S1, S2."""
    layout = {"A": ("gateway",), "S1": ("signaling",), "S2": ("signaling",)}
    async with split_deployment(tmp_path, layout, dial_timeout=600, signaling={"drain_timeout": DRAIN}) as d:
        a, s1, s2 = d.nodes["A"], d.nodes["S1"].node_id, d.nodes["S2"].node_id
        # What the registry says; and of the live ones, A's random pick lands on
        # S1 while it is listed (so that the test knows which node refuses).
        a._signaling_nodes = [s1, s2]
        a.gateway.signaling_node = lambda: next((n for n in (s1, s2) if n in a._signaling_nodes), None)
        yield d


async def test_a_gateway_hands_a_call_refused_by_a_draining_node_to_another(split: Deployment) -> None:
    d = split
    s1 = d.nodes["S1"]
    alice, bob, carol = await d.client("A", "alice"), await d.client("A", "bob"), await d.client("A", "carol")
    call, leg = await answered(alice, bob)
    record = await s1.engine.calls.get(d.account.sid, call)
    assert record is not None and call in s1.signaling._routes  # type: ignore[union-attr]

    d.stopped.add("S1")
    stopping = stop(s1)
    await until_draining(s1)
    status, ready = await readyz(f"http://127.0.0.1:{s1.port}")
    assert status == 503 and ready["checks"]["accepting_calls"] is False
    # carol's call reaches S1 first, which gives it back; A offers it to S2.
    await carol.send({"type": "call", "to": "client:bob", "id": "c"})
    created = await carol.recv_type("call_created")
    assert created["id"] == "c"
    assert created["call"] in d.nodes["S2"].signaling._routes  # type: ignore[union-attr]
    invite = await bob.recv_type("invite")
    assert invite["parent_call"] == created["call"]
    await bob.send({"type": "reject", "call": invite["call"]})
    # REST calls that still reach S1 are refused, so the load balancer retries elsewhere.
    path = f"/2010-04-01/Accounts/{d.account.sid}/Calls.json"
    status, body, _ = await post(f"http://127.0.0.1:{s1.port}", path, {"To": "client:bob", "From": "+15550001111", "Url": "http://127.0.0.1:9/x"}, (d.account.sid, d.account.auth_token))
    assert (status, body["code"]) == (503, ErrorCode.SERVER_SHUTTING_DOWN.code)

    # alice's call is still up on S1; when it ends, S1's stop returns at once.
    await alice.send({"type": "hangup", "call": call, "id": 9})
    assert (await bob.recv_type("hangup"))["reason"] == "remote_hangup"
    await asyncio.wait_for(stopping, 10)
    for sid in (call, leg):
        record = await d.nodes["A"].engine.calls.get(d.account.sid, sid)
        assert record is not None and record.status == "completed" and record.end_time is not None
    for c in (alice, bob, carol):
        await c.close()
