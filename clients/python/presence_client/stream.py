"""``client.presence_updates()``: presence updates as an async iterator."""

from __future__ import annotations

import asyncio
import collections
from typing import Callable

from .models import PresenceUpdate

DEFAULT_MAX_PENDING = 1024


class PresenceUpdateStream:
    """Updates for this client's subscriptions, in arrival order.

    Registered the moment it is created, so no update between creating it and
    the first ``async for`` step is missed. Iteration ends when the stream or
    the client is closed (after the updates already queued are read).

    A consumer that stops reading must not make the client hold updates
    without bound: past ``max_pending`` queued updates the oldest are dropped
    (counted in :attr:`dropped`). ``presence_of()`` always has the latest.
    """

    def __init__(
        self,
        identities: frozenset[str] | None,
        unregister: Callable[[PresenceUpdateStream], None],
        max_pending: int = DEFAULT_MAX_PENDING,
    ) -> None:
        self._identities = identities
        self._unregister = unregister
        self._max_pending = max_pending
        self._queue: collections.deque[PresenceUpdate] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None
        self._ended = False
        self.dropped = 0

    # -- fed by the client ----------------------------------------------------------

    def _put(self, update: PresenceUpdate) -> None:
        if self._ended or (self._identities is not None and update.identity not in self._identities):
            return
        if len(self._queue) >= self._max_pending:
            self._queue.popleft()
            self.dropped += 1
        self._queue.append(update)
        self._wake()

    def _end(self) -> None:
        self._ended = True
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    # -- read by the application ---------------------------------------------------------

    def __aiter__(self) -> PresenceUpdateStream:
        return self

    async def __anext__(self) -> PresenceUpdate:
        while not self._queue:
            if self._ended:
                raise StopAsyncIteration
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._queue.popleft()

    async def get(self, timeout: float | None = None) -> PresenceUpdate:
        """The next update; raises TimeoutError after ``timeout`` seconds and
        StopAsyncIteration when the stream has ended."""
        if timeout is None:
            return await self.__anext__()
        async with asyncio.timeout(timeout):
            return await self.__anext__()

    def pending(self) -> list[PresenceUpdate]:
        """Take every update queued so far, without waiting."""
        items = list(self._queue)
        self._queue.clear()
        return items

    @property
    def closed(self) -> bool:
        return self._ended

    async def aclose(self) -> None:
        """Stop receiving updates; iteration ends once the queue is read."""
        self.close()

    def close(self) -> None:
        if not self._ended:
            self._unregister(self)
            self._end()

    async def __aenter__(self) -> PresenceUpdateStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()
