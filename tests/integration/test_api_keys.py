"""The Keys resource: API keys created, listed, fetched and revoked over REST,
against real servers (docs/tokens.md#managing-api-keys-over-rest).

A created key signs tokens and authenticates REST at once, on every node (the
bus, or the engine within one heartbeat), and survives a restart; its secret is
shown once; only the account's auth token manages keys; another account's keys
are not found.
"""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any

import aiohttp
import pytest

from presence_server import api_keys
from presence_server.clock import ManualClock
from presence_server.engines.ports import CreatedApiKey, EngineUnavailable
from presence_server.node import Node
from protocol.addresses import new_sid
from protocol.errors import ErrorCode
from protocol.tokens import mint_token
from tests.helpers.servers import RunningServer, TestAccount, make_config, redis_nodes, start_server
from tests.integration.test_attack_tokens import NOW, _ended_by_revocation, _refused, _registered, _rest, _still_up


def keys_path(account: TestAccount, key_sid: str | None = None) -> str:
    tail = "Keys.json" if key_sid is None else f"Keys/{key_sid}.json"
    return f"/2010-04-01/Accounts/{account.sid}/{tail}"


async def create_key(base: str, account: TestAccount, auth: tuple[str, str] | None = None, **form: str) -> tuple[int, Any]:
    user, password = auth or (account.sid, account.auth_token)
    headers = {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}
    async with aiohttp.ClientSession() as http:
        async with http.post(base + keys_path(account), data=form, headers=headers) as resp:
            return resp.status, await resp.json()


async def known_within(node: Node, key_sid: str, seconds: float) -> float:
    """Wait (in real time, a few ms at a time) until the node knows the key; how long it took."""
    started = time.perf_counter()
    while node.accounts.signing_key(key_sid) is None:
        assert time.perf_counter() - started < seconds, f"the node never heard of {key_sid}"
        await asyncio.sleep(0.005)
    return time.perf_counter() - started


def token_of(account: TestAccount, key: dict[str, Any], identity: str) -> str:
    return mint_token(key_sid=key["sid"], account_sid=account.sid, identity=identity, secret=key["secret"], now=NOW)


async def test_a_created_key_works_at_once_is_listed_without_its_secret_and_survives_a_restart(tmp_path: Any) -> None:
    account = TestAccount(identities=[{"identity": "alice"}])
    account.extra = {"api_keys": [{"sid": account.key_sid, "secret": account.key_secret, "friendly_name": "from the config"}]}
    neighbour = TestAccount()
    data_dir = str(tmp_path)
    server = await start_server([account, neighbour], engine={"data_dir": data_dir})
    owner = (account.sid, account.auth_token)
    try:
        status, laptop = await create_key(server.http_url, account, FriendlyName="laptop")
        assert status == 201, laptop
        assert set(laptop) == {"sid", "friendly_name", "date_created", "date_updated", "source", "secret"}
        assert laptop["sid"].startswith("SK") and laptop["friendly_name"] == "laptop" and laptop["source"] == "api"
        assert laptop["date_created"].endswith("+0000") and len(laptop["secret"]) >= 32
        status, ci = await create_key(server.http_url, account)  # no name: an empty one
        assert status == 201 and ci["friendly_name"] == "" and ci["sid"] != laptop["sid"] and ci["secret"] != laptop["secret"]

        # It signs tokens and authenticates REST at once.
        session = await _registered(server.ws_url, token_of(account, laptop, "alice"))
        status, _ = await _rest(server.http_url, "GET", f"/v1/Accounts/{account.sid}/Presence/alice", (laptop["sid"], laptop["secret"]))
        assert status == 200

        # Listed and fetched, config keys first, never with a secret.
        status, listing = await _rest(server.http_url, "GET", keys_path(account), owner)
        assert status == 200
        assert [(k["sid"], k["source"], k["friendly_name"]) for k in listing["keys"]] == [
            (account.key_sid, "config", "from the config"), (laptop["sid"], "api", "laptop"), (ci["sid"], "api", "")
        ]
        assert listing["keys"][0]["date_created"] is None and all("secret" not in k for k in listing["keys"])
        status, page = await _rest(server.http_url, "GET", keys_path(account) + "?PageSize=1&Page=1", owner)
        assert [k["sid"] for k in page["keys"]] == [laptop["sid"]] and page["next_page_uri"] is not None
        status, one = await _rest(server.http_url, "GET", keys_path(account, laptop["sid"]), owner)
        assert status == 200 and one == {k: v for k, v in laptop.items() if k != "secret"}

        # Revoked: its session ends, it is gone from the resource, the other key lives on.
        status, _ = await _rest(server.http_url, "DELETE", keys_path(account, laptop["sid"]), owner)
        assert status == 204
        await _ended_by_revocation(session)
        status, body = await _rest(server.http_url, "GET", keys_path(account, laptop["sid"]), owner)
        assert status == 404 and body["code"] == ErrorCode.NOT_FOUND.code
        status, listing = await _rest(server.http_url, "GET", keys_path(account), owner)
        assert [k["sid"] for k in listing["keys"]] == [account.key_sid, ci["sid"]]
        # The neighbour's listing never showed any of it.
        status, theirs = await _rest(server.http_url, "GET", keys_path(neighbour), (neighbour.sid, neighbour.auth_token))
        assert [k["sid"] for k in theirs["keys"]] == [neighbour.key_sid]
    finally:
        await server.node.stop()

    # Durable: after a restart on the same data directory the created key still works, the revoked one not.
    node = Node(make_config([account, neighbour], engine={"data_dir": data_dir}), clock=ManualClock())
    await node.start("127.0.0.1", 0)
    try:
        restarted = RunningServer(node, node.clock, [account, neighbour])  # type: ignore[arg-type]
        await _still_up(await _registered(restarted.ws_url, token_of(account, ci, "bob")))
        assert await _refused(restarted, token_of(account, laptop, "alice")) == (ErrorCode.TOKEN_KEY_REVOKED.code, 4003)
        status, listing = await _rest(restarted.http_url, "GET", keys_path(account), owner)
        assert [k["sid"] for k in listing["keys"]] == [account.key_sid, ci["sid"]]
    finally:
        await node.stop()


async def test_only_the_accounts_auth_token_manages_keys_and_bad_input_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    account, neighbour = TestAccount(), TestAccount()
    server = await start_server([account, neighbour])
    try:
        base = server.http_url
        status, key = await create_key(base, account)
        assert status == 201
        # An API key - the config's or a created one - may not create, list or fetch keys.
        for creds in ((account.key_sid, account.key_secret), (key["sid"], key["secret"])):
            status, body = await create_key(base, account, creds)
            assert status == 403 and body["code"] == ErrorCode.FORBIDDEN.code
            for path in (keys_path(account), keys_path(account, key["sid"])):
                status, body = await _rest(base, "GET", path, creds)
                assert status == 403 and body["code"] == ErrorCode.FORBIDDEN.code
        # Another account's credentials on this account's path; a key of another account on one's own path.
        status, body = await create_key(base, account, (neighbour.sid, neighbour.auth_token))
        assert status == 404 and body["code"] == ErrorCode.NOT_FOUND.code
        for missing in (neighbour.key_sid, new_sid("SK"), "SKnotasid"):
            status, body = await _rest(base, "GET", keys_path(account, missing), (account.sid, account.auth_token))
            assert status == 404 and body["code"] == ErrorCode.NOT_FOUND.code
        status, body = await create_key(base, account, (account.sid, "wrong"))
        assert status == 401 and body["code"] == ErrorCode.AUTHENTICATION_FAILED.code
        # Bad input is named.
        status, body = await create_key(base, account, FriendlyName="x" * 65)
        assert status == 400 and body["code"] == ErrorCode.PARAMETER_INVALID.code and "FriendlyName" in body["message"]
        status, body = await _rest(base, "GET", keys_path(account) + "?PageSize=0", (account.sid, account.auth_token))
        assert status == 400 and "PageSize" in body["message"]

        # The bound on created keys: 409 (40018) at the limit; revoking one makes room.
        monkeypatch.setattr(api_keys, "MAX_CREATED_KEYS", 2)
        status, second = await create_key(base, account)
        assert status == 201
        status, body = await create_key(base, account)
        assert status == 409 and body["code"] == ErrorCode.API_KEY_LIMIT.code and "at most 2" in body["message"]
        status, body = await create_key(base, neighbour, (neighbour.sid, neighbour.auth_token))
        assert status == 201  # per account
        status, _ = await _rest(base, "DELETE", keys_path(account, second["sid"]), (account.sid, account.auth_token))
        assert status == 204
        status, _ = await create_key(base, account)
        assert status == 201
    finally:
        await server.node.stop()


async def test_a_key_created_on_one_redis_node_works_on_the_other_at_once() -> None:
    account = TestAccount()
    async with redis_nodes([account]) as (node1, node2):
        status, key = await create_key(f"http://127.0.0.1:{node2.port}", account, FriendlyName="made on 2")
        assert status == 201
        elapsed = await known_within(node1, key["sid"], seconds=2.0)  # the bus, then a read of the engine
        await _still_up(await _registered(f"ws://127.0.0.1:{node1.port}/v1/connect", token_of(account, key, "alice")))
        status, listing = await _rest(f"http://127.0.0.1:{node1.port}", "GET", keys_path(account), (account.sid, account.auth_token))
        assert [k["sid"] for k in listing["keys"]] == [account.key_sid, key["sid"]]
        print(f"key created on node 2 -> usable on node 1 after {elapsed * 1000:.1f} ms")


async def test_a_created_key_the_bus_did_not_bring_is_known_within_one_heartbeat() -> None:
    account = TestAccount()
    server = await start_server([account])
    try:
        secret = "written-to-the-engine-only-" + new_sid("SK")
        key = CreatedApiKey(new_sid("SK"), account.sid, "quiet", secret, NOW)
        assert await server.node.engine.api_keys.create(key)  # as if the publish had been lost
        token = mint_token(key_sid=key.sid, account_sid=account.sid, identity="alice", secret=secret, now=NOW)
        assert await _refused(server, token) == (ErrorCode.TOKEN_KEY_UNKNOWN.code, 4001)
        await server.advance(server.node.config.server.node_heartbeat)
        # The sync woke up; its read of the engine runs on the database thread.
        await known_within(server.node, key.sid, seconds=2.0)
        await _still_up(await _registered(server.ws_url, token))
    finally:
        await server.node.stop()


async def test_a_lost_announcement_does_not_fail_the_request(monkeypatch: pytest.MonkeyPatch) -> None:
    # The change is stored and applied on this node before it is announced; a bus
    # that fails right then (Redis lost between the two) must not make the caller
    # see an error for a key that exists, or a 404 on retrying a revocation that happened.
    account = TestAccount()
    server = await start_server([account])
    try:
        async def bus_down(topic: str, message: dict[str, Any]) -> int:
            raise EngineUnavailable("bus lost")

        monkeypatch.setattr(server.node.engine.bus, "publish", bus_down)
        status, key = await create_key(server.http_url, account)
        assert status == 201
        session = await _registered(server.ws_url, token_of(account, key, "alice"))
        status, _ = await _rest(server.http_url, "DELETE", keys_path(account, key["sid"]), (account.sid, account.auth_token))
        assert status == 204
        await _ended_by_revocation(session)
    finally:
        await server.node.stop()
