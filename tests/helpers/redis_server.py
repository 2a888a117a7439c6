"""A real ``redis-server`` for tests: on a free loopback port, in its own
temporary directory, with persistence off. Never the machine's own Redis.

- ``async with redis_server() as server:`` starts one for a test and stops it
  after (``server.url``; ``server.stop()`` / ``server.start()`` / ``restart()``
  on the same port, for outage tests).
- The ``shared_redis_server`` fixture (session scope) starts one for the whole
  run, and ``redis_url`` hands each test that server's URL with the data
  flushed (FLUSHALL), so tests stay independent and the suite stays fast.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator, Iterator

import pytest

REDIS_SERVER = shutil.which("redis-server")


def redis_available() -> bool:
    return REDIS_SERVER is not None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _resp(*args: str | bytes) -> bytes:
    out = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        data = arg.encode() if isinstance(arg, str) else arg
        out.append(f"${len(data)}\r\n".encode() + data + b"\r\n")
    return b"".join(out)


class RedisServer:
    """One redis-server process. ``port=None`` picks a free port once; it is kept
    across stop/start so clients can reconnect to the same URL."""

    def __init__(self, port: int | None = None, *, extra_args: tuple[str, ...] = ()) -> None:
        self._fixed_port = port is not None
        self._extra_args = extra_args
        self.port = port if port is not None else free_port()
        self.directory = Path(tempfile.mkdtemp(prefix="redis-test-"))
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 5.0) -> None:
        if REDIS_SERVER is None:
            raise RuntimeError("redis-server is not installed")
        for _ in range(3):
            self._proc = subprocess.Popen(
                [
                    REDIS_SERVER,
                    "--port", str(self.port),
                    "--bind", "127.0.0.1",
                    "--save", "",
                    "--appendonly", "no",
                    "--dir", str(self.directory),
                    "--daemonize", "no",
                    "--loglevel", "warning",
                    "--logfile", str(self.directory / "redis.log"),
                    *self._extra_args,
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )  # fmt: skip
            if self._wait_ready(timeout):
                return
            self.stop()
            if self._fixed_port:
                break
            self.port = free_port()  # someone took the port between the probe and the bind
        log = (self.directory / "redis.log").read_text(errors="replace") if (self.directory / "redis.log").exists() else ""
        raise RuntimeError(f"redis-server did not start on port {self.port}: {log[-2000:]}")

    def _wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                return False
            try:
                if self.command("PING") == "PONG":
                    return True
            except OSError:
                pass
            except RuntimeError as exc:
                if not str(exc).startswith("LOADING"):  # an AOF being read back: ready soon
                    raise
            time.sleep(0.01)
        return False

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()  # persistence is off, so SIGTERM exits at once
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections stay open and nothing answers,
        as with a hung server or a network partition."""
        if self._proc is not None:
            self._proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self._proc is not None:
            self._proc.send_signal(signal.SIGCONT)

    def restart(self) -> None:
        self.stop()
        self.start()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    def command(self, *args: str | bytes) -> Any:
        """Send one command and read a simple reply (status, error, integer, bulk)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
            s.sendall(_resp(*args))
            reader = s.makefile("rb")
            line = reader.readline()
            kind, rest = line[:1], line[1:].rstrip(b"\r\n").decode()
            if kind == b"+":
                return rest
            if kind == b"-":
                raise RuntimeError(rest)
            if kind == b":":
                return int(rest)
            if kind == b"$":
                n = int(rest)
                return None if n < 0 else reader.read(n + 2)[:-2]
            raise RuntimeError(f"unexpected reply {line!r}")

    def flushall(self) -> None:
        self.command("FLUSHALL")
        # Tests that count commands (INFO commandstats) start from zero.
        self.command("CONFIG", "RESETSTAT")

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


@asynccontextmanager
async def redis_server(port: int | None = None, *, extra_args: tuple[str, ...] = ()) -> AsyncIterator[RedisServer]:
    """A redis-server of this test's own, stopped (and its directory removed) after."""
    server = RedisServer(port, extra_args=extra_args)
    await asyncio.to_thread(server.start)
    try:
        yield server
    finally:
        await asyncio.to_thread(server.cleanup)


@pytest.fixture(scope="session")
def shared_redis_server() -> Iterator[RedisServer]:
    """One redis-server for the whole run; its absence fails the tests that need it."""
    if not redis_available():
        # Never a silent skip: `make test` installs redis-server, so its absence is a broken setup.
        pytest.fail("redis-server is not installed (make test installs it from Debian's packages)")
    with RedisServer() as server:
        yield server


@pytest.fixture
def redis_url(shared_redis_server: RedisServer) -> str:
    """The shared server's URL, its data flushed for this test."""
    shared_redis_server.flushall()
    return shared_redis_server.url
