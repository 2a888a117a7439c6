"""Secrets never reach the logs.

A real server process (``presence-server serve``, JSON logs at debug level,
its stderr captured) on the redis engine (a redis-server that requires a
password), with an http carrier (Basic and bearer credentials), an SMPP
carrier (one bind with the right password, one with a wrong one), an
instruction app and a status-callback URL with credentials in their URLs,
carrier ingress and operator credentials. The test drives it through
successes and failures - REST with right and wrong credentials, sessions with
good, tampered and expired tokens (one sent in the URL too), renewals, sends
that succeed and fail, callbacks that fail and are retried, a revoked key -
then greps everything the process wrote for every secret it was given.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from protocol.addresses import new_sid
from protocol.tokens import mint_token
from tests.helpers.carrier import FakeCarrier
from tests.helpers.instructions import InstructionServer
from tests.helpers.process import ServerProcess, free_port
from tests.helpers.redis_server import redis_server
from tests.helpers.smsc import SmscSimulator
from tests.helpers.wsclient import RawClient

NUMBER = "+15550001111"


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


class Secrets:
    """Every secret the server is given or shown, each unlike anything else in a log."""

    def __init__(self) -> None:
        self.account_sid, self.key_sid, self.app_sid = new_sid("AC"), new_sid("SK"), new_sid("AP")
        self.auth_token = secrets.token_hex(16)  # also the webhook signing key
        self.key_secret = secrets.token_urlsafe(32)
        self.other_sid, self.other_token = new_sid("AC"), secrets.token_hex(16)
        self.redis_password = "redis-" + secrets.token_hex(12)
        self.smpp_password = secrets.token_hex(4)  # SMPP passwords are at most 8 characters
        self.smpp_wrong_password = secrets.token_hex(4)
        self.http_password = "carrier-" + secrets.token_hex(12)
        self.http_bearer = "bearer-" + secrets.token_hex(16)
        self.ingress_password = "ingress-" + secrets.token_hex(12)
        self.operator_password = "operator-" + secrets.token_hex(12)
        self.app_url_password = "app-" + secrets.token_hex(8)  # in the instruction URL's userinfo
        self.hook_url_password = "hook-" + secrets.token_hex(8)  # in the status callback URL's userinfo
        self.wrong_password = "wrong-" + secrets.token_hex(12)  # what a caller guessed
        self.tokens: list[str] = []  # access tokens minted during the run

    def token(self, identity: str, *, now: float | None = None, ttl: float = 600) -> str:
        grants = {
            "identity": identity,
            "presence": {"publish": True, "subscribe": True},
            "voice": {"incoming": {"allow": True}, "outgoing": {"application_sid": self.app_sid}},
        }
        token = mint_token(
            key_sid=self.key_sid, account_sid=self.account_sid, identity=identity, secret=self.key_secret,
            now=time.time() if now is None else now, ttl=ttl, grants=grants,
        )
        self.tokens.append(token)
        return token

    def all(self) -> dict[str, str]:
        found = {
            "auth token": self.auth_token,
            "other account's auth token": self.other_token,
            "API key secret": self.key_secret,
            "redis password": self.redis_password,
            "smpp password": self.smpp_password,
            "wrong smpp password": self.smpp_wrong_password,
            "http carrier password": self.http_password,
            "http carrier bearer": self.http_bearer,
            "ingress password": self.ingress_password,
            "operator password": self.operator_password,
            "instruction URL password": self.app_url_password,
            "status callback URL password": self.hook_url_password,
            "guessed password": self.wrong_password,
            "Basic header (auth token)": _basic(self.account_sid, self.auth_token).split()[1],
            "Basic header (API key)": _basic(self.key_sid, self.key_secret).split()[1],
            "Basic header (wrong)": _basic(self.account_sid, self.wrong_password).split()[1],
            "Basic header (http carrier)": _basic("carrier-user", self.http_password).split()[1],
            "Basic header (ingress)": _basic("carrier", self.ingress_password).split()[1],
        }
        for i, token in enumerate(self.tokens):
            found[f"access token {i}"] = token
            found[f"access token {i} signature"] = token.rsplit(".", 1)[1]
        return found


def config(s: Secrets, port: int, redis_url: str, ins: InstructionServer, carrier: FakeCarrier, smsc: SmscSimulator, data_dir: Path) -> str:
    voice_url = f"http://appuser:{s.app_url_password}@127.0.0.1:{ins.port}/voice"
    return f"""
[server]
host = "127.0.0.1"
port = {port}
shutdown_grace = 0.5

[engine]
kind = "redis"
url = "{redis_url}"
data_dir = "{data_dir}"

[logging]
level = "debug"
format = "json"

[security]
allowed_private_endpoints = ["127.0.0.1:{ins.port}", "127.0.0.1:{carrier.url.split(':')[2].split('/')[0]}"]

[signaling]
message_ack_timeout = 1.0

[messaging]
poll_interval = 0.05

[operator]
username = "ops"
password = "{s.operator_password}"

[[providers]]
name = "outbox"
kind = "outbox"
inbound_username = "carrier"
inbound_password = "{s.ingress_password}"

[[providers]]
name = "carrier-basic"
kind = "http"
url = "{carrier.url}"
auth_username = "carrier-user"
auth_password = "{s.http_password}"
timeout = 2.0

[[providers]]
name = "carrier-bearer"
kind = "http"
url = "{carrier.url}"
auth_bearer = "{s.http_bearer}"
timeout = 2.0

[[providers]]
name = "smpp-good"
kind = "smpp"
host = "127.0.0.1"
port = {smsc.port}
system_id = "esme"
password = "{s.smpp_password}"
reconnect_max = 0.5

[[providers]]
name = "smpp-bad"
kind = "smpp"
host = "127.0.0.1"
port = {smsc.port}
system_id = "esme"
password = "{s.smpp_wrong_password}"
reconnect_max = 0.5

[[routes]]
name = "basic"
prefixes = ["+1555111"]
providers = [{{name = "carrier-basic"}}]

[[routes]]
name = "bearer"
prefixes = ["+1555222"]
providers = [{{name = "carrier-bearer"}}]

[[routes]]
name = "smpp"
prefixes = ["+1555333"]
providers = [{{name = "smpp-good"}}]

[[routes]]
name = "smpp-bad"
prefixes = ["+1555444"]
providers = [{{name = "smpp-bad"}}]

[[routes]]
name = "rest"
providers = [{{name = "outbox"}}]

[[accounts]]
sid = "{s.account_sid}"
auth_token = "{s.auth_token}"

[[accounts.api_keys]]
sid = "{s.key_sid}"
secret = "{s.key_secret}"

[[accounts.identities]]
identity = "alice"
phone = "+15550100001"

[[accounts.applications]]
sid = "{s.app_sid}"
voice_url = "{voice_url}"

[[accounts.phone_numbers]]
number = "{NUMBER}"
voice_url = "{voice_url}"
sms_url = "http://appuser:{s.app_url_password}@127.0.0.1:{ins.port}/sms"

[[accounts]]
sid = "{s.other_sid}"
auth_token = "{s.other_token}"
"""


async def _rest(http: aiohttp.ClientSession, base: str, method: str, path: str, authorization: str, **kw: Any) -> int:
    async with http.request(method, base + path, headers={"Authorization": authorization}, **kw) as resp:
        await resp.read()
        return resp.status


async def _exercise(s: Secrets, proc: ServerProcess, ins: InstructionServer, carrier: FakeCarrier, smsc: SmscSimulator) -> None:
    base, ws = proc.url, f"ws://127.0.0.1:{proc.port}/v1/connect"
    account = (s.account_sid, s.auth_token)
    async with aiohttp.ClientSession() as http:
        # REST: right credentials (auth token, API key), wrong ones, another account's.
        presence = f"/v1/Accounts/{s.account_sid}/Presence/alice"
        assert await _rest(http, base, "GET", presence, _basic(*account)) == 200
        assert await _rest(http, base, "GET", presence, _basic(s.key_sid, s.key_secret)) == 200
        assert await _rest(http, base, "GET", presence, _basic(s.account_sid, s.wrong_password)) == 401
        assert await _rest(http, base, "GET", presence, _basic(s.key_sid, s.wrong_password)) == 401
        assert await _rest(http, base, "GET", presence, _basic(s.other_sid, s.other_token)) == 404
        assert await _rest(http, base, "GET", presence, f"Bearer {s.token('alice')}") == 401
        assert await _rest(http, base, "GET", "/v1/Nodes", _basic("ops", s.operator_password)) == 200
        assert await _rest(http, base, "GET", "/v1/Nodes", _basic("ops", s.wrong_password)) == 401

        # Sessions: a good token, a renewal, a tampered one, an expired one, one in the URL.
        alice = await RawClient.open(ws)
        assert (await alice.register(s.token("alice"), capabilities=["voice", "messaging"]))["type"] == "registered"
        await alice.send({"type": "update_token", "token": s.token("alice"), "id": 1})
        assert (await alice.recv_type("token_updated"))["id"] == 1
        good = s.token("bob")
        tampered = good[:-6] + ("AAAAAA" if not good.endswith("AAAAAA") else "BBBBBB")
        s.tokens.append(tampered)
        for bad in (tampered, s.token("bob", now=time.time() - 7200, ttl=600)):
            client = await RawClient.open(ws)
            assert (await client.register(bad))["type"] == "error"
        in_url = await RawClient.open(f"{ws}?access_token={s.token('carol')}&token={s.token('carol')}")
        assert (await in_url.register(s.token("carol")))["type"] == "registered"

        # A call through the instruction app (credentials in its URL): the document fails.
        await alice.send({"type": "call", "to": "client:nobody"})
        await alice.recv_type("call_progress", timeout=5)

        # Messages: every provider, with a status callback that fails (credentials in its URL).
        hook = f"http://hookuser:{s.hook_url_password}@127.0.0.1:{ins.port}/status"
        form = {"From": NUMBER, "Body": "hello", "StatusCallback": hook}
        sids = []
        for to in ("+15551110001", "+15552220001", "+15553330001", "+15554440001", "+15557770001"):
            async with http.post(
                f"{base}/2010-04-01/Accounts/{s.account_sid}/Messages.json", data={**form, "To": to}, headers={"Authorization": _basic(*account)}
            ) as resp:
                assert resp.status == 201, await resp.text()
                sids.append((await resp.json())["sid"])
        assert await _rest(http, base, "POST", f"/2010-04-01/Accounts/{s.account_sid}/Messages.json", _basic(s.account_sid, s.wrong_password), data=form) == 401

        # Carrier ingress: right and wrong credentials; the inbound SMS fetches sms_url (fails).
        inbound = {"From": "+15557770000", "To": NUMBER, "Body": "hi"}
        assert await _rest(http, base, "POST", "/v1/Ingress/outbox/Messages", _basic("carrier", s.ingress_password), data=inbound) == 201
        assert await _rest(http, base, "POST", "/v1/Ingress/outbox/Messages", _basic("carrier", s.wrong_password), data=inbound) == 401

        # Wait for the sends and callbacks to happen (and fail) before revoking.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not (
            len(carrier.requests) >= 2 and smsc.submitted and any(not ok for _, _, ok in smsc.binds)
            and len([r for r in ins.received if r.path == "/status"]) >= 3
        ):
            await asyncio.sleep(0.05)
        assert len(carrier.requests) >= 2 and smsc.submitted, (carrier.requests, smsc.binds)
        print(f"exercised in {time.monotonic() - deadline + 10:.1f} s; status callbacks: {[r.path for r in ins.received]}")

        # Revoke the key: the live sessions end; the key fails REST.
        assert await _rest(http, base, "DELETE", f"/2010-04-01/Accounts/{s.account_sid}/Keys/{s.key_sid}.json", _basic(*account)) == 204
        assert (await alice.recv_type("error", timeout=5))["code"] == 20110
        assert await _rest(http, base, "GET", presence, _basic(s.key_sid, s.key_secret)) == 401


async def test_no_secret_appears_in_the_logs(tmp_path: Path) -> None:
    s = Secrets()
    ins = InstructionServer(auth_token=s.auth_token)
    ins.on("/voice", "<Response><Dance/></Response>")  # an unknown verb: the call fails, logged
    ins.on("/sms", lambda params: web.Response(status=500))
    ins.on("/status", lambda params: web.Response(status=403))  # a 4xx is not retried: logged as failed at once
    await ins.start()
    carrier = FakeCarrier()
    original = carrier.handle

    async def handle(request: web.Request) -> web.StreamResponse:
        # Basic-authenticated sends succeed; the bearer is "refused" (401): both logged.
        if request.headers.get("Authorization", "").startswith("Bearer"):
            await request.read()
            carrier.requests.append({"headers": dict(request.headers), "json": None})
            return web.json_response({"error": "bad token"}, status=401)
        return await original(request)

    carrier.handle = handle  # type: ignore[method-assign]  # before start(): the route binds it
    carrier.responder = lambda body: (200, {"id": carrier.next_id()})
    await carrier.start()
    smsc = SmscSimulator(system_id="esme", password=s.smpp_password)
    await smsc.start()
    async with redis_server() as redis:
        # requirepass after start: the helper's readiness probe speaks without AUTH.
        redis.command("CONFIG", "SET", "requirepass", s.redis_password)
        redis_url = f"redis://:{s.redis_password}@127.0.0.1:{redis.port}/0"
        port = free_port()
        path = tmp_path / "config.toml"
        path.write_text(config(s, port, redis_url, ins, carrier, smsc, tmp_path / "data"))
        log_path = tmp_path / "server.log"
        proc = ServerProcess([sys.executable, "-m", "presence_server.cli", "serve", "--config", str(path)], port, log_path, tmp_path)
        await proc.start(health_path="/readyz", timeout=30)
        try:
            await _exercise(s, proc, ins, carrier, smsc)
        finally:
            proc.stop()
            await smsc.close()
            await carrier.close()
            await ins.stop()

    text = log_path.read_text(errors="replace")
    lines = [line for line in text.splitlines() if line.strip()]
    entries = [json.loads(line) for line in lines]  # every line JSON, the libraries' too
    # The capture is what it claims to be: debug-level JSON covering what was exercised.
    levels = {e.get("level") for e in entries}
    events = {e.get("event") for e in entries}
    assert "debug" in levels and "warning" in levels, levels
    for expected in (
        "session registered", "webhook failed", "smpp bound", "smpp bind refused", "api key revoked", "instructions failed",
        "message refused by provider",
    ):
        assert expected in events, (expected, sorted(e for e in events if e))
    leaks = {name: [line[:300] for line in lines if value in line][:3] for name, value in s.all().items()}
    leaks = {name: found for name, found in leaks.items() if found}
    print(f"{len(lines)} log lines ({len(entries)} JSON), {len(s.all())} secrets searched, leaks: {len(leaks)}")
    assert not leaks, json.dumps(leaks, indent=1)
