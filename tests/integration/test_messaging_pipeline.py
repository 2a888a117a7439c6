"""The messaging pipeline end to end on a real node: channel choice (in-app or
SMS, live from presence), status callbacks, retries and failover, validity,
prioritization, and routes learned from delivery reports."""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator

import pytest

from protocol.presence import SessionPresence

from tests.helpers.carrier import FakeCarrier
from tests.helpers.instructions import InstructionServer
from tests.helpers.messaging import NUMBER, account_with_number, basic, call, send, settle, wait_status
from tests.helpers.servers import RunningServer, start_server
from tests.helpers.wsclient import RawClient

INGRESS = ("carrier-user", "inbound-password-0123456789")


@pytest.fixture
async def server() -> AsyncIterator[RunningServer]:
    srv = await start_server([account_with_number()], signaling={"message_ack_timeout": 5})
    try:
        yield srv
    finally:
        await srv.node.stop()


async def client(server: RunningServer, identity: str, capabilities: list[str] | None = None) -> RawClient:
    ws = await RawClient.open(server.ws_url)
    reply = await ws.register(server.token(identity), capabilities=capabilities or ["messaging"])
    assert reply["type"] == "registered", reply
    return ws


async def test_present_app_gets_it_in_app_and_the_ack_delivers(server: RunningServer) -> None:
    alice = await client(server, "alice")
    status, body = await send(server, To="client:alice", From=NUMBER, Body="hi in the app")
    assert status == 201
    frame = await alice.recv_type("message")
    assert frame["sid"] == body["sid"] and frame["body"] == "hi in the app" and frame["from"] == NUMBER
    await alice.send({"type": "ack", "sid": body["sid"]})
    record = await wait_status(server, body["sid"], "delivered")
    assert record.channel == "app" and record.channel_reason == "app-present" and record.provider is None
    # A read receipt after delivery moves it to 'read'.
    await alice.send({"type": "ack", "sid": body["sid"], "read": True})
    await wait_status(server, body["sid"], "read")
    await alice.close()


async def test_a_number_that_maps_to_a_present_identity_goes_in_app(server: RunningServer) -> None:
    alice = await client(server, "alice")
    _, body = await send(server, To="+15550100001", From=NUMBER, Body="to alice's phone number")
    frame = await alice.recv_type("message")
    await alice.send({"type": "ack", "sid": frame["sid"]})
    record = await wait_status(server, body["sid"], "delivered")
    assert record.channel == "app"
    await alice.close()


async def test_no_ack_falls_back_to_sms(server: RunningServer) -> None:
    alice = await client(server, "alice")
    _, body = await send(server, To="client:alice", From=NUMBER, Body="are you there?")
    await alice.recv_type("message")
    await server.advance(5.1)
    record = await wait_status(server, body["sid"], "sent")
    assert record.channel == "sms" and record.fallback_reason == "not-acked" and record.to == "+15550100001"
    await alice.close()


async def test_a_session_on_a_gateway_that_is_gone_gets_sms_without_waiting_for_the_ack_timeout(server: RunningServer) -> None:
    # A gateway killed a moment ago: its session is still present (the lease has
    # not run out) but nobody listens at its node's address, so no ack can come.
    ghost = SessionPresence("SE" + "0" * 32, server.account.sid, "alice", "ND" + "0" * 32, capabilities=("messaging",))
    await server.node.engine.presence.upsert(ghost, lease_expires=server.clock.time() + 30)
    _, body = await send(server, To="client:alice", From=NUMBER, Body="anyone?")
    # The clock stands still: waiting for the ack timeout would never end.
    record = await wait_status(server, body["sid"], "sent")
    assert record.channel == "sms" and record.fallback_reason == "not-acked" and record.to == "+15550100001"


async def test_absent_or_incapable_app_gets_sms(server: RunningServer) -> None:
    voice_only = await client(server, "bob", ["voice"])
    _, body = await send(server, To="client:alice", From=NUMBER, Body="absent")
    record = await wait_status(server, body["sid"], "sent")
    assert record.channel == "sms" and record.channel_reason == "app-absent" and record.fallback_reason == "absent"
    _, body = await send(server, To="client:bob", From=NUMBER, Body="no messaging capability")
    record = await wait_status(server, body["sid"], "sent")
    assert record.channel == "sms" and record.to == "+15550100002"
    await voice_only.close()


async def test_status_callbacks_are_signed_and_retried() -> None:
    server = await start_server([account_with_number()], security={"allow_private_urls": True})
    hooks = InstructionServer(server.account.auth_token)
    answers = iter([500, 200, 200, 200])

    def answer(params: dict[str, str]) -> Any:
        from aiohttp import web

        return web.Response(status=next(answers))

    hooks.on("/status", answer)
    await hooks.start()
    url = hooks.url("/status")
    try:
        _, body = await send(server, To="+15557770001", From=NUMBER, Body="tell me", StatusCallback=url)
        await wait_status(server, body["sid"], "sent")
        await hooks.wait_for("/status", 1)
        await server.advance(1.1)  # the webhook sender's first backoff
        await hooks.wait_for("/status", 2)
        first, retry = hooks.received[:2]
        assert first.signature_valid and retry.signature_valid
        assert retry.params["MessageStatus"] == "sent" and retry.params["MessageSid"] == body["sid"]
        assert retry.params["AccountSid"] == server.account.sid and "ErrorCode" not in retry.params
    finally:
        await hooks.stop()
        await server.node.stop()


# -- carriers that fail, route by route ------------------------------------------------------


def http_provider(name: str, url: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "kind": "http", "url": url, "timeout": 1.0, "inbound_username": INGRESS[0], "inbound_password": INGRESS[1], **extra}


@pytest.fixture
async def carriers() -> AsyncIterator[tuple[FakeCarrier, FakeCarrier]]:
    a, b = FakeCarrier(), FakeCarrier()
    for c in (a, b):
        c.responder = lambda req, c=c: (200, {"id": c.next_id()})
        await c.start()
    try:
        yield a, b
    finally:
        await a.close()
        await b.close()


async def two_carrier_server(a: FakeCarrier, b: FakeCarrier, strategy: str, **messaging: Any) -> RunningServer:
    return await start_server(
        [account_with_number()],
        providers=[http_provider("alpha", a.url), http_provider("beta", b.url)],
        routes=[{"name": "us", "countries": ["US"], "strategy": strategy, "providers": [{"name": "alpha"}, {"name": "beta"}]}],
        messaging={"exploration": 0.0, **messaging},
    )


async def report(server: RunningServer, provider: str, pid: str, status: str, error_code: int | None = None) -> tuple[int, Any]:
    data = {"id": pid, "status": status, **({"error_code": error_code} if error_code else {})}
    status_code, body, _ = await call(server, "POST", f"/v1/Ingress/{provider}/Status", headers=basic(*INGRESS), json=data)
    return status_code, body


async def test_temporary_refusal_fails_over_to_the_next_provider(carriers: tuple[FakeCarrier, FakeCarrier]) -> None:
    a, b = carriers
    a.responder = lambda req: (503, {"error": "busy"})
    server = await two_carrier_server(a, b, "failover")
    try:
        _, body = await send(server, To="+15557770001", From=NUMBER, Body="x")
        record = await wait_status(server, body["sid"], "sent")
        assert record.provider == "beta" and record.tried_providers == ("alpha", "beta") and record.attempts == 2
        assert len(a.requests) == 1 and len(b.requests) == 1
        assert a.requests[0]["headers"]["Idempotency-Key"] == body["sid"] == b.requests[0]["headers"]["Idempotency-Key"]
    finally:
        await server.node.stop()


async def test_permanent_refusal_fails_the_message(carriers: tuple[FakeCarrier, FakeCarrier]) -> None:
    a, b = carriers
    a.responder = lambda req: (400, {"error_code": 30005})
    server = await two_carrier_server(a, b, "failover")
    try:
        _, body = await send(server, To="+15557770001", From=NUMBER, Body="x")
        record = await wait_status(server, body["sid"], "failed")
        assert record.error_code == 30005 and b.requests == []
    finally:
        await server.node.stop()


async def test_validity_period_ends_a_message_that_cannot_be_sent(carriers: tuple[FakeCarrier, FakeCarrier]) -> None:
    a, b = carriers
    a.responder = b.responder = lambda req: (503, {})
    server = await two_carrier_server(a, b, "failover", retry_base=10.0)
    try:
        _, body = await send(server, To="+15557770001", From=NUMBER, Body="x", ValidityPeriod="30")
        await wait_status(server, body["sid"], "queued")
        for _ in range(10):
            await server.advance(10)
            await settle()
        record = await wait_status(server, body["sid"], "failed", advance=5)
        assert record.error_code in (30001, 30008)
    finally:
        await server.node.stop()


async def test_adaptive_route_moves_traffic_when_receipts_turn_to_failures(carriers: tuple[FakeCarrier, FakeCarrier]) -> None:
    a, b = carriers
    server = await two_carrier_server(a, b, "adaptive")
    try:
        async def send_and_report(outcome_for: dict[str, str]) -> str:
            _, body = await send(server, To="+15557770001", From=NUMBER, Body="x")
            record = await wait_status(server, body["sid"], "sent")
            assert record.provider is not None and record.provider_message_id is not None
            code, _ = await report(server, record.provider, record.provider_message_id, outcome_for[record.provider],
                                   30003 if outcome_for[record.provider] == "undelivered" else None)
            assert code == 200
            return record.provider

        # Both deliver at first; alpha (first in the route) gets the traffic.
        firsts = [await send_and_report({"alpha": "delivered", "beta": "delivered"}) for _ in range(3)]
        assert firsts == ["alpha"] * 3
        # alpha's receipts turn to failures: within a few messages traffic moves to beta.
        later = [await send_and_report({"alpha": "undelivered", "beta": "delivered"}) for _ in range(8)]
        assert later[-4:] == ["beta"] * 4, later
        status, stats, _ = await call(server, "GET", f"/v1/Accounts/{server.account.sid}/Routing/Stats")
        assert status == 200
        by_provider = {s["provider"]: s for s in stats["totals"]}
        assert by_provider["alpha"]["undelivered"] >= 1 and by_provider["beta"]["delivered"] >= 4
    finally:
        await server.node.stop()


async def test_routing_stats_need_operator_credentials(carriers: tuple[FakeCarrier, FakeCarrier]) -> None:
    a, b = carriers
    server = await start_server(
        [account_with_number()], providers=[http_provider("alpha", a.url)],
        operator={"username": "ops", "password": "operator-password-123456"},
    )
    try:
        _, body = await send(server, To="+15557770001", From=NUMBER, Body="x")
        await wait_status(server, body["sid"], "sent")
        for headers in ({}, basic(server.account.sid, server.account.auth_token), basic("ops", "wrong-password-0000000")):
            status, err, _ = await call(server, "GET", "/v1/Routing/Stats", headers=headers)
            assert status == 401 and err["code"] == 40014
        status, stats, _ = await call(server, "GET", "/v1/Routing/Stats", headers=basic("ops", "operator-password-123456"))
        assert status == 200 and stats["totals"][0]["provider"] == "alpha" and stats["totals"][0]["submitted"] == 1
        assert stats["minutes"] and stats["minutes"][0]["submitted"] == 1
        status, err, _ = await call(server, "GET", "/v1/Routing/Stats?Minutes=0", headers=basic("ops", "operator-password-123456"))
        assert status == 400 and err["code"] == 40001
    finally:
        await server.node.stop()


async def test_delivery_reports_bad_unknown_and_duplicate(carriers: tuple[FakeCarrier, FakeCarrier]) -> None:
    a, b = carriers
    server = await two_carrier_server(a, b, "failover")
    try:
        _, body = await send(server, To="+15557770001", From=NUMBER, Body="x")
        record = await wait_status(server, body["sid"], "sent")
        assert (await report(server, "alpha", "no-such-id", "delivered"))[0] == 404
        status, err, _ = await call(server, "POST", "/v1/Ingress/alpha/Status", headers=basic(*INGRESS), json={"id": record.provider_message_id, "status": "exploded"})
        assert status == 400 and err["code"] == 40001
        # beta cannot report on alpha's message.
        assert (await report(server, "beta", record.provider_message_id or "", "delivered"))[0] == 404
        code, first = await report(server, "alpha", record.provider_message_id or "", "delivered")
        assert code == 200 and first["changed"] is True and first["status"] == "delivered"
        code, again = await report(server, "alpha", record.provider_message_id or "", "delivered")
        assert code == 200 and again["changed"] is False
        code, late = await report(server, "alpha", record.provider_message_id or "", "sent")
        assert code == 200 and late["status"] == "delivered"
    finally:
        await server.node.stop()


# -- prioritization -------------------------------------------------------------------------


async def test_urgent_message_overtakes_a_bulk_backlog() -> None:
    server = await start_server(
        [account_with_number()], providers=[{"name": "outbox", "kind": "outbox", "mps": 2, "burst": 2}],
    )
    try:
        bulk = []
        for i in range(12):
            status, body = await send(server, To=f"+1555777{i:04d}", From=NUMBER, Body=f"promo {i}", Priority="bulk")
            assert status == 201
            bulk.append(body["sid"])
        await settle(200)
        _, urgent = await send(server, To="+15557779999", From=NUMBER, Body="your code is 123456", Priority="urgent")
        await wait_status(server, urgent["sid"], "sent")
        records = [await server.node.engine.messages.get(server.account.sid, sid) for sid in bulk]
        waiting = [r for r in records if r is not None and r.status == "queued"]
        assert len(waiting) >= 8, "the urgent message went ahead of most of the bulk backlog"
        # The backlog drains at the provider's rate as time passes; none is lost.
        for _ in range(60):
            await server.advance(1)
            await settle()
        for sid in bulk:
            await wait_status(server, sid, "sent", advance=0.5)
    finally:
        await server.node.stop()


async def test_a_provider_that_hangs_is_a_temporary_failure(carriers: tuple[FakeCarrier, FakeCarrier]) -> None:
    a, b = carriers
    a.delay = 1.5  # longer than the provider's timeout (1 s)
    server = await two_carrier_server(a, b, "failover")
    try:
        _, body = await send(server, To="+15557770001", From=NUMBER, Body="x")
        record = await wait_status(server, body["sid"], "sent")
        assert record.provider == "beta" and record.tried_providers == ("alpha", "beta")
    finally:
        await server.node.stop()


async def test_a_provider_that_answers_garbage_fails_the_message_without_retrying(carriers: tuple[FakeCarrier, FakeCarrier]) -> None:
    a, b = carriers
    a.responder = lambda req: (200, ["not", "an", "object"])
    server = await two_carrier_server(a, b, "failover")
    try:
        _, body = await send(server, To="+15557770001", From=NUMBER, Body="x")
        record = await wait_status(server, body["sid"], "failed")
        # Garbage after a 2xx may mean it was sent: retrying could text the person twice.
        assert record.error_code == 30008 and b.requests == [] and len(a.requests) == 1
    finally:
        await server.node.stop()
