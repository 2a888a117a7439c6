"""The Twilio-compatible Messages resource (read side) on a real node."""

from __future__ import annotations

import asyncio
import base64
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

from presence_server.engines.ports import MessageRecord
from protocol.addresses import new_sid
from tests.helpers.servers import RunningServer

DAY = 86_400.0
MIDNIGHT = 1_714_521_600.0  # 2024-05-01T00:00:00Z


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def auth(server: RunningServer, index: int = 0) -> dict[str, str]:
    acc = server.accounts[index]
    return basic(acc.sid, acc.auth_token)


async def get(server: RunningServer, path: str, headers: dict[str, str] | None = None, params: Any = None) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http:
        async with http.get(server.http_url + path, headers=auth(server) if headers is None else headers, params=params) as resp:
            assert resp.content_type == "application/json"
            return resp.status, await resp.json()


def messages_path(account_sid: str, sid: str | None = None) -> str:
    base = f"/2010-04-01/Accounts/{account_sid}/Messages"
    return f"{base}/{sid}.json" if sid else f"{base}.json"


async def store(server: RunningServer, account_index: int = 0, **fields: Any) -> MessageRecord:
    data: dict[str, Any] = {
        "sid": new_sid("SM"),
        "account_sid": server.accounts[account_index].sid,
        "to": "+15550100001",
        "from_": "+15550199999",
        "body": "Missed call from client:bob",
        "direction": "outbound-call",
        "status": "sent",
        "provider": "outbox",
        "provider_message_id": "OB" + "0" * 32,
        "fallback_reason": "absent",
        "related_call_sid": new_sid("CA"),
        "date_created": MIDNIGHT + 60,
        "date_updated": MIDNIGHT + 61,
        "date_sent": MIDNIGHT + 61,
    }
    data.update(fields)
    rec = MessageRecord(**data)
    await server.node.engine.messages.create(rec)  # type: ignore[attr-defined]
    return rec


def test_to_api_is_twilio_shaped() -> None:
    rec = MessageRecord(
        sid="MM" + "a" * 32,
        account_sid="AC" + "b" * 32,
        to="+15550100001",
        from_="+15550199999",
        body="look",
        media_urls=("https://example.com/a.png",),
        status="delivered",
        channel="mms",
        num_segments=2,
        date_created=1_438_287_151.9,
        date_updated=1_438_287_152.0,
        date_sent=None,
    )
    api = rec.to_api()
    assert api["num_segments"] == "2" and api["num_media"] == "1"
    assert api["date_created"] == "Thu, 30 Jul 2015 20:12:31 +0000"
    assert api["date_sent"] is None
    assert api["uri"] == f"/2010-04-01/Accounts/{'AC' + 'b' * 32}/Messages/{'MM' + 'a' * 32}.json"
    assert api["subresource_uris"] == {"media": f"/2010-04-01/Accounts/{'AC' + 'b' * 32}/Messages/{'MM' + 'a' * 32}/Media.json"}
    assert (api["price"], api["price_unit"], api["api_version"]) == (None, "USD", "2010-04-01")
    assert api["from"] == "+15550199999" and "from_" not in api
    assert api["channel"] == "mms" and api["fallback_reason"] is None


async def test_fetch_one(server: RunningServer) -> None:
    rec = await store(server)
    status, body = await get(server, messages_path(rec.account_sid, rec.sid))
    assert status == 200
    assert body == rec.to_api()
    assert body["fallback_reason"] == "absent" and body["related_call_sid"] == rec.related_call_sid
    # API key credentials work as well.
    acc = server.account
    status, _ = await get(server, messages_path(rec.account_sid, rec.sid), basic(acc.key_sid, acc.key_secret))
    assert status == 200


@pytest.mark.parametrize("path_kind", ["one", "list"])
@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Basic bm9wZQ=="}, {"Authorization": "Bearer x"}],
)
async def test_auth_is_required(server: RunningServer, path_kind: str, headers: dict[str, str]) -> None:
    rec = await store(server)
    path = messages_path(rec.account_sid, rec.sid if path_kind == "one" else None)
    status, body = await get(server, path, headers)
    assert status == 401 and body["code"] == 20003
    wrong = basic(server.account.sid, "not-the-auth-token-0000")
    status, body = await get(server, path, wrong)
    assert status == 401


async def test_another_accounts_messages_are_404(server: RunningServer) -> None:
    mine = await store(server, 0)
    theirs = await store(server, 1)
    # The other account asking for my message under its own path: not found.
    status, body = await get(server, messages_path(server.accounts[1].sid, mine.sid), auth(server, 1))
    assert (status, body["code"]) == (404, 20404)
    # ... and under my path (its credentials, my account): 404 too, whether or not the sid exists.
    for sid in (mine.sid, theirs.sid, new_sid("SM")):
        status, body = await get(server, messages_path(mine.account_sid, sid), auth(server, 1))
        assert (status, body["code"]) == (404, 20404)
    status, body = await get(server, messages_path(mine.account_sid), auth(server, 1))
    assert status == 404
    # My list never shows their record.
    status, body = await get(server, messages_path(mine.account_sid))
    assert [m["sid"] for m in body["messages"]] == [mine.sid]


@pytest.mark.parametrize("sid", [new_sid("SM"), new_sid("MM"), new_sid("CA"), "SM123", "nonsense", "SM" + "A" * 32])
async def test_unknown_sid_is_404_with_twilio_wording(server: RunningServer, sid: str) -> None:
    path = messages_path(server.account.sid, sid)
    status, body = await get(server, path)
    assert status == 404 and body["code"] == 20404 and body["status"] == 404
    assert body["message"] == f"The requested resource {path} was not found"


async def test_list_envelope_and_newest_first(server: RunningServer) -> None:
    recs = [await store(server, date_created=MIDNIGHT + i) for i in range(3)]
    acc = server.account.sid
    status, body = await get(server, messages_path(acc))
    assert status == 200
    assert [m["sid"] for m in body["messages"]] == [r.sid for r in reversed(recs)]
    assert body["messages"][0] == recs[-1].to_api()
    path = messages_path(acc)
    assert body["first_page_uri"] == f"{path}?PageSize=50&Page=0"
    assert body["uri"] == f"{path}?PageSize=50&Page=0"
    assert body["next_page_uri"] is None and body["previous_page_uri"] is None
    assert (body["page"], body["page_size"], body["start"], body["end"]) == (0, 50, 0, 2)


async def test_list_of_nothing(server: RunningServer) -> None:
    status, body = await get(server, messages_path(server.account.sid))
    assert status == 200 and body["messages"] == [] and body["next_page_uri"] is None
    assert (body["start"], body["end"]) == (0, 0)


async def test_filters(server: RunningServer) -> None:
    a = await store(server, to="+15550100001", from_="+15550199999", date_created=MIDNIGHT + 1, date_sent=MIDNIGHT + 1)
    b = await store(server, to="client:alice", from_="+15550199999", date_created=MIDNIGHT + 2, date_sent=MIDNIGHT + DAY + 5)
    c = await store(server, to="+15550100001", from_="+15550188888", date_created=MIDNIGHT + 3, date_sent=MIDNIGHT + 2 * DAY - 1)
    d = await store(server, to="+15550100001", from_="+15550188888", date_created=MIDNIGHT + 4, date_sent=None, status="failed")
    acc = server.account.sid

    async def sids(**params: str) -> list[str]:
        status, body = await get(server, messages_path(acc), params=params)
        assert status == 200, body
        return [m["sid"] for m in body["messages"]]

    assert await sids(To="+15550100001") == [d.sid, c.sid, a.sid]
    assert await sids(To="client:alice") == [b.sid]
    assert await sids(From="+15550188888") == [d.sid, c.sid]
    assert await sids(To="+15550100001", From="+15550199999") == [a.sid]
    assert await sids(DateSent="2024-05-01") == [a.sid]
    assert await sids(DateSent="2024-05-02") == [c.sid, b.sid]
    assert await sids(**{"DateSent<": "2024-05-01"}) == [a.sid]  # on or before that day
    assert await sids(**{"DateSent>": "2024-05-02"}) == [c.sid, b.sid]  # on or after
    assert await sids(**{"DateSent>": "2024-05-01", "DateSent<": "2024-05-01"}) == [a.sid]
    assert await sids(**{"DateSent>": "2024-05-03"}) == []
    # The helper libraries send timestamps; their date is what counts.
    assert await sids(DateSent="2024-05-02T00:00:00Z") == [c.sid, b.sid]
    assert await sids(**{"DateSent<": "2024-05-01T23:59:59Z"}) == [a.sid]


async def test_filters_survive_in_paging_uris(server: RunningServer) -> None:
    for i in range(3):
        await store(server, to="+15550100001", date_created=MIDNIGHT + i)
    status, body = await get(server, messages_path(server.account.sid), params={"To": "+15550100001", "DateSent<": "2024-05-09", "PageSize": "2"})
    assert status == 200 and len(body["messages"]) == 2
    query = parse_qs(urlsplit(body["next_page_uri"]).query)
    assert query["To"] == ["+15550100001"] and query["DateSent<"] == ["2024-05-09"] and query["PageSize"] == ["2"]
    assert "%2B1555" in body["next_page_uri"] and "DateSent%3C" in body["next_page_uri"]


async def test_paging_by_following_next_page_uri(server: RunningServer) -> None:
    recs = [await store(server, date_created=MIDNIGHT + i) for i in range(7)]
    expected = [r.sid for r in reversed(recs)]
    seen: list[str] = []
    pages = []
    status, body = await get(server, messages_path(server.account.sid), params={"PageSize": "3"})
    while True:
        assert status == 200
        pages.append(body)
        seen += [m["sid"] for m in body["messages"]]
        if body["next_page_uri"] is None:
            break
        status, body = await get(server, body["next_page_uri"])
    assert seen == expected
    assert [p["page"] for p in pages] == [0, 1, 2]
    assert [(p["start"], p["end"]) for p in pages] == [(0, 2), (3, 5), (6, 6)]
    assert pages[0]["previous_page_uri"] is None
    # previous_page_uri leads back.
    status, back = await get(server, pages[2]["previous_page_uri"])
    assert [m["sid"] for m in back["messages"]] == expected[3:6] and back["page"] == 1
    # Page alone works as well (Page * PageSize).
    status, body = await get(server, messages_path(server.account.sid), params={"PageSize": "3", "Page": "2"})
    assert [m["sid"] for m in body["messages"]] == expected[6:]
    # A page exactly full with nothing after it has no next page.
    status, body = await get(server, messages_path(server.account.sid), params={"PageSize": "7"})
    assert len(body["messages"]) == 7 and body["next_page_uri"] is None


@pytest.mark.parametrize(
    "params,fragment",
    [
        ({"PageSize": "0"}, "PageSize"),
        ({"PageSize": "1001"}, "PageSize"),
        ({"PageSize": "ten"}, "PageSize"),
        ({"PageSize": "-5"}, "PageSize"),
        ({"PageSize": "５"}, "PageSize"),  # a fullwidth digit is not an ASCII integer
        ({"PageSize": "99999999999999999999"}, "PageSize"),
        ({"Page": "-1"}, "Page"),
        ({"PageToken": "garbage"}, "PageToken"),
        ({"DateSent": "2024-13-01"}, "DateSent"),
        ({"DateSent": "2024-02-30"}, "DateSent"),
        ({"DateSent": "05/01/2024"}, "DateSent"),
        ({"DateSent": "2024-05-01T25:00:00Z"}, "DateSent"),
        ({"DateSent": "2024-05-01T10:00:00+02:00"}, "DateSent"),
        ({"DateSent<": "yesterday"}, "DateSent<"),
        ({"DateSent>": ""}, "DateSent>"),
        ({"To": "x" * 300}, "To"),
        ([("To", "+15550100001"), ("To", "+15550100002")], "To"),
    ],
)
async def test_bad_list_parameters_are_400(server: RunningServer, params: Any, fragment: str) -> None:
    status, body = await get(server, messages_path(server.account.sid), params=params)
    assert status == 400, body
    assert body["code"] == 40001 and body["status"] == 400
    assert fragment in body["message"]


async def test_extreme_dates_do_not_crash(server: RunningServer) -> None:
    for value in ("0001-01-01", "9999-12-31"):
        status, body = await get(server, messages_path(server.account.sid), params={"DateSent": value, "DateSent<": value, "DateSent>": value})
        assert status == 200 and body["messages"] == []


async def test_writes_are_not_routed_here(server: RunningServer) -> None:
    rec = await store(server)
    async with aiohttp.ClientSession() as http:
        async with http.delete(server.http_url + messages_path(rec.account_sid, rec.sid), headers=auth(server)) as resp:
            assert resp.status == 405 and (await resp.json())["code"] == 40005


async def test_the_twilio_helper_library_reads_messages(server: RunningServer) -> None:
    """The official twilio-python client, pointed at this server, fetches and pages."""
    from twilio.rest import Client

    recs = [await store(server, date_created=MIDNIGHT + i, date_sent=MIDNIGHT + i) for i in range(5)]
    acc = server.account
    client = Client(acc.sid, acc.auth_token)
    client.api.base_url = server.http_url

    def read() -> tuple[list[str], str, str]:
        listed = [m.sid for m in client.messages.list(page_size=2)]
        one = client.messages(recs[0].sid).fetch()
        from datetime import date

        dated = client.messages.list(date_sent=date(2024, 5, 1), page_size=1000)
        return listed, f"{one.body}|{one.status}|{one.num_segments}|{one.date_created.isoformat()}", str(len(dated))

    # twilio-python is synchronous: run it off the loop that serves it.
    listed, one, dated = await asyncio.to_thread(read)
    assert listed == [r.sid for r in reversed(recs)]
    assert one == "Missed call from client:bob|sent|1|2024-05-01T00:00:00+00:00"
    assert dated == "5"
