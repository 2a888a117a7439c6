"""A server as a real subprocess (``presence-server serve --config``): started,
waited for on /healthz, killed with SIGKILL or stopped with SIGTERM. Used by
the crash tests and the benchmarks, which must see a real process die."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from ssl import SSLContext

import aiohttp

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """A server subprocess on 127.0.0.1:port, its output in a log file."""

    def __init__(self, argv: list[str], port: int, log_path: Path, cwd: Path, ssl: SSLContext | None = None) -> None:
        self.argv = argv
        self.port = port
        self.log_path = log_path
        self.cwd = cwd
        self.ssl = ssl  # a server that serves TLS: https, verified with this context
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.ssl else 'http'}://127.0.0.1:{self.port}"

    async def start(self, health_path: str = "/healthz", timeout: float = 60.0) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.argv, cwd=self.cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as http:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{self.argv} exited with {self.proc.returncode}:\n{self.log_tail()}")
                try:
                    async with http.get(self.url + health_path, timeout=aiohttp.ClientTimeout(total=2), ssl=self.ssl or True) as resp:
                        if resp.status == 200:
                            return
                except (aiohttp.ClientError, asyncio.TimeoutError):
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.argv} did not answer within {timeout} s:\n{self.log_tail()}")
                await asyncio.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL, now (no clean-up of any kind in the server)."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"
