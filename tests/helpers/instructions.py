"""A real instruction server for tests: answers per path, checks every request's
X-Twilio-Signature with the official twilio RequestValidator."""

from __future__ import annotations

import asyncio
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Union

from aiohttp import web
from twilio.request_validator import RequestValidator

Answer = Union[str, Callable[[dict[str, str]], Any]]  # text, or a function giving text or a response (or awaitable)


@dataclass
class Received:
    path: str
    method: str
    params: dict[str, str]
    signature_valid: bool


@dataclass
class InstructionServer:
    auth_token: str
    answers: dict[str, Answer] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)
    _runner: web.AppRunner | None = None
    port: int = 0
    _arrivals: asyncio.Condition = field(default_factory=asyncio.Condition)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def on(self, path: str, answer: Answer) -> str:
        self.answers[path] = answer
        return self.url(path)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        params = dict(await request.post()) if request.method == "POST" else {}
        url = str(request.url)
        if request.method == "GET":
            params = {}
        valid = RequestValidator(self.auth_token).validate(url, params, request.headers.get("X-Twilio-Signature", ""))
        got = Received(request.path, request.method, {k: str(v) for k, v in (params or dict(request.query)).items()}, valid)
        async with self._arrivals:
            self.received.append(got)
            self._arrivals.notify_all()
        answer = self.answers.get(request.path)
        if answer is None:
            return web.Response(status=404, text="no such path")
        result = answer(got.params) if callable(answer) else answer
        if inspect.isawaitable(result):
            result = await result
        if isinstance(result, web.StreamResponse):
            return result
        return web.Response(text=str(result), content_type="application/xml")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def wait_for(self, path: str, count: int = 1, timeout: float = 5.0) -> list[Received]:
        """The requests to ``path`` once there are ``count`` of them."""
        async def arrived() -> list[Received]:
            async with self._arrivals:
                await self._arrivals.wait_for(lambda: len([r for r in self.received if r.path == path]) >= count)
            return [r for r in self.received if r.path == path]

        return await asyncio.wait_for(arrived(), timeout)

    def all_signed(self) -> bool:
        return all(r.signature_valid for r in self.received)
