"""Calls whose signaling node or a party's gateway died end for the others
(presence_server/peers.py): each node probes, once per heartbeat, the mailboxes
of the nodes it shares calls with, and a node nobody answers for
``2 × node_heartbeat`` (at least 2 s, and two probes) is judged dead.

Found by the fault suite (tests/chaos): before this, a SIGKILLed signaling node
left both parties of its calls waiting for ever, and a SIGKILLed gateway left
the other party of an answered call waiting until the Dial's timeLimit (4 h).

Nodes run in this process on one real Redis with a manual clock; a process
"dies" by closing its mailbox (nobody listens at its address any more, exactly
what Redis sees when a killed process's connection ends) or by stopping.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, AsyncIterator, Iterable, Iterator

import pytest

from presence_server.clock import ManualClock
from presence_server.engines.redis import RedisEngine
from presence_server.mailbox import Mailbox
from presence_server.node import Node
from presence_server.peers import PeerWatch
from protocol.addresses import new_sid
from tests.helpers.redis_server import redis_server
from tests.helpers.signaling_env import Deployment, split_deployment
from tests.helpers.wsclient import RawClient

HEARTBEAT = 1.0  # dead_after = max(2 × 1.0, 2.0) = 2 s


class Peers(Deployment):
    """Gateway A, gateway B and a signaling node."""

    async def watch_twice(self, name: str) -> list[str]:
        """Two rounds of ``name``'s peer check, dead_after apart: the least that
        judges a silent peer dead. (Moving the clock also runs every node's own
        heartbeat loop, which checks its peers too: what is returned is what
        either found.)"""
        node = self.nodes[name]
        found = await node.watch_peers()
        assert found == []  # one silent probe is no verdict
        with capture_verdicts(node) as verdicts:
            await self.clock.advance(node.peer_watch.dead_after)
            await node.watch_peers()
        return verdicts


@contextlib.contextmanager
def capture_verdicts(node: Node) -> Iterator[list[str]]:
    """The peers ``node`` judges dead meanwhile, whoever asked (its loop or the test)."""
    verdicts: list[str] = []
    check = node.peer_watch.check

    async def recording(nodes: Iterable[str]) -> list[str]:
        dead = await check(nodes)
        verdicts.extend(dead)
        return dead

    node.peer_watch.check = recording  # type: ignore[method-assign]
    try:
        yield verdicts
    finally:
        node.peer_watch.check = check  # type: ignore[method-assign]


@pytest.fixture
async def deployment(tmp_path: Any) -> AsyncIterator[Peers]:
    layout = {"A": ("gateway",), "B": ("gateway",), "S": ("signaling",)}
    async with split_deployment(tmp_path, layout, dial_timeout=30, cls=Peers, server={"node_heartbeat": HEARTBEAT}) as d:
        for name in ("A", "B"):
            d.nodes[name]._signaling_nodes = [d.nodes["S"].node_id]  # as the registry would say
        yield d  # type: ignore[misc]


async def answered_call(d: Peers, caller: RawClient, callee: RawClient) -> tuple[str, str]:
    await caller.send({"type": "call", "to": "client:bob", "id": 1})
    call = (await caller.recv_type("call_created"))["call"]
    invite = await callee.recv_type("invite")
    await callee.send({"type": "accept", "call": invite["call"], "id": 2})
    assert (await callee.recv_type("ok"))["id"] == 2
    assert (await caller.recv_type("call_progress"))["status"] == "answered"
    return call, invite["call"]


async def test_a_dead_signaling_node_s_calls_end_for_both_parties(deployment: Peers) -> None:
    d = deployment
    alice, bob = await d.client("A", "alice"), await d.client("B", "bob")
    call, leg = await answered_call(d, alice, bob)
    # A live signaling node is never judged dead, however long it is probed.
    assert await d.watch_twice("A") == []
    await d.nodes["S"].mailbox.close()  # killed: nobody listens at its address

    assert await d.watch_twice("A") == [d.nodes["S"].node_id]
    assert await d.watch_twice("B") == [d.nodes["S"].node_id]
    ended = await alice.recv_type("call_progress")
    assert ended == {"type": "call_progress", "call": call, "status": "completed", "reason": "signaling_lost"}
    assert await bob.recv_type("hangup") == {"type": "hangup", "call": leg, "reason": "signaling_lost"}
    # Each call ends once: the next rounds probe nobody.
    assert d.nodes["A"].gateway.call_peers() == set() == d.nodes["B"].gateway.call_peers()
    await alice.close()
    await bob.close()


async def test_a_ringing_callee_is_cancelled_when_the_signaling_node_dies(deployment: Peers) -> None:
    d = deployment
    alice, bob = await d.client("A", "alice"), await d.client("B", "bob")
    await alice.send({"type": "call", "to": "client:bob", "id": 1})
    call = (await alice.recv_type("call_created"))["call"]
    invite = await bob.recv_type("invite")
    await d.nodes["S"].mailbox.close()
    await d.watch_twice("B")
    assert await bob.recv_type("cancel") == {"type": "cancel", "call": invite["call"], "reason": "signaling_lost"}
    await d.watch_twice("A")
    assert await alice.recv_type("call_progress") == {"type": "call_progress", "call": call, "status": "completed", "reason": "signaling_lost"}
    await alice.close()
    await bob.close()


async def test_a_dead_gateway_s_leg_ends_the_call_for_the_other_party(deployment: Peers) -> None:
    """bob's gateway dies mid-call: alice hears ``hangup`` (connection_lost) and
    her call goes on to its end, as when bob's own connection drops."""
    d = deployment
    alice, bob = await d.client("A", "alice"), await d.client("B", "bob")
    call, _ = await answered_call(d, alice, bob)
    assert d.nodes["S"].signaling.call_peers() == {d.nodes["A"].node_id, d.nodes["B"].node_id}  # type: ignore[union-attr]
    await d.nodes["B"].mailbox.close()

    assert await d.watch_twice("S") == [d.nodes["B"].node_id]
    assert await alice.recv_type("hangup") == {"type": "hangup", "call": call, "reason": "connection_lost"}
    assert (await alice.recv_type("call_progress"))["status"] == "completed"
    record = await d.nodes["S"].engine.calls.get(d.account.sid, call)
    assert record is not None and record.status == "completed"
    await alice.close()
    await bob.close()


async def test_a_caller_s_dead_gateway_cancels_the_ringing_callee(deployment: Peers) -> None:
    d = deployment
    alice, bob = await d.client("A", "alice"), await d.client("B", "bob")
    await alice.send({"type": "call", "to": "client:bob", "id": 1})
    await alice.recv_type("call_created")
    invite = await bob.recv_type("invite")
    await d.nodes["A"].mailbox.close()
    assert await d.watch_twice("S") == [d.nodes["A"].node_id]
    assert await bob.recv_type("cancel") == {"type": "cancel", "call": invite["call"], "reason": "caller_hangup"}
    await alice.close()
    await bob.close()


async def test_no_verdict_while_redis_is_away(tmp_path: Any) -> None:
    """A probe that cannot reach Redis says nothing about the peer: after an
    outage nobody is judged dead for having been unreachable through it, and a
    live peer is not judged dead while its bus re-subscribes."""
    async with redis_server() as redis:
        engines = [RedisEngine(redis.url, data_dir=str(tmp_path / name)) for name in ("watcher", "peer")]
        for engine in engines:
            await engine.start()
        watcher, peer = Mailbox(engines[0].bus, new_sid("ND")), Mailbox(engines[1].bus, new_sid("ND"))
        await watcher.start()
        await peer.start()
        clock = ManualClock()
        watch = PeerWatch(watcher, clock, dead_after=2.0)
        gone = new_sid("ND")
        try:
            await asyncio.to_thread(redis.stop)
            for _ in range(3):
                assert await watch.check([gone, peer.node_id]) == []
                await clock.advance(5.0)
            await asyncio.to_thread(redis.start)  # empty, same port
            # The peer answers again once its bus has re-subscribed (within half a
            # second, in real time: hence the real sleeps); the gone one is judged.
            verdicts: list[str] = []
            for _ in range(100):
                verdicts += await watch.check([gone, peer.node_id])
                if verdicts:
                    break
                await asyncio.sleep(0.05)
                await clock.advance(0.05)
            assert verdicts == [gone]
        finally:
            await watcher.close()
            await peer.close()
            for engine in engines:
                await engine.close()


async def test_a_dead_signaling_node_s_call_records_are_finished_once(deployment: Peers) -> None:
    """Nobody runs a dead signaling node's calls any more: the gateways that end
    them for their sessions finish their records too (final, with an end), one
    gateway each record, whichever notices first (a conditional update)."""
    d = deployment
    alice, bob = await d.client("A", "alice"), await d.client("B", "bob")
    carol = await d.client("A", "carol")
    call, leg = await answered_call(d, alice, bob)
    await carol.send({"type": "call", "to": "client:bob", "id": 3})
    ringing_call = (await carol.recv_type("call_created"))["call"]
    ringing_leg = (await bob.recv_type("invite"))["call"]
    await d.nodes["S"].mailbox.close()  # killed
    calls, acc = d.nodes["A"].engine.calls, d.account.sid

    async def records() -> dict[str, Any]:
        return {sid: await calls.get(acc, sid) for sid in (call, leg, ringing_call, ringing_leg)}

    await d.watch_twice("A")  # A holds the callers: it knows the parent calls
    after_a = await records()
    assert after_a[call].status == after_a[ringing_call].status == "completed"  # answered by their Dial
    assert after_a[call].end_time == after_a[ringing_call].end_time == d.clock.time()
    assert (after_a[leg].status, after_a[ringing_leg].status) == ("in-progress", "initiated")  # only B knows them

    await d.watch_twice("B")  # B holds the callee: it knows the legs, and their parents
    after_b = await records()
    assert (after_b[leg].status, after_b[ringing_leg].status) == ("completed", "failed")
    # (B's own heartbeat loop may have judged S before the test's second probe did.)
    assert after_a[call].end_time < after_b[leg].end_time == after_b[ringing_leg].end_time <= d.clock.time()
    # The parents were finished once, by A: B's later attempt wrote nothing.
    assert (after_b[call], after_b[ringing_call]) == (after_a[call], after_a[ringing_call])
    for c in (alice, bob, carol):
        await c.close()
