"""The operator dashboard's endpoints on a real node: operator credentials on
the page and on every JSON endpoint, an account's view (presence, calls,
messages, broadcasts) built from real WebSocket clients, a real call through a
real instruction server and real messages through the outbox provider, and
nothing of one account in another's view."""

from __future__ import annotations

import json
import re
from typing import Any, AsyncIterator

import pytest

from protocol.addresses import new_sid
from tests.helpers.instructions import InstructionServer
from tests.helpers.messaging import basic, call, send, wait_status
from tests.helpers.servers import RunningServer, TestAccount, start_server
from tests.helpers.signaling_env import dial_client
from tests.helpers.wsclient import RawClient

OPERATOR = ("ops", "operator-password-0123456789")
INGRESS = ("outbox-carrier", "inbound-password-0123456789")
NUMBER = "+15550001111"
STRANGER = "+15557770001"
SHORT = re.compile(r"http://[^/\s]+/l/([A-Za-z0-9]+)")
SECRET_BODY = "the secret body of a customer's text"


class Env:
    def __init__(self, server: RunningServer, ins: InstructionServer, app_sid: str) -> None:
        self.server = server
        self.ins = ins
        self.app_sid = app_sid

    @property
    def a(self) -> TestAccount:
        return self.server.accounts[0]

    @property
    def b(self) -> TestAccount:
        return self.server.accounts[1]

    async def client(self, identity: str, account: TestAccount | None = None) -> RawClient:
        acc = account or self.a
        grants = {
            "identity": identity,
            "presence": {"publish": True, "subscribe": True},
            "voice": {"incoming": {"allow": True}, "outgoing": {"application_sid": self.app_sid}},
        }
        c = await RawClient.open(self.server.ws_url)
        reply = await c.register(self.server.token(identity, account=acc, grants=grants), capabilities=["voice", "messaging"])
        assert reply["type"] == "registered", reply
        return c

    async def get(self, path: str, auth: tuple[str, str] | None = OPERATOR) -> tuple[int, Any, dict[str, str]]:
        return await call(self.server, "GET", path, headers=basic(*auth) if auth else {})

    async def view(self, account: TestAccount, query: str = "") -> dict[str, Any]:
        status, body, _ = await self.get(f"/v1/Dashboard/Accounts/{account.sid}{query}")
        assert status == 200, body
        return body  # type: ignore[no-any-return]


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    """Account A (alice and bob with phones, an application whose voice URL
    dials client:bob, a number) and account B (carol); operator credentials;
    the outbox provider takes delivery reports."""
    ins = InstructionServer(auth_token="")
    await ins.start()
    app_sid = new_sid("AP")
    a = TestAccount(
        identities=[{"identity": "alice", "phone": "+15550100001"}, {"identity": "bob", "phone": "+15550100002"}],
        extra={
            "friendly_name": "Shop",
            "applications": [{"sid": app_sid, "voice_url": ins.url("/voice")}],
            "phone_numbers": [{"number": NUMBER}],
        },
    )
    b = TestAccount(identities=[{"identity": "carol"}], extra={"phone_numbers": [{"number": "+15550003333"}]})
    ins.auth_token = a.auth_token
    ins.on("/voice", dial_client(ins, "bob"))
    server = await start_server(
        [a, b],
        operator={"username": OPERATOR[0], "password": OPERATOR[1]},
        security={"allow_private_urls": True},
        providers=[{"name": "outbox", "kind": "outbox", "inbound_username": INGRESS[0], "inbound_password": INGRESS[1]}],
    )
    try:
        yield Env(server, ins, app_sid)
    finally:
        await server.node.stop()
        await ins.stop()


def dashboard_paths(account_sid: str) -> list[str]:
    return [
        "/dashboard",
        "/dashboard/",
        "/dashboard/dashboard.js",
        "/dashboard/no-such-file.js",
        "/v1/Dashboard/Accounts",
        f"/v1/Dashboard/Accounts/{account_sid}",
        "/v1/Dashboard/Routing",
    ]


async def test_every_dashboard_url_needs_the_operator(env: Env) -> None:
    for path in dashboard_paths(env.a.sid):
        for auth in (None, (OPERATOR[0], "wrong"), ("wrong", OPERATOR[1]), (env.a.sid, env.a.auth_token), (env.a.key_sid, env.a.key_secret)):
            status, body, headers = await env.get(path, auth)
            assert status == 401 and body["code"] == 40014, (path, auth, body)
            # The challenge makes a browser ask for the operator's credentials.
            assert headers["WWW-Authenticate"] == 'Basic realm="presence-server operator"'
        status, body, headers = await env.get(path)
        assert status == (404 if "no-such-file" in path else 200), (path, body)
    status, page, headers = await env.get("/dashboard")
    assert headers["Content-Type"].startswith("text/html") and '<script type="module" src="/dashboard/dashboard.js">' in page
    assert "script-src 'self'" in headers["Content-Security-Policy"] and headers["Cache-Control"] == "no-store"


async def test_without_an_operator_configured_the_dashboard_is_closed(server: RunningServer) -> None:
    for path in dashboard_paths(server.account.sid):
        for auth in (None, ("operator", "anything"), (server.account.sid, server.account.auth_token)):
            status, body, _ = await call(server, "GET", path, headers=basic(*auth) if auth else {})
            assert status == 401 and body["code"] == 40014 and "no operator credentials" in body["message"], (path, body)


async def test_the_accounts_list_shows_no_secrets(env: Env) -> None:
    status, body, _ = await env.get("/v1/Dashboard/Accounts")
    assert status == 200
    assert body == {"accounts": [
        {"sid": env.a.sid, "friendly_name": "Shop", "identities": 2, "phone_numbers": 1, "applications": 1,
         "uri": f"/v1/Dashboard/Accounts/{env.a.sid}"},
        {"sid": env.b.sid, "friendly_name": "", "identities": 1, "phone_numbers": 1, "applications": 0,
         "uri": f"/v1/Dashboard/Accounts/{env.b.sid}"},
    ]}
    text = json.dumps(body)
    for acc in (env.a, env.b):
        for secret in (acc.auth_token, acc.key_sid, acc.key_secret):
            assert secret not in text


async def test_an_accounts_view_shows_its_presence_calls_messages_and_broadcasts(env: Env) -> None:
    empty = await env.view(env.a)
    assert [(i["identity"], i["status"], i["configured"]) for i in empty["presence"]["identities"]] == [
        ("alice", "offline", True), ("bob", "offline", True),
    ]
    assert empty["calls"] == {"in_progress": [], "in_progress_truncated": False, "recent": [], "window": 200, "counted": 0, "by_status": {}}
    assert empty["messages"]["counted"] == 0 and empty["messages"]["window"] == 1000 and empty["broadcasts"] == []

    # Presence: present identities first (dave is not configured), then the offline ones.
    alice = await env.client("alice")
    await alice.send({"type": "presence", "status": "busy", "text": "in a meeting"})
    dave = await env.client("dave")
    bob = await env.client("bob")
    view = await env.view(env.a)
    shown = [(i["identity"], i["status"], i["text"], len(i["sessions"]), i["configured"]) for i in view["presence"]["identities"]]
    assert shown == [("alice", "busy", "in a meeting", 1, True), ("bob", "available", "", 1, True), ("dave", "available", "", 1, False)]
    assert view["presence"]["by_status"] == {"busy": 1, "available": 2} and view["presence"]["present"] == 3
    assert view["presence"]["sessions"] == 3 and view["presence"]["truncated"] is False
    await dave.send({"type": "bye"})
    await dave.closed()
    view = await env.view(env.a, "?Identities=1")
    assert [i["identity"] for i in view["presence"]["identities"]] == ["alice"] and view["presence"]["truncated"] is True

    # A call from alice to bob: in progress once bob accepts (the call and bob's leg), then an outcome.
    await alice.send({"type": "call", "to": "client:bob"})
    call_sid = (await alice.recv_type("call_created"))["call"]
    invite = await bob.recv_type("invite")
    await bob.send({"type": "accept", "call": invite["call"]})
    assert (await alice.recv_type("call_progress"))["status"] == "answered"
    view = await env.view(env.a)
    live = {c["sid"]: c for c in view["calls"]["in_progress"]}
    assert set(live) == {call_sid, invite["call"]}
    assert live[call_sid]["status"] == "in-progress" and live[call_sid]["from"] == "client:alice" and live[call_sid]["to"] == "client:bob"
    assert live[invite["call"]]["parent_call_sid"] == call_sid and live[invite["call"]]["start_time"] is not None
    assert view["calls"]["recent"] == []
    await env.server.advance(30)
    await bob.send({"type": "hangup", "call": invite["call"]})
    await alice.recv_type("hangup")
    assert (await alice.recv_type("call_progress"))["status"] == "completed"
    view = await env.view(env.a)
    assert view["calls"]["in_progress"] == []
    recent = {c["sid"]: c for c in view["calls"]["recent"]}
    assert set(recent) == {call_sid, invite["call"]} and recent[invite["call"]]["duration"] == 30
    assert all(c["status"] == "completed" for c in recent.values()) and view["calls"]["by_status"] == {"completed": 2}
    assert (await env.view(env.a, "?Calls=1"))["calls"]["recent"][0]["sid"] in recent

    # Messages: counted by status and channel, listed without their bodies.
    status, sms = await send(env.server, To=STRANGER, From=NUMBER, Body=SECRET_BODY)
    assert status == 201, sms
    await wait_status(env.server, sms["sid"], "sent")
    status, app_msg = await send(env.server, To="client:alice", From=NUMBER, Body=SECRET_BODY)
    assert status == 201, app_msg
    frame = await alice.recv_type("message")
    await alice.send({"type": "ack", "sid": frame["sid"]})
    await wait_status(env.server, app_msg["sid"], "delivered")
    view = await env.view(env.a)
    m = view["messages"]
    assert m["counted"] == 2 and m["by_status"] == {"delivered": 1, "sent": 1} and m["by_channel"] == {"app": 1, "sms": 1}
    assert m["by_channel_status"] == {"app": {"delivered": 1}, "sms": {"sent": 1}}
    assert [r["sid"] for r in m["recent"]] == [app_msg["sid"], sms["sid"]]
    assert m["recent"][1] == {
        "sid": sms["sid"], "date_created": m["recent"][1]["date_created"], "direction": "outbound-api", "from": NUMBER, "to": STRANGER,
        "channel": "sms", "status": "sent", "error_code": None, "fallback_reason": None, "provider": "outbox", "broadcast_sid": None,
    }
    small = (await env.view(env.a, "?Window=1&Messages=0"))["messages"]
    assert small["counted"] == 1 and small["window"] == 1 and small["recent"] == [] and small["by_status"] == {"delivered": 1}

    # A broadcast with a tracked link: its access-rate statistics, not its content.
    status, created, _ = await call(env.server, "POST", f"/v1/Accounts/{env.a.sid}/Broadcasts", json={
        "destinations": ["+15557770002", "+15557770003"], "from": NUMBER,
        "content": {"text": f"{SECRET_BODY} https://example.com/sale"}, "intent": {"track_links": True},
    })
    assert status == 201, created
    for msg in created["messages"]:
        await wait_status(env.server, msg["message_sid"], "sent")
    entries = {e["to"]: e for e in await env.server.node.providers["outbox"].entries(10)}  # type: ignore[attr-defined]
    for phone in ("+15557770002", "+15557770003"):
        code, answer, _ = await call(env.server, "POST", "/v1/Ingress/outbox/Status", headers=basic(*INGRESS),
                                     json={"id": entries[phone]["provider_message_id"], "status": "delivered"})
        assert code == 200, answer
    (code,) = SHORT.findall(entries["+15557770002"]["body"])
    status, _, _ = await call(env.server, "GET", f"/l/{code}", headers={})
    assert status == 302
    view = await env.view(env.a)
    (b,) = view["broadcasts"]
    assert b == {
        "sid": created["sid"], "date_created": b["date_created"], "destinations": 2, "by_status": {"delivered": 2},
        "by_channel": {"sms": 2},
        "access_stats": [{"content_version": "text", "messages": 2, "delivered": 2, "links_opened_unique": 1, "links_opened_total": 1, "open_rate": 0.5}],
    }
    assert (await env.view(env.a, "?Broadcasts=0"))["broadcasts"] == []
    assert SECRET_BODY not in json.dumps(view) and "example.com" not in json.dumps(view)
    for c in (alice, bob):
        await c.close()


async def test_one_accounts_data_never_shows_in_anothers_view(env: Env) -> None:
    alice = await env.client("alice")
    carol = await env.client("carol", env.b)
    # The same identity name in both accounts is two different people.
    bob_of_b = await env.client("bob", env.b)
    await bob_of_b.send({"type": "presence", "status": "dnd", "text": "B's bob"})
    status, a_msg = await send(env.server, To=STRANGER, From=NUMBER, Body="from A")
    assert status == 201
    status, b_msg = await send(env.server, env.b, To=STRANGER, From="+15550003333", Body="from B")
    assert status == 201, b_msg
    await wait_status(env.server, a_msg["sid"], "sent")
    await wait_status(env.server, b_msg["sid"], "sent", account=env.b)

    view_a, view_b = await env.view(env.a), await env.view(env.b)
    assert view_a["account"]["sid"] == env.a.sid and view_b["account"]["sid"] == env.b.sid
    assert {(i["identity"], i["status"]) for i in view_a["presence"]["identities"]} == {("alice", "available"), ("bob", "offline")}
    assert [(i["identity"], i["status"], i["text"]) for i in view_b["presence"]["identities"]] == [
        ("bob", "dnd", "B's bob"), ("carol", "available", ""),
    ]
    assert [r["sid"] for r in view_a["messages"]["recent"]] == [a_msg["sid"]]
    assert [r["sid"] for r in view_b["messages"]["recent"]] == [b_msg["sid"]]
    text_a, text_b = json.dumps(view_a), json.dumps(view_b)
    for other in (env.b.sid, b_msg["sid"], "carol", "B's bob"):
        assert other not in text_a
    for other in (env.a.sid, a_msg["sid"], "alice"):
        assert other not in text_b
    for c in (alice, carol, bob_of_b):
        await c.close()


async def test_an_unknown_account_is_404(env: Env) -> None:
    for sid in (new_sid("AC"), "nonsense", env.a.key_sid, "AC" + "0" * 32):
        status, body, _ = await env.get(f"/v1/Dashboard/Accounts/{sid}")
        assert status == 404 and body["code"] == 20404, (sid, body)


@pytest.mark.parametrize(
    ("query", "names"),
    [
        ("Window=0", "Window must be an integer from 1 to 5000"),
        ("Window=5001", "Window must be an integer from 1 to 5000"),
        ("Window=abc", "Window must be an integer from 1 to 5000, not 'abc'"),
        ("Window=-1", "Window must be an integer"),
        ("Calls=101", "Calls must be an integer from 1 to 100"),
        ("Calls=0", "Calls must be an integer from 1 to 100"),
        ("Identities=1001", "Identities must be an integer from 1 to 1000"),
        ("Messages=101", "Messages must be an integer from 0 to 100"),
        ("Broadcasts=21", "Broadcasts must be an integer from 0 to 20"),
        ("Window=10&Window=20", "Window is given 2 times"),
        ("window=10", "'window' is not a parameter of this endpoint (known: Identities, Calls, Window, Messages, Broadcasts)"),
    ],
)
async def test_bad_account_view_parameters_are_400(env: Env, query: str, names: str) -> None:
    status, body, _ = await env.get(f"/v1/Dashboard/Accounts/{env.a.sid}?{query}")
    assert status == 400 and body["code"] == 40001 and names in body["message"], body


async def test_bad_routing_and_accounts_parameters_are_400(env: Env) -> None:
    for query, names in (("Minutes=0", "Minutes must be an integer from 1 to 1440"), ("Minutes=1441", "Minutes must be"),
                         ("Minutes=1.5", "Minutes must be"), ("Hours=1", "'Hours' is not a parameter of this endpoint (known: Minutes)")):
        status, body, _ = await env.get(f"/v1/Dashboard/Routing?{query}")
        assert status == 400 and body["code"] == 40001 and names in body["message"], (query, body)
    status, body, _ = await env.get("/v1/Dashboard/Accounts?PageSize=5")
    assert status == 400 and "(known: none)" in body["message"]


async def test_routing_is_summed_per_provider_with_a_point_per_minute(env: Env) -> None:
    status, body, _ = await env.get("/v1/Dashboard/Routing")
    assert status == 200 and body["providers"] == [] and body["minutes"] == 30
    assert body["since"] % 60 == 0 and body["now"] - body["since"] < 30 * 60

    sids = []
    for body_text in ("one", "two", "three"):
        status, sms = await send(env.server, To=STRANGER, From=NUMBER, Body=body_text)
        assert status == 201
        sids.append(sms["sid"])
    for sid in sids:
        await wait_status(env.server, sid, "sent")
    await env.server.advance(4)  # the reports come 4 s after the sends
    entries = await env.server.node.providers["outbox"].entries(10)  # type: ignore[attr-defined]
    for entry, outcome in zip(entries, ("delivered", "delivered", "undelivered")):
        code, answer, _ = await call(env.server, "POST", "/v1/Ingress/outbox/Status", headers=basic(*INGRESS),
                                     json={"id": entry["provider_message_id"], "status": outcome})
        assert code == 200, answer

    status, body, _ = await env.get("/v1/Dashboard/Routing?Minutes=5")
    assert status == 200 and body["minutes"] == 5
    (outbox,) = body["providers"]
    assert outbox["provider"] == "outbox" and outbox["routes"] == ["default"]
    totals = outbox["totals"]
    assert (totals["submitted"], totals["delivered"], totals["undelivered"]) == (3, 2, 1)
    assert totals["delivered_ratio"] == round(2 / 3, 4) and totals["mean_time_to_delivery"] == 4.0
    # The sends and the reports fell in one or two minutes (the clock moved 4 s).
    assert 1 <= len(outbox["series"]) <= 2 and all(p["minute"] >= body["since"] for p in outbox["series"])
    assert sum(p["submitted"] for p in outbox["series"]) == 3 and sum(p["delivered"] for p in outbox["series"]) == 2
    assert outbox["series"][-1]["mean_time_to_delivery"] == 4.0
    # Operator-wide, as /v1/Routing/Stats: the same totals.
    status, stats, _ = await env.get("/v1/Routing/Stats")
    (route,) = stats["totals"]
    assert {k: route[k] for k in totals} == totals
