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
import base64
import json
import secrets
import signal
import sqlite3
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable
from urllib.parse import quote, urlencode

import aiohttp
import pytest
import pytest_asyncio
from twilio.twiml.voice_response import Dial, VoiceResponse

from protocol.addresses import new_sid
from protocol.tokens import mint_token
from tests.helpers.instructions import InstructionServer
from tests.helpers.process import ServerProcess, free_port
from tests.helpers.redis_server import RedisServer, redis_available
from tests.helpers.wsclient import RawClient

pytestmark = pytest.mark.asyncio(loop_scope="module")

LEASE = 3.0  # [presence] lease_ttl
SWEEP = 0.25  # [presence] sweep_interval
HEARTBEAT = 0.5  # [server] node_heartbeat
JOB_LEASE = 3.0  # [messaging] lease
MPS = 100  # the outbox's throughput (shared by the messaging processes), so a backlog builds up
BURST = 10

ALICE_PHONE = "+15550100001"
BOB_PHONE = "+15550100002"
NUMBER = "+15550001111"
OPERATOR = ("ops", "operator-password-for-tests")


@dataclass
class Account:
    sid: str = field(default_factory=lambda: new_sid("AC"))
    auth_token: str = field(default_factory=lambda: secrets.token_hex(16))
    key_sid: str = field(default_factory=lambda: new_sid("SK"))
    key_secret: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    app_sid: str = field(default_factory=lambda: new_sid("AP"))

    def token(self, identity: str) -> str:
        grants = {
            "identity": identity,
            "presence": {"publish": True, "subscribe": True},
            "voice": {"incoming": {"allow": True}, "outgoing": {"application_sid": self.app_sid}},
        }
        return mint_token(
            key_sid=self.key_sid, account_sid=self.sid, identity=identity, secret=self.key_secret, now=time.time(), grants=grants
        )

    def basic(self) -> dict[str, str]:
        return {"Authorization": "Basic " + base64.b64encode(f"{self.sid}:{self.auth_token}".encode()).decode()}


def dial_who_was_asked_for(params: dict[str, str]) -> str:
    """The instruction app: a call to ``client:<name>`` dials that client."""
    response = VoiceResponse()
    dial = Dial(timeout=5)
    dial.client(params["To"].removeprefix("client:"))
    response.append(dial)
    return str(response)


class Cluster:
    """The processes of one deployment, by name; each has its own config file,
    log file and data_dir under the module's temporary directory."""

    def __init__(self, tmp: Path, redis: RedisServer, ins: InstructionServer, account: Account) -> None:
        self.tmp = tmp
        self.redis = redis
        self.ins = ins
        self.account = account
        self.procs: dict[str, ServerProcess] = {}
        self.roles: dict[str, str] = {}
        # The messaging processes share one data_dir, so one outbox: the outbox stands
        # for the carrier, and all of them send to the same carrier. (A send interrupted
        # by a kill is sent again with the same idempotency key, the message sid, which
        # only the carrier that took the first one can recognise: two outbox files
        # would be two carriers.)
        self.shared_dirs = {"messaging-1": "messaging", "messaging-2": "messaging"}

    def config(self, port: int, data_dir: Path) -> str:
        a = self.account
        return f"""
[server]
host = "127.0.0.1"
port = {port}
shutdown_grace = 1.0
node_heartbeat = {HEARTBEAT}

[engine]
kind = "redis"
url = "{self.redis.url}"
data_dir = "{data_dir}"

[presence]
lease_ttl = {LEASE}
grace_period = 3.0  # a drained client resumes well within this (test e)
sweep_interval = {SWEEP}

[logging]
level = "info"

[security]
allow_private_urls = true

[signaling]
message_ack_timeout = 1.0

[messaging]
lease = {JOB_LEASE}
poll_interval = 0.1

[operator]
username = "{OPERATOR[0]}"
password = "{OPERATOR[1]}"

[[providers]]
name = "outbox"
kind = "outbox"
timeout = 1.0
mps = {MPS}
burst = {BURST}

[[accounts]]
sid = "{a.sid}"
auth_token = "{a.auth_token}"

[[accounts.api_keys]]
sid = "{a.key_sid}"
secret = "{a.key_secret}"

[[accounts.identities]]
identity = "alice"
phone = "{ALICE_PHONE}"

[[accounts.identities]]
identity = "bob"
phone = "{BOB_PHONE}"

[[accounts.applications]]
sid = "{a.app_sid}"
voice_url = "{self.ins.url('/voice')}"

[[accounts.phone_numbers]]
number = "{NUMBER}"

[accounts.fallback]
mode = "sms"
from_number = "{NUMBER}"
"""

    def data_dir(self, name: str) -> Path:
        return self.tmp / "data" / self.shared_dirs.get(name, name)

    async def start(self, name: str, roles: str) -> ServerProcess:
        """Start (or start again, on a new port) the process called ``name``;
        returns once its /readyz says ready (Redis reached, bus subscribed)."""
        port = free_port()
        directory = self.tmp / name
        directory.mkdir(exist_ok=True)
        path = directory / f"config-{port}.toml"
        path.write_text(self.config(port, self.data_dir(name)))
        argv = [sys.executable, "-m", "presence_server.cli", "serve", "--config", str(path), "--roles", roles]
        proc = ServerProcess(argv, port, directory / "server.log", directory)
        self.procs[name], self.roles[name] = proc, roles
        await proc.start(health_path="/readyz", timeout=30)
        return proc

    async def ensure(self, name: str, roles: str) -> ServerProcess:
        proc = self.procs.get(name)
        if proc is not None and proc.proc is not None and proc.proc.poll() is None:
            return proc
        return await self.start(name, roles)

    def ws_url(self, name: str) -> str:
        return f"ws://127.0.0.1:{self.procs[name].port}/v1/connect"

    async def client(self, name: str, identity: str) -> RawClient:
        c = await RawClient.open(self.ws_url(name))
        reply = await c.register(self.account.token(identity), capabilities=["voice", "messaging"])
        assert reply["type"] == "registered", reply
        return c

    async def rest(self, name: str, method: str, path: str, **kw: Any) -> tuple[int, Any]:
        headers = kw.pop("headers", None) or self.account.basic()
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            async with http.request(method, self.procs[name].url + path, headers=headers, **kw) as resp:
                return resp.status, await resp.json(content_type=None)

    async def presence(self, name: str, identity: str) -> dict[str, Any]:
        status, body = await self.rest(name, "GET", f"/v1/Accounts/{self.account.sid}/Presence/{identity}")
        assert status == 200, body
        return body  # type: ignore[no-any-return]

    async def nodes(self, name: str) -> list[dict[str, Any]]:
        auth = "Basic " + base64.b64encode(f"{OPERATOR[0]}:{OPERATOR[1]}".encode()).decode()
        status, body = await self.rest(name, "GET", "/v1/Nodes", headers={"Authorization": auth})
        assert status == 200, body
        return body["nodes"]  # type: ignore[no-any-return]

    async def node_id(self, name: str) -> str:
        port = self.procs[name].port
        for node in await self.nodes(name):
            if node["address"].endswith(f":{port}"):
                return str(node["node_id"])
        raise AssertionError(f"{name} is not in its own /v1/Nodes")

    def logs(self) -> str:
        return "\n".join(f"--- {name} ({self.roles[name]}) ---\n{p.log_tail(25)}" for name, p in self.procs.items())

    async def stop_all(self) -> dict[str, tuple[int | None, float]]:
        """SIGTERM to every process still running, at once (each drains for
        shutdown_grace); returns each one's exit code and how long it took."""

        def stop(proc: ServerProcess) -> tuple[int | None, float]:
            started = time.monotonic()
            proc.stop()
            return (proc.proc.returncode if proc.proc else None), time.monotonic() - started

        running = {name: p for name, p in self.procs.items() if p.proc is not None and p.proc.poll() is None}
        results = await asyncio.gather(*(asyncio.to_thread(stop, p) for p in running.values()))
        return dict(zip(running, results))


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float, what: str, interval: float = 0.05) -> Any:
    """Poll ``check()`` until it returns something truthy (and return it)."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(interval)


async def readyz(url: str) -> int:
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3)) as http:
            async with http.get(url + "/readyz") as resp:
                return resp.status
    except (aiohttp.ClientError, asyncio.TimeoutError):
        return 0


def outbox_sids(data_dir: Path) -> list[str]:
    """Every message sid in one outbox file, one per row; read-only (the server may run)."""
    path = data_dir / "outbox.sqlite3"
    if not path.exists():
        return []
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        conn.execute("PRAGMA busy_timeout=5000")
        return [row[0] for row in conn.execute("SELECT message_sid FROM outbox")]
    finally:
        conn.close()


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
    c = Cluster(tmp, redis, ins, account)
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


class Frames:
    """A client's incoming frames: waiting for one keeps the others for later
    (a presence update may arrive while a test waits for a call's progress)."""

    def __init__(self, client: RawClient) -> None:
        self.client = client
        self.unread: list[dict[str, Any]] = []

    async def expect(self, match: Callable[[dict[str, Any]], bool], timeout: float = 5.0, what: str = "a frame") -> dict[str, Any]:
        for i, frame in enumerate(self.unread):
            if match(frame):
                return self.unread.pop(i)
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {what} within {timeout} s; got {self.unread[-5:]}")
            try:
                frame = await self.client.recv(remaining)
            except asyncio.TimeoutError:
                continue
            if match(frame):
                return frame
            self.unread.append(frame)

    async def type(self, frame_type: str, timeout: float = 5.0) -> dict[str, Any]:
        return await self.expect(lambda f: f["type"] == frame_type, timeout, frame_type)


async def place_call(cluster: Cluster, caller: RawClient | Frames, to: str) -> str:
    """Place a call; a gateway that has not yet learnt of a signaling node from the
    registry (one heartbeat after it started) answers 10016: try again then."""
    frames = caller if isinstance(caller, Frames) else Frames(caller)
    deadline = time.monotonic() + 5
    while True:
        await frames.client.send({"type": "call", "to": to, "id": "place"})
        frame = await frames.expect(lambda f: f["type"] in ("call_created", "error") and f.get("id") == "place")
        if frame["type"] == "call_created":
            return str(frame["call"])
        assert frame["code"] == 10016 and time.monotonic() < deadline, (frame, cluster.logs())
        await asyncio.sleep(0.1)


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
        return int(cluster.redis.command("SCARD", f"ps:q:worker:{worker}"))

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


async def _async(value: Any) -> Any:
    return value


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


async def _async_eq(value: Awaitable[Any], expected: Any) -> bool:
    return (await value) == expected
