"""An HTTP/1.1 keep-alive client written for load: one ``asyncio.Protocol`` per
connection, requests prepared as bytes, responses parsed just enough (status
line, ``Content-Length``), one request in flight per connection (no
pipelining). Each worker sends its next request as soon as the previous one is
answered (a closed loop), so the figure is the server's throughput at that
concurrency."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Callable


class HTTPConn(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.lost = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        end = self.buf.find(b"\r\n\r\n")
        if end == -1:
            return
        head = bytes(self.buf[:end]).lower()
        length = 0
        pos = head.find(b"\r\ncontent-length:")
        if pos != -1:
            line_end = head.find(b"\r\n", pos + 2)
            length = int(head[pos + 17 : line_end if line_end != -1 else None].strip())
        elif b"transfer-encoding: chunked" in head:
            raise RuntimeError("chunked responses are not supported by this load client")
        if len(self.buf) < end + 4 + length:
            return
        status = int(head[9:12])
        body = bytes(self.buf[end + 4 : end + 4 + length])
        del self.buf[: end + 4 + length]
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result((status, body))

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc or ConnectionError("closed"))
        if not self.lost.done():
            self.lost.set_result(None)

    async def request(self, data: bytes) -> tuple[int, bytes]:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return await self.waiter


def get_request(host: str, port: int, path: str, headers: dict[str, str] | None = None) -> bytes:
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}"] + [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def post_request(host: str, port: int, path: str, body: bytes, headers: dict[str, str] | None = None,
                 content_type: str = "application/x-www-form-urlencoded") -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", f"Content-Type: {content_type}", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def open_conn(host: str, port: int) -> HTTPConn:
    loop = asyncio.get_running_loop()
    _, conn = await loop.create_connection(HTTPConn, host, port)
    return conn


@dataclass
class Load:
    n: int
    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    t0: float = 0.0
    t1: float = 0.0

    @property
    def ok(self) -> int:
        return len(self.latencies)

    @property
    def rate(self) -> float:
        return self.ok / (self.t1 - self.t0) if self.t1 > self.t0 else 0.0


async def closed_loop(host: str, port: int, n: int, request_of: Callable[[int], bytes], connections: int, ok_status: int = 200) -> Load:
    """``n`` requests over ``connections`` keep-alive connections; latencies of
    the ``ok_status`` answers, other statuses counted."""
    result = Load(n)
    conns = [await open_conn(host, port) for _ in range(connections)]
    next_i = 0

    async def worker(conn: HTTPConn) -> None:
        nonlocal next_i
        while next_i < n:
            i = next_i
            next_i += 1
            t = time.perf_counter()
            try:
                status, _ = await conn.request(request_of(i))
            except (OSError, ConnectionError, RuntimeError) as exc:
                result.errors[type(exc).__name__] = result.errors.get(type(exc).__name__, 0) + 1
                return
            if status == ok_status:
                result.latencies.append(time.perf_counter() - t)
            else:
                result.statuses[status] = result.statuses.get(status, 0) + 1

    result.t0 = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in conns))
    result.t1 = time.perf_counter()
    for c in conns:
        if c.transport is not None:
            c.transport.close()
    return result
