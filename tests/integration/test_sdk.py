"""The Python SDK (clients/python/presence_client) against a real server.

No mocks: every test talks to the ``server`` fixture over real sockets. Where
time matters, the SDK runs on a manual clock (the server's own, to test token
renewal against the server's timers; a separate one, to hold a client in its
reconnect backoff while the test changes the world).
"""

from __future__ import annotations

import asyncio
import base64
import itertools
from typing import Any, AsyncIterator, Callable

import aiohttp
import pytest

from presence_client import (
    Backoff,
    ClientState,
    Disconnect,
    NotConnectedError,
    PresenceClient,
    PresenceError,
    PresenceUpdate,
    SessionInfo,
    Status,
    TokenError,
)
from presence_server.clock import ManualClock
from protocol.frames import JSON_SUBPROTOCOL, MSGPACK_SUBPROTOCOL
from protocol.tokens import mint_token
from tests.helpers.servers import RunningServer
from tests.helpers.wsclient import RawClient

ENCODINGS = ["json", "msgpack"]
SUBPROTOCOL = {"json": JSON_SUBPROTOCOL, "msgpack": MSGPACK_SUBPROTOCOL}


# -- helpers ------------------------------------------------------------------------------


class Events:
    """Records the SDK's callbacks; tests wait for a condition on them."""

    def __init__(self) -> None:
        self.connects: list[SessionInfo] = []
        self.disconnects: list[Disconnect] = []
        self.errors: list[Exception] = []
        self._changed = asyncio.Event()

    def on_connect(self, info: SessionInfo) -> None:
        self.connects.append(info)
        self._changed.set()

    def on_disconnect(self, info: Disconnect) -> None:
        self.disconnects.append(info)
        self._changed.set()

    def on_error(self, exc: Exception) -> None:
        self.errors.append(exc)
        self._changed.set()

    def hooks(self) -> dict[str, Any]:
        return {"on_connect": self.on_connect, "on_disconnect": self.on_disconnect, "on_error": self.on_error}

    async def until(self, condition: Callable[[], bool], timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while not condition():
                self._changed.clear()
                await self._changed.wait()


@pytest.fixture
async def make_client(server: RunningServer) -> AsyncIterator[Callable[..., PresenceClient]]:
    """Builds SDK clients for the server; closes them all after the test
    (before the server stops, which would otherwise ask them to reconnect)."""
    made: list[PresenceClient] = []

    def make(identity: str | None = None, *, token: Any = None, url: str | None = None, **options: Any) -> PresenceClient:
        if token is None:
            assert identity is not None
            token = server.token(identity)
        client = PresenceClient(url or server.ws_url, token, **options)
        made.append(client)
        return client

    yield make
    for client in made:
        await client.close()


def sdk_tasks() -> list[asyncio.Task[Any]]:
    """Tasks running SDK or websockets code (the server's own are left out)."""
    found = []
    for task in asyncio.all_tasks():
        code = getattr(task.get_coro(), "cr_code", None)
        filename = code.co_filename if code is not None else ""
        if "presence_client" in filename or "websockets" in filename:
            found.append(task)
    return found


async def rest_presence(server: RunningServer, identity: str) -> dict[str, Any]:
    acc = server.account
    basic = base64.b64encode(f"{acc.sid}:{acc.auth_token}".encode()).decode()
    async with aiohttp.ClientSession(headers={"Authorization": f"Basic {basic}"}) as http:
        async with http.get(f"{server.http_url}/v1/Accounts/{acc.sid}/Presence/{identity}") as resp:
            assert resp.status == 200
            body: dict[str, Any] = await resp.json()
            return body


async def advance(clock: ManualClock, seconds: float, step: float = 5.0) -> None:
    """Move a manual clock in steps, letting real socket I/O (pings, pongs,
    warnings) flow between them, as it would while real time passes."""
    while seconds > 0:
        await clock.advance(min(step, seconds))
        seconds -= step
        await asyncio.sleep(0.01)


def server_connection(server: RunningServer, session_id: str | None) -> Any:
    assert session_id is not None
    return server.node.gateway.sessions[session_id]


async def eventually(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


class TcpProxy:
    """A loopback TCP relay whose current connections can be frozen: bytes
    are then swallowed both ways, like a half-open connection after a network
    drop, where neither side's TCP notices anything."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._links: list[dict[str, Any]] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        link = {"frozen": False, "writers": (writer, up_writer)}
        self._links.append(link)
        pipes = [asyncio.ensure_future(self._pipe(link, reader, up_writer)), asyncio.ensure_future(self._pipe(link, up_reader, writer))]
        self._tasks.update(pipes)
        await asyncio.gather(*pipes)

    async def _pipe(self, link: dict[str, Any], reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                if not link["frozen"]:
                    writer.write(data)
                    await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.transport.abort()

    def freeze(self) -> None:
        for link in self._links:
            link["frozen"] = True

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        for link in self._links:
            for writer in link["writers"]:
                writer.transport.abort()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()


# -- connect and register -------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ENCODINGS)
async def test_connect_registers_presence(server: RunningServer, make_client: Any, encoding: str) -> None:
    events = Events()
    client = make_client("alice", encoding=encoding, status="away", text="on a train", priority=5, capabilities=["voice"], **events.hooks())
    assert client.state.value == "idle" and not client.connected

    info = await client.connect()

    assert client.connected and client.state.value == "connected"
    assert info.session_id == client.session_id and info.session_id.startswith("SE")
    assert (client.identity, client.account_sid) == ("alice", server.account.sid)
    assert info.heartbeat > 0 and info.idle_timeout > info.heartbeat and not info.resumed
    assert events.connects == [info]
    assert server_connection(server, client.session_id).codec.subprotocol == SUBPROTOCOL[encoding]
    body = await rest_presence(server, "alice")
    assert (body["status"], body["text"]) == ("away", "on a train")
    (session,) = body["sessions"]
    assert (session["session"], session["priority"], session["capabilities"]) == (client.session_id, 5, ["voice"])
    assert await client.ping() >= 0


async def test_async_with_and_async_token_callable(server: RunningServer) -> None:
    async def token() -> str:
        await asyncio.sleep(0)
        return server.token("alice")

    async with PresenceClient(server.ws_url, token) as client:
        assert client.connected
        session_id = client.session_id
    assert client.closed and not client.connected
    # bye: the session is gone at once, without a grace period
    body = await rest_presence(server, "alice")
    assert body["status"] == "offline" and body["sessions"] == []
    assert session_id is not None
    assert sdk_tasks() == []


@pytest.mark.parametrize(
    ("make_token", "code"),
    [
        (lambda s: s.token("alice")[:-4] + "AAAA", 20107),  # signature invalid
        (
            lambda s: mint_token(
                key_sid=s.account.key_sid,
                account_sid=s.account.sid,
                identity="alice",
                secret=s.account.key_secret,
                ttl=600,
                now=s.clock.time() - 3600,
            ),
            20104,  # expired
        ),
        (lambda s: s.token("alice", grants={"identity": "alice"}), 20151),  # no presence grant
        (lambda s: "not-a-jwt", 20101),
    ],
)
async def test_refused_token_raises_presence_error_with_server_code(
    server: RunningServer, make_client: Any, make_token: Callable[[RunningServer], str], code: int
) -> None:
    client = make_client(token=make_token(server))
    with pytest.raises(PresenceError) as caught:
        await client.connect()
    assert caught.value.code == code
    assert caught.value.fatal and caught.value.is_auth_refusal
    assert client.state is ClientState.IDLE and client.session_id is None
    assert sdk_tasks() == []


async def test_unreachable_server_raises_connection_error(make_client: Any) -> None:
    client = make_client(token="x.y.z", url="ws://127.0.0.1:9/v1/connect", request_timeout=2)
    with pytest.raises(PresenceError) as caught:
        await client.connect()
    assert isinstance(caught.value, ConnectionError) and caught.value.code is None
    assert sdk_tasks() == []


# -- presence and subscriptions --------------------------------------------------------------


@pytest.mark.parametrize("encoding", ENCODINGS)
async def test_subscriber_sees_presence_changes(server: RunningServer, make_client: Any, encoding: str) -> None:
    alice = make_client("alice", encoding=encoding)
    bob = make_client("bob", encoding="msgpack" if encoding == "json" else "json")
    await alice.connect()
    await bob.connect()
    seen: list[PresenceUpdate] = []
    stream = bob.presence_updates()

    snapshot = await bob.subscribe("alice", "carol", callback=seen.append)

    assert set(snapshot) == {"alice", "carol"}
    assert snapshot["alice"].status is Status.AVAILABLE and snapshot["alice"].online
    assert [s.session_id for s in snapshot["alice"].sessions] == [alice.session_id]
    assert snapshot["carol"].status is Status.OFFLINE and not snapshot["carol"].online
    assert bob.presence_of("alice") == snapshot["alice"]

    await alice.set_presence("busy", text="in a meeting")
    update = await stream.get(timeout=5)
    assert (update.identity, update.status, update.text) == ("alice", Status.BUSY, "in a meeting")
    assert update.previous == snapshot["alice"] and not update.resync
    assert update.presence.version > snapshot["alice"].version
    assert seen == [update]  # the callback got the same update, once
    assert bob.presence_of("alice") == update.presence

    await alice.set_presence(priority=9, capabilities=("voice", "video"))
    update = await stream.get(timeout=5)
    (session,) = update.presence.sessions
    assert (session.status, session.priority, session.capabilities) == (Status.BUSY, 9, ("voice", "video"))

    # an async callback works as well
    async_seen: list[PresenceUpdate] = []

    async def collect(u: PresenceUpdate) -> None:
        async_seen.append(u)

    await bob.subscribe("alice", callback=collect)
    await alice.close()
    await eventually(lambda: len(async_seen) == 1)
    assert async_seen[0].status is Status.OFFLINE and async_seen[0].presence.sessions == ()


async def test_unsubscribe_stops_updates(server: RunningServer, make_client: Any) -> None:
    alice, carol, bob = make_client("alice"), make_client("carol"), make_client("bob")
    for client in (alice, carol, bob):
        await client.connect()
    alice_seen: list[PresenceUpdate] = []
    await bob.subscribe("alice", callback=alice_seen.append)
    await bob.subscribe("carol")
    stream = bob.presence_updates()

    await bob.unsubscribe("alice")
    assert bob.subscriptions == ("carol",) and bob.presence_of("alice") is None

    await alice.set_presence("dnd")
    await carol.set_presence("away")  # a barrier: once carol's update is in, alice's would be too
    update = await stream.get(timeout=5)
    assert (update.identity, update.status) == ("carol", Status.AWAY)
    assert stream.pending() == [] and alice_seen == []
    await bob.unsubscribe("nobody")  # not subscribed: nothing to do, no error


async def test_filtered_stream_and_stream_ends_on_close(server: RunningServer, make_client: Any) -> None:
    alice, carol, bob = make_client("alice"), make_client("carol"), make_client("bob")
    for client in (alice, carol, bob):
        await client.connect()
    await bob.subscribe("alice", "carol")
    only_carol = bob.presence_updates("carol")
    everything = bob.presence_updates()

    await alice.set_presence("away")
    await carol.set_presence("busy")
    assert [u.identity for u in [await everything.get(5), await everything.get(5)]] == ["alice", "carol"]
    assert (await only_carol.get(5)).identity == "carol"

    await bob.close()
    assert [u async for u in only_carol] == []  # ends once the client is closed
    assert only_carol.closed and everything.closed


# -- token renewal ------------------------------------------------------------------------------


def counting_token(server: RunningServer, identity: str, ttl: float) -> tuple[Callable[[], str], list[str]]:
    minted: list[str] = []

    def token() -> str:
        minted.append(server.token(identity, ttl=ttl))
        return minted[-1]

    return token, minted


async def advance_until(clock: ManualClock, condition: Callable[[], bool], limit: float, step: float = 1.0) -> float:
    """Advance a manual clock step by step until ``condition`` holds (real
    I/O flows between steps); returns the time advanced."""
    moved = 0.0
    while not condition():
        assert moved < limit, f"nothing happened within {limit} s"
        await clock.advance(step)
        moved += step
        await asyncio.sleep(0.01)
    return moved


async def skip_to_warning_window(server: RunningServer, ttl: float) -> float:
    """Advance (quickly) to a little before the server can first warn about a
    ``ttl`` token: never earlier than ``token_warning`` before its expiry."""
    seconds = ttl - server.node.config.gateway.token_warning - 5
    await advance(server.clock, seconds)
    return seconds


async def test_token_renewed_on_token_expiring(server: RunningServer, make_client: Any) -> None:
    """renew_before=0: the SDK's own timer would fire only at the expiry
    itself, so a renewal before it can only come from the server's
    token_expiring warning."""
    token, minted = counting_token(server, "alice", ttl=120)
    events = Events()
    client = make_client(token=token, clock=server.clock, renew_before=0, **events.hooks())
    info = await client.connect()
    assert len(minted) == 1
    conn = server_connection(server, client.session_id)

    moved = await skip_to_warning_window(server, 120)
    assert len(minted) == 1
    moved += await advance_until(server.clock, lambda: len(minted) == 2, limit=120)
    await eventually(lambda: client.token_expires is not None and client.token_expires > info.expires)

    assert moved < 120  # before the expiry: the warning did it
    assert conn.token.expires == client.token_expires  # the server holds the renewed token
    assert client.session is not None and client.session.expires == client.token_expires
    # Well past the first token's expiry (and any clock-skew allowance), the
    # session is still there: heartbeats on the same manual clock keep it
    # from idling out.
    await advance(server.clock, 120 + server.node.config.tokens.clock_skew + 5 - moved)
    assert server.clock.time() > info.expires + server.node.config.tokens.clock_skew
    body = await rest_presence(server, "alice")
    assert [s["session"] for s in body["sessions"]] == [client.session_id]
    assert client.connected and events.disconnects == [] and events.errors == []


async def test_token_renewed_on_own_timer(server: RunningServer, make_client: Any) -> None:
    """renew_before longer than the server's warning period: the SDK renews
    before the server could have warned - its own timer at work."""
    warning = server.node.config.gateway.token_warning
    ttl, renew_before = 300, warning + 10
    token, minted = counting_token(server, "alice", ttl=ttl)
    client = make_client(token=token, clock=server.clock, renew_before=renew_before)
    info = await client.connect()
    conn = server_connection(server, client.session_id)

    await advance(server.clock, ttl - renew_before - 10)
    assert len(minted) == 1  # not yet
    moved = ttl - renew_before - 10 + await advance_until(server.clock, lambda: len(minted) == 2, limit=30)
    await eventually(lambda: conn.token.expires > info.expires)

    assert ttl - renew_before <= moved < ttl - warning  # on our timer, before any warning
    assert client.token_expires == conn.token.expires


async def test_short_lived_tokens_are_renewed_without_spinning(server: RunningServer, make_client: Any) -> None:
    """30 s tokens, shorter than the server's 60 s warning period: the server
    warns right after every renewal. The SDK renews at half-life instead of
    at every warning."""
    token, minted = counting_token(server, "alice", ttl=30)
    events = Events()
    client = make_client(token=token, clock=server.clock, **events.hooks())
    info = await client.connect()
    await advance(server.clock, 46)
    assert 3 <= len(minted) <= 5
    assert client.connected and client.session_id == info.session_id
    assert events.errors == [] and events.disconnects == []


async def test_token_renewal_failure_goes_to_on_error(server: RunningServer, make_client: Any) -> None:
    calls = itertools.count()

    def token() -> str:
        if next(calls) > 0:
            raise RuntimeError("token endpoint down")
        return server.token("alice", ttl=120)

    events = Events()
    client = make_client(token=token, clock=server.clock, renew_before=0, **events.hooks())
    await client.connect()
    # the server's token_expiring -> renewal -> the callable raises
    await skip_to_warning_window(server, 120)
    await advance_until(server.clock, lambda: bool(events.errors), limit=120)

    (error,) = events.errors
    assert isinstance(error, TokenError) and isinstance(error.__cause__, RuntimeError)
    assert client.connected  # the session goes on until the token really expires
    with pytest.raises(TokenError):
        await client.renew_token()


async def test_renewal_refused_by_server_is_reported(server: RunningServer, make_client: Any) -> None:
    # A renewed token for another identity is refused (20115, fatal: the
    # server then closes). The SDK reports it and, with a callable, gets a
    # fresh token once and reconnects.
    tokens = iter([server.token("alice", ttl=120), server.token("mallory"), server.token("alice")])
    events = Events()
    client = make_client(token=lambda: next(tokens), clock=server.clock, renew_before=0, backoff=Backoff(0.0), **events.hooks())
    await client.connect()
    await skip_to_warning_window(server, 120)
    await advance_until(server.clock, lambda: len(events.connects) == 2, limit=120)

    renewal_errors = [e for e in events.errors if isinstance(e, TokenError)]
    assert renewal_errors and renewal_errors[0].code == 20115
    assert events.disconnects[0].code == 4001 and events.disconnects[0].will_reconnect
    assert events.connects[1].resumed and events.connects[1].session_id == events.connects[0].session_id


# -- reconnect ---------------------------------------------------------------------------------


async def test_reconnect_resumes_session_without_flap(server: RunningServer, make_client: Any) -> None:
    alice_clock = ManualClock()  # holds alice in her backoff until the test moves it
    events = Events()
    alice = make_client("alice", clock=alice_clock, **events.hooks())
    bob = make_client("bob")
    first = await alice.connect()
    await bob.connect()
    await bob.subscribe("alice")
    stream = bob.presence_updates()

    await server_connection(server, alice.session_id).ws.close(code=1012, message=b"restart")
    await events.until(lambda: len(events.disconnects) == 1)
    lost = events.disconnects[0]
    assert (lost.code, lost.will_reconnect) == (1012, True)
    assert alice.state is ClientState.RECONNECTING and not alice.connected

    # A request made while reconnecting waits for the connection.
    pending = asyncio.ensure_future(alice.set_presence("away", text="back soon"))
    await asyncio.sleep(0.05)
    assert not pending.done()
    await alice_clock.advance(1.0)  # past the backoff (at most 0.5 s at first)
    await events.until(lambda: len(events.connects) == 2)
    await asyncio.wait_for(pending, 5)

    again = events.connects[1]
    assert again.resumed and again.session_id == first.session_id == alice.session_id
    assert alice.connected
    # Bob saw alice go straight to "away": no offline (or any other) update in between.
    update = await stream.get(timeout=5)
    assert (update.status, update.text) == (Status.AWAY, "back soon")
    assert update.previous is not None and update.previous.status is Status.AVAILABLE
    assert stream.pending() == []
    body = await rest_presence(server, "alice")
    assert [s["session"] for s in body["sessions"]] == [first.session_id]


async def test_reconnect_resubscribes_and_reports_what_changed(server: RunningServer, make_client: Any) -> None:
    bob_clock = ManualClock()
    events = Events()
    bob = make_client("bob", clock=bob_clock, **events.hooks())
    carol = make_client("carol")
    await carol.connect()
    await bob.connect()
    seen: list[PresenceUpdate] = []
    await bob.subscribe("carol", "alice", callback=seen.append)

    await server_connection(server, bob.session_id).ws.close(code=1001)
    await events.until(lambda: len(events.disconnects) == 1)
    # While bob is away: carol changes, alice comes online.
    await carol.set_presence("dnd", text="focus")
    alice = make_client("alice")
    await alice.connect()
    await bob_clock.advance(1.0)
    await events.until(lambda: len(events.connects) == 2)
    await eventually(lambda: len(seen) == 2)

    by_identity = {u.identity: u for u in seen}
    assert all(u.resync for u in seen)
    assert (by_identity["carol"].status, by_identity["carol"].previous.status) == (Status.DND, Status.AVAILABLE)  # type: ignore[union-attr]
    assert (by_identity["alice"].status, by_identity["alice"].previous.status) == (Status.AVAILABLE, Status.OFFLINE)  # type: ignore[union-attr]
    carol_now = bob.presence_of("carol")
    assert carol_now is not None and carol_now.text == "focus"
    # and live updates flow on the new connection
    await carol.set_presence("available")
    await eventually(lambda: len(seen) == 3)
    assert seen[2].status is Status.AVAILABLE and not seen[2].resync


async def test_dead_connection_found_by_idle_watchdog(server: RunningServer, make_client: Any) -> None:
    proxy = await TcpProxy(server.node.port).start()  # type: ignore[arg-type]
    try:
        clock = ManualClock()
        events = Events()
        alice = make_client("alice", url=f"ws://127.0.0.1:{proxy.port}/v1/connect", clock=clock, **events.hooks())
        first = await alice.connect()
        proxy.freeze()  # the network goes silent; TCP on both ends sees nothing wrong

        await advance(clock, first.idle_timeout + 1)  # pings go out, no pong comes back
        await events.until(lambda: len(events.disconnects) == 1)
        assert events.disconnects[0].code == 1006 and "idle" in events.disconnects[0].reason

        await clock.advance(1.0)
        await events.until(lambda: len(events.connects) == 2)
        assert events.connects[1].resumed and alice.session_id == first.session_id
    finally:
        await alice.close()
        await proxy.close()


async def test_server_restart_reconnect_frame(server: RunningServer, make_client: Any) -> None:
    clock = ManualClock()
    events = Events()
    alice = make_client("alice", clock=clock, **events.hooks())
    first = await alice.connect()

    gateway = server.node.gateway
    await gateway.shutdown(grace=1.0)  # `reconnect` frame, then close 4012
    await events.until(lambda: len(events.disconnects) == 1)
    assert events.disconnects[0].code == 4012 and events.disconnects[0].will_reconnect
    gateway.accepting = True  # "restarted"

    await clock.advance(0.9)  # retry_after is 1 s: too early yet
    await asyncio.sleep(0.05)
    assert len(events.connects) == 1
    await clock.advance(1.0)
    await events.until(lambda: len(events.connects) == 2)
    assert events.connects[1].resumed and events.connects[1].session_id == first.session_id


async def test_auth_close_with_token_callable_retries_once_with_fresh_token(server: RunningServer, make_client: Any) -> None:
    token, minted = counting_token(server, "alice", ttl=3600)
    clock = ManualClock()
    events = Events()
    alice = make_client(token=token, clock=clock, **events.hooks())
    first = await alice.connect()

    await server_connection(server, alice.session_id).ws.close(code=4002)
    await events.until(lambda: len(events.disconnects) == 1)
    assert events.disconnects[0].will_reconnect
    await clock.advance(1.0)
    await events.until(lambda: len(events.connects) == 2)
    assert len(minted) == 2  # a fresh token, not the refused one
    assert events.connects[1].session_id == first.session_id


async def test_auth_close_with_fixed_token_stops(server: RunningServer, make_client: Any) -> None:
    events = Events()
    alice = make_client("alice", **events.hooks())
    await alice.connect()
    stream = alice.presence_updates()

    await server_connection(server, alice.session_id).ws.close(code=4001)
    await asyncio.wait_for(alice.wait_closed(), 5)

    assert alice.closed and events.disconnects[0].code == 4001 and not events.disconnects[0].will_reconnect
    assert alice.close_error is not None and alice.close_error.is_auth_refusal
    assert events.errors == [alice.close_error]
    assert [u async for u in stream] == []
    with pytest.raises(NotConnectedError):
        await alice.set_presence("away")
    await alice.close()
    assert sdk_tasks() == []


async def test_refused_fresh_token_ends_the_client(server: RunningServer, make_client: Any) -> None:
    tokens = iter([server.token("alice"), "not-a-jwt", server.token("alice")])
    events = Events()
    alice = make_client(token=lambda: next(tokens), backoff=Backoff(0.0), **events.hooks())
    await alice.connect()
    await server_connection(server, alice.session_id).ws.close(code=4002)
    await asyncio.wait_for(alice.wait_closed(), 5)
    assert alice.close_error is not None and alice.close_error.code == 20101  # tried once, then gave up


@pytest.mark.parametrize(
    ("code", "reconnects"),
    [(1000, False), (1001, True), (1011, True), (1012, True), (4000, False), (4005, True), (4009, False), (4013, True)],
)
async def test_which_closes_are_worth_a_reconnect(server: RunningServer, make_client: Any, code: int, reconnects: bool) -> None:
    events = Events()
    alice = make_client("alice", clock=ManualClock(), **events.hooks())  # never advanced: no retry happens
    await alice.connect()
    await server_connection(server, alice.session_id).ws.close(code=code)
    await events.until(lambda: len(events.disconnects) == 1)
    assert events.disconnects[0].code == code and events.disconnects[0].will_reconnect is reconnects
    assert alice.state is (ClientState.RECONNECTING if reconnects else ClientState.CLOSED)


async def test_session_taken_over_elsewhere_is_not_fought_for(server: RunningServer, make_client: Any) -> None:
    events = Events()
    alice = make_client("alice", **events.hooks())
    await alice.connect()
    other = await RawClient.open(server.ws_url)
    reply = await other.register(server.token("alice"), resume=alice.session_id)
    assert reply["resumed"]

    await asyncio.wait_for(alice.wait_closed(), 5)
    assert events.disconnects[0].code == 4010 and not events.disconnects[0].will_reconnect
    assert alice.close_error is not None and alice.close_error.code == 10015
    await other.close()


async def test_reconnect_disabled(server: RunningServer, make_client: Any) -> None:
    events = Events()
    alice = make_client("alice", reconnect=False, **events.hooks())
    await alice.connect()
    await server_connection(server, alice.session_id).ws.close(code=1012)
    await asyncio.wait_for(alice.wait_closed(), 5)
    assert not events.disconnects[0].will_reconnect and alice.close_error is not None


# -- close and misuse ----------------------------------------------------------------------------


async def test_close_leaves_no_tasks(server: RunningServer, make_client: Any) -> None:
    assert sdk_tasks() == []
    bob = make_client("bob")
    await bob.connect()
    bobs = set(sdk_tasks())
    token, _ = counting_token(server, "alice", ttl=3600)
    events = Events()
    alice = make_client(token=token, **events.hooks())
    await alice.connect()
    await alice.subscribe("bob", callback=lambda u: None)
    stream = alice.presence_updates()
    assert set(sdk_tasks()) > bobs  # alice's reader, keepalive, renewal timer, supervisor

    await alice.close()
    await alice.close()  # twice is fine

    assert set(sdk_tasks()) <= bobs
    assert alice.closed and stream.closed
    assert events.disconnects[-1].code == 1000 and not events.disconnects[-1].will_reconnect
    with pytest.raises(NotConnectedError):
        await alice.subscribe("bob")
    with pytest.raises(NotConnectedError):
        await alice.connect()
    await bob.close()
    assert sdk_tasks() == []


async def test_close_while_backing_off(server: RunningServer, make_client: Any) -> None:
    clock = ManualClock()  # never advanced: the client stays in its backoff
    events = Events()
    alice = make_client("alice", clock=clock, **events.hooks())
    await alice.connect()
    await server_connection(server, alice.session_id).ws.close(code=1012)
    await events.until(lambda: len(events.disconnects) == 1)
    waiting = asyncio.ensure_future(alice.ping())
    await asyncio.sleep(0.01)

    await asyncio.wait_for(alice.close(), 1.0)
    with pytest.raises(NotConnectedError):
        await waiting
    assert sdk_tasks() == []


async def test_requests_before_connect(make_client: Any) -> None:
    client = make_client(token="a.b.c")
    with pytest.raises(NotConnectedError):
        await client.set_presence("away")
    with pytest.raises(NotConnectedError):
        await client.subscribe("bob")
    with pytest.raises(NotConnectedError):
        await client.ping()
    await client.close()
    assert client.closed


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"url": "http://example.com/v1/connect"}, ValueError),
        ({"url": 42}, TypeError),
        ({"token": ""}, ValueError),
        ({"token": 123}, TypeError),
        ({"encoding": "xml"}, ValueError),
        ({"status": "offline"}, ValueError),
        ({"status": "sleeping"}, ValueError),
        ({"status": 1}, TypeError),
        ({"text": "x" * 257}, ValueError),
        ({"priority": 128}, ValueError),
        ({"priority": True}, TypeError),
        ({"priority": 1.5}, TypeError),
        ({"capabilities": "voice"}, TypeError),
        ({"capabilities": ["Voice"]}, ValueError),
        ({"capabilities": [f"c{i}" for i in range(17)]}, ValueError),
        ({"request_timeout": 0}, ValueError),
        ({"renew_before": -1}, ValueError),
        ({"backoff": (0.5, 30)}, TypeError),
        ({"on_error": "print"}, TypeError),
        ({"reconnect": "yes"}, TypeError),
    ],
)
def test_constructor_refuses_bad_arguments(kwargs: dict[str, Any], error: type[Exception]) -> None:
    args = {"url": "ws://127.0.0.1:8080/v1/connect", "token": "a.b.c", **kwargs}
    with pytest.raises(error):
        PresenceClient(args.pop("url"), args.pop("token"), **args)


async def test_methods_refuse_bad_arguments(server: RunningServer, make_client: Any) -> None:
    client = make_client("alice")
    await client.connect()
    with pytest.raises(ValueError, match="at least one"):
        await client.set_presence()
    with pytest.raises(ValueError, match="status"):
        await client.set_presence("offline")
    with pytest.raises(ValueError, match="at least one identity"):
        await client.subscribe()
    with pytest.raises(ValueError, match="client:"):
        await client.subscribe("client:bob")
    with pytest.raises(ValueError):
        await client.subscribe("bad identity")
    with pytest.raises(TypeError, match="separate arguments"):
        await client.subscribe(["bob", "carol"])
    with pytest.raises(TypeError):
        await client.subscribe(7)
    with pytest.raises(TypeError):
        await client.subscribe("bob", callback="print")
    with pytest.raises(ValueError):
        await client.unsubscribe("-bob")
    with pytest.raises(TypeError):
        await client.renew_token()  # a fixed token cannot be renewed
    assert client.subscriptions == ()
    assert client.connected  # nothing was sent


async def test_server_refusal_of_a_request_is_raised(server: RunningServer, make_client: Any) -> None:
    # The token grants subscribing to team-* only.
    token = server.token("alice", grants={"identity": "alice", "presence": {"publish": True, "subscribe": ["team-*"]}})
    client = make_client(token=token)
    await client.connect()
    snapshot = await client.subscribe("team-bob")
    assert snapshot["team-bob"].status is Status.OFFLINE
    with pytest.raises(PresenceError) as caught:
        await client.subscribe("carol")
    assert caught.value.code == 20150 and not caught.value.fatal
    assert client.subscriptions == ("team-bob",)  # the refused one is not kept
    assert client.connected


async def test_many_identities_are_sent_in_batches(server: RunningServer, make_client: Any) -> None:
    client = make_client("alice")
    await client.connect()
    names = [f"user{i}" for i in range(250)]  # the server takes 100 per frame
    snapshot = await client.subscribe(*names)
    assert len(snapshot) == 250 and len(client.subscriptions) == 250
    await client.unsubscribe(*names)
    assert client.subscriptions == ()
