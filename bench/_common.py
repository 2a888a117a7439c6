"""What every scenario of ``bench/`` shares: the machine's description, the
open-file limit, percentiles, the product's configuration and tokens, reading a
process's memory and CPU time, the py-spy profile, the plots, and rewriting one
section of docs/benchmarks.md.

Modules whose name starts with ``_`` are helpers, not scenarios: ``make bench``
runs ``bench/[!_]*.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import resource
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterable, Sequence

from tests.helpers.process import ServerProcess, free_port

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"
IMAGES = ROOT / "docs" / "images"
TARGETS_START = "<!-- bench:targets:start -->"
TARGETS_END = "<!-- bench:targets:end -->"
# One hidden line per target in a scenario's section; the targets table is rebuilt from them.
TARGET_RE = re.compile(r"<!-- target (\{.*?\}) -->")
SECTION_START_RE = re.compile(r"^<!-- bench:([a-z0-9-]+):start -->$", re.MULTILINE)


# -- the machine ----------------------------------------------------------------------


def version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def raise_nofile(wanted: int = 65536) -> tuple[int, int]:
    """Raise the soft open-file limit to ``wanted`` (and the hard one too, when
    this process may: root). Child processes (the servers) inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
            soft, hard = wanted, wanted
        except (ValueError, OSError):
            pass
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def environment(*libraries: str) -> dict[str, str]:
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    env = {
        "CPU": f"{os.cpu_count()} CPUs ({usable} usable), {cpu_model()}",
        "OS": f"{platform.system()} {platform.release()} {platform.machine()}",
        "Python": f"{platform.python_implementation()} {platform.python_version()}",
        "aiohttp": version("aiohttp"),
        "uvloop": version("uvloop"),
    }
    for lib in libraries:
        env[lib] = version(lib)
    return env


def sqlite_version() -> str:
    return sqlite3.sqlite_version


def print_environment(env: dict[str, str], nofile: tuple[int, int]) -> None:
    for k, v in env.items():
        print(f"{k:9} {v}")
    print(f"{'NOFILE':9} {nofile[0]} (soft limit)", flush=True)


def start_run(*libraries: str, nofile: int = 65536) -> tuple[dict[str, str], tuple[int, int]]:
    """What every scenario does first: raise the open-file limit, then print
    the machine and the versions its figures depend on."""
    limits = raise_nofile(nofile)
    env = environment(*libraries)
    print_environment(env, limits)
    return env, limits


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


# -- figures --------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The q-quantile (0..1) by the nearest-rank rule (no interpolation); NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(q * len(ordered))))]


def ms(seconds: float) -> str:
    if seconds != seconds:  # NaN
        return "n/a"
    if seconds < 0.001:
        return f"{seconds * 1e6:.0f} µs"
    return f"{seconds * 1000:.1f} ms" if seconds < 10 else f"{seconds:.2f} s"


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def fmt_ratio(r: float) -> str:
    return "n/a" if r != r else f"{r:.2f}"


def utc_now() -> str:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


# -- processes ------------------------------------------------------------------------


def rss_kib(pid: int) -> int:
    """Resident memory (VmRSS) of a process, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime, stime (fields 14, 15 of stat)


def pid_of(server: ServerProcess) -> int:
    assert server.proc is not None
    return server.proc.pid


def helper_server(workdir: Path, kind: str, *args: str, health: str = "/healthz") -> ServerProcess:
    """One of bench._baselines' servers (a bare WebSocket server, a hello world,
    the instruction server) as its own process."""
    port = free_port()
    argv = [sys.executable, "-m", "bench._baselines", kind, str(port), *args]
    return ServerProcess(argv, port, workdir / f"{kind}-{port}.log", workdir)


def uvloop_run(coro: Awaitable[Any]) -> Any:
    try:
        import uvloop

        return uvloop.run(coro)  # type: ignore[arg-type]
    except ImportError:  # pragma: no cover
        return asyncio.run(coro)  # type: ignore[arg-type]


# -- the product ----------------------------------------------------------------------


@dataclass
class BenchAccount:
    """One account of the product's config file, with an API key to mint tokens."""

    sid: str = field(default_factory=lambda: "AC" + secrets.token_hex(16))
    auth_token: str = field(default_factory=lambda: secrets.token_hex(16))
    key_sid: str = field(default_factory=lambda: "SK" + secrets.token_hex(16))
    key_secret: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    app_sid: str = field(default_factory=lambda: "AP" + secrets.token_hex(16))

    def token(self, identity: str, *, voice: bool = False, subscribe: Iterable[str] | bool = True, ttl: float = 4 * 3600) -> str:
        from protocol.tokens import mint_token

        grants: dict[str, Any] = {
            "identity": identity,
            "presence": {"publish": True, "subscribe": subscribe if isinstance(subscribe, bool) else list(subscribe)},
        }
        if voice:
            grants["voice"] = {"incoming": {"allow": True}, "outgoing": {"application_sid": self.app_sid}}
        return mint_token(
            key_sid=self.key_sid, account_sid=self.sid, identity=identity, secret=self.key_secret, now=time.time(), ttl=ttl,
            grants=grants,
        )

    def basic(self) -> str:
        import base64

        return "Basic " + base64.b64encode(f"{self.sid}:{self.auth_token}".encode()).decode()

    def toml(self, extra: str = "") -> str:
        return f"""
[[accounts]]
sid = "{self.sid}"
auth_token = "{self.auth_token}"
{extra}
[[accounts.api_keys]]
sid = "{self.key_sid}"
secret = "{self.key_secret}"
"""


def product_config(
    port: int, data_dir: Path, account: BenchAccount, *, log_level: str = "info", engine_url: str | None = None,
    sections: str = "", account_extra: str = "", account_tables: str = "",
) -> str:
    """The product's config file: one account with an API key, the embedded
    engine (or the redis engine at ``engine_url``), JSON logs at ``log_level``
    (the default ``info``, as a deployment runs)."""
    engine = f'kind = "redis"\nurl = "{engine_url}"' if engine_url else 'kind = "memory"'
    return f"""
[server]
host = "127.0.0.1"
port = {port}
shutdown_grace = 0.5

[engine]
{engine}
data_dir = "{data_dir}"

[logging]
format = "json"
level = "{log_level}"

# The load generator is one address and one account: the per-address and
# per-account limits would refuse it, and a benchmark measures capacity.
[gateway]
max_connections_per_address = 0
max_sessions_per_account = 0

[http]
rate = 1000000.0
burst = 1000000
{sections}
{account.toml(account_extra)}
{account_tables}
"""


def product_server(
    workdir: Path, account: BenchAccount, *, name: str = "server", roles: str | None = None, wrapper: list[str] | None = None,
    tree: Path | None = None, **config: Any,
) -> ServerProcess:
    """``presence-server serve --config`` as a subprocess (``wrapper``: the
    interpreter arguments that run the CLI some other way, e.g. bench._memserver;
    ``tree``: run the server from another checkout, e.g. a ``git worktree`` of an
    earlier commit, for before/after figures from the same run)."""
    port = free_port()
    data_dir = workdir / f"data-{name}-{port}"
    path = workdir / f"{name}-{port}.toml"
    text = product_config(port, data_dir, account, **config)
    if tree is not None:
        text = config_for_tree(text, tree)
        wrapper = ["-c", f"import runpy, sys; sys.path.insert(0, {str(tree)!r});"
                         " runpy.run_module('presence_server.cli', run_name='__main__', alter_sys=True)"]
    path.write_text(text)
    argv = [sys.executable, *(wrapper or ["-m", "presence_server.cli"]), "serve", "--config", str(path)]
    if roles is not None:
        argv += ["--roles", roles]
    return ServerProcess(argv, port, workdir / f"{name}-{port}.log", workdir)


def config_for_tree(text: str, tree: Path) -> str:
    """The config without the sections and keys an older checkout does not know
    (its config refuses unknown ones): a name is kept when that tree's config
    module declares a field of that name."""
    known = (tree / "presence_server" / "config.py").read_text()

    def declared(name: str) -> bool:
        return re.search(rf"^\s+{re.escape(name)}\s*:", known, re.MULTILINE) is not None

    kept: list[str] = []
    skipping = False
    for line in text.splitlines():
        header = re.match(r"\s*\[\[?([A-Za-z0-9_.]+)\]\]?\s*$", line)
        if header is not None:
            skipping = not declared(header.group(1).rsplit(".", 1)[-1])
        key = re.match(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*=", line)
        if skipping or (key is not None and not declared(key.group(1))):
            continue
        kept.append(line)
    return "\n".join(kept) + "\n"


def before_note(args: Any) -> str:
    """The sentence that says what the rows labelled "(before)" are, or ""."""
    tree = getattr(args, "before", None)
    if tree is None:
        return ""
    try:
        commit = subprocess.run(["git", "-C", str(tree), "log", "-1", "--format=%h %s"], capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    what = f"commit {commit.split(' ', 1)[0]}" if commit else str(tree)
    return (f"\nRows labelled *(before)*: the product as of {what}, run from a git worktree of it"
            " (`--before PATH`) in the same interleaving as the others, so before and after meet the same machine.\n")


def before_tree(value: str) -> Path:
    """argparse type of ``--before``: a checkout holding presence_server/."""
    path = Path(value).resolve()
    if not (path / "presence_server" / "cli.py").exists():
        raise argparse.ArgumentTypeError(f"{path} holds no presence_server/cli.py")
    return path


class RedisServer:
    """A redis-server of our own on a free port (persistence off), like
    tests/helpers/redis_server.py, without that module's pytest import (the
    bench extra does not install pytest)."""

    def __init__(self) -> None:
        self.exe = shutil.which("redis-server")
        self.port = free_port()
        self.dir = Path(tempfile.gettempdir()) / f"bench-redis-{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        assert self.exe is not None
        self.dir.mkdir(exist_ok=True)
        self.proc = subprocess.Popen(
            [self.exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(self.dir),
             "--daemonize", "no", "--loglevel", "warning", "--logfile", str(self.dir / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        import socket

        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server did not start on {self.port}")

    def commandstats(self) -> dict[str, int]:
        """Commands the server has run so far, by name (INFO commandstats)."""
        import socket

        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            sock.sendall(b"INFO commandstats\r\n")
            data = b""
            while True:
                data += sock.recv(65536)
                head, _, rest = data.partition(b"\r\n")
                if head.startswith(b"$") and len(rest) >= int(head[1:]):
                    break
        counts = {}
        for line in rest.decode().splitlines():
            if line.startswith("cmdstat_"):
                name, _, stats = line[8:].partition(":")
                counts[name] = int(stats.split("calls=", 1)[1].split(",", 1)[0])
        return counts

    def version(self) -> str:
        assert self.exe is not None
        out = subprocess.run([self.exe, "--version"], capture_output=True, text=True, timeout=10).stdout
        return next((w.split("=", 1)[1] for w in out.split() if w.startswith("v=")), out.strip())

    def cleanup(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


# -- profiles (py-spy) ----------------------------------------------------------------


@dataclass
class Profile:
    samples: int
    self_top: list[tuple[str, int]]  # leaf frames (where the CPU was), by samples
    product_top: list[tuple[str, int]]  # presence_server/protocol functions on the stack (inclusive)

    def lines(self, top: int = 8) -> list[str]:
        out = [f"{self.samples} samples"]
        if not self.samples:
            return out
        out.append("self time (leaf frames): " + "; ".join(f"{name} {100 * n / self.samples:.0f}%" for name, n in self.self_top[:top]))
        out.append("product code on the stack (inclusive): " + "; ".join(f"{name} {100 * n / self.samples:.0f}%" for name, n in self.product_top[:top]))
        return out

    def markdown(self, top: int = 10) -> str:
        if not self.samples:
            return "(no samples: py-spy saw the process idle)"
        rows = ["| self time (leaf frame) | share | | product code on the stack (inclusive) | share |", "|---|---|---|---|---|"]
        for i in range(top):
            a = self.self_top[i] if i < len(self.self_top) else ("", 0)
            b = self.product_top[i] if i < len(self.product_top) else ("", 0)
            fa = f"{100 * a[1] / self.samples:.1f}%" if a[0] else ""
            fb = f"{100 * b[1] / self.samples:.1f}%" if b[0] else ""
            rows.append(f"| `{a[0]}` | {fa} | | `{b[0]}` | {fb} |" if a[0] or b[0] else "")
        return "\n".join(r for r in rows if r)


_FRAME_RE = re.compile(r"^(?P<func>.*?) \((?P<file>[^():]+)(?::\d+)?\)$")


def _file_of(frame: str) -> str:
    m = _FRAME_RE.match(frame.strip())
    return m.group("file") if m else ""


def _is_product(frame: str) -> bool:
    path = _file_of(frame)
    if path.endswith("presence_server/cli.py"):
        return False  # the process's entry point: on every stack
    return path.startswith(("presence_server/", "protocol/")) or "/presence_server/" in path or "/protocol/" in path


def _short(frame: str) -> str:
    m = _FRAME_RE.match(frame.strip())
    if not m:
        return frame.strip()
    path = m.group("file")
    for marker in ("/site-packages/", "/lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1].split("/", 1)[-1] if marker == "/lib/python3" else path.split(marker, 1)[1]
    if "/presence_server/" in path:
        path = "presence_server/" + path.split("/presence_server/", 1)[1]
    name = f"{m.group('func')} ({path})"
    if m.group("func") in ("Runner.run", "run_until_complete", "run_forever"):
        # py-spy does not see native frames: time inside uvloop's C code (polling,
        # socket reads and writes, callback dispatch) lands on the frame that
        # started the loop.
        name = "event loop: uvloop C code, syscalls"
    return name


def parse_collapsed(text: str) -> Profile:
    """py-spy's ``--format raw`` output (collapsed stacks: ``a;b;c count``)."""
    leaf: Counter[str] = Counter()
    product: Counter[str] = Counter()
    total = 0
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [f for f in stack.split(";") if f and not f.startswith("process ") and not f.startswith("thread ")]
        if not frames:
            continue
        leaf[_short(frames[-1])] += n
        seen = set()
        for f in frames:
            if _is_product(f):
                name = _short(f)
                if name not in seen:
                    seen.add(name)
                    product[name] += n
    return Profile(total, leaf.most_common(), product.most_common())


class Profiler:
    """py-spy sampling a server process from outside while a phase runs.
    ``None`` from :func:`start_profiler` when py-spy is missing or cannot attach."""

    def __init__(self, pid: int, out: Path, rate: int = 200) -> None:
        self.out = out
        self.proc = subprocess.Popen(
            ["py-spy", "record", "--pid", str(pid), "--rate", str(rate), "--format", "raw", "--output", str(out), "--nonblocking"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )

    def stop(self) -> Profile:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            _, err = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        try:
            if not self.out.exists():
                raise RuntimeError(f"py-spy wrote no profile: {err.decode(errors='replace')[-500:]}")
            return parse_collapsed(self.out.read_text())
        finally:
            if self.out.parent.name.startswith("bench-profile-"):
                import shutil

                shutil.rmtree(self.out.parent, ignore_errors=True)


def py_spy() -> str | None:
    import shutil

    found = shutil.which("py-spy") or (str(Path(sys.executable).parent / "py-spy") if (Path(sys.executable).parent / "py-spy").exists() else None)
    return found


def start_profiler(pid: int, out: Path) -> Profiler | None:
    exe = py_spy()
    if exe is None:
        print("(py-spy is not installed: pip install py-spy, or make bench installs it)", file=sys.stderr)
        return None
    os.environ["PATH"] = str(Path(exe).parent) + os.pathsep + os.environ.get("PATH", "")
    profiler = Profiler(pid, out)
    time.sleep(0.3)
    if profiler.proc.poll() is not None:
        err = profiler.proc.stderr.read().decode(errors="replace") if profiler.proc.stderr else ""
        print(f"(py-spy could not attach: {err.strip()[-300:]})", file=sys.stderr)
        return None
    return profiler


# -- plots ----------------------------------------------------------------------------


def plot(name: str, draw: Callable[[Any], None], *, size: tuple[float, float] = (7, 4)) -> str | None:
    """Draw with matplotlib into docs/images/bench-NAME.png; the path relative to
    docs/ for a Markdown image, or None when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib is not installed: no plot; make bench installs it)", file=sys.stderr)
        return None
    fig, ax = plt.subplots(figsize=size, dpi=100)
    try:
        draw(ax)
        fig.tight_layout()
        IMAGES.mkdir(parents=True, exist_ok=True)
        fig.savefig(IMAGES / f"bench-{name}.png")
    finally:
        plt.close(fig)
    return f"images/bench-{name}.png"


# -- docs/benchmarks.md ---------------------------------------------------------------


def doc_intro(env: dict[str, str]) -> str:
    """The top of docs/benchmarks.md, written when the file does not exist yet."""
    return f"""# Benchmarks

Load figures for presence-server. Each section below is written by one
scenario of `bench/` and names the machine it ran on; the file was started on
{env["CPU"]}, {env["OS"]}, {env["Python"]}.

Run every scenario with

    make bench

or one, e.g. `.venv/bin/python -m bench.messaging --n 5000`. Each scenario
starts the server as its own process, drives it from a separate load-generator
process, and rewrites only its own section (between its
`<!-- bench:NAME:start -->` and `<!-- bench:NAME:end -->` markers).

These runs happen on small, shared, noisy machines where the load generator
shares the CPUs with the server, so absolute numbers move from run to run (by
a factor of two under a neighbour's load): the ratios to the baseline measured
in the same run matter more than the absolute figures. Each scenario's module
docstring (`python -m bench.NAME --help`) says what it measures, against which
baseline, and what its `--profile` option records.
"""


def target_line(scenario: str, target: str, figure: str, met: bool | None) -> str:
    """A hidden line in a section that the targets table is built from."""
    return "<!-- target " + json.dumps({"scenario": scenario, "target": target, "figure": figure, "met": met}, ensure_ascii=False) + " -->"


def slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def heading_of(text: str, scenario: str) -> str | None:
    start = text.find(f"<!-- bench:{scenario}:start -->")
    if start == -1:
        return None
    m = re.compile(r"^## (.+)$", re.MULTILINE).search(text, start)
    return m.group(1) if m else None


def targets_table(text: str) -> str:
    rows = []
    for match in TARGET_RE.finditer(text):
        try:
            t = json.loads(match.group(1))
        except ValueError:
            continue
        met = {True: "**met**", False: "**not met**", None: "not measured"}[t.get("met")]
        heading = heading_of(text, t["scenario"])
        link = f"[{t['scenario']}](#{slug(heading)})" if heading else t["scenario"]
        rows.append(f"| {t['target']} | {t['figure']} | {met} | {link} |")
    body = "\n".join(rows) if rows else "| (no scenario has run yet) | | | |"
    return f"""{TARGETS_START}
## Targets (issue 7)

Rebuilt from the scenarios' sections each time one of them runs: the figure of
each scenario's latest run, so rows can come from different runs. Measured on
small shared machines: see each section for the baseline ratios and the
[analysis](#analysis-what-limits-each-figure) for what limits each figure, and
[Make it fast](#make-it-fast-what-changed-before-and-after) for the before/after figures.

| target | latest figure | | scenario |
|---|---|---|---|
{body}
{TARGETS_END}"""


def write_section(name: str, section: str, env: dict[str, str], path: Path = DOC, *, after: str | None = None) -> None:
    """Replace the text between ``<!-- bench:NAME:start -->`` and its end marker
    (a new section goes after section ``after`` when that exists, else at the
    end), then rebuild the targets table."""
    start_marker, end_marker = f"<!-- bench:{name}:start -->", f"<!-- bench:{name}:end -->"
    text = path.read_text() if path.exists() else doc_intro(env)
    start, end = text.find(start_marker), text.find(end_marker)
    anchor = text.find(f"<!-- bench:{after}:end -->") if after else -1
    if start != -1 and end > start:
        text = text[:start] + section + text[end + len(end_marker) :]
    elif anchor != -1:
        cut = anchor + len(f"<!-- bench:{after}:end -->")
        text = text[:cut] + "\n\n" + section + text[cut:]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    table = targets_table(text)
    start, end = text.find(TARGETS_START), text.find(TARGETS_END)
    if start != -1 and end > start:
        text = text[:start] + table + text[end + len(TARGETS_END) :]
    else:
        # After the introduction, before the first scenario's section.
        first = SECTION_START_RE.search(text)
        text = text[: first.start()] + table + "\n\n" + text[first.start() :] if first else text.rstrip("\n") + "\n\n" + table + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text if text.endswith("\n") else text + "\n")


def write_profile(name: str, command: str, prof: Profile, phase: str, *, no_write: bool = False, after: str | None = None) -> None:
    """The scenario's profile subsection (``bench:NAME-profile``), after its figures."""
    print("\n".join(prof.lines()))
    if no_write:
        return
    env = environment()
    body = f"""
#### Profile of the product ({name})

`{command}` ({utc_now()}): py-spy sampling the product's process at 200 Hz
while {phase}; samples where the process was idle are left out. The left
columns are where the CPU was (the innermost frame), the right ones which of
the product's functions were on the stack.

{prof.markdown()}
"""
    write_section(f"{name}-profile", section(f"{name}-profile", body), env, after=after or name)


def section(name: str, body: str) -> str:
    return f"<!-- bench:{name}:start -->\n{body.strip()}\n<!-- bench:{name}:end -->"


def env_table(env: dict[str, str]) -> str:
    return "| | |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in env.items())


def run_per_engine(parser: argparse.ArgumentParser, args: argparse.Namespace, main_async: Any) -> int:
    """Run a scenario once per engine of ``--engine`` (comma-separated
    ``embedded``, ``redis``), each writing its own section; the worst exit code.
    The redis run is left out, and said so, where redis-server is missing."""
    engines = [e.strip() for e in args.engine.split(",") if e.strip()]
    if not engines or set(engines) - {"embedded", "redis"}:
        parser.error("--engine: embedded, redis (comma-separated)")
    rc = 0
    for engine in engines:
        if engine == "redis" and not shutil.which("redis-server"):
            print("redis-server is not installed (apt-get install redis-server): the redis run is left out", file=sys.stderr)
            continue
        args.engine = engine
        rc = max(rc, int(uvloop_run(main_async(args))))
    return rc
