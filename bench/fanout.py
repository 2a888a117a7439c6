"""Presence fan-out: one identity's status change reaching K subscribers.

    .venv/bin/python -m bench.fanout --k 1,100,1000

The server runs as its own process (``presence-server serve --config``, the
embedded engine, logging ``info``); this process is only the load generator
(bench/_wsload.py). For each K: K subscriber sessions (identities ``sub-I``)
register and ``subscribe`` to the identity ``pub``, whose one session is
already registered; then, round after round, ``pub`` sends a ``presence``
frame (status alternating between ``away`` and ``available``, the round in
``text``) and the load generator times each subscriber's ``presence_update``
from the moment the frame was written. The next round starts when all K
arrived (plus 20 ms, and at least 60 ms after the previous change: a
session's frame rate limit is 20/s by default). Latency percentiles are over every (round, subscriber)
arrival; "all K" is the time until the last subscriber of a round had it.

Baseline, in the same run: the bare aiohttp WebSocket server
(bench/_baselines.py) relaying the publisher's frame as a ``presence_update``
to every connection that subscribed (a loop of ``send_str``): the floor of
fan-out on this machine with this stack.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from bench import _common as c
from bench._wsload import Opened, WSConn, close_all, connect, open_many
from tests.helpers.process import ServerProcess

NAME = "fanout"


def section_of(args: argparse.Namespace) -> str:
    """This run's section: ``fanout``, or ``fanout-redis`` on the Redis engine."""
    engine = getattr(args, "engine", "embedded")
    return NAME if engine == "embedded" else f"{NAME}-{engine}"
TARGET_K = 1000
TARGET_P99 = 0.050
PACE = 0.060  # seconds between two changes, at least


@dataclass
class FanoutRun:
    k: int
    rounds: int = 0
    latencies: list[float] = field(default_factory=list)  # every arrival
    all_k: list[float] = field(default_factory=list)  # per round: the last arrival
    missing: int = 0  # arrivals that did not come within the round's timeout
    server_cpu: float = 0.0

    def p(self, q: float) -> float:
        return c.percentile(self.latencies, q)


class Rounds:
    """Arrivals of the current round, counted by the subscribers' callback."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.round = -1
        self.sent = 0.0
        self.got = 0
        self.latest = 0.0
        self.latencies: list[float] = []
        self.done = asyncio.Event()
        self.marker = b""

    def start(self, r: int, sent: float) -> None:
        self.round, self.sent, self.got, self.latest = r, sent, 0, 0.0
        self.marker = f'"round {r}"'.encode()
        self.done.clear()

    def on_raw(self, conn: WSConn, payload: bytes, arrived: float) -> bool:
        """Count an update without parsing its JSON: the load generator reads all K
        arrivals on one core, so the less it does per message, the less of its own
        time is in the figures."""
        if b'"presence_update"' not in payload:
            return False
        if self.marker in payload:
            self._arrived(arrived)
        return True

    def on_message(self, conn: WSConn, msg: dict[str, Any], arrived: float) -> None:
        if msg.get("type") != "presence_update" or msg.get("text") != f"round {self.round}":
            return
        self._arrived(arrived)

    def _arrived(self, arrived: float) -> None:
        lat = arrived - self.sent
        self.latencies.append(lat)
        self.got += 1
        self.latest = max(self.latest, lat)
        if self.got >= self.k:
            self.done.set()


async def fan(
    server: ServerProcess, k: int, rounds: int, *, sub_frame: Callable[[int], dict[str, Any]], pub: WSConn, product: bool,
    concurrency: int, offset: int,
) -> FanoutRun:
    state = Rounds(k)
    subs: Opened = await open_many(
        "127.0.0.1", server.port, k, sub_frame, concurrency=concurrency, on_message=state.on_message, first=offset,
    )
    if subs.errors:
        raise RuntimeError(f"subscribers failed to register: {subs.errors}")
    await asyncio.gather(*(s.request({"type": "subscribe", "id": "s", "identities": ["pub"]}, "subscribed") for s in subs.conns))
    for s in subs.conns:
        s.on_raw = state.on_raw
    await asyncio.sleep(0.5)
    result = FanoutRun(k)
    pid = c.pid_of(server)
    cpu0 = c.cpu_seconds(pid)
    try:
        for r in range(rounds):
            status = "away" if r % 2 == 0 else "available"
            ok = pub.expect("ok")
            state.start(r, time.perf_counter())
            pub.send_json({"type": "presence", "id": r, "status": status, "text": f"round {r}"})
            try:
                await asyncio.wait_for(state.done.wait(), 10.0)
            except asyncio.TimeoutError:
                result.missing += k - state.got
            await ok
            result.all_k.append(state.latest)
            # 20 ms of quiet, and at most one change per PACE: the product's
            # per-session rate limit (20 frames/s by default) holds for pub too.
            await asyncio.sleep(max(0.02, state.sent + PACE - time.perf_counter()))
        result.rounds = rounds
        result.latencies = state.latencies
        result.server_cpu = c.cpu_seconds(pid) - cpu0
    finally:
        if product:
            for s in subs.conns:
                s.send_json({"type": "bye"})
        await close_all(subs.conns)
        await asyncio.sleep(0.5)
    return result


def rounds_for(k: int, base: int) -> int:
    """More rounds for small K, so every K has at least ~1000 samples where it can."""
    return max(base, min(200, 1000 // max(1, k)))


async def run_targets(targets: list[tuple[str, ServerProcess, dict[str, Any], Callable[[int], dict[str, Any]], bool]],
                      args: argparse.Namespace) -> list[list[FanoutRun]]:
    """All servers up at once; for each K, each server in turn (so both meet the
    same moments of a shared machine). Returns each target's runs, by K."""
    runs: list[list[FanoutRun]] = [[] for _ in targets]
    pubs: list[WSConn] = []
    try:
        for label, server, pub_frame, _, _ in targets:
            await server.start()
            pub = await connect("127.0.0.1", server.port)
            await pub.request(pub_frame, "registered")
            pubs.append(pub)
        offset = 0
        for k in args.ks:
            for n, (label, server, _, sub_frame, product) in enumerate(targets):
                run = await fan(server, k, rounds_for(k, args.rounds), sub_frame=sub_frame, pub=pubs[n], product=product,
                                concurrency=args.concurrency, offset=offset)
                runs[n].append(run)
                print(f"  {label:8} K={k:5}: p50 {c.ms(run.p(0.5)):>9}  p99 {c.ms(run.p(0.99)):>9}  all K p50 {c.ms(c.percentile(run.all_k, 0.5)):>9}"
                      f"  ({run.rounds} rounds, {len(run.latencies)} arrivals, {run.missing} missing;"
                      f" server CPU {run.server_cpu / max(1, run.rounds) * 1e3:.2f} ms per change)", flush=True)
            offset += k
    finally:
        for pub in pubs:
            pub.close()
        for _, server, _, _, _ in targets:
            server.stop()
    return runs


def render(env: dict[str, str], args: argparse.Namespace, prod: list[FanoutRun], base: list[FanoutRun]) -> str:
    rows = []
    for p, b in zip(prod, base):
        rows.append(
            f"| {p.k:,} | {p.rounds} | **{c.ms(p.p(0.5))}** | **{c.ms(p.p(0.99))}** | {c.ms(c.percentile(p.all_k, 0.5))} |"
            f" {p.server_cpu / max(1, p.rounds) * 1e3:.2f} ms | {c.ms(b.p(0.5))} | {c.ms(b.p(0.99))} | {c.ms(c.percentile(b.all_k, 0.5))} |"
            f" {c.fmt_ratio(c.ratio(p.p(0.99), b.p(0.99)))} | {p.missing} / {b.missing} |"
        )
    at = next((p for p in prod if p.k == TARGET_K), None)
    at_base = next((b for b in base if b.k == TARGET_K), None)
    if at is not None and at_base is not None:
        met = at.p(0.99) <= TARGET_P99 and at.missing == 0
        figure = f"p99 {c.ms(at.p(0.99))} at K = {TARGET_K} (bare relay: {c.ms(at_base.p(0.99))})"
        verdict = (f"At K = {TARGET_K} the product's p99 is **{c.ms(at.p(0.99))}**, which {'meets' if met else 'does not meet'} the target of at most"
                   f" {TARGET_P99 * 1000:.0f} ms ({c.fmt_ratio(c.ratio(at.p(0.99), at_base.p(0.99)))}× the bare relay's p99).")
    else:
        met, figure, verdict = None, f"K = {TARGET_K} not run", f"K = {TARGET_K} was not part of this run."
    image = c.plot(section_of(args), lambda ax: draw(ax, prod, base))
    img = f"\n![Fan-out latency against K]({image})\n" if image else ""
    redis = getattr(args, "engine", "embedded") == "redis"
    engine = ("redis engine on a local `redis-server` (every change goes through Redis: the script, then PUBLISH to the"
              " account's channel and back to this node's subscriber connection)") if redis else "embedded engine"
    return c.section(section_of(args), f"""
## Presence fan-out: one change to K subscribers{' (Redis engine)' if redis else ''}

`python -m bench.fanout --k {','.join(map(str, args.ks))}{' --engine redis' if redis else ''}` ({c.utc_now()}; load average before the run
{args.load}). One server process (the product: {engine}, logging
`info`; then the baseline), one load-generator process (bench/_wsload.py)
holding the publisher's session and the K subscribers' sessions (each its own
identity, subscribed to `pub`). Each round `pub` sends `presence` (status
alternating `away`/`available`, the round in `text`); each subscriber's
`presence_update` is timed from the moment the frame was written. The next
round starts 20 ms after the last arrival, and at least 60 ms after the
previous change (the default rate limit of a session is 20 frames/s). Both
servers run all along and take turns K by K. The baseline is the bare aiohttp
WebSocket server relaying the frame to every subscribed connection (a loop of
`send_str`). The load generator reads all K arrivals on one core, so for large
K a part of the spread is its own parsing, the same for both servers.

{c.env_table(env)}

| K | rounds | product p50 | product p99 | product: all K (median round) | server CPU per change | bare relay p50 | bare relay p99 | bare: all K | p99 ratio product ÷ bare | missing (product / bare) |
|---|---|---|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}
{img}
{verdict}
{c.target_line(section_of(args), f"presence change to {TARGET_K} subscribers p99 ≤ {TARGET_P99 * 1000:.0f} ms{' (redis)' if redis else ''}", figure, met)}
""")


def draw(ax: Any, prod: list[FanoutRun], base: list[FanoutRun]) -> None:
    ks = [r.k for r in prod]
    ax.plot(ks, [r.p(0.5) * 1000 for r in prod], marker="o", label="product p50")
    ax.plot(ks, [r.p(0.99) * 1000 for r in prod], marker="o", label="product p99")
    ax.plot(ks, [r.p(0.5) * 1000 for r in base], marker="s", linestyle="--", label="bare relay p50")
    ax.plot(ks, [r.p(0.99) * 1000 for r in base], marker="s", linestyle="--", label="bare relay p99")
    ax.axhline(TARGET_P99 * 1000, color="grey", linestyle=":", label="target p99 at K=1000")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("subscribers K")
    ax.set_ylabel("presence change → update (ms)")
    ax.set_title("Presence fan-out latency")
    ax.grid(alpha=0.3)
    ax.legend()


async def main_async(args: argparse.Namespace) -> int:
    env, nofile = c.start_run()
    args.load = c.load_average()
    print(f"K = {', '.join(map(str, args.ks))}\n", flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="bench-fanout-"))
    account = c.BenchAccount()
    total = sum(args.ks)
    tokens = [account.token(f"sub-{i}", subscribe=["pub"]) for i in range(total)]
    pub_token = account.token("pub", subscribe=False)
    finished = False
    redises: list[c.RedisServer] = []

    def server(name: str, tree: Path | None = None) -> ServerProcess:
        url = None
        if args.engine == "redis":
            redis = c.RedisServer()
            redis.start()
            redises.append(redis)
            url = redis.url
        return c.product_server(workdir, account, name=name, log_level=args.log_level, engine_url=url, tree=tree)

    try:
        product = server("product")
        product_sub = lambda i: {"type": "register", "id": i, "token": tokens[i]}  # noqa: E731
        product_pub = {"type": "register", "id": "p", "token": pub_token}
        if args.profile:
            finished = True  # nothing to keep for a profile run
            return await profile(product, args, product_pub, product_sub)
        targets = [
            ("product", product, product_pub, product_sub, True),
            ("bare", c.helper_server(workdir, "ws-aiohttp"), {"type": "register", "identity": "pub"},
             lambda i: {"type": "register", "identity": f"sub-{i}"}, False),
        ]
        if args.before:
            targets.append(("product (before)", server("before", args.before), product_pub, product_sub, True))
        prod, base, *before = await run_targets(targets, args)
        print()
        for p, b in zip(prod, base):
            print(f"K={p.k:5}  product p50 {c.ms(p.p(0.5)):>9} p99 {c.ms(p.p(0.99)):>9}   bare p50 {c.ms(b.p(0.5)):>9} p99 {c.ms(b.p(0.99)):>9}"
                  f"   p99 ratio {c.ratio(p.p(0.99), b.p(0.99)):.2f}")
        at = next((p for p in prod if p.k == TARGET_K), None)
        if at is not None:
            print(f"target p99 ≤ {TARGET_P99 * 1000:.0f} ms at K = {TARGET_K}: {'met' if at.p(0.99) <= TARGET_P99 else 'NOT met'}")
        for q in before[0] if before else []:
            print(f"K={q.k:5}  product (before) p50 {c.ms(q.p(0.5)):>9} p99 {c.ms(q.p(0.99)):>9}"
                  f"   server CPU {q.server_cpu / max(1, q.rounds) * 1e3:.2f} ms per change")
        if not args.no_write:
            c.write_section(section_of(args), render(env, args, prod, base), env, after=f"{NAME}-profile" if section_of(args) != NAME else None)
            print(f"\nwrote the {section_of(args)} section of {c.DOC.relative_to(c.ROOT)}")
        finished = True
        return 0
    finally:
        for redis in redises:
            redis.cleanup()
        if finished and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"(server logs kept in {workdir})", file=sys.stderr)


async def profile(server: ServerProcess, args: argparse.Namespace, pub_frame: dict[str, Any], sub_frame: Callable[[int], dict[str, Any]]) -> int:
    k = max(args.ks)
    await server.start()
    pub = await connect("127.0.0.1", server.port)
    await pub.request(pub_frame, "registered")
    state = Rounds(k)
    subs = await open_many("127.0.0.1", server.port, k, sub_frame, concurrency=args.concurrency, on_message=state.on_message)
    await asyncio.gather(*(s.request({"type": "subscribe", "id": "s", "identities": ["pub"]}, "subscribed") for s in subs.conns))
    for s in subs.conns:
        s.on_raw = state.on_raw
    profiler = c.start_profiler(c.pid_of(server), Path(tempfile.mkdtemp(prefix="bench-profile-")) / "fanout.txt")
    rounds = max(50, args.rounds)
    try:
        for r in range(rounds):
            state.start(r, time.perf_counter())
            pub.send_json({"type": "presence", "id": r, "status": "away" if r % 2 == 0 else "available", "text": f"round {r}"})
            await asyncio.wait_for(state.done.wait(), 10.0)
            await asyncio.sleep(max(0.02, state.sent + PACE - time.perf_counter()))
    finally:
        result = profiler.stop() if profiler else None
        await close_all(subs.conns)
        server.stop()
    if result:
        redis = args.engine == "redis"
        c.write_profile(section_of(args), f"python -m bench.{NAME} --profile --k {k}{' --engine redis' if redis else ''}", result,
                        f"one identity changed its status {rounds} times in front of {k} subscribers ({args.engine} engine)",
                        no_write=args.no_write, after=section_of(args) if redis else None)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fanout", description=__doc__.split("\n\n")[0])
    parser.add_argument("--k", default="1,100,1000", help="subscriber counts, comma-separated (default 1,100,1000)")
    parser.add_argument("--rounds", type=int, default=100, help="status changes per K at least (more for small K; default 100)")
    parser.add_argument("--concurrency", type=int, default=100, help="subscribers connecting at once (default 100)")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"], help="the server's (default info)")
    parser.add_argument("--profile", action="store_true", help="only profile the product (largest K) with py-spy")
    parser.add_argument("--engine", default="embedded,redis",
                        help="the product's engines, each run in turn (default embedded,redis: the redis run, on a local"
                             " redis-server, writes the fanout-redis section)")
    parser.add_argument("--before", type=c.before_tree, metavar="PATH",
                        help="also run the product from this checkout (e.g. a git worktree of an earlier commit), labelled"
                             " 'product (before)', in the same interleaving: before/after figures from one run")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (server logs)")
    args = parser.parse_args(argv)
    try:
        args.ks = [int(k) for k in args.k.split(",") if k.strip()]
    except ValueError:
        parser.error("--k takes integers, comma-separated")
    if not args.ks or min(args.ks) < 1:
        parser.error("--k needs positive integers")
    return c.run_per_engine(parser, args, main_async)


if __name__ == "__main__":
    raise SystemExit(main())
