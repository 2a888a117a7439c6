"""A message whose store command ran but whose answer was lost is accepted
(201), not refused (503) and sent all the same.

Found by the fault suite (tests/chaos): with Redis connections dropped under a
trickle of REST messages, a request answered 503 had its message stored and
sent; the client, told it was refused, would send it again (a duplicate). The
intake now asks the store whether the batch is there before answering 503.

A real server (redis engine) reaches a real Redis through a FaultProxy, which
loses exactly the command that carries the test's message body, or its reply.
"""

from __future__ import annotations

import base64
import secrets
from typing import Any, AsyncIterator

import aiohttp
import pytest

from tests.helpers.faultproxy import FaultProxy
from tests.helpers.redis_server import RedisServer, redis_server
from tests.helpers.servers import RunningServer, TestAccount, start_server

NUMBER = "+15550001111"


@pytest.fixture
async def through_proxy(tmp_path: Any) -> AsyncIterator[tuple[RunningServer, FaultProxy, RedisServer]]:
    async with redis_server() as redis:
        proxy = FaultProxy("127.0.0.1", redis.port)
        await proxy.start()
        account = TestAccount(extra={"phone_numbers": [{"number": NUMBER}]})
        server = await start_server([account], engine={"kind": "redis", "url": proxy.url, "data_dir": str(tmp_path)})
        try:
            yield server, proxy, redis
        finally:
            await server.node.stop()
            await proxy.close()


async def post_message(server: RunningServer, body: str) -> tuple[int, Any]:
    account = server.accounts[0]
    auth = base64.b64encode(f"{account.sid}:{account.auth_token}".encode()).decode()
    url = f"http://127.0.0.1:{server.node.port}/2010-04-01/Accounts/{account.sid}/Messages.json"
    async with aiohttp.ClientSession() as http:
        async with http.post(url, data={"To": "+15550109999", "From": NUMBER, "Body": body}, headers={"Authorization": f"Basic {auth}"}) as resp:
            return resp.status, await resp.json(content_type=None)


async def listed(server: RunningServer, body: str) -> list[dict[str, Any]]:
    account = server.accounts[0]
    records = await server.node.engine.messages.list(account.sid, to="+15550109999", limit=100)
    return [r.to_api() for r in records if r.body == body]


async def test_a_stored_message_whose_answer_was_lost_is_accepted(through_proxy: tuple[RunningServer, FaultProxy, RedisServer]) -> None:
    server, proxy, _ = through_proxy
    body = f"lost answer {secrets.token_hex(8)}"
    proxy.lose(body.encode(), "reply")
    status, answer = await post_message(server, body)
    assert proxy.lost == 1  # the store command went through, its answer did not
    assert status == 201, answer
    (record,) = await listed(server, body)
    assert record["sid"] == answer["sid"]  # stored once, under the sid the client was given


async def test_a_message_whose_store_command_never_ran_is_refused(through_proxy: tuple[RunningServer, FaultProxy, RedisServer]) -> None:
    server, proxy, _ = through_proxy
    body = f"lost request {secrets.token_hex(8)}"
    proxy.lose(body.encode(), "request")
    status, answer = await post_message(server, body)
    assert proxy.lost == 1
    assert status == 503 and answer["code"] == 10016, answer
    assert await listed(server, body) == []
    # The next one goes through as usual.
    status, answer = await post_message(server, "after " + body)
    assert status == 201, answer
    assert [r["sid"] for r in await listed(server, "after " + body)] == [answer["sid"]]
