"""HTTP and WebSocket by hand, over a plain socket: for attacks that a proper
client library refuses to make (slow, oversized, malformed, never reading)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct
from dataclasses import dataclass

OP_TEXT, OP_BINARY, OP_CONTINUATION, OP_CLOSE = 0x1, 0x2, 0x0, 0x8


@dataclass
class HttpAnswer:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes

    def json(self) -> dict:
        return json.loads(self.body)


async def connect(port: int, *, rcvbuf: int | None = None) -> socket.socket:
    """A non-blocking TCP socket to 127.0.0.1:port (``rcvbuf``: a small receive
    buffer, so that a client that does not read stalls the sender sooner)."""
    sock = socket.socket()
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    return sock


async def send(sock: socket.socket, data: bytes) -> None:
    await asyncio.get_running_loop().sock_sendall(sock, data)


async def read_head(sock: socket.socket, timeout: float = 5.0) -> tuple[HttpAnswer, bytes]:
    """Read a response head; returns it (body empty) and the bytes read past it."""
    loop = asyncio.get_running_loop()
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = await asyncio.wait_for(loop.sock_recv(sock, 65536), timeout)
        if not chunk:
            raise ConnectionError(f"closed before a full response head: {buf[:200]!r}")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return HttpAnswer(int(status_line.split()[1]), headers, b""), rest


async def read_answer(sock: socket.socket, timeout: float = 5.0) -> HttpAnswer:
    """A whole response (by Content-Length, else until the peer closes)."""
    answer, body = await read_head(sock, timeout)
    return await read_body(sock, answer, body, timeout)


async def read_body(sock: socket.socket, answer: HttpAnswer, body: bytes = b"", timeout: float = 5.0) -> HttpAnswer:
    """The rest of ``answer``'s body (``body``: what came with the head)."""
    loop = asyncio.get_running_loop()
    length = answer.headers.get("content-length")
    while length is None or len(body) < int(length):
        chunk = await asyncio.wait_for(loop.sock_recv(sock, 65536), timeout)
        if not chunk:
            break
        body += chunk
    answer.body = body
    return answer


async def closed_after(sock: socket.socket, timeout: float) -> bool:
    """True if the peer closes (EOF or reset) within ``timeout``; what it sends first is skipped."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout):
            while await loop.sock_recv(sock, 65536):
                pass
    except TimeoutError:
        return False
    except ConnectionError:
        pass
    return True


def upgrade_request(path: str = "/v1/connect", *, protocol: str = "presence.v1.json", extra: str = "") -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: {protocol}\r\n{extra}\r\n"
    ).encode()


async def websocket(port: int, *, protocol: str = "presence.v1.json", extra: str = "", rcvbuf: int | None = None) -> tuple[socket.socket, HttpAnswer]:
    """A socket after a WebSocket upgrade (the answer's status says if it took;
    a refusal's body is read too)."""
    sock = await connect(port, rcvbuf=rcvbuf)
    await send(sock, upgrade_request(protocol=protocol, extra=extra))
    answer, rest = await read_head(sock)
    if answer.status != 101:
        return sock, await read_body(sock, answer, rest)
    assert not rest, "the server spoke before the client"
    return sock, answer


def frame_header(length: int, opcode: int = OP_TEXT, *, fin: bool = True, rsv1: bool = False) -> tuple[bytes, bytes]:
    """A client frame's header (masked, as clients must) and its mask."""
    first = bytes([(0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode])
    if length < 126:
        size = bytes([0x80 | length])
    elif length < 65536:
        size = bytes([0x80 | 126]) + struct.pack("!H", length)
    else:
        size = bytes([0x80 | 127]) + struct.pack("!Q", length)
    mask = os.urandom(4)
    return first + size + mask, mask


def masked(payload: bytes, mask: bytes) -> bytes:
    n = len(payload)
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big") if n else b""


def frame(payload: bytes, opcode: int = OP_TEXT, *, fin: bool = True, rsv1: bool = False) -> bytes:
    header, mask = frame_header(len(payload), opcode, fin=fin, rsv1=rsv1)
    return header + masked(payload, mask)


async def read_frame(sock: socket.socket, buffer: bytearray, timeout: float = 5.0) -> tuple[int, bytes]:
    """The next server frame (unmasked): (opcode, payload). ``buffer`` carries
    bytes read past a frame over to the next call."""
    loop = asyncio.get_running_loop()

    async def need(n: int) -> None:
        while len(buffer) < n:
            chunk = await asyncio.wait_for(loop.sock_recv(sock, 65536), timeout)
            if not chunk:
                raise ConnectionError("closed mid-frame")
            buffer.extend(chunk)

    await need(2)
    opcode, length = buffer[0] & 0x0F, buffer[1] & 0x7F
    start = 2
    if length == 126:
        await need(4)
        length, start = struct.unpack("!H", bytes(buffer[2:4]))[0], 4
    elif length == 127:
        await need(10)
        length, start = struct.unpack("!Q", bytes(buffer[2:10]))[0], 10
    await need(start + length)
    payload = bytes(buffer[start : start + length])
    del buffer[: start + length]
    return opcode, payload


def close_code(payload: bytes) -> int:
    return struct.unpack("!H", payload[:2])[0]
