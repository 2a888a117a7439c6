"""Static files: the browser SDK (``/sdk/``, every mode) and the pages of the
demo (``/demo``, dev mode only) and the operator dashboard (``/dashboard``).

The pages are plain files with no build step. They are sent with headers that
keep them to their own origin: a Content-Security-Policy that allows scripts
and connections only from this server (and WebSocket back to it), and
``no-store`` so an upgrade never leaves a stale page in a browser's cache.
"""

from __future__ import annotations

from pathlib import Path
from typing import Awaitable, Callable

from aiohttp import web

from protocol.errors import ErrorCode

from .errors import ApiError

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
# The SDK is kept where its users look for it (clients/js); the server serves
# the same file, so the demo always runs the SDK of this checkout.
SDK_DIR = Path(__file__).resolve().parents[2] / "clients" / "js"

_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml", ".ts": "text/plain", ".md": "text/markdown"}
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self' ws: wss:; worker-src 'self' blob:; media-src 'self' blob: mediastream:; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def send_file(directory: Path, name: str) -> web.FileResponse:
    """One file of ``directory``, by a bare name (no path separators, no dot
    files): anything else, or a missing file, is 404."""
    path = directory / name
    if not name or "/" in name or "\\" in name or name.startswith(".") or path.suffix not in _TYPES or not path.is_file():
        raise ApiError(ErrorCode.NOT_FOUND, "no such file")
    return web.FileResponse(path, headers={**PAGE_HEADERS, "Content-Type": _TYPES[path.suffix]})


def directory_route(directory: Path, index: str = "index.html") -> Callable[[web.Request], Awaitable[web.FileResponse]]:
    """A handler for ``/<prefix>`` and ``/<prefix>/{name}``."""

    async def handler(request: web.Request) -> web.FileResponse:
        return send_file(directory, request.match_info.get("name", index))

    return handler


def add_routes(app: web.Application) -> None:
    sdk = directory_route(SDK_DIR, "presence.js")
    app.router.add_get("/sdk/{name}", sdk)
