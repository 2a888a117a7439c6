"""One server process: the engine, the services and the HTTP/WebSocket front,
with the background loops that keep presence true (timers, leases, sweeping)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Coroutine

import structlog
from aiohttp import web

from protocol.addresses import new_sid

from .accounts import AccountRegistry
from .clock import Clock, SystemClock
from .config import Config
from .engines.memory import MemoryEngine
from .engines.ports import Engine
from .gateway.gateway import Gateway
from .http.app import build_app
from .presence.service import PresenceService
from .presence.subscriptions import SubscriptionHub

log = structlog.get_logger(__name__)


def build_engine(config: Config) -> Engine:
    if config.engine.kind == "memory":
        return MemoryEngine()
    raise NotImplementedError("the redis engine is not built yet (see README: not built)")


class Node:
    def __init__(self, config: Config, *, clock: Clock | None = None, engine: Engine | None = None) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        self.node_id = new_sid("ND")
        self.engine = engine or build_engine(config)
        self.accounts = AccountRegistry(config)
        self.presence = PresenceService(self.engine, self.clock, config.presence)
        self.hub = SubscriptionHub(self.engine.bus)
        self.gateway = Gateway(
            config=config,
            accounts=self.accounts,
            presence=self.presence,
            hub=self.hub,
            clock=self.clock,
            node_id=self.node_id,
        )
        self.app = build_app(self)
        self._runner: web.AppRunner | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.port: int | None = None

    async def start(self, host: str | None = None, port: int | None = None) -> int:
        """Start serving; returns the bound port (useful with port 0)."""
        await self.engine.start()
        self._runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=self.config.server.shutdown_grace)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host or self.config.server.host, self.config.server.port if port is None else port)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        for loop in (self.gateway.timer_loop(), self.gateway.lease_loop(), self._sweep_loop()):
            self._spawn(loop)
        log.info("node started", node_id=self.node_id, port=self.port, engine=self.config.engine.kind)
        return self.port

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        self._tasks.append(asyncio.get_running_loop().create_task(coro))

    async def _sweep_loop(self) -> None:
        while True:
            await self.clock.sleep(self.config.presence.sweep_interval)
            try:
                await self.presence.sweep()
            except Exception:
                log.warning("presence sweep failed; retrying next round", exc_info=True)

    async def stop(self) -> None:
        """Graceful: clients are told to reconnect, then everything closes."""
        await self.gateway.shutdown(self.config.server.shutdown_grace)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self._runner is not None:
            await self._runner.cleanup()
        await self.hub.close()
        await self.engine.close()
        log.info("node stopped", node_id=self.node_id)
