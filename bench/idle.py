"""Idle capacity: resident memory per registered idle session.

    .venv/bin/python -m bench.idle --n 5000

The server runs as its own process (``presence-server serve --config``, the
embedded engine, logging ``info``); this process is only the load generator
(bench/_wsload.py: a raw RFC 6455 client, no SDK). It opens N WebSocket
sessions, 100 at a time, each sending ``register`` with its own token (its own
identity) and waiting for ``registered``; then the sessions stay idle (one
shared timer sends each a ``ping`` every 20 s, as a client does). The server's
VmRSS (/proc/PID/status) is read before the first session and at 10, 25, 50,
75 and 100 % of N; the memory per session is the slope of RSS against sessions
(least squares, so the process's one-time costs do not count), and also the
plain (RSS at N - RSS before) / N.

Baselines, in the same run and the same way: a bare aiohttp WebSocket server
and a bare ``websockets`` server (bench/_baselines.py), each answering the
``register`` frame with a fixed ``registered`` and holding N idle connections.

The issue's target is at least 20,000 sessions; the default N (5,000) keeps
the run near a minute on a 2-core machine. ``--n 20000`` runs the target size.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench import _common as c
from bench._wsload import Opened, Pinger, close_all, open_many
from tests.helpers.process import ServerProcess

NAME = "idle"
TARGET_KB = 20.0
MARKS = (0.10, 0.25, 0.50, 0.75, 1.0)


@dataclass
class IdleRun:
    label: str
    rss_start: int  # KiB, before the first session
    points: list[tuple[int, int]] = field(default_factory=list)  # (sessions, RSS KiB)
    rss_held: int = 0  # KiB, after holding N sessions for --hold seconds
    opened: Opened | None = None
    dropped: int = 0  # sessions the server closed during the hold
    cpu_per_session: float = 0.0  # server CPU seconds per session opened

    @property
    def n(self) -> int:
        return self.points[-1][0] if self.points else 0

    @property
    def slope_kib(self) -> float:
        """KiB per session: least squares over the points after the first mark."""
        pts = self.points
        if len(pts) < 2:
            return float("nan")
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
        den = sum((x - mx) ** 2 for x in xs)
        return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den if den else float("nan")

    @property
    def total_per_session_kib(self) -> float:
        return (self.rss_held - self.rss_start) / self.n if self.n else float("nan")


def kb(kib: float) -> float:
    return kib * 1.024  # the target says kB: 1000 bytes


async def hold(server: ServerProcess, label: str, n: int, frame, hold_s: float, concurrency: int) -> IdleRun:  # type: ignore[no-untyped-def]
    await server.start()
    pid = c.pid_of(server)
    await asyncio.sleep(1.0)
    run = IdleRun(label, c.rss_kib(pid))
    run.points.append((0, run.rss_start))
    cpu0 = c.cpu_seconds(pid)
    opened = Opened()
    pinger = Pinger(opened.conns)
    pinger.start()
    dropped_before = 0
    try:
        done = 0
        for mark in MARKS:
            upto = int(n * mark)
            await open_many("127.0.0.1", server.port, upto - done, frame, concurrency=concurrency, into=opened, first=done)
            done = upto
            await asyncio.sleep(0.5)
            run.points.append((len(opened.conns), c.rss_kib(pid)))
            print(f"  {label:10} {len(opened.conns):6} sessions  RSS {run.points[-1][1] / 1024:7.1f} MiB", flush=True)
        run.cpu_per_session = (c.cpu_seconds(pid) - cpu0) / max(1, len(opened.conns))
        dropped_before = sum(1 for conn in opened.conns if conn.closed.done())
        await asyncio.sleep(hold_s)
        run.rss_held = c.rss_kib(pid)
        run.dropped = sum(1 for conn in opened.conns if conn.closed.done())
        if run.dropped > dropped_before:
            print(f"  {label}: {run.dropped} sessions closed by the server while idle", file=sys.stderr)
        run.opened = opened
        return run
    finally:
        pinger.stop()
        await close_all(opened.conns)
        server.stop()


def render(env: dict[str, str], args: argparse.Namespace, runs: list[IdleRun]) -> str:
    prod, base = runs[0], runs[1]
    per = kb(prod.slope_kib)
    met = per <= TARGET_KB
    rows = []
    for r in runs:
        o = r.opened
        assert o is not None
        rows.append(
            f"| {r.label} | {r.n:,} | {r.rss_start / 1024:.1f} MiB | {r.rss_held / 1024:.1f} MiB | **{kb(r.slope_kib):.1f} kB** |"
            f" {kb(r.total_per_session_kib):.1f} kB | {fmt_ratio_x(r.slope_kib / base.slope_kib)} |"
            f" {o.rate:,.0f}/s | {r.cpu_per_session * 1e6:,.0f} µs | {r.dropped} |"
        )
    errors = "; ".join(f"{r.label}: {r.opened.errors}" for r in runs if r.opened and r.opened.errors) or "none"
    image = c.plot(args.section, lambda ax: draw(ax, runs))
    img = f"\n![RSS against sessions]({image})\n" if image else ""
    verdict = "meets" if met else "does not meet"
    title = "Idle capacity: memory per registered session" + (f" (N = {args.n:,})" if args.section != NAME else "")
    command = f"python -m bench.idle --n {args.n}" + (f" --section {args.section}" if args.section != NAME else "")
    return c.section(args.section, f"""
## {title}

`{command}` ({c.utc_now()}; load average before the run
{args.load}). {IDLE_METHOD}

{c.env_table(env)}

| server | sessions | RSS at start | RSS holding N ({args.hold:g} s idle) | **per session** (slope) | (RSS at N - at start) / N | ratio to bare aiohttp | sessions opened/s | server CPU per session | closed by the server while idle |
|---|---|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}
{img}
Failures while opening: {errors}.

The product holds a registered idle session in **{per:.1f} kB**, which {verdict} the
target of at most {TARGET_KB:g} kB per idle registered session
({fmt_ratio_x(prod.slope_kib / base.slope_kib)} the bare aiohttp server's
{kb(base.slope_kib):.1f} kB per connection).
{c.before_note(args)}
{c.target_line(args.section, f"idle registered session ≤ {TARGET_KB:g} kB RSS", f"{per:.1f} kB per session at N = {prod.n:,} (bare aiohttp: {kb(base.slope_kib):.1f} kB)", met)}
""")


IDLE_METHOD = """One server process at a time (the product: embedded
engine, logging `info`, JSON to a file; then each baseline), one
load-generator process (bench/_wsload.py, a raw RFC 6455 client on uvloop):
N WebSocket sessions, opened 100 at a time, each sending `register` with its
own token and identity and waiting for `registered`, then idle (one shared
timer sends each a `ping` every 20 s). VmRSS is read before the first session
and at 10, 25, 50, 75 and 100 % of N; **per session** is the least-squares
slope of RSS against sessions, so the process's one-time costs do not count.
The baselines are a bare aiohttp WebSocket server and a bare `websockets`
server (bench/_baselines.py) answering `register` with a fixed `registered`:
no token, no presence, nothing stored. 1 kB = 1000 bytes."""


def fmt_ratio_x(r: float) -> str:
    return "n/a" if r != r else f"{r:.2f}×"


def draw(ax, runs: list[IdleRun]) -> None:  # type: ignore[no-untyped-def]
    for r in runs:
        ax.plot([p[0] for p in r.points], [p[1] / 1024 for p in r.points], marker="o", label=f"{r.label} ({kb(r.slope_kib):.1f} kB/session)")
    ax.set_xlabel("idle sessions")
    ax.set_ylabel("server RSS (MiB)")
    ax.set_title("Idle capacity: resident memory against sessions")
    ax.grid(alpha=0.3)
    ax.legend()


async def main_async(args: argparse.Namespace) -> int:
    env, nofile = c.start_run("websockets", nofile=max(65536, 2 * args.n + 1000))
    if nofile[0] < args.n + 200:
        print(f"the open-file limit ({nofile[0]}, which this process cannot raise) leaves no room for N = {args.n}"
              f" sessions: the largest N here is about {nofile[0] - 200}", file=sys.stderr)
        return 2
    args.load = c.load_average()
    print(f"{args.n} idle sessions per server, hold {args.hold:g} s\n", flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="bench-idle-"))
    account = c.BenchAccount()
    t = time.perf_counter()
    tokens = [account.token(f"idle-{i}", subscribe=False) for i in range(args.n)]
    print(f"minted {args.n} tokens in {time.perf_counter() - t:.1f} s", flush=True)

    def product_frame(i: int) -> dict[str, object]:
        return {"type": "register", "id": i, "token": tokens[i], "status": "available"}

    def bare_frame(i: int) -> dict[str, object]:
        return {"type": "register", "id": i, "identity": f"idle-{i}"}

    finished = False
    try:
        runs = []
        if args.profile:
            finished = True
            return await profile(workdir, account, args, product_frame)
        product = c.product_server(workdir, account, log_level=args.log_level)
        runs.append(await hold(product, "product", args.n, product_frame, args.hold, args.concurrency))
        runs.append(await hold(c.helper_server(workdir, "ws-aiohttp"), "aiohttp", args.n, bare_frame, args.hold, args.concurrency))
        runs.append(await hold(c.helper_server(workdir, "ws-websockets"), "websockets", args.n, bare_frame, args.hold, args.concurrency))
        if args.before:
            before = c.product_server(workdir, account, name="before", log_level=args.log_level, tree=args.before)
            runs.append(await hold(before, "product (before)", args.n, product_frame, args.hold, args.concurrency))
        print()
        base = runs[1]
        for r in runs:
            print(f"{r.label:10} {kb(r.slope_kib):7.1f} kB/session (slope)  {kb(r.total_per_session_kib):7.1f} kB/session (total/N)"
                  f"  ratio to bare aiohttp {r.slope_kib / base.slope_kib:.2f}  opened {r.opened.rate if r.opened else 0:,.0f}/s"
                  f"  errors {r.opened.errors if r.opened else {}}")
        print(f"target ≤ {TARGET_KB:g} kB per idle registered session: {'met' if kb(runs[0].slope_kib) <= TARGET_KB else 'NOT met'}")
        if not args.no_write:
            c.write_section(args.section, render(env, args, runs), env, after=f"{NAME}-profile" if args.section != NAME else None)
            print(f"\nwrote the {args.section} section of {c.DOC.relative_to(c.ROOT)}")
        finished = True
        return 0
    finally:
        if finished and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"(server logs kept in {workdir})", file=sys.stderr)


async def profile(workdir: Path, account: c.BenchAccount, args: argparse.Namespace, frame) -> int:  # type: ignore[no-untyped-def]
    """Where an idle session's memory is: the product under tracemalloc
    (bench/_memserver.py), a snapshot before and one after N sessions, the
    difference attributed to the product's own line that allocated it (the
    innermost presence_server/ or protocol/ frame) and to the allocating line
    itself. (py-spy samples CPU, which an idle session does not use.)"""
    import tracemalloc

    snaps = workdir / "snapshots"
    server = c.product_server(workdir, account, log_level=args.log_level,
                              wrapper=["-X", "tracemalloc=25", "-m", "bench._memserver", str(snaps)])
    await server.start()
    pid = c.pid_of(server)

    async def snapshot(i: int) -> tracemalloc.Snapshot:
        os.kill(pid, signal.SIGUSR1)
        for _ in range(600):
            if (snaps / f"{i}.snap").exists():
                return tracemalloc.Snapshot.load(str(snaps / f"{i}.snap"))
            await asyncio.sleep(0.1)
        raise RuntimeError("the server wrote no tracemalloc snapshot")

    opened = Opened()
    pinger = Pinger(opened.conns)
    pinger.start()
    try:
        await asyncio.sleep(1.0)
        before = await snapshot(0)
        rss0 = c.rss_kib(pid)
        await open_many("127.0.0.1", server.port, args.n, frame, concurrency=args.concurrency, into=opened)
        await asyncio.sleep(args.hold)
        after = await snapshot(1)
        rss1 = c.rss_kib(pid)
    finally:
        pinger.stop()
        await close_all(opened.conns)
        server.stop()
    n = len(opened.conns)
    diffs = after.compare_to(before, "traceback")
    by_product: dict[str, int] = {}
    by_line: dict[str, int] = {}
    for d in diffs:
        if d.size_diff <= 0:
            continue
        frames = list(d.traceback)  # most recent call last
        leaf = frames[-1]
        own = next((f for f in reversed(frames) if ("/presence_server/" in f.filename and not f.filename.endswith("/cli.py"))
                    or "/protocol/" in f.filename), None)
        key = f"{_rel(own.filename)}:{own.lineno}" if own else "(none: aiohttp and the event loop, below the product)"
        by_product[key] = by_product.get(key, 0) + d.size_diff
        leaf_key = f"{_rel(leaf.filename)}:{leaf.lineno}"
        by_line[leaf_key] = by_line.get(leaf_key, 0) + d.size_diff
    traced = sum(by_line.values())
    print(f"{n} sessions; RSS grew {kb((rss1 - rss0) / n):.1f} kB/session under tracemalloc;"
          f" Python allocations traced: {traced / n / 1000:.1f} kB/session")
    top_p = sorted(by_product.items(), key=lambda kv: -kv[1])[:12]
    top_l = sorted(by_line.items(), key=lambda kv: -kv[1])[:12]
    for k, v in top_p:
        print(f"  {v / n:8.0f} B/session  {k}")
    if args.no_write:
        return 0
    rows = ["| the product's line on the stack | bytes per session | | the allocating line | bytes per session |", "|---|---|---|---|---|"]
    for i in range(max(len(top_p), len(top_l))):
        a = top_p[i] if i < len(top_p) else ("", 0)
        b = top_l[i] if i < len(top_l) else ("", 0)
        rows.append(f"| `{a[0]}` | {a[1] / n:,.0f} | | `{b[0]}` | {b[1] / n:,.0f} |")
    body = f"""
#### Memory profile of the product (idle)

`python -m bench.idle --profile --n {args.n}` ({c.utc_now()}): the product under
tracemalloc (`python -X tracemalloc=25 -m bench._memserver`, the server
unchanged), a snapshot before and one after {n} idle registered sessions. Python
allocations traced: **{traced / n / 1000:.1f} kB per session** (RSS grew
{kb((rss1 - rss0) / n):.1f} kB per session under tracemalloc, which adds its own
bookkeeping; the rest of an untraced session's RSS is C-level memory: the
uvloop transport and its buffers, the aiohttp parser and reader objects' C
parts, malloc overhead). Left: the innermost product frame (presence_server/,
protocol/) on each allocation's stack; right: the line that allocated.

{chr(10).join(rows)}
"""
    c.write_section(f"{NAME}-profile", c.section(f"{NAME}-profile", body), c.environment(), after=NAME)
    print(f"\nwrote the {NAME}-profile section of {c.DOC.relative_to(c.ROOT)}")
    return 0


def _rel(path: str) -> str:
    for marker in ("/site-packages/", "/presence_server/", "/protocol/"):
        if marker in path:
            tail = path.split(marker, 1)[1]
            return tail if marker == "/site-packages/" else marker.strip("/") + "/" + tail
    return path.rsplit("/", 1)[-1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.idle", description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=5000, help="idle sessions per server (default 5000; the issue's target is ≥ 20000)")
    parser.add_argument("--hold", type=float, default=5.0, help="seconds to hold the N sessions idle before the last reading (default 5)")
    parser.add_argument("--concurrency", type=int, default=100, help="sessions being opened at once (default 100)")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"], help="the server's (default info)")
    parser.add_argument("--section", default=NAME, help="the docs/benchmarks.md section to write (default idle; e.g. idle-large for a run at the target size)")
    parser.add_argument("--profile", action="store_true", help="only profile the product's memory (tracemalloc); writes the profile subsection")
    parser.add_argument("--before", type=c.before_tree, metavar="PATH",
                        help="also hold the N sessions in the product run from this checkout (e.g. a git worktree of an"
                             " earlier commit), labelled 'product (before)': before/after figures from one run")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (server logs)")
    args = parser.parse_args(argv)
    if args.n < 10:
        parser.error("--n must be at least 10")
    return int(c.uvloop_run(main_async(args)))


if __name__ == "__main__":
    raise SystemExit(main())
