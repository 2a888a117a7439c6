"""Carrier providers against real peers: the outbox on a real file, the http
provider against a real HTTP server on loopback, and the delivery-report webhook
on a real node."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import re
import socket
import sqlite3
import time
from pathlib import Path
from typing import Any, AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from presence_server.carriers import (
    PROVIDER_KINDS,
    OutboundMessage,
    SendResult,
    build_provider,
    default_provider_configs,
)
from presence_server.carriers.http import HttpProvider
from presence_server.carriers.outbox import OutboxProvider
from presence_server.config import ProviderConfig
from presence_server.engines.ports import MessageRecord
from protocol.addresses import new_sid
from tests.helpers.carrier import FakeCarrier
from tests.helpers.servers import RunningServer, start_server

INBOUND_USER = "carrier-user"
INBOUND_PASSWORD = "inbound-password-0123456789"


def message(**fields: Any) -> OutboundMessage:
    data: dict[str, Any] = {
        "message_sid": new_sid("SM"),
        "account_sid": new_sid("AC"),
        "to": "+15550100001",
        "from_": "+15550199999",
        "body": "Missed call from client:bob",
    }
    data.update(fields)
    return OutboundMessage(**data)


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.fixture
async def carrier() -> AsyncIterator[FakeCarrier]:
    fake = FakeCarrier()
    await fake.start()
    try:
        yield fake
    finally:
        await fake.close()


def http_config(url: str, **fields: Any) -> ProviderConfig:
    data: dict[str, Any] = {"name": "carrier", "kind": "http", "url": url, "auth_username": "us", "auth_password": "pw", "timeout": 2.0}
    data.update(fields)
    return ProviderConfig(**data)


@pytest.fixture
async def http_provider(carrier: FakeCarrier) -> AsyncIterator[HttpProvider]:
    provider = build_provider(http_config(carrier.url), data_dir="/nonexistent", public_url="https://presence.example.com/")
    assert isinstance(provider, HttpProvider)
    await provider.start()
    try:
        yield provider
    finally:
        await provider.close()


# -- http provider: sending ----------------------------------------------------------------


async def test_http_send_posts_the_documented_body(carrier: FakeCarrier, http_provider: HttpProvider) -> None:
    msg = message(media_urls=("https://example.com/cat.png",))
    result = await http_provider.send(msg)
    assert result == SendResult(accepted=True, provider_message_id="carrier-1", status="sent")
    (request,) = carrier.requests
    assert request["json"] == {
        "message_sid": msg.message_sid,
        "account_sid": msg.account_sid,
        "to": "+15550100001",
        "from": "+15550199999",
        "body": "Missed call from client:bob",
        "media_urls": ["https://example.com/cat.png"],
        "status_callback": "https://presence.example.com/v1/Ingress/carrier/Status",
    }
    headers = request["headers"]
    assert headers["Authorization"] == basic("us", "pw")["Authorization"]
    assert headers["Content-Type"] == "application/json"
    assert headers["Idempotency-Key"] == msg.message_sid


async def test_http_bearer_auth_and_no_status_callback_without_public_url(carrier: FakeCarrier) -> None:
    provider = HttpProvider(http_config(carrier.url, auth_username=None, auth_password=None, auth_bearer="tok-123"))
    await provider.start()
    try:
        assert (await provider.send(message())).accepted
    finally:
        await provider.close()
    (request,) = carrier.requests
    assert request["headers"]["Authorization"] == "Bearer tok-123"
    assert request["json"]["status_callback"] is None


@pytest.mark.parametrize("answer,expected", [(b'{"message_id": "m-7"}', "m-7"), (b'{"id": 12345, "status": "queued"}', "12345")])
async def test_http_accepts_id_or_message_id(carrier: FakeCarrier, http_provider: HttpProvider, answer: bytes, expected: str) -> None:
    carrier.status, carrier.answer = 201, answer
    result = await http_provider.send(message())
    assert result.accepted and result.provider_message_id == expected


@pytest.mark.parametrize(
    "status,answer,code,temporary",
    [
        (400, b'{"error": "bad number"}', 30007, False),
        (422, b'{"error_code": 30005}', 30005, False),  # the carrier's own, more precise code
        (404, b"", 30007, False),
        (401, b"", 30002, False),
        (403, b'{"error_code": 30006}', 30002, False),  # our credentials: never the carrier's guess
        (429, b"", 30001, True),
        (500, b"<html>oops</html>", 30008, True),
        (502, b"", 30008, True),
        (503, b"", 30001, True),
    ],
)
async def test_http_refusals_map_to_codes(
    carrier: FakeCarrier, http_provider: HttpProvider, status: int, answer: bytes, code: int, temporary: bool
) -> None:
    carrier.status, carrier.answer = status, answer
    result = await http_provider.send(message())
    assert not result.accepted
    assert (result.error_code, result.temporary) == (code, temporary)
    assert result.provider_message_id is None
    assert str(status) in (result.error_message or "")


@pytest.mark.parametrize("answer", [b"not json at all", b"[1, 2, 3]", b'{"ok": true}', b'{"id": ""}', b'{"id": true}', b""])
async def test_http_garbage_answers_are_refusals_not_crashes(carrier: FakeCarrier, http_provider: HttpProvider, answer: bytes) -> None:
    carrier.answer = answer
    result = await http_provider.send(message())
    assert not result.accepted and not result.temporary  # not retried: the text may have gone out
    assert result.error_code == 30008
    assert "HTTP 200" in (result.error_message or "") and "may or may not have been sent" in (result.error_message or "")


async def test_http_oversized_answer_is_refused(carrier: FakeCarrier, http_provider: HttpProvider) -> None:
    carrier.answer = b'{"id": "x", "pad": "' + b"a" * 200_000 + b'"}'
    result = await http_provider.send(message())
    assert not result.accepted and result.error_code == 30008


async def test_http_timeout_is_temporary(carrier: FakeCarrier) -> None:
    # Its own short timeout: the other tests' 2 s keeps a loaded CI machine's
    # first request from timing out (0.2 s did, once).
    http_provider = build_provider(http_config(carrier.url, timeout=0.2), data_dir="/nonexistent", public_url="https://presence.example.com/")
    assert isinstance(http_provider, HttpProvider)
    await http_provider.start()
    carrier.delay = 2.0  # far over the configured 0.2 s
    started = time.monotonic()
    try:
        result = await http_provider.send(message())
    finally:
        await http_provider.close()
    assert time.monotonic() - started < 1.5
    assert not result.accepted and result.temporary and result.error_code == 30008
    assert "0.2 s" in (result.error_message or "")


async def test_http_connection_refused_is_temporary() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # Nothing listens on the port now.
    provider = HttpProvider(http_config(f"http://127.0.0.1:{port}/messages"))
    await provider.start()
    try:
        result = await provider.send(message())
    finally:
        await provider.close()
    assert not result.accepted and result.temporary and result.error_code == 30008
    assert "could not reach the provider" in (result.error_message or "")


async def test_http_redirects_are_not_followed(carrier: FakeCarrier, http_provider: HttpProvider) -> None:
    carrier.status, carrier.answer = 307, b""
    carrier.headers = {"Location": "http://127.0.0.1:1/elsewhere"}
    result = await http_provider.send(message())
    assert not result.accepted and not result.temporary and result.error_code == 30008
    assert len(carrier.requests) == 1


async def test_http_provider_refuses_media_without_mms(carrier: FakeCarrier) -> None:
    provider = HttpProvider(http_config(carrier.url, capabilities=["sms"]))
    await provider.start()
    try:
        result = await provider.send(message(media_urls=("https://example.com/a.png",)))
        assert not result.accepted and "mms" in (result.error_message or "")
        assert (await provider.send(message())).accepted
    finally:
        await provider.close()
    assert len(carrier.requests) == 1


async def test_http_provider_after_close_reports_instead_of_sending(carrier: FakeCarrier) -> None:
    provider = HttpProvider(http_config(carrier.url))
    await provider.start()
    await provider.close()
    result = await provider.send(message())
    assert not result.accepted and result.temporary and "closed" in (result.error_message or "")
    assert carrier.requests == []


async def test_http_provider_uses_a_shared_session_without_closing_it(carrier: FakeCarrier) -> None:
    async with aiohttp.ClientSession() as session:
        provider = build_provider(http_config(carrier.url), data_dir=".", session=session)
        await provider.start()
        assert (await provider.send(message())).accepted
        await provider.close()
        assert not session.closed


# -- outbox ---------------------------------------------------------------------------------


async def test_outbox_records_and_survives_a_restart(tmp_path: Path) -> None:
    provider = build_provider(ProviderConfig(name="outbox"), data_dir=str(tmp_path))
    assert isinstance(provider, OutboxProvider)
    await provider.start()
    first, second = message(body="one"), message(body="two\nlines", media_urls=("https://example.com/a.png",))
    r1 = await provider.send(first)
    r2 = await provider.send(second)
    assert r1.accepted and r1.status == "sent" and re.fullmatch(r"OB[0-9a-f]{32}", r1.provider_message_id or "")
    assert r2.accepted and r2.provider_message_id != r1.provider_message_id
    await provider.close()

    with sqlite3.connect(tmp_path / "outbox.sqlite3") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"

    again = OutboxProvider(ProviderConfig(name="outbox"), data_dir=str(tmp_path))
    await again.start()
    try:
        entries = await again.entries(10)
    finally:
        await again.close()
    assert [e["body"] for e in entries] == ["one", "two\nlines"]  # newest last
    assert entries[1] == {
        "provider": "outbox",
        "provider_message_id": r2.provider_message_id,
        "message_sid": second.message_sid,
        "account_sid": second.account_sid,
        "to": "+15550100001",
        "from": "+15550199999",
        "body": "two\nlines",
        "media_urls": ["https://example.com/a.png"],
        "status": "sent",
        "created": entries[1]["created"],
    }
    assert abs(entries[1]["created"] - time.time()) < 60


async def test_outbox_resend_of_the_same_sid_is_recorded_once(tmp_path: Path) -> None:
    provider = OutboxProvider(ProviderConfig(name="outbox"), data_dir=str(tmp_path))
    await provider.start()
    try:
        msg = message()
        r1, r2 = await asyncio.gather(provider.send(msg), provider.send(msg))
        assert r1.provider_message_id == r2.provider_message_id
        assert len(await provider.entries(10)) == 1
        many = [message(body=str(i)) for i in range(20)]
        await asyncio.gather(*(provider.send(m) for m in many))
        last = await provider.entries(5)
        assert len(last) == 5
    finally:
        await provider.close()


async def test_outbox_after_close_reports_instead_of_raising(tmp_path: Path) -> None:
    provider = OutboxProvider(ProviderConfig(name="outbox"), data_dir=str(tmp_path))
    await provider.start()
    await provider.close()
    result = await provider.send(message())
    assert not result.accepted and result.temporary and result.error_code == 30008


async def test_outbox_on_an_unusable_data_dir_fails_at_start(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    provider = OutboxProvider(ProviderConfig(name="outbox"), data_dir=str(tmp_path / "file" / "data"))
    with pytest.raises(OSError):
        await provider.start()
    await provider.close()


def test_registry_and_defaults() -> None:
    assert set(PROVIDER_KINDS) == {"outbox", "http", "smpp"}
    (default,) = default_provider_configs([])
    assert (default.name, default.kind) == ("outbox", "outbox")
    configured = [ProviderConfig(name="a", kind="http", url="https://carrier.example.com")]
    assert default_provider_configs(configured) == configured


# -- delivery reports: POST /v1/Ingress/{provider}/Status ------------------------------------


@pytest.fixture
async def carrier_server(carrier: FakeCarrier) -> AsyncIterator[RunningServer]:
    running = await start_server(
        clock_start=1_700_000_000.0,
        providers=[
            {"name": "carrier", "kind": "http", "url": carrier.url, "inbound_username": INBOUND_USER, "inbound_password": INBOUND_PASSWORD},
            {"name": "other", "kind": "outbox", "inbound_username": INBOUND_USER, "inbound_password": INBOUND_PASSWORD},
            {"name": "closed", "kind": "outbox"},
        ],
    )
    try:
        yield running
    finally:
        await running.node.stop()


async def stored(server: RunningServer, **fields: Any) -> MessageRecord:
    data: dict[str, Any] = {
        "sid": new_sid("SM"),
        "account_sid": server.account.sid,
        "to": "+15550100001",
        "from_": "+15550199999",
        "body": "hello",
        "status": "sent",
        "provider": "carrier",
        "provider_message_id": "carrier-1",
        "date_created": 1_699_999_990.0,
        "date_updated": 1_699_999_990.0,
    }
    data.update(fields)
    rec = MessageRecord(**data)
    await server.node.engine.messages.create(rec)  # type: ignore[attr-defined]
    return rec


async def report(
    server: RunningServer,
    provider: str = "carrier",
    *,
    json_body: Any = None,
    form: dict[str, str] | None = None,
    raw: bytes | None = None,
    content_type: str | None = None,
    auth: dict[str, str] | None = None,
) -> tuple[int, Any]:
    headers = dict(basic(INBOUND_USER, INBOUND_PASSWORD) if auth is None else auth)
    kwargs: dict[str, Any] = {}
    if json_body is not None:
        kwargs["json"] = json_body
    elif form is not None:
        kwargs["data"] = form
    else:
        kwargs["data"] = raw or b""
        if content_type:
            headers["Content-Type"] = content_type
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{server.http_url}/v1/Ingress/{provider}/Status", headers=headers, **kwargs) as resp:
            return resp.status, await resp.json(content_type=None)


async def get_record(server: RunningServer, rec: MessageRecord) -> MessageRecord:
    found = await server.node.engine.messages.get(rec.account_sid, rec.sid)  # type: ignore[attr-defined]
    assert found is not None
    return found


async def test_report_delivered_updates_the_record(carrier_server: RunningServer) -> None:
    rec = await stored(carrier_server)
    await carrier_server.advance(5)
    status, body = await report(carrier_server, json_body={"id": "carrier-1", "status": "delivered"})
    assert (status, body) == (200, {"message_sid": rec.sid, "status": "delivered", "changed": True})
    after = await get_record(carrier_server, rec)
    assert after.status == "delivered" and after.error_code is None
    assert after.date_updated == 1_700_000_005.0  # the node's clock
    assert after.date_sent == 1_700_000_005.0  # it had none: delivered means sent by then


async def test_report_as_a_form_with_an_error_code(carrier_server: RunningServer) -> None:
    rec = await stored(carrier_server, date_sent=1_699_999_991.0)
    status, body = await report(carrier_server, form={"id": "carrier-1", "status": "UNDELIVERED", "error_code": "30003"})
    assert status == 200 and body["status"] == "undelivered"
    after = await get_record(carrier_server, rec)
    assert (after.status, after.error_code, after.date_sent) == ("undelivered", 30003, 1_699_999_991.0)
    assert after.error_message == "the carrier reported the message undelivered"
    # failed without a code gets 30008 (unknown error)
    await report(carrier_server, json_body={"message_id": "carrier-1", "status": "failed"})
    assert (await get_record(carrier_server, rec)).error_code == 30008


async def test_duplicate_and_stale_reports_change_nothing(carrier_server: RunningServer) -> None:
    rec = await stored(carrier_server)
    assert (await report(carrier_server, json_body={"id": "carrier-1", "status": "delivered", "timestamp": 1_699_999_995}))[0] == 200
    first = await get_record(carrier_server, rec)
    assert first.date_sent == 1_699_999_995.0
    await carrier_server.advance(10)
    for body in ({"id": "carrier-1", "status": "delivered"}, {"id": "carrier-1", "status": "sent"}):
        status, answer = await report(carrier_server, json_body=body)
        assert (status, answer) == (200, {"message_sid": rec.sid, "status": "delivered", "changed": False})
    assert await get_record(carrier_server, rec) == first


@pytest.mark.parametrize(
    "auth",
    [
        {},
        basic(INBOUND_USER, "wrong-password-0123456789"),
        basic("someone-else", INBOUND_PASSWORD),
        {"Authorization": "Basic !!!not-base64"},
        {"Authorization": "Bearer " + INBOUND_PASSWORD},
    ],
)
async def test_report_needs_the_providers_inbound_credentials(carrier_server: RunningServer, auth: dict[str, str]) -> None:
    rec = await stored(carrier_server)
    status, body = await report(carrier_server, json_body={"id": "carrier-1", "status": "failed"}, auth=auth)
    assert status == 401 and body["code"] == 20003 and body["status"] == 401
    assert (await get_record(carrier_server, rec)).status == "sent"


async def test_a_provider_without_inbound_credentials_takes_no_reports(carrier_server: RunningServer) -> None:
    await stored(carrier_server, provider="closed", provider_message_id="c-1")
    status, body = await report(carrier_server, "closed", json_body={"id": "c-1", "status": "delivered"})
    assert status == 401 and "no inbound credentials" in body["message"]


async def test_report_for_unknown_provider_or_id_is_404(carrier_server: RunningServer) -> None:
    await stored(carrier_server)
    status, body = await report(carrier_server, "nobody", json_body={"id": "carrier-1", "status": "delivered"})
    assert status == 404 and body["code"] == 40012  # the same code as the Voice and Messages ingress give
    status, body = await report(carrier_server, json_body={"id": "carrier-404", "status": "delivered"})
    assert status == 404 and body["code"] == 20404


async def test_report_cannot_touch_another_providers_message(carrier_server: RunningServer) -> None:
    theirs = await stored(carrier_server, provider="other", provider_message_id="shared-id")
    status, _ = await report(carrier_server, "carrier", json_body={"id": "shared-id", "status": "failed"})
    assert status == 404
    assert (await get_record(carrier_server, theirs)).status == "sent"
    status, _ = await report(carrier_server, "other", json_body={"id": "shared-id", "status": "delivered"})
    assert status == 200


@pytest.mark.parametrize(
    "kwargs,fragment",
    [
        ({"raw": b"{not json", "content_type": "application/json"}, "not valid JSON"),
        ({"raw": b"[1, 2]", "content_type": "application/json"}, "JSON object"),
        ({"raw": b"\xff\xfe", "content_type": "application/json"}, "not valid JSON"),
        ({"raw": b"id=carrier-1&status=delivered", "content_type": "text/plain"}, "application/json"),
        ({"json_body": {"status": "delivered"}}, "'id'"),
        ({"json_body": {"id": "", "status": "delivered"}}, "'id'"),
        ({"json_body": {"id": ["carrier-1"], "status": "delivered"}}, "'id'"),
        ({"json_body": {"id": "carrier-1"}}, "'status'"),
        ({"json_body": {"id": "carrier-1", "status": "teleported"}}, "'status'"),
        ({"json_body": {"id": "carrier-1", "status": "failed", "error_code": "abc"}}, "'error_code'"),
        ({"json_body": {"id": "carrier-1", "status": "failed", "error_code": True}}, "'error_code'"),
        ({"json_body": {"id": "carrier-1", "status": "failed", "error_code": 1e9}}, "'error_code'"),
        ({"json_body": {"id": "carrier-1", "status": "sent", "timestamp": "yesterday"}}, "'timestamp'"),
        ({"form": {"id": "carrier-1", "status": "sent", "timestamp": "nan"}}, "'timestamp'"),
    ],
)
async def test_malformed_reports_are_400(carrier_server: RunningServer, kwargs: dict[str, Any], fragment: str) -> None:
    rec = await stored(carrier_server)
    status, body = await report(carrier_server, **kwargs)
    assert status == 400 and body["code"] == 40001, body
    assert fragment in body["message"]
    assert await get_record(carrier_server, rec) == rec


async def test_status_route_takes_only_post(carrier_server: RunningServer) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{carrier_server.http_url}/v1/Ingress/carrier/Status") as resp:
            assert resp.status == 405
            assert (await resp.json())["code"] == 40005


async def test_send_then_the_carrier_reports_on_the_announced_callback(carrier: FakeCarrier, carrier_server: RunningServer) -> None:
    """The whole loop: send through the http provider, then the carrier POSTs a
    report to the status_callback the body named."""
    provider = HttpProvider(carrier_server.node.providers["carrier"].config, public_url=carrier_server.http_url)
    await provider.start()
    try:
        rec = await stored(carrier_server, status="queued", provider=None, provider_message_id=None)
        carrier.answer = b'{"id": "loop-1"}'
        result = await provider.send(
            OutboundMessage(rec.sid, rec.account_sid, rec.to, rec.from_, rec.body)
        )
        assert result.accepted
        await carrier_server.node.engine.messages.update(  # type: ignore[attr-defined]
            rec.account_sid, rec.sid, status="sent", provider="carrier", provider_message_id=result.provider_message_id
        )
    finally:
        await provider.close()
    callback = carrier.requests[-1]["json"]["status_callback"]
    assert callback == f"{carrier_server.http_url}/v1/Ingress/carrier/Status"
    async with aiohttp.ClientSession() as http:
        async with http.post(callback, json={"id": "loop-1", "status": "delivered"}, headers=basic(INBOUND_USER, INBOUND_PASSWORD)) as resp:
            assert resp.status == 200
    assert (await get_record(carrier_server, dataclasses.replace(rec))).status == "delivered"


async def test_node_starts_and_closes_its_providers(carrier_server: RunningServer) -> None:
    providers = carrier_server.node.providers
    assert set(providers) == {"carrier", "other", "closed"}
    outbox = providers["other"]
    assert isinstance(outbox, OutboxProvider)
    assert (await outbox.send(message())).accepted  # started by the node: its file is open
    assert outbox.path.parent == Path(carrier_server.node.config.engine.data_dir)
