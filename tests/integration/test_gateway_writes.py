"""How the gateway writes frames: straight to the socket while the client keeps
up (no task, one frame built per fan-out), through the queue and its writer
while it does not, and never out of order in between."""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator

import pytest
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from presence_server.gateway.wsframe import ws_frame
from protocol.messages import Pong, SignalRelay
from tests.helpers.servers import RunningServer, start_server
from tests.helpers.wsclient import RawClient

CALL = "CA" + "0" * 32


def parse(data: bytes) -> Frame:
    """One frame, by the websockets library's own parser (as a client reads it)."""
    reader = StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    parser = Frame.parse(reader.read_exact, mask=False)
    try:
        next(parser)
    except StopIteration as done:
        frame: Frame = done.value
        return frame
    raise AssertionError("incomplete frame")


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 70000])
@pytest.mark.parametrize("binary", [False, True])
def test_ws_frame_is_one_whole_unmasked_frame(size: int, binary: bool) -> None:
    data: str | bytes = bytes(range(256)) * (size // 256) + bytes(size % 256) if binary else "é" * (size // 2) + "x" * (size % 2)
    frame = parse(ws_frame(data))
    assert frame.fin and not (frame.rsv1 or frame.rsv2 or frame.rsv3)
    assert frame.opcode is (Opcode.BINARY if binary else Opcode.TEXT)
    assert frame.data == (data if isinstance(data, bytes) else data.encode())


@pytest.fixture
async def running() -> AsyncIterator[RunningServer]:
    server = await start_server(gateway={"max_pending_frames": 10_000})
    try:
        yield server
    finally:
        await server.node.stop()


async def registered(server: RunningServer, identity: str, encoding: str = "json") -> tuple[RawClient, Any]:
    client = await RawClient.open(server.ws_url, encoding)
    reply = await client.register(server.token(identity))
    assert reply["type"] == "registered", reply
    (conn,) = [c for c in server.node.gateway.sessions.values() if c.key is not None and c.key.identity == identity]
    return client, conn


@pytest.mark.parametrize("encoding", ["json", "msgpack"])
async def test_frames_to_a_client_that_keeps_up_need_no_writer_task(running: RunningServer, encoding: str) -> None:
    client, conn = await registered(running, "bob", encoding)
    for i in range(50):
        conn.send_frame(Pong(id=i))
        assert conn._writer is None and conn._out is None  # written there and then
    assert [(await client.recv())["id"] for _ in range(50)] == list(range(50))
    await client.close()


async def test_a_slow_reader_gets_everything_in_order_and_the_queue_goes_when_it_catches_up(running: RunningServer) -> None:
    client, conn = await registered(running, "bob")
    big = {"sdp": "x" * 500_000}
    sent = 0
    # The client reads nothing for now: the socket's buffers fill, and from then on
    # frames wait in the queue, behind what the socket still holds.
    while conn._out is None and sent < 400:
        conn.send_frame(SignalRelay(call=f"{sent}", payload=big))
        sent += 1
    assert conn._out is not None and conn._writer is not None, "the socket never filled up"
    for i in range(20):
        conn.send_frame(Pong(id=i))
    received = []
    for _ in range(sent + 20):
        frame = await client.recv(timeout=20)
        received.append(frame.get("call", frame.get("id")))
    assert received == [str(i) for i in range(sent)] + list(range(20))
    # Caught up: the queue and its task are gone, frames go straight out again.
    for _ in range(100):
        if conn._writer is None:
            break
        await asyncio.sleep(0.01)
    assert conn._writer is None and conn._out is None
    conn.send_frame(Pong(id="after"))
    assert conn._writer is None
    assert (await client.recv())["id"] == "after"
    await client.close()


async def test_a_fan_out_reaches_json_and_msgpack_subscribers_alike(running: RunningServer) -> None:
    watchers = []
    for n in range(6):
        client, _ = await registered(running, f"w{n}", "msgpack" if n % 2 else "json")
        await client.send({"type": "subscribe", "identities": ["pub"], "id": 1})
        assert (await client.recv())["type"] == "subscribed"
        watchers.append(client)
    publisher, _ = await registered(running, "pub")
    first = [await w.recv_type("presence_update") for w in watchers]
    await publisher.send({"type": "presence", "status": "away", "text": "ünïcode", "id": "p"})
    assert (await publisher.recv())["id"] == "p"
    second = [await w.recv_type("presence_update") for w in watchers]
    assert {(u["identity"], u["status"], u["text"], u["version"]) for u in second} == {
        ("pub", "away", "ünïcode", second[0]["version"])
    }
    assert all(s["version"] > f["version"] for f, s in zip(first, second))
    for client in [*watchers, publisher]:
        await client.close()
