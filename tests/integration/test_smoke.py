from __future__ import annotations

import aiohttp

from tests.helpers.servers import RunningServer
from tests.helpers.wsclient import RawClient


async def test_register_and_query(server: RunningServer) -> None:
    client = await RawClient.open(server.ws_url)
    reply = await client.register(server.token("alice"))
    assert reply["type"] == "registered", reply
    acc = server.account
    headers = {"Authorization": aiohttp.encode_basic_auth(acc.sid, acc.auth_token)}
    async with aiohttp.ClientSession(headers=headers) as http:
        async with http.get(f"{server.http_url}/v1/Accounts/{acc.sid}/Presence/alice") as resp:
            body = await resp.json()
    assert resp.status == 200
    assert body["status"] == "available"
    assert body["sessions"][0]["session"] == reply["session"]
    await client.close()
