"""Messaging throughput: durable accepts per second, dispatch to the outbox, and a
crash in the middle of a burst.

    .venv/bin/python -m bench.messaging --n 5000

The server runs as its own process (``presence-server serve --config``, the
embedded engine in a temporary data_dir, the outbox provider); this process is
only the load generator: aiohttp with a pool of keep-alive connections, each
worker sending its next POST as soon as the previous one is answered. A 201
means the message and its send job are committed, so "accepted per second" is
durable accepts.

Scenarios, in one run:

* baseline - an aiohttp hello-world POST handler (same form, 201 with a JSON
  body of the same shape; also a separate uvloop process) driven by the same
  load generator: what this machine does with no product at all;
* burst - N messages: accepted/s with p50/p99 latency, and dispatched/s (N over
  the time from the first request until the outbox holds all N);
* intake alone - the same burst to a server without the messaging role (no
  dispatcher competing for the process): what accepting alone costs;
* crash - N messages again on a fresh data_dir, SIGKILL once half are answered,
  restart on the same data_dir: lost (answered 201, never in the outbox) and
  duplicated (in the outbox twice) must both be 0.

The figures go into docs/benchmarks.md between the ``bench:messaging`` markers.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import secrets
import shutil
import sqlite3
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlencode

import aiohttp

from bench import _common
from tests.helpers.process import ServerProcess, free_port

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"
SECTION_START = "<!-- bench:messaging:start -->"
SECTION_END = "<!-- bench:messaging:end -->"

ACCOUNT_SID = "AC" + secrets.token_hex(16)
AUTH_TOKEN = secrets.token_hex(16)
FROM = "+15550001111"
MESSAGES_PATH = f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
WARMUP = 200


# -- processes ------------------------------------------------------------------------


def product_config(port: int, data_dir: Path, *, log_level: str, mps: float | None = None, max_queued: int = 10000) -> str:
    provider = 'name = "outbox"\nkind = "outbox"\n' + (f"mps = {mps}\n" if mps else "")
    return f"""
[server]
host = "127.0.0.1"
port = {port}
shutdown_grace = 0.5

[engine]
kind = "memory"
data_dir = "{data_dir}"

[logging]
format = "json"
level = "{log_level}"

[messaging]
max_queued_per_sender = {max_queued}

# One account posts every message: lift its REST rate limit (the benchmark measures capacity).
[http]
rate = 1000000.0
burst = 1000000

[[accounts]]
sid = "{ACCOUNT_SID}"
auth_token = "{AUTH_TOKEN}"

[[accounts.phone_numbers]]
number = "{FROM}"

[[providers]]
{provider}"""


def product_server(
    workdir: Path, data_dir: Path, *, log_level: str, mps: float | None = None, roles: str | None = None, n: int = 0
) -> ServerProcess:
    port = free_port()
    config = workdir / f"server-{port}.toml"
    # Every message is from one sender: room for the whole burst queued (429s would not be a throughput figure).
    max_queued = max(10000, 2 * (n + WARMUP))
    config.write_text(product_config(port, data_dir, log_level=log_level, mps=mps, max_queued=max_queued))
    argv = [sys.executable, "-m", "presence_server.cli", "serve", "--config", str(config)]
    if roles is not None:
        argv += ["--roles", roles]
    return ServerProcess(argv, port, workdir / "server.log", workdir)


def baseline_server(workdir: Path) -> ServerProcess:
    port = free_port()
    argv = [sys.executable, "-m", "bench.messaging", "--serve-baseline", str(port)]
    return ServerProcess(argv, port, workdir / "baseline.log", workdir)


def serve_baseline(port: int) -> None:
    """The baseline: aiohttp's hello world, taking the same form and answering 201
    with a JSON object of the Message resource's shape. Nothing is stored."""
    from aiohttp import web

    async def create(request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Basic "):
            return web.json_response({"code": 20003}, status=401)
        form = await request.post()
        to, from_, body = form.get("To"), form.get("From"), form.get("Body", "")
        if not isinstance(to, str) or not isinstance(from_, str) or not isinstance(body, str):
            return web.json_response({"code": 21604}, status=400)
        sid = "SM" + secrets.token_hex(16)
        account = request.match_info["account_sid"]
        now = time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime())
        uri = f"/2010-04-01/Accounts/{account}/Messages/{sid}.json"
        return web.json_response(
            {
                "sid": sid, "account_sid": account, "messaging_service_sid": None, "from": from_, "to": to, "body": body,
                "status": "queued", "direction": "outbound-api", "num_segments": "1", "num_media": "0", "error_code": None,
                "error_message": None, "date_created": now, "date_updated": now, "date_sent": None, "api_version": "2010-04-01",
                "uri": uri, "price": None, "price_unit": "USD", "subresource_uris": {"media": uri[:-5] + "/Media.json"},
                "channel": "sms", "fallback_reason": None, "related_call_sid": None, "provider": None, "priority": "normal",
                "send_at": None, "valid_until": None, "broadcast_sid": None, "channel_reason": None, "content_version": "text",
                "route": None, "attempts": 0, "encoding": "GSM-7",
            },
            status=201,
        )

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.router.add_post("/2010-04-01/Accounts/{account_sid}/Messages.json", create)
    app.router.add_get("/healthz", health)
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover
        pass
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


# -- the load generator ---------------------------------------------------------------


@dataclass
class Burst:
    n: int
    accepted: list[str] = field(default_factory=list)  # sids answered 201, in answer order
    latencies: list[float] = field(default_factory=list)  # seconds, of the 201 answers
    refused: dict[int, int] = field(default_factory=dict)  # other statuses, by status
    errors: dict[str, int] = field(default_factory=dict)  # exceptions before a kill
    unanswered: int = 0  # in flight when the server was killed
    not_sent: int = 0  # never sent (after a kill)
    started: float = 0.0
    finished: float = 0.0

    @property
    def elapsed(self) -> float:
        return self.finished - self.started

    @property
    def rate(self) -> float:
        return len(self.accepted) / self.elapsed if self.elapsed > 0 else 0.0

    def percentile(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def form_body(i: int) -> bytes:
    return urlencode({"To": f"+1555{2000000 + i:07d}", "From": FROM, "Body": f"bench message {i}: hello from the load generator"}).encode()


async def burst(
    base_url: str, n: int, connections: int, *, first: int = 0, after_answer: Callable[[Burst], None] | None = None,
    stopped: Callable[[], bool] = lambda: False,
) -> Burst:
    """POST n messages from ``connections`` keep-alive connections, each worker sending
    its next request when the previous one is answered. ``after_answer`` runs after
    each 201 (the crash scenario kills the server there); once ``stopped()`` is true,
    failures count as unanswered and no more requests are sent."""
    result = Burst(n)
    headers = {
        "Authorization": "Basic " + base64.b64encode(f"{ACCOUNT_SID}:{AUTH_TOKEN}".encode()).decode(),
        "Content-Type": "application/x-www-form-urlencoded",
    }
    bodies = [form_body(first + i) for i in range(n)]
    url = base_url + MESSAGES_PATH
    next_index = 0
    connector = aiohttp.TCPConnector(limit=connections, keepalive_timeout=60)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:

        async def worker() -> None:
            nonlocal next_index
            while next_index < n and not stopped():
                body = bodies[next_index]
                next_index += 1
                sent = time.perf_counter()
                try:
                    async with http.post(url, data=body, headers=headers) as resp:
                        payload = await resp.read()
                        status = resp.status
                except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                    if stopped():
                        result.unanswered += 1
                    else:
                        name = type(exc).__name__
                        result.errors[name] = result.errors.get(name, 0) + 1
                    continue
                if status == 201:
                    result.latencies.append(time.perf_counter() - sent)
                    result.accepted.append(json.loads(payload)["sid"])
                    if after_answer is not None:
                        after_answer(result)
                else:
                    result.refused[status] = result.refused.get(status, 0) + 1

        result.started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(connections)))
        result.finished = time.perf_counter()
    result.not_sent = n - next_index
    return result


# -- reading the server's files (read-only) -------------------------------------------


def read_only(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    conn.execute("PRAGMA busy_timeout=5000")
    return conn


def query(path: Path, sql: str) -> list[tuple[Any, ...]]:
    if not path.exists():
        return []
    conn = read_only(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def outbox_count(data_dir: Path) -> int:
    rows = query(data_dir / "outbox.sqlite3", "SELECT COUNT(*) FROM outbox")
    return int(rows[0][0]) if rows else 0


def outbox_sids(data_dir: Path) -> list[str]:
    return [r[0] for r in query(data_dir / "outbox.sqlite3", "SELECT message_sid FROM outbox")]


async def wait_outbox(data_dir: Path, sids: set[str], timeout: float, poll: float = 0.02) -> float:
    """Wait until the outbox holds every sid in ``sids``; the perf_counter time then."""
    deadline = time.monotonic() + timeout
    while True:
        if outbox_count(data_dir) >= len(sids) and sids <= set(outbox_sids(data_dir)):
            return time.perf_counter()
        if time.monotonic() > deadline:
            missing = len(sids - set(outbox_sids(data_dir)))
            raise RuntimeError(f"after {timeout} s the outbox still lacks {missing} of {len(sids)} messages")
        await asyncio.sleep(poll)


async def wait_records_sent(data_dir: Path, sids: set[str], timeout: float) -> dict[str, int]:
    """The records' statuses (counts) once all of ``sids`` say 'sent', or at the timeout."""
    deadline = time.monotonic() + timeout
    while True:
        rows = query(data_dir / "messages.sqlite3", "SELECT sid, status FROM messages")
        status = {sid: st for sid, st in rows if sid in sids}
        if len(status) == len(sids) and all(st == "sent" for st in status.values()) or time.monotonic() > deadline:
            counts: dict[str, int] = {}
            for sid in sids:
                st = status.get(sid, "missing")
                counts[st] = counts.get(st, 0) + 1
            return counts
        await asyncio.sleep(0.05)


# -- the scenarios --------------------------------------------------------------------


BASELINE_ROUNDS = 5


async def run_baseline(workdir: Path, n: int, connections: int) -> tuple[Burst, list[float]]:
    """The median of BASELINE_ROUNDS bursts (a burst of the hello world is over in a
    fraction of a second, so one round is at the mercy of a neighbour's load), and
    every round's rate."""
    server = baseline_server(workdir)
    await server.start()
    try:
        await burst(server.url, WARMUP, connections)
        rounds = [await burst(server.url, n, connections) for _ in range(BASELINE_ROUNDS)]
    finally:
        server.stop()
    for b in rounds:
        check(b)
    rounds.sort(key=lambda b: b.rate)
    return rounds[len(rounds) // 2], [b.rate for b in rounds]


@dataclass
class ProductRun:
    burst: Burst
    dispatch_seconds: float  # from the first request until the outbox holds all N
    drain_after_burst: float  # from the last answer until then
    statuses: dict[str, int]


async def run_product(workdir: Path, n: int, connections: int, log_level: str) -> ProductRun:
    data_dir = workdir / "data-burst"
    server = product_server(workdir, data_dir, log_level=log_level, n=n)
    await server.start()
    try:
        warm = await burst(server.url, WARMUP, connections, first=10_000_000)
        await wait_outbox(data_dir, set(warm.accepted), timeout=60)
        result = await burst(server.url, n, connections)
        check(result)
        done = await wait_outbox(data_dir, set(result.accepted), timeout=600)
        statuses = await wait_records_sent(data_dir, set(result.accepted), timeout=30)
        return ProductRun(result, done - result.started, done - result.finished, statuses)
    finally:
        server.stop()


async def run_intake_only(workdir: Path, n: int, connections: int, log_level: str) -> Burst:
    """The same burst with no dispatcher in the process (``--roles gateway,signaling``):
    what the intake alone costs, the messages stay queued."""
    data_dir = workdir / "data-intake"
    server = product_server(workdir, data_dir, log_level=log_level, roles="gateway,signaling", n=n)
    await server.start()
    try:
        await burst(server.url, WARMUP, connections, first=10_000_000)
        result = await burst(server.url, n, connections)
        check(result)
        return result
    finally:
        server.stop()


@dataclass
class CrashRun:
    burst: Burst
    accepted_at_kill: int
    in_outbox_at_kill: int
    recovery_seconds: float  # from the restart (process started) until the outbox holds every accepted message
    lost: int
    duplicated: int
    unanswered_but_sent: int  # committed before the kill, answer lost: in the outbox, not counted as accepted
    statuses: dict[str, int]


async def run_crash(workdir: Path, n: int, connections: int, log_level: str, mps: float | None) -> CrashRun:
    data_dir = workdir / "data-crash"
    server = product_server(workdir, data_dir, log_level=log_level, mps=mps, n=n)
    await server.start()
    killed = False
    at_kill: dict[str, int] = {}

    def maybe_kill(b: Burst) -> None:
        nonlocal killed
        if not killed and len(b.accepted) >= n // 2:
            server.kill()
            killed = True
            at_kill["accepted"] = len(b.accepted)
            at_kill["outbox"] = outbox_count(data_dir)

    try:
        result = await burst(server.url, n, connections, after_answer=maybe_kill, stopped=lambda: killed)
    finally:
        server.stop()
    check(result)
    if not killed:
        raise RuntimeError("the burst ended before the kill")
    restarted = product_server(workdir, data_dir, log_level=log_level, mps=mps, n=n)
    t0 = time.perf_counter()
    await restarted.start()
    try:
        accepted = set(result.accepted)
        try:
            done = await wait_outbox(data_dir, accepted, timeout=300)
        except RuntimeError:
            done = time.perf_counter()  # the lost ones are counted below
        statuses = await wait_records_sent(data_dir, accepted, timeout=30)
        rows = outbox_sids(data_dir)
        in_outbox = set(rows)
        return CrashRun(
            burst=result,
            accepted_at_kill=at_kill["accepted"],
            in_outbox_at_kill=at_kill["outbox"],
            recovery_seconds=done - t0,
            lost=len(accepted - in_outbox),
            duplicated=len(rows) - len(in_outbox),
            unanswered_but_sent=len(in_outbox - accepted),
            statuses=statuses,
        )
    finally:
        restarted.stop()


def check(b: Burst) -> None:
    if b.errors or b.refused:
        raise RuntimeError(f"requests failed before any kill: errors {b.errors}, statuses {b.refused}")


# -- reporting ------------------------------------------------------------------------


def environment() -> dict[str, str]:
    return {**_common.environment(), "SQLite": sqlite3.sqlite_version}


raise_nofile = _common.raise_nofile


def write_section(section: str, env: dict[str, str], path: Path = DOC) -> None:
    _common.write_section("messaging", section, env, path)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def render(
    env: dict[str, str], args: argparse.Namespace, base: Burst, base_rates: list[float], prod: ProductRun, intake: Burst,
    crash: CrashRun,
) -> str:
    b = prod.burst
    ratio = b.rate / base.rate if base.rate else float("nan")
    dispatched = len(b.accepted) / prod.dispatch_seconds
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    c = crash.burst
    env_lines = "\n".join(f"| {k} | {v} |" for k, v in env.items())
    target = "meets" if b.rate >= 2000 else "falls short of"
    return f"""{SECTION_START}
## Messaging: durable accepts and dispatch

`python -m bench.messaging --n {args.n}` ({when}). One server process (embedded
engine: SQLite in WAL mode, group commit; the `outbox` provider without a rate
limit; logging `{args.log_level}`, JSON to a file; `max_queued_per_sender` raised to
hold the whole burst), one load-generator process: aiohttp,
{args.connections} keep-alive connections, each sending its next
`POST /2010-04-01/Accounts/{{AccountSid}}/Messages.json` (To, From, Body; HTTP
Basic) as soon as the previous one is answered. A 201 means the message record
and its send job are committed. {WARMUP} warm-up requests precede each measured
burst.

| | |
|---|---|
{env_lines}

| Burst of {args.n} messages | |
|---|---|
| accepted (durable 201s) | **{b.rate:,.0f} messages/s** ({len(b.accepted)} in {b.elapsed:.2f} s) |
| request latency | p50 {ms(b.percentile(0.50))}, p99 {ms(b.percentile(0.99))} |
| dispatched to the outbox | **{dispatched:,.0f} messages/s** (all {len(b.accepted)} in the outbox {prod.dispatch_seconds:.2f} s after the first request; {prod.drain_after_burst:.2f} s after the last answer) |
| records after the burst | {fmt_counts(prod.statuses)} |
| baseline: aiohttp hello-world POST (same form, 201 + JSON) | {base.rate:,.0f} requests/s, the median of {len(base_rates)} bursts of {args.n} ({", ".join(f"{r:,.0f}" for r in base_rates)}); p50 {ms(base.percentile(0.50))}, p99 {ms(base.percentile(0.99))} |
| **ratio** product accepted/s / baseline req/s | **{ratio:.2f}** |
| for comparison: the intake alone (no dispatcher in the process, `--roles gateway,signaling`) | {intake.rate:,.0f} messages/s (p50 {ms(intake.percentile(0.50))}, p99 {ms(intake.percentile(0.99))}); ratio to baseline {intake.rate / base.rate:.2f} |

This run's {b.rate:,.0f} accepted messages/s {target} the messaging issue's target of
2,000 accepted durable messages per second per process (the load generator
shares this machine's CPUs with the server).
{_common.target_line("messaging", "≥ 2,000 accepted durable messages/s per process", f"{b.rate:,.0f} messages/s (ratio to the hello world {ratio:.2f})", b.rate >= 2000)}

| Same burst, SIGKILL and restart in the middle | |
|---|---|
| provider | outbox{f', mps = {args.crash_mps:g}' if args.crash_mps else ' (no limit)'} |
| killed after | {crash.accepted_at_kill} answers (201); {crash.in_outbox_at_kill} were in the outbox then, {crash.accepted_at_kill - crash.in_outbox_at_kill} still queued or in flight |
| accepted before the kill | {len(c.accepted)} (accepted/s until then {c.rate:,.0f}) |
| requests without an answer (not accepted) | {c.unanswered} in flight at the kill, {c.not_sent} never sent; {crash.unanswered_but_sent} of them had been committed and were sent anyway |
| every accepted message in the outbox | {crash.recovery_seconds:.2f} s after the restart began (process start included) |
| **lost** (accepted, never in the outbox) | **{crash.lost}** |
| **duplicated** (in the outbox more than once) | **{crash.duplicated}** |
| accepted records after the restart | {fmt_counts(crash.statuses)} |
{SECTION_END}"""


def fmt_counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))


async def main_async(args: argparse.Namespace) -> int:
    nofile = raise_nofile()
    env = environment()
    for k, v in env.items():
        print(f"{k:8} {v}")
    print(f"{'NOFILE':8} {nofile[0]} (soft limit)")
    print(f"burst of {args.n} messages, {args.connections} connections, server logging {args.log_level}\n", flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="bench-messaging-"))
    finished = False
    try:
        base, base_rates = await run_baseline(workdir, args.n, args.connections)
        print(f"baseline   {base.rate:8,.0f} req/s   p50 {ms(base.percentile(0.5))}  p99 {ms(base.percentile(0.99))}"
              f"   (median of {len(base_rates)}: {', '.join(f'{r:,.0f}' for r in base_rates)})", flush=True)
        prod = await run_product(workdir, args.n, args.connections, args.log_level)
        b = prod.burst
        print(f"accepted   {b.rate:8,.0f} msg/s   p50 {ms(b.percentile(0.5))}  p99 {ms(b.percentile(0.99))}"
              f"   ratio to baseline {b.rate / base.rate:.2f}")
        print(f"dispatched {len(b.accepted) / prod.dispatch_seconds:8,.0f} msg/s   (all in the outbox after"
              f" {prod.dispatch_seconds:.2f} s; records: {fmt_counts(prod.statuses)})", flush=True)
        intake = await run_intake_only(workdir, args.n, args.connections, args.log_level)
        print(f"intake     {intake.rate:8,.0f} msg/s   p50 {ms(intake.percentile(0.5))}  p99 {ms(intake.percentile(0.99))}"
              f"   (no dispatcher in the process; ratio to baseline {intake.rate / base.rate:.2f})", flush=True)
        crash = await run_crash(workdir, args.n, args.connections, args.log_level, args.crash_mps)
        print(f"crash      killed after {crash.accepted_at_kill} answers ({crash.in_outbox_at_kill} in the outbox then);"
              f" accepted {len(crash.burst.accepted)}, unanswered {crash.burst.unanswered}, never sent {crash.burst.not_sent}")
        print(f"           lost {crash.lost}, duplicated {crash.duplicated}; all accepted in the outbox"
              f" {crash.recovery_seconds:.2f} s after the restart; records: {fmt_counts(crash.statuses)}")
        if not args.no_write:
            write_section(render(env, args, base, base_rates, prod, intake, crash), env)
            print(f"\nwrote the messaging section of {DOC.relative_to(ROOT)}")
        finished = True
        if crash.lost or crash.duplicated:
            print("FAILED: messages lost or duplicated across the crash", file=sys.stderr)
            return 1
        return 0
    finally:
        if finished and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"(server logs and data kept in {workdir})", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.messaging", description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=5000, help="messages per burst (default 5000)")
    parser.add_argument("--connections", type=int, default=64, help="keep-alive connections of the load generator (default 64)")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"], help="the server's (default info)")
    parser.add_argument("--crash-mps", type=float, default=None, help="outbox mps limit in the crash scenario (default: none)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (server logs, data)")
    parser.add_argument("--serve-baseline", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_baseline is not None:
        serve_baseline(args.serve_baseline)
        return 0
    if args.n < 2:
        parser.error("--n must be at least 2")
    run = asyncio.run
    try:
        import uvloop

        run = uvloop.run
    except ImportError:  # pragma: no cover
        pass
    return run(main_async(args))


if __name__ == "__main__":
    raise SystemExit(main())
