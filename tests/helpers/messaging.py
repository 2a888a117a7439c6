"""REST helpers for the messaging pipeline's tests: send, read, wait for a status."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import aiohttp

from presence_server.engines.ports import MessageRecord
from tests.helpers.servers import RunningServer, TestAccount

NUMBER = "+15550001111"  # the account's own number (From)
OTHER_NUMBER = "+15550002222"


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def auth(account: TestAccount) -> dict[str, str]:
    return basic(account.sid, account.auth_token)


def messages_path(account_sid: str, sid: str | None = None) -> str:
    base = f"/2010-04-01/Accounts/{account_sid}/Messages"
    return f"{base}/{sid}.json" if sid else f"{base}.json"


async def call(
    server: RunningServer, method: str, path: str, *, account: TestAccount | None = None, headers: dict[str, str] | None = None,
    **kwargs: Any,
) -> tuple[int, Any, dict[str, str]]:
    hdrs = auth(account or server.account) if headers is None else headers
    async with aiohttp.ClientSession() as http:
        async with http.request(method, server.http_url + path, headers=hdrs, allow_redirects=False, **kwargs) as resp:
            body = await resp.json() if resp.content_type == "application/json" else await resp.text()
            return resp.status, body, dict(resp.headers)


async def send(server: RunningServer, account: TestAccount | None = None, **form: Any) -> tuple[int, Any]:
    """POST Messages.json; list values become repeated parameters (MediaUrl)."""
    acc = account or server.account
    data = aiohttp.FormData()
    for key, value in form.items():
        for v in value if isinstance(value, (list, tuple)) else [value]:
            data.add_field(key, str(v))
    status, body, _ = await call(server, "POST", messages_path(acc.sid), account=acc, data=data)
    return status, body


async def wait_status(
    server: RunningServer, sid: str, *statuses: str, account: TestAccount | None = None, timeout: float = 5.0,
    advance: float = 0.0,
) -> MessageRecord:
    """The record once its status is one of ``statuses`` (real-time polling; the
    pipeline runs on its own). ``advance``: move the server's manual clock this
    much per poll, for work that waits on clock time (the dispatcher's poll)."""
    acc = account or server.account
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    record = None
    while loop.time() < end:
        record = await server.node.engine.messages.get(acc.sid, sid)
        if record is not None and record.status in statuses:
            return record
        await asyncio.sleep(0.01)
        if advance:
            await server.advance(advance)
    raise AssertionError(f"message {sid} is {record.status if record else 'missing'}, not {statuses}")


async def settle(rounds: int = 50) -> None:
    for _ in range(rounds):
        await asyncio.sleep(0)


def account_with_number(**extra: Any) -> TestAccount:
    """An account owning NUMBER and OTHER_NUMBER, alice (phone +15550100001) and bob (+15550100002)."""
    return TestAccount(
        identities=[{"identity": "alice", "phone": "+15550100001"}, {"identity": "bob", "phone": "+15550100002"}],
        extra={"phone_numbers": [{"number": NUMBER}, {"number": OTHER_NUMBER}], **extra},
    )
