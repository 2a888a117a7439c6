"""The server serving https and wss itself: real TLS handshakes verified
against a CA made in the test, the Python SDK over wss, plain http to the TLS
port, the minimum version, and certificate renewal without dropping sessions
(in-process, and SIGHUP to a real ``presence-server serve`` process)."""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl
import sys
from pathlib import Path
from typing import AsyncIterator

import aiohttp
import pytest
from cryptography import x509
from websockets.exceptions import InvalidMessage

from presence_client import PresenceClient
from presence_server.config import parse_config
from tests.helpers.messaging import basic
from tests.helpers.process import ServerProcess, free_port
from tests.helpers.servers import RunningServer, TestAccount, start_server
from tests.helpers.tls import ServerPair, TestCA
from tests.helpers.wsclient import RawClient


@pytest.fixture
def ca(tmp_path: Path) -> TestCA:
    return TestCA(tmp_path)


@pytest.fixture
async def tls_server(ca: TestCA) -> AsyncIterator[tuple[RunningServer, ServerPair]]:
    pair = ca.issue()
    running = await start_server(server={"tls_cert": str(pair.cert_path), "tls_key": str(pair.key_path)})
    try:
        yield running, pair
    finally:
        await running.node.stop()


def urls(running: RunningServer) -> tuple[str, str]:
    port = running.node.port
    return f"https://127.0.0.1:{port}", f"wss://127.0.0.1:{port}/v1/connect"


async def served_serial(port: int, context: ssl.SSLContext) -> int:
    """The serial number of the certificate a new handshake gets."""
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        return x509.load_der_x509_certificate(der).serial_number
    finally:
        writer.close()


async def test_https_and_wss_verified_against_the_ca(tls_server: tuple[RunningServer, ServerPair], ca: TestCA) -> None:
    running, pair = tls_server
    https, wss = urls(running)
    context = ca.client_context()
    assert running.node.config.server.base_url() == f"https://127.0.0.1:{running.node.config.server.port}"

    # A raw websockets client over wss, checking the certificate and host name.
    raw = await RawClient.open(wss, ssl=context)
    assert (await raw.register(running.token("alice")))["type"] == "registered"
    # The Python SDK with an ssl context.
    async with PresenceClient(wss, running.token("alice"), ssl=context, reconnect=False) as client:
        assert client.connected and client.identity == "alice"
        # REST over https with an aiohttp client sees both sessions.
        acc = running.account
        async with aiohttp.ClientSession(headers=basic(acc.sid, acc.auth_token)) as http:
            async with http.get(f"{https}/v1/Accounts/{acc.sid}/Presence/alice", ssl=context) as resp:
                assert resp.status == 200, await resp.text()
                body = await resp.json()
        assert body["identity"] == "alice" and len(body["sessions"]) == 2
    await raw.close()
    assert await served_serial(running.node.port, context) == pair.serial

    # A client that does not trust the CA refuses the server: it is real TLS.
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await http.get(f"{https}/healthz", ssl=ssl.create_default_context())


async def test_the_sdk_refuses_an_ssl_context_for_a_plain_url() -> None:
    with pytest.raises(ValueError, match="ssl is for wss:// URLs"):
        PresenceClient("ws://127.0.0.1:1/v1/connect", "t", ssl=ssl.create_default_context())
    with pytest.raises(TypeError, match="ssl must be an ssl.SSLContext"):
        PresenceClient("wss://127.0.0.1:1/v1/connect", "t", ssl=True)  # type: ignore[arg-type]


async def test_plain_http_to_the_tls_port_fails_cleanly(
    tls_server: tuple[RunningServer, ServerPair], ca: TestCA, caplog: pytest.LogCaptureFixture
) -> None:
    running, _ = tls_server
    https, wss = urls(running)
    port = running.node.port
    caplog.set_level(logging.DEBUG)
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.ClientError):
            async with asyncio.timeout(5):  # refused at once: no hang until some timeout
                await http.get(f"http://127.0.0.1:{port}/healthz")
    with pytest.raises(InvalidMessage, match="did not receive a valid HTTP response"):
        async with asyncio.timeout(5):
            await RawClient.open(f"ws://127.0.0.1:{port}/v1/connect")
    # The server goes on serving TLS clients, and logged no error for the garbage.
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{https}/healthz", ssl=ca.client_context()) as resp:
            assert resp.status == 200
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert running.node.gateway.accepting


async def test_the_minimum_tls_version_is_enforced(ca: TestCA) -> None:
    pair = ca.issue()
    running = await start_server(server={"tls_cert": str(pair.cert_path), "tls_key": str(pair.key_path), "tls_min_version": "1.3"})
    try:
        old = ca.client_context()
        old.maximum_version = ssl.TLSVersion.TLSv1_2
        # Refused in the handshake: an alert (SSLError) or the connection dropped.
        with pytest.raises((ssl.SSLError, ConnectionResetError)):
            await served_serial(running.node.port, old)
        assert await served_serial(running.node.port, ca.client_context()) == pair.serial
    finally:
        await running.node.stop()


async def test_a_renewed_certificate_is_served_without_dropping_sessions(tls_server: tuple[RunningServer, ServerPair], ca: TestCA) -> None:
    running, first = tls_server
    _, wss = urls(running)
    context = ca.client_context()
    session = await RawClient.open(wss, ssl=context)
    assert (await session.register(running.token("alice")))["type"] == "registered"

    renewed = ca.issue()  # same paths, new certificate and key (a certbot renewal)
    assert renewed.serial != first.serial and renewed.cert_path == first.cert_path
    server = parse_config({"server": {"tls_cert": str(renewed.cert_path), "tls_key": str(renewed.key_path)}}, environ={}).server
    assert running.node.reload_tls(server)
    assert await served_serial(running.node.port, context) == renewed.serial
    # The session opened before the reload is still up and answers.
    await session.send({"type": "ping"})
    assert (await session.recv_type("pong"))["type"] == "pong"

    # A bad renewal (the key of another certificate) is refused; the last good pair stays.
    stray = ca.issue("stray")
    bad = server.model_copy(update={"tls_key": str(stray.key_path)})
    assert not running.node.reload_tls(bad)
    assert await served_serial(running.node.port, context) == renewed.serial
    await session.close()


async def test_sighup_reloads_the_certificate_of_a_running_process(ca: TestCA, tmp_path: Path) -> None:
    pair = ca.issue()
    account = TestAccount()
    port = free_port()
    config = tmp_path / "presence.toml"
    # The certificate by relative path, the auth token by reference: both next to the config file.
    (tmp_path / "auth-token").write_text(account.auth_token + "\n")
    config.write_text(
        f"""
[server]
host = "127.0.0.1"
port = {port}
tls_cert = "{pair.cert_path.name}"
tls_key = "{pair.key_path.name}"
shutdown_grace = 0.5

[engine]
data_dir = "{tmp_path / 'data'}"

[logging]
format = "json"

[[accounts]]
sid = "{account.sid}"
auth_token = {{ file = "auth-token" }}

[[accounts.api_keys]]
sid = "{account.key_sid}"
secret = "{account.key_secret}"
"""
    )
    context = ca.client_context()
    argv = [sys.executable, "-m", "presence_server.cli", "serve", "--config", str(config)]
    proc = ServerProcess(argv, port, tmp_path / "server.log", tmp_path, ssl=context)
    await proc.start()
    try:
        assert proc.proc is not None
        async with aiohttp.ClientSession(headers=basic(account.sid, account.auth_token)) as http:
            async with http.get(f"{proc.url}/v1/Accounts/{account.sid}/Presence/alice", ssl=context) as resp:
                assert resp.status == 200  # the auth token came from the file
        assert await served_serial(port, context) == pair.serial
        renewed = ca.issue()
        proc.proc.send_signal(signal.SIGHUP)
        for _ in range(100):
            if await served_serial(port, context) == renewed.serial:
                break
            await asyncio.sleep(0.05)
        assert await served_serial(port, context) == renewed.serial
        assert proc.proc.poll() is None  # SIGHUP no longer ends the process
        assert "TLS certificate reloaded" in proc.log_path.read_text()
    finally:
        proc.stop()
