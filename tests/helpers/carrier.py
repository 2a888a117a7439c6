"""A real carrier HTTP API on loopback, for the http provider's tests."""

from __future__ import annotations

import asyncio
import itertools
import json
from typing import Any, Callable

from aiohttp import web


class FakeCarrier:
    """An HTTP server that answers each POST as told and remembers what it got."""

    def __init__(self) -> None:
        self.status = 200
        self.answer: bytes = b'{"id": "carrier-1"}'
        self.delay = 0.0
        self.requests: list[dict[str, Any]] = []
        self.headers: dict[str, str] = {}
        # When set: (request JSON) -> (status, answer); replaces status/answer. The
        # default answer of such a function may use next_id() for fresh ids.
        self.responder: Callable[[dict[str, Any]], tuple[int, Any]] | None = None
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        self.requests.append({"headers": dict(request.headers), "json": json.loads(raw) if raw else None})
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.responder is not None:
            status, answer = self.responder(self.requests[-1]["json"])
            return web.json_response(answer, status=status)
        return web.Response(status=self.status, body=self.answer, headers=self.headers, content_type="application/json")

    def next_id(self) -> str:
        return f"c-{next(self._ids)}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/messages", self.handle)
        self._runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/messages"

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


