"""The dev endpoints behind the demo softphone (/dev/token, /dev/directory,
/dev/outbox, /dev/messages) and the /demo page, on a real in-process server in
dev mode (with the dev account ``presence_server.dev`` creates), and their
absence on a server that is not in dev mode."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import Any, AsyncIterator

import aiohttp
import pytest

from presence_server import dev
from presence_server.clock import ManualClock
from presence_server.config import parse_config
from presence_server.messaging.intake import SendRequest
from presence_server.node import Node
from protocol.tokens import default_grants, mint_token
from tests.helpers.servers import RunningServer, fresh_data_dir
from tests.helpers.signaling_env import eventually_async
from tests.helpers.wsclient import RawClient


def claims_of(jwt: str) -> dict[str, Any]:
    payload = jwt.split(".")[1]
    claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return claims


class DevNode:
    def __init__(self, node: Node, clock: ManualClock, account: dict[str, Any]) -> None:
        self.node, self.clock, self.account = node, clock, account

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.node.port}"

    async def request(self, method: str, path: str, body: Any = None, raw: str | None = None) -> tuple[int, Any]:
        data = raw if raw is not None else (json.dumps(body) if body is not None else None)
        async with aiohttp.ClientSession() as http:
            async with http.request(method, self.url + path, data=data) as resp:
                text = await resp.text()
                try:
                    return resp.status, json.loads(text)
                except json.JSONDecodeError:
                    return resp.status, text


@pytest.fixture
async def dev_node(tmp_path: Path) -> AsyncIterator[DevNode]:
    """A server configured as ``serve --dev`` configures it: the dev account
    last, after another account, and ``dev`` set."""
    account = dev.load_or_create(tmp_path / "account.json")
    other = {"sid": "AC" + "1" * 32, "auth_token": "f" * 32, "api_keys": [{"sid": "SK" + "1" * 32, "secret": "s" * 40}]}
    config = parse_config({"accounts": [other, account], "engine": {"data_dir": fresh_data_dir()}}, environ={}, dev=True)
    clock = ManualClock()
    node = Node(config, clock=clock)
    await node.start("127.0.0.1", 0)
    try:
        yield DevNode(node, clock, account)
    finally:
        await node.stop()


async def test_token_registers_over_a_real_websocket(dev_node: DevNode) -> None:
    status, body = await dev_node.request("POST", "/dev/token", {"identity": "carol"})
    assert status == 200
    assert body["identity"] == "carol" and body["account_sid"] == dev_node.account["sid"]
    assert body["url"] == f"ws://127.0.0.1:{dev_node.node.port}/v1/connect"
    assert body["expires"] == dev_node.clock.time() + 3600
    claims = claims_of(body["token"])
    assert claims["iss"] == dev_node.account["api_keys"][0]["sid"]
    grants = claims["grants"]
    assert grants["presence"] == {"publish": True, "subscribe": ["*"]}
    assert grants["voice"] == {"incoming": {"allow": True}, "outgoing": {"application_sid": dev.application_sid(dev_node.account)}}

    client = await RawClient.open(body["url"])
    reg = await client.register(body["token"], capabilities=["voice", "messaging"])
    assert reg["type"] == "registered" and reg["identity"] == "carol" and reg["account"] == dev_node.account["sid"]
    await client.close()


@pytest.mark.parametrize(
    ("raw", "code", "words"),
    [
        (json.dumps({"identity": "client:bob"}), 30001, "must not start with 'client:'"),
        (json.dumps({"identity": "<b>x</b>"}), 30001, "may hold only letters"),
        (json.dumps({"identity": ""}), 30001, "identity is empty"),
        (json.dumps({"identity": 7}), 30001, "must be a string"),
        (json.dumps({}), 30001, "'identity'"),
        ("{not json", 40001, "JSON object"),
        (json.dumps(["alice"]), 40001, "JSON object"),
    ],
)
async def test_token_refuses_bad_input_with_precise_errors(dev_node: DevNode, raw: str, code: int, words: str) -> None:
    status, body = await dev_node.request("POST", "/dev/token", raw=raw)
    assert status == 400
    assert body["code"] == code and words in body["message"] and body["status"] == 400


async def test_directory_lists_configured_present_and_minted_identities(dev_node: DevNode) -> None:
    # dave: a token was minted; erin: present with a token minted elsewhere (by hand).
    await dev_node.request("POST", "/dev/token", {"identity": "dave"})
    key = dev_node.account["api_keys"][0]
    erin_token = mint_token(
        key_sid=key["sid"], account_sid=dev_node.account["sid"], identity="erin", secret=key["secret"],
        now=dev_node.clock.time(), grants=default_grants("erin"),
    )
    client = await RawClient.open(f"ws://127.0.0.1:{dev_node.node.port}/v1/connect")
    assert (await client.register(erin_token))["type"] == "registered"
    status, body = await dev_node.request("GET", "/dev/directory")
    assert status == 200
    assert body["identities"] == [
        {"identity": "alice", "phone": "+15550100001", "has_phone": True},
        {"identity": "bob", "phone": "+15550100002", "has_phone": True},
        {"identity": "dave", "phone": None, "has_phone": False},
        {"identity": "erin", "phone": None, "has_phone": False},
    ]
    await client.close()


async def test_in_app_message_arrives_from_the_sender_identity(dev_node: DevNode) -> None:
    _, tok = await dev_node.request("POST", "/dev/token", {"identity": "bob"})
    bob = await RawClient.open(tok["url"])
    await bob.register(tok["token"], capabilities=["messaging"])
    status, body = await dev_node.request("POST", "/dev/messages", {"from": "alice", "to": "bob", "body": "hi <b>bob</b>"})
    assert status == 201 and body["sid"].startswith("SM") and body["to"] == "client:bob" and body["from"] == "client:alice"
    frame = await bob.recv_type("message")
    assert frame["sid"] == body["sid"] and frame["body"] == "hi <b>bob</b>" and frame["payload"] == {"from": "client:alice"}
    assert frame["to"] == "client:bob"
    await bob.send({"type": "ack", "sid": frame["sid"], "read": True})
    await bob.close()


async def test_message_to_an_absent_identity_goes_to_the_outbox_as_sms(dev_node: DevNode) -> None:
    status, body = await dev_node.request("POST", "/dev/messages", {"from": "alice", "to": "bob", "body": "call me"})
    assert status == 201

    async def outbox() -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = (await dev_node.request("GET", "/dev/outbox"))[1]["entries"]
        return entries

    (entry,) = await eventually_async(outbox)
    assert entry["message_sid"] == body["sid"]
    assert (entry["to"], entry["from"], entry["body"]) == ("+15550100002", dev.DEV_NUMBER, "alice: call me")


async def test_outbox_is_newest_first_and_only_the_dev_account(dev_node: DevNode) -> None:
    # One message of another account: the outbox is shared, the panel is not.
    other = dev_node.node.accounts.account("AC" + "1" * 32)
    assert other is not None
    (record,) = await dev_node.node.messaging.send(other, [SendRequest(to="+15550109999", body="not dev", from_="+15550109998", trusted_sender=True)])
    settled = await asyncio.wait_for(dev_node.node.messaging.tracker.settled(other.sid, record.sid, 60), 5)
    assert settled is not None and settled.status == "sent"  # in the outbox file now
    sids: list[str] = []
    for text in ("one", "two", "three"):
        sids.append((await dev_node.request("POST", "/dev/messages", {"from": "bob", "to": "alice", "body": text}))[1]["sid"])

        async def recorded() -> list[dict[str, Any]] | None:
            entries: list[dict[str, Any]] = (await dev_node.request("GET", "/dev/outbox"))[1]["entries"]
            return entries if len(entries) == len(sids) else None

        entries = await eventually_async(recorded)
    assert [e["message_sid"] for e in entries] == sids[::-1]
    assert [e["body"] for e in entries] == ["bob: three", "bob: two", "bob: one"]
    assert {e["to"] for e in entries} == {"+15550100001"}


@pytest.mark.parametrize(
    ("payload", "code", "words"),
    [
        ({"from": "alice", "to": "client:bob", "body": "x"}, 30001, "'to': identity must not start with 'client:'"),
        ({"from": "al ice", "to": "bob", "body": "x"}, 30001, "'from': identity may hold only"),
        ({"to": "bob", "body": "x"}, 30001, "'from': identity must be a string"),
        ({"from": "alice", "to": "bob", "body": ""}, 21602, "'body' must be a non-empty string"),
        ({"from": "alice", "to": "bob", "body": "   "}, 21602, "'body'"),
        ({"from": "alice", "to": "bob", "body": 5}, 21602, "'body'"),
        ({"from": "alice", "to": "bob", "body": "x" * 1594}, 21617, "at most 1593"),
    ],
)
async def test_messages_validation(dev_node: DevNode, payload: dict[str, Any], code: int, words: str) -> None:
    status, body = await dev_node.request("POST", "/dev/messages", payload)
    assert status == 400
    assert body["code"] == code and words in body["message"]


async def test_messages_longest_body_is_accepted(dev_node: DevNode) -> None:
    status, body = await dev_node.request("POST", "/dev/messages", {"from": "alice", "to": "bob", "body": "x" * 1593})
    assert status == 201 and body["status"] == "queued"


async def test_messages_bad_json(dev_node: DevNode) -> None:
    status, body = await dev_node.request("POST", "/dev/messages", raw="nope")
    assert status == 400 and body["code"] == 40001


async def test_demo_page_is_served_with_its_csp(dev_node: DevNode) -> None:
    async with aiohttp.ClientSession() as http:
        for path, kind in (("/demo", "text/html"), ("/demo/", "text/html"), ("/demo/demo.js", "text/javascript"), ("/demo/demo.css", "text/css")):
            async with http.get(dev_node.url + path) as resp:
                assert resp.status == 200, path
                assert resp.headers["Content-Type"].startswith(kind)
                assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
        async with http.get(dev_node.url + "/demo/..%2Fdashboard%2Findex.html") as resp:
            assert resp.status == 404


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/demo"),
        ("GET", "/demo/demo.js"),
        ("POST", "/dev/token"),
        ("GET", "/dev/directory"),
        ("GET", "/dev/outbox"),
        ("POST", "/dev/messages"),
        ("GET", "/dev/messages/SM" + "0" * 32),
        ("POST", "/dev/voice"),
    ],
)
async def test_no_dev_routes_outside_dev_mode(server: RunningServer, method: str, path: str) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.request(method, server.http_url + path, data=json.dumps({"identity": "alice"})) as resp:
            assert resp.status == 404
            assert (await resp.json())["code"] == 20404


async def test_message_status_follows_the_record(dev_node: DevNode) -> None:
    _, sent = await dev_node.request("POST", "/dev/messages", {"from": "alice", "to": "bob", "body": "status?"})

    async def sent_by_sms() -> dict[str, Any] | None:
        status, body = await dev_node.request("GET", f"/dev/messages/{sent['sid']}")
        assert status == 200
        return body if body["status"] == "sent" else None

    body = await eventually_async(sent_by_sms)
    # bob has no session: the message went by SMS to his phone at once.
    assert body == {"sid": sent["sid"], "status": "sent", "channel": "sms", "to": "+15550100002", "fallback_reason": "absent", "error_code": None}
    for sid in ("SM" + "0" * 32, "nonsense"):
        status, err = await dev_node.request("GET", f"/dev/messages/{sid}")
        assert status == 404 and err["code"] == 20404
