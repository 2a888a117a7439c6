"""The Python SDK's calls and in-app messages against a real server.

No mocks: SDK clients talk to a real node over real sockets; the node fetches
its instructions from a real instruction server (answers built with the
official twilio library, signatures checked with its RequestValidator).
"""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator, Callable

import pytest
from twilio.twiml.messaging_response import MessagingResponse
from twilio.twiml.voice_response import Dial, VoiceResponse

from presence_client import (
    Call,
    CallError,
    CallState,
    Message,
    NotConnectedError,
    PresenceClient,
    PresenceError,
    RequestTimeoutError,
)
from protocol.errors import ErrorCode
from tests.helpers.signaling_env import ALICE_PHONE, BOB_PHONE, INGRESS, NUMBER, SignalingEnv, dial_client, eventually_async, signaling_env

# -- helpers ------------------------------------------------------------------------------


@pytest.fixture
async def env(tmp_path: Any) -> AsyncIterator[SignalingEnv]:
    async with signaling_env(str(tmp_path)) as running:
        yield running


class Recorder:
    """Collects what the SDK hands to callbacks."""

    def __init__(self) -> None:
        self.invites: list[Call] = []
        self.messages: list[Message] = []
        self.errors: list[Exception] = []

    def hooks(self) -> dict[str, Any]:
        return {"on_invite": self.invites.append, "on_message": self.messages.append, "on_error": self.errors.append}


@pytest.fixture
async def make_client(env: SignalingEnv) -> AsyncIterator[Callable[..., PresenceClient]]:
    """Builds SDK clients with tokens that may place and take calls; closes
    them all after the test, before the server stops."""
    made: list[PresenceClient] = []

    def make(identity: str, *, token: str | None = None, **options: Any) -> PresenceClient:
        client = PresenceClient(env.server.ws_url, token or env.token(identity), **options)
        made.append(client)
        return client

    yield make
    for client in made:
        await client.close()


async def connected(make: Callable[..., PresenceClient], identity: str, **options: Any) -> PresenceClient:
    client = make(identity, **options)
    await client.connect()
    return client


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.005)


def sdk_tasks() -> set[asyncio.Task[Any]]:
    """Tasks running SDK or websockets code (the server's own are left out)."""
    found = set()
    for task in asyncio.all_tasks():
        code = getattr(task.get_coro(), "cr_code", None)
        filename = code.co_filename if code is not None else ""
        if "presence_client" in filename or "websockets" in filename:
            found.add(task)
    return found


def in_app_reply(body: str, to: str = "client:alice") -> str:
    reply = MessagingResponse()
    reply.message(body, to=to)
    return str(reply)


# -- calls --------------------------------------------------------------------------------


async def test_alice_calls_bob_on_two_devices(env: SignalingEnv, make_client: Any) -> None:
    ins = env.ins
    ins.on("/voice", dial_client(ins, "bob", action="/after"))
    ins.on("/after", "<Response><Hangup/></Response>")
    phone_events = Recorder()
    bob_phone = await connected(make_client, "bob", **phone_events.hooks())
    bob_desk = await connected(make_client, "bob", encoding="msgpack")
    desk_calls = bob_desk.incoming_calls()
    alice_events = Recorder()
    alice = await connected(make_client, "alice", **alice_events.hooks())
    alice_signals: list[dict[str, Any]] = []
    alice_states: list[CallState] = []

    call = await alice.call(
        "client:bob", {"topic": "hello"}, on_signal=alice_signals.append, on_state=lambda c: alice_states.append(c.state)
    )
    assert call.direction == "outgoing" and call.remote == "client:bob" and call.from_ == "client:alice"
    assert call.sid.startswith("CA") and call.params == {"topic": "hello"} and alice.calls == (call,)
    (voice_req,) = await ins.wait_for("/voice")
    assert voice_req.params["CallSid"] == call.sid and voice_req.params["topic"] == "hello"

    desk_call = await desk_calls.get(timeout=5)
    await until(lambda: len(phone_events.invites) == 1)
    phone_call = phone_events.invites[0]
    for incoming in (phone_call, desk_call):
        assert incoming.direction == "incoming" and incoming.state is CallState.RINGING
        assert incoming.remote == "client:alice" and incoming.to == "client:bob" and incoming.parent_sid == call.sid
    assert phone_call.sid == desk_call.sid != call.sid  # both devices ring for the one child call

    with pytest.raises(CallError, match="not answered|in state"):
        await call.send_signal({"type": "offer"})  # not before the answer
    await phone_call.ringing()
    await until(lambda: call.state is CallState.RINGING)

    await desk_call.accept()
    assert desk_call.state is CallState.ANSWERED
    assert await phone_call.wait_ended(timeout=5) == "answered_elsewhere"
    with pytest.raises(CallError) as late:
        await phone_call.accept()
    assert late.value.end_reason == "answered_elsewhere"
    await call.wait_answered(timeout=5)
    assert call.state is CallState.ANSWERED

    offer = {"type": "offer", "sdp": "v=0 offer"}
    await call.send_signal(offer)
    desk_signals = desk_call.signals()
    assert await desk_signals.get(timeout=5) == offer
    answer = {"type": "answer", "sdp": "v=0 answer"}
    await desk_call.send_signal(answer)
    candidate = {"candidate": "candidate:1 1 udp 2122260223 192.0.2.1 54400 typ host", "sdpMid": "0"}
    await desk_call.send_signal(candidate)
    assert [await call.signals().get(timeout=5) for _ in range(2)] == [answer, candidate]
    assert alice_signals == [answer, candidate]

    await desk_call.hangup()
    assert desk_call.ended and desk_call.end_reason == "local_hangup"
    assert await call.wait_ended(timeout=5) == "remote_hangup"
    assert call.answered and not alice.calls and not bob_desk.calls
    assert alice_states == [CallState.RINGING, CallState.ANSWERED, CallState.COMPLETED]
    assert [p async for p in call.signals()] == []  # the stream ends with the call
    (after,) = await ins.wait_for("/after")
    assert after.params["DialCallStatus"] == "completed" and after.params["DialBridged"] == "true"
    assert (await env.call_record(desk_call.sid))["status"] == "completed"
    assert alice_events.errors == [] and phone_events.errors == []


async def test_caller_hangs_up_an_answered_call(env: SignalingEnv, make_client: Any) -> None:
    env.ins.on("/voice", dial_client(env.ins, "bob"))
    bob = await connected(make_client, "bob")
    incoming = bob.incoming_calls()
    alice = await connected(make_client, "alice")
    call = await alice.call("bob")  # a bare identity is a client too
    bob_call = await incoming.get(timeout=5)
    await bob_call.accept()
    await call.wait_answered(timeout=5)
    await call.hangup()
    assert call.end_reason == "local_hangup"
    assert await bob_call.wait_ended(timeout=5) == "remote_hangup"
    await call.hangup()  # again: nothing happens


async def test_reject_ends_the_callers_call(env: SignalingEnv, make_client: Any) -> None:
    env.ins.on("/voice", dial_client(env.ins, "bob"))
    bob_events = Recorder()
    await connected(make_client, "bob", **bob_events.hooks())
    alice = await connected(make_client, "alice")
    call = await alice.call("client:bob")
    await until(lambda: len(bob_events.invites) == 1)
    bob_call = bob_events.invites[0]
    await bob_call.reject(busy=True)
    assert bob_call.state is CallState.COMPLETED and bob_call.end_reason == "busy"
    with pytest.raises(CallError) as never:
        await call.wait_answered(timeout=5)
    # The server ends the caller's call with call_progress completed; its
    # reason is how the instructions ended (the Dial had no action, so the
    # document simply ran out).
    assert never.value.end_reason == call.end_reason == "instructions-ended"
    assert call.state is CallState.COMPLETED and not call.answered
    await bob_call.reject()  # ended already: nothing happens


async def test_caller_gives_up_while_it_rings(env: SignalingEnv, make_client: Any) -> None:
    env.ins.on("/voice", dial_client(env.ins, "bob"))
    bob = await connected(make_client, "bob")
    incoming = bob.incoming_calls()
    alice = await connected(make_client, "alice")
    call = await alice.call("client:bob")
    bob_call = await incoming.get(timeout=5)
    await call.hangup()
    assert await bob_call.wait_ended(timeout=5) == "caller_hangup"
    with pytest.raises(CallError, match="ended"):
        await bob_call.accept()


async def test_nobody_answers_in_time(env: SignalingEnv, make_client: Any) -> None:
    env.ins.on("/voice", dial_client(env.ins, "bob", timeout=10))
    bob = await connected(make_client, "bob")
    incoming = bob.incoming_calls()
    alice = await connected(make_client, "alice")
    call = await alice.call("client:bob")
    bob_call = await incoming.get(timeout=5)
    await env.server.advance(11)
    assert await bob_call.wait_ended(timeout=5) == "timeout"
    assert await call.wait_ended(timeout=5) == "instructions-ended"


async def test_time_limit_ends_the_call(env: SignalingEnv, make_client: Any) -> None:
    env.ins.on("/voice", '<Response><Dial timeLimit="5"><Client>bob</Client></Dial></Response>')
    bob = await connected(make_client, "bob")
    incoming = bob.incoming_calls()
    alice = await connected(make_client, "alice")
    call = await alice.call("client:bob")
    bob_call = await incoming.get(timeout=5)
    await bob_call.accept()
    await call.wait_answered(timeout=5)
    await asyncio.sleep(0.02)  # the bridge's deadline is set from the clock as it starts
    await env.server.advance(6)
    assert await bob_call.wait_ended(timeout=5) == "time_limit"
    # The caller hears of it when its instructions end (the server does not
    # send the caller a hangup for the time limit).
    assert await call.wait_ended(timeout=5) in ("time_limit", "instructions-ended")


async def test_callee_connection_dropped_mid_call(env: SignalingEnv, make_client: Any) -> None:
    env.ins.on("/voice", dial_client(env.ins, "bob"))
    bob = await connected(make_client, "bob")
    incoming = bob.incoming_calls()
    alice = await connected(make_client, "alice")
    call = await alice.call("client:bob")
    bob_call = await incoming.get(timeout=5)
    await bob_call.accept()
    await call.wait_answered(timeout=5)

    assert bob._link is not None
    bob._link.abort("test: the network went away")
    # Calls do not survive a reconnect: bob's ends at once, alice's when the
    # server finds bob's leg gone.
    assert await bob_call.wait_ended(timeout=5) == "connection_lost"
    assert await call.wait_ended(timeout=5) == "connection_lost"
    with pytest.raises(CallError, match="ended"):
        await call.send_signal({"late": True})
    await until(lambda: bob.connected)  # bob's client reconnected; no call came back with it
    assert bob.calls == ()


async def test_closing_hangs_up_and_leaves_no_tasks(env: SignalingEnv, make_client: Any) -> None:
    env.ins.on("/voice", dial_client(env.ins, "bob"))
    bob = await connected(make_client, "bob")
    incoming = bob.incoming_calls()
    before = sdk_tasks()
    alice = await connected(make_client, "alice")
    messages = alice.messages()
    calls_stream = alice.incoming_calls()
    call = await alice.call("client:bob")
    bob_call = await incoming.get(timeout=5)
    await bob_call.accept()
    await call.wait_answered(timeout=5)
    await call.send_signal({"type": "offer"})
    assert sdk_tasks() > before

    await alice.close()
    assert call.end_reason == "client_closed"
    assert await bob_call.wait_ended(timeout=5) == "remote_hangup"  # told, not left to notice the drop
    assert messages.closed and calls_stream.closed
    assert [c async for c in calls_stream] == []
    assert sdk_tasks() <= before
    with pytest.raises(NotConnectedError):
        await alice.call("client:bob")
    assert alice.incoming_calls().closed and alice.messages().closed


async def test_a_call_created_after_call_gave_up_is_hung_up(env: SignalingEnv, make_client: Any) -> None:
    env.ins.on("/voice", dial_client(env.ins, "bob"))
    bob = await connected(make_client, "bob")
    incoming = bob.incoming_calls()
    alice = await connected(make_client, "alice", request_timeout=0.3)
    # Hold back alice's call_created past her request timeout.
    assert alice.session_id is not None
    conn = env.server.node.gateway.sessions[alice.session_id]
    real_send_wire = conn.send_wire

    def slow_send_wire(frame: dict[str, Any]) -> None:
        if frame.get("type") == "call_created":
            asyncio.get_running_loop().call_later(0.5, real_send_wire, frame)
        else:
            real_send_wire(frame)

    conn.send_wire = slow_send_wire
    with pytest.raises(RequestTimeoutError):
        await alice.call("client:bob")
    # Nobody holds that call: the client hangs it up when it is created, so
    # bob's device stops ringing at once rather than at the dial timeout.
    bob_call = await incoming.get(timeout=5)
    assert await bob_call.wait_ended(timeout=5) == "caller_hangup"
    assert alice.calls == () and alice.connected


async def test_placing_a_call_without_the_outgoing_grant(env: SignalingEnv, make_client: Any) -> None:
    token = env.server.token("alice", grants=env.grants("alice", outgoing=False))
    alice = await connected(make_client, "alice", token=token)
    with pytest.raises(PresenceError) as refused:
        await alice.call("client:bob")
    assert refused.value.code == ErrorCode.GRANT_MISSING.code
    assert alice.connected and alice.calls == ()


async def test_a_call_the_instructions_reject(env: SignalingEnv, make_client: Any) -> None:
    env.ins.on("/voice", "<Response><Reject reason='busy'/></Response>")
    alice = await connected(make_client, "alice")
    call = await alice.call("+15551230001")
    assert await call.wait_ended(timeout=5) == "busy"
    assert not call.answered


async def test_bad_arguments_raise_clear_errors(env: SignalingEnv, make_client: Any) -> None:
    env.ins.on("/voice", dial_client(env.ins, "bob"))
    alice = make_client("alice")
    with pytest.raises(NotConnectedError):
        await alice.call("client:bob")
    await alice.connect()
    for to, error in [(42, TypeError), ("client:bad name", ValueError), ("", ValueError), ("x" * 200, ValueError), ("+1", ValueError)]:
        with pytest.raises(error, match="to"):
            await alice.call(to)
    for params, error in [
        (["a"], TypeError),
        ({"a": 1}, TypeError),
        ({"": "x"}, ValueError),
        ({"a": "x" * 1025}, ValueError),
        ({f"p{i}": "x" for i in range(21)}, ValueError),
    ]:
        with pytest.raises(error, match="params"):
            await alice.call("client:bob", params)
    with pytest.raises(TypeError, match="on_signal"):
        await alice.call("client:bob", on_signal="print")
    for bad in (0, -1, True, "5"):
        with pytest.raises(ValueError, match="max_pending"):
            alice.incoming_calls(max_pending=bad)
        with pytest.raises(ValueError, match="max_pending"):
            alice.messages(max_pending=bad)
    with pytest.raises(TypeError, match="on_invite"):
        PresenceClient(env.server.ws_url, "t", on_invite=42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="on_message"):
        PresenceClient(env.server.ws_url, "t", on_message="x")  # type: ignore[arg-type]

    bob = await connected(make_client, "bob")
    incoming = bob.incoming_calls()
    call = await alice.call("client:bob")
    bob_call = await incoming.get(timeout=5)
    with pytest.raises(CallError, match="incoming"):
        await call.accept()
    with pytest.raises(CallError, match="incoming"):
        await call.reject()
    with pytest.raises(TypeError, match="busy"):
        await bob_call.reject(busy="yes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="on_signal"):
        bob_call.on_signal = 3  # type: ignore[assignment]
    await bob_call.accept()
    await call.wait_answered(timeout=5)
    with pytest.raises(CallError, match="hangup"):
        await bob_call.reject()
    with pytest.raises(TypeError, match="payload"):
        await call.send_signal("v=0")
    with pytest.raises(TypeError, match="keys"):
        await call.send_signal({1: "x"})
    with pytest.raises(ValueError, match="at most"):
        await call.send_signal({"sdp": "x" * 70_000})  # over the server's frame limit: refused here
    await call.send_signal({"sdp": "still connected"})
    assert await bob_call.signals().get(timeout=5) == {"sdp": "still connected"}
    assert alice.connected and bob.connected


async def test_invite_with_a_carrier_sdp(env: SignalingEnv, make_client: Any) -> None:
    response = VoiceResponse()
    dial = Dial()
    dial.number(BOB_PHONE)
    response.append(dial)
    env.ins.on("/inbound", str(response))
    bob = await connected(make_client, "bob")
    incoming = bob.incoming_calls()
    status, record = await env.rest("POST", "/v1/Ingress/outbox/Voice", {"From": "+15557770000", "To": NUMBER, "Sdp": "v=0 carrier"}, auth=INGRESS)
    assert status == 201
    call = await incoming.get(timeout=5)
    assert call.remote == "+15557770000" and call.sdp == "v=0 carrier" and call.parent_sid == record["sid"]
    await call.reject()
    assert call.end_reason == "rejected"


# -- in-app messages -------------------------------------------------------------------------


async def test_in_app_message_is_delivered_and_acked(env: SignalingEnv, make_client: Any) -> None:
    env.ins.on("/sms", in_app_reply("From the carrier: hello"))
    alice = await connected(make_client, "alice")
    messages = alice.messages()
    inbound = await env.inbound_sms("hello")
    message = await messages.get(timeout=5)
    assert message.body == "From the carrier: hello" and message.from_ == NUMBER and message.to == "client:alice"
    assert message.sid != inbound["sid"] and message.media == ()

    async def delivered() -> dict[str, Any] | None:
        record = await env.message_record(message.sid)
        return record if record["status"] == "delivered" else None

    record = await eventually_async(delivered)
    assert record["channel"] == "app"
    assert await env.outbox() == []


async def test_duplicate_message_is_delivered_once_and_acked_twice(env: SignalingEnv, make_client: Any, monkeypatch: Any) -> None:
    # Every ack that reaches the messaging node (the gateway forwards it there).
    acks: list[str] = []
    mailbox = env.server.node.mailbox
    real_on_ack = mailbox._handlers["ack"]

    def on_ack(msg: dict[str, Any]) -> None:
        acks.append(msg["sid"])
        real_on_ack(msg)

    monkeypatch.setitem(mailbox._handlers, "ack", on_ack)

    env.ins.on("/sms", in_app_reply("once"))
    events = Recorder()
    alice = await connected(make_client, "alice", **events.hooks())
    await env.inbound_sms()
    await until(lambda: len(events.messages) == 1 and len(acks) == 1)
    (message,) = events.messages
    assert acks == [message.sid]

    # The server delivers at least once: the same frame again, as a redelivery would.
    assert alice.session_id is not None
    conn = env.server.node.gateway.sessions[alice.session_id]
    conn.send_wire({"type": "message", "sid": message.sid, "from": message.from_, "to": message.to, "body": message.body, "media": []})
    await until(lambda: len(acks) == 2)
    assert acks == [message.sid, message.sid]
    await asyncio.sleep(0.05)
    assert events.messages == [message]  # handed to the app once
    assert (await env.message_record(message.sid))["status"] == "delivered"
    assert events.errors == []


async def test_async_callback_acks_once_it_completes(env: SignalingEnv, make_client: Any) -> None:
    env.ins.on("/sms", in_app_reply("handle me"))
    seen: list[Message] = []
    release = asyncio.Event()

    async def slow(message: Message) -> None:
        seen.append(message)
        await release.wait()

    await connected(make_client, "alice", on_message=slow)
    await env.inbound_sms()
    await until(lambda: len(seen) == 1)
    await asyncio.sleep(0.05)
    assert (await env.message_record(seen[0].sid))["status"] == "sending"  # not acked while the callback runs
    release.set()
    await eventually_async(lambda: _status_is(env, seen[0].sid, "delivered"))


async def test_a_failing_callback_does_not_ack(env: SignalingEnv, make_client: Any) -> None:
    # A callback that raises has not handled the message: no ack, so the
    # server sends it by SMS (to alice's phone) after its ack timeout.
    env.ins.on("/sms", in_app_reply("try me"))
    errors: list[Exception] = []

    def broken(message: Message) -> None:
        raise RuntimeError("boom")

    await connected(make_client, "alice", on_message=broken, on_error=errors.append)
    await env.inbound_sms()
    await until(lambda: len(errors) == 1)
    assert isinstance(errors[0], RuntimeError)
    (sms,) = await eventually_async(lambda: _advance_then_outbox(env))
    assert sms["body"] == "try me" and sms["to"] == ALICE_PHONE


async def _status_is(env: SignalingEnv, sid: str, status: str) -> bool:
    record = await env.message_record(sid)
    return bool(record["status"] == status)


async def _advance_then_outbox(env: SignalingEnv) -> list[dict[str, Any]]:
    await env.server.advance(11)  # past the 10 s ack timeout
    return await env.outbox()


async def test_message_with_no_consumer_is_not_acked(env: SignalingEnv, make_client: Any) -> None:
    env.ins.on("/sms", in_app_reply("anyone there?"))
    await connected(make_client, "alice")  # no on_message, no messages() stream
    await env.inbound_sms()
    (sms,) = await eventually_async(lambda: _advance_then_outbox(env))
    assert sms["body"] == "anyone there?" and sms["to"] == ALICE_PHONE
