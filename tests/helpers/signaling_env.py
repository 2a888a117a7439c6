"""A server with the signaling role wired to a real instruction server, for
call and message tests: the same setup as tests/integration/test_signaling.py
(answers built with the official twilio library, every instruction request's
signature checked), usable from any test module."""

from __future__ import annotations

import asyncio
import base64
import contextlib
from dataclasses import dataclass
from typing import Any, AsyncIterator

import aiohttp
from twilio.twiml.voice_response import Dial, VoiceResponse

from presence_server.clock import ManualClock
from presence_server.node import Node
from protocol.addresses import new_sid
from protocol.tokens import mint_token
from tests.helpers.instructions import InstructionServer
from tests.helpers.wsclient import RawClient
from tests.helpers.redis_server import RedisServer, redis_server
from tests.helpers.servers import RunningServer, TestAccount, make_config, start_server

ALICE_PHONE = "+15550100001"
BOB_PHONE = "+15550100002"
NUMBER = "+15550001111"
INGRESS = ("carrier", "s3cret-carrier-password")


@dataclass
class SignalingEnv:
    server: RunningServer
    ins: InstructionServer
    app_sid: str
    stopped: bool = False  # a test stopped the server itself (its teardown does not again)

    @property
    def account(self) -> TestAccount:
        return self.server.account

    def grants(self, identity: str, *, outgoing: bool = True, incoming: bool = True) -> dict[str, Any]:
        voice: dict[str, Any] = {}
        if incoming:
            voice["incoming"] = {"allow": True}
        if outgoing:
            voice["outgoing"] = {"application_sid": self.app_sid}
        return {"identity": identity, "presence": {"publish": True, "subscribe": True}, "voice": voice}

    def token(self, identity: str) -> str:
        """A token that may register, be called and place calls through the application."""
        return self.server.token(identity, grants=self.grants(identity))

    async def client(self, identity: str, capabilities: list[str] | None = None, encoding: str = "json") -> RawClient:
        """A raw WebSocket client, registered with this env's token."""
        c = await RawClient.open(self.server.ws_url, encoding)
        reply = await c.register(self.token(identity), capabilities=capabilities or ["voice", "messaging"])
        assert reply["type"] == "registered", reply
        return c

    async def rest(
        self, method: str, path: str, data: dict[str, str] | None = None, auth: tuple[str, str] | None = None
    ) -> tuple[int, Any]:
        user, password = auth or (self.account.sid, self.account.auth_token)
        headers = {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}
        async with aiohttp.ClientSession() as http:
            async with http.request(method, self.server.http_url + path, data=data, headers=headers) as resp:
                return resp.status, await resp.json(content_type=None)

    async def message_record(self, sid: str) -> dict[str, Any]:
        status, record = await self.rest("GET", f"/2010-04-01/Accounts/{self.account.sid}/Messages/{sid}.json")
        assert status == 200, record
        return record  # type: ignore[no-any-return]

    async def call_record(self, sid: str) -> dict[str, Any]:
        status, record = await self.rest("GET", f"/2010-04-01/Accounts/{self.account.sid}/Calls/{sid}.json")
        assert status == 200, record
        return record  # type: ignore[no-any-return]

    async def inbound_sms(self, body: str = "hello", from_: str = "+15557770000") -> dict[str, Any]:
        """A carrier hands over an SMS to the account's number (its sms_url decides)."""
        status, record = await self.rest("POST", "/v1/Ingress/outbox/Messages", {"From": from_, "To": NUMBER, "Body": body}, auth=INGRESS)
        assert status == 201, record
        return record  # type: ignore[no-any-return]

    async def outbox(self) -> list[dict[str, Any]]:
        return await self.server.node.providers["outbox"].entries(100)  # type: ignore[attr-defined, no-any-return]


def dial_client(ins: InstructionServer, identity: str, action: str | None = None, **kw: Any) -> str:
    """A <Dial><Client>identity</Client></Dial> document."""
    response = VoiceResponse()
    dial = Dial(action=ins.url(action) if action else None, **kw)
    dial.client(identity)
    response.append(dial)
    return str(response)


@contextlib.asynccontextmanager
async def signaling_env(data_dir: str, *, status_callback: str | None = None, **sections: Any) -> AsyncIterator[SignalingEnv]:
    """An account (alice and bob, with phones) whose application's voice URL
    and number's sms_url point at a fresh instruction server; the outbox
    provider takes carrier ingress. Checks at the end that every instruction
    request was signed. ``status_callback``: a path of the instruction server
    for the application's status callbacks; ``sections``: more configuration."""
    ins = InstructionServer(auth_token="")
    await ins.start()
    account = TestAccount(identities=[{"identity": "alice", "phone": ALICE_PHONE}, {"identity": "bob", "phone": BOB_PHONE}])
    ins.auth_token = account.auth_token
    app_sid = new_sid("AP")
    account.extra = {
        "applications": [{
            "sid": app_sid, "voice_url": ins.url("/voice"), "voice_fallback_url": ins.url("/voice-fallback"),
            **({"status_callback": ins.url(status_callback)} if status_callback else {}),
        }],
        "phone_numbers": [{"number": NUMBER, "voice_url": ins.url("/inbound"), "sms_url": ins.url("/sms")}],
        "fallback": {"from_number": NUMBER},
    }
    server = await start_server(
        [account, TestAccount()],
        security={"allow_private_urls": True},
        engine={"data_dir": data_dir},
        providers=[{"name": "outbox", "kind": "outbox", "inbound_username": INGRESS[0], "inbound_password": INGRESS[1]}],
        **sections,
    )
    env = SignalingEnv(server, ins, app_sid)
    try:
        yield env
    finally:
        if not env.stopped:
            await server.node.stop()
        await ins.stop()
    assert ins.all_signed(), [r for r in ins.received if not r.signature_valid]


async def eventually_async(check: Any, timeout: float = 5.0, interval: float = 0.01) -> Any:
    """Poll an async ``check()`` until it returns something truthy; returns it."""
    async with asyncio.timeout(timeout):
        while True:
            result = await check()
            if result:
                return result
            await asyncio.sleep(interval)


async def carrier_call(server: RunningServer, number: str, ingress: tuple[str, str] = INGRESS) -> dict[str, Any]:
    """A carrier hands over a call to ``number`` (through the outbox provider's
    ingress); returns the call's record (as the API renders it) once it has ended."""
    headers = {"Authorization": "Basic " + base64.b64encode(":".join(ingress).encode()).decode()}
    async with aiohttp.ClientSession() as http:
        async with http.post(server.http_url + "/v1/Ingress/outbox/Voice", data={"From": "+15557770000", "To": number}, headers=headers) as resp:
            record = await resp.json()
            assert resp.status == 201, record
    sid, account = record["sid"], server.account.sid

    async def ended() -> dict[str, Any] | None:
        got = await server.node.engine.calls.get(account, sid)
        return got.to_api() if got is not None and got.status in ("failed", "completed") else None

    return await eventually_async(ended)  # type: ignore[no-any-return]


class Deployment:
    """Nodes with split roles on one real Redis and one manual clock, and one
    account whose application dials bob (see :func:`split_deployment`)."""

    def __init__(self, nodes: dict[str, Node], account: TestAccount, app_sid: str, clock: ManualClock, redis: RedisServer) -> None:
        self.nodes, self.account, self.app_sid, self.clock, self.redis = nodes, account, app_sid, clock, redis
        self.stopped: set[str] = set()  # nodes a test stopped itself (the teardown does not again)

    async def client(self, node: str, identity: str) -> RawClient:
        grants = {
            "identity": identity,
            "presence": {"publish": True, "subscribe": True},
            "voice": {"incoming": {"allow": True}, "outgoing": {"application_sid": self.app_sid}},
        }
        a = self.account
        token = mint_token(key_sid=a.key_sid, account_sid=a.sid, identity=identity, secret=a.key_secret, now=self.clock.time(), grants=grants)
        c = await RawClient.open(f"ws://127.0.0.1:{self.nodes[node].port}/v1/connect")
        assert (await c.register(token, capabilities=["voice"]))["type"] == "registered"
        return c


@contextlib.asynccontextmanager
async def split_deployment(
    tmp_path: Any, layout: dict[str, tuple[str, ...]], *, dial_timeout: int, cls: type[Deployment] = Deployment, **sections: Any
) -> AsyncIterator[Deployment]:
    """The nodes of ``layout`` (name -> roles), each with its own data_dir, on a
    real Redis; the account's application dials bob for ``dial_timeout`` s."""
    ins = InstructionServer(auth_token="")
    await ins.start()
    app_sid = new_sid("AP")
    account = TestAccount(identities=[{"identity": "bob", "phone": BOB_PHONE}])
    account.extra = {"applications": [{"sid": app_sid, "voice_url": ins.url("/voice")}]}
    ins.auth_token = account.auth_token
    ins.on("/voice", dial_client(ins, "bob", timeout=dial_timeout))
    try:
        async with redis_server() as redis:
            d = cls({}, account, app_sid, ManualClock(), redis)
            try:
                for name, roles in layout.items():
                    config = make_config(
                        [account], engine={"kind": "redis", "url": redis.url, "data_dir": str(tmp_path / name)},
                        security={"allow_private_urls": True}, **sections,
                    )
                    d.nodes[name] = Node(config, clock=d.clock, roles=roles)
                    await d.nodes[name].start("127.0.0.1", 0)
                yield d
            finally:
                for name, node in d.nodes.items():
                    if name not in d.stopped:
                        await node.stop()
    finally:
        await ins.stop()
