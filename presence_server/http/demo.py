"""The demo softphone at ``/demo`` (dev mode only). Owned by the demo work:
routes are added here."""

from __future__ import annotations

from aiohttp import web


def add_routes(app: web.Application) -> None:
    pass
