"""The connection pool of the redis engine's command client (one Redis server).

redis-py's ConnectionPool fails the command that finds every connection in use
with MaxConnectionsError (its default bound is 100 since redis-py 5): a call
burst, or a thousand clients disconnecting at once, made EngineUnavailable
(503, 10016) out of a Redis that was merely busy. Its BlockingConnectionPool
waits instead, but takes a condition variable and a timeout on every command,
~25 % more CPU per command measured here. This pool is redis-py's own until it
is exhausted; only then does a command wait, for a connection another command
releases, up to ``timeout`` seconds (MaxConnectionsError after that, which the
engine reports as EngineUnavailable).

A bound well below "one connection per command in flight" also serves
latency: measured with 200 commands in flight, 50 connections answered in a
quarter of the time 200 did (Redis and the event loop each do less per command
when more of them share a socket read).
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any

import redis.asyncio
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import MaxConnectionsError

# Connections one process keeps to a single Redis at most.
MAX_CONNECTIONS = 128


class WaitingConnectionPool(redis.asyncio.ConnectionPool):
    def __init__(self, *, timeout: float | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.timeout = timeout  # how long a command waits for a connection; None: as long as it takes
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    async def get_connection(self, *args: Any, **kwargs: Any) -> AbstractConnection:
        loop = asyncio.get_running_loop()
        deadline = None if self.timeout is None else loop.time() + self.timeout
        while True:
            try:
                return await super().get_connection(*args, **kwargs)  # type: ignore[no-untyped-call,no-any-return]
            except MaxConnectionsError:
                pass  # all in use: nothing was taken or made; wait for a release
            left = None if deadline is None else deadline - loop.time()
            if left is not None and left <= 0:
                raise MaxConnectionsError(f"no Redis connection free within {self.timeout:g} s ({self.max_connections} in use)")
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiters.append(waiter)
            try:
                await asyncio.wait_for(waiter, left)
            except asyncio.TimeoutError:
                pass  # the loop says so, at the deadline check
            finally:
                if not waiter.done():
                    waiter.cancel()

    async def release(self, connection: AbstractConnection) -> None:
        await super().release(connection)
        # One connection came back: wake the longest waiter still waiting.
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                break
