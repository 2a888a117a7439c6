"""The WebSocket gateway end to end: real server, raw clients in both encodings."""

from __future__ import annotations

import asyncio
import json

import pytest

from protocol.errors import ErrorCode
from tests.helpers.servers import RunningServer
from tests.helpers.wsclient import RawClient

ENCODINGS = ["json", "msgpack"]


async def open_registered(server: RunningServer, identity: str, encoding: str = "json", **fields: object) -> tuple[RawClient, dict]:
    client = await RawClient.open(server.ws_url, encoding)
    reply = await client.register(server.token(identity), **fields)
    assert reply["type"] == "registered", reply
    return client, reply


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


@pytest.mark.parametrize("encoding", ENCODINGS)
async def test_register_presence_subscribe_notify(server: RunningServer, encoding: str) -> None:
    bob, _ = await open_registered(server, "bob", encoding)
    await bob.send({"type": "subscribe", "identities": ["alice"], "id": 1})
    snap = await bob.recv()
    assert snap["type"] == "subscribed" and snap["id"] == 1
    assert snap["presences"][0]["status"] == "offline"
    alice, reg = await open_registered(server, "alice", encoding, status="away", text="hi", capabilities=["voice"])
    assert reg["identity"] == "alice" and reg["account"] == server.account.sid and reg["resumed"] is False
    assert reg["heartbeat"] == 25.0 and reg["idle_timeout"] == 60.0 and reg["session"].startswith("SE")
    update = await bob.recv()
    assert update["type"] == "presence_update" and update["status"] == "away" and update["text"] == "hi"
    assert update["sessions"][0]["capabilities"] == ["voice"]
    await alice.send({"type": "presence", "status": "available", "id": "p"})
    assert await alice.recv() == {"type": "ok", "id": "p"}
    update2 = await bob.recv()
    assert update2["status"] == "available" and update2["version"] > update["version"]
    await alice.send({"type": "bye"})
    code, _ = await alice.closed()
    assert code == 1000
    gone = await bob.recv()
    assert gone["status"] == "offline" and gone["sessions"] == [] and gone["last_seen"] is not None


async def test_merged_presence_of_two_devices(server: RunningServer) -> None:
    watcher, _ = await open_registered(server, "bob")
    await watcher.send({"type": "subscribe", "identities": ["alice"]})
    await watcher.recv_type("subscribed")
    phone, _ = await open_registered(server, "alice", status="dnd")
    assert (await watcher.recv())["status"] == "dnd"
    desk, _ = await open_registered(server, "alice", status="available", priority=5)
    merged = await watcher.recv()
    assert merged["status"] == "available" and len(merged["sessions"]) == 2
    await desk.send({"type": "bye"})
    assert (await watcher.recv())["status"] == "dnd"
    await phone.close()


async def test_unsubscribe_stops_updates(server: RunningServer) -> None:
    bob, _ = await open_registered(server, "bob")
    await bob.send({"type": "subscribe", "identities": ["alice", "carol"]})
    await bob.recv_type("subscribed")
    await bob.send({"type": "unsubscribe", "identities": ["alice"], "id": 2})
    assert await bob.recv() == {"type": "ok", "id": 2}
    alice, _ = await open_registered(server, "alice")
    carol, _ = await open_registered(server, "carol")
    update = await bob.recv()
    assert update["identity"] == "carol"  # nothing about alice came first


async def test_subscriptions_never_cross_accounts(server: RunningServer) -> None:
    other = server.accounts[1]
    spy = await RawClient.open(server.ws_url)
    assert (await spy.register(server.token("eve", account=other)))["type"] == "registered"
    await spy.send({"type": "subscribe", "identities": ["alice"]})
    snap = await spy.recv_type("subscribed")
    assert snap["presences"][0]["status"] == "offline"
    alice, _ = await open_registered(server, "alice")  # alice of the first account
    await spy.send({"type": "ping", "id": "after"})
    assert await spy.recv() == {"type": "pong", "id": "after"}  # and no presence_update before it


# -- bad input -----------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ENCODINGS)
async def test_bad_frames_are_answered_and_the_session_goes_on(server: RunningServer, encoding: str) -> None:
    client, _ = await open_registered(server, "alice", encoding)
    text_or_bytes = (lambda s: s.encode()) if encoding == "msgpack" else (lambda s: s)
    cases = [
        (text_or_bytes("{garbage"), ErrorCode.FRAME_UNDECODABLE),
        ("wrong kind" if encoding == "msgpack" else b"wrong kind", ErrorCode.WRONG_FRAME_KIND),
    ]
    for data, code in cases:
        await client.send_raw(data)
        err = await client.recv()
        assert err["type"] == "error" and err["code"] == code.code and err["fatal"] is False
    for obj, code in [
        ([1, 2], ErrorCode.FRAME_NOT_OBJECT),
        ({"no": "type"}, ErrorCode.FRAME_MISSING_TYPE),
        ({"type": "teleport", "id": 3}, ErrorCode.FRAME_UNKNOWN_TYPE),
        ({"type": "presence", "status": 42, "id": 4}, ErrorCode.STATUS_INVALID),
        ({"type": "subscribe", "identities": "alice", "id": 5}, ErrorCode.FRAME_INVALID_FIELD),
        ({"type": "register", "token": "x", "id": 6}, ErrorCode.ALREADY_REGISTERED),
    ]:
        await client.send(obj)
        err = await client.recv()
        assert err["type"] == "error" and err["code"] == code.code, (obj, err)
        if isinstance(obj, dict) and "id" in obj:
            assert err["id"] == obj["id"]
    await client.send({"type": "ping", "id": "still"})
    assert await client.recv() == {"type": "pong", "id": "still"}


async def test_frame_before_register_is_fatal(server: RunningServer) -> None:
    client = await RawClient.open(server.ws_url)
    await client.send({"type": "subscribe", "identities": ["bob"]})
    err = await client.recv()
    assert err["code"] == ErrorCode.NOT_REGISTERED.code and err["fatal"] is True
    assert (await client.closed())[0] == 4000


async def test_oversized_frame_closes_4009(server: RunningServer) -> None:
    client, _ = await open_registered(server, "alice")
    await client.send({"type": "ping", "pad": "x" * (70 * 1024)})
    err = await client.recv()
    assert err["code"] == ErrorCode.FRAME_TOO_LARGE.code
    assert (await client.closed())[0] == 4009


async def test_huge_frame_is_refused_by_the_transport(server: RunningServer) -> None:
    client, _ = await open_registered(server, "alice")
    await client.send({"type": "ping", "pad": "x" * (200 * 1024)})
    assert (await client.closed())[0] == 1009


async def test_flood_is_limited_then_closed(server: RunningServer) -> None:
    client, _ = await open_registered(server, "alice")
    for i in range(200):
        await client.send({"type": "ping", "id": i})
    frames = []
    try:
        while True:
            frames.append(await client.recv(timeout=2))
    except Exception:
        pass
    codes = [f.get("code") for f in frames if f["type"] == "error"]
    assert ErrorCode.RATE_LIMITED.code in codes and codes[-1] == ErrorCode.RATE_LIMIT_CLOSE.code
    assert (await client.closed())[0] == 4008


async def test_garbage_from_one_client_leaves_others_alone(server: RunningServer) -> None:
    calm, _ = await open_registered(server, "bob")
    noisy = await RawClient.open(server.ws_url)
    for payload in ["\x00\xff", "{", "null", "[]", '{"type": null}', "9" * 5000]:
        await noisy.send_raw(payload)
    await calm.send({"type": "ping", "id": 1})
    assert await calm.recv() == {"type": "pong", "id": 1}


async def test_register_timeout(server: RunningServer) -> None:
    client = await RawClient.open(server.ws_url)
    await settle()
    await server.advance(11)
    err = await client.recv()
    assert err["code"] == ErrorCode.REGISTER_TIMEOUT.code
    assert (await client.closed())[0] == 4004


async def test_idle_timeout_and_pings_keep_alive(server: RunningServer) -> None:
    client, _ = await open_registered(server, "alice")
    for _ in range(3):
        await server.advance(40)
        await client.send({"type": "ping"})
        assert (await client.recv())["type"] == "pong"
    await server.advance(61)
    err = await client.recv()
    assert err["code"] == ErrorCode.IDLE_TIMEOUT.code
    assert (await client.closed())[0] == 4005


# -- tokens and permissions ----------------------------------------------------------------


async def test_bad_token_is_refused_with_its_code(server: RunningServer) -> None:
    client = await RawClient.open(server.ws_url)
    err = await client.register(server.token("alice")[:-4] + "AAAA")
    assert err["type"] == "error" and err["code"] == ErrorCode.TOKEN_SIGNATURE_INVALID.code and err["fatal"]
    assert (await client.closed())[0] == 4001


async def test_token_of_unknown_key(server: RunningServer) -> None:
    from tests.helpers.servers import TestAccount

    stranger = TestAccount()
    client = await RawClient.open(server.ws_url)
    err = await client.register(server.token("alice", account=stranger))
    assert err["code"] == ErrorCode.TOKEN_KEY_UNKNOWN.code


async def test_register_needs_a_presence_grant(server: RunningServer) -> None:
    client = await RawClient.open(server.ws_url)
    err = await client.register(server.token("alice", grants={"identity": "alice", "video": {}}))
    assert err["code"] == ErrorCode.GRANT_MISSING_FATAL.code
    assert (await client.closed())[0] == 4003


async def test_voice_incoming_grant_registers(server: RunningServer) -> None:
    client = await RawClient.open(server.ws_url)
    reply = await client.register(server.token("alice", grants={"identity": "alice", "voice": {"incoming": {"allow": True}}}))
    assert reply["type"] == "registered"
    await client.send({"type": "subscribe", "identities": ["bob"], "id": 1})
    err = await client.recv()
    assert err["code"] == ErrorCode.GRANT_MISSING.code and err["id"] == 1 and not err["fatal"]


async def test_subscribe_limited_to_granted_patterns(server: RunningServer) -> None:
    grants = {"identity": "alice", "presence": {"publish": True, "subscribe": ["team-*", "bob"]}}
    client = await RawClient.open(server.ws_url)
    assert (await client.register(server.token("alice", grants=grants)))["type"] == "registered"
    await client.send({"type": "subscribe", "identities": ["team-1", "bob"], "id": 1})
    assert (await client.recv())["type"] == "subscribed"
    await client.send({"type": "subscribe", "identities": ["team-2", "carol"], "id": 2})
    err = await client.recv()
    assert err["code"] == ErrorCode.GRANT_MISSING.code and "carol" in err["message"]


async def test_token_expiring_then_renewed(server: RunningServer) -> None:
    client = await RawClient.open(server.ws_url)
    await client.register(server.token("alice", ttl=100))
    await server.advance(45)
    await client.send({"type": "ping"})
    await server.advance(30)  # the warning comes 60 s before exp (at 40 s)
    warning = await client.recv_type("token_expiring")
    assert 0 < warning["seconds_left"] <= 60
    await client.send({"type": "update_token", "token": server.token("alice", ttl=3600), "id": "u"})
    renewed = await client.recv_type("token_updated")
    assert renewed["id"] == "u" and renewed["expires"] > warning["expires"]
    for _ in range(2):  # past the old token's end (130 s) with pings against the idle timeout
        await server.advance(40)
        await client.send({"type": "ping", "id": "alive"})
        assert (await client.recv_type("pong"))["id"] == "alive"


async def test_token_expiry_closes(server: RunningServer) -> None:
    client = await RawClient.open(server.ws_url)
    await client.register(server.token("alice", ttl=50))
    await server.advance(50)
    await client.send({"type": "ping"})
    await server.advance(31)  # past exp plus the 30 s clock-skew allowance
    err = await client.recv_type("error")
    assert err["code"] == ErrorCode.TOKEN_EXPIRED.code
    assert (await client.closed())[0] == 4002


async def test_renewal_must_keep_the_identity(server: RunningServer) -> None:
    client, _ = await open_registered(server, "alice")
    await client.send({"type": "update_token", "token": server.token("mallory"), "id": 1})
    err = await client.recv()
    assert err["code"] == ErrorCode.TOKEN_IDENTITY_CHANGED.code and err["fatal"]


async def test_narrower_renewal_drops_subscriptions(server: RunningServer) -> None:
    client, _ = await open_registered(server, "alice")
    await client.send({"type": "subscribe", "identities": ["bob", "carol"]})
    await client.recv_type("subscribed")
    narrow = {"identity": "alice", "presence": {"publish": True, "subscribe": ["bob"]}}
    await client.send({"type": "update_token", "token": server.token("alice", grants=narrow), "id": 1})
    renewed = await client.recv()
    assert renewed["unsubscribed"] == ["carol"]
    carol, _ = await open_registered(server, "carol")
    bob, _ = await open_registered(server, "bob")
    assert (await client.recv())["identity"] == "bob"


async def test_revoked_key_ends_the_session_at_its_next_request(server: RunningServer) -> None:
    client, _ = await open_registered(server, "alice")
    assert server.node.accounts.revoke_key(server.account.key_sid)
    await client.send({"type": "ping", "id": 1})
    err = await client.recv()
    assert err["code"] == ErrorCode.TOKEN_KEY_REVOKED.code and err["fatal"]
    assert (await client.closed())[0] == 4003
    fresh = await RawClient.open(server.ws_url)
    assert (await fresh.register(server.token("alice")))["code"] == ErrorCode.TOKEN_KEY_REVOKED.code


# -- leases, grace period, resume ---------------------------------------------------------------


async def test_dropped_connection_lingers_then_goes_offline(server: RunningServer) -> None:
    watcher, _ = await open_registered(server, "bob")
    await watcher.send({"type": "subscribe", "identities": ["alice"]})
    await watcher.recv_type("subscribed")
    alice, _ = await open_registered(server, "alice")
    await watcher.recv_type("presence_update")
    alice.ws.transport.abort()  # the connection vanishes without a bye
    await settle()
    await asyncio.sleep(0.05)
    await watcher.send({"type": "ping", "id": "p"})
    assert await watcher.recv() == {"type": "pong", "id": "p"}  # no offline yet: grace period
    await server.advance(6)
    await watcher.send({"type": "ping", "id": "q"})
    gone = await watcher.recv()
    assert gone["type"] == "presence_update" and gone["status"] == "offline"


async def test_resume_within_grace_causes_no_flap(server: RunningServer) -> None:
    watcher, _ = await open_registered(server, "bob")
    await watcher.send({"type": "subscribe", "identities": ["alice"]})
    await watcher.recv_type("subscribed")
    alice, reg = await open_registered(server, "alice", status="busy")
    await watcher.recv_type("presence_update")
    await alice.ws.close(code=1001)
    await asyncio.sleep(0.05)
    await server.advance(3)
    again = await RawClient.open(server.ws_url, "msgpack")
    back = await again.register(server.token("alice"), resume=reg["session"])
    assert back["resumed"] is True and back["session"] == reg["session"]
    await server.advance(10)  # well past the grace period: nothing is swept
    await watcher.send({"type": "ping", "id": "p"})
    assert await watcher.recv() == {"type": "pong", "id": "p"}  # no offline, no online
    await again.send({"type": "presence", "status": "away"})
    update = await watcher.recv_type("presence_update")
    assert update["status"] == "away" and len(update["sessions"]) == 1


async def test_resume_of_a_live_session_replaces_its_connection(server: RunningServer) -> None:
    first, reg = await open_registered(server, "alice")
    second = await RawClient.open(server.ws_url)
    back = await second.register(server.token("alice"), resume=reg["session"])
    assert back["resumed"] is True
    err = await first.recv()
    assert err["code"] == ErrorCode.SESSION_REPLACED.code
    assert (await first.closed())[0] == 4010
    await asyncio.sleep(0.05)
    (p,) = await server.node.presence.query(server.account.sid, ["alice"])
    assert p.presence.status.value == "available" and len(p.presence.sessions) == 1


async def test_resume_of_another_identitys_session_starts_fresh(server: RunningServer) -> None:
    alice, reg = await open_registered(server, "alice")
    bob = await RawClient.open(server.ws_url)
    back = await bob.register(server.token("bob"), resume=reg["session"])
    assert back["resumed"] is False and back["session"] != reg["session"]
    await alice.send({"type": "ping", "id": 1})
    assert await alice.recv() == {"type": "pong", "id": 1}


async def test_too_many_sessions_per_identity(server: RunningServer) -> None:
    limit = server.node.config.gateway.max_sessions_per_identity
    clients = [await open_registered(server, "alice") for _ in range(limit)]
    extra = await RawClient.open(server.ws_url)
    err = await extra.register(server.token("alice"))
    assert err["code"] == ErrorCode.TOO_MANY_SESSIONS.code
    for c, _ in clients:
        await c.close()


async def test_shutdown_tells_clients_to_reconnect(server: RunningServer) -> None:
    client, _ = await open_registered(server, "alice")
    stop = asyncio.create_task(server.node.gateway.shutdown(grace=2))
    frame = await client.recv()
    assert frame["type"] == "reconnect"
    assert (await client.closed())[0] == 4012
    await stop
    late = await RawClient.open(server.ws_url)
    err = await late.recv()
    assert err["code"] == ErrorCode.SERVER_SHUTTING_DOWN.code


async def test_no_subprotocol_means_json(server: RunningServer) -> None:
    from websockets.asyncio.client import connect

    async with connect(server.ws_url) as ws:
        await ws.send(json.dumps({"type": "register", "token": server.token("alice")}))
        reply = json.loads(await ws.recv())
        assert reply["type"] == "registered"


async def test_a_client_that_never_reads_is_closed_not_buffered() -> None:
    from protocol.messages import SignalRelay
    from tests.helpers.servers import start_server

    running = await start_server(gateway={"max_pending_frames": 16})
    try:
        reader, _ = await open_registered(running, "bob")
        (conn,) = running.node.gateway.sessions.values()
        # Frames go straight to the socket while it takes them; once the socket's
        # buffers are full (the client reads nothing), they queue, up to the bound.
        big = SignalRelay(call="CA" + "0" * 32, payload={"sdp": "x" * 1_000_000})
        for _ in range(200):
            conn.send_frame(big)
            if conn.session.state.value == "closed":
                break
        assert conn.session.state.value == "closed"
        assert (await reader.closed())[0] == 4013
    finally:
        await running.node.stop()
