"""A "private service" for SSRF and XXE tests: an HTTP server on loopback that
the server under test must never reach, counting every request that does."""

from __future__ import annotations

from aiohttp import web


class PrivateListener:
    """An HTTP server on 127.0.0.1 and ::1 (the same port) that counts every request."""

    def __init__(self) -> None:
        self.hits: list[str] = []
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def _count(self, request: web.Request) -> web.Response:
        self.hits.append(f"{request.method} {request.host}{request.path_qs}")
        return web.Response(text="<Response><Say>secret</Say></Response>", content_type="text/xml")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._count)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        v4 = web.TCPSite(self._runner, "127.0.0.1", 0)
        await v4.start()
        self.port = v4._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        await web.TCPSite(self._runner, "::1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
