"""The demo softphone at /demo in a real Chromium, against a real dev-mode
server: what two people see when they sign in, watch each other's presence,
call each other over WebRTC, message each other, and when the callee is gone
and the call falls back to SMS."""

from __future__ import annotations

from typing import Callable, Iterator

import pytest
from playwright.sync_api import Locator, Page, expect

from tests.helpers.browser import DevServer, screenshot_path, start_dev_server, stop_dev_server

PageFactory = Callable[..., Page]
XSS = "<img src=x onerror=window.__xss=1>"
# Peer connections negotiate ICE on loopback: fast, but more than a frame or two.
CONNECT_TIMEOUT = 10_000


def sign_in(new_page: PageFactory, server: DevServer, identity: str) -> Page:
    page = new_page(viewport={"width": 1280, "height": 900})
    page.goto(f"{server.url}/demo")
    page.get_by_test_id("identity").fill(identity)
    page.get_by_test_id("signin").click()
    expect(page.get_by_test_id("conn-state")).to_have_text("registered")
    expect(page.get_by_test_id("me")).to_have_text(identity)
    return page


def person(page: Page, identity: str) -> Locator:
    return page.locator(f'#directory [data-identity="{identity}"]')


def presence_of(page: Page, identity: str) -> Locator:
    return person(page, identity).get_by_test_id("presence")


def set_status(page: Page, status: str, text: str) -> None:
    page.get_by_test_id("status").select_option(status)
    page.get_by_test_id("status-text").fill(text)
    page.get_by_test_id("status-set").click()


def no_errors(*pages: Page) -> None:
    for page in pages:
        assert page.console_errors == [], page.console_errors  # type: ignore[attr-defined]


def test_two_people_see_each_others_presence(dev_server: DevServer, new_page: PageFactory) -> None:
    alice = sign_in(new_page, dev_server, "alice")
    bob = sign_in(new_page, dev_server, "bob")
    expect(presence_of(alice, "bob")).to_have_text("available")
    expect(presence_of(bob, "alice")).to_have_text("available")
    expect(person(alice, "bob").get_by_test_id("phone")).to_have_text("+15550100002")

    set_status(bob, "busy", "in a meeting")
    expect(presence_of(alice, "bob")).to_have_text("busy — in a meeting")
    expect(person(alice, "bob")).to_have_attribute("data-status", "busy")
    expect(presence_of(bob, "bob")).to_have_text("busy — in a meeting")  # bob's own row too

    set_status(bob, "available", "")
    expect(presence_of(alice, "bob")).to_have_text("available")
    expect(person(alice, "bob")).to_have_attribute("data-status", "available")
    no_errors(alice, bob)


def test_call_with_data_channel_chat_and_hangup(dev_server: DevServer, new_page: PageFactory) -> None:
    alice = sign_in(new_page, dev_server, "alice")
    bob = sign_in(new_page, dev_server, "bob")
    expect(presence_of(alice, "bob")).to_have_text("available")

    person(alice, "bob").get_by_test_id("call").click()
    expect(bob.get_by_test_id("incoming")).to_be_visible()
    expect(bob.get_by_test_id("incoming-from")).to_have_text("alice")
    expect(alice.get_by_test_id("call-state")).to_have_text("ringing")
    bob.get_by_test_id("accept").click()

    for page, other in ((alice, "bob"), (bob, "alice")):
        expect(page.get_by_test_id("call-state")).to_have_text("answered")
        expect(page.get_by_test_id("call-peer")).to_have_text(other)
        expect(page.get_by_test_id("pc-state")).to_have_text("connected", timeout=CONNECT_TIMEOUT)
        expect(page.get_by_test_id("dc-state")).to_have_text("open")
        # The machine's (fake) microphone and camera are in the call.
        expect(page.get_by_test_id("media-state")).to_have_text("audio + video")

    alice.get_by_test_id("chat-input").fill("hello bob")
    alice.get_by_test_id("chat-send").click()
    expect(bob.get_by_test_id("chat-log")).to_contain_text("alice:hello bob")
    bob.get_by_test_id("chat-input").fill("hi alice")
    bob.get_by_test_id("chat-send").click()
    expect(alice.get_by_test_id("chat-log")).to_contain_text("bob:hi alice")
    expect(alice.get_by_test_id("chat-line")).to_have_text(["me:hello bob", "bob:hi alice"])
    expect(bob.get_by_test_id("chat-line")).to_have_text(["alice:hello bob", "me:hi alice"])
    # Bob's video reaches alice: her remote video plays frames.
    alice.wait_for_function("document.getElementById('remote-video').videoWidth > 0", timeout=CONNECT_TIMEOUT)
    alice.screenshot(path=str(screenshot_path("demo-call.png")), full_page=True)

    alice.get_by_test_id("hangup").click()
    for page in (alice, bob):
        expect(page.get_by_test_id("call-state")).to_have_text("ended")
        expect(page.get_by_test_id("pc-state")).to_have_text("closed")
        expect(page.get_by_test_id("hangup")).to_be_disabled()
    expect(bob.get_by_test_id("call-reason")).to_contain_text("remote_hangup")
    no_errors(alice, bob)


def test_callee_rejects(dev_server: DevServer, new_page: PageFactory) -> None:
    alice = sign_in(new_page, dev_server, "alice")
    bob = sign_in(new_page, dev_server, "bob")
    person(alice, "bob").get_by_test_id("call").click()
    expect(bob.get_by_test_id("incoming-from")).to_have_text("alice")
    bob.get_by_test_id("reject").click()
    expect(bob.get_by_test_id("incoming")).to_be_hidden()
    expect(bob.get_by_test_id("call-state")).to_have_text("ended")
    expect(bob.get_by_test_id("call-reason")).to_have_text("Ended: rejected (rejected)")
    expect(alice.get_by_test_id("call-state")).to_have_text("ended")
    expect(alice.get_by_test_id("call-reason")).to_contain_text("no answer")
    # Nothing was connected on either side.
    expect(alice.get_by_test_id("pc-state")).to_have_text("closed")
    expect(bob.get_by_test_id("pc-state")).to_have_text("—")
    no_errors(alice, bob)


@pytest.fixture
def fresh_server() -> Iterator[DevServer]:
    """A dev server of its own, so its outbox holds only this test's texts."""
    server = start_dev_server()
    yield server
    stop_dev_server(server)


def test_callee_gone_falls_back_to_missed_call_sms(fresh_server: DevServer, new_page: PageFactory) -> None:
    alice = sign_in(new_page, fresh_server, "alice")
    bob = sign_in(new_page, fresh_server, "bob")
    expect(alice.get_by_test_id("outbox-entry")).to_have_count(0)
    expect(presence_of(alice, "bob")).to_have_text("available")
    bob.close()
    # A closed page's session goes away (at once with a bye, else after the grace period).
    expect(presence_of(alice, "bob")).to_have_text("offline", timeout=8_000)

    person(alice, "bob").get_by_test_id("call").click()
    expect(alice.get_by_test_id("call-state")).to_have_text("ended")
    expect(alice.get_by_test_id("call-reason")).to_contain_text("a missed-call SMS goes to their phone")
    missed = alice.get_by_test_id("outbox-entry")
    expect(missed).to_have_count(1)
    expect(missed.get_by_test_id("body")).to_have_text("Missed call from client:alice")
    expect(missed.get_by_test_id("meta")).to_contain_text("to +15550100002 · from +15550001111")
    expect(missed.get_by_test_id("state")).to_have_text("sent")
    alice.screenshot(path=str(screenshot_path("demo-fallback.png")), full_page=True)
    no_errors(alice)


def test_in_app_message_and_read_receipt(dev_server: DevServer, new_page: PageFactory) -> None:
    alice = sign_in(new_page, dev_server, "alice")
    bob = sign_in(new_page, dev_server, "bob")
    alice.get_by_test_id("message-to").fill("bob")
    alice.get_by_test_id("message-body").fill("lunch at noon?")
    alice.get_by_test_id("message-send").click()

    received = bob.get_by_test_id("inbox-message").filter(has_text="lunch at noon?")
    expect(received).to_have_count(1)
    expect(received.get_by_test_id("meta")).to_contain_text("from alice")
    expect(received.get_by_test_id("body")).to_have_text("lunch at noon?")
    expect(received.get_by_test_id("state")).to_have_text("unread")
    sent = alice.get_by_test_id("sent-message").filter(has_text="lunch at noon?")
    expect(sent.get_by_test_id("state")).to_have_text("delivered")  # acked on receipt

    received.get_by_test_id("mark-read").click()
    expect(received.get_by_test_id("state")).to_have_text("read")
    expect(sent.get_by_test_id("state")).to_have_text("read")  # alice sees the read receipt
    no_errors(alice, bob)


def test_markup_from_users_is_shown_as_text(dev_server: DevServer, new_page: PageFactory) -> None:
    # Identities cannot hold markup (docs/protocol.md, Identifiers); the most
    # unusual one the syntax allows still shows exactly as typed.
    odd = "x.o+a@b:c,d_e-f"
    other = sign_in(new_page, dev_server, odd)  # first, so alice's directory lists it at once
    alice = sign_in(new_page, dev_server, "alice")
    set_status(other, "away", XSS)
    expect(person(alice, odd).get_by_test_id("name")).to_have_text(odd)
    expect(presence_of(alice, odd)).to_have_text(f"away — {XSS}")

    alice.get_by_test_id("message-to").fill(odd)
    alice.get_by_test_id("message-body").fill(f"look: {XSS}")
    alice.get_by_test_id("message-send").click()
    received = other.get_by_test_id("inbox-message")
    expect(received.get_by_test_id("body")).to_have_text(f"look: {XSS}")
    # A message to an identity with no app and no phone fails visibly (no way to reach it).
    alice.get_by_test_id("message-to").fill("nobody-here")
    alice.get_by_test_id("message-body").fill(XSS)
    alice.get_by_test_id("message-send").click()
    failed = alice.get_by_test_id("sent-message").filter(has_text="to nobody-here")
    expect(failed.get_by_test_id("body")).to_have_text(XSS)
    expect(failed.get_by_test_id("state")).to_have_text("failed")

    for page in (alice, other):
        assert page.locator("img").count() == 0
        assert page.evaluate("window.__xss") is None
    no_errors(alice, other)


def test_demo_page_shows_sign_in_errors(dev_server: DevServer, new_page: PageFactory) -> None:
    page = new_page()
    page.goto(f"{dev_server.url}/demo")
    page.get_by_test_id("identity").fill("client:bob")
    page.get_by_test_id("signin").click()
    expect(page.get_by_test_id("error")).to_contain_text("identity must not start with 'client:' (30001)")
    expect(page.get_by_test_id("conn-state")).to_have_text("signed out")
