"""The real command line: `serve --dev` as a process, `token`, SIGTERM."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import signal
import socket
import sys
from pathlib import Path

import aiohttp

from tests.helpers.wsclient import RawClient

EXE = [sys.executable, "-m", "presence_server.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def run(*args: str, cwd: Path) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(*EXE, *args, cwd=cwd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_dev_server_quick_start(tmp_path: Path) -> None:
    """The README's quick start: serve --dev, mint a token, connect, curl presence, stop."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    proc = await asyncio.create_subprocess_exec(
        *EXE, "serve", "--dev", "--port", str(port), cwd=tmp_path, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        banner = ""
        while "call yourself" not in banner:
            line = await asyncio.wait_for(proc.stdout.readline(), 20)
            assert line, "server exited early"
            banner += line.decode()
        account = re.search(r"account\s+(AC[0-9a-f]{32})", banner)
        auth = re.search(r"auth token\s+(\S+)", banner)
        assert account and auth and "token --identity alice" in banner
        secrets_file = tmp_path / ".presence-dev" / "account.json"
        assert oct(secrets_file.stat().st_mode & 0o777) == "0o600"
        assert json.loads(secrets_file.read_text())["sid"] == account.group(1)

        code, token, _ = await run("token", "--identity", "alice", cwd=tmp_path)
        assert code == 0
        client = await RawClient.open(f"ws://127.0.0.1:{port}/v1/connect")
        assert (await client.register(token.strip()))["type"] == "registered"

        creds = base64.b64encode(f"{account.group(1)}:{auth.group(1)}".encode()).decode()
        async with aiohttp.ClientSession() as http:
            url = f"http://127.0.0.1:{port}/v1/Accounts/{account.group(1)}/Presence/alice"
            async with http.get(url, headers={"Authorization": f"Basic {creds}"}) as resp:
                assert resp.status == 200 and (await resp.json())["status"] == "available"
            # The demo is served, and the dashboard opens with the operator credentials
            # dev mode made (printed once, kept owner-only next to the account).
            async with http.get(f"http://127.0.0.1:{port}/demo") as resp:
                assert resp.status == 200 and "Demo softphone" in await resp.text()
            operator = re.search(r"user (\S+), password (\S+)\)", banner)
            assert operator and oct((tmp_path / ".presence-dev" / "operator.json").stat().st_mode & 0o777) == "0o600"
            async with http.get(f"http://127.0.0.1:{port}/dashboard") as resp:
                assert resp.status == 401
            op_creds = base64.b64encode(":".join(operator.groups()).encode()).decode()
            async with http.get(f"http://127.0.0.1:{port}/dashboard", headers={"Authorization": f"Basic {op_creds}"}) as resp:
                assert resp.status == 200

        # The README walkthrough: alice calls bob through the dev instruction app...
        code, bob_token, _ = await run("token", "--identity", "bob", cwd=tmp_path)
        bob = await RawClient.open(f"ws://127.0.0.1:{port}/v1/connect")
        assert (await bob.register(bob_token.strip(), capabilities=["voice"]))["type"] == "registered"
        await client.send({"type": "call", "to": "client:bob"})
        assert (await client.recv_type("call_created"))["call"].startswith("CA")
        invite = await bob.recv_type("invite")
        assert invite["from"] == "client:alice"
        await bob.send({"type": "reject", "call": invite["call"]})
        assert (await client.recv_type("call_progress"))["status"] == "completed"
        # ...and once bob is gone, the call falls back to an SMS to his phone.
        await bob.send({"type": "bye"})
        await bob.closed()
        await client.send({"type": "call", "to": "client:bob"})
        await client.recv_type("call_progress")
        for _ in range(100):
            code, printed, _ = await run("outbox", cwd=tmp_path)
            if "Missed call from client:alice" in printed:
                break
            await asyncio.sleep(0.1)
        assert "+15550100002" in printed and "Missed call from client:alice" in printed

        proc.send_signal(signal.SIGTERM)
        assert (await client.recv_type("reconnect"))["type"] == "reconnect"
        assert (await client.closed())[0] == 4012
        assert await asyncio.wait_for(proc.wait(), 20) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_token_command_errors(tmp_path: Path) -> None:
    code, _, err = await run("token", "--identity", "alice", "--ttl", "90000", cwd=tmp_path)
    assert code == 2 and "--ttl" in err
    cfg = tmp_path / "c.toml"
    cfg.write_text("")
    code, _, err = await run("token", "--identity", "alice", "--config", str(cfg), cwd=tmp_path)
    assert code == 2 and "no account" in err
    code, _, err = await run("token", "--identity", "bad name", cwd=tmp_path)
    assert code == 2 and "identity" in err


async def test_serve_refuses_a_bad_config(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[gateway]\nrate = -1\n")
    code, _, err = await run("serve", "--config", str(cfg), cwd=tmp_path)
    assert code == 2 and "gateway.rate" in err
