"""WebhookSender against real HTTP servers on 127.0.0.1, with a manual clock.

Retries wait on the ManualClock, so the tests advance time instead of
sleeping; every request received is checked with the helper library's
RequestValidator.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import web
from structlog.testing import capture_logs
from twilio.request_validator import RequestValidator

from presence_server.clock import ManualClock
from presence_server.signaling.urlguard import UrlPolicy, guarded_session
from presence_server.webhooks import WebhookSender

AUTH_TOKEN = "fedcba9876543210fedcba9876543210"
PARAMS = {
    "CallSid": "CA" + "3" * 32,
    "AccountSid": "AC" + "4" * 32,
    "CallStatus": "completed",
    "CallDuration": "42",
    "Body": "a message body that must never be logged",
}


@dataclass
class Callbacks:
    """A status-callback receiver that answers with the scripted statuses, then 200."""

    statuses: list[int] = field(default_factory=list)
    seen: list[dict[str, object]] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        form = await request.post() if request.method == "POST" else {}
        url = f"http://{request.host}{request.raw_path}"
        self.seen.append(
            {
                "method": request.method,
                "form": dict(form),
                "query": dict(request.query),
                "token": request.headers.get("I-Twilio-Idempotency-Token"),
                "valid": RequestValidator(AUTH_TOKEN).validate(url, form, request.headers.get("X-Twilio-Signature", "")),
            }
        )
        self.arrived.set()
        return web.Response(status=self.statuses.pop(0) if self.statuses else 200)


@asynccontextmanager
async def serve(handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, shutdown_timeout=0.5, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with guarded_session(UrlPolicy(allow_private=False, allow_loopback=True)) as session:
        yield session


@pytest.fixture
async def sender(session: aiohttp.ClientSession, clock: ManualClock) -> AsyncIterator[WebhookSender]:
    sender = WebhookSender(session, clock, retries=3, backoff=1.0)
    yield sender
    await sender.close(timeout=0.1)


async def run_with_clock(clock: ManualClock, send: Awaitable[bool], step: float = 1.0, limit: int = 50) -> bool:
    """Await ``send`` while moving the manual clock forward, so its backoff sleeps end."""
    task = asyncio.ensure_future(send)
    for _ in range(limit):
        if task.done():
            break
        await asyncio.sleep(0.01)  # real I/O happens in real time
        await clock.advance(step)
    return await asyncio.wait_for(task, 5)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_signed_post_is_received_and_validates(sender: WebhookSender) -> None:
    receiver = Callbacks()
    async with serve(receiver.handle) as base:
        assert await sender.send(f"{base}/status?leg=a", "POST", PARAMS, AUTH_TOKEN) is True
    (seen,) = receiver.seen
    assert seen["method"] == "POST" and seen["valid"] is True
    assert seen["form"] == PARAMS and seen["query"] == {"leg": "a"}


async def test_signed_get_carries_params_in_the_query(sender: WebhookSender) -> None:
    receiver = Callbacks()
    async with serve(receiver.handle) as base:
        assert await sender.send(f"{base}/status#ct=1000", "GET", PARAMS, AUTH_TOKEN) is True
    (seen,) = receiver.seen
    assert seen["method"] == "GET" and seen["valid"] is True and seen["query"] == PARAMS


async def test_server_error_is_retried_after_backoff(sender: WebhookSender, clock: ManualClock) -> None:
    receiver = Callbacks(statuses=[500, 503])
    async with serve(receiver.handle) as base:
        started = clock.monotonic()
        with capture_logs() as logs:
            delivered = await run_with_clock(clock, sender.send(f"{base}/status", "POST", PARAMS, AUTH_TOKEN))
    assert delivered is True
    assert len(receiver.seen) == 3 and all(seen["valid"] for seen in receiver.seen)
    assert len({seen["token"] for seen in receiver.seen}) == 1  # one callback, one idempotency token
    assert clock.monotonic() - started >= 1.0 + 2.0  # backoff 1 s, then 2 s, on the clock
    delivered_log = [entry for entry in logs if entry["event"] == "webhook delivered"]
    assert delivered_log[0]["attempts"] == 3 and delivered_log[0]["call_sid"] == PARAMS["CallSid"]
    # Neither the auth token nor the form (a message body) reaches the logs.
    assert AUTH_TOKEN not in repr(logs) and PARAMS["Body"] not in repr(logs)


async def test_client_error_is_not_retried(sender: WebhookSender, clock: ManualClock) -> None:
    receiver = Callbacks(statuses=[404])
    async with serve(receiver.handle) as base:
        delivered = await run_with_clock(clock, sender.send(f"{base}/status", "POST", PARAMS, AUTH_TOKEN))
        await clock.advance(60)
        await asyncio.sleep(0.05)
    assert delivered is False
    assert len(receiver.seen) == 1


async def test_connection_failure_retried_then_given_up(sender: WebhookSender, clock: ManualClock) -> None:
    with capture_logs() as logs:
        delivered = await run_with_clock(
            clock, sender.send(f"http://127.0.0.1:{closed_port()}/status", "POST", PARAMS, AUTH_TOKEN)
        )
    assert delivered is False
    (failed,) = [entry for entry in logs if entry["event"] == "webhook failed"]
    assert failed["attempts"] == 4 and failed["code"] == 11205  # 1 + retries=3


async def test_refused_address_is_not_retried(session: aiohttp.ClientSession, clock: ManualClock) -> None:
    sender = WebhookSender(session, clock)
    with capture_logs() as logs:
        assert await sender.send("http://169.254.169.254/latest/meta-data/", "POST", PARAMS, AUTH_TOKEN) is False
    (failed,) = [entry for entry in logs if entry["event"] == "webhook failed"]
    assert failed["attempts"] == 1 and failed["code"] == 11210


async def test_send_soon_runs_in_the_background_and_close_waits(sender: WebhookSender) -> None:
    receiver = Callbacks()
    async with serve(receiver.handle) as base:
        task = sender.send_soon(f"{base}/status", "POST", PARAMS, AUTH_TOKEN)
        assert task is not None and sender.pending == 1
        await sender.close(timeout=5)
        assert task.done() and task.result() is True
    assert sender.pending == 0 and len(receiver.seen) == 1
    assert sender.send_soon(f"{base}/status", "POST", PARAMS, AUTH_TOKEN) is None  # closed


async def test_close_cancels_callbacks_stuck_in_backoff_and_leaks_no_task(
    session: aiohttp.ClientSession, clock: ManualClock
) -> None:
    sender = WebhookSender(session, clock, retries=5, backoff=30.0)
    receiver = Callbacks(statuses=[500] * 10)
    async with serve(receiver.handle) as base:
        tasks = [sender.send_soon(f"{base}/status/{n}", "POST", PARAMS, AUTH_TOKEN) for n in range(3)]
        while len(receiver.seen) < 3:  # each made its first attempt, now waits 30 s of clock time
            await asyncio.wait_for(receiver.arrived.wait(), 5)
            receiver.arrived.clear()
        await sender.close(timeout=0.05)
    assert sender.pending == 0
    assert all(task is not None and task.cancelled() for task in tasks)
    leftovers = [t for t in asyncio.all_tasks() if t.get_name().startswith("webhook ") and not t.done()]
    assert leftovers == []
