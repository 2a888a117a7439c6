"""The signaling node end to end: a real instruction server (answers built with
the official twilio library, every request checked with its RequestValidator),
real WebSocket clients, the outbox provider."""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator

import aiohttp
import pytest
from twilio.twiml.messaging_response import MessagingResponse
from twilio.twiml.voice_response import Dial, VoiceResponse

from protocol.addresses import new_sid
from protocol.errors import ErrorCode
from tests.helpers.instructions import InstructionServer
from tests.helpers.servers import TestAccount, start_server
from tests.helpers.signaling_env import ALICE_PHONE, BOB_PHONE, INGRESS, NUMBER, SignalingEnv, dial_client, signaling_env
from tests.helpers.wsclient import RawClient

Env = SignalingEnv


@pytest.fixture
async def env(tmp_path: Any) -> AsyncIterator[Env]:
    async with signaling_env(str(tmp_path)) as running:
        yield running


async def settle(rounds: int = 50) -> None:
    for _ in range(rounds):
        await asyncio.sleep(0.005)


async def test_alice_calls_bob_on_two_devices(env: Env) -> None:
    ins = env.ins
    ins.on("/voice", dial_client(ins, "bob", action="/after"))
    ins.on("/after", "<Response><Hangup/></Response>")
    bob_phone = await env.client("bob")
    bob_desk = await env.client("bob", encoding="msgpack")
    alice = await env.client("alice")

    await alice.send({"type": "call", "to": "client:bob", "params": {"topic": "hello"}, "id": "c1"})
    created = await alice.recv_type("call_created")
    call_sid = created["call"]
    (voice_req,) = await ins.wait_for("/voice")
    assert voice_req.params["From"] == "client:alice" and voice_req.params["To"] == "client:bob"
    assert voice_req.params["Direction"] == "inbound" and voice_req.params["topic"] == "hello"
    assert voice_req.params["CallSid"] == call_sid and voice_req.params["AccountSid"] == env.account.sid

    invite_1 = await bob_phone.recv_type("invite")
    invite_2 = await bob_desk.recv_type("invite")
    assert invite_1["from"] == "client:alice" and invite_1["parent_call"] == call_sid
    assert invite_1["call"] == invite_2["call"]
    child = invite_1["call"]

    await bob_phone.send({"type": "ringing", "call": child})
    assert (await alice.recv_type("call_progress"))["status"] == "ringing"
    await bob_desk.send({"type": "accept", "call": child, "id": "a"})
    assert await bob_desk.recv_type("ok") == {"type": "ok", "id": "a"}
    cancel = await bob_phone.recv_type("cancel")
    assert cancel == {"type": "cancel", "call": child, "reason": "answered_elsewhere"}
    assert (await alice.recv_type("call_progress"))["status"] == "answered"

    # Late accept on the other device: answered elsewhere.
    await bob_phone.send({"type": "accept", "call": child, "id": "late"})
    late = await bob_phone.recv_type("error")
    assert late["code"] == ErrorCode.CALL_ANSWERED_ELSEWHERE.code and late["id"] == "late"

    offer = {"type": "offer", "sdp": "v=0 offer"}
    await alice.send({"type": "signal", "call": call_sid, "payload": offer})
    assert (await bob_desk.recv_type("signal")) == {"type": "signal", "call": child, "payload": offer}
    answer = {"type": "answer", "sdp": "v=0 answer"}
    await bob_desk.send({"type": "signal", "call": child, "payload": answer})
    assert (await alice.recv_type("signal"))["payload"] == answer
    candidate = {"candidate": "candidate:1 1 udp 2122260223 192.0.2.1 54400 typ host", "sdpMid": "0"}
    await alice.send({"type": "signal", "call": call_sid, "payload": candidate})
    assert (await bob_desk.recv_type("signal"))["payload"] == candidate
    await bob_desk.send({"type": "signal", "call": child, "payload": candidate})
    assert (await alice.recv_type("signal"))["payload"] == candidate

    await env.server.advance(42)  # the call lasts 42 s
    await bob_desk.send({"type": "hangup", "call": child})
    assert (await alice.recv_type("hangup"))["reason"] == "remote_hangup"
    (after,) = await ins.wait_for("/after")
    assert after.params["DialCallStatus"] == "completed" and after.params["DialBridged"] == "true"
    assert after.params["DialCallSid"] == child and after.params["DialCallDuration"] == "42"
    done = await alice.recv_type("call_progress")
    assert done["status"] == "completed"

    status, parent = await env.rest("GET", f"/2010-04-01/Accounts/{env.account.sid}/Calls/{call_sid}.json")
    assert status == 200 and parent["status"] == "completed" and parent["direction"] == "inbound"
    status, leg = await env.rest("GET", f"/2010-04-01/Accounts/{env.account.sid}/Calls/{child}.json")
    assert leg["parent_call_sid"] == call_sid and leg["status"] == "completed" and leg["duration"] == "42"


async def test_bob_absent_gets_a_missed_call_sms(env: Env) -> None:
    env.ins.on("/voice", dial_client(env.ins, "bob"))
    alice = await env.client("alice")
    await alice.send({"type": "call", "to": "client:bob"})
    call_sid = (await alice.recv_type("call_created"))["call"]
    assert (await alice.recv_type("call_progress"))["status"] == "completed"
    for _ in range(100):
        if await env.outbox():
            break
        await asyncio.sleep(0.01)
    (sms,) = await env.outbox()
    assert sms["to"] == BOB_PHONE and sms["body"] == "Missed call from client:alice" and sms["from"] == NUMBER
    status, page = await env.rest("GET", f"/2010-04-01/Accounts/{env.account.sid}/Messages.json?To={BOB_PHONE.replace('+', '%2B')}")
    (record,) = page["messages"]
    assert record["fallback_reason"] == "absent" and record["related_call_sid"] == call_sid and record["direction"] == "outbound-call"


async def test_bob_rejects_action_sees_busy_and_its_message_runs(env: Env) -> None:
    ins = env.ins
    ins.on("/voice", dial_client(ins, "bob", action="/after"))
    sorry = MessagingResponse()
    sorry.message("Bob is busy, call back later", to="+15559990000")
    ins.on("/after", str(sorry))
    bob = await env.client("bob")
    alice = await env.client("alice")
    await alice.send({"type": "call", "to": "client:bob"})
    invite = await bob.recv_type("invite")
    await bob.send({"type": "reject", "call": invite["call"], "reason": "busy", "id": 1})
    assert (await bob.recv_type("ok"))["id"] == 1
    (after,) = await ins.wait_for("/after")
    assert after.params["DialCallStatus"] == "busy" and after.params["DialBridged"] == "false"
    assert (await alice.recv_type("call_progress"))["status"] == "completed"
    for _ in range(100):
        if await env.outbox():
            break
        await asyncio.sleep(0.01)
    (sms,) = await env.outbox()
    assert sms["to"] == "+15559990000" and sms["body"] == "Bob is busy, call back later"


async def test_nobody_answers_in_time(env: Env) -> None:
    env.ins.on("/voice", dial_client(env.ins, "bob", action="/after", timeout=10))
    env.ins.on("/after", "<Response/>")
    bob = await env.client("bob")
    alice = await env.client("alice")
    await alice.send({"type": "call", "to": "client:bob"})
    invite = await bob.recv_type("invite")
    await env.server.advance(11)
    assert (await bob.recv_type("cancel")) == {"type": "cancel", "call": invite["call"], "reason": "timeout"}
    (after,) = await env.ins.wait_for("/after")
    assert after.params["DialCallStatus"] == "no-answer"


async def test_inbound_sms_reaches_alice_in_app_and_is_acked(env: Env) -> None:
    reply = MessagingResponse()
    reply.message("From the carrier: hello", to="client:alice")
    env.ins.on("/sms", str(reply))
    alice = await env.client("alice")
    status, inbound = await env.rest("POST", "/v1/Ingress/outbox/Messages", {"From": "+15557770000", "To": NUMBER, "Body": "hello"}, auth=INGRESS)
    assert status == 201 and inbound["direction"] == "inbound" and inbound["status"] == "received"
    (sms_req,) = await env.ins.wait_for("/sms")
    assert sms_req.params["Body"] == "hello" and sms_req.params["MessageSid"] == inbound["sid"]
    message = await alice.recv_type("message")
    assert message["body"] == "From the carrier: hello" and message["from"] == NUMBER and message["to"] == "client:alice"
    await alice.send({"type": "ack", "sid": message["sid"], "id": "k"})
    assert (await alice.recv_type("ok"))["id"] == "k"
    for _ in range(100):
        status, record = await env.rest("GET", f"/2010-04-01/Accounts/{env.account.sid}/Messages/{message['sid']}.json")
        if record["status"] == "delivered":
            break
        await asyncio.sleep(0.01)
    assert record["status"] == "delivered" and record["channel"] == "app"
    assert await env.outbox() == []


async def test_alice_offline_gets_the_sms_on_her_phone(env: Env) -> None:
    reply = MessagingResponse()
    reply.message("You have mail", to="client:alice")
    env.ins.on("/sms", str(reply))
    status, _ = await env.rest("POST", "/v1/Ingress/outbox/Messages", {"From": "+15557770000", "To": NUMBER, "Body": "x"}, auth=INGRESS)
    assert status == 201
    for _ in range(200):
        if await env.outbox():
            break
        await asyncio.sleep(0.01)
    (sms,) = await env.outbox()
    assert sms["to"] == ALICE_PHONE and sms["body"] == "You have mail"
    status, page = await env.rest("GET", f"/2010-04-01/Accounts/{env.account.sid}/Messages.json?To={ALICE_PHONE.replace('+', '%2B')}")
    assert page["messages"][0]["fallback_reason"] == "absent"


async def test_unacked_in_app_message_falls_back_to_sms(env: Env) -> None:
    reply = MessagingResponse()
    reply.message("Are you there?", to="client:alice")
    env.ins.on("/sms", str(reply))
    alice = await env.client("alice")
    await env.rest("POST", "/v1/Ingress/outbox/Messages", {"From": "+15557770000", "To": NUMBER, "Body": "x"}, auth=INGRESS)
    message = await alice.recv_type("message")
    await env.server.advance(11)  # past the 10 s ack timeout, no ack
    for _ in range(200):
        if await env.outbox():
            break
        await asyncio.sleep(0.01)
    (sms,) = await env.outbox()
    assert sms["to"] == ALICE_PHONE and sms["body"] == "Are you there?"
    status, record = await env.rest("GET", f"/2010-04-01/Accounts/{env.account.sid}/Messages/{message['sid']}.json")
    assert record["fallback_reason"] == "not-acked" and record["channel"] == "sms"


async def test_instruction_url_down_uses_the_fallback_url(env: Env) -> None:
    from aiohttp import web

    env.ins.on("/voice", lambda params: web.Response(status=500, text="boom"))
    env.ins.on("/voice-fallback", dial_client(env.ins, "bob"))
    bob = await env.client("bob")
    alice = await env.client("alice")
    await alice.send({"type": "call", "to": "client:bob"})
    invite = await bob.recv_type("invite")
    (fallback,) = await env.ins.wait_for("/voice-fallback")
    assert fallback.params["ErrorCode"] == "11200" and fallback.params["ErrorUrl"] == env.ins.url("/voice")
    await bob.send({"type": "reject", "call": invite["call"]})
    assert (await alice.recv_type("call_progress"))["status"] == "completed"


@pytest.mark.parametrize(
    ("answer", "code"),
    [
        ("<html><body>Not TwiML</body></html>", 12102),  # well-formed, but not <Response>
        ("<html><body>Not TwiML<br></body></html>", 12100),  # not even XML
        ("<Response><Dance/></Response>", 12200),
        ("<Response><Dial>" + "<Client>bob</Client>" * 11 + "</Dial></Response>", 12200),
        ("<Response><Dial timeout='-5'><Client>bob</Client></Dial></Response>", 12200),
        ('<?xml version="1.0"?><!DOCTYPE r [<!ENTITY e SYSTEM "file:///etc/passwd">]><Response><Say>&e;</Say></Response>', 12100),
    ],
)
async def test_bad_instructions_end_the_call_with_their_error(env: Env, answer: str, code: int) -> None:
    env.ins.on("/voice", answer)
    env.ins.on("/voice-fallback", lambda params: __import__("aiohttp").web.Response(status=503))
    alice = await env.client("alice")
    await alice.send({"type": "call", "to": "client:bob"})
    call_sid = (await alice.recv_type("call_created"))["call"]
    done = await alice.recv_type("call_progress")
    assert done["status"] == "completed" and done["reason"] == "failed"
    status, record = await env.rest("GET", f"/2010-04-01/Accounts/{env.account.sid}/Calls/{call_sid}.json")
    assert record["status"] == "failed" and record["error_code"] == code


async def test_redirect_loops_are_bounded(env: Env) -> None:
    env.ins.on("/voice", f"<Response><Redirect>{env.ins.url('/voice')}</Redirect></Response>")
    alice = await env.client("alice")
    await alice.send({"type": "call", "to": "client:bob"})
    call_sid = (await alice.recv_type("call_created"))["call"]
    assert (await alice.recv_type("call_progress", timeout=10))["reason"] == "failed"
    assert len([r for r in env.ins.received if r.path == "/voice"]) == 11  # the first fetch and 10 redirects
    _, record = await env.rest("GET", f"/2010-04-01/Accounts/{env.account.sid}/Calls/{call_sid}.json")
    assert record["error_code"] == 11215


async def test_call_frames_for_calls_one_was_never_part_of(env: Env) -> None:
    env.ins.on("/voice", dial_client(env.ins, "bob"))
    bob = await env.client("bob")
    alice = await env.client("alice")
    await alice.send({"type": "call", "to": "client:bob"})
    invite = await bob.recv_type("invite")
    # carol of the same account, never invited; eve of another account.
    carol = await env.client("carol")
    eve = await RawClient.open(env.server.ws_url)
    await eve.register(env.server.token("eve", account=env.server.accounts[1]))
    for who in (carol, eve):
        for frame in (
            {"type": "accept", "call": invite["call"], "id": 1},
            {"type": "signal", "call": invite["call"], "payload": {"sdp": "x"}, "id": 2},
            {"type": "hangup", "call": invite["call"], "id": 3},
        ):
            await who.send(frame)
            err = await who.recv_type("error")
            assert err["code"] == ErrorCode.CALL_NOT_FOUND.code and err["id"] == frame["id"]
    await bob.send({"type": "signal", "call": invite["call"], "payload": {"sdp": "early"}, "id": 4})
    err = await bob.recv_type("error")
    assert err["code"] == ErrorCode.CALL_STATE_INVALID.code


async def test_placing_a_call_needs_the_outgoing_grant(env: Env) -> None:
    client = await RawClient.open(env.server.ws_url)
    await client.register(env.server.token("alice"))  # default grants: no outgoing application
    await client.send({"type": "call", "to": "client:bob", "id": 1})
    err = await client.recv_type("error")
    assert err["code"] == ErrorCode.GRANT_MISSING.code


async def test_voice_capability_needs_the_incoming_grant(env: Env) -> None:
    client = await RawClient.open(env.server.ws_url)
    token = env.server.token("alice", grants={"identity": "alice", "presence": {"publish": True}})
    err = await client.register(token, capabilities=["voice"])
    assert err["code"] == ErrorCode.GRANT_MISSING.code


async def test_a_callee_that_drops_mid_call_ends_it_for_the_caller(env: Env) -> None:
    env.ins.on("/voice", dial_client(env.ins, "bob"))
    bob = await env.client("bob")
    alice = await env.client("alice")
    await alice.send({"type": "call", "to": "client:bob"})
    invite = await bob.recv_type("invite")
    await bob.send({"type": "accept", "call": invite["call"]})
    assert (await alice.recv_type("call_progress"))["status"] == "answered"
    bob.ws.transport.abort()
    notice = await alice.recv_type("hangup")
    assert notice["reason"] == "connection_lost"
    assert (await alice.recv_type("call_progress"))["status"] == "completed"


async def test_rest_created_call_rings_then_runs_its_url(env: Env) -> None:
    env.ins.on("/rest", "<Response><Pause length='1'/></Response>")
    hook = env.ins.on("/status", "")
    bob = await env.client("bob")
    status, call = await env.rest(
        "POST", f"/2010-04-01/Accounts/{env.account.sid}/Calls.json",
        {"To": "client:bob", "From": NUMBER, "Url": env.ins.url("/rest"), "StatusCallback": hook, "StatusCallbackEvent": "answered completed"},
    )
    assert status == 201 and call["direction"] == "outbound-api"
    invite = await bob.recv_type("invite")
    assert invite["call"] == call["sid"] and invite["from"] == NUMBER
    await bob.send({"type": "accept", "call": call["sid"]})
    (rest_req,) = await env.ins.wait_for("/rest")
    assert rest_req.params["CallStatus"] == "in-progress" and rest_req.params["Direction"] == "outbound-api"
    await settle()
    await env.server.advance(2)
    statuses = await env.ins.wait_for("/status", 2)
    assert [r.params["CallStatus"] for r in statuses] == ["in-progress", "completed"]


async def test_rest_call_bad_input(env: Env) -> None:
    base = f"/2010-04-01/Accounts/{env.account.sid}/Calls.json"
    for data, names in [
        ({"From": NUMBER, "Url": env.ins.url("/x")}, "To"),
        ({"To": "client:bad name", "From": NUMBER, "Url": env.ins.url("/x")}, "To"),
        ({"To": "client:bob", "Url": env.ins.url("/x")}, "From"),
        ({"To": "client:bob", "From": NUMBER}, "Url"),
        ({"To": "client:bob", "From": NUMBER, "Url": "ftp://x"}, "Url"),
        ({"To": "client:bob", "From": NUMBER, "Url": env.ins.url("/x"), "Timeout": "-1"}, "Timeout"),
        ({"To": "client:bob", "From": NUMBER, "ApplicationSid": new_sid("AP")}, "ApplicationSid"),
        ({"To": "client:bob", "From": NUMBER, "Url": env.ins.url("/x"), "StatusCallbackEvent": "exploded"}, "StatusCallbackEvent"),
    ]:
        status, body = await env.rest("POST", base, data)
        assert status == 400 and names in body["message"], (data, body)
    other = env.server.accounts[1]
    status, _ = await env.rest("POST", base, {"To": "client:bob", "From": NUMBER, "Url": env.ins.url("/x")}, auth=(other.sid, other.auth_token))
    assert status == 404
    status, _ = await env.rest("GET", f"/2010-04-01/Accounts/{env.account.sid}/Calls/{new_sid('CA')}.json")
    assert status == 404


async def test_ingress_refusals(env: Env) -> None:
    status, body = await env.rest("POST", "/v1/Ingress/outbox/Voice", {"From": "+15557770000", "To": "+15550009999"}, auth=INGRESS)
    assert status == 404 and body["code"] == ErrorCode.NUMBER_UNKNOWN.code
    status, body = await env.rest("POST", "/v1/Ingress/outbox/Voice", {"From": "+15557770000", "To": NUMBER}, auth=("carrier", "wrong-password-here"))
    assert status == 401
    status, body = await env.rest("POST", "/v1/Ingress/nope/Voice", {"From": "+15557770000", "To": NUMBER}, auth=INGRESS)
    assert status == 404 and body["code"] == ErrorCode.PROVIDER_UNKNOWN.code
    status, body = await env.rest("POST", "/v1/Ingress/outbox/Messages", {"From": "+15557770000", "To": "5550001111", "Body": "x"}, auth=INGRESS)
    assert status == 400 and "To" in body["message"]


async def test_inbound_carrier_call_rings_the_client_of_a_number(env: Env) -> None:
    response = VoiceResponse()
    dial = Dial()
    dial.number(BOB_PHONE)  # bob's phone: rings bob's app when he is present
    response.append(dial)
    env.ins.on("/inbound", str(response))
    bob = await env.client("bob")
    status, call = await env.rest("POST", "/v1/Ingress/outbox/Voice", {"From": "+15557770000", "To": NUMBER, "Sdp": "v=0 carrier"}, auth=INGRESS)
    assert status == 201
    invite = await bob.recv_type("invite")
    assert invite["from"] == "+15557770000" and invite["to"] == "client:bob" and invite["sdp"] == "v=0 carrier"
    assert invite["parent_call"] == call["sid"]


async def test_client_leg_and_message_status_callbacks(env: Env) -> None:
    ins = env.ins
    leg_hook = ins.on("/leg-status", "")
    msg_hook = ins.on("/msg-status", "")
    ins.on(
        "/voice",
        f'<Response><Dial action="{ins.url("/after")}"><Client statusCallback="{leg_hook}" statusCallbackEvent="ringing answered completed">bob</Client></Dial></Response>',
    )
    ins.on("/after", f'<Response><Message to="+15559990000" statusCallback="{msg_hook}">bye</Message></Response>')
    bob = await env.client("bob")
    alice = await env.client("alice")
    await alice.send({"type": "call", "to": "client:bob"})
    invite = await bob.recv_type("invite")
    await bob.send({"type": "ringing", "call": invite["call"]})
    await bob.send({"type": "accept", "call": invite["call"]})
    await alice.recv_type("call_progress")  # ringing
    await alice.recv_type("call_progress")  # answered
    await bob.send({"type": "hangup", "call": invite["call"]})
    legs = await ins.wait_for("/leg-status", 3)
    assert [r.params["CallStatus"] for r in legs] == ["ringing", "in-progress", "completed"]
    assert all(r.params["CallSid"] == invite["call"] and r.params["ParentCallSid"] for r in legs)
    (msg,) = await ins.wait_for("/msg-status")
    assert msg.params["MessageStatus"] == "sent" and msg.params["To"] == "+15559990000"


async def test_a_dialled_legs_initiated_callback_comes_with_its_creation(env: Env) -> None:
    # The child call is stored already initiated (one write, not two): its
    # 'initiated' callback still comes, first, and the record says so.
    leg_hook = env.ins.on("/leg-status", "")
    env.ins.on(
        "/voice",
        f'<Response><Dial><Client statusCallback="{leg_hook}" statusCallbackEvent="initiated ringing answered completed">bob</Client></Dial></Response>',
    )
    bob = await env.client("bob")
    alice = await env.client("alice")
    await alice.send({"type": "call", "to": "client:bob"})
    invite = await bob.recv_type("invite")
    await bob.send({"type": "reject", "call": invite["call"]})
    legs = await env.ins.wait_for("/leg-status", 2)
    assert [r.params["CallStatus"] for r in legs] == ["initiated", "busy"]
    assert all(r.params["CallSid"] == invite["call"] for r in legs)
    status, child = await env.rest("GET", f"/2010-04-01/Accounts/{env.account.sid}/Calls/{invite['call']}.json")
    assert status == 200 and child["status"] == "busy" and child["parent_call_sid"] == invite["parent_call"]


async def test_media_verbs_go_to_a_media_leg_or_are_skipped_with_a_warning(env: Env) -> None:
    env.ins.on("/voice", "<Response><Say>Hello there</Say><Play>https://example.com/a.mp3</Play><Hangup/></Response>")
    plain = await env.client("alice", capabilities=["voice"])
    await plain.send({"type": "call", "to": "client:bob"})
    call_sid = (await plain.recv_type("call_created"))["call"]
    warning = await plain.recv_type("call_warning")
    assert warning["call"] == call_sid and warning["code"] == 13000 and "<Say>" in warning["message"]
    assert (await plain.recv_type("call_warning"))["code"] == 13000  # <Play> too
    assert (await plain.recv_type("call_progress"))["reason"] == "hangup"

    player = await env.client("carol", capabilities=["voice", "media"])
    await player.send({"type": "call", "to": "client:bob"})
    await player.recv_type("call_created")
    media = await player.recv_type("call_media")
    assert media["verb"] == "Say" and media["attributes"]["text"] == "Hello there"
    assert (await player.recv_type("call_media"))["verb"] == "Play"


async def test_calls_list_filters_and_pages(env: Env) -> None:
    env.ins.on("/voice", "<Response><Hangup/></Response>")
    alice = await env.client("alice")
    sids = []
    for _ in range(3):
        await alice.send({"type": "call", "to": "client:bob"})
        sids.append((await alice.recv_type("call_created"))["call"])
        await alice.recv_type("call_progress")
    base = f"/2010-04-01/Accounts/{env.account.sid}/Calls.json"
    status, page = await env.rest("GET", f"{base}?PageSize=2")
    assert status == 200 and [c["sid"] for c in page["calls"]] == sids[::-1][:2] and page["next_page_uri"]
    status, page = await env.rest("GET", f"{base}?PageSize=2&Page=1")
    assert [c["sid"] for c in page["calls"]] == [sids[0]] and page["next_page_uri"] is None
    status, page = await env.rest("GET", f"{base}?Status=completed&From=client:alice")
    assert len(page["calls"]) == 3
    status, body = await env.rest("GET", f"{base}?PageSize=0")
    assert status == 400 and "PageSize" in body["message"]
    other = env.server.accounts[1]
    status, page = await env.rest("GET", f"/2010-04-01/Accounts/{other.sid}/Calls.json", auth=(other.sid, other.auth_token))
    assert page["calls"] == []


async def test_media_become_links_when_no_provider_carries_mms(tmp_path: Any) -> None:
    ins = InstructionServer(auth_token="")
    await ins.start()
    account = TestAccount(extra={"phone_numbers": [{"number": NUMBER, "sms_url": ins.url("/sms")}]})
    ins.auth_token = account.auth_token
    reply = MessagingResponse()
    msg = reply.message("", to="+15559990000")
    msg.body("Your photo")
    msg.media("https://example.com/photo.jpg")
    ins.on("/sms", str(reply))
    server = await start_server(
        [account], security={"allow_private_urls": True}, engine={"data_dir": str(tmp_path)},
        providers=[{"name": "smsonly", "kind": "outbox", "capabilities": ["sms"], "inbound_username": INGRESS[0], "inbound_password": INGRESS[1]}],
    )
    try:
        env = Env(server, ins, "")
        status, _ = await env.rest("POST", "/v1/Ingress/smsonly/Messages", {"From": "+15557770000", "To": NUMBER, "Body": "x"}, auth=INGRESS)
        assert status == 201
        outbox = server.node.providers["smsonly"]
        for _ in range(200):
            entries = await outbox.entries(10)  # type: ignore[attr-defined]
            if entries:
                break
            await asyncio.sleep(0.01)
        (sms,) = entries
        assert sms["body"] == "Your photo\nhttps://example.com/photo.jpg" and not sms["media_urls"]
    finally:
        await server.node.stop()
        await ins.stop()


async def test_client_params_cannot_override_the_standard_ones(env: Env) -> None:
    env.ins.on("/voice", "<Response><Hangup/></Response>")
    alice = await env.client("alice")
    await alice.send({"type": "call", "to": "client:bob", "params": {"From": "client:mallory", "AccountSid": "AC" + "0" * 32, "mood": "ok"}})
    call_sid = (await alice.recv_type("call_created"))["call"]
    (req,) = await env.ins.wait_for("/voice")
    assert req.params["From"] == "client:alice" and req.params["AccountSid"] == env.account.sid and req.params["CallSid"] == call_sid
    assert req.params["mood"] == "ok" and req.params["CallStatus"] == "ringing"


async def test_reject_first_leaves_the_call_busy(env: Env) -> None:
    env.ins.on("/voice", '<Response><Reject reason="busy"/></Response>')
    alice = await env.client("alice")
    await alice.send({"type": "call", "to": "client:bob"})
    call_sid = (await alice.recv_type("call_created"))["call"]
    done = await alice.recv_type("call_progress")
    assert done["status"] == "completed" and done["reason"] == "busy"
    _, record = await env.rest("GET", f"/2010-04-01/Accounts/{env.account.sid}/Calls/{call_sid}.json")
    assert record["status"] == "busy"


async def test_caller_id_reaches_the_callee_and_absent_legs_end_at_once(env: Env) -> None:
    env.ins.on("/voice", f'<Response><Dial callerId="{NUMBER}"><Client>bob</Client><Client>carol</Client></Dial></Response>')
    bob = await env.client("bob")
    alice = await env.client("alice")
    await alice.send({"type": "call", "to": "client:bob"})
    call_sid = (await alice.recv_type("call_created"))["call"]
    invite = await bob.recv_type("invite")
    assert invite["from"] == NUMBER
    status, page = await env.rest("GET", f"/2010-04-01/Accounts/{env.account.sid}/Calls.json?ParentCallSid={call_sid}&To=client:carol")
    (carol_leg,) = page["calls"]
    assert carol_leg["status"] == "no-answer"  # nobody to ring: over now, not at the timeout
    await bob.send({"type": "reject", "call": invite["call"]})


async def test_a_resumed_session_keeps_its_calls(env: Env) -> None:
    env.ins.on("/voice", dial_client(env.ins, "bob"))
    bob = await env.client("bob")
    alice = await env.client("alice")
    await alice.send({"type": "call", "to": "client:bob"})
    invite = await bob.recv_type("invite")
    (conn,) = [c for c in env.server.node.gateway.sessions.values() if c.key and c.key.identity == "bob"]
    again = await RawClient.open(env.server.ws_url)
    resumed = await again.register(env.token("bob"), resume=conn.key.session_id, capabilities=["voice"])
    assert resumed["resumed"] is True
    await again.send({"type": "accept", "call": invite["call"], "id": "a"})
    assert (await again.recv_type("ok"))["id"] == "a"
    assert (await alice.recv_type("call_progress"))["status"] == "answered"


async def test_time_limit_hangs_up_both_parties(env: Env) -> None:
    env.ins.on("/voice", '<Response><Dial timeLimit="60"><Client>bob</Client></Dial></Response>')
    bob = await env.client("bob")
    alice = await env.client("alice")
    await alice.send({"type": "call", "to": "client:bob"})
    invite = await bob.recv_type("invite")
    await bob.send({"type": "accept", "call": invite["call"]})
    assert (await alice.recv_type("call_progress"))["status"] == "answered"
    await env.server.advance(61)
    assert (await bob.recv_type("hangup"))["reason"] == "time_limit"
    assert (await alice.recv_type("hangup"))["reason"] == "time_limit"


async def test_a_request_that_races_the_end_of_a_call_is_answered(env: Env) -> None:
    from aiohttp import web

    gate = asyncio.Event()

    async def slow_action(params: dict[str, str]) -> web.Response:
        await gate.wait()  # the call is busy fetching this while bob's accept arrives
        return web.Response(text="<Response/>", content_type="application/xml")

    env.ins.on("/after", slow_action)
    env.ins.on("/voice", dial_client(env.ins, "bob", action="/after"))
    bob = await env.client("bob")
    alice = await env.client("alice")
    await alice.send({"type": "call", "to": "client:bob"})
    invite = await bob.recv_type("invite")
    await alice.send({"type": "hangup", "call": invite["parent_call"]})
    assert (await bob.recv_type("cancel"))["reason"] == "caller_hangup"
    await env.ins.wait_for("/after")
    await bob.send({"type": "accept", "call": invite["call"], "id": "late"})
    await settle()
    gate.set()
    err = await bob.recv_type("error")
    assert err["id"] == "late" and err["code"] == ErrorCode.CALL_NOT_FOUND.code


async def test_concurrent_call_limit(tmp_path: Any) -> None:
    ins = InstructionServer(auth_token="")
    await ins.start()
    app_sid = new_sid("AP")
    account = TestAccount(extra={"applications": [{"sid": app_sid, "voice_url": ins.url("/voice")}]})
    ins.auth_token = account.auth_token
    ins.on("/voice", "<Response><Pause length='30'/></Response>")
    server = await start_server([account], security={"allow_private_urls": True}, engine={"data_dir": str(tmp_path)}, signaling={"max_concurrent_calls": 1})
    try:
        env = Env(server, ins, app_sid)
        alice = await env.client("alice")
        await alice.send({"type": "call", "to": "client:bob", "id": 1})
        assert (await alice.recv_type("call_created"))["id"] == 1
        await alice.send({"type": "call", "to": "client:bob", "id": 2})
        err = await alice.recv_type("error")
        assert err["id"] == 2 and err["code"] == ErrorCode.CALL_LIMIT.code
        status, body = await env.rest("POST", f"/2010-04-01/Accounts/{account.sid}/Calls.json", {"To": "client:bob", "From": "+15550001111", "Url": ins.url("/voice")})
        assert status == 429 and body["code"] == ErrorCode.CALL_LIMIT.code
        await server.advance(31)
        await alice.recv_type("call_progress")
        await alice.send({"type": "call", "to": "client:bob", "id": 3})
        assert (await alice.recv_type("call_created"))["id"] == 3
    finally:
        await server.node.stop()
        await ins.stop()


async def test_file_uploads_where_text_belongs_are_refused(env: Env) -> None:
    form = aiohttp.FormData()
    form.add_field("To", "client:bob")
    form.add_field("From", NUMBER)
    form.add_field("Url", env.ins.url("/x"))
    form.add_field("StatusCallbackEvent", b"answered", filename="events.txt")
    headers = {"Authorization": aiohttp.encode_basic_auth(env.account.sid, env.account.auth_token)}
    async with aiohttp.ClientSession(headers=headers) as http:
        async with http.post(f"{env.server.http_url}/2010-04-01/Accounts/{env.account.sid}/Calls.json", data=form) as resp:
            body = await resp.json()
    assert resp.status == 400 and "StatusCallbackEvent" in body["message"]
    form = aiohttp.FormData()
    form.add_field("To", b"client:bob", filename="to.txt")
    async with aiohttp.ClientSession(headers=headers) as http:
        async with http.post(f"{env.server.http_url}/2010-04-01/Accounts/{env.account.sid}/Calls.json", data=form) as resp:
            assert resp.status == 400 and "To" in (await resp.json())["message"]


async def test_a_carrier_call_tells_its_number_status_callback(tmp_path: Any) -> None:
    ins = InstructionServer(auth_token="")
    await ins.start()
    hook = ins.url("/number-status")
    account = TestAccount(extra={"phone_numbers": [{"number": NUMBER, "voice_url": ins.url("/inbound"), "status_callback": hook}]})
    ins.auth_token = account.auth_token
    ins.on("/inbound", "<Response><Hangup/></Response>")
    ins.on("/number-status", "")
    server = await start_server(
        [account], security={"allow_private_urls": True}, engine={"data_dir": str(tmp_path)},
        providers=[{"name": "outbox", "kind": "outbox", "inbound_username": INGRESS[0], "inbound_password": INGRESS[1]}],
    )
    try:
        env = SignalingEnv(server, ins, "")
        status, call = await env.rest("POST", "/v1/Ingress/outbox/Voice", {"From": "+15557770000", "To": NUMBER}, auth=INGRESS)
        assert status == 201
        (done,) = await ins.wait_for("/number-status")
        assert done.params["CallSid"] == call["sid"] and done.params["CallStatus"] == "completed"
        assert ins.all_signed()
    finally:
        await server.node.stop()
        await ins.stop()
