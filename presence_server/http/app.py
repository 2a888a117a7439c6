"""The aiohttp application: every route of this node, behind the error middleware."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from . import broadcasts, calls, dashboard, demo, dev, ingress, ingress_carrier, keys, messages, nodes, presence, static, tracking
from .app_keys import ACCOUNTS, CALLS, NODE, PRESENCE
from .admission import rest_limits
from .errors import error_middleware

if TYPE_CHECKING:
    from ..node import Node


MAX_REQUEST_BODY = 1024 * 1024  # bytes; larger bodies are answered 413 (40017)


async def healthz(request: web.Request) -> web.Response:
    """Liveness: the process answers."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Readiness: the engine serves, and this node takes sessions and calls (a
    node stopping takes neither: a load balancer sends them elsewhere)."""
    node = request.app[NODE]
    checks = {"engine": await node.engine.ready(), "accepting_sessions": node.gateway.accepting, "accepting_calls": not node.draining}
    ready = all(checks.values())
    return web.json_response({"status": "ready" if ready else "not_ready", "checks": checks}, status=200 if ready else 503)


def build_app(node: Node) -> web.Application:
    # The rate limits come first (outermost): they see every answer's status, 401s included.
    app = web.Application(middlewares=[rest_limits(node), error_middleware], client_max_size=MAX_REQUEST_BODY)
    app[NODE] = node
    app[ACCOUNTS] = node.accounts
    app[PRESENCE] = node.presence
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app[CALLS] = node.engine.calls
    if "gateway" in node.roles:
        app.router.add_get("/v1/connect", node.gateway.handle)
    calls.add_routes(app)
    ingress.add_routes(app)
    if node.config.dev:
        dev.add_routes(app)
        demo.add_routes(app)
    static.add_routes(app)
    dashboard.add_routes(app)
    nodes.add_routes(app)
    presence.add_routes(app)
    messages.add_routes(app)
    broadcasts.add_routes(app)
    tracking.add_routes(app)
    ingress_carrier.add_routes(app)
    keys.add_routes(app)
    return app
