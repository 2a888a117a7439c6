"""The clock the SDK's protocol timers run on.

Heartbeats, the idle watchdog, token renewal and reconnect backoff all read
time and sleep through a :class:`Clock`, so a test can drive them with a
manual clock (the server's ``ManualClock`` fits this protocol) instead of
sleeping. Network timeouts (opening a socket, waiting for a reply) stay on the
event loop's real time: they guard against a dead network, which a manual
clock would never notice.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol, runtime_checkable


@runtime_checkable
class Clock(Protocol):
    def time(self) -> float:
        """Wall-clock seconds since the epoch (compared with token expiries)."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (heartbeats, idle detection)."""
        ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """Real time."""

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
