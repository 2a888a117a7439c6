"""A real server process killed (SIGKILL) in the middle of a burst of messages:
after a restart on the same data_dir, every message that was answered 201 is
sent exactly once.

The outbox is throttled (mps) so that a backlog is still queued when the kill
comes; the embedded engine releases every lease at start, so the queued and the
in-flight messages resume at once. Requests without an answer (in flight at the
kill) were never accepted and are not counted either way.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp

from tests.helpers.process import ServerProcess, free_port

FROM = "+15550001111"
N = 600
CONNECTIONS = 16
MPS = 200  # the outbox's throughput: 600 messages take ~3 s to drain
BURST = 20  # a small token bucket, so the backlog builds up from the start


class Server:
    """``presence-server serve --config`` as a subprocess, on a new port at each
    start (the old one may linger in TIME_WAIT), on the same data_dir."""

    def __init__(self, tmp: Path, data_dir: Path, account_sid: str, auth_token: str) -> None:
        self.tmp = tmp
        self.data_dir = data_dir
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.process: ServerProcess | None = None

    @property
    def url(self) -> str:
        assert self.process is not None
        return self.process.url

    @property
    def proc(self) -> subprocess.Popen[bytes] | None:
        return self.process.proc if self.process else None

    def config(self, port: int) -> str:
        return f"""
[server]
host = "127.0.0.1"
port = {port}
shutdown_grace = 0.5

[engine]
kind = "memory"
data_dir = "{self.data_dir}"

[logging]
level = "warning"

[[accounts]]
sid = "{self.account_sid}"
auth_token = "{self.auth_token}"

[[accounts.phone_numbers]]
number = "{FROM}"

[[providers]]
name = "outbox"
kind = "outbox"
mps = {MPS}
burst = {BURST}
"""

    async def start(self) -> None:
        port = free_port()
        path = self.tmp / f"server-{port}.toml"
        path.write_text(self.config(port))
        argv = [sys.executable, "-m", "presence_server.cli", "serve", "--config", str(path)]
        self.process = ServerProcess(argv, port, self.tmp / "server.log", self.tmp)
        await self.process.start()

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def log(self) -> str:
        return self.process.log_tail(40) if self.process else ""


def outbox_rows(data_dir: Path) -> list[str]:
    """Every message sid in the outbox, one per row, read-only (the server may run)."""
    path = data_dir / "outbox.sqlite3"
    if not path.exists():
        return []
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        conn.execute("PRAGMA busy_timeout=5000")
        return [row[0] for row in conn.execute("SELECT message_sid FROM outbox")]
    finally:
        conn.close()


async def wait_for(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        await asyncio.sleep(0.05)


async def test_sigkill_mid_burst_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    account_sid, auth_token = "AC" + secrets.token_hex(16), secrets.token_hex(16)
    data_dir = tmp_path / "data"
    server = Server(tmp_path, data_dir, account_sid, auth_token)
    headers = {
        "Authorization": "Basic " + base64.b64encode(f"{account_sid}:{auth_token}".encode()).decode(),
        "Content-Type": "application/x-www-form-urlencoded",
    }
    path = f"/2010-04-01/Accounts/{account_sid}/Messages.json"
    bodies = [urlencode({"To": f"+1555{3000000 + i:07d}", "From": FROM, "Body": f"crash test {i}"}) for i in range(N)]

    accepted: list[str] = []
    refused: list[tuple[int, str]] = []  # an answer other than 201 before the kill: a bug
    failed: list[str] = []  # no answer before the kill: a bug
    unanswered = 0  # in flight at the kill: not accepted, not counted
    killed_at: dict[str, int] = {}
    next_index = 0

    await server.start()
    try:
        connector = aiohttp.TCPConnector(limit=CONNECTIONS)
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as http:

            def kill_once() -> None:
                if not killed_at and len(accepted) >= N // 2:
                    server.kill()
                    killed_at["accepted"] = len(accepted)
                    killed_at["outbox"] = len(outbox_rows(data_dir))

            async def client() -> None:  # one keep-alive connection, one request at a time
                nonlocal next_index, unanswered
                while next_index < N and not killed_at:
                    body = bodies[next_index]
                    next_index += 1
                    try:
                        async with http.post(server.url + path, data=body, headers=headers) as resp:
                            status, answer = resp.status, await resp.text()
                            sid = (await resp.json())["sid"] if status == 201 else None
                    except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError) as exc:
                        if killed_at:
                            unanswered += 1
                        else:
                            failed.append(repr(exc))
                        continue
                    if sid is not None:
                        accepted.append(sid)
                        kill_once()
                    else:
                        refused.append((status, answer[:200]))

            await asyncio.gather(*(client() for _ in range(CONNECTIONS)))
    finally:
        server.stop()  # a no-op once killed

    assert killed_at, f"the burst ended before the kill: {len(accepted)} accepted, {refused[:3]} {failed[:3]}"
    assert not refused and not failed, f"before the kill: refused {refused[:3]}, failed {failed[:3]}\n{server.log()}"
    queued_at_kill = killed_at["accepted"] - killed_at["outbox"]
    # The point of the test: a backlog was still queued when the process died.
    assert queued_at_kill > 0, f"nothing was queued at the kill: {killed_at}"
    print(
        f"\nkilled after {killed_at['accepted']} answers ({killed_at['outbox']} in the outbox, {queued_at_kill} queued);"
        f" accepted {len(accepted)}, unanswered {unanswered} (not accepted), never sent {N - next_index}"
    )
    assert len(set(accepted)) == len(accepted)

    await server.start()  # the same data_dir
    try:
        wanted = set(accepted)
        await wait_for(lambda: wanted <= set(outbox_rows(data_dir)), 60, f"the outbox to hold all {len(wanted)} accepted messages")
        rows = outbox_rows(data_dir)
        counts: dict[str, int] = {}
        for sid in rows:
            counts[sid] = counts.get(sid, 0) + 1
        assert not {sid: c for sid, c in counts.items() if c > 1}, "a message is in the outbox twice"
        assert all(counts.get(sid) == 1 for sid in accepted)
        # Anything else in the outbox was committed before the kill but never answered.
        assert len(set(rows) - wanted) <= unanswered

        # The records say 'sent' (the status is written just after the outbox entry).
        statuses: dict[str, str] = {}
        connector = aiohttp.TCPConnector(limit=CONNECTIONS)
        async with aiohttp.ClientSession(connector=connector, headers={"Authorization": headers["Authorization"]}) as http:

            async def status_of(sid: str) -> None:
                async with http.get(f"{server.url}/2010-04-01/Accounts/{account_sid}/Messages/{sid}.json") as resp:
                    assert resp.status == 200, await resp.text()
                    statuses[sid] = (await resp.json())["status"]

            deadline = time.monotonic() + 30
            pending = list(accepted)
            while pending:
                await asyncio.gather(*(status_of(sid) for sid in pending))
                pending = [sid for sid in pending if statuses[sid] != "sent"]
                if pending:
                    assert time.monotonic() < deadline, f"{len(pending)} records not 'sent', e.g. {statuses[pending[0]]}"
                    await asyncio.sleep(0.1)
    finally:
        server.stop()
    assert server.proc is not None and server.proc.returncode == 0, server.log()
