"""Signaling: an incoming call request to the ``invite`` at the callee, at
rising call rates, on the embedded and the Redis engines.

    .venv/bin/python -m bench.signaling --rates 25,50,100,200,400,800

Each call is a carrier handing over an inbound call
(``POST /v1/Ingress/outbox/Voice``, the provider's inbound credentials,
``From`` unique per call, ``To`` the account's number). That is the product's
*incoming communication request* as it arrives from outside, so the path timed
is all server: the HTTP request, the call record, the signed fetch of the
number's voice URL from a local instruction server (its own process,
answering ``<Dial><Client>callee-K</Client></Dial>``), the parse, the presence
lookup, and the ``invite`` written to the callee's WebSocket. (A client's
``call`` frame would time the same path behind a WebSocket the load generator
already holds, plus a ``call_created`` round; REST ``Calls.json`` rings the
client *before* fetching instructions, so it would not time the fetch.)

The load generator (this process) holds ``--callees`` registered sessions
(``voice`` capability) that answer every ``invite`` with ``reject`` (busy;
the account's fallback is ``none``, so no SMS follows), and sends calls
open-loop at each rate for ``--seconds``: call i leaves at t0 + i/rate
whatever the server's answers, over a pool of keep-alive connections
(bench/_httpload.py). Latency = request written → ``invite`` parsed (same
process, same clock). A step that does not keep up (invites per second below
90 % of the rate, p99 above 1 s, or more than 1 % of the calls without an
invite) is the saturation point and ends the ramp.

Engines: ``embedded`` (one process, memory engine), ``redis`` (one process
on a ``redis-server`` started on a free port), ``redis-split`` (``--split``:
a gateway process holding the callees and a signaling process taking the
calls, so every invite crosses Redis between nodes). Baseline, in the same
run: the bare aiohttp server's ``POST /ingress`` (bench/_baselines.py), which
fetches the same instruction URL, finds the ``<Client>`` with a regex and
writes an ``invite`` to that identity's WebSocket: the same I/O, no product.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from bench import _common as c
from bench._httpload import HTTPConn, open_conn, post_request
from bench._wsload import Opened, Pinger, WSConn, close_all, open_many
from tests.helpers.process import ServerProcess, free_port

NAME = "signaling"
NUMBER = "+15550001111"
INGRESS_USER, INGRESS_PASSWORD = "carrier", "bench-carrier-password"
TARGET_RATE = 200
TARGETS = {"embedded": 0.005, "redis": 0.015, "redis-split": 0.015}
MAX_POOL = 256
SENT_PROBE = 40  # calls (at 20/s) watched with MONITOR after the ramp


@dataclass
class Step:
    rate: int
    seconds: float
    sent: int = 0
    created: int = 0  # 201 answers
    refused: dict[int, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)  # request written -> invite
    answer_latencies: list[float] = field(default_factory=list)  # request written -> 201
    first_invite: float = 0.0
    last_invite: float = 0.0
    server_cpu: float = 0.0  # over the step and its drain (the wait for the last invites)
    wall: float = 0.0  # seconds, the step and its drain

    @property
    def missing(self) -> int:
        return self.sent - len(self.latencies)

    @property
    def invite_rate(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0

    def p(self, q: float) -> float:
        return c.percentile(self.latencies, q)

    @property
    def saturated(self) -> bool:
        return (self.invite_rate < 0.9 * self.rate or self.p(0.99) > 1.0 or self.missing > 0.01 * max(1, self.sent)
                or bool(self.errors) or bool(self.refused))


@dataclass
class RateResult:
    """One rate: ``--reps`` steps, interleaved with the other servers' steps at
    the same rate so that all of them meet the same machine. Each figure is the
    median over the reps (a stall of the shared machine during one rep moves
    that rep's p99, not the median)."""

    rate: int
    reps: list[Step]

    @staticmethod
    def _median(values: list[float]) -> float:
        return c.percentile(values, 0.5)

    def p(self, q: float) -> float:
        return self._median([s.p(q) for s in self.reps])

    @property
    def invite_rate(self) -> float:
        return self._median([s.invite_rate for s in self.reps])

    @property
    def answer_p50(self) -> float:
        return self._median([c.percentile(s.answer_latencies, 0.5) for s in self.reps])

    @property
    def cpu_share(self) -> float:
        """The server's CPU time over wall time (its processes together; 100 % = one core)."""
        return sum(s.server_cpu for s in self.reps) / max(1e-9, sum(s.wall for s in self.reps))

    @property
    def sent(self) -> int:
        return sum(s.sent for s in self.reps)

    @property
    def missing(self) -> int:
        return sum(s.missing for s in self.reps)

    @property
    def errors(self) -> dict[str, int]:
        return _merge([s.errors for s in self.reps])

    @property
    def refused(self) -> dict[int, int]:
        return _merge([s.refused for s in self.reps])  # type: ignore[return-value]

    @property
    def saturated(self) -> bool:
        return sum(1 for s in self.reps if s.saturated) * 2 > len(self.reps)

    def rep_p99s(self) -> str:
        return ", ".join(c.ms(s.p(0.99)) for s in self.reps)


def _merge(dicts: list[dict[Any, int]]) -> dict[Any, int]:
    out: dict[Any, int] = {}
    for d in dicts:
        for k, v in d.items():
            out[k] = out.get(k, 0) + v
    return out


@dataclass
class Ramp:
    label: str
    steps: list[RateResult] = field(default_factory=list)
    unavailable: str | None = None
    redis_commands: dict[str, int] = field(default_factory=dict)  # over the ramp's steps, by command
    # Commands the product sent to Redis (not those run inside its scripts), by
    # name, over a probe of SENT_PROBE calls after the ramp: MONITOR.
    sent_commands: dict[str, int] = field(default_factory=dict)

    @property
    def calls(self) -> int:
        return sum(s.sent for s in self.steps)

    def commands_per_call(self) -> float:
        return sum(self.redis_commands.values()) / self.calls if self.calls else float("nan")

    def top_commands(self, n: int = 6) -> str:
        top = sorted(self.redis_commands.items(), key=lambda kv: -kv[1])[:n]
        return ", ".join(f"{name} {count / max(1, self.calls):.1f}" for name, count in top)

    def sent_per_call(self) -> float:
        return sum(self.sent_commands.values()) / SENT_PROBE

    def top_sent(self) -> str:
        top = sorted(self.sent_commands.items(), key=lambda kv: -kv[1])
        return ", ".join(f"{name} {count / SENT_PROBE:.1f}" for name, count in top)

    def at(self, rate: int) -> RateResult | None:
        return next((s for s in self.steps if s.rate == rate), None)


class Callees:
    """The callee sessions' callback: time each invite (by its ``from``) and reject it."""

    def __init__(self) -> None:
        self.sent_at: dict[str, float] = {}
        self.step: Step | None = None
        self.product = True

    def on_message(self, conn: WSConn, msg: dict[str, Any], arrived: float) -> None:
        if msg.get("type") != "invite":
            return
        sent = self.sent_at.pop(msg.get("from", ""), None)
        if sent is not None and self.step is not None:
            self.step.latencies.append(arrived - sent)
            self.step.last_invite = arrived
            if not self.step.first_invite:
                self.step.first_invite = arrived
        if self.product:
            conn.send_json({"type": "reject", "call": msg["call"], "reason": "busy"})


async def run_step(
    port: int, path: str, headers: dict[str, str], rate: int, seconds: float, callees: Callees, first: int, pids: list[int],
) -> Step:
    step = Step(rate, seconds)
    callees.step = step
    n = max(1, int(rate * seconds))
    idle: list[HTTPConn] = []
    opened = 0
    tasks: set[asyncio.Task[None]] = set()

    async def one(i: int) -> None:
        nonlocal opened
        if idle:
            conn = idle.pop()
        else:
            opened += 1
            conn = await open_conn("127.0.0.1", port)
        frm = f"+1666{first + i:07d}"
        body = urlencode({"From": frm, "To": NUMBER}).encode()
        data = post_request("127.0.0.1", port, path, body, headers)
        sent = time.perf_counter()
        callees.sent_at[frm] = sent
        step.sent += 1
        try:
            status, _ = await conn.request(data)
        except (OSError, ConnectionError, RuntimeError) as exc:
            step.errors[type(exc).__name__] = step.errors.get(type(exc).__name__, 0) + 1
            return
        if status == 201:
            step.created += 1
            step.answer_latencies.append(time.perf_counter() - sent)
        else:
            step.refused[status] = step.refused.get(status, 0) + 1
        idle.append(conn)

    cpu0 = [c.cpu_seconds(pid) for pid in pids]
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    wall0 = time.perf_counter()
    for i in range(n):
        delay = t0 + i / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        if len(tasks) >= MAX_POOL * 4:  # far behind: the server has saturated; stop piling on
            step.errors["load generator backlog"] = n - i
            break
        task = loop.create_task(one(i))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    deadline = loop.time() + 5.0
    while (tasks or len(step.latencies) < step.created) and loop.time() < deadline:
        await asyncio.sleep(0.02)
    step.server_cpu = sum(c.cpu_seconds(pid) - c0 for pid, c0 in zip(pids, cpu0))
    step.wall = time.perf_counter() - wall0
    for task in tasks:
        task.cancel()
    callees.sent_at.clear()
    for conn in idle:
        if conn.transport is not None:
            conn.transport.close()
    await asyncio.sleep(0.5)  # let the rejected calls finish before the next step
    return step


@dataclass
class Driver:
    """One server under test (its processes, its callees) and its ramp so far."""

    ramp: Ramp
    http_port: int
    path: str
    headers: dict[str, str]
    callees: Callees
    sessions: Opened
    pinger: Pinger
    pids: list[int]
    servers: list[ServerProcess]
    redis: Redis | None = None
    product: bool = True
    first: int = 0
    done: bool = False
    commands_before: dict[str, int] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return self.ramp.label

    async def probe_sent_commands(self) -> None:
        """Count the commands the product sends to Redis per call: MONITOR
        (which names script-internal commands ``[0 lua]``, so only the
        product's own requests are counted) over SENT_PROBE calls at
        20/s. The background work of those 2 s (lease renewal, the sweeper,
        the bus's liveness check) is counted too: a fraction of a command per
        call."""
        assert self.redis is not None
        monitor = await RedisMonitor.open(self.redis.port)
        try:
            step = await run_step(self.http_port, self.path, self.headers, 20, SENT_PROBE / 20, self.callees, 8_000_000, self.pids)
        finally:
            counts = await monitor.close()
        if step.sent != SENT_PROBE or step.missing:
            raise RuntimeError(f"probe sent {step.sent} calls, {step.missing} without an invite")
        self.ramp.sent_commands = counts
        print(f"  {self.label}: {self.ramp.sent_per_call():.1f} Redis commands sent per call ({self.ramp.top_sent()})", flush=True)

    async def step(self, rate: int, seconds: float) -> Step:
        step = await run_step(self.http_port, self.path, self.headers, rate, seconds, self.callees, self.first, self.pids)
        self.first += step.sent
        return step

    async def close(self) -> None:
        if self.redis is not None and self.commands_before:
            after = self.redis.commandstats()
            self.ramp.redis_commands = {k: v - self.commands_before.get(k, 0) for k, v in after.items() if v > self.commands_before.get(k, 0)}
            print(f"  {self.label}: {self.ramp.commands_per_call():.1f} Redis commands per call ({self.ramp.top_commands()})", flush=True)
            try:
                await self.probe_sent_commands()
            except (OSError, RuntimeError) as exc:
                print(f"  {self.label}: MONITOR probe failed: {exc}", flush=True)
        self.pinger.stop()
        if self.product:
            for conn in self.sessions.conns:
                conn.send_json({"type": "bye"})
        await close_all(self.sessions.conns)
        for server in self.servers:
            server.stop()
        if self.redis is not None:
            self.redis.cleanup()


async def start_driver(
    label: str, args: argparse.Namespace, servers: list[ServerProcess], *, ws_port_of: int, http_port_of: int, path: str,
    headers: dict[str, str], callee_frame: Any, product: bool, redis: Redis | None = None,
) -> Driver:
    """Start the servers, open the callees, warm up (20 calls)."""
    for server in servers:
        await server.start()
    callees = Callees()
    callees.product = product
    sessions = await open_many("127.0.0.1", servers[ws_port_of].port, args.callees, callee_frame, concurrency=50, on_message=callees.on_message)
    if sessions.errors:
        raise RuntimeError(f"{label}: callees failed to register: {sessions.errors}")
    pinger = Pinger(sessions.conns)
    pinger.start()
    d = Driver(Ramp(label), servers[http_port_of].port, path, headers, callees, sessions, pinger, [c.pid_of(s) for s in servers], servers,
               redis, product)
    await run_step(d.http_port, path, headers, 20, 1.0, callees, 9_000_000, d.pids)  # warm-up
    d.commands_before = redis.commandstats() if redis else {}
    return d


async def interleaved(drivers: list[Driver], args: argparse.Namespace) -> None:
    """Every rate: --reps rounds, each round one step per server still going.
    A server whose median step saturates stops there."""
    for rate in args.rates:
        active = [d for d in drivers if not d.done]
        if not active:
            break
        reps: dict[str, list[Step]] = {d.label: [] for d in active}
        for _ in range(args.reps):
            for d in active:
                reps[d.label].append(await d.step(rate, args.seconds))
        for d in active:
            r = RateResult(rate, reps[d.label])
            d.ramp.steps.append(r)
            print(f"  {d.label:11} {rate:5}/s: invites {r.invite_rate:7,.0f}/s  p50 {c.ms(r.p(0.5)):>8}  p99 {c.ms(r.p(0.99)):>8}"
                  f" (reps {r.rep_p99s()})  201 p50 {c.ms(r.answer_p50):>8}  missing {r.missing}  server CPU {100 * r.cpu_share:3.0f}%"
                  f"{'  errors ' + str(r.errors) if r.errors else ''}{'  statuses ' + str(r.refused) if r.refused else ''}", flush=True)
            if r.saturated:
                print(f"  {d.label}: saturated at {rate}/s", flush=True)
                d.done = True


def account_tables(instructions_url: str) -> str:
    return f"""
[accounts.fallback]
mode = "none"

[[accounts.phone_numbers]]
number = "{NUMBER}"
voice_url = "{instructions_url}"

[[providers]]
name = "outbox"
kind = "outbox"
inbound_username = "{INGRESS_USER}"
inbound_password = "{INGRESS_PASSWORD}"
"""


SECTIONS = """
[security]
allow_private_urls = true
"""


class RedisMonitor:
    """A MONITOR connection counting the commands clients send (by name),
    leaving out those Lua scripts run (``[0 lua]``) and its own."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.counts: dict[str, int] = {}
        self.task = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def open(cls, port: int) -> RedisMonitor:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"MONITOR\r\n")
        if not (await reader.readline()).startswith(b"+OK"):
            raise RuntimeError("MONITOR refused")
        return cls(reader, writer)

    async def _read(self) -> None:
        while line := await self.reader.readline():
            # +1700000000.123456 [0 127.0.0.1:5000] "evalsha" "..." ...
            _, _, rest = line.partition(b" [")
            source, _, command = rest.partition(b"] ")
            if source.endswith(b" lua") or not command.startswith(b'"'):
                continue
            name = command[1:command.index(b'"', 1)].decode(errors="replace").lower()
            self.counts[name] = self.counts.get(name, 0) + 1

    async def close(self) -> dict[str, int]:
        await asyncio.sleep(0.2)  # the last commands' lines
        self.task.cancel()
        self.writer.close()
        return dict(self.counts)


Redis = c.RedisServer


async def product_driver(label: str, args: argparse.Namespace, workdir: Path, account: c.BenchAccount, ins_url: str,
                         redis: Redis | None, split: bool, tokens: list[str], tree: Path | None = None) -> Driver:
    if redis is not None:
        redis.start()
    engine_url = redis.url if redis else None
    conf: dict[str, Any] = dict(log_level=args.log_level, engine_url=engine_url, sections=SECTIONS, account_tables=account_tables(ins_url),
                                tree=tree)
    if split:
        servers = [c.product_server(workdir, account, name="gateway", roles="gateway", **conf),
                   c.product_server(workdir, account, name="signaling", roles="signaling", **conf)]
    else:
        servers = [c.product_server(workdir, account, name=label, **conf)]
    return await start_driver(
        label, args, servers, ws_port_of=0, http_port_of=len(servers) - 1, path="/v1/Ingress/outbox/Voice",
        headers={"Authorization": basic(INGRESS_USER, INGRESS_PASSWORD)},
        callee_frame=lambda i: {"type": "register", "token": tokens[i], "capabilities": ["voice"]}, product=True, redis=redis,
    )


def basic(user: str, password: str) -> str:
    import base64

    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def render(env: dict[str, str], args: argparse.Namespace, ramps: list[Ramp]) -> str:
    base = next(r for r in ramps if r.label == "bare")
    rows = []
    for r in ramps:
        if r.unavailable:
            rows.append(f"| {r.label} | did not run: {r.unavailable} | | | | | | |")
            continue
        for s in r.steps:
            b = base.at(s.rate)
            rows.append(
                f"| {r.label} | {s.rate} | {s.invite_rate:,.0f} | {c.ms(s.p(0.5))} | **{c.ms(s.p(0.99))}** ({s.rep_p99s()}) |"
                f" {c.ms(s.answer_p50)} | {100 * s.cpu_share:.0f}% |"
                f" {c.fmt_ratio(c.ratio(s.p(0.99), b.p(0.99))) if b and r is not base else ''} |"
                f" {s.missing}{' ' + str(s.errors) if s.errors else ''}{' ' + str(s.refused) if s.refused else ''} |"
                f" {'**saturated**' if s.saturated else ''} |"
            )
    lines = []
    target_lines = []
    for r in ramps:
        if r.label not in TARGETS:
            continue
        limit = TARGETS[r.label]
        what = f"signaling p99 ≤ {limit * 1000:.0f} ms at {TARGET_RATE} calls/s ({r.label})"
        s = r.at(TARGET_RATE)
        if r.unavailable:
            target_lines.append(c.target_line(NAME, what, f"did not run: {r.unavailable}", None))
            continue
        if s is None:
            reached = r.steps[-1].rate if r.steps else 0
            if r.steps and r.steps[-1].saturated:
                target_lines.append(c.target_line(NAME, what, f"saturated at {reached} calls/s, before {TARGET_RATE}", False))
                lines.append(f"- **{r.label}**: saturated at {reached} calls/s, before {TARGET_RATE}/s: target not met.")
            else:
                target_lines.append(c.target_line(NAME, what, f"{TARGET_RATE} calls/s not in this run's --rates", None))
            continue
        met = s.p(0.99) <= limit and not s.saturated
        b = base.at(TARGET_RATE)
        target_lines.append(c.target_line(NAME, what, f"p99 {c.ms(s.p(0.99))} (bare: {c.ms(b.p(0.99)) if b else 'n/a'})", met))
        lines.append(f"- **{r.label}** at {TARGET_RATE} calls/s: p99 **{c.ms(s.p(0.99))}** (p50 {c.ms(s.p(0.5))}), which "
                     f"{'meets' if met else 'does not meet'} the target of at most {limit * 1000:.0f} ms"
                     f"{f'; {c.fmt_ratio(c.ratio(s.p(0.99), b.p(0.99)))}× the bare relay' if b else ''}.")
    for r in ramps:
        if r.redis_commands:
            lines.append(f"- **{r.label}**: {r.commands_per_call():.1f} Redis commands per call over the ramp"
                         f" (INFO commandstats, which counts the commands run inside scripts too; per call: {r.top_commands()}).")
        if r.sent_commands:
            lines.append(f"- **{r.label}**: {r.sent_per_call():.1f} commands sent to Redis per call (MONITOR over {SENT_PROBE}"
                         f" calls at 20/s after the ramp, the commands inside scripts left out; per call: {r.top_sent()}).")
    image = c.plot(NAME, lambda ax: draw(ax, ramps))
    img = f"\n![Signaling latency against call rate]({image})\n" if image else ""
    return c.section(NAME, f"""
## Signaling: incoming call to `invite`, at rising call rates

`python -m bench.signaling --rates {','.join(map(str, args.rates))} --seconds {args.seconds:g} --reps {args.reps}` ({c.utc_now()}; load average before the run
{args.load}). Each call is a carrier handing over an inbound call:
`POST /v1/Ingress/outbox/Voice` (the provider's inbound credentials, `From`
unique per call, `To` the account's number), the product's incoming request
as it arrives from outside. So the time measured is all server: HTTP request,
call record, the signed fetch of the number's voice URL from a local
instruction server (its own process, answering `<Dial><Client>callee-K</Client></Dial>`),
parse, presence lookup, and the `invite` written to the callee's WebSocket. (A
client's `call` frame would time the same path plus a `call_created`; a REST
`Calls.json` rings the client before fetching instructions, so it would skip the
fetch.) The load generator holds {args.callees} callee sessions that `reject` (busy)
every invite (fallback `none`: no SMS), and sends the calls open-loop: call i
leaves at t0 + i/rate, whatever the answers, over a pool of keep-alive
connections. Latency = request written → `invite` parsed. All servers run at
once (idle while not driven) and take turns: each rate is {args.reps} rounds of one
{args.seconds:g}-second step per server, so every server meets the same moments of this
shared machine; each figure is the median over the {args.reps} steps (each step's p99 in
brackets). A step saturates when invites/s fall below 90 % of the rate, p99 passes
1 s or more than 1 % of the calls get no invite; a server whose median step
saturates stops there. Engines: `embedded` (one
process), `redis` (one process on a local `redis-server`){', `redis-split` (a gateway process for the callees and a signaling process for the calls, so every invite crosses Redis)' if args.split else ''}.
The baseline (`bare`) is an aiohttp server that, on `POST /ingress`, fetches the
same instruction URL, finds the `<Client>` with a regex and writes an `invite`
to that identity's WebSocket: the same I/O with no product. Logging `info`.

{c.env_table({**env, "redis-server": args.redis_version})}

| engine | calls/s offered | invites/s | p50 | p99 (each rep's) | 201 answer p50 | server CPU (all its processes) | p99 ÷ bare p99 | missing | |
|---|---|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}
{img}
{chr(10).join(lines)}
{c.before_note(args)}
{chr(10).join(target_lines)}
""")


def draw(ax: Any, ramps: list[Ramp]) -> None:
    for r in ramps:
        if not r.steps:
            continue
        rates = [s.rate for s in r.steps]
        line = ax.plot(rates, [s.p(0.99) * 1000 for s in r.steps], marker="o", label=f"{r.label} p99")[0]
        ax.plot(rates, [s.p(0.5) * 1000 for s in r.steps], marker=".", linestyle="--", color=line.get_color(), label=f"{r.label} p50")
    for label, limit in TARGETS.items():
        if label != "redis-split":
            ax.axhline(limit * 1000, color="grey", linestyle=":", linewidth=0.8)
    ax.set_xscale("log", base=2)
    rates = sorted({s.rate for r in ramps for s in r.steps})
    if rates:
        ax.set_xticks(rates)
        ax.set_xticklabels([str(x) for x in rates])
        ax.minorticks_off()
    ax.set_yscale("log")
    ax.set_xlabel("calls per second offered")
    ax.set_ylabel("request → invite (ms)")
    ax.set_title("Signaling latency at rising call rates (dotted: 5 and 15 ms targets)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")


async def main_async(args: argparse.Namespace) -> int:
    env, nofile = c.start_run()
    args.load = c.load_average()
    args.redis_version = Redis().version() if shutil.which("redis-server") else "not installed"
    print(f"redis-server {args.redis_version}; rates {', '.join(map(str, args.rates))}/s, {args.reps} × {args.seconds:g} s each,"
          f" {args.callees} callees\n", flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="bench-signaling-"))
    account = c.BenchAccount()
    tokens = [account.token(f"callee-{k}", voice=True, subscribe=False) for k in range(args.callees)]
    ins = c.helper_server(workdir, "instructions", str(args.callees))
    finished = False
    ramps: list[Ramp] = []
    try:
        await ins.start()
        ins_url = f"{ins.url}/voice"
        if args.profile:
            finished = True  # nothing to keep for a profile run
            return await profile(args, workdir, account, ins_url, tokens)
        drivers: list[Driver] = []
        try:
            for tree, suffix in ((None, ""), *(((args.before, " (before)"),) if args.before else ())):
                if "embedded" in args.engines:
                    drivers.append(await product_driver("embedded" + suffix, args, workdir, account, ins_url, None, False, tokens, tree))
                for label, split in (("redis", False), ("redis-split", True)):
                    if label not in args.engines:
                        continue
                    if not shutil.which("redis-server"):
                        ramps.append(Ramp(label + suffix, unavailable="redis-server is not installed (apt-get install redis-server)"))
                        continue
                    drivers.append(await product_driver(label + suffix, args, workdir, account, ins_url, Redis(), split, tokens, tree))
            drivers.append(await start_driver(
                "bare", args, [c.helper_server(workdir, "ws-aiohttp", ins_url)], ws_port_of=0, http_port_of=0, path="/ingress",
                headers={}, callee_frame=lambda i: {"type": "register", "identity": f"callee-{i}"}, product=False,
            ))
            await interleaved(drivers, args)
        finally:
            for d in drivers:
                await d.close()
        ramps = [d.ramp for d in drivers if d.label != "bare"] + ramps + [d.ramp for d in drivers if d.label == "bare"]
        print()
        base = ramps[-1]
        for r in ramps:
            if r.unavailable:
                print(f"{r.label:11} did not run: {r.unavailable}")
                continue
            s = r.at(TARGET_RATE)
            b = base.at(TARGET_RATE)
            if s is None:
                saturated = bool(r.steps) and r.steps[-1].saturated
                print(f"{r.label:11} {'saturated' if saturated else 'not run'} before {TARGET_RATE}/s (last step {r.steps[-1].rate if r.steps else 0}/s)")
            else:
                limit = TARGETS.get(r.label)
                verdict = f"  target ≤ {limit * 1000:.0f} ms: {'met' if s.p(0.99) <= limit else 'NOT met'}" if limit else ""
                print(f"{r.label:11} at {TARGET_RATE}/s: p50 {c.ms(s.p(0.5))}  p99 {c.ms(s.p(0.99))}"
                      f"  p99 ratio to bare {c.ratio(s.p(0.99), b.p(0.99)) if b else float('nan'):.2f}{verdict}")
        if not args.no_write:
            c.write_section(NAME, render(env, args, ramps), env)
            print(f"\nwrote the {NAME} section of {c.DOC.relative_to(c.ROOT)}")
        finished = True
        return 0
    finally:
        ins.stop()
        if finished and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"(server logs kept in {workdir})", file=sys.stderr)


async def profile(args: argparse.Namespace, workdir: Path, account: c.BenchAccount, ins_url: str, tokens: list[str]) -> int:
    """py-spy on the product (the first of --engines: embedded or redis, one
    process) during one step at 200 calls/s (or the one rate given)."""
    engine = args.engines[0] if args.engines[0] in ("embedded", "redis") else "embedded"
    redis = Redis() if engine == "redis" else None
    if redis is not None:
        redis.start()
    server = c.product_server(workdir, account, name=engine, log_level=args.log_level, sections=SECTIONS,
                              account_tables=account_tables(ins_url), engine_url=redis.url if redis else None)
    try:
        await server.start()
        callees = Callees()
        sessions = await open_many("127.0.0.1", server.port, args.callees,
                                   lambda i: {"type": "register", "token": tokens[i], "capabilities": ["voice"]},
                                   concurrency=50, on_message=callees.on_message)
        headers = {"Authorization": basic(INGRESS_USER, INGRESS_PASSWORD)}
        rate = args.rates[-1] if len(args.rates) == 1 else TARGET_RATE
        await run_step(server.port, "/v1/Ingress/outbox/Voice", headers, 20, 1.0, callees, 9_000_000, [c.pid_of(server)])
        profiler = c.start_profiler(c.pid_of(server), Path(tempfile.mkdtemp(prefix="bench-profile-")) / "signaling.txt")
        try:
            step = await run_step(server.port, "/v1/Ingress/outbox/Voice", headers, rate, args.seconds, callees, 0, [c.pid_of(server)])
            print(f"  {engine} {rate}/s: p50 {c.ms(step.p(0.5))} p99 {c.ms(step.p(0.99))} missing {step.missing}"
                  f" server CPU {100 * step.server_cpu / max(1e-9, step.wall):.0f}%")
        finally:
            result = profiler.stop() if profiler else None
            await close_all(sessions.conns)
    finally:
        server.stop()
        if redis is not None:
            redis.cleanup()
    if result:
        c.write_profile(f"{NAME}-{engine}" if engine != "embedded" else NAME,
                        f"python -m bench.{NAME} --profile --engines {engine} --rates {rate}", result,
                        f"it took {rate} inbound calls per second for {args.seconds:g} s ({engine} engine), each rung and rejected",
                        no_write=args.no_write, after=f"{NAME}-profile" if engine != "embedded" else None)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.signaling", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default="25,50,100,200,400,800,1600", help="call rates to step through, per second (default 25,50,…,1600)")
    parser.add_argument("--seconds", type=float, default=3.0, help="seconds per step (default 3)")
    parser.add_argument("--reps", type=int, default=3, help="steps per rate and server, interleaved; medians reported (default 3)")
    parser.add_argument("--callees", type=int, default=200, help="callee sessions (default 200: each stays under its 20 frames/s rate limit)")
    parser.add_argument("--engines", default="embedded,redis", help="embedded, redis, redis-split (comma-separated; default embedded,redis)")
    parser.add_argument("--split", action="store_true", help="add redis-split (a gateway and a signaling process)")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"], help="the server's (default info)")
    parser.add_argument("--profile", action="store_true", help="only profile the product (the first of --engines) at 200 calls/s with py-spy")
    parser.add_argument("--before", type=c.before_tree, metavar="PATH",
                        help="also run the product from this checkout (e.g. a git worktree of an earlier commit), each engine"
                             " labelled '(before)', in the same interleaving: before/after figures from one run")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (server logs)")
    args = parser.parse_args(argv)
    try:
        args.rates = sorted({int(r) for r in args.rates.split(",") if r.strip()})
    except ValueError:
        parser.error("--rates takes integers, comma-separated")
    args.engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    if args.split and "redis-split" not in args.engines:
        args.engines.append("redis-split")
    if set(args.engines) - {"embedded", "redis", "redis-split"}:
        parser.error("--engines: embedded, redis, redis-split")
    args.split = "redis-split" in args.engines
    return int(c.uvloop_run(main_async(args)))


if __name__ == "__main__":
    raise SystemExit(main())
