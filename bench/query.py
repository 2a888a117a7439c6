"""Presence query: REST presence queries per second and their latency.

    .venv/bin/python -m bench.query --n 10000

The server runs as its own process (``presence-server serve --config``, the
embedded engine, logging ``info``); this process is the load generator. It
first registers ``--present`` sessions (identities ``q-I``, default 100) so
the queried identities have presence, then sends N
``GET /v1/Accounts/{AccountSid}/Presence/q-I`` requests (HTTP Basic, the
identities in turn) from 64 keep-alive connections, each sending its next
request as soon as the previous one is answered (bench/_httpload.py, a raw
HTTP/1.1 client). Baseline, in the same run and the same way: an aiohttp hello
world answering that path with a JSON body of the same shape
(bench/_baselines.py ``hello``). Each server gets ``--rounds`` bursts (default
5) after a warm-up, the two taking turns; the median by rate is reported.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench import _common as c
from bench._httpload import Load, closed_loop, get_request
from bench._wsload import Pinger, close_all, open_many
from tests.helpers.process import ServerProcess

NAME = "query"


def section_of(args: argparse.Namespace) -> str:
    """This run's section: ``query``, or ``query-redis`` on the Redis engine."""
    engine = getattr(args, "engine", "embedded")
    return NAME if engine == "embedded" else f"{NAME}-{engine}"


class Bursts:
    """One server's bursts: warmed up once, then one burst per call, its CPU
    time counted over the bursts."""

    def __init__(self, server: ServerProcess, args: argparse.Namespace, account: c.BenchAccount) -> None:
        headers = {"Authorization": account.basic()}
        self.server, self.args = server, args
        self.requests = [get_request("127.0.0.1", server.port, f"/v1/Accounts/{account.sid}/Presence/q-{i}", headers)
                         for i in range(args.present)]
        self.loads: list[Load] = []
        self.cpu = 0.0

    async def warm(self) -> None:
        await closed_loop("127.0.0.1", self.server.port, 500, lambda i: self.requests[i % len(self.requests)], self.args.connections)

    async def burst(self) -> Load:
        pid = c.pid_of(self.server)
        cpu0 = c.cpu_seconds(pid)
        load = await closed_loop("127.0.0.1", self.server.port, self.args.n, lambda i: self.requests[i % len(self.requests)],
                                 self.args.connections)
        self.cpu += c.cpu_seconds(pid) - cpu0
        if load.errors or load.statuses:
            raise RuntimeError(f"queries failed: errors {load.errors}, statuses {load.statuses}")
        self.loads.append(load)
        return load

    @property
    def cpu_per_query(self) -> float:
        return self.cpu / max(1, sum(x.ok for x in self.loads))


def median(loads: list[Load]) -> Load:
    return sorted(loads, key=lambda x: x.rate)[len(loads) // 2]


def show(label: str, loads: list[Load], cpu: float) -> None:
    m = median(loads)
    print(f"{label:8} {m.rate:8,.0f} queries/s  p50 {c.ms(c.percentile(m.latencies, 0.5)):>8}  p99 {c.ms(c.percentile(m.latencies, 0.99)):>8}"
          f"  server CPU {cpu * 1e6:5,.0f} µs/query  (rounds: {', '.join(f'{x.rate:,.0f}' for x in loads)})", flush=True)


def render(env: dict[str, str], args: argparse.Namespace, prod: list[Load], pcpu: float, base: list[Load], bcpu: float) -> str:
    p, b = median(prod), median(base)
    r = c.ratio(p.rate, b.rate)
    image = c.plot(section_of(args), lambda ax: draw(ax, p, b))
    img = f"\n![Query latency CDF]({image})\n" if image else ""
    redis = getattr(args, "engine", "embedded") == "redis"
    engine = ("redis engine on a local `redis-server` (each query reads the identity's sessions from Redis: one"
              " round trip)") if redis else "embedded engine"

    def row(label: str, m: Load, loads: list[Load], cpu: float) -> str:
        return (f"| {label} | **{m.rate:,.0f}/s** ({', '.join(f'{x.rate:,.0f}' for x in loads)}) | {c.ms(c.percentile(m.latencies, 0.5))} |"
                f" {c.ms(c.percentile(m.latencies, 0.99))} | {cpu * 1e6:,.0f} µs |")

    return c.section(section_of(args), f"""
## Presence query: REST queries per second{' (Redis engine)' if redis else ''}

`python -m bench.query --n {args.n}{' --engine redis' if redis else ''}` ({c.utc_now()}; load average before the run
{args.load}). One server process at a time, one load-generator process
(bench/_httpload.py, a raw HTTP/1.1 keep-alive client on uvloop) holding
{args.present} registered sessions (identities `q-0` … `q-{args.present - 1}`, so every
queried identity is present) and sending `GET /v1/Accounts/{{AccountSid}}/Presence/q-I`
(HTTP Basic, the identities in turn) from {args.connections} keep-alive connections,
each sending its next request when the previous one is answered. {args.rounds} bursts
of {args.n} per server after 500 warm-up requests, the two servers taking turns
(both run all along); the median burst by rate is shown (every burst's rate in
brackets). The product: {engine}, logging `info`.
Baseline: an aiohttp hello world answering the same path with a JSON body of
the same shape (Basic header required, not checked; nothing looked up).

{c.env_table(env)}

| server | queries/s | p50 | p99 | server CPU per query |
|---|---|---|---|---|
{row("product", p, prod, pcpu)}
{row("aiohttp hello world", b, base, bcpu)}
| **ratio** product ÷ hello world | **{c.fmt_ratio(r)}** | | | {c.fmt_ratio(c.ratio(bcpu, pcpu))} (queries per CPU-second) |
{img}
The issue sets no absolute target for queries: the ratio to the hello world
is the figure to watch. The bursts' rates swing with the machine's other load
(see the rounds); the server CPU per query is steadier, and by it the product
answers {c.fmt_ratio(c.ratio(bcpu, pcpu))}× as many queries per CPU-second as the hello world
({c.ratio(1, pcpu):,.0f} against {c.ratio(1, bcpu):,.0f}).
""")


def draw(ax: Any, p: Load, b: Load) -> None:
    for label, m in (("product", p), ("aiohttp hello world", b)):
        lat = sorted(m.latencies)
        ax.plot([x * 1000 for x in lat], [i / len(lat) for i in range(len(lat))], label=f"{label} ({m.rate:,.0f}/s)")
    ax.set_xscale("log")
    ax.set_xlabel("request latency (ms, log scale)")
    ax.set_ylabel("share of requests")
    ax.set_title("REST presence query: latency CDF (median burst)")
    ax.grid(alpha=0.3)
    ax.legend()


async def main_async(args: argparse.Namespace) -> int:
    env, nofile = c.start_run()
    args.load = c.load_average()
    print(f"{args.rounds} bursts of {args.n} queries, {args.connections} connections, {args.present} present identities\n", flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="bench-query-"))
    account = c.BenchAccount()
    tokens = [account.token(f"q-{i}", subscribe=False) for i in range(args.present)]
    finished = False
    redis = c.RedisServer() if args.engine == "redis" else None
    try:
        if redis is not None:
            redis.start()
        product = c.product_server(workdir, account, log_level=args.log_level, engine_url=redis.url if redis else None)
        await product.start()
        sessions = await open_many("127.0.0.1", product.port, args.present, lambda i: {"type": "register", "token": tokens[i]})
        if sessions.errors:
            raise RuntimeError(f"sessions failed to register: {sessions.errors}")
        pinger = Pinger(sessions.conns)
        pinger.start()
        hello = c.helper_server(workdir, "hello")
        try:
            if args.profile:
                profiler = c.start_profiler(c.pid_of(product), Path(tempfile.mkdtemp(prefix="bench-profile-")) / "query.txt")
                b = Bursts(product, args, account)
                try:
                    await b.warm()
                    await b.burst()
                finally:
                    result = profiler.stop() if profiler else None
                show("product", b.loads, b.cpu_per_query)
                if result:
                    redis_flag = " --engine redis" if args.engine == "redis" else ""
                    c.write_profile(section_of(args), f"python -m bench.{NAME} --profile --n {args.n}{redis_flag}", result,
                                    f"it answered {args.n + 500} presence queries from {args.connections} connections ({args.engine} engine)",
                                    no_write=args.no_write, after=section_of(args) if args.engine == "redis" else None)
                finished = True
                return 0
            await hello.start()
            pb, hb = Bursts(product, args, account), Bursts(hello, args, account)
            await pb.warm()
            await hb.warm()
            for r in range(args.rounds):  # the two servers take turns
                for label, b in (("product", pb), ("hello", hb)):
                    x = await b.burst()
                    print(f"  {label:8} burst {r + 1}: {x.rate:8,.0f} queries/s  p99 {c.ms(c.percentile(x.latencies, 0.99))}", flush=True)
            prod, pcpu, base, bcpu = pb.loads, pb.cpu_per_query, hb.loads, hb.cpu_per_query
            show("product", prod, pcpu)
            show("hello", base, bcpu)
        finally:
            pinger.stop()
            await close_all(sessions.conns)
            product.stop()
            hello.stop()
        print(f"\nratio product / hello world: {c.ratio(median(prod).rate, median(base).rate):.2f}")
        if not args.no_write:
            c.write_section(section_of(args), render(env, args, prod, pcpu, base, bcpu), env,
                            after=f"{NAME}-profile" if section_of(args) != NAME else None)
            print(f"\nwrote the {section_of(args)} section of {c.DOC.relative_to(c.ROOT)}")
        finished = True
        return 0
    finally:
        if redis is not None:
            redis.cleanup()
        if finished and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"(server logs kept in {workdir})", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.query", description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10000, help="queries per burst (default 10000)")
    parser.add_argument("--rounds", type=int, default=5, help="bursts per server; the median is reported (default 5)")
    parser.add_argument("--connections", type=int, default=64, help="keep-alive connections (default 64)")
    parser.add_argument("--present", type=int, default=100, help="registered identities that are queried (default 100)")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"], help="the server's (default info)")
    parser.add_argument("--profile", action="store_true", help="only profile the product with py-spy")
    parser.add_argument("--engine", default="embedded,redis",
                        help="the product's engines, each run in turn (default embedded,redis: the redis run, on a local"
                             " redis-server, writes the query-redis section)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (server logs)")
    args = parser.parse_args(argv)
    if args.n < 10 or args.rounds < 1 or args.present < 1:
        parser.error("--n ≥ 10, --rounds ≥ 1, --present ≥ 1")
    return c.run_per_engine(parser, args, main_async)


if __name__ == "__main__":
    raise SystemExit(main())
