"""Split roles as real processes on a real Redis (issue 5's multi-process tests).

The test starts everything itself: a ``redis-server`` on a free port, a real
instruction server (in this process, answering ``<Dial><Client>``), and server
processes (``python -m presence_server.cli serve --config F --roles R``, the
redis engine): two gateways, one signaling, one messaging, plus a second
messaging process for the crash test. Processes are killed with SIGKILL, so
nothing of theirs gets to clean up.

Leases are short so the file stays fast: ``[presence] lease_ttl`` 3 s (renewed
every 1 s), sweeps every 0.25 s, node heartbeats every 0.5 s, and a send job's
lease (``[messaging] lease``) of 3 s.

The tests, in order: (a) a call from a client on gateway 1 to one on gateway 2;
(b) gateway 2 killed: no ghost after one lease, calls fall back to SMS; (c) a
messaging process killed mid-burst: every accepted message sent once; (d) a
signaling process killed: new calls go to the other; (e) a gateway drained with
SIGTERM: its clients resume elsewhere without a flap; (f) Redis stopped and
restarted under connected clients: /readyz, then presence whole again.

The processes are shared by the module's tests (starting one costs ~0.7 s of a
2-core machine). Tests that kill a process start a new one where a later test
needs it (``Cluster.ensure``), so each test also runs on its own (``-k``).
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path
from typing import Any, AsyncIterator
from urllib.parse import quote, urlencode

import aiohttp
import pytest
import pytest_asyncio

from tests.helpers.cluster import (
    BOB_PHONE,
    NUMBER,
    Account,
    Cluster,
    Frames,
    Settings,
    as_awaitable as _async,
    awaits_to as _async_eq,
    dial_who_was_asked_for,
    eventually,
    outbox_sids,
    place_call,
    readyz,
)
from tests.helpers.instructions import InstructionServer
from tests.helpers.redis_server import RedisServer, redis_available
from tests.helpers.wsclient import RawClient

pytestmark = pytest.mark.asyncio(loop_scope="module")

SETTINGS = Settings()
LEASE = SETTINGS.lease
SWEEP = SETTINGS.sweep
JOB_LEASE = SETTINGS.job_lease


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def cluster(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Cluster]:
    if not redis_available():
        pytest.fail("redis-server is not installed (make test installs it from Debian's packages)")
    tmp = tmp_path_factory.mktemp("scale")
    redis = RedisServer()
    await asyncio.to_thread(redis.start)
    account = Account()
    ins = InstructionServer(auth_token=account.auth_token)
    await ins.start()
    ins.on("/voice", dial_who_was_asked_for)
    c = Cluster(tmp, redis, ins, account, SETTINGS)
    try:
        await asyncio.gather(
            c.start("gateway-1", "gateway"),
            c.start("gateway-2", "gateway"),
            c.start("signaling", "signaling"),
            c.start("messaging-1", "messaging"),
        )
        yield c
    finally:
        stopped = await c.stop_all()
        await ins.stop()
        await asyncio.to_thread(redis.cleanup)
    assert ins.all_signed(), [r for r in ins.received if not r.signature_valid]
    # Every process the tests did not kill stops cleanly on SIGTERM, within its drain.
    slow_or_failed = {name: result for name, result in stopped.items() if result[0] != 0 or result[1] > 2 * 1.0 + 3}
    if slow_or_failed:
        (tmp / "teardown-failure.txt").write_text(f"{slow_or_failed}\n{c.logs()}")
    assert not slow_or_failed, (slow_or_failed, c.logs())


# -- a. a call from gateway 1 to gateway 2 --------------------------------------------------


async def test_a_call_crosses_gateways_through_the_signaling_process(cluster: Cluster) -> None:
    """alice on gateway 1 calls bob on gateway 2; the signaling process fetches the
    instruction URL, rings bob's session on gateway 2, and relays the call's
    signals both ways: the call is set up, and its record is readable on any node."""
    bob = await cluster.client("gateway-2", "bob")
    alice = await cluster.client("gateway-1", "alice")
    try:
        # The three processes see each other in the registry.
        nodes = await eventually(
            lambda: _roles_listed(cluster, "gateway-1", {"gateway", "signaling", "messaging"}), 5, "every role in /v1/Nodes"
        )
        assert sum(1 for n in nodes if n["roles"] == ["gateway"]) >= 2

        call_sid = await place_call(cluster, alice, "client:bob")
        invite = await bob.recv_type("invite")
        assert invite["parent_call"] == call_sid and invite["from"] == "client:alice"
        (voice,) = [r for r in cluster.ins.received if r.params.get("CallSid") == call_sid]
        assert voice.params["To"] == "client:bob" and voice.signature_valid

        await bob.send({"type": "accept", "call": invite["call"], "id": 2})
        assert (await bob.recv_type("ok"))["id"] == 2
        assert (await alice.recv_type("call_progress"))["status"] == "answered"
        await alice.send({"type": "signal", "call": call_sid, "payload": {"sdp": "offer-from-alice"}})
        assert (await bob.recv_type("signal"))["payload"] == {"sdp": "offer-from-alice"}
        await bob.send({"type": "signal", "call": invite["call"], "payload": {"candidate": "from-bob"}})
        assert (await alice.recv_type("signal"))["payload"] == {"candidate": "from-bob"}
        await bob.send({"type": "hangup", "call": invite["call"]})
        assert (await alice.recv_type("hangup"))["reason"] == "remote_hangup"

        async def completed() -> dict[str, Any] | None:
            status, record = await cluster.rest("gateway-2", "GET", f"/2010-04-01/Accounts/{cluster.account.sid}/Calls/{call_sid}.json")
            assert status == 200, record
            return record if record["status"] == "completed" else None

        record = await eventually(completed, 5, "the call record to say completed")
        assert record["from"] == "client:alice" and record["to"] == "client:bob"
    finally:
        await alice.close()
        await bob.close()


async def _roles_listed(cluster: Cluster, name: str, roles: set[str]) -> list[dict[str, Any]] | None:
    nodes = await cluster.nodes(name)
    listed = {role for n in nodes for role in n["roles"]}
    return nodes if roles <= listed else None


# -- b. a gateway killed: no ghost, and the call falls back to SMS ------------------------------


async def test_a_killed_gateways_sessions_go_within_a_lease_and_a_call_falls_back_to_sms(cluster: Cluster) -> None:
    """SIGKILL gateway 2: a call to bob right away is not rung (his session is still
    in Redis, but nobody listens at its node's address), bob is offline for
    everyone within one lease, and a call then goes to SMS at once. The missed-call
    texts are created by the signaling process and sent by the messaging process."""
    await cluster.ensure("gateway-2", "gateway")
    await cluster.ensure("messaging-1", "messaging")
    bob = await cluster.client("gateway-2", "bob")
    alice_client = await cluster.client("gateway-1", "alice")
    alice = Frames(alice_client)
    try:
        await alice_client.send({"type": "subscribe", "identities": ["bob"], "id": 1})
        (snapshot,) = (await alice.type("subscribed"))["presences"]
        assert snapshot["status"] == "available"

        cluster.procs["gateway-2"].kill()  # SIGKILL: no bye, no linger, no leave
        killed = time.monotonic()
        # Within the lease, bob's session is still listed, but a call does not ring
        # it until the Dial's timeout (5 s): its node is gone, so it is not rung.
        assert (await cluster.presence("gateway-1", "bob"))["status"] == "available"
        calls = [await place_call(cluster, alice, "client:bob")]
        progress = await alice.expect(lambda f: f["type"] == "call_progress" and f["call"] == calls[0], what="the first call's end")
        assert progress["status"] == "completed" and time.monotonic() - killed < 4.0, (progress, time.monotonic() - killed)

        # alice's subscription hears bob go, from the sweep of whichever node gets there first.
        await alice.expect(
            lambda f: f["type"] == "presence_update" and f["identity"] == "bob" and f["status"] == "offline",
            timeout=LEASE + 3, what="bob offline",
        )
        offline_after = time.monotonic() - killed
        # At most one lease after the last renewal (which was before the kill), plus
        # one sweep interval; plus scheduling slack for four processes on two cores.
        assert offline_after <= LEASE + SWEEP + 1.0, offline_after
        print(f"\nbob offline {offline_after:.2f} s after gateway 2 was killed (lease {LEASE} s, sweep {SWEEP} s)")
        # Every node agrees (the REST query reads Redis, not a local cache).
        assert (await cluster.presence("gateway-1", "bob"))["status"] == "offline"
        assert (await cluster.presence("signaling", "bob"))["sessions"] == []

        # A new call to bob: nobody to ring, so the missed-call text goes by SMS.
        calls.append(await place_call(cluster, alice, "client:bob"))
        progress = await alice.expect(lambda f: f["type"] == "call_progress" and f["call"] == calls[1], what="the second call's end")
        assert progress["status"] == "completed", progress

        async def missed_call_texts() -> list[dict[str, Any]] | None:
            status, page = await cluster.rest(
                "gateway-1", "GET", f"/2010-04-01/Accounts/{cluster.account.sid}/Messages.json?To={quote(BOB_PHONE)}"
            )
            assert status == 200, page
            sent = {r["related_call_sid"]: r for r in page["messages"] if r["status"] in ("sent", "delivered")}
            return [sent[c] for c in calls] if all(c in sent for c in calls) else None

        for record in await eventually(missed_call_texts, 10, "both missed-call texts to be sent"):
            assert record["body"] == "Missed call from client:alice" and record["from"] == NUMBER
            assert record["fallback_reason"] == "absent" and record["direction"] == "outbound-call"
            # Sent by the messaging process: it is in its outbox.
            assert record["sid"] in outbox_sids(cluster.data_dir("messaging-1"))
    finally:
        await alice_client.close()
        await bob.close()


# -- c. a messaging process killed mid-burst --------------------------------------------------


async def test_a_messaging_process_killed_mid_burst_another_sends_every_accepted_message_once(cluster: Cluster) -> None:
    """Two messaging processes share the Redis send queue (and the outbox, which
    stands for the carrier). One is SIGKILLed while a burst is being accepted and
    sent; the other takes over its jobs once their leases end. Every message
    answered 201 is in the outbox exactly once, and its record says sent."""
    await cluster.ensure("gateway-1", "gateway")
    await cluster.ensure("messaging-1", "messaging")
    await cluster.start("messaging-2", "messaging")
    victim = await cluster.node_id("messaging-1")
    outbox_dir = cluster.data_dir("messaging-2")
    already = set(outbox_sids(outbox_dir))  # the earlier tests' messages
    n, connections = 300, 8
    url = cluster.procs["gateway-1"].url + f"/2010-04-01/Accounts/{cluster.account.sid}/Messages.json"
    headers = {**cluster.account.basic(), "Content-Type": "application/x-www-form-urlencoded"}
    bodies = [urlencode({"To": f"+1555{4000000 + i:07d}", "From": NUMBER, "Body": f"burst {i}"}) for i in range(n)]
    accepted: list[str] = []
    refused: list[tuple[int, str]] = []
    at_kill: dict[str, int] = {}
    next_index = 0

    def leased_to(worker: str) -> int:
        # The worker's entries pending in the account's streams' consumer groups.
        streams = [f"ps:{{{cluster.account.sid}}}:q:stream:{p}" for p in range(3)]
        return int(cluster.redis.command("EVAL", _PENDING_UNDER, "3", *streams, worker))

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:

        async def client() -> None:
            nonlocal next_index
            while next_index < n:
                body = bodies[next_index]
                next_index += 1
                async with http.post(url, data=body, headers=headers) as resp:
                    if resp.status != 201:
                        refused.append((resp.status, (await resp.text())[:200]))
                        continue
                    accepted.append((await resp.json())["sid"])
                # Past half the burst, at a moment when messaging-1 holds leased jobs
                # (claimed, not yet sent): only claim-on-timeout can free those.
                if not at_kill and len(accepted) >= n // 2 and leased_to(victim) > 0:
                    cluster.procs["messaging-1"].kill()
                    at_kill["accepted"] = len(accepted)
                    at_kill["outbox"] = len(set(outbox_sids(outbox_dir)) - already)
                    at_kill["leased"] = leased_to(victim)

        await asyncio.gather(*(client() for _ in range(connections)))

    assert not refused, refused[:3]
    assert at_kill, "messaging-1 held no leased job at any moment of the second half of the burst"
    assert len(accepted) == n == len(set(accepted))
    assert at_kill["outbox"] < at_kill["accepted"] and at_kill["leased"] > 0, at_kill
    wanted = set(accepted)
    await eventually(
        lambda: _async(wanted <= set(outbox_sids(outbox_dir))), 4 * JOB_LEASE + 10, f"all {n} accepted messages in the outbox"
    )

    async def all_sent() -> bool:
        page_url = f"/2010-04-01/Accounts/{cluster.account.sid}/Messages.json?From={quote(NUMBER)}&PageSize=1000"
        status, page = await cluster.rest("signaling", "GET", page_url)
        assert status == 200, page
        statuses = {r["sid"]: r["status"] for r in page["messages"]}
        return all(statuses.get(sid) == "sent" for sid in wanted)

    # Once every record says sent, every re-send of an interrupted send is done too
    # (a record says sent only after its send, and a sent record is not sent again).
    await eventually(all_sent, 4 * JOB_LEASE + 10, "every accepted record to say sent")
    sids = [sid for sid in outbox_sids(outbox_dir) if sid not in already]
    assert len(sids) == len(set(sids)), "a message is in the outbox twice"
    assert set(sids) == wanted  # nothing else (every request was answered)

    # Who sent what, from the processes' logs (a process logs a send after the outbox
    # has it, then marks the record sent): the survivor sent what was left, and sent
    # again, with the same idempotency key, what the dead one had been sending.
    sent_by = {name: _logged_outbox_sids(cluster.procs[name].log_path) & wanted for name in ("messaging-1", "messaging-2")}
    assert sent_by["messaging-2"], "the surviving messaging process sent nothing"
    assert sent_by["messaging-1"] | sent_by["messaging-2"] == wanted
    print(
        f"\nkilled messaging-1 after {at_kill['accepted']} of {n} accepts, {at_kill['outbox']} in the outbox, "
        f"{at_kill['leased']} jobs leased to it; messaging-1 sent {len(sent_by['messaging-1'])}, "
        f"messaging-2 {len(sent_by['messaging-2'])}; sent by both (the carrier's idempotency key kept one): "
        f"{len(sent_by['messaging-1'] & sent_by['messaging-2'])}"
    )


# KEYS: streams; ARGV: consumer. How many entries are pending under it (a stream
# with nothing leased does not exist).
_PENDING_UNDER = """
local n = 0
for _, stream in ipairs(KEYS) do
  if redis.call('EXISTS', stream) == 1 then
    n = n + #redis.call('XPENDING', stream, 'send', '-', '+', 100000, ARGV[1])
  end
end
return n
"""


def _logged_outbox_sids(log_path: Path) -> set[str]:
    """The message sids a process logged as recorded in the outbox (JSON log lines)."""
    out = set()
    for line in log_path.read_text(errors="replace").splitlines():
        if "message recorded in the outbox" in line:
            try:
                out.add(json.loads(line)["message_sid"])
            except (ValueError, KeyError):
                pass
    return out


# -- d. a signaling process killed ---------------------------------------------------------------


async def test_a_killed_signaling_process_leaves_new_calls_to_the_other(cluster: Cluster) -> None:
    """Two signaling processes; one is SIGKILLed. The gateways still list it (the
    registry forgets a node after three missed heartbeats), but a call offered
    to it reaches nobody, so the gateway offers it to the other at once: every
    call placed right after the kill is set up."""
    await asyncio.gather(
        cluster.ensure("gateway-1", "gateway"), cluster.ensure("gateway-2", "gateway"), cluster.ensure("signaling", "signaling"),
        cluster.start("signaling-2", "signaling"),
    )
    other = await cluster.node_id("signaling-2")
    await eventually(lambda: _lists(cluster, "gateway-1", other), 5, "signaling-2 in the registry")
    listed_at = time.time()
    gateway = await cluster.node_id("gateway-1")

    async def gateway_read_the_registry_since() -> bool:
        # gateway-1 reads the registry right after each of its heartbeats: one
        # stamped after signaling-2 was listed means gateway-1 knows of it.
        return any(n["node_id"] == gateway and n["last_heartbeat"] > listed_at for n in await cluster.nodes("signaling-2"))

    await eventually(gateway_read_the_registry_since, 5, "a heartbeat of gateway-1")
    bob = Frames(await cluster.client("gateway-2", "bob"))
    alice = Frames(await cluster.client("gateway-1", "alice"))
    try:
        cluster.procs["signaling"].kill()
        for _ in range(4):  # each picks a signaling node at random from the gateway's list
            call_sid = await place_call(cluster, alice, "client:bob")
            invite = await bob.type("invite")
            assert invite["parent_call"] == call_sid
            await bob.client.send({"type": "reject", "call": invite["call"], "id": "r"})
            assert (await bob.type("ok"))["id"] == "r"
            progress = await alice.expect(lambda f: f["type"] == "call_progress" and f["call"] == call_sid)
            assert progress["status"] == "completed"
    finally:
        await alice.client.close()
        await bob.client.close()


async def _lists(cluster: Cluster, name: str, node_id: str) -> bool:
    return any(n["node_id"] == node_id for n in await cluster.nodes(name))


# -- e. a gateway drained with SIGTERM (a rolling upgrade) --------------------------------------


async def test_a_drained_gateways_clients_resume_on_the_other_without_a_flap(cluster: Cluster) -> None:
    """SIGTERM gateway 2: bob is told to reconnect, resumes his session on gateway 1
    (the same session id, within the grace period), and alice, watching him, sees
    no offline/online flap. The process leaves the registry and exits cleanly."""
    await asyncio.gather(cluster.ensure("gateway-1", "gateway"), cluster.ensure("gateway-2", "gateway"))
    leaving = await cluster.node_id("gateway-2")
    alice = Frames(await cluster.client("gateway-1", "alice"))
    bob_ws = await RawClient.open(cluster.ws_url("gateway-2"))
    registered = await bob_ws.register(cluster.account.token("bob"), capabilities=["voice"])
    assert registered["type"] == "registered", registered
    await alice.client.send({"type": "subscribe", "identities": ["bob"], "id": 1})
    (snapshot,) = (await alice.type("subscribed"))["presences"]
    assert snapshot["status"] == "available"
    try:
        process = cluster.procs["gateway-2"].proc
        assert process is not None
        process.send_signal(signal.SIGTERM)
        stopped = time.monotonic()
        reconnect = await bob_ws.recv_type("reconnect")
        assert reconnect["retry_after"] > 0
        await bob_ws.closed()
        bob = await RawClient.open(cluster.ws_url("gateway-1"))
        resumed = await bob.register(cluster.account.token("bob"), capabilities=["voice"], resume=registered["session"])
        assert resumed["type"] == "registered" and resumed["resumed"] is True and resumed["session"] == registered["session"]
        # No flap: alice hears of no offline bob before the change he makes now.
        await bob.send({"type": "presence", "status": "busy", "id": 2})
        assert (await bob.recv_type("ok"))["id"] == 2
        await alice.expect(lambda f: f["type"] == "presence_update" and f["identity"] == "bob" and f["status"] == "busy", what="bob busy")
        seen = [f["status"] for f in alice.unread if f["type"] == "presence_update" and f["identity"] == "bob"]
        assert "offline" not in seen, seen
        assert registered["session"] in [s["session"] for s in (await cluster.presence("gateway-1", "bob"))["sessions"]]

        code = await asyncio.to_thread(process.wait, 30)
        drained_in = time.monotonic() - stopped
        assert code == 0, cluster.procs["gateway-2"].log_tail()
        print(f"\ngateway 2 drained and exited in {drained_in:.2f} s")
        assert not await _lists(cluster, "gateway-1", leaving)  # it left the registry on its way out
        await bob.close()
    finally:
        await alice.client.close()
        await asyncio.to_thread(cluster.procs["gateway-2"].stop)  # whatever happened above, it is gone after


# -- e2. a signaling process drained with SIGTERM ---------------------------------------------------


async def test_a_drained_signaling_process_ends_its_calls_for_both_parties(cluster: Cluster) -> None:
    """SIGTERM the signaling process running an answered call: the call goes on
    for [signaling] drain_timeout (1 s here), then both parties are told
    (server_shutdown), the records are final, and the process exits cleanly."""
    await asyncio.gather(
        cluster.ensure("gateway-1", "gateway"), cluster.ensure("gateway-2", "gateway"), cluster.ensure("signaling", "signaling")
    )
    if "signaling-2" in cluster.procs:  # left by an earlier test: the call must run on 'signaling'
        await asyncio.to_thread(cluster.procs["signaling-2"].stop)
    bob = Frames(await cluster.client("gateway-2", "bob"))
    alice = Frames(await cluster.client("gateway-1", "alice"))
    try:
        call_sid = await place_call(cluster, alice, "client:bob")
        invite = await bob.type("invite")
        await bob.client.send({"type": "accept", "call": invite["call"], "id": "a"})
        assert (await bob.type("ok"))["id"] == "a"
        await alice.expect(lambda f: f["type"] == "call_progress" and f["status"] == "answered")
        process = cluster.procs["signaling"].proc
        assert process is not None
        process.send_signal(signal.SIGTERM)
        stopped = time.monotonic()
        assert await bob.type("hangup") == {"type": "hangup", "call": invite["call"], "reason": "server_shutdown"}
        assert await alice.type("hangup") == {"type": "hangup", "call": call_sid, "reason": "server_shutdown"}
        ended = await alice.type("call_progress")
        assert ended == {"type": "call_progress", "call": call_sid, "status": "completed", "reason": "server_shutdown"}
        code = await asyncio.to_thread(process.wait, 30)
        assert code == 0, cluster.procs["signaling"].log_tail()
        took = time.monotonic() - stopped
        print(f"\nsignaling drained (one call ended by the drain) and exited in {took:.2f} s")
        assert SETTINGS.drain <= took < SETTINGS.drain + 2 * 1.0 + 3
        for sid in (call_sid, invite["call"]):
            status, record = await cluster.rest("gateway-1", "GET", f"/2010-04-01/Accounts/{cluster.account.sid}/Calls/{sid}.json")
            assert status == 200 and record["status"] == "completed" and record["end_time"] is not None, record
    finally:
        await alice.client.close()
        await bob.client.close()
        await asyncio.to_thread(cluster.procs["signaling"].stop)  # whatever happened above, it is gone after


# -- f. Redis stopped and started again ----------------------------------------------------------


async def test_redis_restart_keeps_clients_connected_and_presence_comes_back_whole(cluster: Cluster) -> None:
    """Redis goes away (and comes back empty: persistence is off) while alice and bob
    stay connected to their gateways. /readyz says not ready meanwhile; presence
    queries get a temporary error; afterwards each gateway re-asserts its sessions
    and presence is whole again, on every node."""
    await asyncio.gather(
        cluster.ensure("gateway-1", "gateway"), cluster.ensure("gateway-2", "gateway"), cluster.ensure("signaling", "signaling")
    )
    alice = await cluster.client("gateway-1", "alice")
    bob = await cluster.client("gateway-2", "bob")
    names = ("gateway-1", "gateway-2", "signaling")
    try:
        for identity in ("alice", "bob"):
            assert (await cluster.presence("gateway-1", identity))["status"] == "available"

        await asyncio.to_thread(cluster.redis.stop)
        for name in names:
            await eventually(lambda name=name: _async_eq(readyz(cluster.procs[name].url), 503), 5, f"{name} /readyz to say 503")
        status, body = await cluster.rest("gateway-1", "GET", f"/v1/Accounts/{cluster.account.sid}/Presence/alice")
        assert status == 503 and body["code"] == 10016, body
        # The sessions stay open: the gateway answers what needs no Redis.
        await alice.send({"type": "ping", "id": 7})
        assert (await alice.recv_type("pong"))["id"] == 7

        await asyncio.to_thread(cluster.redis.start)  # same port, empty
        restarted = time.monotonic()
        for name in names:
            await eventually(lambda name=name: _async_eq(readyz(cluster.procs[name].url), 200), 10, f"{name} /readyz to say 200")

        async def whole() -> bool:
            for name in names:
                for identity in ("alice", "bob"):
                    status, body = await cluster.rest(name, "GET", f"/v1/Accounts/{cluster.account.sid}/Presence/{identity}")
                    if status != 200 or body["status"] != "available":
                        return False
            return True

        await eventually(whole, LEASE + 5, "alice and bob to be present again on every node")
        print(f"\npresence whole again {time.monotonic() - restarted:.2f} s after Redis came back")
        for client in (alice, bob):
            await client.send({"type": "ping", "id": 8})
            assert (await client.recv_type("pong"))["id"] == 8
        # The re-asserted session is the one the client holds: a presence change takes.
        await bob.send({"type": "presence", "status": "busy", "id": 9})
        assert (await bob.recv_type("ok"))["id"] == 9
        assert (await cluster.presence("gateway-1", "bob"))["status"] == "busy"
        # Node channels are subscribed again and the registry re-filled: a call still
        # goes gateway 1 -> signaling -> gateway 2.
        call_sid = await place_call(cluster, alice, "client:bob")
        invite = await bob.recv_type("invite")
        assert invite["parent_call"] == call_sid
        await bob.send({"type": "reject", "call": invite["call"], "id": 10})
        assert (await bob.recv_type("ok"))["id"] == 10
        assert (await alice.recv_type("call_progress"))["status"] == "completed"
    finally:
        await alice.close()
        await bob.close()

