"""A TCP proxy the test controls, between server processes and Redis (or any
TCP service): it forwards bytes both ways until told to misbehave.

- ``latency = 0.2``: every chunk waits that long before it is forwarded (in
  its direction's order), so each command's round trip is slower by about
  twice that: a slow Redis, or a slow network.
- ``stall()`` / ``unstall()``: nothing is forwarded (both directions) while
  stalled; connections stay open and bytes pile up (a hung server, a
  partition that drops packets without resetting anything).
- ``drop_all()``: every open connection is closed at once, both sides (a
  Redis restart, a load balancer resetting connections).
- ``refuse = True``: new connections are accepted and closed at once
  (nothing listens); existing ones are left alone.
- ``lose(marker, "request")``: the next chunk towards the upstream that
  contains ``marker`` is not forwarded (a command that never ran);
  ``lose(marker, "reply")``: it is, but nothing more comes back on that
  connection (a command that ran, and whose answer was lost).
- ``restore()``: back to a clean pipe (latency 0, not stalled, accepting).

Counters (``connections``, ``dropped``, ``bytes_up``/``bytes_down``) tell the
test that traffic went through it. Used by the fault suite (tests/chaos).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

CHUNK = 65536


@dataclass(eq=False)  # kept in a set, by identity
class _Pipe:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    replies_lost: bool = False  # nothing from the upstream reaches the client any more


class FaultProxy:
    def __init__(self, upstream_host: str, upstream_port: int, host: str = "127.0.0.1", port: int = 0) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.host = host
        self.port = port
        self.latency = 0.0
        self.refuse = False
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server: asyncio.Server | None = None
        self._pipes: set[_Pipe] = set()
        self._losses: list[tuple[bytes, str]] = []  # (marker, "request" | "reply"), each once
        self.lost = 0  # chunks lost by lose()
        self.connections = 0  # accepted and piped to the upstream
        self.dropped = 0  # closed by drop_all()
        self.refused = 0  # closed at once while refusing
        self.bytes_up = 0
        self.bytes_down = 0

    @property
    def url(self) -> str:
        """A Redis URL through the proxy (database 0)."""
        return f"redis://{self.host}:{self.port}/0"

    @property
    def open_connections(self) -> int:
        return len(self._pipes)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        await self.drop_all(count=False)

    # -- the faults ---------------------------------------------------------------------

    def stall(self) -> None:
        self._flowing.clear()

    def unstall(self) -> None:
        self._flowing.set()

    async def drop_all(self, *, count: bool = True) -> int:
        pipes = list(self._pipes)
        for pipe in pipes:
            self._close(pipe)
        for pipe in pipes:
            for task in pipe.tasks:
                task.cancel()
            await asyncio.gather(*pipe.tasks, return_exceptions=True)
        if count:
            self.dropped += len(pipes)
        return len(pipes)

    def lose(self, marker: bytes, what: str) -> None:
        if what not in ("request", "reply"):
            raise ValueError("lose a 'request' or a 'reply'")
        self._losses.append((marker, what))

    def restore(self) -> None:
        self.latency = 0.0
        self.refuse = False
        self.unstall()

    # -- the pipe -------------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refuse:
            self.refused += 1
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.close()  # the upstream is down: so is the proxy, for this client
            return
        self.connections += 1
        pipe = _Pipe(writer, up_writer)
        self._pipes.add(pipe)
        loop = asyncio.get_running_loop()
        pipe.tasks = [
            loop.create_task(self._forward(reader, up_writer, pipe, up=True)),
            loop.create_task(self._forward(up_reader, writer, pipe, up=False)),
        ]

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, pipe: _Pipe, *, up: bool) -> None:
        # Latency is applied per chunk without reordering: chunks go through a
        # queue whose consumer waits until each one's due time.
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        loop = asyncio.get_running_loop()
        sender = loop.create_task(self._send(queue, writer))
        try:
            while True:
                data = await reader.read(CHUNK)
                if not data:
                    break
                if up:
                    self.bytes_up += len(data)
                    loss = next((entry for entry in self._losses if entry[0] in data), None)
                    if loss is not None:
                        self._losses.remove(loss)
                        self.lost += 1
                        if loss[1] == "request":
                            continue
                        pipe.replies_lost = True
                else:
                    self.bytes_down += len(data)
                    if pipe.replies_lost:
                        continue
                queue.put_nowait((loop.time() + self.latency, data))
            await queue.join()  # what was read is still delivered before the close
        except (ConnectionError, OSError):
            pass
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
            self._close(pipe)

    async def _send(self, queue: asyncio.Queue[tuple[float, bytes]], writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                due, data = await queue.get()
                delay = due - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                await self._flowing.wait()
                writer.write(data)
                await writer.drain()
                queue.task_done()
        except (ConnectionError, OSError):
            # The far side is gone: nothing more can be delivered; unblock join().
            while not queue.empty():
                queue.get_nowait()
                queue.task_done()
            queue.task_done()

    def _close(self, pipe: _Pipe) -> None:
        if pipe in self._pipes:
            self._pipes.discard(pipe)
            for writer in (pipe.client, pipe.upstream):
                with contextlib.suppress(Exception):
                    writer.close()
