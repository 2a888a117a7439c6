"""Async iterators the client feeds: ``client.presence_updates()``
(:class:`PresenceUpdateStream`), and ``client.incoming_calls()``,
``client.messages()``, ``call.signals()`` (:class:`ItemStream`)."""

from __future__ import annotations

import asyncio
import collections
from typing import Callable, Generic, TypeVar

from .models import PresenceUpdate

DEFAULT_MAX_PENDING = 1024

T = TypeVar("T")


class ItemStream(Generic[T]):
    """Items (incoming calls, in-app messages, signal payloads) in arrival order.

    Registered the moment it is created, so nothing that arrives between
    creating it and the first ``async for`` step is missed. Iteration ends
    when the stream or its source (the client, or the call) is closed, after
    the items already queued are read. Past ``max_pending`` unread items the
    oldest are dropped (counted in :attr:`dropped`).

    ``on_taken`` (internal) is told of every item the application takes:
    that is when an in-app message counts as handed over, and is acked.
    """

    def __init__(
        self,
        unregister: Callable[[ItemStream[T]], None] | None = None,
        max_pending: int = DEFAULT_MAX_PENDING,
        on_taken: Callable[[T], None] | None = None,
    ) -> None:
        self._unregister = unregister
        self._max_pending = max_pending
        self._on_taken = on_taken
        self._queue: collections.deque[T] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None
        self._ended = False
        self.dropped = 0

    # -- fed by the client ----------------------------------------------------------

    def _put(self, item: T) -> bool:
        """Queue an item; False when the stream has ended (nothing queued)."""
        if self._ended:
            return False
        if len(self._queue) >= self._max_pending:
            self._queue.popleft()
            self.dropped += 1
        self._queue.append(item)
        self._wake()
        return True

    def _end(self) -> None:
        self._ended = True
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _take(self) -> T:
        item = self._queue.popleft()
        if self._on_taken is not None:
            self._on_taken(item)
        return item

    # -- read by the application ---------------------------------------------------------

    def __aiter__(self) -> ItemStream[T]:
        return self

    async def __anext__(self) -> T:
        while not self._queue:
            if self._ended:
                raise StopAsyncIteration
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._take()

    async def get(self, timeout: float | None = None) -> T:
        """The next item; raises TimeoutError after ``timeout`` seconds and
        StopAsyncIteration when the stream has ended."""
        if timeout is None:
            return await self.__anext__()
        async with asyncio.timeout(timeout):
            return await self.__anext__()

    def pending(self) -> list[T]:
        """Take every item queued so far, without waiting."""
        return [self._take() for _ in range(len(self._queue))]

    @property
    def closed(self) -> bool:
        return self._ended

    async def aclose(self) -> None:
        """Stop receiving items; iteration ends once the queue is read."""
        self.close()

    def close(self) -> None:
        if not self._ended:
            if self._unregister is not None:
                self._unregister(self)
            self._end()

    async def __aenter__(self) -> ItemStream[T]:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


class PresenceUpdateStream(ItemStream[PresenceUpdate]):
    """Updates for this client's subscriptions, in arrival order: an
    :class:`ItemStream` that keeps only the identities it was asked for.

    A consumer that stops reading must not make the client hold updates
    without bound: past ``max_pending`` queued updates the oldest are dropped
    (counted in :attr:`dropped`). ``presence_of()`` always has the latest.
    """

    def __init__(
        self,
        identities: frozenset[str] | None,
        unregister: Callable[[ItemStream[PresenceUpdate]], None],
        max_pending: int = DEFAULT_MAX_PENDING,
    ) -> None:
        super().__init__(unregister, max_pending)
        self._identities = identities

    def _put(self, item: PresenceUpdate) -> bool:
        if self._identities is not None and item.identity not in self._identities:
            return False
        return super()._put(item)
