"""The Messages API (send, schedule, cancel) on a real node, to the outbox."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, AsyncIterator

import pytest

from protocol.addresses import new_sid
from tests.helpers.messaging import NUMBER, account_with_number, call, messages_path, send, wait_status
from tests.helpers.servers import RunningServer, TestAccount, start_server

SERVICE = new_sid("MG")
OTHER_SERVICE = new_sid("MG")


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=timezone.utc).isoformat().replace("+00:00", "Z")


@pytest.fixture
async def server() -> AsyncIterator[RunningServer]:
    main = account_with_number(messaging_services=[{"sid": SERVICE, "senders": [NUMBER, "Acme"]}])
    other = TestAccount(extra={"phone_numbers": [{"number": "+15550003333"}], "messaging_services": [{"sid": OTHER_SERVICE, "senders": ["+15550003333"]}]})
    srv = await start_server([main, other], messaging={"max_queued_per_sender": 3})
    try:
        yield srv
    finally:
        await srv.node.stop()


async def outbox(server: RunningServer) -> list[dict[str, Any]]:
    return await server.node.providers["outbox"].entries(100)  # type: ignore[attr-defined]


async def test_send_answers_201_and_reaches_the_outbox(server: RunningServer) -> None:
    status, body = await send(server, To="+15557770001", From=NUMBER, Body="Hello there")
    assert status == 201
    for key in ("sid", "account_sid", "messaging_service_sid", "from", "to", "body", "status", "direction", "num_segments",
                "num_media", "error_code", "error_message", "date_created", "date_sent", "date_updated", "api_version", "uri"):
        assert key in body
    assert body["status"] == "queued" and body["direction"] == "outbound-api" and body["num_segments"] == "1"
    record = await wait_status(server, body["sid"], "sent")
    assert record.provider == "outbox" and record.channel == "sms" and record.encoding == "GSM-7"
    (entry,) = await outbox(server)
    assert entry["message_sid"] == body["sid"] and entry["to"] == "+15557770001" and entry["body"] == "Hello there"


async def test_segments_and_smart_encoding(server: RunningServer) -> None:
    status, body = await send(server, To="+15557770001", From=NUMBER, Body="\u201cquoted\u201d " + "x" * 160, SmartEncoded="true")
    assert status == 201
    assert body["body"].startswith('"quoted"') and body["num_segments"] == "2"
    status, body = await send(server, To="+15557770001", From=NUMBER, Body="\u00e9mojis \U0001F600" * 20)  # 180 UTF-16 units
    assert status == 201 and body["num_segments"] == "3"  # UCS-2: 67 code units per segment


async def test_messaging_service_picks_a_sender_and_sticks(server: RunningServer) -> None:
    _, first = await send(server, To="+15557770009", MessagingServiceSid=SERVICE, Body="one")
    assert first["status"] == "accepted" and first["messaging_service_sid"] == SERVICE
    assert first["from"] == NUMBER  # no alphanumeric sender for a US number
    _, second = await send(server, To="+15557770009", MessagingServiceSid=SERVICE, Body="two")
    assert second["from"] == first["from"]
    _, uk = await send(server, To="+447700900123", MessagingServiceSid=SERVICE, Body="hi")
    assert uk["from"] in (NUMBER, "Acme")
    await wait_status(server, first["sid"], "sent")


async def test_scheduled_message_waits_then_goes(server: RunningServer) -> None:
    send_at = server.clock.time() + 3600
    status, body = await send(server, To="+15557770001", From=NUMBER, Body="later", ScheduleType="fixed", SendAt=iso(send_at))
    assert status == 201 and body["status"] == "scheduled"
    await server.advance(1800)
    assert (await server.node.engine.messages.get(server.account.sid, body["sid"])).status == "scheduled"  # type: ignore[union-attr]
    await server.advance(1801)
    await wait_status(server, body["sid"], "sent", advance=0.3)


async def test_cancel_a_scheduled_message(server: RunningServer) -> None:
    _, body = await send(server, To="+15557770001", From=NUMBER, Body="later", ScheduleType="fixed", SendAt=iso(server.clock.time() + 600))
    path = messages_path(server.account.sid, body["sid"])
    status, canceled, _ = await call(server, "POST", path, data={"Status": "canceled"})
    assert status == 200 and canceled["status"] == "canceled"
    await server.advance(700)
    assert await outbox(server) == []
    # Canceling twice is harmless; canceling something sent is refused.
    assert (await call(server, "POST", path, data={"Status": "canceled"}))[0] == 200
    _, sent = await send(server, To="+15557770001", From=NUMBER, Body="now")
    await wait_status(server, sent["sid"], "sent")
    status, err, _ = await call(server, "POST", messages_path(server.account.sid, sent["sid"]), data={"Status": "canceled"})
    assert status == 409 and err["code"] == 40016


@pytest.mark.parametrize(
    "form, code",
    [
        ({"From": NUMBER, "Body": "x"}, 21604),
        ({"To": "+15557770001", "Body": "x"}, 21603),
        ({"To": "+15557770001", "From": NUMBER}, 21602),
        ({"To": "555-1234", "From": NUMBER, "Body": "x"}, 21211),
        ({"To": "client:", "From": NUMBER, "Body": "x"}, 21211),
        ({"To": "+15557770001", "From": NUMBER, "Body": "x" * 1601}, 21617),
        ({"To": "+15557770001", "From": NUMBER, "Body": "x", "MediaUrl": [f"https://example.com/{i}.png" for i in range(11)]}, 21620),
        ({"To": "+15557770001", "From": NUMBER, "Body": "x", "MediaUrl": "ftp://example.com/a.png"}, 21620),
        ({"To": "+15557770001", "From": "+15559990000", "Body": "x"}, 21606),
        ({"To": "+15557770001", "From": "+15550003333", "Body": "x"}, 21606),  # another account's number
        ({"To": "+15557770001", "From": "not a number!", "Body": "x"}, 21212),
        ({"To": "+15557770001", "MessagingServiceSid": new_sid("MG"), "Body": "x"}, 21701),
        ({"To": "+15557770001", "MessagingServiceSid": OTHER_SERVICE, "Body": "x"}, 21701),  # another account's service
        ({"To": "+15557770001", "From": NUMBER, "Body": "x", "ValidityPeriod": "0"}, 40001),
        ({"To": "+15557770001", "From": NUMBER, "Body": "x", "ValidityPeriod": "36001"}, 40001),
        ({"To": "+15557770001", "From": NUMBER, "Body": "x", "ScheduleType": "fixed"}, 35111),
        ({"To": "+15557770001", "From": NUMBER, "Body": "x", "ScheduleType": "fixed", "SendAt": "tomorrow"}, 35111),
        ({"To": "+15557770001", "From": NUMBER, "Body": "x", "ScheduleType": "fixed", "SendAt": "2020-01-01T00:00:00Z"}, 35111),
        ({"To": "+15557770001", "From": NUMBER, "Body": "x", "ScheduleType": "fixed", "SendAt": "2099-01-01T00:00:00Z"}, 35111),
        ({"To": "+15557770001", "From": NUMBER, "Body": "x", "ShortenUrls": "yes"}, 40001),
        ({"To": "+15557770001", "From": NUMBER, "Body": "x", "Priority": "highest"}, 40001),
        ({"To": "+15557770001", "From": NUMBER, "Body": "x", "Bogus": "1"}, 40001),
    ],
)
async def test_bad_requests_are_refused_with_a_precise_code(server: RunningServer, form: dict[str, Any], code: int) -> None:
    status, body = await send(server, **form)
    assert status in (400, 404) and body["code"] == code, body
    assert await server.node.engine.queue.depth(server.account.sid) == 0  # nothing was queued


async def test_the_sender_queue_is_bounded(server: RunningServer) -> None:
    for _ in range(3):
        status, _ = await send(server, To="+15557770001", From=NUMBER, Body="x", ScheduleType="fixed", SendAt=iso(server.clock.time() + 600))
        assert status == 201
    status, body, headers = await call(server, "POST", messages_path(server.account.sid),
                                       data={"To": "+15557770001", "From": NUMBER, "Body": "x"})
    assert status == 429 and body["code"] == 21611 and headers["Retry-After"] == "1"


async def test_another_accounts_message_is_not_found_nor_cancelable(server: RunningServer) -> None:
    _, body = await send(server, To="+15557770001", From=NUMBER, Body="mine", ScheduleType="fixed", SendAt=iso(server.clock.time() + 600))
    other = server.accounts[1]
    for method, data in (("GET", None), ("POST", {"Status": "canceled"})):
        status, err, _ = await call(server, method, messages_path(other.sid, body["sid"]), account=other, data=data)
        assert status == 404 and err["code"] == 20404
    record = await server.node.engine.messages.get(server.account.sid, body["sid"])
    assert record is not None and record.status == "scheduled"


async def test_only_status_canceled_is_an_update(server: RunningServer) -> None:
    _, body = await send(server, To="+15557770001", From=NUMBER, Body="x", ScheduleType="fixed", SendAt=iso(server.clock.time() + 600))
    path = messages_path(server.account.sid, body["sid"])
    assert (await call(server, "POST", path, data={"Status": "sent"}))[1]["code"] == 40001
    assert (await call(server, "POST", path, data={"Body": "changed"}))[1]["code"] == 40001


async def test_the_twilio_helper_library_sends(server: RunningServer) -> None:
    """The official twilio-python client, pointed at this server, sends a message."""
    import asyncio

    from twilio.rest import Client

    acc = server.account
    client = Client(acc.sid, acc.auth_token)
    client.api.base_url = server.http_url

    def create() -> tuple[str, str]:
        msg = client.messages.create(to="+15557770001", from_=NUMBER, body="from the helper library")
        return msg.sid, msg.status

    # twilio-python is synchronous: run it off the loop that serves it.
    sid, status = await asyncio.to_thread(create)
    assert sid.startswith("SM") and status == "queued"
    await wait_status(server, sid, "sent")
