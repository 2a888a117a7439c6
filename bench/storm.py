"""Connection storm: sessions connected and registered per second, and the time
from connect to ``registered``.

    .venv/bin/python -m bench.storm --n 2000

The server runs as its own process (``presence-server serve --config``, the
embedded engine, logging ``info``); this process is only the load generator
(bench/_wsload.py, a raw RFC 6455 client). N clients connect, ``concurrency``
(default 100, under the listen backlog of 128 every server here has) at a time:
TCP connect, WebSocket upgrade, ``register`` with the client's own token,
wait for ``registered``. The storm's rate is N over the time from the first
connect to the last ``registered``; each client's latency is connect start to
``registered``. The server's CPU time over the storm, per session, is printed
too: on a shared 2-core machine it is steadier than the rate.

Baselines, in the same run and the same way: the bare aiohttp WebSocket server
(the product's own stack, answering ``register`` with a fixed ``registered``)
and the bare ``websockets`` server; and **Prosody** (Debian's package) with
the same N clients doing an XMPP login: stream, SASL PLAIN without TLS, bind,
session, initial ``<presence/>`` (bench/_xmpp.py). Each target runs
``--rounds`` storms (default 3) with fresh identities, the servers taking
turns round by round, and the median round by rate is reported.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from bench import _common as c
from bench import _xmpp
from bench._wsload import Opened, close_all, open_many
from tests.helpers.process import ServerProcess

NAME = "storm"
TARGET_VS_BARE = 0.5
TARGET_VS_PROSODY = 5.0


@dataclass
class Storm:
    n: int
    latencies: list[float] = field(default_factory=list)
    t0: float = 0.0
    t1: float = 0.0
    errors: dict[str, int] = field(default_factory=dict)
    server_cpu: float = 0.0  # seconds, over the storm
    own_cpu: float = 0.0  # the load generator's, over the storm

    @property
    def ok(self) -> int:
        return len(self.latencies)

    @property
    def rate(self) -> float:
        return self.ok / (self.t1 - self.t0) if self.t1 > self.t0 else 0.0

    def p(self, q: float) -> float:
        return c.percentile(self.latencies, q)


@dataclass
class Target:
    label: str
    rounds: list[Storm] = field(default_factory=list)
    unavailable: str | None = None  # why it did not run

    @property
    def median(self) -> Storm:
        ordered = sorted(self.rounds, key=lambda s: s.rate)
        return ordered[len(ordered) // 2]


def own_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def ws_storm(server: ServerProcess, n: int, frame: Callable[[int], dict[str, Any]], concurrency: int, bye: bool) -> Storm:
    pid = c.pid_of(server)
    cpu0, own0 = c.cpu_seconds(pid), own_cpu()
    opened = await open_many("127.0.0.1", server.port, n, frame, concurrency=concurrency)
    s = Storm(n, opened.latencies(), opened.t0, opened.t1, opened.errors, c.cpu_seconds(pid) - cpu0, own_cpu() - own0)
    await close_ws(opened, bye)
    return s


async def close_ws(opened: Opened, bye: bool) -> None:
    if bye:  # the product removes a session at once after bye (else it lingers for the grace period)
        for conn in opened.conns:
            conn.send_json({"type": "bye"})
    await close_all(opened.conns)
    await asyncio.sleep(1.0)


class Contender:
    """One server under test: started once, warmed up, then one storm per round
    (the rounds of all servers interleaved, so each meets the same moments of a
    shared machine)."""

    def __init__(self, label: str) -> None:
        self.target = Target(label)

    async def start(self) -> None: ...

    async def round(self, r: int) -> Storm: ...

    async def stop(self) -> None: ...


class WSContender(Contender):
    def __init__(self, label: str, server: ServerProcess, args: argparse.Namespace,
                 frame_of_round: Callable[[int], Callable[[int], dict[str, Any]]], bye: bool) -> None:
        super().__init__(label)
        self.server, self.args, self.frame_of_round, self.bye = server, args, frame_of_round, bye

    async def start(self) -> None:
        await self.server.start()
        warm = await open_many("127.0.0.1", self.server.port, 100, self.frame_of_round(-1), concurrency=self.args.concurrency)
        await close_ws(warm, self.bye)

    async def round(self, r: int) -> Storm:
        return await ws_storm(self.server, self.args.n, self.frame_of_round(r), self.args.concurrency, self.bye)

    async def stop(self) -> None:
        self.server.stop()


class ProsodyContender(Contender):
    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__("Prosody")
        self.args = args
        self.prosody: _xmpp.Prosody | None = None

    async def start(self) -> None:
        self.prosody = _xmpp.Prosody()
        self.prosody.create_users([f"storm{i}" for i in range(self.args.n)])
        self.prosody.start()
        await xmpp_storm(self.prosody, min(100, self.args.n), self.args.concurrency)  # warm-up

    async def round(self, r: int) -> Storm:
        assert self.prosody is not None
        s = await xmpp_storm(self.prosody, self.args.n, self.args.concurrency)
        if s.ok == 0:
            raise _xmpp.ProsodyUnavailable(f"no login succeeded: {s.errors}; log: {self.prosody.tail(5)}")
        return s

    async def stop(self) -> None:
        if self.prosody is not None:
            self.prosody.cleanup()


async def interleaved(contenders: list[Contender], rounds: int) -> None:
    running = []
    for k in contenders:
        try:
            await k.start()
            running.append(k)
        except _xmpp.ProsodyUnavailable as exc:
            k.target.unavailable = str(exc)
            await k.stop()
    try:
        for r in range(rounds):
            for k in list(running):
                try:
                    s = await k.round(r)
                except _xmpp.ProsodyUnavailable as exc:
                    k.target.unavailable = str(exc)
                    running.remove(k)
                    continue
                k.target.rounds.append(s)
                show(k.target.label, r, s)
    finally:
        for k in contenders:
            await k.stop()


def show(label: str, r: int, s: Storm) -> None:
    print(f"  {label:10} round {r + 1}: {s.rate:8,.0f} sessions/s  p50 {c.ms(s.p(0.5)):>8}  p99 {c.ms(s.p(0.99)):>8}"
          f"  server CPU {s.server_cpu / max(1, s.ok) * 1e6:6,.0f} µs/session  load generator {s.own_cpu / max(1, s.ok) * 1e6:5,.0f} µs/session"
          f"{'  errors ' + str(s.errors) if s.errors else ''}", flush=True)


async def xmpp_storm(prosody: _xmpp.Prosody, n: int, concurrency: int) -> Storm:
    s = Storm(n)
    clients: list[_xmpp.XMPPClient] = []
    next_i = 0

    async def worker() -> None:
        nonlocal next_i
        while next_i < n:
            i = next_i
            next_i += 1
            t = time.perf_counter()
            try:
                x, _, done = await _xmpp.login(prosody.port, f"storm{i}")
            except (OSError, asyncio.TimeoutError, RuntimeError, ConnectionError) as exc:
                name = type(exc).__name__
                s.errors[name] = s.errors.get(name, 0) + 1
                continue
            clients.append(x)
            s.latencies.append(done - t)

    cpu0, own0 = c.cpu_seconds(prosody.pid), own_cpu()
    s.t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    s.t1 = time.perf_counter()
    s.server_cpu, s.own_cpu = c.cpu_seconds(prosody.pid) - cpu0, own_cpu() - own0
    for x in clients:
        await _xmpp.close(x)
    await asyncio.sleep(1.0)
    return s


def cpu_per(s: Storm) -> float:
    """Server CPU seconds per registered session (over the whole storm)."""
    return s.server_cpu / max(1, s.ok)


def render(env: dict[str, str], args: argparse.Namespace, targets: list[Target]) -> str:
    prod, bare = targets[0], targets[1]
    prosody = next(t for t in targets if t.label == "Prosody")
    p, b = prod.median, bare.median
    rows = []
    for t in targets:
        if t.unavailable or not t.rounds:
            rows.append(f"| {t.label} | did not run: {t.unavailable} | | | | | | | |")
            continue
        m = t.median
        rounds = ", ".join(f"{s.rate:,.0f}" for s in t.rounds)
        rows.append(
            f"| {t.label} | **{m.rate:,.0f}/s** ({rounds}) | {c.ms(m.p(0.5))} | {c.ms(m.p(0.99))} |"
            f" {cpu_per(m) * 1e6:,.0f} µs | {c.ratio(1, cpu_per(m)):,.0f}/s | {c.fmt_ratio(c.ratio(p.rate, m.rate))} |"
            f" {c.fmt_ratio(c.ratio(cpu_per(m), cpu_per(p)))} | {sum(sum(s.errors.values()) for s in t.rounds)} |"
        )
    vs_bare = c.ratio(p.rate, b.rate)
    met_bare = vs_bare >= TARGET_VS_BARE
    if prosody.unavailable or not prosody.rounds:
        vs_prosody, met_prosody = float("nan"), None
        prosody_line = f"Prosody could not run here: {prosody.unavailable}. No Prosody figure is given."
        prosody_figure = "Prosody did not run"
    else:
        vs_prosody = c.ratio(p.rate, prosody.median.rate)
        met_prosody = vs_prosody >= TARGET_VS_PROSODY
        prosody_line = (
            f"Prosody {_xmpp.prosody_version()} (Debian's package, epoll backend, `internal_plain` auth, logging `info`): "
            f"the product registers **{vs_prosody:.2f}×** as many sessions per second, which "
            f"{'meets' if met_prosody else 'does not meet'} the target of at least {TARGET_VS_PROSODY:g}×. An XMPP login takes"
            " six round trips (stream, SASL, stream restart, bind, session, presence + ping) where the product's takes two"
            " (upgrade, register), so at a fixed concurrency a part of the difference is round trips, not work: the server"
            " CPU per session column is the fairer comparison."
        )
        prosody_figure = f"{vs_prosody:.2f}× Prosody ({p.rate:,.0f}/s against {prosody.median.rate:,.0f}/s)"
    cpu_vs_prosody = ""
    if not prosody.unavailable and prosody.rounds:
        cpu_vs_prosody = (f", and {c.fmt_ratio(c.ratio(cpu_per(prosody.median), cpu_per(p)))}× Prosody's"
                          f" ({c.ratio(1, cpu_per(prosody.median)):,.0f} per CPU-second)")
    image = c.plot(NAME, lambda ax: draw(ax, targets))
    img = f"\n![Time to registered]({image})\n" if image else ""
    return c.section(NAME, f"""
## Connection storm: registrations per second

`python -m bench.storm --n {args.n}` ({c.utc_now()}; load average before the run
{args.load}). One server process at a time, one load-generator process
(bench/_wsload.py, a raw RFC 6455 client on uvloop; bench/_xmpp.py for XMPP):
{args.n} clients, {args.concurrency} connecting at a time (below the listen backlog of
128 that the product, aiohttp and Prosody all use), each doing TCP connect,
WebSocket upgrade, `register` with its own token, and waiting for `registered`.
Rate = N / (last `registered` − first connect); latency = connect start to
`registered`. {args.rounds} storms per server with fresh identities, the median
by rate shown (every round's rate in brackets); 100 warm-up sessions first. All
servers run at once (idle while not driven) and the rounds take turns (product,
aiohttp, websockets, Prosody, then again), so each meets the same moments of
this shared machine. The
product: embedded engine, logging `info` (JSON to a file). The bare servers
answer `register` with a fixed `registered` (no token check, no presence).

{c.env_table({**env, "Prosody": _xmpp.prosody_version()})}

| server | sessions registered/s | p50 to registered | p99 | server CPU per session | sessions per server CPU-second | product rate ÷ this rate | product sessions per CPU-second ÷ this server's | failures |
|---|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}
{img}
Against the bare aiohttp server (the product's own stack): the product registers
**{vs_bare:.2f}×** its handshake rate, which {'meets' if met_bare else 'does not meet'} the target of at least
{TARGET_VS_BARE:g}×. On a machine this shared the rates of single rounds swing by a factor
of two or more (see the rounds in brackets); the server's CPU time per session is
much steadier: by that measure the product does {c.fmt_ratio(c.ratio(cpu_per(b), cpu_per(p)))}× the bare server's
work-rate ({c.ratio(1, cpu_per(p)):,.0f} against {c.ratio(1, cpu_per(b)):,.0f} sessions per CPU-second){cpu_vs_prosody}.

{prosody_line}
{c.before_note(args)}
{c.target_line(NAME, f"registration rate ≥ {TARGET_VS_BARE:g}× bare handshake rate", f"{vs_bare:.2f}× ({p.rate:,.0f}/s against {b.rate:,.0f}/s)", met_bare)}
{c.target_line(NAME, f"registration rate ≥ {TARGET_VS_PROSODY:g}× Prosody login + presence", prosody_figure, met_prosody)}
""")


def draw(ax: Any, targets: list[Target]) -> None:
    for t in targets:
        if not t.rounds:
            continue
        lat = sorted(t.median.latencies)
        ax.plot([x * 1000 for x in lat], [i / len(lat) for i in range(len(lat))], label=f"{t.label} ({t.median.rate:,.0f}/s)")
    ax.set_xscale("log")
    ax.set_xlabel("connect → registered (ms, log scale)")
    ax.set_ylabel("share of sessions")
    ax.set_title("Connection storm: time to registered (CDF, median round)")
    ax.grid(alpha=0.3)
    ax.legend()


async def main_async(args: argparse.Namespace) -> int:
    env, nofile = c.start_run("websockets")
    args.load = c.load_average()
    print(f"storms of {args.n} sessions, {args.concurrency} at a time, {args.rounds} rounds per server\n", flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="bench-storm-"))
    account = c.BenchAccount()
    t = time.perf_counter()
    rounds = 1 if args.profile else args.rounds
    tokens = {(r, i): account.token(f"storm-{r}-{i}", subscribe=False) for r in range(-1, rounds) for i in range(args.n if r >= 0 else 100)}
    print(f"minted {len(tokens)} tokens in {time.perf_counter() - t:.1f} s", flush=True)

    def product_round(r: int) -> Callable[[int], dict[str, Any]]:
        return lambda i: {"type": "register", "id": i, "token": tokens[(r, i)]}

    def bare_round(r: int) -> Callable[[int], dict[str, Any]]:
        return lambda i: {"type": "register", "id": i, "identity": f"storm-{r}-{i}"}

    finished = False
    try:
        product = c.product_server(workdir, account, log_level=args.log_level)
        if args.profile:
            finished = True  # nothing to keep for a profile run
            return await profile(product, args, product_round(0))
        contenders: list[Contender] = [
            WSContender("product", product, args, product_round, bye=True),
            WSContender("aiohttp", c.helper_server(workdir, "ws-aiohttp"), args, bare_round, bye=False),
            WSContender("websockets", c.helper_server(workdir, "ws-websockets"), args, bare_round, bye=False),
        ]
        if args.no_prosody:
            skipped = Target("Prosody", unavailable="skipped (--no-prosody)")
        else:
            try:
                contenders.append(ProsodyContender(args))
                skipped = None
            except _xmpp.ProsodyUnavailable as exc:
                skipped = Target("Prosody", unavailable=str(exc))
        if args.before:
            before = c.product_server(workdir, account, name="before", log_level=args.log_level, tree=args.before)
            contenders.append(WSContender("product (before)", before, args, product_round, bye=True))
        await interleaved(contenders, args.rounds)
        targets = [k.target for k in contenders] + ([skipped] if skipped else [])
        print()
        p = targets[0].median
        for t in targets:
            if t.unavailable:
                print(f"{t.label:10} did not run: {t.unavailable}")
                continue
            m = t.median
            print(f"{t.label:10} {m.rate:8,.0f} sessions/s  p50 {c.ms(m.p(0.5)):>8}  p99 {c.ms(m.p(0.99)):>8}"
                  f"  server CPU {m.server_cpu / max(1, m.ok) * 1e6:6,.0f} µs/session   product rate / this {c.ratio(p.rate, m.rate):.2f}")
        if not args.no_write:
            c.write_section(NAME, render(env, args, targets), env)
            print(f"\nwrote the {NAME} section of {c.DOC.relative_to(c.ROOT)}")
        finished = True
        return 0
    finally:
        if finished and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"(server logs kept in {workdir})", file=sys.stderr)


async def profile(server: ServerProcess, args: argparse.Namespace, frame: Callable[[int], dict[str, Any]]) -> int:
    await server.start()
    profiler = c.start_profiler(c.pid_of(server), Path(tempfile.mkdtemp(prefix="bench-profile-")) / "storm.txt")
    try:
        s = await ws_storm(server, args.n, frame, args.concurrency, bye=True)
        show("product", 0, s)
    finally:
        result = profiler.stop() if profiler else None
        server.stop()
    if result:
        c.write_profile(NAME, f"python -m bench.{NAME} --profile --n {args.n}", result,
                        f"{args.n} sessions connected and registered ({args.concurrency} at a time) and then said bye", no_write=args.no_write)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.storm", description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="sessions per storm (default 2000)")
    parser.add_argument("--concurrency", type=int, default=100, help="clients connecting at once (default 100)")
    parser.add_argument("--rounds", type=int, default=3, help="storms per server; the median is reported (default 3)")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"], help="the server's (default info)")
    parser.add_argument("--no-prosody", action="store_true", help="leave Prosody out")
    parser.add_argument("--profile", action="store_true", help="only profile the product with py-spy; writes the profile subsection")
    parser.add_argument("--before", type=c.before_tree, metavar="PATH",
                        help="also storm the product run from this checkout (e.g. a git worktree of an earlier commit),"
                             " labelled 'product (before)', in the same interleaving: before/after figures from one run")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (server logs)")
    args = parser.parse_args(argv)
    if args.n < 10 or args.rounds < 1:
        parser.error("--n must be at least 10 and --rounds at least 1")
    return int(c.uvloop_run(main_async(args)))


if __name__ == "__main__":
    raise SystemExit(main())
