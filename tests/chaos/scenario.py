"""The fault suite's scenario: a small deployment of real processes, real
clients and steady traffic, and faults injected one after the other.

The deployment: a ``redis-server`` (with AOF, ``appendfsync always``, as
docs/operations.md tells operators to run it) reached only through a
:class:`FaultProxy`; two gateways, one signaling and one messaging process
(:class:`tests.helpers.cluster.Cluster`); an instruction server that dials
whoever the call is for; and a carrier: the ``http`` provider against a real
HTTP server (:class:`Carrier`) that honours the ``Idempotency-Key`` as a real
carrier does, and that the scenario can make refuse every send for a while.

The traffic: clients spread over both gateways (callers, callees and idle
sessions), a trickle of messages accepted over REST by whichever processes
are up, and before each fault three answered calls (across the gateways both
ways, and one within a gateway).

The faults, in turn, each round: SIGKILL of a gateway, of the signaling node
mid-call, of the messaging worker mid-burst (each restarted after); Redis
stopped and started again; Redis made slow (latency on every chunk through the
proxy); every Redis connection dropped (and new ones refused for a moment);
an instruction server that hangs until the fetch timeout; the carrier refusing
every send for a while. After each: the sessions not on a killed node stayed
connected (no close frame, and they answer a ping), presence is right (every
live client's session listed, no ghost) within one lease, and every call in
flight either survived (signals still relayed both ways, then a clean hangup)
or ended for its surviving party with a documented frame. At the end, every
accepted message reached the carrier once: lost 0, duplicated 0.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlencode

import aiohttp
from twilio.twiml.voice_response import Dial, VoiceResponse
from websockets.protocol import State

from tests.helpers.carrier import FakeCarrier
from tests.helpers.cluster import (
    NUMBER, Account, Cluster, Frames, Settings, as_awaitable, awaits_to, eventually, place_call, readyz,
)
from tests.helpers.faultproxy import FaultProxy
from tests.helpers.instructions import InstructionServer
from tests.helpers.redis_server import RedisServer
from tests.helpers.wsclient import RawClient

FAULTS = (
    "gateway_killed",
    "signaling_killed",
    "messaging_killed",
    "redis_restarted",
    "redis_slow",
    "redis_connections_dropped",
    "instructions_hang",
    "carrier_failing",
)
GATEWAYS = ("gateway-1", "gateway-2")
ROLES = {"gateway-1": "gateway", "gateway-2": "gateway", "signaling": "signaling", "messaging": "messaging"}
SETTINGS = Settings(
    heartbeat=0.5,  # peers are judged dead after max(2 × 0.5, 2) = 2 s without an answer
    providers='[[providers]]\nname = "carrier"\nkind = "http"\nurl = "{carrier}"\ntimeout = 1.0\n',
    # Enough attempts, soon enough, to outlast a carrier that refuses everything for a few seconds.
    messaging="max_attempts = 40\nretry_base = 0.2\nretry_max = 1.0",
    # A hung instruction server fails the call after 1.5 s, with no retry.
    voice_url_suffix="#rt=1500&tt=1500&rc=0",
    identities=tuple((name, f"+1555020{i:04d}") for i, name in enumerate(["c0", "c1", "c2", "d0", "d1", "d2", "i0", "i1", "i2", "i3"])),
)
# Who is where: callers c*, callees d*, idle sessions i*. Pairs: across the gateways
# both ways, and one call within gateway-1.
PLACEMENT = {"c0": "gateway-1", "d0": "gateway-2", "c1": "gateway-2", "d1": "gateway-1", "c2": "gateway-1", "d2": "gateway-1",
             "i0": "gateway-1", "i1": "gateway-2", "i2": "gateway-1", "i3": "gateway-2"}
PAIRS = (("c0", "d0"), ("c1", "d1"), ("c2", "d2"))
SLACK = 2.5  # seconds of scheduling slack for seven processes on two cores
END_BOUND = 2 * 2.0 + 2 * SETTINGS.heartbeat + SLACK  # a dead peer's calls end within this


class Carrier(FakeCarrier):
    """A carrier that takes each message sid once (the Idempotency-Key, as real
    carriers honour it), counts what it got, and refuses everything while
    ``failing`` (503: a temporary refusal)."""

    def __init__(self) -> None:
        super().__init__()
        self.failing = False
        self.taken: dict[str, str] = {}  # message sid -> our id for it
        self.bodies: dict[str, str] = {}  # message sid -> body
        self.repeats: collections.Counter[str] = collections.Counter()  # sent again with the same key
        self.refused = 0
        self.keys_wrong: list[str] = []  # requests whose Idempotency-Key was not their message sid
        self.responder = self._respond

    def _respond(self, body: dict[str, Any]) -> tuple[int, Any]:
        sid = body["message_sid"]
        key = self.requests[-1]["headers"].get("Idempotency-Key")
        if key != sid:
            self.keys_wrong.append(sid)
        if self.failing:
            self.refused += 1
            return 503, {"error_code": 30001}
        if sid in self.taken:
            self.repeats[sid] += 1
            return 200, {"id": self.taken[sid]}
        self.taken[sid] = self.next_id()
        self.bodies[sid] = body["body"]
        return 200, {"id": self.taken[sid]}


def dial_who_was_asked_for(ins: "HangableInstructions") -> Callable[[dict[str, str]], Any]:
    async def answer(params: dict[str, str]) -> str:
        await ins.released.wait()  # while hanging: no answer until the fetch timeout
        response = VoiceResponse()
        dial = Dial(timeout=10)
        dial.client(params["To"].removeprefix("client:"))
        response.append(dial)
        return str(response)

    return answer


class HangableInstructions(InstructionServer):
    def __init__(self, auth_token: str) -> None:
        super().__init__(auth_token=auth_token)
        self.released = asyncio.Event()
        self.released.set()


@dataclass
class Peer:
    identity: str
    gateway: str
    frames: Frames | None = None
    session: str | None = None

    @property
    def client(self) -> RawClient:
        assert self.frames is not None
        return self.frames.client

    def open(self) -> bool:
        ws = self.client.ws
        return ws.state is State.OPEN and ws.protocol.close_rcvd is None


@dataclass
class Call:
    caller: Peer
    callee: Peer
    sid: str
    leg: str


@dataclass
class Figures:
    rounds: int = 0
    faults: collections.Counter[str] = field(default_factory=collections.Counter)
    accepted: int = 0
    refused: int = 0  # answered with an error (Redis away, a process stopping)
    unknown: int = 0  # no answer (the process died with the request)
    delivered: int = 0
    lost: int = 0
    duplicated: int = 0
    resent_same_key: int = 0  # sent again after a crash or timeout with the same key: the carrier kept one
    carrier_refusals: int = 0
    calls: list[tuple[str, str, float]] = field(default_factory=list)  # fault, outcome, seconds to it
    presence: list[tuple[str, float]] = field(default_factory=list)  # fault, seconds to presence correct
    wall: float = 0.0


class Scenario:
    def __init__(self, tmp: Path, rounds: int, *, log: Callable[[str], None] = print) -> None:
        self.tmp = tmp
        self.rounds = rounds
        self.log = log
        self.figures = Figures()
        self.account = Account()
        self.redis = RedisServer(extra_args=("--appendonly", "yes", "--appendfsync", "always"))
        self.proxy: FaultProxy | None = None
        self.ins = HangableInstructions(self.account.auth_token)
        self.carrier = Carrier()
        self.cluster: Cluster | None = None
        self.peers = {name: Peer(name, gateway) for name, gateway in PLACEMENT.items()}
        self._ids = itertools.count(1)
        self._messages = itertools.count()
        self._trickle: asyncio.Task[None] | None = None
        self.accepted: dict[str, str] = {}  # sid -> body
        self.unanswered: set[str] = set()  # bodies of requests whose answer was lost
        self.refused: dict[str, tuple[str, str, int, str]] = {}  # body -> (fault, process, status, answer)
        self.fault = "none"
        self._stopping = False

    # -- set-up and tear-down -------------------------------------------------------------

    async def start(self) -> None:
        await asyncio.to_thread(self.redis.start)
        self.proxy = FaultProxy("127.0.0.1", self.redis.port)
        await self.proxy.start()
        await self.ins.start()
        self.ins.on("/voice", dial_who_was_asked_for(self.ins))
        await self.carrier.start()
        settings = Settings(**{**SETTINGS.__dict__, "providers": SETTINGS.providers.format(carrier=self.carrier.url)})
        self.cluster = Cluster(self.tmp, self.redis, self.ins, self.account, settings, redis_url=self.proxy.url)
        await asyncio.gather(*(self.cluster.start(name, roles) for name, roles in ROLES.items()))
        await asyncio.gather(*(self.connect(p) for p in self.peers.values()))
        self._trickle = asyncio.get_running_loop().create_task(self._send_trickle())

    async def close(self) -> None:
        if self._trickle is not None:
            self._trickle.cancel()
            await asyncio.gather(self._trickle, return_exceptions=True)
        for peer in self.peers.values():
            if peer.frames is not None:
                await peer.client.close()
        if self.cluster is not None:
            await self.cluster.stop_all()
        if self.proxy is not None:
            await self.proxy.close()
        await self.carrier.close()
        await self.ins.stop()
        await asyncio.to_thread(self.redis.cleanup)

    @property
    def c(self) -> Cluster:
        assert self.cluster is not None
        return self.cluster

    @property
    def p(self) -> FaultProxy:
        assert self.proxy is not None
        return self.proxy

    def next_id(self) -> str:
        return f"x{next(self._ids)}"

    async def connect(self, peer: Peer) -> None:
        client = await RawClient.open(self.c.ws_url(peer.gateway))
        reply = await client.register(self.account.token(peer.identity), capabilities=["voice"])
        assert reply["type"] == "registered", reply
        peer.frames, peer.session = Frames(client), reply["session"]

    def running(self) -> list[str]:
        return [name for name in ROLES if self.c.running(name)]

    # -- traffic ------------------------------------------------------------------------------

    async def _send_trickle(self, interval: float = 0.05) -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
            # Stopped between two requests, never during one: a request cut off
            # after the server accepted it would be a message nobody counted.
            while not self._stopping:
                await self._send_one(http)
                await asyncio.sleep(interval)

    async def _send_one(self, http: aiohttp.ClientSession) -> None:
        names = self.running()
        if not names:
            return
        name = random.choice(names)
        n = next(self._messages)
        body = f"chaos message {n}"
        data = urlencode({"To": f"+1555{3000000 + n % 1000000:07d}", "From": NUMBER, "Body": body})
        headers = {**self.account.basic(), "Content-Type": "application/x-www-form-urlencoded"}
        url = self.c.procs[name].url + f"/2010-04-01/Accounts/{self.account.sid}/Messages.json"
        try:
            async with http.post(url, data=data, headers=headers) as resp:
                if resp.status == 201:
                    self.accepted[(await resp.json())["sid"]] = body
                    self.figures.accepted += 1
                else:
                    self.figures.refused += 1
                    self.refused[body] = (self.fault, name, resp.status, (await resp.text())[:200])
        except (aiohttp.ClientError, asyncio.TimeoutError):
            # The request may or may not have been accepted before its process died.
            self.unanswered.add(body)
            self.figures.unknown += 1

    async def burst(self, n: int) -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            await asyncio.gather(*(self._send_one(http) for _ in range(n)))

    # -- calls ------------------------------------------------------------------------------------

    async def set_up_calls(self) -> list[Call]:
        return list(await asyncio.gather(*(self.set_up_call(self.peers[a], self.peers[b]) for a, b in PAIRS)))

    async def set_up_call(self, caller: Peer, callee: Peer) -> Call:
        assert caller.frames is not None and callee.frames is not None
        sid = await place_call(self.c, caller.frames, f"client:{callee.identity}", within=10)
        invite = await callee.frames.expect(lambda f: f["type"] == "invite" and f["parent_call"] == sid, 10, "the invite")
        rid = self.next_id()
        await callee.client.send({"type": "accept", "call": invite["call"], "id": rid})
        await callee.frames.expect(lambda f: f["type"] == "ok" and f.get("id") == rid, 10, "the accept's ok")
        await caller.frames.expect(
            lambda f: f["type"] == "call_progress" and f["call"] == sid and f["status"] == "answered", 10, "answered"
        )
        return Call(caller, callee, sid, invite["call"])

    async def still_up(self, call: Call) -> None:
        """Signals still go both ways; then the caller hangs up and both hear so."""
        assert call.caller.frames is not None and call.callee.frames is not None
        token = self.next_id()
        await call.caller.client.send({"type": "signal", "call": call.sid, "payload": {"probe": token}})
        await call.callee.frames.expect(lambda f: f["type"] == "signal" and f["payload"] == {"probe": token}, 10, "the caller's signal")
        await call.callee.client.send({"type": "signal", "call": call.leg, "payload": {"probe": token}})
        await call.caller.frames.expect(lambda f: f["type"] == "signal" and f["payload"] == {"probe": token}, 10, "the callee's signal")
        await call.caller.client.send({"type": "hangup", "call": call.sid})
        await call.callee.frames.expect(
            lambda f: f["type"] == "hangup" and f["call"] == call.leg and f["reason"] == "remote_hangup", 10, "remote_hangup"
        )
        await call.caller.frames.expect(
            lambda f: f["type"] == "call_progress" and f["call"] == call.sid and f["status"] == "completed", 10, "completed"
        )

    async def ended(self, peer: Peer, call_sid: str, types: dict[str, str], since: float) -> float:
        """Wait for the documented end of ``call_sid`` at ``peer``: a frame of one
        of ``types`` (type -> reason); returns seconds since ``since``."""
        assert peer.frames is not None

        def match(f: dict[str, Any]) -> bool:
            return f.get("call") == call_sid and f["type"] in types and f.get("reason") == types[f["type"]]

        await peer.frames.expect(match, END_BOUND + 5, f"the end of {call_sid} at {peer.identity}: {types}")
        return time.monotonic() - since

    async def check_calls(self, fault: str, calls: list[Call], dead: str | None, since: float) -> None:
        for call in calls:
            caller_dead = call.caller.gateway == dead or dead == "signaling"
            callee_dead = call.callee.gateway == dead or dead == "signaling"
            if dead == "signaling":
                t1 = await self.ended(call.caller, call.sid, {"call_progress": "signaling_lost"}, since)
                t2 = await self.ended(call.callee, call.leg, {"hangup": "signaling_lost"}, since)
                outcome, seconds = "ended for both: signaling_lost", max(t1, t2)
            elif caller_dead and callee_dead:
                outcome, seconds = "both parties' gateway killed", 0.0
            elif callee_dead:
                seconds = await self.ended(call.caller, call.sid, {"hangup": "connection_lost"}, since)
                await self.ended(call.caller, call.sid, {"call_progress": "instructions-ended"}, since)
                outcome = "ended for the caller: hangup connection_lost"
            elif caller_dead:
                seconds = await self.ended(call.callee, call.leg, {"hangup": "connection_lost"}, since)
                outcome = "ended for the callee: hangup connection_lost"
            else:
                await self.still_up(call)
                outcome, seconds = "survived (relayed both ways, then hung up)", 0.0
            if "ended" in outcome:
                assert seconds <= END_BOUND, (fault, outcome, seconds)
            self.figures.calls.append((fault, outcome, seconds))

    # -- invariants --------------------------------------------------------------------------------

    def check_connected(self, fault: str, dead: str | None) -> None:
        for peer in self.peers.values():
            if peer.gateway != dead:
                assert peer.open(), f"{fault}: {peer.identity} on {peer.gateway} was disconnected"

    async def ping_all(self, fault: str) -> None:
        async def ping(peer: Peer) -> None:
            assert peer.frames is not None
            rid = self.next_id()
            await peer.client.send({"type": "ping", "id": rid})
            await peer.frames.expect(lambda f: f["type"] == "pong" and f.get("id") == rid, 10, f"{fault}: {peer.identity}'s pong")

        await asyncio.gather(*(ping(p) for p in self.peers.values()))

    async def presence_correct(self) -> bool:
        """Every identity's listed sessions are exactly the live clients' (no ghost, none missing)."""
        names = [n for n in self.running() if n != "messaging"] or self.running()
        name = random.choice(names)
        for peer in self.peers.values():
            try:
                status, body = await self.c.rest(name, "GET", f"/v1/Accounts/{self.account.sid}/Presence/{peer.identity}")
            except (aiohttp.ClientError, asyncio.TimeoutError):
                return False
            if status != 200:
                return False
            listed = {s["session"] for s in body["sessions"] if not s.get("lingering")}
            expected = {peer.session} if peer.frames is not None and peer.open() else set()
            if listed != expected:
                return False
        return True

    async def check_presence(self, fault: str, since: float) -> None:
        """Right within one lease (plus a sweep, plus slack) of ``since``: the
        kill, or the moment Redis answered again."""
        bound = SETTINGS.lease + SETTINGS.sweep + SLACK
        await eventually(self.presence_correct, bound, f"{fault}: presence right again", interval=0.1)
        elapsed = time.monotonic() - since
        assert elapsed <= bound, (fault, "presence right only after", elapsed)
        self.figures.presence.append((fault, elapsed))

    async def all_ready(self) -> None:
        for name in self.running():
            await eventually(lambda name=name: awaits_to(readyz(self.c.procs[name].url), 200), 15, f"{name} ready")

    # -- the faults ----------------------------------------------------------------------------------

    async def run(self) -> Figures:
        started = time.monotonic()
        for r in range(self.rounds):
            for fault in FAULTS:
                self.log(f"round {r + 1}/{self.rounds}: {fault}")
                self.fault = fault
                await getattr(self, fault)(r)
                self.figures.faults[fault] += 1
            self.figures.rounds += 1
        await self.settle()
        self.figures.wall = time.monotonic() - started
        return self.figures

    async def _kill_and_restart(self, fault: str, name: str, *, with_calls: bool = True) -> None:
        calls = await self.set_up_calls() if with_calls else []
        self.c.procs[name].kill()
        killed = time.monotonic()
        dead_gateway = name if name in GATEWAYS else None
        check = [self.check_calls(fault, calls, name if name in GATEWAYS or name == "signaling" else None, killed)]
        await asyncio.gather(*check)
        self.check_connected(fault, dead_gateway)
        if dead_gateway is not None:
            for peer in self.peers.values():
                if peer.gateway == dead_gateway:
                    await peer.client.close()
                    peer.frames = None  # gone: presence must say so within a lease
            await self.check_presence(fault, killed)
        await self.c.start(name, ROLES[name])
        if dead_gateway is not None:
            await asyncio.gather(*(self.connect(p) for p in self.peers.values() if p.gateway == dead_gateway))
        await self.ping_all(fault)
        if dead_gateway is None:
            await self.check_presence(fault, killed)

    async def gateway_killed(self, r: int) -> None:
        await self._kill_and_restart("gateway_killed", GATEWAYS[r % 2])

    async def signaling_killed(self, r: int) -> None:
        await self._kill_and_restart("signaling_killed", "signaling")

    async def messaging_killed(self, r: int) -> None:
        burst = asyncio.get_running_loop().create_task(self.burst(60))
        await asyncio.sleep(0.2)  # mid-burst: jobs claimed and not yet sent
        await self._kill_and_restart("messaging_killed", "messaging")
        await burst

    async def redis_restarted(self, r: int) -> None:
        calls = await self.set_up_calls()
        await asyncio.to_thread(self.redis.stop)
        await asyncio.sleep(1.5)
        await asyncio.to_thread(self.redis.start)
        back = time.monotonic()
        await self.all_ready()
        self.check_connected("redis_restarted", None)
        await self.ping_all("redis_restarted")
        await self.check_presence("redis_restarted", back)
        await self.check_calls("redis_restarted", calls, None, back)

    async def redis_slow(self, r: int) -> None:
        calls = await self.set_up_calls()
        self.p.latency = 0.15  # each command's round trip ~0.3 s slower
        await asyncio.sleep(2.0)
        self.check_connected("redis_slow", None)
        await self.ping_all("redis_slow")
        await self.check_calls("redis_slow", calls, None, time.monotonic())  # calls still work while slow
        self.p.restore()
        await self.check_presence("redis_slow", time.monotonic())

    async def redis_connections_dropped(self, r: int) -> None:
        calls = await self.set_up_calls()
        self.p.refuse = True
        dropped = await self.p.drop_all()
        assert dropped > 0, "no connection went through the proxy"
        await asyncio.sleep(1.0)
        self.p.restore()
        back = time.monotonic()
        await self.all_ready()
        self.check_connected("redis_connections_dropped", None)
        await self.ping_all("redis_connections_dropped")
        await self.check_presence("redis_connections_dropped", back)
        await self.check_calls("redis_connections_dropped", calls, None, back)

    async def instructions_hang(self, r: int) -> None:
        calls = await self.set_up_calls()
        self.ins.released.clear()
        caller, callee = self.peers["i0"], self.peers["i1"]
        assert caller.frames is not None
        placed = time.monotonic()
        sid = await place_call(self.c, caller.frames, f"client:{callee.identity}", within=10)
        await caller.frames.expect(
            lambda f: f["type"] == "call_progress" and f["call"] == sid and f["status"] == "completed" and f["reason"] == "failed",
            1.5 + SLACK + 3, "the hung call's end",
        )
        self.figures.calls.append(("instructions_hang", "new call ended for the caller: completed failed", time.monotonic() - placed))
        self.ins.released.set()
        await self.check_calls("instructions_hang", calls, None, time.monotonic())
        self.check_connected("instructions_hang", None)

    async def carrier_failing(self, r: int) -> None:
        self.carrier.failing = True
        await self.burst(30)
        await asyncio.sleep(2.0)
        self.carrier.failing = False
        self.check_connected("carrier_failing", None)

    # -- the end -------------------------------------------------------------------------------------

    async def settle(self) -> None:
        """Stop the trickle; every accepted message reaches the carrier exactly once."""
        if self._trickle is not None:
            self._stopping = True
            await self._trickle
            self._trickle = None
        wanted = set(self.accepted)
        await eventually(
            lambda: as_awaitable(wanted <= set(self.carrier.taken)), 4 * SETTINGS.job_lease + 30,
            f"every accepted message at the carrier ({len(wanted - set(self.carrier.taken))} missing)", interval=0.2,
        )
        await asyncio.sleep(1.0)  # anything still on its way would show up as a repeat
        f = self.figures
        f.delivered = len(wanted & set(self.carrier.taken))
        f.lost = len(wanted - set(self.carrier.taken))
        # A message the carrier took that nobody was told was accepted must come
        # from a request whose answer died with its process.
        extra = {sid: body for sid, body in self.carrier.bodies.items() if sid not in wanted}
        surprises = sorted(set(extra.values()) - self.unanswered)
        assert not surprises, [(body, self.refused.get(body)) for body in surprises[:5]]
        f.resent_same_key = sum(self.carrier.repeats.values())
        # Delivered twice: the carrier took a sid again under another key (it keeps
        # one per key), or two sids carry one accepted request's body.
        bodies = collections.Counter(self.carrier.bodies.values())
        f.duplicated = len(self.carrier.keys_wrong) + sum(n - 1 for n in bodies.values() if n > 1)
        f.carrier_refusals = self.carrier.refused

