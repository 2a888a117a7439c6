"""Attacks by number on the edges (issue 8, item 4): many connections from one
address, many sessions of one account, REST floods and failed-auth floods.
Real server, real sockets; limits answer precisely (429 with Retry-After, or
the wire error and close code) and hold up nobody else."""

from __future__ import annotations

import base64
from typing import Any, AsyncIterator

import aiohttp
import pytest
import websockets

from protocol.errors import ErrorCode
from tests.helpers import rawhttp
from tests.helpers.servers import RunningServer, start_server
from tests.helpers.wsclient import RawClient


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


async def upgrade(server: RunningServer, forwarded_for: str | None = None) -> tuple[rawhttp.socket.socket, rawhttp.HttpAnswer]:
    extra = f"X-Forwarded-For: {forwarded_for}\r\n" if forwarded_for else ""
    sock, answer = await rawhttp.websocket(server.node.port, extra=extra)
    if answer.status != 101:
        sock.close()
    return sock, answer


# -- connections per address -----------------------------------------------------------------


async def test_connections_past_the_per_address_limit_are_refused_429_before_the_upgrade() -> None:
    server = await start_server(gateway={"max_connections_per_address": 5})
    try:
        held = [await RawClient.open(server.ws_url) for _ in range(5)]
        with pytest.raises(websockets.InvalidStatus) as refused:
            await RawClient.open(server.ws_url)
        assert refused.value.response.status_code == 429
        _, answer = await upgrade(server)
        body = answer.json()
        assert answer.status == 429 and answer.headers["retry-after"] == "10"
        assert body["code"] == ErrorCode.TOO_MANY_CONNECTIONS.code and body["status"] == 429 and "the limit is 5" in body["message"]
        # Without trusted proxies, X-Forwarded-For is the client's own word: ignored.
        _, spoofed = await upgrade(server, forwarded_for="198.51.100.9")
        assert spoofed.status == 429
        # REST from the same address is not a WebSocket connection: unaffected.
        async with aiohttp.ClientSession() as http, http.get(server.http_url + "/healthz") as resp:
            assert resp.status == 200
        # One closes: one more may come; the count is of open connections.
        await held.pop().close()
        for _ in range(50):
            if sum(server.node.gateway._per_address.values()) == 4:
                break
            await server.advance(0.01)
        again = await RawClient.open(server.ws_url)
        assert (await again.register(server.token("alice")))["type"] == "registered"
        print(f"\nper-address limit 5: the 6th upgrade refused 429 (10017); refused so far {server.node.gateway.refused_connections}")
        assert server.node.gateway.refused_connections == 3
    finally:
        await server.node.stop()


async def test_behind_a_trusted_proxy_the_forwarded_client_address_is_counted() -> None:
    server = await start_server(gateway={"max_connections_per_address": 2}, server={"trusted_proxies": ["127.0.0.1"]})
    try:
        a = [await upgrade(server, "203.0.113.7") for _ in range(2)]
        assert all(answer.status == 101 for _, answer in a)
        _, third = await upgrade(server, "203.0.113.7")
        assert third.status == 429 and third.json()["code"] == ErrorCode.TOO_MANY_CONNECTIONS.code
        # Another client behind the same proxy is not held up.
        _, other = await upgrade(server, "203.0.113.8")
        assert other.status == 101
        # A client that writes its own X-Forwarded-For: the proxy appends the real
        # address, which is what counts (the left part is ignored).
        _, forged = await upgrade(server, "198.51.100.1, 203.0.113.7")
        assert forged.status == 429
        # IPv6 clients count by /64: another address of the same /64 is the same client.
        v6 = [await upgrade(server, "2001:db8:1:2::a") for _ in range(2)]
        assert all(answer.status == 101 for _, answer in v6)
        assert (await upgrade(server, "2001:db8:1:2::ffff"))[1].status == 429
        v6.append(await upgrade(server, "2001:db8:1:3::a"))
        assert v6[-1][1].status == 101
        for sock, _ in a + v6:
            sock.close()
    finally:
        await server.node.stop()


# -- sessions per account ----------------------------------------------------------------------


async def test_sessions_past_the_per_account_limit_are_refused_30005_close_4013() -> None:
    server = await start_server(gateway={"max_sessions_per_account": 3})
    try:
        clients = []
        for identity in ("a1", "a2", "a3"):
            client = await RawClient.open(server.ws_url)
            reply = await client.register(server.token(identity))
            assert reply["type"] == "registered"
            clients.append((client, reply["session"]))
        extra = await RawClient.open(server.ws_url)
        err = await extra.register(server.token("a4"))
        assert err["code"] == ErrorCode.TOO_MANY_ACCOUNT_SESSIONS.code and err["fatal"] is True and "the limit is 3" in err["message"]
        assert (await extra.closed())[0] == 4013
        # Another account is not held up by this one.
        other = await RawClient.open(server.ws_url)
        assert (await other.register(server.token("eve", account=server.accounts[1])))["type"] == "registered"
        # Taking over a session this node holds adds none: allowed at the limit.
        takeover = await RawClient.open(server.ws_url)
        reply = await takeover.register(server.token("a1"), resume=clients[0][1])
        assert reply["type"] == "registered" and reply["resumed"] is True
        assert (await clients[0][0].closed())[0] == 4010
        # One ends: one more may register.
        await clients[1][0].send({"type": "bye"})
        assert (await clients[1][0].closed())[0] == 1000
        for _ in range(50):
            if server.node.gateway._per_account.get(server.account.sid) == 2:
                break
            await server.advance(0.01)
        late = await RawClient.open(server.ws_url)
        assert (await late.register(server.token("a5")))["type"] == "registered"
    finally:
        await server.node.stop()


# -- REST floods -------------------------------------------------------------------------------------


@pytest.fixture
async def limited() -> AsyncIterator[RunningServer]:
    running = await start_server(
        http={"rate": 2.0, "burst": 5, "auth_failure_rate": 0.1, "auth_failure_burst": 3},
        server={"trusted_proxies": ["127.0.0.1"]},
    )
    try:
        yield running
    finally:
        await running.node.stop()


async def get(server: RunningServer, path: str, headers: dict[str, str]) -> tuple[int, Any, Any]:
    async with aiohttp.ClientSession() as http, http.get(server.http_url + path, headers=headers) as resp:
        return resp.status, await resp.json(content_type=None), resp.headers


async def test_rest_flood_of_one_account_is_answered_429_with_retry_after(limited: RunningServer) -> None:
    server = limited
    acc = server.account
    presence = f"/v1/Accounts/{acc.sid}/Presence/alice"
    token_auth, key_auth = basic(acc.sid, acc.auth_token), basic(acc.key_sid, acc.key_secret)
    statuses = [(await get(server, presence, token_auth if i % 2 else key_auth))[0] for i in range(5)]
    assert statuses == [200] * 5  # the burst, by auth token and API key alike
    status, body, headers = await get(server, presence, key_auth)
    assert status == 429 and headers["Retry-After"] == "1"
    assert body == {
        "code": ErrorCode.TOO_MANY_REQUESTS.code,
        "message": "this account is over its request rate (2/s, bursts of 5)",
        "more_info": "docs/protocol.md#errors (20429)",
        "status": 429,
    }
    # Every route of the account shares the bucket, POSTs included.
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{server.http_url}/2010-04-01/Accounts/{acc.sid}/Messages.json", data={"To": "+15550100001"}, headers=token_auth) as resp:
            assert resp.status == 429
    # Another account is not held up.
    other = server.accounts[1]
    assert (await get(server, f"/v1/Accounts/{other.sid}/Presence/bob", basic(other.sid, other.auth_token)))[0] == 200
    # Probes are never limited.
    assert (await get(server, "/healthz", token_auth))[0] == 200
    # Half a second refills one request (rate 2/s): one, not two.
    await server.advance(0.5)
    assert (await get(server, presence, token_auth))[0] == 200
    assert (await get(server, presence, token_auth))[0] == 429


async def test_failed_auth_flood_from_one_address_is_answered_429(limited: RunningServer) -> None:
    server = limited
    acc = server.account
    presence = f"/v1/Accounts/{acc.sid}/Presence/alice"
    guesser = {"X-Forwarded-For": "203.0.113.66"}
    wrong = {**guesser, **basic(acc.sid, "not-the-auth-token")}
    assert [(await get(server, presence, wrong))[0] for _ in range(3)] == [401] * 3
    status, body, headers = await get(server, presence, wrong)
    assert status == 429 and body["code"] == ErrorCode.TOO_MANY_REQUESTS.code and headers["Retry-After"] == "10"
    assert body["message"] == "too many failed authentications from this address"
    # Everything without valid account credentials from there waits: operator
    # guesses and anonymous requests alike.
    assert (await get(server, "/v1/Nodes", {**guesser, **basic("ops", "guess")}))[0] == 429
    assert (await get(server, presence, guesser))[0] == 429
    # Right credentials from the same address are not held up, nor is another
    # address behind the same proxy, nor a probe.
    assert (await get(server, presence, {**guesser, **basic(acc.sid, acc.auth_token)}))[0] == 200
    assert (await get(server, presence, {"X-Forwarded-For": "203.0.113.67", **basic(acc.sid, "wrong")}))[0] == 401
    assert (await get(server, "/healthz", guesser))[0] == 200
    # One failure's worth refills in 10 s (0.1/s): one more guess, then 429 again.
    await server.advance(10)
    assert (await get(server, presence, wrong))[0] == 401
    assert (await get(server, presence, wrong))[0] == 429
