"""The presence query API: auth, account scoping, validation, answers."""

from __future__ import annotations

import base64
from typing import Any

import aiohttp
import pytest

from tests.helpers.servers import RunningServer
from tests.helpers.wsclient import RawClient


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


async def get(server: RunningServer, path: str, headers: dict[str, str] | None = None) -> tuple[int, Any, Any]:
    async with aiohttp.ClientSession() as http:
        async with http.get(server.http_url + path, headers=headers or {}) as resp:
            return resp.status, await resp.json(content_type=None), resp.headers


def account_auth(server: RunningServer, index: int = 0) -> dict[str, str]:
    acc = server.accounts[index]
    return basic(acc.sid, acc.auth_token)


async def test_unknown_identity_is_offline(server: RunningServer) -> None:
    sid = server.account.sid
    status, body, _ = await get(server, f"/v1/Accounts/{sid}/Presence/nobody", account_auth(server))
    assert status == 200
    assert body == {"identity": "nobody", "status": "offline", "text": "", "last_seen": None, "sessions": [], "version": 0}


async def test_present_identity_with_api_key_auth(server: RunningServer) -> None:
    client = await RawClient.open(server.ws_url)
    reg = await client.register(server.token("alice"), status="busy", text="in a meeting", priority=3, capabilities=["voice", "video"])
    acc = server.account
    status, body, _ = await get(server, f"/v1/Accounts/{acc.sid}/Presence/alice", basic(acc.key_sid, acc.key_secret))
    assert status == 200 and body["status"] == "busy" and body["text"] == "in a meeting"
    (session,) = body["sessions"]
    assert session["session"] == reg["session"] and session["priority"] == 3
    assert session["capabilities"] == ["voice", "video"] and session["connected_at"] == server.clock.time()
    await client.close()


async def test_bulk_query(server: RunningServer) -> None:
    client = await RawClient.open(server.ws_url)
    await client.register(server.token("alice"))
    sid = server.account.sid
    status, body, _ = await get(server, f"/v1/Accounts/{sid}/Presence?Identity=alice&Identity=bob&Identity=alice", account_auth(server))
    assert status == 200
    assert [(p["identity"], p["status"]) for p in body["presence"]] == [("alice", "available"), ("bob", "offline")]
    await client.close()


@pytest.mark.parametrize(
    "headers",
    [
        {},
        basic("AC" + "0" * 32, "x" * 32),
        {"Authorization": "Bearer abc"},
        {"Authorization": "Basic !!!notbase64"},
        {"Authorization": "Basic " + base64.b64encode(b"no-colon").decode()},
    ],
)
async def test_wrong_credentials_401(server: RunningServer, headers: dict[str, str]) -> None:
    status, body, resp_headers = await get(server, f"/v1/Accounts/{server.account.sid}/Presence/alice", headers)
    assert status == 401 and body["code"] == 20003 and body["status"] == 401
    assert set(body) == {"code", "message", "more_info", "status"}
    assert resp_headers["WWW-Authenticate"].startswith("Basic")


async def test_wrong_password_for_a_real_account_401(server: RunningServer) -> None:
    status, body, _ = await get(server, f"/v1/Accounts/{server.account.sid}/Presence/alice", basic(server.account.sid, "wrong" * 8))
    assert status == 401


async def test_another_accounts_path_is_404_whether_it_exists_or_not(server: RunningServer) -> None:
    client = await RawClient.open(server.ws_url)
    await client.register(server.token("alice"))
    other_auth = account_auth(server, 1)
    real = await get(server, f"/v1/Accounts/{server.account.sid}/Presence/alice", other_auth)
    fake = await get(server, f"/v1/Accounts/AC{'9' * 32}/Presence/alice", other_auth)
    assert real[0] == fake[0] == 404
    assert real[1]["message"] == fake[1]["message"] and real[1]["code"] == 20404
    await client.close()


@pytest.mark.parametrize(("identity", "code"), [("bad%20name", 30001), ("client:bob", 30001), ("x" * 122, 30001)])
async def test_malformed_identity_400(server: RunningServer, identity: str, code: int) -> None:
    status, body, _ = await get(server, f"/v1/Accounts/{server.account.sid}/Presence/{identity}", account_auth(server))
    assert status == 400 and body["code"] == code


async def test_bulk_query_parameter_errors(server: RunningServer) -> None:
    base = f"/v1/Accounts/{server.account.sid}/Presence"
    status, body, _ = await get(server, base, account_auth(server))
    assert status == 400 and body["code"] == 40001
    many = "&".join(f"Identity=u{i}" for i in range(101))
    status, body, _ = await get(server, f"{base}?{many}", account_auth(server))
    assert status == 400 and "100" in body["message"]


async def test_unknown_route_and_method_are_json(server: RunningServer) -> None:
    status, body, _ = await get(server, "/v1/Nope")
    assert status == 404 and body["code"] == 20404
    async with aiohttp.ClientSession() as http:
        async with http.delete(f"{server.http_url}/v1/Accounts/{server.account.sid}/Presence/alice") as resp:
            assert resp.status == 405 and (await resp.json())["code"] == 40005


async def test_health(server: RunningServer) -> None:
    assert (await get(server, "/healthz"))[:2] == (200, {"status": "ok"})
    status, body, _ = await get(server, "/readyz")
    assert status == 200 and body["status"] == "ready"
    server.node.gateway.accepting = False
    status, body, _ = await get(server, "/readyz")
    assert status == 503 and body["checks"]["accepting_sessions"] is False
