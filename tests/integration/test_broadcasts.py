"""Broadcasts end to end on a real node: POST /v1/Accounts/{sid}/Broadcasts
(JSON), each destination's channel and content version chosen at send time,
tracked short links (GET /l/<code>), budgets, the access-rate statistics, and
the input checks (nothing stored when a broadcast is refused)."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any, AsyncIterator

import pytest

from protocol.plans import Priority
from tests.helpers.messaging import NUMBER, account_with_number, basic, call, settle, wait_status
from tests.helpers.servers import RunningServer, TestAccount, start_server
from tests.helpers.wsclient import RawClient

INGRESS = ("outbox-carrier", "inbound-password-0123456789")
ALICE_PHONE = "+15550100001"
BOB_PHONE = "+15550100002"
STRANGER = "+15557770001"  # a number no identity owns
URL = "https://example.com/sale?item=42"
SHORT = re.compile(r"http://[^/\s]+/l/([A-Za-z0-9]+)")
MAX_DESTINATIONS = 5


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=timezone.utc).isoformat().replace("+00:00", "Z")


def outbox_provider(**extra: Any) -> dict[str, Any]:
    return {"name": "outbox", "kind": "outbox", "inbound_username": INGRESS[0], "inbound_password": INGRESS[1], **extra}


async def make_server(**sections: Any) -> RunningServer:
    sections.setdefault("providers", [outbox_provider()])
    messaging = {"max_broadcast_destinations": MAX_DESTINATIONS, **sections.pop("messaging", {})}
    return await start_server(
        [account_with_number(), TestAccount()], signaling={"message_ack_timeout": 5}, messaging=messaging, **sections
    )


@pytest.fixture
async def server() -> AsyncIterator[RunningServer]:
    srv = await make_server()
    try:
        yield srv
    finally:
        await srv.node.stop()


def path(account: TestAccount, sid: str | None = None) -> str:
    base = f"/v1/Accounts/{account.sid}/Broadcasts"
    return f"{base}/{sid}" if sid else base


async def post(server: RunningServer, body: Any, *, account: TestAccount | None = None) -> tuple[int, Any]:
    acc = account or server.account
    status, answer, _ = await call(server, "POST", path(acc), account=acc, json=body)
    return status, answer


async def view(server: RunningServer, sid: str) -> dict[str, Any]:
    status, answer, _ = await call(server, "GET", path(server.account, sid))
    assert status == 200, answer
    return answer  # type: ignore[no-any-return]


async def client(server: RunningServer, identity: str, capabilities: list[str] | None = None) -> RawClient:
    ws = await RawClient.open(server.ws_url)
    reply = await ws.register(server.token(identity), capabilities=capabilities or ["messaging"])
    assert reply["type"] == "registered", reply
    return ws


async def outbox(server: RunningServer) -> list[dict[str, Any]]:
    return await server.node.providers["outbox"].entries(100)  # type: ignore[attr-defined, no-any-return]


def by_to(broadcast: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["to"]: m for m in broadcast["messages"]}


def simple(destinations: list[str], text: str = "hello", **intent: Any) -> dict[str, Any]:
    return {"from": NUMBER, "destinations": destinations, "content": {"text": text}, "intent": intent}


async def settled(server: RunningServer, body: dict[str, Any], *statuses: str) -> dict[str, Any]:
    """Each message of a broadcast's 201 answer once it is one of ``statuses``, by message sid."""
    return {m["message_sid"]: await wait_status(server, m["message_sid"], *statuses) for m in body["messages"]}


def destination(to: str) -> str:
    """The destination a record was created for (an SMS to a client's phone shows the phone)."""
    return {ALICE_PHONE: "client:alice", BOB_PHONE: "client:bob"}.get(to, to)


def only(records: dict[str, Any]) -> Any:
    (record,) = records.values()
    return record


async def click(server: RunningServer, code: str) -> tuple[int, Any, dict[str, str]]:
    return await call(server, "GET", f"/l/{code}", headers={})


# -- the whole story ---------------------------------------------------------------------------


async def test_broadcast_picks_channel_and_version_per_destination_and_counts_opens(server: RunningServer) -> None:
    alice = await client(server, "alice")
    body = {
        "from": NUMBER,
        "destinations": ["client:alice", "client:bob", STRANGER],
        "content": {
            "text": f"Big sale: {URL}",
            "variants": {
                "app": {"text": f"Tap {URL} for the sale", "payload": {"deep_link": "shop://sale/42", "badge": 3}},
                "sms": {"text": f"Sale! {URL} Reply STOP to opt out"},
            },
        },
        "intent": {"channels": ["app", "sms"], "track_links": True, "priority": "urgent"},
    }
    status, created = await post(server, body)
    assert status == 201, created
    assert created["sid"].startswith("BC") and created["destinations"] == 3
    assert len(created["messages"]) == 3 and len({m["message_sid"] for m in created["messages"]}) == 3
    rec = await settled(server, created, "queued", "sending", "sent", "delivered")
    sids = {destination(r.to): r.sid for r in rec.values()}
    assert set(sids) == set(body["destinations"])

    # Alice is present: the app variant, its payload, and its own short link.
    frame = await alice.recv_type("message")
    assert frame["sid"] == sids["client:alice"] and frame["from"] == NUMBER
    assert frame["payload"] == {"deep_link": "shop://sale/42", "badge": 3}
    assert URL not in frame["body"] and frame["body"].startswith("Tap ")
    (app_code,) = SHORT.findall(frame["body"])
    await alice.send({"type": "ack", "sid": frame["sid"]})

    rec = {destination(r.to): r for r in (await settled(server, created, "delivered", "sent")).values()}
    assert rec["client:alice"].status == "delivered" and rec["client:alice"].channel == "app"
    assert rec["client:bob"].status == "sent" and rec["client:bob"].to == BOB_PHONE
    assert rec[STRANGER].status == "sent"
    assert all(r.priority == int(Priority.URGENT) for r in rec.values())

    shown = by_to(await view(server, created["sid"]))
    assert shown["client:alice"]["channel"] == "app" and shown["client:alice"]["content_version"] == "app"
    assert shown["client:alice"]["status"] == "delivered" and shown["client:alice"]["channel_reason"] == "app-present"
    # A message's "to" becomes the phone it was sent to.
    assert shown[BOB_PHONE]["channel"] == "sms" and shown[BOB_PHONE]["channel_reason"] == "app-absent"
    assert shown[BOB_PHONE]["content_version"] == "sms" and shown[BOB_PHONE]["fallback_reason"] == "absent"
    assert shown[STRANGER]["channel"] == "sms" and shown[STRANGER]["content_version"] == "sms"
    assert shown[STRANGER]["channel_reason"] == "no-app" and shown[STRANGER]["provider"] == "outbox"

    # The SMS went with the sms variant, the URL replaced by a short link.
    entries = {e["to"]: e for e in await outbox(server)}
    assert set(entries) == {BOB_PHONE, STRANGER}
    for entry in entries.values():
        assert entry["body"].startswith("Sale! ") and URL not in entry["body"]
    (sms_code,) = SHORT.findall(entries[STRANGER]["body"])
    assert SHORT.findall(entries[BOB_PHONE]["body"]) != [sms_code]  # one code per message

    # Following a short link: no credentials, 302 to the original, never cached.
    for _ in range(2):
        status, _, headers = await click(server, sms_code)
        assert status == 302 and headers["Location"] == URL and headers["Cache-Control"] == "no-store"
    status, _, headers = await click(server, app_code)
    assert status == 302 and headers["Location"] == URL
    for unknown in ("ZZZZZZZZZZ", "no!such"):
        status, err, headers = await click(server, unknown)
        assert status == 404 and headers["Content-Type"].startswith("application/json") and err["code"] == 20404

    # The carrier reports both SMS delivered.
    for phone in (BOB_PHONE, STRANGER):
        code, answer, _ = await call(server, "POST", "/v1/Ingress/outbox/Status", headers=basic(*INGRESS),
                                     json={"id": entries[phone]["provider_message_id"], "status": "delivered"})
        assert code == 200 and answer["status"] == "delivered", answer

    final = await view(server, created["sid"])
    assert final["by_status"] == {"delivered": 3} and final["by_channel"] == {"app": 1, "sms": 2}
    stats = {s["content_version"]: s for s in final["access_stats"]}
    assert stats["app"] == {
        "content_version": "app", "messages": 1, "delivered": 1, "links_opened_unique": 1, "links_opened_total": 1, "open_rate": 1.0,
    }
    assert stats["sms"] == {
        "content_version": "sms", "messages": 2, "delivered": 2, "links_opened_unique": 1, "links_opened_total": 2, "open_rate": 0.5,
    }
    assert set(stats) == {"app", "sms"}
    await alice.close()


async def test_sms_only_intent_texts_a_present_app_user(server: RunningServer) -> None:
    alice = await client(server, "alice")
    status, created = await post(server, simple(["client:alice"], "sms only", channels=["sms"]))
    assert status == 201, created
    rec = only(await settled(server, created, "sent", "delivered", "failed"))
    assert rec.status == "sent" and rec.channel == "sms" and rec.channel_reason == "sms-preferred" and rec.to == ALICE_PHONE
    assert rec.content_version == "text"
    (entry,) = await outbox(server)
    assert entry["to"] == ALICE_PHONE and entry["body"] == "sms only"
    await alice.close()


async def test_app_only_intent_fails_an_absent_user_and_a_plain_number(server: RunningServer) -> None:
    status, created = await post(server, simple(["client:bob", STRANGER], "app only", channels=["app"]))
    assert status == 201, created
    recs = await settled(server, created, "failed", "undelivered", "sent", "delivered")
    for rec in recs.values():
        assert rec.status == "failed" and rec.error_code == 30003 and rec.channel_reason == "app-only", rec
        assert rec.provider is None
    assert await outbox(server) == []
    shown = by_to(await view(server, created["sid"]))
    assert shown["client:bob"]["status"] == "failed" and shown["client:bob"]["channel_reason"] == "app-only"


# -- budgets ----------------------------------------------------------------------------------


async def test_segment_budget_fails_long_texts_with_40015(server: RunningServer) -> None:
    status, created = await post(server, simple([STRANGER, "+15557770002"], "x" * 200, max_segments=1))
    assert status == 201, created
    for rec in (await settled(server, created, "failed", "sent")).values():
        assert rec.status == "failed" and rec.error_code == 40015 and rec.provider is None, rec
    status, created = await post(server, simple([STRANGER], "x" * 200, max_segments=2))
    assert status == 201
    await settled(server, created, "sent")
    assert len(await outbox(server)) == 1


async def test_cost_budget_fails_when_no_provider_fits_with_40015() -> None:
    server = await make_server(
        routes=[{"name": "us", "countries": ["US"], "strategy": "failover", "providers": [{"name": "outbox", "cost": 0.05}]}]
    )
    try:
        status, created = await post(server, simple([STRANGER], "one segment", max_cost=0.01))
        assert status == 201, created
        rec = only(await settled(server, created, "failed", "sent"))
        assert rec.status == "failed" and rec.error_code == 40015 and rec.provider is None
        # Two segments cost 0.10: a budget of 0.08 is too small, 0.10 is enough.
        status, created = await post(server, simple([STRANGER], "y" * 200, max_cost=0.08))
        rec = only(await settled(server, created, "failed", "sent"))
        assert rec.status == "failed" and rec.error_code == 40015
        status, created = await post(server, simple([STRANGER], "y" * 200, max_cost=0.1))
        rec = only(await settled(server, created, "failed", "sent"))
        assert rec.status == "sent" and rec.provider == "outbox"
    finally:
        await server.node.stop()


# -- refused input ----------------------------------------------------------------------------


def with_(**changes: Any) -> dict[str, Any]:
    body = simple([STRANGER, "client:bob"])
    for key, value in changes.items():
        if key.startswith("intent_"):
            body["intent"][key[len("intent_"):]] = value
        elif key.startswith("content_"):
            body["content"][key[len("content_"):]] = value
        elif value is ...:
            del body[key]
        else:
            body[key] = value
    return body


NOW = 1_800_000_000.0  # the ManualClock's start


@pytest.mark.parametrize(
    "body, field, code",
    [
        (with_(bogus=1), "bogus", 40001),
        (with_(destinations=STRANGER), "destinations", 40001),
        (with_(destinations=[]), "destinations", 40001),
        (with_(destinations=[STRANGER, 15557770002]), "destinations", 40001),
        (with_(destinations=[STRANGER, STRANGER]), "destinations", 40001),
        (with_(destinations=[f"+1555777{i:04d}" for i in range(MAX_DESTINATIONS + 1)]), "destinations", 40001),
        (with_(destinations=[STRANGER, "555-1234"]), "555-1234", 21211),
        (with_(destinations=["client:"]), "client:", 21211),
        (with_(content=...), "content", 40001),
        (with_(content="hello"), "content", 40001),
        (with_(content_subject="hi"), "content.subject", 40001),
        (with_(content_variants={"email": {"text": "x"}}), "content.variants.email", 40001),
        (with_(intent_colour="red"), "intent.colour", 40001),
        (with_(intent_channels=["app", "fax"]), "intent.channels", 40001),
        (with_(intent_channels=[]), "intent.channels", 40001),
        (with_(intent_channels=["sms", "sms"]), "intent.channels", 40001),
        (with_(intent_channels="sms"), "intent.channels", 40001),
        (with_(intent_priority="highest"), "intent.priority", 40001),
        (with_(intent_deadline=iso(NOW - 60)), "intent.deadline", 40001),
        (with_(intent_deadline=iso(NOW + 600), intent_send_at=iso(NOW + 1200)), "intent.deadline", 40001),
        (with_(intent_deadline="tomorrow"), "intent.deadline", 40001),
        (with_(intent_track_links="yes"), "intent.track_links", 40001),
        (with_(intent_max_segments=0), "intent.max_segments", 40001),
        (with_(intent_max_cost=-1), "intent.max_cost", 40001),
        ([STRANGER], "body", 40001),
    ],
)
async def test_bad_broadcasts_are_refused_and_nothing_is_stored(server: RunningServer, body: Any, field: str, code: int) -> None:
    status, err = await post(server, body)
    assert status == 400 and err["code"] == code, err
    assert field in err["message"], f"the message should name {field!r}: {err['message']!r}"
    await assert_nothing_stored(server)


async def test_a_body_that_is_not_json_is_refused(server: RunningServer) -> None:
    headers = {**basic(server.account.sid, server.account.auth_token), "Content-Type": "application/json"}
    status, err, _ = await call(server, "POST", path(server.account), headers=headers, data=b'{"destinations": [')
    assert status == 400 and err["code"] == 40001 and "body" in err["message"] and "JSON" in err["message"], err
    await assert_nothing_stored(server)


async def assert_nothing_stored(server: RunningServer) -> None:
    sid = server.account.sid
    await settle()
    assert await server.node.engine.messages.list(sid) == [], "a refused broadcast stored messages"
    assert await server.node.engine.messages.list_broadcasts(sid) == [], "a refused broadcast was stored"
    assert await server.node.engine.queue.depth(sid) == 0, "a refused broadcast queued sends"


# -- reading ----------------------------------------------------------------------------------


async def test_another_accounts_broadcast_is_not_found(server: RunningServer) -> None:
    status, created = await post(server, simple([STRANGER]))
    assert status == 201
    other = server.accounts[1]
    status, err, _ = await call(server, "GET", path(other, created["sid"]), account=other)
    assert status == 404 and err["code"] == 20404
    # Nor with the owner's sid in the path and the other's credentials.
    status, _, _ = await call(server, "GET", path(server.account, created["sid"]), account=other)
    assert status in (401, 403, 404)
    # A sid that is not a broadcast's is not found either.
    status, err, _ = await call(server, "GET", path(server.account, "BCnot-a-sid"))
    assert status == 404 and err["code"] == 20404


async def test_the_list_pages_newest_first(server: RunningServer) -> None:
    sids = []
    for i in range(3):
        status, created = await post(server, simple([f"+1555777{i:04d}"], f"number {i}"))
        assert status == 201
        sids.append(created["sid"])
        await server.advance(1)  # distinct creation times
    status, page, _ = await call(server, "GET", path(server.account) + "?PageSize=2")
    assert status == 200, page
    assert [b["sid"] for b in page["broadcasts"]] == [sids[2], sids[1]]
    assert page["broadcasts"][0]["destinations"] == 1 and page["broadcasts"][0]["uri"] == path(server.account, sids[2])
    assert page["next_page_uri"] is not None and page["previous_page_uri"] is None
    status, page2, _ = await call(server, "GET", page["next_page_uri"])
    assert status == 200, page2
    assert [b["sid"] for b in page2["broadcasts"]] == [sids[0]] and page2["next_page_uri"] is None
    # Another account sees none of them.
    other = server.accounts[1]
    status, theirs, _ = await call(server, "GET", path(other), account=other)
    assert status == 200 and theirs["broadcasts"] == []
