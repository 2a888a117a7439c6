"""Real Chromium for the browser tests: Debian's ``/usr/bin/chromium`` driven
by Playwright (its Python package; never a browser Playwright downloads), and
a dev-mode server as a real subprocess for the pages to talk to.

The pages and the SDK run against a real server on the real clock: WebRTC
needs real time, and a subprocess is what ``make run`` starts.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.helpers.process import ROOT, ServerProcess, free_port

CHROMIUM = "/usr/bin/chromium"
# The flags the issue fixes, plus one: without it Chromium hides host ICE
# candidates behind mDNS names that this machine cannot resolve, and two pages
# on one machine could not connect. Playwright itself starts every launch
# with a fresh, empty --user-data-dir (a temporary directory it removes).
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
]
ARTIFACTS = ROOT / "test-artifacts"

OPERATOR = ("operator", "op-secret-e2e-0123456789")


@dataclass
class DevServer:
    process: ServerProcess
    workdir: Path
    account: dict[str, Any]

    @property
    def url(self) -> str:
        return self.process.url

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://") + "/v1/connect"

    @property
    def account_sid(self) -> str:
        return str(self.account["sid"])

    @property
    def auth(self) -> tuple[str, str]:
        return self.account["sid"], self.account["auth_token"]


def start_dev_server(extra_config: str = "") -> DevServer:
    """``presence-server serve --dev`` in a fresh directory (its own dev
    account and data), with operator credentials and a short in-app ack timeout."""
    workdir = Path(tempfile.mkdtemp(prefix="ps-e2e-"))
    port = free_port()
    config = workdir / "config.toml"
    config.write_text(
        f"""
[server]
host = "127.0.0.1"
port = {port}

[operator]
username = "{OPERATOR[0]}"
password = "{OPERATOR[1]}"

[signaling]
message_ack_timeout = 3.0
drain_timeout = 1.0

[engine]
data_dir = "{workdir / 'data'}"
{extra_config}
"""
    )
    process = ServerProcess(
        [sys.executable, "-m", "presence_server.cli", "serve", "--dev", "--config", str(config)],
        port,
        workdir / "server.log",
        workdir,
    )
    # In a thread: Playwright's sync API keeps an event loop running in this one.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(lambda: asyncio.run(process.start())).result()
    account = json.loads((workdir / ".presence-dev" / "account.json").read_text())
    return DevServer(process, workdir, account)


def stop_dev_server(server: DevServer) -> None:
    server.process.stop()
    if os.environ.get("KEEP_E2E_DIRS") is None:
        shutil.rmtree(server.workdir, ignore_errors=True)


def screenshot_path(name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS / name
