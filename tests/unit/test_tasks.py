"""Closing a TaskSet (and stopping a node's loops) ends every task, even one that
lost its first cancellation, as a loop does on Python 3.11 when asyncio.wait_for
inside redis-py swallows it and the loop catches the error that follows."""

from __future__ import annotations

import asyncio

from presence_server.tasks import TaskSet, cancel_and_wait


async def a_loop_that_loses_one_cancellation(rounds: list[int]) -> None:
    lost = False
    while True:
        try:
            await asyncio.sleep(0.01)
        except asyncio.CancelledError:
            if lost:
                raise
            lost = True  # swallowed, as asyncio.wait_for may on 3.11: the loop goes on
        rounds.append(1)


async def test_a_task_set_closes_a_loop_that_lost_its_cancellation() -> None:
    rounds: list[int] = []
    tasks = TaskSet("test")
    tasks.spawn(a_loop_that_loses_one_cancellation(rounds))
    tasks.spawn(asyncio.sleep(3600))
    await asyncio.sleep(0.05)
    await asyncio.wait_for(tasks.close(), 5)  # before: waited for ever
    assert rounds


async def test_cancel_and_wait_leaves_finished_and_failed_tasks_alone() -> None:
    async def fail() -> None:
        raise RuntimeError("boom")

    done = asyncio.ensure_future(asyncio.sleep(0))
    failed = asyncio.ensure_future(fail())
    await asyncio.sleep(0.01)
    await cancel_and_wait([done, failed, asyncio.ensure_future(asyncio.sleep(3600))])
    assert done.done() and not done.cancelled() and isinstance(failed.exception(), RuntimeError)
