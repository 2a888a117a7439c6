"""A WebSocket client written for load: an ``asyncio.Protocol`` that speaks just
enough RFC 6455 to hold thousands of sessions from one process.

No SDK, no per-connection task or timer, no reader coroutine: bytes are parsed
in ``data_received`` and each whole message goes to a callback (or to a future
waiting for a frame ``type``), so the load generator spends its CPU on the
wire and not on machinery. What it does not do: extensions (no
permessage-deflate is offered), and checking ``Sec-WebSocket-Accept`` (a
loopback benchmark, not a security boundary). Frames to the server are masked
with a random key per connection, as the RFC requires.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import struct
import time
from typing import Any, Callable

SUBPROTOCOL = "presence.v1.json"

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


def mask(data: bytes, key: bytes) -> bytes:
    n = len(data)
    if not n:
        return data
    keystream = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(keystream, "little")).to_bytes(n, "little")


def encode_frame(payload: bytes, opcode: int = OP_TEXT, key: bytes | None = None) -> bytes:
    """One final, masked client frame."""
    key = key or os.urandom(4)
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    return header + key + mask(payload, key)


def parse_frames(buf: bytearray) -> list[tuple[bool, int, bytes]]:
    """Remove every whole frame from ``buf``: (fin, opcode, payload). Server
    frames are unmasked, but a masked one is unmasked anyway."""
    out = []
    while len(buf) >= 2:
        b0, b1 = buf[0], buf[1]
        n = b1 & 0x7F
        pos = 2
        if n == 126:
            if len(buf) < 4:
                break
            n = struct.unpack_from("!H", buf, 2)[0]
            pos = 4
        elif n == 127:
            if len(buf) < 10:
                break
            n = struct.unpack_from("!Q", buf, 2)[0]
            pos = 10
        key = None
        if b1 & 0x80:
            if len(buf) < pos + 4:
                break
            key = bytes(buf[pos : pos + 4])
            pos += 4
        if len(buf) < pos + n:
            break
        payload = bytes(buf[pos : pos + n])
        del buf[: pos + n]
        if key is not None:
            payload = mask(payload, key)
        out.append((bool(b0 & 0x80), b0 & 0x0F, payload))
    return out


def upgrade_request(host: str, port: int, path: str, subprotocol: str | None = SUBPROTOCOL) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        f"GET {path} HTTP/1.1", f"Host: {host}:{port}", "Upgrade: websocket", "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13",
    ]
    if subprotocol:
        lines.append(f"Sec-WebSocket-Protocol: {subprotocol}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class WSConn(asyncio.Protocol):
    """One client connection. ``on_message(conn, msg, arrived)`` gets every JSON
    message no waiter took (``arrived`` is ``time.perf_counter()`` at parse)."""

    def __init__(self, request: bytes, on_message: Callable[[WSConn, dict[str, Any], float], None] | None = None) -> None:
        self.upgrade_request = request
        self.on_message = on_message
        self.transport: asyncio.Transport | None = None
        self.key = os.urandom(4)
        self.buf = bytearray()
        self.upgraded = asyncio.get_running_loop().create_future()
        self.closed = asyncio.get_running_loop().create_future()
        self.is_upgraded = False
        self.fragments: list[bytes] = []
        self.waiters: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.close_code: int | None = None
        self.tag: Any = None  # the scenario's own data (an identity, an index, ...)
        # Sees each message's bytes first; True means taken (not parsed, no waiter, no on_message).
        self.on_raw: Callable[[WSConn, bytes, float], bool] | None = None

    # -- asyncio.Protocol --------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are not asyncio.Transport
        self.transport.write(self.upgrade_request)  # type: ignore[union-attr]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.is_upgraded:
            end = self.buf.find(b"\r\n\r\n")
            if end == -1:
                return
            head = bytes(self.buf[:end])
            del self.buf[: end + 4]
            status = head.split(b"\r\n", 1)[0]
            if b" 101 " not in status + b" ":
                if not self.upgraded.done():
                    self.upgraded.set_exception(ConnectionError(f"upgrade refused: {status.decode(errors='replace')}"))
                assert self.transport is not None
                self.transport.close()
                return
            self.is_upgraded = True
            if not self.upgraded.done():
                self.upgraded.set_result(time.perf_counter())
        if not self.buf:
            return
        for fin, opcode, payload in parse_frames(self.buf):
            if opcode in (OP_TEXT, OP_BINARY, OP_CONT):
                if not fin:
                    self.fragments.append(payload)
                    continue
                if self.fragments:
                    payload = b"".join(self.fragments) + payload
                    self.fragments.clear()
                self._message(payload)
            elif opcode == OP_PING:
                self.send(payload, OP_PONG)
            elif opcode == OP_CLOSE:
                self.close_code = struct.unpack_from("!H", payload)[0] if len(payload) >= 2 else 1005
                self.send(payload[:2], OP_CLOSE)
                assert self.transport is not None
                self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.upgraded.done():
            self.upgraded.set_exception(exc or ConnectionError("closed before the upgrade"))
        for fut in self.waiters.values():
            if not fut.done():
                fut.set_exception(ConnectionError(f"closed (code {self.close_code})"))
        self.waiters.clear()
        if not self.closed.done():
            self.closed.set_result(self.close_code)

    # -- messages ------------------------------------------------------------------

    def _message(self, payload: bytes) -> None:
        arrived = time.perf_counter()
        if self.on_raw is not None and not self.waiters and self.on_raw(self, payload, arrived):
            return  # taken without parsing (a fan-out counting arrivals)
        msg = json.loads(payload)
        fut = self.waiters.pop(msg.get("type", ""), None) if self.waiters else None
        if fut is not None and not fut.done():
            fut.set_result(msg)
        elif self.on_message is not None:
            self.on_message(self, msg, arrived)

    def send(self, payload: bytes, opcode: int = OP_TEXT) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(encode_frame(payload, opcode, self.key))

    def send_json(self, obj: dict[str, Any]) -> None:
        self.send(json.dumps(obj, separators=(",", ":")).encode())

    def expect(self, *types: str) -> asyncio.Future[dict[str, Any]]:
        """A future for the next message of one of these types (``error`` too, which
        the caller checks): register the waiter before sending the request."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[dict[str, Any]] = loop.create_future()
        for t in (*types, "error"):
            self.waiters[t] = fut
        fut.add_done_callback(lambda _f: [self.waiters.pop(t, None) for t in (*types, "error") if self.waiters.get(t) is _f])
        return fut

    async def request(self, obj: dict[str, Any], *answer: str, timeout: float = 30.0) -> dict[str, Any]:
        fut = self.expect(*answer)
        self.send_json(obj)
        msg = await asyncio.wait_for(fut, timeout)
        if msg.get("type") == "error":
            raise RuntimeError(f"{obj.get('type')} refused: {msg}")
        return msg

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.send(struct.pack("!H", 1000), OP_CLOSE)
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


async def connect(
    host: str, port: int, path: str = "/v1/connect", *, subprotocol: str | None = SUBPROTOCOL,
    on_message: Callable[[WSConn, dict[str, Any], float], None] | None = None, timeout: float = 30.0,
) -> WSConn:
    """Open a connection and wait for the 101."""
    loop = asyncio.get_running_loop()
    request = upgrade_request(host, port, path, subprotocol)
    _, conn = await asyncio.wait_for(loop.create_connection(lambda: WSConn(request, on_message), host, port), timeout)
    await asyncio.wait_for(conn.upgraded, timeout)
    return conn


class Pinger:
    """One timer for every connection: sends each a ``ping`` frame every
    ``interval`` seconds, spread over the interval (the product closes a session
    silent for its idle timeout, 60 s by default)."""

    def __init__(self, conns: list[WSConn], interval: float = 20.0) -> None:
        self.conns = conns
        self.interval = interval
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        frame = json.dumps({"type": "ping"}).encode()
        while True:
            n = max(1, len(self.conns))
            batch = max(1, n // 100)
            for i in range(0, n, batch):
                for c in self.conns[i : i + batch]:
                    c.send(frame)
                await asyncio.sleep(self.interval * batch / n)

    def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()


class Opened:
    """Sessions opened by :func:`open_many`, with each one's times (perf_counter):
    connect started, 101 received, first answer received."""

    def __init__(self) -> None:
        self.conns: list[WSConn] = []
        self.started: list[float] = []
        self.upgraded: list[float] = []
        self.answered: list[float] = []
        self.errors: dict[str, int] = {}
        self.t0 = 0.0
        self.t1 = 0.0

    @property
    def elapsed(self) -> float:
        return self.t1 - self.t0

    @property
    def rate(self) -> float:
        return len(self.conns) / self.elapsed if self.elapsed > 0 else 0.0

    def latencies(self) -> list[float]:
        return [a - s for s, a in zip(self.started, self.answered)]


async def open_many(
    host: str, port: int, n: int, first_frame: Callable[[int], dict[str, Any]], answer: str = "registered", *,
    concurrency: int = 100, path: str = "/v1/connect", on_message: Callable[[WSConn, dict[str, Any], float], None] | None = None,
    timeout: float = 60.0, into: Opened | None = None, first: int = 0,
) -> Opened:
    """Open ``n`` sessions, ``concurrency`` at a time: connect, upgrade, send
    ``first_frame(i)``, wait for its ``answer``. Failures are counted by kind."""
    result = into or Opened()
    loop = asyncio.get_running_loop()
    next_i = first
    end = first + n

    async def worker() -> None:
        nonlocal next_i
        while next_i < end:
            i = next_i
            next_i += 1
            t_start = time.perf_counter()
            try:
                conn = await connect(host, port, path, on_message=on_message, timeout=timeout)
                t_up = conn.upgraded.result()
                conn.tag = i
                fut = conn.expect(answer)
                conn.send_json(first_frame(i))
                msg = await asyncio.wait_for(fut, timeout)
                if msg.get("type") != answer:
                    raise RuntimeError(f"{msg.get('type')} {msg.get('code')}")
            except (OSError, asyncio.TimeoutError, RuntimeError, ConnectionError) as exc:
                name = type(exc).__name__ + (f" {exc}" if isinstance(exc, RuntimeError) else "")
                result.errors[name] = result.errors.get(name, 0) + 1
                continue
            result.conns.append(conn)
            result.started.append(t_start)
            result.upgraded.append(t_up)
            result.answered.append(time.perf_counter())

    result.t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    result.t1 = time.perf_counter()
    del loop
    return result


async def close_all(conns: list[WSConn], timeout: float = 10.0) -> None:
    for c in conns:
        c.close()
    pending = [c.closed for c in conns if not c.closed.done()]
    if pending:
        await asyncio.wait(pending, timeout=timeout)
    for c in conns:
        c.abort()
