"""The browser SDK (clients/js/presence.js) in a real Chromium against a real
server: registration and presence between two pages, subscriptions deduped by
version, token renewal, reconnects (a server restart, a stalled socket),
close codes, a WebRTC call between two pages through the signaling relay,
in-app messages, and bad arguments refused before anything is sent."""

from __future__ import annotations

import asyncio
import os
import signal
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterator

import pytest
from playwright.sync_api import Page

from presence_server.http.static import PAGE_HEADERS
from tests.e2e.sdk_pages import (
    connect,
    console_errors,
    events,
    make_client,
    sdk_page,
    send_message,
    sent,
    token,
    wait_for_message_status,
)
from tests.helpers.browser import DevServer, start_dev_server, stop_dev_server

PageFactory = Callable[..., Page]
WAIT = 5000  # ms: how long a page gets for what a live server does at once
# Reconnect quickly in the tests that make the server go away.
FAST_RECONNECT = {"initial": 0.2, "max": 1.0}


@pytest.fixture(scope="module")
def fast_server() -> Iterator[DevServer]:
    """A server with a 1 s heartbeat (and a 3 s idle timeout), so heartbeats
    and stalls show within seconds; a 10 s grace period to resume in; and
    token_expiring only at expiry, so the SDK's own renewal timer shows."""
    server = start_dev_server(
        "\n[gateway]\nheartbeat = 1.0\nidle_timeout = 3.0\ntoken_warning = 0.0\n\n[presence]\ngrace_period = 10.0\n"
    )
    yield server
    stop_dev_server(server)


def _restart(server: DevServer) -> None:
    """Stop the server (SIGTERM: it tells its clients to reconnect, then
    closes them with 4012) and start it again on the same port and data."""
    server.process.stop()
    with ThreadPoolExecutor(1) as pool:  # Playwright's sync API holds this thread's loop
        pool.submit(lambda: asyncio.run(server.process.start())).result()


def test_register_and_see_another_clients_presence_change(new_page: PageFactory, dev_server: DevServer) -> None:
    alice = sdk_page(new_page, dev_server)
    bob = sdk_page(new_page, dev_server)
    make_client(alice, "alice", [token(dev_server, "alice")])
    make_client(bob, "bob", [token(dev_server, "bob")], status="away", text="commuting")

    info = connect(alice, "alice")
    assert info["identity"] == "alice" and info["account"] == dev_server.account_sid
    assert info["session"].startswith("SE") and info["resumed"] is False
    assert alice.evaluate("harness.clients.alice.state") == "registered"
    assert events(alice, "alice", "state") == ["connecting", "registered"]

    [snapshot] = alice.evaluate("harness.clients.alice.subscribe(['bob'])")
    assert snapshot["identity"] == "bob" and snapshot["status"] == "offline"

    connect(bob, "bob")
    alice.wait_for_function(
        "() => harness.clients.alice.presence('bob')?.status === 'away'", timeout=WAIT
    )
    assert alice.evaluate("harness.clients.alice.presence('bob').text") == "commuting"

    bob.evaluate("harness.clients.bob.setPresence({status: 'busy', text: 'in a meeting'})")
    alice.wait_for_function(
        "() => harness.of('alice', 'presence').some(p => p.status === 'busy' && p.text === 'in a meeting')",
        timeout=WAIT,
    )

    # close() says bye: bob is offline at once, not after the grace period.
    bob.evaluate("harness.clients.bob.close()")
    assert bob.evaluate("harness.clients.bob.state") == "closed"
    assert events(bob, "bob", "closed") == [{"code": 1000, "reason": "bye", "error": None}]
    assert [f["type"] for f in sent(bob)][-1] == "bye"
    alice.wait_for_function("() => harness.clients.alice.presence('bob').status === 'offline'", timeout=3000)
    assert console_errors(alice) == [] and console_errors(bob) == []


def test_subscribe_snapshots_and_presence_events_deduped_by_version(new_page: PageFactory, dev_server: DevServer) -> None:
    alice = sdk_page(new_page, dev_server)
    bob = sdk_page(new_page, dev_server)
    make_client(alice, "alice", [token(dev_server, "alice")])
    make_client(bob, "bob", [token(dev_server, "bob")])
    connect(bob, "bob")
    connect(alice, "alice")

    snapshots = alice.evaluate("harness.clients.alice.subscribe(['bob', 'carol'])")
    assert [(p["identity"], p["status"]) for p in snapshots] == [("bob", "available"), ("carol", "offline")]
    assert snapshots[1]["version"] == 0 and snapshots[0]["version"] >= 1
    assert len(events(alice, "alice", "presence")) == 2  # each snapshot once

    # Subscribing again brings a fresh snapshot of the same version: returned, not an event again.
    again = alice.evaluate("harness.clients.alice.subscribe(['bob'])")
    assert again[0]["version"] == snapshots[0]["version"]
    assert len(events(alice, "alice", "presence")) == 2

    bob.evaluate("harness.clients.bob.setPresence({status: 'dnd', text: 'focus'})")
    alice.wait_for_function("() => harness.clients.alice.presence('bob').status === 'dnd'", timeout=WAIT)
    [update] = [f for f in alice.evaluate("harness.wire.received") if f["type"] == "presence_update"]
    assert update["version"] > snapshots[0]["version"]
    # The same update again (a duplicate, as a REST read or a redelivery
    # could bring): not newer, so not an event.
    alice.evaluate("(frame) => harness.replay(frame)", update)
    alice.evaluate("(frame) => harness.replay({...frame, version: frame.version - 1, status: 'away'})", update)
    bob_events = [p for p in events(alice, "alice", "presence") if p["identity"] == "bob"]
    assert [p["status"] for p in bob_events] == ["available", "dnd"]
    assert [p["version"] for p in bob_events] == sorted({p["version"] for p in bob_events})
    assert alice.evaluate("harness.clients.alice.presence('bob').version") == update["version"]

    alice.evaluate("harness.clients.alice.unsubscribe(['carol'])")
    assert alice.evaluate("harness.clients.alice.subscriptions") == ["bob"]
    assert alice.evaluate("harness.clients.alice.presence('carol')") is None
    assert sent(alice, "unsubscribe")[0]["identities"] == ["carol"]
    assert console_errors(alice) == [] and console_errors(bob) == []


def test_token_renewed_through_the_token_function_ahead_of_expiry(new_page: PageFactory, dev_server: DevServer) -> None:
    page = sdk_page(new_page, dev_server)
    # Backdated so that it has 58 s left: under the server's 60 s warning, so
    # token_expiring comes at once; the next token from the function is fresh.
    short = token(dev_server, "alice", ttl=158, issued_ago=100)
    fresh = token(dev_server, "alice", ttl=3600)
    make_client(page, "alice", [short, fresh], use_function=True)
    info = connect(page, "alice")

    page.wait_for_function("() => harness.of('alice', 'token_updated').length === 1", timeout=WAIT)
    [updated] = events(page, "alice", "token_updated")
    assert updated["expires"] > info["expires"] + 3000
    assert page.evaluate("harness.clients.alice.expires") == updated["expires"]
    assert page.evaluate("harness.tokenCalls.alice") == 2
    assert [f["token"] for f in sent(page, "update_token")] == [fresh]
    # Renewed in place: the same session on the same socket.
    assert page.evaluate("harness.clients.alice.session") == info["session"]
    assert page.evaluate("harness.wire.opened") == 1
    assert events(page, "alice", "state") == ["connecting", "registered"]
    assert console_errors(page) == []


def test_garbage_token_rejects_connect_with_20101_and_does_not_reconnect(new_page: PageFactory, dev_server: DevServer) -> None:
    page = sdk_page(new_page, dev_server)
    make_client(page, "fixed", ["garbage"])
    make_client(page, "fn", ["not.a.jwt"], use_function=True)
    for name in ("fixed", "fn"):
        err = page.evaluate("(name) => harness.attempt(() => harness.clients[name].connect())", name)
        assert err["name"] == "PresenceError" and err["code"] == 20101 and err["fatal"] is True, err
        assert err["closeCode"] == 4001
        assert page.evaluate("(name) => harness.clients[name].state", name) == "closed"
        [closed] = events(page, name, "closed")
        assert closed["error"]["code"] == 20101
    # Absence can only be shown by waiting: twice the first back-off's ceiling.
    page.wait_for_timeout(1000)
    assert page.evaluate("harness.wire.opened") == 2
    assert page.evaluate("harness.tokenCalls.fn") == 1
    again = page.evaluate("harness.attempt(() => harness.clients.fixed.connect())")
    assert "closed" in again["message"]


def test_refused_renewal_gets_one_fresh_token_then_stops(new_page: PageFactory, dev_server: DevServer) -> None:
    """A renewal the server refuses (4001) is retried once, with a new token
    from the function; refused again, the client stops instead of looping."""
    page = sdk_page(new_page, dev_server)
    short = token(dev_server, "alice", ttl=158, issued_ago=100)
    make_client(page, "alice", [short, "garbage"], use_function=True, reconnect={"initial": 0.1, "max": 0.2})
    connect(page, "alice")
    page.wait_for_function("() => harness.clients.alice.state === 'closed'", timeout=WAIT)
    assert events(page, "alice", "state") == ["connecting", "registered", "reconnecting", "closed"]
    assert page.evaluate("harness.tokenCalls.alice") == 3  # connect, renewal, one fresh one for the reconnect
    assert page.evaluate("harness.wire.opened") == 2
    [closed] = events(page, "alice", "closed")
    assert closed["code"] == 4001 and closed["error"]["code"] == 20101
    assert any(e.get("code") == 20101 for e in events(page, "alice", "error"))
    page.wait_for_timeout(1000)  # absence: no further attempt
    assert page.evaluate("harness.wire.opened") == 2


def test_session_replaced_closes_with_4010_and_does_not_reconnect(new_page: PageFactory, dev_server: DevServer) -> None:
    page = sdk_page(new_page, dev_server)
    make_client(page, "first", [token(dev_server, "alice")])
    first = connect(page, "first")
    # A second client takes the session over (as a reloaded page would, with
    # the session id it kept): the first one is told and stops.
    make_client(page, "second", [token(dev_server, "alice")], resume=first["session"])
    second = connect(page, "second")
    assert second["resumed"] is True and second["session"] == first["session"]
    page.wait_for_function("() => harness.clients.first.state === 'closed'", timeout=WAIT)
    [closed] = events(page, "first", "closed")
    assert closed["code"] == 4010 and closed["error"]["code"] == 10015
    assert "reconnecting" not in events(page, "first", "state")
    assert page.evaluate("harness.clients.second.state") == "registered"
    assert page.evaluate("harness.wire.opened") == 2


def test_pagehide_says_bye_so_presence_ends_at_once(new_page: PageFactory, dev_server: DevServer) -> None:
    alice = sdk_page(new_page, dev_server)
    bob = sdk_page(new_page, dev_server)
    make_client(alice, "alice", [token(dev_server, "alice")])
    make_client(bob, "bob", [token(dev_server, "bob")])
    connect(alice, "alice")
    connect(bob, "bob")
    alice.evaluate("harness.clients.alice.subscribe(['bob'])")
    assert alice.evaluate("harness.clients.alice.presence('bob').status") == "available"
    bob.goto(dev_server.url + "/healthz")  # leaves the page: pagehide
    # Without the bye, bob's session would linger for the 5 s grace period.
    alice.wait_for_function("() => harness.clients.alice.presence('bob').status === 'offline'", timeout=3000)
    assert console_errors(alice) == []


# -- calls -------------------------------------------------------------------------------------

_PLACE_CALL = """
async () => {
  const h = harness;
  const call = await h.clients.alice.call('client:bob', {topic: 'e2e'});
  h.outgoing = call;
  h.progress = [];
  call.on('progress', (p) => h.progress.push(p));
  call.on('ended', (e) => { h.ended = e; });
  const pc = new RTCPeerConnection();
  h.pc = pc;
  // Wired before the data channel, so its negotiationneeded is seen.
  h.detach = h.sdk.connectPeer(call, pc, { initiator: true });
  h.got = [];
  const dc = pc.createDataChannel('chat');
  dc.onmessage = (e) => h.got.push(e.data);
  dc.onopen = () => dc.send('hello from alice');
  return { sid: call.sid, direction: call.direction, status: call.status, from: call.from, to: call.to };
}
"""

_ANSWER_CALL = """
async () => {
  const h = harness;
  const call = h.calls.bob;
  call.on('ended', (e) => { h.ended = e; });
  const pc = new RTCPeerConnection();
  h.pc = pc;
  h.got = [];
  pc.ondatachannel = (event) => {
    event.channel.onmessage = (e) => { h.got.push(e.data); event.channel.send('hello from bob'); };
  };
  h.sdk.connectPeer(call, pc, { initiator: false });
  await call.accept();
  return call.status;
}
"""


def test_call_between_two_pages_with_connect_peer_and_a_data_channel(new_page: PageFactory, dev_server: DevServer) -> None:
    alice = sdk_page(new_page, dev_server)
    bob = sdk_page(new_page, dev_server)
    make_client(alice, "alice", [token(dev_server, "alice")])
    make_client(bob, "bob", [token(dev_server, "bob")])  # declares voice: its token may receive calls
    connect(alice, "alice")
    connect(bob, "bob")
    assert sent(bob, "register")[0]["capabilities"] == ["voice", "messaging"]

    placed = alice.evaluate(_PLACE_CALL)
    assert placed["sid"].startswith("CA") and placed["direction"] == "outgoing"
    assert placed["from"] == "client:alice" and placed["to"] == "client:bob"

    bob.wait_for_function("() => harness.of('bob', 'invite').length === 1", timeout=WAIT)
    [invite] = events(bob, "bob", "invite")
    assert invite["from"] == "client:alice" and invite["direction"] == "incoming" and invite["status"] == "ringing"
    assert sent(bob, "ringing") == [{"type": "ringing", "call": invite["sid"]}]  # sent by the SDK itself
    alice.wait_for_function("() => harness.progress.some(p => p.status === 'ringing')", timeout=WAIT)

    assert bob.evaluate(_ANSWER_CALL) == "answered"
    alice.wait_for_function("() => harness.outgoing.status === 'answered'", timeout=WAIT)
    for page in (alice, bob):
        page.wait_for_function("() => harness.pc.connectionState === 'connected'", timeout=10000)
    bob.wait_for_function("() => harness.got.includes('hello from alice')", timeout=WAIT)
    alice.wait_for_function("() => harness.got.includes('hello from bob')", timeout=WAIT)
    # The SDP and the candidates went through the relay as signal payloads.
    kinds = {f["payload"]["type"] for f in sent(alice, "signal")} | {f["payload"]["type"] for f in sent(bob, "signal")}
    assert kinds == {"offer", "answer", "candidate"}

    alice.evaluate("harness.outgoing.hangup()")
    assert alice.evaluate("harness.ended") == {"reason": "local_hangup"}
    bob.wait_for_function("() => harness.ended !== undefined", timeout=WAIT)
    assert bob.evaluate("harness.ended") == {"reason": "remote_hangup"}
    assert bob.evaluate("harness.calls.bob.status") == "ended"
    for page in (alice, bob):  # connectPeer closes the peer connection when the call ends
        assert page.evaluate("harness.pc.signalingState") == "closed"
    assert console_errors(alice) == [] and console_errors(bob) == []


_BOTH_IN_ONE_PAGE = """
async () => {
  const h = harness;
  const invited = new Promise((resolve) => h.clients.bob.on('invite', resolve));
  const callA = await h.clients.alice.call('client:bob');
  const pcA = new RTCPeerConnection();
  h.sdk.connectPeer(callA, pcA, { initiator: true });
  pcA.createDataChannel('chat');
  const callB = await invited;
  const pcB = new RTCPeerConnection();
  h.sdk.connectPeer(callB, pcB, { initiator: false });
  await callB.accept();
  h.r = { pcA, pcB, tracksA: [], tracksB: [] };
  pcA.addEventListener('track', (e) => h.r.tracksA.push(e.track.kind));
  pcB.addEventListener('track', (e) => h.r.tracksB.push(e.track.kind));
  h.mic = async () => (await navigator.mediaDevices.getUserMedia({ audio: true })).getAudioTracks()[0];
}
"""


def test_connect_peer_renegotiates_from_either_side_and_through_glare(new_page: PageFactory, dev_server: DevServer) -> None:
    """After the first offer/answer either side may add media: the callee
    (the polite peer) offers too; and when both offer at once, the caller
    ignores the callee's offer, the callee rolls its own back and answers,
    and the callee's track still gets through."""
    page = sdk_page(new_page, dev_server)  # both clients in one page, so both can act in the same instant
    make_client(page, "alice", [token(dev_server, "alice")])
    make_client(page, "bob", [token(dev_server, "bob")])
    connect(page, "alice")
    connect(page, "bob")
    page.evaluate(_BOTH_IN_ONE_PAGE)
    page.wait_for_function(
        "() => harness.r.pcA.connectionState === 'connected' && harness.r.pcB.connectionState === 'connected'", timeout=10000
    )

    page.evaluate("async () => { const t = await harness.mic(); harness.r.pcB.addTrack(t, new MediaStream([t])); }")
    page.wait_for_function("() => harness.r.tracksA.length === 1", timeout=WAIT)
    offers = [f for f in sent(page, "signal") if f["payload"]["type"] == "offer"]
    assert len(offers) == 2  # the caller's first, then the callee's

    page.evaluate(
        """async () => {
          const [a, b] = [await harness.mic(), await harness.mic()];
          harness.r.pcA.addTrack(a, new MediaStream([a]));   // both in one task: a glare
          harness.r.pcB.addTrack(b, new MediaStream([b]));
        }"""
    )
    page.wait_for_function(
        """() => harness.r.tracksA.length === 2 && harness.r.tracksB.length === 1
          && harness.r.pcA.signalingState === 'stable' && harness.r.pcB.signalingState === 'stable'""",
        timeout=WAIT,
    )
    # Both offered in the glare: the caller once more, the callee once more
    # (rolled back; whether it then offers again depends on whether its
    # track could ride on the caller's new transceiver).
    # The caller (impolite) ignored the callee's colliding offer: one callee
    # offer more than the caller answered.
    callee_call = page.evaluate("harness.of('bob', 'invite')[0].sid")
    descriptions = [(f["call"] == callee_call, f["payload"]["type"]) for f in sent(page, "signal") if f["payload"]["type"] != "candidate"]
    assert descriptions.count((False, "offer")) == 2, descriptions
    assert descriptions.count((True, "offer")) == descriptions.count((False, "answer")) + 1, descriptions
    assert events(page, "alice", "error") == [] and events(page, "bob", "error") == []
    assert console_errors(page) == []


def test_call_rejected_ends_on_both_sides(new_page: PageFactory, dev_server: DevServer) -> None:
    alice = sdk_page(new_page, dev_server)
    bob = sdk_page(new_page, dev_server)
    make_client(alice, "alice", [token(dev_server, "alice")])
    make_client(bob, "bob", [token(dev_server, "bob")])
    connect(alice, "alice")
    connect(bob, "bob")
    alice.evaluate(
        """async () => {
          const call = await harness.clients.alice.call('client:bob');
          harness.outgoing = call;
          call.on('ended', (e) => { harness.ended = e; });
        }"""
    )
    bob.wait_for_function("() => harness.of('bob', 'invite').length === 1", timeout=WAIT)
    bob.evaluate("harness.calls.bob.reject('busy')")
    assert bob.evaluate("[harness.calls.bob.status, harness.calls.bob.endReason]") == ["ended", "busy"]
    alice.wait_for_function("() => harness.ended !== undefined", timeout=WAIT)
    assert alice.evaluate("harness.outgoing.status") == "ended"
    err = bob.evaluate("harness.attempt(() => harness.calls.bob.accept())")
    assert err["name"] == "PresenceError" and "ended" in err["message"]


# -- in-app messages -----------------------------------------------------------------------------


def test_in_app_message_emitted_once_acked_and_marked_read(new_page: PageFactory, dev_server: DevServer) -> None:
    page = sdk_page(new_page, dev_server)
    make_client(page, "bob", [token(dev_server, "bob")])
    connect(page, "bob")
    record = send_message(dev_server, "client:bob", "hello bob")

    page.wait_for_function("() => harness.of('bob', 'message').length === 1", timeout=WAIT)
    [message] = events(page, "bob", "message")
    assert message["sid"] == record["sid"] and message["body"] == "hello bob"
    assert message["from"] == "+15550001111" and message["to"] == "client:bob" and message["media"] == []
    delivered = wait_for_message_status(dev_server, record["sid"], "delivered")
    assert delivered["channel"] == "app"

    # The same message again (delivery is at least once): acked again, not emitted again.
    [frame] = [f for f in page.evaluate("harness.wire.received") if f["type"] == "message"]
    page.evaluate("(frame) => harness.replay(frame)", frame)
    page.wait_for_function("() => harness.sent('ack').length === 2", timeout=WAIT)
    assert len(events(page, "bob", "message")) == 1

    page.evaluate("harness.messages.bob[0].markRead()")
    assert sent(page, "ack")[-1] == {"type": "ack", "sid": record["sid"], "read": True, "id": sent(page, "ack")[-1]["id"]}
    wait_for_message_status(dev_server, record["sid"], "read")
    assert events(page, "bob", "error") == [] and console_errors(page) == []


# -- bad arguments ------------------------------------------------------------------------------------

# (what the app does, the error's class, words its message must hold)
_BAD_CONSTRUCTORS = [
    ("new harness.sdk.PresenceClient()", "TypeError", "options must be an object"),
    ("new harness.sdk.PresenceClient({token: 't'})", "TypeError", "url must be a string"),
    ("new harness.sdk.PresenceClient({url: 'http://127.0.0.1/v1/connect', token: 't'})", "PresenceError", "ws: or wss:"),
    ("new harness.sdk.PresenceClient({url: 'not a url', token: 't'})", "PresenceError", "is not a URL"),
    ("new harness.sdk.PresenceClient({url: harness.wsUrl})", "TypeError", "token is required"),
    ("new harness.sdk.PresenceClient({url: harness.wsUrl, token: 42})", "TypeError", "token must be a string"),
    ("new harness.sdk.PresenceClient({url: harness.wsUrl, token: 't', status: 'offline'})", "PresenceError", "status must be one of"),
    ("new harness.sdk.PresenceClient({url: harness.wsUrl, token: 't', priority: 200})", "PresenceError", "-128 to 127"),
    ("new harness.sdk.PresenceClient({url: harness.wsUrl, token: 't', capabilities: 'voice'})", "TypeError", "array of names"),
    ("new harness.sdk.PresenceClient({url: harness.wsUrl, token: 't', reconnect: {initial: 2, max: 1}})", "PresenceError", "reconnect.max"),
    ("new harness.sdk.PresenceClient({url: harness.wsUrl, token: 't', stauts: 'busy'})", "TypeError", "unknown option 'stauts'"),
    ("new harness.sdk.PresenceClient({url: harness.wsUrl, token: 't', resume: 'SE1'})", "PresenceError", "session id"),
]

_BAD_CALLS = [
    ("c.setPresence({status: 'offline'})", "PresenceError", "status must be one of available, away, busy, dnd"),
    ("c.setPresence({text: 'x'.repeat(257)})", "PresenceError", "at most 256"),
    ("c.setPresence({priority: 128})", "PresenceError", "-128 to 127"),
    ("c.setPresence({priority: 1.5})", "TypeError", "priority must be an integer"),
    ("c.setPresence({capabilities: ['Voice']})", "PresenceError", "capability \"Voice\""),
    ("c.setPresence({capabilities: Array.from({length: 17}, (_, i) => 'c' + i)})", "PresenceError", "at most 16"),
    ("c.setPresence({})", "PresenceError", "at least one of"),
    ("c.setPresence('busy')", "TypeError", "takes an object"),
    ("c.subscribe('bob')", "TypeError", "array of identities"),
    ("c.subscribe([])", "PresenceError", "at least one identity"),
    ("c.subscribe(['client:bob'])", "PresenceError", "must not start with 'client:'"),
    ("c.subscribe(['-bob'])", "PresenceError", "starts with a letter or digit"),
    ("c.subscribe(['b'.repeat(122)])", "PresenceError", "at most 121"),
    ("c.subscribe([42])", "TypeError", "must be a string"),
    ("c.unsubscribe(['bob carol'])", "PresenceError", "only letters, digits"),
    ("c.call('not valid!')", "PresenceError", "is not \"client:<identity>\""),
    ("c.call(15551230001)", "TypeError", "to must be a string"),
    ("c.call('client:' + 'x'.repeat(130))", "PresenceError", "longer than 128"),
    ("c.call('bob', {n: 1})", "TypeError", "params[\"n\"] must be a string"),
    ("c.call('bob', Object.fromEntries(Array.from({length: 21}, (_, i) => ['p' + i, 'v'])))", "PresenceError", "at most 20"),
    ("c.call('bob', {['n'.repeat(65)]: 'v'})", "PresenceError", "1 to 64 characters"),
    ("c.call('bob', {n: 'v'.repeat(1025)})", "PresenceError", "longer than 1024"),
    ("c.on('presense', () => {})", "TypeError", "unknown event \"presense\""),
    ("c.on('presence', 'handler')", "TypeError", "must be a function"),
    ("c.presence('client:bob')", "PresenceError", "must not start with 'client:'"),
]


def test_bad_arguments_are_refused_before_anything_is_sent(new_page: PageFactory, dev_server: DevServer) -> None:
    page = sdk_page(new_page, dev_server)
    for expression, kind, words in _BAD_CONSTRUCTORS:
        err = page.evaluate(f"harness.attempt(() => {expression})")
        assert err is not None and err["name"] == kind and words in err["message"], (expression, err)
        if kind == "PresenceError":
            assert err["code"] == 0
    assert page.evaluate("harness.wire.opened") == 0

    make_client(page, "alice", [token(dev_server, "alice")])
    err = page.evaluate("harness.attempt(() => harness.clients.alice.setPresence({status: 'busy'}))")
    assert err["name"] == "PresenceError" and "connect() first" in err["message"]
    assert page.evaluate("harness.wire.opened") == 0

    connect(page, "alice")
    frames_before = len(sent(page))
    for expression, kind, words in _BAD_CALLS:
        err = page.evaluate(f"harness.attempt(async () => {{ const c = harness.clients.alice; await {expression}; }})")
        assert err is not None and err["name"] == kind and words in err["message"], (expression, err)
    assert len(sent(page)) == frames_before  # not one frame for any of them
    assert page.evaluate("harness.clients.alice.state") == "registered"

    # connectPeer checks its arguments too.
    err = page.evaluate("harness.attempt(() => harness.sdk.connectPeer({}, new RTCPeerConnection(), {initiator: true}))")
    assert err["name"] == "TypeError" and "must be a Call" in err["message"]

    page.evaluate("harness.clients.alice.close()")
    for expression in ("c.setPresence({status: 'busy'})", "c.subscribe(['bob'])", "c.call('bob')", "c.connect()"):
        err = page.evaluate(f"harness.attempt(async () => {{ const c = harness.clients.alice; await {expression}; }})")
        assert err["name"] == "PresenceError" and "closed" in err["message"], (expression, err)
    assert console_errors(page) == []


# -- heartbeats, stalls and reconnects (a server of their own) -----------------------------------------


def test_heartbeat_keeps_the_session_alive_from_a_worker_or_setinterval_under_csp(new_page: PageFactory, fast_server: DevServer) -> None:
    """Pings every `heartbeat` seconds keep the session past the idle timeout.
    Under the server's own page CSP (worker-src blob: allowed) they tick in a
    Blob Worker; where a CSP refuses that Worker, setInterval takes over."""
    # The server's page policy; frame-ancestors means nothing in a <meta> (and Chromium says so).
    policy = "; ".join(p for p in PAGE_HEADERS["Content-Security-Policy"].split("; ") if not p.startswith("frame-ancestors"))
    allowed = sdk_page(new_page, fast_server, csp=policy)
    refused = sdk_page(new_page, fast_server, csp=policy.replace("worker-src 'self' blob:", "worker-src 'none'"))
    assert refused is not allowed and "worker-src 'none'" in refused.evaluate("document.head.innerHTML")
    for page in (allowed, refused):
        make_client(page, "alice", [token(fast_server, "alice")])
        connect(page, "alice")
    for page in (allowed, refused):
        # 4 pings at 1 s apart: longer than the server's 3 s idle timeout.
        page.wait_for_function("() => harness.sent('ping').length >= 4", timeout=8000)
        assert page.evaluate("harness.clients.alice.state") == "registered"
        assert events(page, "alice", "state") == ["connecting", "registered"]
        assert page.evaluate("harness.wire.opened") == 1
    assert allowed.evaluate("harness.clients.alice.heartbeatClock") == "worker"
    assert refused.evaluate("harness.clients.alice.heartbeatClock") == "interval"
    assert console_errors(allowed) == []


def test_local_timer_renews_the_token_when_no_warning_comes(new_page: PageFactory, fast_server: DevServer) -> None:
    """The fallback for a token_expiring that does not come (this server
    warns only at expiry): the SDK renews at half the token's remaining life."""
    page = sdk_page(new_page, fast_server)
    make_client(page, "alice", [token(fast_server, "alice", ttl=4), token(fast_server, "alice")], use_function=True)
    info = connect(page, "alice")
    page.wait_for_function("() => harness.of('alice', 'token_updated').length === 1", timeout=WAIT)
    assert not any(f["type"] == "token_expiring" for f in page.evaluate("harness.wire.received"))
    [updated] = events(page, "alice", "token_updated")
    assert updated["expires"] > info["expires"] + 3000
    assert page.evaluate("harness.tokenCalls.alice") == 2
    assert page.evaluate("[harness.clients.alice.session, harness.wire.opened]") == [info["session"], 1]


def test_stalled_socket_is_closed_and_the_session_resumed(new_page: PageFactory, fast_server: DevServer) -> None:
    page = sdk_page(new_page, fast_server)
    make_client(page, "alice", [token(fast_server, "alice")], reconnect=FAST_RECONNECT)
    info = connect(page, "alice")
    assert fast_server.process.proc is not None
    pid = fast_server.process.proc.pid
    # A frozen server: the socket stays open but nothing comes back, as with
    # a sleeping laptop or a NAT that forgot the connection.
    os.kill(pid, signal.SIGSTOP)
    try:
        # A request sent into the silence: it fails when the socket is given up.
        page.evaluate("() => { harness.pending = harness.attempt(() => harness.clients.alice.setPresence({status: 'away'})); }")
        page.wait_for_function("() => harness.clients.alice.state === 'reconnecting'", timeout=6000)
        failed = page.evaluate("harness.pending")
    finally:
        os.kill(pid, signal.SIGCONT)
    assert failed["name"] == "PresenceError" and failed["code"] == 0 and failed["closeCode"] == 1006, failed
    assert "no frame from the server" in failed["message"]
    page.wait_for_function("() => harness.of('alice', 'registered').length === 2", timeout=WAIT)
    resumed = events(page, "alice", "registered")[1]
    assert resumed["resumed"] is True and resumed["session"] == info["session"]
    assert events(page, "alice", "state") == ["connecting", "registered", "reconnecting", "registered"]
    assert sent(page, "register")[-1]["resume"] == info["session"]


def test_reconnect_after_a_server_restart_keeps_subscriptions(new_page: PageFactory, fast_server: DevServer) -> None:
    alice = sdk_page(new_page, fast_server)
    bob = sdk_page(new_page, fast_server)
    make_client(alice, "alice", [token(fast_server, "alice")], reconnect=FAST_RECONNECT)
    make_client(bob, "bob", [token(fast_server, "bob")], reconnect=FAST_RECONNECT)
    connect(alice, "alice")
    connect(bob, "bob")
    alice.evaluate("harness.clients.alice.subscribe(['bob'])")

    _restart(fast_server)
    for page, name in ((alice, "alice"), (bob, "bob")):
        page.wait_for_function(f"() => harness.of('{name}', 'registered').length === 2", timeout=10000)
        assert "reconnecting" in events(page, name, "state")
        assert events(page, name, "closed") == []
        # The server said reconnect (and closed with 4012); the client came back on its own.
        assert any(f["type"] == "reconnect" for f in page.evaluate("harness.wire.received"))
    # Subscribed again on the new connection, without the app asking.
    assert [f["identities"] for f in sent(alice, "subscribe")] == [["bob"], ["bob"]]

    bob.evaluate("harness.clients.bob.setPresence({status: 'dnd', text: 'after the restart'})")
    alice.wait_for_function(
        "() => harness.clients.alice.presence('bob')?.text === 'after the restart'", timeout=WAIT
    )
    # Chromium logs each refused connection attempt while the server is down; nothing else.
    for page in (alice, bob):
        assert all("ERR_CONNECTION_REFUSED" in e for e in console_errors(page)), console_errors(page)
