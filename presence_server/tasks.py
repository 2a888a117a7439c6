"""Background tasks a component starts and must not lose: kept referenced
(asyncio holds only weak references), their failures logged, and all of them
cancelled when the component closes."""

from __future__ import annotations

import asyncio
from typing import Any, Coroutine, Iterable

import structlog

log = structlog.get_logger(__name__)


class TaskSet:
    def __init__(self, name: str) -> None:
        self._name = name
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task failed", component=self._name, exc_info=task.exception())

    async def close(self) -> None:
        await cancel_and_wait(self._tasks)


CANCEL_AGAIN_AFTER = 0.5  # seconds


async def cancel_and_wait(tasks: Iterable[asyncio.Task[Any]]) -> None:
    """Cancel the tasks and wait until every one has ended, cancelling again
    any still running after CANCEL_AGAIN_AFTER. A cancellation can be lost on
    Python 3.11: asyncio.wait_for (which redis-py wraps around socket writes)
    swallows one that arrives as its inner future completes, and a loop that
    catches the error the command then raises goes on. Without a second
    cancellation such a loop (a sweeper, the send dispatcher) would keep a
    stopping process alive until its supervisor killed it."""
    pending = {t for t in tasks if not t.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=CANCEL_AGAIN_AFTER)
    for task in tasks:
        if task.done() and not task.cancelled():
            task.exception()  # retrieved: its failure was logged (TaskSet) or is of no interest now
