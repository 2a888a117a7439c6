"""Soak: the server under steady mixed traffic for a bounded time, its
resident memory and open file descriptors sampled and judged flat.

    .venv/bin/python -m bench.soak --minutes 10

The server is ``presence-server serve`` (every role, the embedded engine,
JSON logs at ``info``: as a one-machine deployment runs) in its own process;
a local instruction server (bench/_baselines.py ``instructions``) answers
its voice URL; this process generates the load. For the whole run, at the
rates of the options:

* ``--sessions`` registered sessions (identities ``callee-K``, voice
  capability), each subscribed to ``--watch`` others, kept alive with pings;
* churn: sessions leave and come back (half say ``bye``, half drop the TCP
  connection, which leaves a lingering session for the grace period), and
  subscribe again;
* presence changes (status and text) and subscribe/unsubscribe requests;
* calls: a carrier's inbound call (``POST /v1/Ingress/outbox/Voice``) whose
  instructions dial ``callee-K``; the callee accepts and hangs up after a
  second or two, or rejects (busy);
* messages (``POST Messages.json``): half SMS through the ``outbox``
  provider, half in-app to ``client:callee-K`` (acked by the session);
* REST presence queries.

Every ``--interval`` seconds the server's VmRSS (``/proc/PID/status``) and
its open file descriptors (entries of ``/proc/PID/fd``) are sampled.

Flat, the rule (per metric): after the warm-up (the first ``--warmup``
seconds, default a fifth of the run), with *baseline* the first sample after
it,

1. the trend: the slope of the least-squares line through the samples of
   the run's second half, as growth per ten minutes, is at most
   ``max(2 % of baseline, A)``, and
2. the last sample is within ``max(10 % of baseline, B)`` of the baseline,

with A = 1 MiB, B = 4 MiB for memory and A = B = 10 descriptors (the
sessions being opened and closed at the moment of a sample, and the
keep-alive pool towards the instruction server, which grows in steps with
the concurrency it has seen, move the count by a few). A leak of one
descriptor per churned session (3,000 in ten minutes), or of a kilobyte per
call or message, fails the trend rule; the second rule catches a step that
the trend of the second half alone would miss.

Before the measured run, the load generator places ``--fill-calls`` calls
and sends ``--fill-messages`` messages quickly, so that the server's bounded
stores are at their bounds, as in any server that has run for a while: the
embedded engine's call records (in memory, at most 10,000) and the page
caches of its SQLite files (2 MiB each, filling as the message database and
the outbox grow). Their filling is not a leak, but at this load it takes
10 to 17 minutes and would look like one.

The plot goes to docs/images/soak.png and the figures to the ``soak``
section of docs/reliability.md (``--no-write``: neither). Not part of
``make bench``: it runs for ten minutes, more than the other scenarios
together.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable

import aiohttp

from bench import _common as c
from bench._wsload import Pinger, WSConn, connect
# The server set-up of the signaling scenario: one number whose voice URL is the
# instruction server, the outbox provider with ingress credentials.
from bench.signaling import INGRESS_PASSWORD, INGRESS_USER, NUMBER, SECTIONS, account_tables

NAME = "soak"
RELIABILITY = c.ROOT / "docs" / "reliability.md"
IMAGE = c.IMAGES / "soak.png"
STATUSES = ("available", "away", "dnd", "available")
FILL_MESSAGES = 8000

# The flatness rule (module docstring): (relative, absolute floor) for the
# fitted growth over the second half, and for the last sample against the baseline.
RULES = {
    "rss": {"trend": (0.02, 1024), "last": (0.10, 4 * 1024)},  # KiB
    "fds": {"trend": (0.02, 10), "last": (0.10, 10)},
}
TREND_SPAN = 600.0  # the trend is judged as growth per ten minutes


# -- the load ---------------------------------------------------------------------------


@dataclass
class Counts:
    ops: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)

    def op(self, name: str, n: int = 1) -> None:
        self.ops[name] = self.ops.get(name, 0) + n

    def error(self, name: str) -> None:
        self.errors[name] = self.errors.get(name, 0) + 1


class Load:
    """The load generator: the sessions, and one loop per kind of traffic."""

    def __init__(self, args: argparse.Namespace, port: int, account: c.BenchAccount) -> None:
        self.args = args
        self.port = port
        self.account = account
        self.identities = [f"callee-{k}" for k in range(args.sessions)]
        self.tokens = {i: account.token(i, voice=True) for i in self.identities}
        self.conns: dict[str, WSConn] = {}
        self.counts = Counts()
        self.pinger = Pinger([], interval=15.0)
        self.tasks: list[asyncio.Task[Any]] = []
        self.inflight: set[asyncio.Task[Any]] = set()
        self.http: aiohttp.ClientSession | None = None
        self.call_seq = 0
        self.stopping = False
        self.rng = random.Random(8)

    # -- sessions -----------------------------------------------------------------

    def on_message(self, conn: WSConn, msg: dict[str, Any], arrived: float) -> None:
        kind = msg.get("type")
        if kind == "invite":
            self.counts.op("invites")
            call = msg["call"]
            if self.rng.random() < 0.5:
                conn.send_json({"type": "accept", "call": call})
                hold = 1.0 + self.rng.random()
                asyncio.get_running_loop().call_later(hold, lambda: conn.send_json({"type": "hangup", "call": call}))
                self.counts.op("calls answered")
            else:
                conn.send_json({"type": "reject", "call": call, "reason": "busy"})
                self.counts.op("calls rejected")
        elif kind == "message":
            conn.send_json({"type": "ack", "sid": msg["sid"]})
            self.counts.op("in-app messages acked")
        elif kind == "presence_update":
            self.counts.op("presence updates received")
        elif kind == "error":
            self.counts.error(f"wire error {msg.get('code')}")

    async def open_session(self, identity: str) -> None:
        """Connect, register, subscribe; on failure try again (the pool of
        sessions must stay whole for the figures to mean steady load)."""
        while not self.stopping:
            conn: WSConn | None = None
            try:
                conn = await connect("127.0.0.1", self.port, on_message=self.on_message, timeout=30)
                conn.tag = identity
                await conn.request({"type": "register", "token": self.tokens[identity], "capabilities": ["voice"]}, "registered")
                watch = self.rng.sample(self.identities, min(self.args.watch, len(self.identities)))
                await conn.request({"type": "subscribe", "identities": watch}, "subscribed")
                break
            except (OSError, ConnectionError, RuntimeError, asyncio.TimeoutError) as exc:
                self.counts.error(f"session {type(exc).__name__}")
                if conn is not None:
                    conn.abort()
                await asyncio.sleep(2.0)
        else:
            return
        if identity in self.conns:  # a churn of the same identity got there first
            conn.close()
            return
        self.conns[identity] = conn
        self.pinger.conns.append(conn)
        self.counts.op("sessions opened")

    def drop_session(self, identity: str, polite: bool) -> None:
        conn = self.conns.pop(identity, None)
        if conn is None:
            return
        if conn in self.pinger.conns:
            self.pinger.conns.remove(conn)
        if polite:
            conn.send_json({"type": "bye"})
            conn.close()
        else:
            conn.abort()  # a dropped connection: the session lingers for the grace period
        self.counts.op("sessions closed")

    # -- loops ----------------------------------------------------------------------

    async def every(self, rate: float, action: Any) -> None:
        """Call ``action()`` ``rate`` times a second (open loop)."""
        if rate <= 0:
            return
        loop = asyncio.get_running_loop()
        t0, i = loop.time(), 0
        while True:
            i += 1
            delay = t0 + i / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if len(self.inflight) > 500:  # the server has stalled: do not pile on without bound
                self.counts.error("load generator backlog")
                continue
            task = loop.create_task(action())
            self.inflight.add(task)
            task.add_done_callback(self.inflight.discard)

    async def churn(self) -> None:
        identity = self.rng.choice(list(self.conns)) if self.conns else self.rng.choice(self.identities)
        self.drop_session(identity, polite=self.rng.random() < 0.5)
        await asyncio.sleep(0.2)
        await self.open_session(identity)

    async def presence(self) -> None:
        conn = self._random_conn()
        if conn is not None:
            conn.send_json({"type": "presence", "status": self.rng.choice(STATUSES), "text": f"soak {self.rng.randrange(1000)}"})
            self.counts.op("presence changes")

    async def subscription(self) -> None:
        conn = self._random_conn()
        if conn is not None:
            kind = "subscribe" if self.rng.random() < 0.5 else "unsubscribe"
            conn.send_json({"type": kind, "identities": [self.rng.choice(self.identities)]})
            self.counts.op(f"{kind}s")

    async def call(self) -> None:
        self.call_seq += 1
        # The instruction server dials callee-(digits of From mod --sessions).
        body = {"From": f"+1666{self.call_seq:07d}", "To": NUMBER}
        await self._post("/v1/Ingress/outbox/Voice", body, (INGRESS_USER, INGRESS_PASSWORD), "calls placed", (200, 201))

    async def message(self) -> None:
        if self.rng.random() < 0.5:
            to = f"+1555{self.rng.randrange(10_000_000):07d}"
            name = "SMS accepted"
        else:
            to = f"client:{self.rng.choice(self.identities)}"
            name = "in-app accepted"
        body = {"To": to, "From": NUMBER, "Body": f"soak message {self.rng.randrange(10**6)}"}
        path = f"/2010-04-01/Accounts/{self.account.sid}/Messages.json"
        await self._post(path, body, (self.account.sid, self.account.auth_token), name, (201,))

    async def fill_stores(self) -> None:
        """Before the measured run, place --fill-calls calls and send
        --fill-messages messages, each at --fill-rate, so that the server's
        bounded stores are at their bounds, as in any server that has run for a
        while: the embedded engine's call records (kept in memory, at most
        10,000: engines/memory/calls.py) and the page caches of its SQLite files
        (2 MiB each: presence_server/sqlite_files.py), which fill as the message
        database and the outbox grow. Otherwise their filling (some 17 minutes
        for the call records at 5 calls a second, 10 or more for the page
        caches) would be the growth the run measures."""
        a = self.args
        jobs = [(n, what, action) for n, what, action in ((a.fill_calls, "calls", self.call), (a.fill_messages, "messages", self.message)) if n > 0]
        if not jobs:
            return
        print("filling the stores: " + ", ".join(f"{n} {what}" for n, what, _ in jobs) + f", each at {a.fill_rate:g}/s", flush=True)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await asyncio.gather(*(self._paced(n, a.fill_rate, action) for n, _, action in jobs))
        await asyncio.sleep(3)  # the last answered calls hang up
        print(f"  done in {loop.time() - t0:.0f} s", flush=True)

    @staticmethod
    async def _paced(n: int, rate: float, action: Callable[[], Awaitable[None]]) -> None:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        pending: set[asyncio.Task[Any]] = set()
        for i in range(n):
            delay = t0 + i / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            while len(pending) >= 200:  # the server is behind: wait rather than pile on
                await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            task = loop.create_task(action())
            pending.add(task)
            task.add_done_callback(pending.discard)
        if pending:
            await asyncio.wait(pending)

    async def query(self) -> None:
        assert self.http is not None
        identity = self.rng.choice(self.identities)
        url = f"http://127.0.0.1:{self.port}/v1/Accounts/{self.account.sid}/Presence/{identity}"
        try:
            async with self.http.get(url, headers={"Authorization": self.account.basic()}) as resp:
                await resp.read()
                self.counts.op("presence queries") if resp.status == 200 else self.counts.error(f"query {resp.status}")
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            self.counts.error(f"query {type(exc).__name__}")

    async def _post(self, path: str, form: dict[str, str], auth: tuple[str, str], name: str, ok: tuple[int, ...]) -> None:
        assert self.http is not None
        import base64

        header = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        try:
            async with self.http.post(f"http://127.0.0.1:{self.port}{path}", data=form, headers={"Authorization": header}) as resp:
                await resp.read()
                self.counts.op(name) if resp.status in ok else self.counts.error(f"{name.split()[0]} {resp.status}")
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            self.counts.error(f"{name.split()[0]} {type(exc).__name__}")

    def _random_conn(self) -> WSConn | None:
        if not self.conns:
            return None
        return self.conns[self.rng.choice(list(self.conns))]

    # -- lifetime -------------------------------------------------------------------

    async def start(self) -> None:
        self.http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=50), timeout=aiohttp.ClientTimeout(total=30)
        )
        sem = asyncio.Semaphore(50)

        async def opened(identity: str) -> None:
            async with sem:
                await self.open_session(identity)

        await asyncio.gather(*(opened(i) for i in self.identities))
        self.pinger.start()
        await self.fill_stores()
        a = self.args
        for rate, action in (
            (a.churn, self.churn), (a.presence, self.presence), (a.subscriptions, self.subscription),
            (a.calls, self.call), (a.messages, self.message), (a.queries, self.query),
        ):
            self.tasks.append(asyncio.get_running_loop().create_task(self.every(rate, action)))

    async def stop(self) -> None:
        self.stopping = True
        for task in self.tasks:
            task.cancel()
        self.pinger.stop()
        await asyncio.sleep(3)  # calls being held hang up
        for task in list(self.inflight):
            task.cancel()
        for identity in list(self.conns):
            self.drop_session(identity, polite=True)
        if self.http is not None:
            await self.http.close()


# -- samples and the verdict ------------------------------------------------------------------


@dataclass
class Sample:
    t: float  # seconds since the load started
    rss_kib: int
    fds: int
    sessions: int  # sessions the load generator holds at that moment


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def fit_slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope (per second)."""
    n = len(points)
    if n < 2:
        return 0.0
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / sxx if sxx else 0.0


@dataclass
class Verdict:
    metric: str
    baseline: float
    last: float
    trend: float  # second-half least-squares slope, as growth per TREND_SPAN
    trend_limit: float
    last_limit: float

    @property
    def passed(self) -> bool:
        return self.trend <= self.trend_limit and abs(self.last - self.baseline) <= self.last_limit


def judge(samples: list[Sample], metric: str, warmup: float, duration: float) -> Verdict:
    values = [(s.t, float(s.rss_kib if metric == "rss" else s.fds)) for s in samples]
    after = [v for v in values if v[0] >= warmup] or values
    baseline = after[0][1]
    half = [v for v in values if v[0] >= duration / 2] or values
    (trend_rel, trend_abs), (last_rel, last_abs) = RULES[metric]["trend"], RULES[metric]["last"]
    return Verdict(
        metric, baseline, values[-1][1], fit_slope(half) * TREND_SPAN, max(trend_rel * baseline, trend_abs),
        max(last_rel * baseline, last_abs),
    )


# -- the run ------------------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> int:
    env, nofile = c.start_run()
    load_before = c.load_average()
    duration = args.minutes * 60
    warmup = args.warmup if args.warmup is not None else duration / 5
    print(f"soak: {args.minutes:g} min, warm-up {warmup:.0f} s, sample every {args.interval:g} s; load average {load_before}", flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="bench-soak-"))
    account = c.BenchAccount()
    ins = c.helper_server(workdir, "instructions", str(args.sessions))
    await ins.start()
    snapdir = workdir / "tracemalloc"
    wrapper = ["-X", "tracemalloc=4", "-m", "bench._memserver", str(snapdir)] if args.trace_memory else None
    server = c.product_server(workdir, account, sections=SECTIONS, account_tables=account_tables(f"{ins.url}/voice"), wrapper=wrapper)
    samples: list[Sample] = []
    ok = False
    try:
        await server.start(timeout=600 if args.trace_memory else 60)  # imports under tracemalloc are slow
        pid = c.pid_of(server)
        load = Load(args, server.port, account)
        cpu0 = c.cpu_seconds(pid)
        await load.start()
        filled = dict(load.counts.ops)  # what the sessions' opening and the fill did: not the measured run's
        print(f"{len(load.conns)} sessions registered; traffic for {duration:.0f} s", flush=True)
        t0 = time.monotonic()
        while True:
            t = time.monotonic() - t0
            samples.append(Sample(t, c.rss_kib(pid), fd_count(pid), len(load.conns)))
            s = samples[-1]
            print(f"  t={t:6.0f}s  rss {s.rss_kib / 1024:7.1f} MiB  fds {s.fds:5d}  sessions {s.sessions}"
                  f"  ops {sum(load.counts.ops.values())}  errors {sum(load.counts.errors.values())}", flush=True)
            if args.trace_memory and (len(samples) == 1 or (t >= warmup and not list(snapdir.glob("1.snap*")))):
                os.kill(pid, signal.SIGUSR1)  # snapshots: at the start, after the warm-up, at the end
            if t >= duration:
                break
            await asyncio.sleep(min(args.interval, max(0.0, duration - t)))
        cpu = c.cpu_seconds(pid) - cpu0
        if args.trace_memory:
            os.kill(pid, signal.SIGUSR1)
            await asyncio.sleep(5)
            print_growth(snapdir)
        measured = {k: n - filled.get(k, 0) for k, n in load.counts.ops.items() if n - filled.get(k, 0)}
        await load.stop()
        load.counts.ops = measured  # the figures are the measured run's (not the fill's, nor the closing's)
        load_after = c.load_average()
        alive = server.proc is not None and server.proc.poll() is None
        verdicts = [judge(samples, "rss", warmup, duration), judge(samples, "fds", warmup, duration)]
        print()
        for v in verdicts:
            print(f"{v.metric}: {'PASS' if v.passed else 'FAIL'}  baseline {fmt(v.metric, v.baseline)}, last {fmt(v.metric, v.last)}"
                  f" (limit ±{fmt(v.metric, v.last_limit)}); second-half trend {fmt(v.metric, v.trend)} per 10 min"
                  f" (limit {fmt(v.metric, v.trend_limit)})")
        print(f"server alive at the end: {alive}; server CPU {cpu:.0f} s over {duration:.0f} s; load average {load_before} → {load_after}")
        print("operations: " + ", ".join(f"{k} {n}" for k, n in sorted(load.counts.ops.items())))
        print("errors: " + (", ".join(f"{k} {n}" for k, n in sorted(load.counts.errors.items())) or "none"))
        if not args.no_write:
            image = draw(samples, verdicts, warmup, duration)
            write_section(render(args, env, samples, verdicts, load.counts, warmup, duration, cpu, load_before, load_after, alive, image))
            print(f"\nwrote the {NAME} section of {RELIABILITY.relative_to(c.ROOT)}" + (f" and {IMAGE.relative_to(c.ROOT)}" if image else ""))
        ok = alive and all(v.passed for v in verdicts)
        return 0 if ok else 1
    finally:
        server.stop()
        ins.stop()
        if ok and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"(server logs kept in {workdir})", file=sys.stderr)


def print_growth(snapdir: Path, top: int = 15) -> None:
    """--trace-memory: the lines whose allocations grew most between the
    snapshot after the warm-up and the last one (where a leak lives)."""
    import tracemalloc

    snaps = sorted(snapdir.glob("*.snap"), key=lambda p: int(p.stem.split(".")[0]))
    if len(snaps) < 2:
        print(f"(tracemalloc: only {len(snaps)} snapshot(s) written)")
        return
    first, last = tracemalloc.Snapshot.load(str(snaps[1 if len(snaps) > 2 else 0])), tracemalloc.Snapshot.load(str(snaps[-1]))
    noise = [tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, "<frozen importlib._bootstrap*>")]
    stats = last.filter_traces(noise).compare_to(first.filter_traces(noise), "traceback")
    print(f"\ntracemalloc: growth from {snaps[1 if len(snaps) > 2 else 0].name} to {snaps[-1].name}, largest first")
    for stat in stats[:top]:
        print(f"  {stat.size_diff / 1024:+9.1f} KiB  {stat.count_diff:+7d} blocks")
        for line in stat.traceback.format()[-6:]:
            print(f"      {line}")


def fmt(metric: str, value: float) -> str:
    return f"{value / 1024:.1f} MiB" if metric == "rss" else f"{value:.1f}"


def draw(samples: list[Sample], verdicts: list[Verdict], warmup: float, duration: float) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib is not installed: no plot; make bench installs it)", file=sys.stderr)
        return None
    fig, axes = plt.subplots(2, 1, figsize=(8, 5.5), dpi=100, sharex=True)
    try:
        minutes = [s.t / 60 for s in samples]
        for ax, v, values, label in (
            (axes[0], verdicts[0], [s.rss_kib / 1024 for s in samples], "resident memory (MiB)"),
            (axes[1], verdicts[1], [float(s.fds) for s in samples], "open file descriptors"),
        ):
            scale = 1024 if v.metric == "rss" else 1
            ax.plot(minutes, values, marker=".", linewidth=1)
            ax.axvspan(0, warmup / 60, color="grey", alpha=0.15, label="warm-up")
            base = v.baseline / scale
            ax.axhline(base, color="green", linestyle=":", linewidth=1, label="baseline (first sample after warm-up)")
            ax.axhspan(base - v.last_limit / scale, base + v.last_limit / scale, color="green", alpha=0.06)
            ax.set_ylabel(label)
            ax.set_ylim(bottom=0, top=max(values) * 1.25)
            ax.set_title(f"{label}: {'PASS' if v.passed else 'FAIL'}", fontsize="small", loc="left")
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize="x-small", loc="lower right")
        axes[1].set_xlabel("minutes")
        fig.suptitle(f"Soak: {duration / 60:g} minutes of steady mixed traffic", fontsize="medium")
        fig.tight_layout()
        IMAGE.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(IMAGE)
    finally:
        plt.close(fig)
    return "images/soak.png"


def render(
    args: argparse.Namespace, env: dict[str, str], samples: list[Sample], verdicts: list[Verdict], counts: Counts,
    warmup: float, duration: float, cpu: float, load_before: str, load_after: str, alive: bool, image: str | None,
) -> str:
    rows = "\n".join(
        f"| {'resident memory' if v.metric == 'rss' else 'open file descriptors'} | {fmt(v.metric, v.baseline)} | {fmt(v.metric, v.last)}"
        f" | ±{fmt(v.metric, v.last_limit)} | {fmt(v.metric, v.trend)} | {fmt(v.metric, v.trend_limit)}"
        f" | **{'PASS' if v.passed else 'FAIL'}** |"
        for v in verdicts
    )
    ops = "\n".join(f"| {name} | {n} | {n / duration:.1f}/s |" for name, n in sorted(counts.ops.items()))
    errors = ", ".join(f"{k}: {n}" for k, n in sorted(counts.errors.items())) or "none"
    peak_rss = max(s.rss_kib for s in samples) / 1024
    a = args
    return f"""## 6. Soak

`.venv/bin/python -m bench.soak --minutes {a.minutes:g}` ({c.utc_now()}; not part of `make test`, nor of
`make bench`, whose loop it would lengthen by ten minutes). One `presence-server serve` process
(every role, the embedded engine, JSON logs at `info`), a local instruction server, and this
load generator, each its own process. For {duration / 60:g} minutes: {a.sessions} registered sessions,
each watching {a.watch} identities; per second, {a.churn:g} sessions leave and come back (half with
`bye`, half dropping the connection, which lingers for the grace period), {a.presence:g} presence
changes, {a.subscriptions:g} subscribe or unsubscribe requests, {a.calls:g} inbound calls (the instruction
server dials a session, which answers and hangs up after 1–2 s, or rejects busy), {a.messages:g}
messages (half SMS through the `outbox` provider, half in-app and acked) and {a.queries:g} REST presence
queries. The server's VmRSS and open descriptors (`/proc/PID/`) every {a.interval:g} s.

Machine: {env["CPU"]}, {env["OS"]}, {env["Python"]}; shared with other work (load average
{load_before} at the start, {load_after} at the end). The server used {cpu:.0f} s of CPU over the
{duration:.0f} s.

**Flat**, per metric, after a {warmup:.0f} s warm-up (baseline: the first sample after it): the
slope of the least-squares line through the second half of the run, as growth per ten minutes, is
at most max(2 % of baseline, 1 MiB or 10 descriptors), and the last sample is within max(10 % of
baseline, 4 MiB or 10 descriptors) of the baseline. Before the measured run, {a.fill_calls} calls and
{a.fill_messages} messages, each at {a.fill_rate:g}/s, filled the server's bounded stores to their bounds, as
in a server that has run for a while: the embedded engine's call records (10,000, in memory) and
the page caches of its two SQLite files (2 MiB each). (The rule and why: `python -m bench.soak --help`.)

| metric | baseline | last | allowed | second-half trend per 10 min | allowed | verdict |
|---|---|---|---|---|---|---|
{rows}

Peak resident memory {peak_rss:.1f} MiB; the server was {"alive" if alive else "**not alive**"} at the end.

{f"![Resident memory and open file descriptors over the soak]({image})" if image else "(no plot: matplotlib is not installed)"}

| operation during the measured run (load generator's count) | total | rate |
|---|---|---|
{ops}

Errors seen by the load generator: {errors}.

**What the soak found (issue 8).** The first ten-minute runs failed on memory: resident memory
climbed by about 2 MiB a minute while descriptors stayed flat. Live Python objects, counted after
a forced full collection every 30 s, did not grow, and with those forced collections the memory
was flat: the growth was garbage that only the cyclic collector could free. Listing what it freed
(`gc.DEBUG_SAVEALL`) showed one cycle per ended session, about 6,000 objects every 30 s: aiohttp
keeps the exception that closing a WebSocket over an already dead transport meets
(`ws.exception()`), whose traceback holds `close()`'s frame, whose `self` is the response; so every
dropped connection's transport, buffers, request and parser waited for a full collection, which
the server's GC settings make rare. The gateway now drops those tracebacks when a session ends
(`_drop_tracebacks` in [presence_server/gateway/connection.py](../presence_server/gateway/connection.py)),
and the collector then frees nothing at all during a run (reference counting frees each
connection at once). Regression test:
[tests/integration/test_gateway_connection_teardown.py](../tests/integration/test_gateway_connection_teardown.py)
(with the collector disabled, a connection ended by an abort, a close handshake or `bye` is freed).
The same runs found that a client resetting its connection during the upgrade made the server
log an error with a traceback (any client could fill the error log); fixed in the gateway,
regression test [tests/integration/test_gateway_upgrade_reset.py](../tests/integration/test_gateway_upgrade_reset.py).

With that fixed, ten-minute runs still failed the trend rule by a hair (93 → 95.2 MiB; 2.0 MiB per
ten minutes against 1.9 allowed), growth that slowed through the run and stopped after about ten
minutes (a 20-minute run passed). It was outside Python's heap: `/proc/PID/smaps` showed the
malloc arenas of the SQLite worker threads growing, and a diagnostic run that read
`sqlite3_memory_used()` in the server every 10 s (through ctypes, not kept) saw SQLite's own
memory grow from 0.5 to 2.9 MiB at about 5 kB a second, as much as the RSS, and level off: the
page caches of the message database and the outbox filling as the files grew. They are bounded
(2 MiB per file, now stated in
[presence_server/sqlite_files.py](../presence_server/sqlite_files.py) and counted in
[operations.md](operations.md#sizing)), so the soak fills them before it measures, as it fills the
call records.
"""


def write_section(body: str, path: Path = RELIABILITY) -> None:
    """Replace only the text between this section's markers."""
    start, end = f"<!-- section: {NAME} -->", f"<!-- end: {NAME} -->"
    text = path.read_text()
    i, j = text.find(start), text.find(end)
    if i == -1 or j < i:
        raise RuntimeError(f"{path} has no {start} ... {end} markers")
    path.write_text(text[: i + len(start)] + "\n" + body.strip() + "\n" + text[j:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the run (default 10)")
    parser.add_argument("--warmup", type=float, default=None, help="seconds left out of the verdict (default: a fifth of the run)")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between samples (default 5)")
    parser.add_argument("--sessions", type=int, default=300, help="registered sessions held (default 300)")
    parser.add_argument("--watch", type=int, default=5, help="identities each session subscribes to (default 5)")
    parser.add_argument("--churn", type=float, default=5.0, help="sessions that leave and return, per second (default 5)")
    parser.add_argument("--presence", type=float, default=20.0, help="presence changes per second (default 20)")
    parser.add_argument("--subscriptions", type=float, default=5.0, help="subscribe/unsubscribe requests per second (default 5)")
    parser.add_argument("--calls", type=float, default=5.0, help="inbound calls per second (default 5)")
    parser.add_argument("--messages", type=float, default=5.0, help="messages per second (default 5)")
    parser.add_argument("--queries", type=float, default=5.0, help="REST presence queries per second (default 5)")
    parser.add_argument("--fill-calls", type=int, default=6000,
                        help="calls placed before the run to fill the call-record store to its bound (default 6000: two records each)")
    parser.add_argument("--fill-messages", type=int, default=FILL_MESSAGES,
                        help=f"messages sent before the run to fill the SQLite page caches to their bound (default {FILL_MESSAGES})")
    parser.add_argument("--fill-rate", type=float, default=50.0, help="calls, and messages, per second while filling (default 50)")
    parser.add_argument("--no-write", action="store_true", help="print only: leave docs/reliability.md and the plot alone")
    parser.add_argument("--keep", action="store_true", help="keep the server's log and data directory")
    parser.add_argument(
        "--trace-memory", action="store_true",
        help="run the server under tracemalloc and print the allocations that grew after the warm-up (slow: a diagnosis, not a figure)",
    )
    args = parser.parse_args(argv)
    if args.minutes <= 0 or args.interval <= 0 or args.sessions < 2:
        parser.error("--minutes and --interval must be positive, --sessions at least 2")
    return int(c.uvloop_run(run(args)))


if __name__ == "__main__":
    raise SystemExit(main())
