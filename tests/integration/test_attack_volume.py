"""Attacks by volume on the edges (issue 8, item 4): oversized frames, request
lines, headers and bodies, compression and nesting bombs, slowloris clients,
and clients that never read. Real server, real sockets; each attack must get a
precise answer, cost bounded memory, and leave the process serving others.

The figures printed (run with -s) are the ones in docs/reliability.md#attacks.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
import tracemalloc
import zlib
from typing import AsyncIterator

import aiohttp
import msgpack
import pytest

from presence_server.gateway.gateway import CLOSE_CUTOFF
from protocol.errors import ErrorCode
from tests.helpers import rawhttp
from tests.helpers.servers import RunningServer, start_server
from tests.helpers.wsclient import RawClient

LIMIT = 64 * 1024  # the default [gateway] max_frame_bytes


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


async def still_serving(server: RunningServer) -> None:
    """The process is up and a fresh session works end to end."""
    client = await RawClient.open(server.ws_url)
    assert (await client.register(server.token("carol")))["type"] == "registered"
    await client.send({"type": "ping", "id": "alive"})
    assert await client.recv() == {"type": "pong", "id": "alive"}
    await client.close()
    async with aiohttp.ClientSession() as http, http.get(server.http_url + "/healthz") as resp:
        assert resp.status == 200


async def registered_raw(server: RunningServer, identity: str, *, protocol: str = "presence.v1.json", extra: str = "",
                         rcvbuf: int | None = None) -> tuple[rawhttp.socket.socket, bytearray]:
    sock, answer = await rawhttp.websocket(server.node.port, protocol=protocol, extra=extra, rcvbuf=rcvbuf)
    assert answer.status == 101, answer
    register = {"type": "register", "token": server.token(identity)}
    binary = protocol.endswith("msgpack")
    payload = msgpack.packb(register) if binary else json.dumps(register).encode()
    await rawhttp.send(sock, rawhttp.frame(payload, rawhttp.OP_BINARY if binary else rawhttp.OP_TEXT))
    buffer = bytearray()
    _, reply = await rawhttp.read_frame(sock, buffer)
    decoded = msgpack.unpackb(reply) if binary else json.loads(reply)
    assert decoded["type"] == "registered", decoded
    return sock, buffer


async def close_frame(sock: rawhttp.socket.socket, buffer: bytearray, timeout: float = 5.0) -> tuple[int, list[bytes]]:
    """Read up to the server's close frame: (close code, the data frames before it)."""
    before = []
    while True:
        opcode, payload = await rawhttp.read_frame(sock, buffer, timeout)
        if opcode == rawhttp.OP_CLOSE:
            return rawhttp.close_code(payload), before
        before.append(payload)


# -- oversized and malformed frames ------------------------------------------------------


@pytest.mark.parametrize("encoding", ["json", "msgpack"])
async def test_frame_just_over_the_limit_is_answered_10006_then_closed_4009(server: RunningServer, encoding: str) -> None:
    client = await RawClient.open(server.ws_url, encoding)
    assert (await client.register(server.token("alice")))["type"] == "registered"
    await client.send({"type": "ping", "pad": "x" * LIMIT})  # a few bytes over the limit
    err = await client.recv()
    assert err["type"] == "error" and err["code"] == ErrorCode.FRAME_TOO_LARGE.code and err["fatal"] is True
    assert "the limit is 65536" in err["message"]
    assert (await client.closed())[0] == 4009
    await still_serving(server)


async def test_a_frame_declaring_a_gigabyte_is_refused_by_its_header_alone(server: RunningServer) -> None:
    sock, buffer = await registered_raw(server, "alice")
    header, mask = rawhttp.frame_header(1 << 30)  # 1 GiB announced; 64 KiB ever sent
    tracemalloc.start()
    try:
        await rawhttp.send(sock, header + rawhttp.masked(b"x" * LIMIT, mask))
        code, _ = await close_frame(sock, buffer)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert code == 1009
    print(f"\n1 GiB frame header: close 1009, peak traced memory {peak / 1024:.0f} KiB")
    assert peak < 4 * 1024 * 1024
    await still_serving(server)


async def test_fragments_adding_up_past_twice_the_limit_are_refused(server: RunningServer) -> None:
    sock, buffer = await registered_raw(server, "alice")
    piece = b"x" * (LIMIT // 2)
    first = rawhttp.frame(piece, rawhttp.OP_TEXT, fin=False)
    more = rawhttp.frame(piece, rawhttp.OP_CONTINUATION, fin=False)
    await rawhttp.send(sock, first + more * 8)  # 288 KiB in fragments of 32 KiB; the limit is twice 64 KiB
    code, _ = await close_frame(sock, buffer)
    assert code == 1009
    await still_serving(server)


async def test_a_compression_bomb_is_refused_after_inflating_no_more_than_the_limit(server: RunningServer) -> None:
    sock, answer = await rawhttp.websocket(server.node.port, extra="Sec-WebSocket-Extensions: permessage-deflate\r\n")
    assert answer.status == 101 and "permessage-deflate" in answer.headers.get("sec-websocket-extensions", "")
    await rawhttp.send(sock, rawhttp.frame(json.dumps({"type": "register", "token": server.token("alice")}).encode()))
    buffer = bytearray()
    _, reply = await rawhttp.read_frame(sock, buffer)
    assert json.loads(reply)["type"] == "registered"
    # 120 MiB of zeros deflate to ~120 KiB (deflate's best is about 1:1000):
    # under twice the limit compressed, 1900 times over it inflated.
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    chunk = bytes(1 << 20)
    compressed = b"".join(deflate.compress(chunk) for _ in range(120)) + deflate.flush(zlib.Z_SYNC_FLUSH)
    compressed = compressed[:-4]  # permessage-deflate drops the sync flush's 00 00 ff ff
    assert len(compressed) < 2 * LIMIT
    tracemalloc.start()
    try:
        await rawhttp.send(sock, rawhttp.frame(compressed, rawhttp.OP_TEXT, rsv1=True))
        code, _ = await close_frame(sock, buffer)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert code == 1009
    print(f"\ndeflate bomb ({len(compressed)} bytes -> 120 MiB): close 1009, peak traced memory {peak / 1024:.0f} KiB")
    assert peak < 8 * 1024 * 1024
    await still_serving(server)


@pytest.mark.parametrize(
    ("encoding", "payload", "detail"),
    [
        ("json", "[" * 30000 + "]" * 30000, "nested too deeply"),
        ("json", '{"type": "ping", "id": ' + "9" * 60000 + "}", "ValueError"),  # past Python's int digits limit
        ("msgpack", b"\x91" * 60000 + b"\xc0", "StackError"),  # arrays in arrays, 60000 deep
        ("msgpack", b"\xdd\xff\xff\xff\xff", "ValueError"),  # an array claiming 4 billion items
        ("msgpack", b"\xdf\xff\xff\xff\xff", "ValueError"),  # a map claiming 4 billion pairs
        ("msgpack", b"\xdb\xff\xff\xff\xff", "ValueError"),  # a string claiming 4 GiB
    ],
)
async def test_nesting_and_length_bombs_are_answered_10001_and_the_session_goes_on(
    server: RunningServer, encoding: str, payload: str | bytes, detail: str
) -> None:
    client = await RawClient.open(server.ws_url, encoding)
    assert (await client.register(server.token("alice")))["type"] == "registered"
    await client.send_raw(payload)
    err = await client.recv()
    assert err["code"] == ErrorCode.FRAME_UNDECODABLE.code and err["fatal"] is False and detail in err["message"], err
    await client.send({"type": "ping", "id": "after"})
    assert await client.recv() == {"type": "pong", "id": "after"}


# -- oversized HTTP -----------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/Accounts/AC0/Presence", "/v1/connect"])
@pytest.mark.parametrize(
    "make_request",
    [
        pytest.param(lambda path: f"GET {path}?{'q' * 9000} HTTP/1.1\r\nHost: x\r\n\r\n".encode(), id="request-line-9000"),
        pytest.param(lambda path: f"GET {path} HTTP/1.1\r\nHost: x\r\nX-Big: {'h' * 9000}\r\n\r\n".encode(), id="header-9000"),
        pytest.param(
            lambda path: (f"GET {path} HTTP/1.1\r\nHost: x\r\n" + "".join(f"X-H{i}: v\r\n" for i in range(200)) + "\r\n").encode(),
            id="headers-200",
        ),
        pytest.param(lambda path: rawhttp.upgrade_request(path, extra=f"Cookie: {'c' * 100000}\r\n"), id="upgrade-cookie-100k"),
        # Malformed rather than oversized: the same 400, the same silence in the log.
        pytest.param(lambda path: b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40 + b"\r\n\r\n", id="tls-on-plain-port"),
        pytest.param(lambda path: f"GET {path} HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n".encode(), id="bad-content-length"),
        pytest.param(lambda path: f"G(T {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode(), id="bad-method"),
    ],
)
async def test_oversized_request_heads_are_answered_400_and_the_connection_closed(
    server: RunningServer, path: str, make_request: object, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="aiohttp.server")
    sock = await rawhttp.connect(server.node.port)
    await rawhttp.send(sock, make_request(path))  # type: ignore[operator]
    answer = await rawhttp.read_answer(sock)
    assert answer.status == 400, answer
    assert await rawhttp.closed_after(sock, 2.0)
    sock.close()
    await still_serving(server)
    # The client's fault: aiohttp logged an error with a traceback, so any client could
    # fill the error log; now it is one debug line of ours (presence_server/logs.py).
    assert not [r for r in caplog.records if r.name == "aiohttp.server"], caplog.records


async def test_a_body_over_a_mebibyte_is_answered_413_without_reading_the_rest(server: RunningServer) -> None:
    acc = server.account
    auth = basic(acc.sid, acc.auth_token)["Authorization"]
    sock = await rawhttp.connect(server.node.port)
    # A 10 GiB body announced; 2 MiB sent. The answer must come without the rest.
    await rawhttp.send(
        sock,
        (
            f"POST /2010-04-01/Accounts/{acc.sid}/Messages.json HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n"
            f"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {10 << 30}\r\n\r\n"
        ).encode(),
    )
    tracemalloc.start()
    try:
        try:
            await rawhttp.send(sock, b"Body=" + b"x" * (2 << 20))
        except ConnectionError:
            pass  # the server answered and closed while we were still sending
        answer = await rawhttp.read_answer(sock)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    sock.close()
    assert answer.status == 413
    body = answer.json()
    assert body["code"] == ErrorCode.REQUEST_TOO_LARGE.code and body["status"] == 413 and "1048576" in body["message"]
    print(f"\n10 GiB body announced: 413 after reading about 1 MiB, peak traced memory {peak / 1024 / 1024:.1f} MiB")
    assert peak < 16 * 1024 * 1024
    await still_serving(server)


# -- slow clients ----------------------------------------------------------------------------


@pytest.fixture
async def impatient() -> AsyncIterator[RunningServer]:
    """A server that gives a request head half a second (real time: aiohttp's own timer)."""
    running = await start_server(http={"header_timeout": 0.5})
    try:
        yield running
    finally:
        await running.node.stop()


async def test_slowloris_clients_are_cut_off_after_the_header_timeout(impatient: RunningServer) -> None:
    port = impatient.node.port

    async def slowloris(request: bytes) -> float:
        """Send the request head a byte every 50 ms; seconds until the server hangs up."""
        sock = await rawhttp.connect(port)
        started = time.monotonic()
        try:
            for byte in request:
                await rawhttp.send(sock, bytes([byte]))
                if await rawhttp.closed_after(sock, 0.05):
                    break
            else:
                raise AssertionError("the whole request head went through")
            return time.monotonic() - started
        except ConnectionError:
            return time.monotonic() - started
        finally:
            sock.close()

    async def silent() -> float:
        sock = await rawhttp.connect(port)
        started = time.monotonic()
        assert await rawhttp.closed_after(sock, 5.0)
        sock.close()
        return time.monotonic() - started

    rest = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-Pad-%d: %s\r\n" % (i, b"p" * 20) for i in range(20)) + b"\r\n"
    times = await asyncio.gather(
        *(slowloris(rest) for _ in range(10)), *(slowloris(rawhttp.upgrade_request()) for _ in range(10)), *(silent() for _ in range(10))
    )
    print(f"\nslowloris (30 connections, header_timeout 0.5 s): cut after {min(times):.2f} to {max(times):.2f} s")
    assert all(0.45 <= t < 1.5 for t in times), times
    # A finished upgrade is not a slow request: the session outlives the header timeout.
    client = await RawClient.open(impatient.ws_url)
    assert (await client.register(impatient.token("alice")))["type"] == "registered"
    await asyncio.sleep(0.8)
    await client.send({"type": "ping", "id": "later"})
    assert await client.recv() == {"type": "pong", "id": "later"}
    await still_serving(impatient)


async def test_a_subscriber_that_never_reads_is_bounded_closed_4013_and_cut_off() -> None:
    pending_limit = 64
    running = await start_server(gateway={"max_pending_frames": pending_limit, "rate": 10000.0, "burst": 10000})
    try:
        server = running
        gateway = server.node.gateway
        # Two subscribers stop reading: one reads again later (and finds 4013),
        # the other never does. A third reads all along.
        late_sock, late_buf = await registered_raw(server, "late", rcvbuf=4096)
        dead_sock, _ = await registered_raw(server, "dead", rcvbuf=4096)
        for sock in (late_sock, dead_sock):
            await rawhttp.send(sock, rawhttp.frame(json.dumps({"type": "subscribe", "identities": ["alice"]}).encode()))
        reader = await RawClient.open(server.ws_url)
        assert (await reader.register(server.token("reader")))["type"] == "registered"
        await reader.send({"type": "subscribe", "identities": ["alice"]})
        await reader.recv_type("subscribed")
        stuck = {c for c in gateway.sessions.values() if c.key and c.key.identity in ("late", "dead")}
        assert len(stuck) == 2
        # Big updates: alice has four sessions with long texts (about 1.7 kB a frame).
        publishers = []
        for _ in range(4):
            pub = await RawClient.open(server.ws_url)
            assert (await pub.register(server.token("alice"), text="t" * 256))["type"] == "registered"
            publishers.append(pub)
        await reader_drain(reader)
        rss_before = rss_bytes()
        max_queued, max_transport, latencies, updates = 0, 0, [], 0
        while any(c.session.state.value != "closed" for c in stuck):
            started = time.monotonic()
            await publishers[0].send({"type": "presence", "text": f"{updates:06d}" + "t" * 250, "id": updates})
            assert (await publishers[0].recv())["type"] == "ok"
            update = await reader.recv_type("presence_update")
            latencies.append(time.monotonic() - started)
            assert update["text"].startswith(f"{updates:06d}")  # the reading subscriber gets every update, in order
            updates += 1
            for conn in stuck:
                max_queued = max(max_queued, sum(len(f) for f in conn._out or ()))
                transport = conn._transport
                if transport is not None:
                    max_transport = max(max_transport, transport.get_write_buffer_size())
            assert updates < 20000, "the stuck subscribers were never closed"
        rss_growth = rss_bytes() - rss_before
        frame = len(json.dumps(update))
        latencies.sort()
        print(
            f"\nnon-reading subscribers: closed (4013) after {updates} updates of {frame} bytes; at most {max_queued} bytes "
            f"queued and {max_transport} bytes in the transport per session; RSS grew {rss_growth / 1024 / 1024:.1f} MiB; "
            f"a reading subscriber's update latency p50 {latencies[len(latencies) // 2] * 1000:.1f} ms, "
            f"max {latencies[-1] * 1000:.1f} ms"
        )
        assert max_queued <= pending_limit * (frame + 16)
        # What the transport holds is bounded by flow control: writes wait while it is over its high-water mark.
        assert max_transport <= 512 * 1024
        assert rss_growth < 32 * 1024 * 1024
        assert latencies[-1] < 1.0
        # The late reader finds its updates, then close 4013 (slow_consumer).
        code, frames = await close_frame(late_sock, late_buf, timeout=10.0)
        assert code == 4013 and frames
        # The one that never reads is cut off (a reset, since its close cannot be written) ...
        await server.advance(CLOSE_CUTOFF + 0.5)
        await asyncio.sleep(0.1)
        assert not any(c in gateway.connections for c in stuck)
        assert {c.key.identity for c in gateway.sessions.values() if c.key} == {"reader", "alice"}
        # ... and its presence ends like any dropped session's, after the grace period.
        await server.advance(server.node.config.presence.grace_period + 2)
        (snap,) = await server.node.presence.query(server.account.sid, ["dead"])
        assert snap.presence.sessions == ()
        for sock in (late_sock, dead_sock):
            sock.close()
        await still_serving(server)
    finally:
        await running.node.stop()


async def reader_drain(client: RawClient) -> None:
    """Skip what is already queued for ``client``."""
    while True:
        try:
            await client.recv(timeout=0.2)
        except TimeoutError:
            return


def rss_bytes() -> int:
    import os

    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def test_shutdown_does_not_wait_on_a_client_that_reads_nothing() -> None:
    # Regression: a close frame queued behind unread data was never written, so
    # stop() waited out its grace and then aiohttp's own timeout on such clients.
    running = await start_server(gateway={"max_pending_frames": 16}, server={"shutdown_grace": 0.5})
    stopped = False
    try:
        sock, _ = await registered_raw(running, "dead", rcvbuf=4096)
        (conn,) = running.node.gateway.sessions.values()
        big = {"type": "pong", "id": "x" * 60000}
        for _ in range(2000):  # the kernel's buffers first, then the queue
            conn.send_wire(big)
            if conn.session.state.value == "closed":
                break
            await asyncio.sleep(0)
        assert conn.session.state.value == "closed"
        started = time.monotonic()
        await running.node.stop()
        stopped = True
        took = time.monotonic() - started
        print(f"\nstop() with a client that reads nothing: {took:.2f} s (shutdown_grace 0.5 s)")
        assert took < 2.0
        sock.close()
    finally:
        if not stopped:
            await running.node.stop()
