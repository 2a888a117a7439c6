"""The operator dashboard in a real Chromium against a real dev server: the
page refuses a browser without the operator's credentials; with them it shows
the node's sessions and the identities' presence of two real WebSocket
clients, a real call while it is in progress and then as an outcome, a message
sent over REST by status, the routing chart once the carrier reports it
delivered, and a broadcast's open rate - each change without a reload.

The clients are Python WebSocket clients (tests/helpers/wsclient.py) on an
event loop of their own in a thread: Playwright's sync API holds the main
thread's. They speak the wire protocol the SDK speaks, so the dashboard sees
exactly what browser clients would produce.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Coroutine, Iterator, TypeVar

import pytest
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import Page, Response, expect

from presence_server.carriers.outbox import read_entries
from protocol.tokens import mint_token
from tests.helpers.browser import OPERATOR, DevServer, screenshot_path, start_dev_server, stop_dev_server
from tests.helpers.wsclient import RawClient

T = TypeVar("T")
CARRIER = ("carrier", "carrier-secret-e2e-0123456789")
# The dev server's outbox provider, with credentials for its delivery reports
# (POST /v1/Ingress/outbox/Status), as a carrier would send them.
PROVIDERS = f"""
[[providers]]
name = "outbox"
kind = "outbox"
inbound_username = "{CARRIER[0]}"
inbound_password = "{CARRIER[1]}"
"""
DEV_NUMBER = "+15550001111"
SHORT = re.compile(r"http://[^/\s]+/l/([A-Za-z0-9]+)")
WAIT = 5000  # ms: the page polls every 2 s


class ClientLoop:
    """An asyncio loop in a thread, for WebSocket clients the test drives."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="ws-clients", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture(scope="module")
def server() -> Iterator[DevServer]:
    srv = start_dev_server(PROVIDERS)
    yield srv
    stop_dev_server(srv)


@pytest.fixture(scope="module")
def clients() -> Iterator[ClientLoop]:
    loop = ClientLoop()
    yield loop
    loop.close()


def token(server: DevServer, identity: str) -> str:
    key = server.account["api_keys"][0]
    grants = {
        "identity": identity,
        "presence": {"publish": True, "subscribe": ["*"]},
        "voice": {"incoming": {"allow": True}, "outgoing": {"application_sid": server.account["application_sid"]}},
    }
    return mint_token(key_sid=key["sid"], account_sid=server.account_sid, identity=identity, secret=key["secret"],
                      ttl=600, now=time.time(), grants=grants)


async def connect(server: DevServer, identity: str) -> RawClient:
    client = await RawClient.open(server.ws_url)
    reply = await client.register(token(server, identity), capabilities=["voice", "messaging"])
    assert reply["type"] == "registered", reply
    return client


async def leave(client: RawClient) -> None:
    """``bye``: the session ends at once (no grace period), as a closed app's does."""
    await client.send({"type": "bye"})
    await client.closed()


@pytest.fixture
def people(server: DevServer, clients: ClientLoop) -> Iterator[dict[str, RawClient]]:
    """alice and bob, registered for as long as the test runs."""
    alice = clients.run(connect(server, "alice"))
    bob = clients.run(connect(server, "bob"))
    yield {"alice": alice, "bob": bob}
    for client in (alice, bob):
        if client.ws.state.name == "OPEN":
            clients.run(leave(client))


def rest(server: DevServer, method: str, path: str, *, auth: tuple[str, str], form: dict[str, str] | None = None,
         body: Any = None) -> tuple[int, Any]:
    """A plain HTTP request (urllib), as a customer's backend or a carrier makes it."""
    data, headers = None, {"Authorization": "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()}
    if form is not None:
        data, headers["Content-Type"] = urllib.parse.urlencode(form).encode(), "application/x-www-form-urlencoded"
    elif body is not None:
        data, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
    request = urllib.request.Request(server.url + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def outbox_entry(server: DevServer, message_sid: str) -> dict[str, Any]:
    """What the outbox provider recorded for a message (its provider id), read
    from its file as `presence-server outbox` does."""
    for entry in read_entries(server.workdir / "data" / "outbox.sqlite3", 100):
        if entry["message_sid"] == message_sid:
            return entry
    raise AssertionError(f"{message_sid} is not in the outbox")


def open_dashboard(new_page: Any, server: DevServer, refresh: float | None = 0.5) -> Page:
    """The dashboard as the operator sees it; refreshing every ``refresh``
    seconds (None: the default 2 s)."""
    page: Page = new_page(http_credentials={"username": OPERATOR[0], "password": OPERATOR[1]}, viewport={"width": 1360, "height": 900})
    response = page.goto(server.url + "/dashboard" + (f"?refresh={refresh}" if refresh else ""))
    assert response is not None and response.status == 200
    expect(page.get_by_test_id("live-status")).to_have_attribute("data-state", "live", timeout=WAIT)
    # Set once; a reload would drop it, so its presence later proves the page updated in place.
    page.evaluate("window.__sameDocument = true")
    return page


def still_same_document(page: Page) -> bool:
    return bool(page.evaluate("window.__sameDocument === true"))


def test_without_operator_credentials_the_dashboard_is_refused(new_page: Any, server: DevServer) -> None:
    # No credentials, wrong ones, and an account's own (not the operator's).
    for credentials in (None, (OPERATOR[0], "wrong"), (server.account_sid, server.account["auth_token"])):
        options = {"http_credentials": {"username": credentials[0], "password": credentials[1]}} if credentials else {}
        page: Page = new_page(**options)
        answers: list[Response] = []
        page.on("response", lambda r: answers.append(r))
        # The server answers 401 with the operator challenge. A browser with no
        # (right) answer to it either shows that answer or gives up on the page
        # (net::ERR_INVALID_AUTH_CREDENTIALS): Chromium does both, by timing.
        try:
            shown = page.goto(server.url + "/dashboard")
            assert shown is not None and shown.status == 401
        except PlaywrightError as exc:
            assert "ERR_INVALID_AUTH_CREDENTIALS" in str(exc)
        page_answers = [a for a in answers if a.url == server.url + "/dashboard"]
        assert page_answers and all(a.status == 401 for a in page_answers), credentials
        assert page_answers[0].headers["www-authenticate"] == 'Basic realm="presence-server operator"'
        assert page.get_by_test_id("presence-panel").count() == 0
        paths = ("/dashboard", "/dashboard/dashboard.js", "/v1/Dashboard/Accounts", f"/v1/Dashboard/Accounts/{server.account_sid}",
                 "/v1/Dashboard/Routing", "/v1/Nodes")
        for path in paths:
            answer = page.request.get(server.url + path)
            assert answer.status == 401 and answer.json()["code"] == 40014, (credentials, path)


def test_sessions_and_presence_update_live(new_page: Any, server: DevServer, clients: ClientLoop, people: dict[str, RawClient]) -> None:
    page = open_dashboard(new_page, server, refresh=None)  # the default period
    expect(page.get_by_test_id("node-sessions")).to_have_text("2", timeout=WAIT)
    expect(page.get_by_test_id("sessions-total")).to_have_text("2")
    alice = page.locator('[data-testid="presence-row"][data-identity="alice"]')
    bob = page.locator('[data-testid="presence-row"][data-identity="bob"]')
    expect(alice).to_have_attribute("data-status", "available", timeout=WAIT)
    expect(bob).to_have_attribute("data-status", "available")
    expect(bob.get_by_test_id("presence-sessions")).to_have_text("1")

    # alice changes her presence; the page follows without a reload.
    clients.run(people["alice"].send({"type": "presence", "status": "busy", "text": "in a meeting <b>now</b>"}))
    expect(alice).to_have_attribute("data-status", "busy", timeout=WAIT)
    expect(alice.get_by_test_id("presence-status")).to_have_text("busy")
    # Untrusted text is shown as text, never as markup.
    expect(alice.get_by_test_id("presence-text")).to_have_text("in a meeting <b>now</b>")
    expect(alice.locator("b")).to_have_count(0)

    # bob leaves: offline, and the node holds one session.
    clients.run(leave(people["bob"]))
    expect(bob).to_have_attribute("data-status", "offline", timeout=WAIT)
    expect(page.get_by_test_id("node-sessions")).to_have_text("1", timeout=WAIT)
    expect(page.locator('[data-testid="presence-count"][data-status="offline"]')).to_have_text("1 offline")
    assert still_same_document(page)
    assert page.console_errors == []  # type: ignore[attr-defined]


def test_a_call_shows_in_progress_then_as_an_outcome(new_page: Any, server: DevServer, clients: ClientLoop, people: dict[str, RawClient]) -> None:
    page = open_dashboard(new_page, server)
    alice, bob = people["alice"], people["bob"]

    async def call_and_answer() -> tuple[str, str]:
        await alice.send({"type": "call", "to": "client:bob"})
        call_sid = (await alice.recv_type("call_created"))["call"]
        invite = await bob.recv_type("invite")
        await bob.send({"type": "accept", "call": invite["call"]})
        assert (await alice.recv_type("call_progress"))["status"] == "answered"
        return call_sid, invite["call"]

    call_sid, leg_sid = clients.run(call_and_answer())
    live = page.get_by_test_id("calls-in-progress")
    row = live.locator(f'[data-testid="call-live"][data-sid="{call_sid}"]')
    expect(row).to_have_attribute("data-status", "in-progress", timeout=WAIT)
    expect(row.get_by_test_id("call-from")).to_have_text("client:alice")
    expect(row.get_by_test_id("call-to")).to_have_text("client:bob")
    expect(live.locator(f'[data-sid="{leg_sid}"]')).to_have_count(1)  # bob's leg
    expect(page.get_by_test_id("calls-recent").locator(f'[data-sid="{call_sid}"]')).to_have_count(0)

    async def hang_up() -> None:
        await bob.send({"type": "hangup", "call": leg_sid})
        await alice.recv_type("hangup")

    clients.run(hang_up())
    outcome = page.get_by_test_id("calls-recent").locator(f'[data-testid="call-recent"][data-sid="{call_sid}"]')
    expect(outcome).to_have_attribute("data-status", "completed", timeout=WAIT)
    expect(outcome.get_by_test_id("call-status")).to_have_text("completed")
    expect(live.locator(f'[data-sid="{call_sid}"]')).to_have_count(0)
    assert still_same_document(page)
    assert page.console_errors == []  # type: ignore[attr-defined]


def test_messages_routing_chart_and_broadcasts(new_page: Any, server: DevServer, clients: ClientLoop, people: dict[str, RawClient]) -> None:
    page = open_dashboard(new_page, server)
    clients.run(people["alice"].send({"type": "presence", "status": "busy", "text": "in a meeting"}))
    account = f"/2010-04-01/Accounts/{server.account_sid}/Messages.json"
    status, sms = rest(server, "POST", account, auth=server.auth, form={"To": "+15557770001", "From": DEV_NUMBER, "Body": "Your code is 1234"})
    assert status == 201, sms

    row = page.locator(f'[data-testid="message-row"][data-sid="{sms["sid"]}"]')
    expect(row).to_have_attribute("data-status", "sent", timeout=WAIT)
    expect(row).to_have_attribute("data-channel", "sms")
    by_status = page.get_by_test_id("messages-by-status")
    expect(by_status.locator('[data-testid="message-status-bar"][data-key="sent"]')).to_be_visible()
    expect(page.get_by_test_id("messages-by-channel").locator('[data-key="sms"]')).to_be_visible()
    expect(page.get_by_test_id("messages-panel")).not_to_contain_text("Your code is 1234")  # bodies stay out

    # The carrier reports it delivered: the status moves and the routing chart draws its minute.
    status, report = rest(server, "POST", "/v1/Ingress/outbox/Status", auth=CARRIER,
                          body={"id": outbox_entry(server, sms["sid"])["provider_message_id"], "status": "delivered"})
    assert status == 200 and report["status"] == "delivered", report
    expect(row).to_have_attribute("data-status", "delivered", timeout=WAIT)
    expect(by_status.locator('[data-testid="message-status-bar"][data-key="delivered"]')).to_be_visible()
    outbox = page.locator('[data-testid="routing-row"][data-provider="outbox"]')
    expect(outbox.get_by_test_id("routing-ratio")).to_have_text("100%", timeout=WAIT)
    for chart in ("chart-delivered-ratio", "chart-time-to-delivery"):
        points = page.get_by_test_id(chart).locator('svg g[data-series="outbox"] circle')
        expect(points).not_to_have_count(0)

    # An in-app message to alice, acked by her app: channel app, delivered, and
    # a second provider ("app") on the routing charts.
    status, in_app = rest(server, "POST", account, auth=server.auth, form={"To": "client:alice", "From": DEV_NUMBER, "Body": "See you at 3"})
    assert status == 201, in_app

    async def receive_and_ack() -> None:
        frame = await people["alice"].recv_type("message")
        await people["alice"].send({"type": "ack", "sid": frame["sid"]})

    clients.run(receive_and_ack())
    app_row = page.locator(f'[data-testid="message-row"][data-sid="{in_app["sid"]}"]')
    expect(app_row).to_have_attribute("data-status", "delivered", timeout=WAIT)
    expect(app_row).to_have_attribute("data-channel", "app")
    expect(page.get_by_test_id("messages-by-channel").locator('[data-key="app"]')).to_be_visible()
    expect(page.locator('[data-testid="routing-row"][data-provider="app"]')).to_be_visible(timeout=WAIT)
    expect(page.get_by_test_id("chart-delivered-ratio").locator('svg g[data-series="app"] circle')).not_to_have_count(0)

    # A broadcast with a tracked link: two texts delivered, one link opened -> 50%.
    status, created = rest(server, "POST", f"/v1/Accounts/{server.account_sid}/Broadcasts", auth=server.auth, body={
        "destinations": ["+15557770002", "+15557770003"], "from": DEV_NUMBER,
        "content": {"text": "Spring sale: https://example.com/sale"}, "intent": {"track_links": True, "priority": "bulk"},
    })
    assert status == 201, created
    card = page.locator(f'[data-testid="broadcast"][data-sid="{created["sid"]}"]')
    expect(card).to_be_visible(timeout=WAIT)
    for message in created["messages"]:
        expect(page.locator(f'[data-testid="message-row"][data-sid="{message["message_sid"]}"]')).to_have_attribute("data-status", "sent", timeout=WAIT)
        entry = outbox_entry(server, message["message_sid"])
        status, _ = rest(server, "POST", "/v1/Ingress/outbox/Status", auth=CARRIER, body={"id": entry["provider_message_id"], "status": "delivered"})
        assert status == 200
    (code,) = SHORT.findall(outbox_entry(server, created["messages"][0]["message_sid"])["body"])
    response = page.request.get(f"{server.url}/l/{code}", max_redirects=0)
    assert response.status == 302
    expect(card.get_by_test_id("broadcast-open-rate")).to_have_text("50%", timeout=WAIT)
    expect(page.get_by_test_id("presence-row").filter(has_text="alice")).to_have_attribute("data-status", "busy")

    assert still_same_document(page)
    assert page.console_errors == []  # type: ignore[attr-defined]
    page.screenshot(path=str(screenshot_path("dashboard.png")), full_page=True)


def test_a_server_that_goes_away_shows_as_down_and_the_page_keeps_its_data(new_page: Any) -> None:
    own = start_dev_server()
    try:
        page = open_dashboard(new_page, own)
        expect(page.get_by_test_id("node-sessions")).to_have_text("0")
        own.process.stop()
        expect(page.get_by_test_id("live-status")).to_have_attribute("data-state", "down", timeout=WAIT)
        expect(page.get_by_test_id("error-banner")).to_contain_text("unreachable")
        expect(page.get_by_test_id("presence-panel")).to_have_class(re.compile(r"\bstale\b"))
        # What it showed stays, dimmed, rather than a blank page.
        expect(page.locator('[data-testid="presence-row"][data-identity="alice"]')).to_have_attribute("data-status", "offline")
        assert still_same_document(page)
    finally:
        stop_dev_server(own)
