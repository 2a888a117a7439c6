"""The operator dashboard at ``/dashboard`` and its JSON endpoints (operator
credentials). Owned by the dashboard work: routes are added here."""

from __future__ import annotations

from aiohttp import web


def add_routes(app: web.Application) -> None:
    pass
