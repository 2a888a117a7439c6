"""Split roles as real server processes on a real Redis: the set-up shared by
the multi-process tests (tests/integration/test_scale_processes.py) and the
fault suite (tests/chaos).

A :class:`Cluster` starts named processes (``python -m presence_server.cli
serve --config F --roles R``, the redis engine), each with its own config
file, log file and data_dir under a temporary directory, and talks to them
the way clients do: WebSocket (:class:`RawClient`), REST, ``/readyz``,
``/v1/Nodes``. Short leases by default (:class:`Settings`) so tests stay fast.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
import sqlite3
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable

import aiohttp
from twilio.twiml.voice_response import Dial, VoiceResponse

from protocol.addresses import new_sid
from protocol.tokens import mint_token
from tests.helpers.instructions import InstructionServer
from tests.helpers.process import ServerProcess, free_port
from tests.helpers.redis_server import RedisServer
from tests.helpers.wsclient import RawClient

ALICE_PHONE = "+15550100001"
BOB_PHONE = "+15550100002"
NUMBER = "+15550001111"
OPERATOR = ("ops", "operator-password-for-tests")


@dataclass(frozen=True)
class Settings:
    """What the processes' config files say; the defaults keep leases short."""

    lease: float = 3.0  # [presence] lease_ttl
    sweep: float = 0.25  # [presence] sweep_interval
    grace_period: float = 3.0  # [presence] grace_period: a drained client resumes well within this
    heartbeat: float = 0.5  # [server] node_heartbeat
    job_lease: float = 3.0  # [messaging] lease
    ack_timeout: float = 1.0  # [signaling] message_ack_timeout
    # [signaling] drain_timeout: a signaling process SIGTERMed with calls up ends
    # them after this (the teardown's stop_all expects every process gone in ~5 s).
    drain: float = 1.0
    # The providers, as TOML: by default one outbox (shared by the messaging
    # processes, see Cluster.shared_dirs) with a throughput limit, so a backlog builds up.
    providers: str = '[[providers]]\nname = "outbox"\nkind = "outbox"\ntimeout = 1.0\nmps = 100\nburst = 10\n'
    messaging: str = ""  # more [messaging] keys, as TOML lines
    voice_url_suffix: str = ""  # appended to the application's voice URL (a #fragment of timeouts, say)
    identities: tuple[tuple[str, str], ...] = (("alice", ALICE_PHONE), ("bob", BOB_PHONE))


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
    log file and data_dir under ``tmp``. ``redis_url`` is where they find Redis
    when not at ``redis.url`` (a fault proxy in front of it, say)."""

    def __init__(
        self, tmp: Path, redis: RedisServer, ins: InstructionServer, account: Account, settings: Settings | None = None,
        redis_url: str | None = None,
    ) -> None:
        self.tmp = tmp
        self.redis = redis
        self.redis_url = redis_url or redis.url
        self.ins = ins
        self.account = account
        self.settings = settings or Settings()
        self.procs: dict[str, ServerProcess] = {}
        self.roles: dict[str, str] = {}
        # The messaging processes share one data_dir, so one outbox: the outbox stands
        # for the carrier, and all of them send to the same carrier. (A send interrupted
        # by a kill is sent again with the same idempotency key, the message sid, which
        # only the carrier that took the first one can recognise: two outbox files
        # would be two carriers.)
        self.shared_dirs = {"messaging-1": "messaging", "messaging-2": "messaging"}

    def config(self, port: int, data_dir: Path) -> str:
        a, s = self.account, self.settings
        identities = "".join(f'\n[[accounts.identities]]\nidentity = "{i}"\nphone = "{p}"\n' for i, p in s.identities)
        return f"""
[server]
host = "127.0.0.1"
port = {port}
shutdown_grace = 1.0
node_heartbeat = {s.heartbeat}

[engine]
kind = "redis"
url = "{self.redis_url}"
data_dir = "{data_dir}"

[presence]
lease_ttl = {s.lease}
grace_period = {s.grace_period}
sweep_interval = {s.sweep}

[logging]
level = "info"

[security]
allow_private_urls = true

[signaling]
message_ack_timeout = {s.ack_timeout}
drain_timeout = {s.drain}

[messaging]
lease = {s.job_lease}
poll_interval = 0.1
{s.messaging}

[operator]
username = "{OPERATOR[0]}"
password = "{OPERATOR[1]}"

{s.providers}

[[accounts]]
sid = "{a.sid}"
auth_token = "{a.auth_token}"

[[accounts.api_keys]]
sid = "{a.key_sid}"
secret = "{a.key_secret}"
{identities}
[[accounts.applications]]
sid = "{a.app_sid}"
voice_url = "{self.ins.url('/voice')}{s.voice_url_suffix}"

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
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"config-{port}.toml"
        path.write_text(self.config(port, self.data_dir(name)))
        argv = [sys.executable, "-m", "presence_server.cli", "serve", "--config", str(path), "--roles", roles]
        proc = ServerProcess(argv, port, directory / "server.log", directory)
        self.procs[name], self.roles[name] = proc, roles
        await proc.start(health_path="/readyz", timeout=30)
        return proc

    def running(self, name: str) -> bool:
        proc = self.procs.get(name)
        return proc is not None and proc.proc is not None and proc.proc.poll() is None

    async def ensure(self, name: str, roles: str) -> ServerProcess:
        if self.running(name):
            return self.procs[name]
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

    def logs(self, lines: int = 25) -> str:
        return "\n".join(f"--- {name} ({self.roles[name]}) ---\n{p.log_tail(lines)}" for name, p in self.procs.items())

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


async def place_call(cluster: Cluster, caller: RawClient | Frames, to: str, within: float = 5.0) -> str:
    """Place a call; a gateway that has not yet learnt of a signaling node from the
    registry (one heartbeat after it started) answers 10016: try again then."""
    frames = caller if isinstance(caller, Frames) else Frames(caller)
    deadline = time.monotonic() + within
    while True:
        await frames.client.send({"type": "call", "to": to, "id": "place"})
        frame = await frames.expect(lambda f: f["type"] in ("call_created", "error") and f.get("id") == "place")
        if frame["type"] == "call_created":
            return str(frame["call"])
        assert frame["code"] == 10016 and time.monotonic() < deadline, (frame, cluster.logs())
        await asyncio.sleep(0.1)


async def as_awaitable(value: Any) -> Any:
    return value


async def awaits_to(value: Awaitable[Any], expected: Any) -> bool:
    return (await value) == expected
