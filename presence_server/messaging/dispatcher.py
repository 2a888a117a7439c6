"""The send loop of a messaging process: claim due jobs, send them, repeat.

Each round claims jobs per priority class into the free send slots
(``[messaging].concurrency``): first every class gets up to its share of the
free slots (``class_shares``), so a flood of urgent messages never starves
the bulk ones entirely; then what is left goes to the classes in priority
order, so an urgent message overtakes a backlog of bulk ones at the next
round. Claims are leases: a process that dies leaves its jobs to be claimed
again when their leases run out (``[messaging].lease``); a process that stops
cleanly releases them at once.

The loop sleeps until the earliest due job, a local enqueue (the intake wakes
it), a freed slot, or ``poll_interval`` - the last for work enqueued by other
processes.
"""

from __future__ import annotations

import asyncio
import math

import structlog

from protocol.plans import Priority

from ..clock import Clock
from ..config import MessagingConfig
from ..engines.outbound import SendJob
from ..engines.ports import Engine, EngineUnavailable
from ..tasks import TaskSet
from .sender import Sender

log = structlog.get_logger(__name__)


class Dispatcher:
    def __init__(self, engine: Engine, sender: Sender, config: MessagingConfig, clock: Clock, worker: str) -> None:
        self.engine = engine
        self.sender = sender
        self.config = config
        self.clock = clock
        self.worker = worker
        self._wake = asyncio.Event()
        self._in_flight = 0
        self._tasks = TaskSet("messaging")
        self.shares = {Priority[name.upper()]: share for name, share in config.class_shares.items()}

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        backoff = 0.5
        while True:
            try:
                claimed = await self._round()
                backoff = 0.5
            except EngineUnavailable:
                log.warning("send queue unavailable; retrying", delay=backoff)
                await self.clock.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
                continue
            await self._idle(claimed)

    def _allocation(self, free: int) -> dict[Priority, int]:
        return {p: max(1, math.floor(free * share)) for p, share in self.shares.items()}

    async def _round(self) -> int:
        """Claim into the free slots; returns how many jobs were claimed."""
        free = self.config.concurrency - self._in_flight
        if free <= 0:
            return 0
        now = self.clock.time()
        lease_until = now + self.config.lease
        claimed = 0
        guaranteed = self._allocation(free)
        # First pass: each class its share; second: the rest, highest class first.
        for limits in (guaranteed, None):
            for priority in Priority:
                room = free - claimed
                if room <= 0:
                    return claimed
                limit = min(room, self.config.claim_batch, limits[priority] if limits else room)
                jobs = await self.engine.queue.claim(now, int(priority), limit, lease_until, self.worker)
                for job in jobs:
                    self._start(job)
                claimed += len(jobs)
        return claimed

    def _start(self, job: SendJob) -> None:
        self._in_flight += 1

        async def run() -> None:
            try:
                await self.sender.process(job)
            finally:
                self._in_flight -= 1
                self._wake.set()  # a slot is free

        self._tasks.spawn(run())

    async def _idle(self, claimed: int) -> None:
        if self._wake.is_set():
            self._wake.clear()
            await asyncio.sleep(0)  # let the round's sends start before claiming more
            return
        delay = self.config.poll_interval
        if self._in_flight < self.config.concurrency:
            try:
                due = await self.engine.queue.next_due()
            except EngineUnavailable:
                due = None
            if due is not None:
                delay = min(delay, max(0.0, due - self.clock.time()))
        if delay <= 0 and claimed:
            return
        # A job due now that no claim returned (its lease ends exactly now): wait a
        # moment rather than spin.
        delay = max(delay, 0.001)
        sleeper = asyncio.ensure_future(self.clock.sleep(delay))
        waker = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            waker.cancel()
        self._wake.clear()

    async def close(self) -> None:
        await self._tasks.close()
        try:
            released = await self.engine.queue.release(self.worker)
        except EngineUnavailable:
            return  # the leases run out by themselves
        if released:
            log.info("send jobs released for other workers", count=released)
