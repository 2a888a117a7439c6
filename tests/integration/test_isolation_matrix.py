"""The isolation matrix: nothing of account A can be reached, changed or even
detected with account B's credentials or tokens.

REST: the matrix is built from the server's own route table, so a new endpoint
cannot escape it: every route is either in ``REST_MATRIX`` (what it names and
how to name A's thing) or in ``EXEMPT`` (with the reason it names nothing an
account owns); an unlisted route fails the test. For every route, with B's
auth token and with B's API key:

- the thing exists in A (A's own credentials fetch it);
- B is refused A's path, and the answer is byte for byte the answer for an
  account and a thing that do not exist at all (status, body, the headers a
  client could read anything from);
- in B's own path, naming A's thing (a call, a message, a broadcast, a key,
  an application, a number, an identity) answers exactly as naming a made-up
  one. Where the answer repeats the caller's own input (a 404 that names the
  path, a 21606 that names the `From`), the made-up id is replaced by A's in
  that answer before comparing: the echo tells B nothing B did not send.

Operator endpoints (``/v1/Nodes``, ``/v1/Dashboard/*``, ``/v1/Routing/Stats``,
``/dashboard``) and the carrier ingress answer B's account credentials exactly
as they answer wrong ones.

Wire: a session of B sends every frame that names a call, a message, a
session or an identity (docs/protocol.md: ``ringing``, ``accept``,
``reject``, ``hangup``, ``signal``, ``ack`` with and without ``read``,
``register`` with ``resume``, ``subscribe``, ``unsubscribe``, ``call``) with
A's live call (both legs), A's unacked in-app message, alice's session id and
identities that exist only in A; each answer equals the answer for made-up
ones, and A's parties receive nothing. A's call then still answers, and
alice's message still acks.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable
from urllib.parse import quote

import aiohttp
import pytest

from protocol.addresses import new_sid
from tests.helpers.instructions import InstructionServer
from tests.helpers.servers import RunningServer, TestAccount, start_server
from tests.helpers.signaling_env import dial_client
from tests.helpers.wsclient import RawClient

NUMBER = "+15550001111"
OPERATOR = ("ops", "operator-password-0123456789")
CARRIER = ("carrier", "carrier-password-0123456789")
# The headers a client could read something from; Date and Content-Length (the body is compared) aside.
COMPARED_HEADERS = ("Content-Type", "WWW-Authenticate", "Allow", "Retry-After", "Location", "Cache-Control")
REFUSED = {400, 401, 403, 404}


@dataclass(frozen=True)
class Answer:
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def echoing(self, made_up: str, real: str) -> Answer:
        """This answer with the made-up id the caller sent replaced by A's (only
        the caller's own input is ever echoed; see the module docstring)."""
        body = self.body
        # As sent, and as a list's paging URIs repeat it (percent-encoded).
        for m, r in ((made_up, real), (quote(made_up, safe=""), quote(real, safe=""))):
            body = body.replace(m.encode(), r.encode())
        return Answer(self.status, tuple((k, v.replace(made_up, real)) for k, v in self.headers), body)


@dataclass
class World:
    server: RunningServer
    ins: InstructionServer
    a: TestAccount
    b: TestAccount
    app_sid: str
    call_sid: str  # alice's call (parent), ringing bob
    child_call_sid: str  # the leg that rings bob
    message_sid: str  # an SMS of A
    scheduled_sid: str  # a scheduled message of A (cancelable)
    in_app_sid: str  # an in-app message to alice, not acked yet
    broadcast_sid: str
    alice: RawClient
    alice_session: str
    bob: RawClient

    @property
    def url(self) -> str:
        return self.server.http_url


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


async def request(world: World, method: str, path: str, headers: dict[str, str], **kwargs: Any) -> Answer:
    async with aiohttp.ClientSession() as http:
        async with http.request(method, world.url + path, headers=headers, allow_redirects=False, **kwargs) as resp:
            body = await resp.read()
            kept = tuple((h, resp.headers[h]) for h in COMPARED_HEADERS if h in resp.headers)
            return Answer(resp.status, kept, body)


async def sync(client: RawClient) -> list[dict[str, Any]]:
    """Every frame the server sent this client before answering a ping now."""
    marker = secrets.token_hex(8)
    await client.send({"type": "ping", "id": marker})
    frames = []
    while True:
        frame = await client.recv()
        if frame.get("type") == "pong" and frame.get("id") == marker:
            return frames
        frames.append(frame)


@pytest.fixture
async def world() -> AsyncIterator[World]:
    ins = InstructionServer(auth_token="")
    await ins.start()
    app_sid = new_sid("AP")
    a = TestAccount(identities=[{"identity": "alice", "phone": "+15550100001"}, {"identity": "bob", "phone": "+15550100002"}])
    a.extra = {"applications": [{"sid": app_sid, "voice_url": ins.url("/voice")}], "phone_numbers": [{"number": NUMBER}]}
    ins.auth_token = a.auth_token
    b = TestAccount(extra={"phone_numbers": [{"number": "+15550003333"}]})
    server = await start_server(
        [a, b],
        security={"allow_private_urls": True},
        operator={"username": OPERATOR[0], "password": OPERATOR[1]},
        providers=[{"name": "outbox", "kind": "outbox", "inbound_username": CARRIER[0], "inbound_password": CARRIER[1]}],
        # The matrix sends hundreds of deliberately failing requests from one
        # address; the limits on those are tested on their own (test_attack_*).
        http={"auth_failure_burst": 100000, "burst": 100000},
        # The manual clock never refills a session's frame bucket: room for every frame of the matrix.
        gateway={"burst": 10000},
    )
    clients: list[RawClient] = []
    try:
        ins.on("/voice", dial_client(ins, "bob"))
        grants = {
            "presence": {"publish": True, "subscribe": ["*"]},
            "voice": {"incoming": {"allow": True}, "outgoing": {"application_sid": app_sid}},
        }

        async def client(identity: str) -> tuple[RawClient, str]:
            c = await RawClient.open(server.ws_url)
            clients.append(c)
            reply = await c.register(server.token(identity, grants={"identity": identity, **grants}), capabilities=["voice", "messaging"])
            assert reply["type"] == "registered", reply
            return c, reply["session"]

        alice, alice_session = await client("alice")
        bob, _ = await client("bob")
        await alice.send({"type": "call", "to": "client:bob", "id": "c"})
        call_sid = (await alice.recv_type("call_created"))["call"]
        child = (await bob.recv_type("invite"))["call"]
        auth = basic(a.sid, a.auth_token)
        api = f"/2010-04-01/Accounts/{a.sid}"
        async with aiohttp.ClientSession() as http:

            async def post(path: str, **kwargs: Any) -> dict[str, Any]:
                async with http.post(server.http_url + path, headers=auth, **kwargs) as resp:
                    body = await resp.json()
                    assert resp.status == 201, body
                    return body  # type: ignore[no-any-return]

            message = await post(f"{api}/Messages.json", data={"To": "+15557770001", "From": NUMBER, "Body": "hi"})
            scheduled = await post(
                f"{api}/Messages.json",
                data={"To": "+15557770002", "From": NUMBER, "Body": "later", "ScheduleType": "fixed",
                      "SendAt": _iso(server.clock.time() + 7200)},
            )
            in_app = await post(f"{api}/Messages.json", data={"To": "client:alice", "From": NUMBER, "Body": "in-app"})
            broadcast = await post(
                f"/v1/Accounts/{a.sid}/Broadcasts", json={"destinations": ["+15557770003"], "from": NUMBER, "content": {"text": "b"}}
            )
        delivered = await alice.recv_type("message")
        assert delivered["sid"] == in_app["sid"]
        # From here on, anything alice or bob receive was caused by someone.
        await sync(alice)
        await sync(bob)
        yield World(
            server, ins, a, b, app_sid, call_sid, child, message["sid"], scheduled["sid"], in_app["sid"], broadcast["sid"],
            alice, alice_session, bob,
        )
    finally:
        for c in clients:
            await c.close()
        await server.node.stop()
        await ins.stop()


def _iso(epoch: float) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- REST -------------------------------------------------------------------------------------

# What each route's path parameters name, as (kind, A's thing, a made-up one).
Things = dict[str, tuple[str, str]]


def things(world: World) -> dict[str, Things]:
    """Per path parameter and route: A's thing and a made-up thing of the same kind."""
    return {
        "call_sid": {"*": (world.call_sid, new_sid("CA"))},
        "sid": {
            "Messages": (world.scheduled_sid, new_sid("SM")),
            "Broadcasts": (world.broadcast_sid, new_sid("BC")),
        },
        "identity": {"*": ("alice", "nobody-at-all")},
        "key_sid": {"*": (world.a.key_sid, new_sid("SK"))},
    }


@dataclass(frozen=True)
class Extra:
    """A request parameter (query or body) that names one of A's things."""

    where: str  # "query", "form" or "json"
    name: str
    real: Callable[[World], str]
    made_up: Callable[[], str]


# Every route that takes an account's credentials, and what else (beyond its
# path parameters) can name another account's things in it.
REST_MATRIX: dict[tuple[str, str], list[Extra]] = {
    ("GET", "/2010-04-01/Accounts/{account_sid}/Calls.json"): [
        Extra("query", "ParentCallSid", lambda w: w.call_sid, lambda: new_sid("CA")),
        Extra("query", "To", lambda w: "client:bob", lambda: "client:nobody-at-all"),
    ],
    ("POST", "/2010-04-01/Accounts/{account_sid}/Calls.json"): [
        Extra("form", "ApplicationSid", lambda w: w.app_sid, lambda: new_sid("AP")),
    ],
    ("GET", "/2010-04-01/Accounts/{account_sid}/Calls/{call_sid}.json"): [],
    ("GET", "/2010-04-01/Accounts/{account_sid}/Messages.json"): [
        Extra("query", "From", lambda w: NUMBER, lambda: "+15559990000"),
    ],
    ("POST", "/2010-04-01/Accounts/{account_sid}/Messages.json"): [
        Extra("form", "From", lambda w: NUMBER, lambda: "+15559990000"),
    ],
    ("GET", "/2010-04-01/Accounts/{account_sid}/Messages/{sid}.json"): [],
    ("POST", "/2010-04-01/Accounts/{account_sid}/Messages/{sid}.json"): [],
    ("GET", "/2010-04-01/Accounts/{account_sid}/Keys.json"): [],
    ("POST", "/2010-04-01/Accounts/{account_sid}/Keys.json"): [],
    ("GET", "/2010-04-01/Accounts/{account_sid}/Keys/{key_sid}.json"): [],
    ("DELETE", "/2010-04-01/Accounts/{account_sid}/Keys/{key_sid}.json"): [],
    ("GET", "/v1/Accounts/{account_sid}/Presence"): [
        Extra("query", "Identity", lambda w: "alice", lambda: "nobody-at-all"),
    ],
    ("GET", "/v1/Accounts/{account_sid}/Presence/{identity}"): [],
    ("POST", "/v1/Accounts/{account_sid}/Broadcasts"): [
        Extra("json", "from", lambda w: NUMBER, lambda: "+15559990000"),
    ],
    ("GET", "/v1/Accounts/{account_sid}/Broadcasts"): [],
    ("GET", "/v1/Accounts/{account_sid}/Broadcasts/{sid}"): [],
    ("GET", "/v1/Accounts/{account_sid}/Routing/Stats"): [],
}

# Operator routes: account credentials must be answered as wrong ones are.
OPERATOR_ROUTES = {
    ("GET", "/v1/Nodes"),
    ("GET", "/v1/Dashboard/Accounts"),
    ("GET", "/v1/Dashboard/Accounts/{account_sid}"),
    ("GET", "/v1/Dashboard/Routing"),
    ("GET", "/v1/Routing/Stats"),
    ("GET", "/dashboard"),
    ("GET", "/dashboard/"),
    ("GET", "/dashboard/{name}"),
}
# Carrier ingress: a provider's credentials, never an account's.
INGRESS_ROUTES = {
    ("POST", "/v1/Ingress/{provider}/Voice"),
    ("POST", "/v1/Ingress/{provider}/Messages"),
    ("POST", "/v1/Ingress/{provider}/Status"),
}
EXEMPT = {
    ("GET", "/healthz"): "liveness: names nothing, answers everyone",
    ("GET", "/readyz"): "readiness: names nothing, answers everyone",
    ("GET", "/v1/connect"): "the WebSocket: its frames are the wire matrix below",
    ("GET", "/sdk/{name}"): "the browser SDK's static files, the same for everyone",
    ("GET", "/l/{code}"): "a tracked short link is a public capability (it is in the text message); it names no account",
}


def _served(world: World) -> list[tuple[str, str]]:
    routes = []
    for route in world.server.node.app.router.routes():
        if route.resource is None or route.method == "HEAD":
            continue  # HEAD: the GET handler (every GET answers HEAD); checked with GET below
        routes.append((route.method, route.resource.canonical))
    return sorted(set(routes))


def _fill(path: str, account: str, named: dict[str, str]) -> str:
    out = path.replace("{account_sid}", account)
    for param, value in named.items():
        out = out.replace("{" + param + "}", value)
    return out


def _named(path: str, world: World, table: dict[str, Things], real: bool) -> dict[str, str]:
    """Path parameter -> A's thing (real) or a made-up one, for this path."""
    out = {}
    for param, per_route in table.items():
        if "{" + param + "}" not in path:
            continue
        real_value, made_up = per_route.get("Broadcasts" if "Broadcasts" in path else "Messages" if "Messages" in path else "*")
        out[param] = real_value if real else made_up
    return out


def _minimal_body(method: str, path: str) -> dict[str, Any]:
    """A request body that gets past the parameter checks, so that what is
    compared is the answer about the thing named, not about a typo."""
    if method != "POST":
        return {}
    if path.endswith("/Calls.json"):
        return {"data": {"To": "client:bob", "From": NUMBER, "Url": "http://127.0.0.1:9/x"}}
    if path.endswith("/Messages.json"):
        return {"data": {"To": "+15557770009", "From": NUMBER, "Body": "x"}}
    if "/Messages/" in path:
        return {"data": {"Status": "canceled"}}
    if path.endswith("/Broadcasts"):
        return {"json": {"destinations": ["+15557770009"], "from": NUMBER, "content": {"text": "x"}}}
    return {}


def _with_extra(body: dict[str, Any], extra: Extra, value: str, path: str) -> tuple[str, dict[str, Any]]:
    body = json.loads(json.dumps(body))  # a copy
    if extra.where == "query":
        return f"{path}?{quote(extra.name, safe='')}={quote(value, safe='')}", body
    if extra.where == "form":
        data = body.setdefault("data", {})
        if extra.name == "ApplicationSid":
            data.pop("Url", None)
        data[extra.name] = value
    else:
        body.setdefault("json", {})[extra.name] = value
    return path, body


async def test_rest_isolation_matrix(world: World) -> None:
    served = _served(world)
    covered = set(REST_MATRIX) | OPERATOR_ROUTES | INGRESS_ROUTES | set(EXEMPT)
    unlisted = [r for r in served if r not in covered]
    assert not unlisted, f"routes missing from the isolation matrix (add them, or exempt them with a reason): {unlisted}"
    # The matrix lists nothing the server does not serve (a renamed route would otherwise pass unseen).
    assert not (set(REST_MATRIX) | OPERATOR_ROUTES | INGRESS_ROUTES) - set(served)

    a, b = world.a, world.b
    table = things(world)
    b_credentials = {"B auth token": basic(b.sid, b.auth_token), "B API key": basic(b.key_sid, b.key_secret)}
    attempts = 0
    rows = 0
    for method, path in served:
        if (method, path) in EXEMPT:
            continue
        rows += 1
        if (method, path) in OPERATOR_ROUTES or (method, path) in INGRESS_ROUTES:
            named = {"account_sid": a.sid, "name": "index.html", "provider": "outbox"}
            target = _fill(path, a.sid, named)
            wrong = await request(world, method, target, basic(b.sid, "not-the-password-of-anyone"))
            nobody = await request(world, method, _fill(path, new_sid("AC"), named), basic(b.sid, "not-the-password-of-anyone"))
            assert wrong.status == 401 and nobody == wrong, (path, wrong, nobody)
            for label, creds in b_credentials.items():
                got = await request(world, method, target, creds)
                attempts += 1
                assert got == wrong, f"{method} {path} with {label}: {got} differs from the answer to wrong credentials {wrong}"
            continue

        body = _minimal_body(method, path)
        real_path = _fill(path, a.sid, _named(path, world, table, real=True))
        if method == "GET":
            # The thing exists in A: A's own credentials fetch it.
            query = [e for e in REST_MATRIX[(method, path)] if e.where == "query"][:1]
            own_path = _with_extra({}, query[0], query[0].real(world), real_path)[0] if query else real_path
            own = await request(world, method, own_path, basic(a.sid, a.auth_token))
            assert own.status == 200, (path, own)
        for label, creds in b_credentials.items():
            # 1. A's path (A's account and A's thing) against a path naming nothing that exists.
            got = await request(world, method, real_path, creds, **body)
            nothing = await request(world, method, _fill(path, new_sid("AC"), _named(path, world, table, real=False)), creds, **body)
            attempts += 1
            assert got.status == 404 and got == nothing, f"{method} {path} with {label} on A's path: {got} vs {nothing}"
            # 2. B's own path naming A's thing, against B's own path naming a made-up one.
            real_named = _named(path, world, table, real=True)
            made_named = _named(path, world, table, real=False)
            for param, real_value in real_named.items():
                got = await request(world, method, _fill(path, b.sid, real_named), creds, **body)
                other = await request(world, method, _fill(path, b.sid, {**real_named, param: made_named[param]}), creds, **body)
                attempts += 1
                assert got == other.echoing(made_named[param], real_value), f"{method} {path} ({param}) with {label}: {got} vs {other}"
                if param != "identity":  # a presence query answers "never seen", which is what it is in B
                    assert got.status in REFUSED, (path, got)
                else:
                    assert json.loads(got.body)["sessions"] == [] and json.loads(got.body)["version"] == 0, got
            # 3. A's things named in the query or the body, in B's own path.
            b_path = _fill(path, b.sid, made_named)
            for extra in REST_MATRIX[(method, path)]:
                real_value, made_up = extra.real(world), extra.made_up()
                p1, b1 = _with_extra(body, extra, real_value, b_path)
                p2, b2 = _with_extra(body, extra, made_up, b_path)
                got = await request(world, method, p1, creds, **b1)
                other = await request(world, method, p2, creds, **b2)
                attempts += 1
                assert got == other.echoing(made_up, real_value), f"{method} {path} {extra.name} with {label}: {got} vs {other}"
                assert not (200 <= got.status < 300 and method == "GET" and b'"sid": "' + real_value.encode() in got.body), got

    # Nothing of A changed: its scheduled message is still scheduled, its key still works, its call still rings.
    own = basic(a.sid, a.auth_token)
    record = await request(world, "GET", f"/2010-04-01/Accounts/{a.sid}/Messages/{world.scheduled_sid}.json", own)
    assert json.loads(record.body)["status"] == "scheduled", record
    by_key = await request(world, "GET", f"/2010-04-01/Accounts/{a.sid}/Calls/{world.call_sid}.json", basic(a.key_sid, a.key_secret))
    assert by_key.status == 200 and json.loads(by_key.body)["status"] in ("ringing", "in-progress", "initiated", "queued"), by_key
    keys = await request(world, "GET", f"/2010-04-01/Accounts/{a.sid}/Keys.json", own)
    assert [k["sid"] for k in json.loads(keys.body)["keys"]] == [a.key_sid], keys  # B's POSTs created nothing in A
    # ... and A can do to it what B could not: the refusals were about B, not the thing.
    canceled = await request(
        world, "POST", f"/2010-04-01/Accounts/{a.sid}/Messages/{world.scheduled_sid}.json", own, data={"Status": "canceled"}
    )
    assert canceled.status == 200, canceled
    assert await sync(world.alice) == [] and await sync(world.bob) == [], "A's clients were told of B's requests"
    print(f"REST isolation matrix: {rows} routes (+{len(EXEMPT)} exempt), {attempts} comparisons")


# -- the wire ---------------------------------------------------------------------------------


async def _answers(client: RawClient, frame: dict[str, Any]) -> list[dict[str, Any]]:
    await client.send(frame)
    return await sync(client)


def _swap(frames: list[dict[str, Any]], made_up: str, real: str) -> list[dict[str, Any]]:
    return json.loads(json.dumps(frames).replace(made_up, real))  # type: ignore[no-any-return]


async def _wire_attempts(world: World, encoding: str, status: str) -> int:
    """B's session tries every frame that names A's things; returns the comparisons made."""
    server, b = world.server, world.b
    token = server.token("mallory", account=b)  # default grants: presence, subscribe to anyone, incoming calls
    mallory = await RawClient.open(server.ws_url, encoding)
    try:
        assert (await mallory.register(token))["type"] == "registered"
        calls = [(world.call_sid, new_sid("CA")), (world.child_call_sid, new_sid("CA"))]
        frames: list[tuple[Callable[[str], dict[str, Any]], str, str, int | None]] = []
        for real, made_up in calls:
            frames += [
                (lambda c: {"type": "ringing", "id": 1, "call": c}, real, made_up, 31001),
                (lambda c: {"type": "accept", "id": 2, "call": c}, real, made_up, 31001),
                (lambda c: {"type": "reject", "id": 3, "call": c, "reason": "busy"}, real, made_up, 31001),
                (lambda c: {"type": "hangup", "id": 4, "call": c}, real, made_up, 31001),
                (lambda c: {"type": "signal", "id": 5, "call": c, "payload": {"type": "offer", "sdp": "v=0"}}, real, made_up, 31001),
            ]
        frames += [
            (lambda s: {"type": "ack", "id": 6, "sid": s}, world.in_app_sid, new_sid("SM"), 31010),
            (lambda s: {"type": "ack", "id": 7, "sid": s, "read": True}, world.in_app_sid, new_sid("SM"), 31010),
            (lambda s: {"type": "ack", "id": 8, "sid": s}, world.message_sid, new_sid("SM"), 31010),
            # Identities that exist only in A: present (alice) and configured (bob).
            (lambda i: {"type": "subscribe", "id": 9, "identities": [i]}, "alice", "nobody-at-all", None),
            (lambda i: {"type": "subscribe", "id": 10, "identities": [i]}, "bob", "nobody-else", None),
            (lambda i: {"type": "unsubscribe", "id": 11, "identities": [i]}, "alice", "nobody-at-all", None),
            (lambda i: {"type": "call", "id": 12, "to": f"client:{i}"}, "alice", "nobody-at-all", None),
        ]
        attempts = 0
        for build, real, made_up, code in frames:
            got = await _answers(mallory, build(real))
            other = await _answers(mallory, build(made_up))
            attempts += 1
            assert got == _swap(other, made_up, real), f"{build(real)}: {got} vs {other}"
            if code is not None:
                assert [f["code"] for f in got if f["type"] == "error"] == [code], got

        # resume of alice's session, from B, on a new connection each: a new
        # session of B's, exactly as for a session id that never existed.
        resumed = []
        for session in (world.alice_session, new_sid("SE")):
            c = await RawClient.open(server.ws_url, encoding)
            try:
                reply = await c.register(token, resume=session)
                resumed.append({k: v for k, v in reply.items() if k != "session"})
                assert reply["type"] == "registered" and reply["resumed"] is False and reply["session"] != world.alice_session
                assert reply["account"] == b.sid
            finally:
                await c.close()
        attempts += 1
        assert resumed[0] == resumed[1], resumed

        # alice changes her presence: B, subscribed to "alice" (in B's account), hears nothing.
        assert [f["type"] for f in await _answers(mallory, {"type": "subscribe", "id": 13, "identities": ["alice"]})] == ["subscribed"]
        await world.alice.send({"type": "presence", "id": "p", "status": status})
        assert [f["type"] for f in await sync(world.alice)] == ["ok"]
        await asyncio.sleep(0.05)
        assert not [f for f in await sync(mallory) if f["type"] == "presence_update"]
    finally:
        await mallory.close()
    return attempts


async def test_wire_isolation_matrix(world: World) -> None:
    # Both encodings: the refusals are built once, but each codec writes them.
    attempts = 0
    for encoding, status in (("json", "busy"), ("msgpack", "away")):
        attempts += await _wire_attempts(world, encoding, status)

    # A's parties saw nothing of it (the ok above was alice's own presence change) ...
    assert await sync(world.bob) == [], "bob was told of B's frames"
    # ... and A's call and message are untouched: bob still answers the call, alice still acks.
    await world.bob.send({"type": "accept", "id": "a", "call": world.child_call_sid})
    assert (await world.bob.recv_type("ok"))["id"] == "a"
    assert (await world.alice.recv_type("call_progress"))["status"] in ("ringing", "answered")
    await world.alice.send({"type": "ack", "id": "k", "sid": world.in_app_sid, "read": True})
    assert (await world.alice.recv_type("ok"))["id"] == "k"
    print(f"wire isolation matrix: JSON and MessagePack, {attempts} comparisons")
