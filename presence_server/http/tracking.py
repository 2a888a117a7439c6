"""REST: tracked short links and routing statistics.

``GET /l/{code}`` is public (it is in text messages): it records the click
(time and user agent) and redirects (302) to the original URL; an unknown
code answers 404 without saying more. ``GET /v1/Routing/Stats`` shows every
provider's outcomes per route, with minute buckets for charts (operator
credentials); ``GET /v1/Accounts/{AccountSid}/Routing/Stats`` shows an
account its own traffic's totals.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from protocol.errors import ErrorCode
from protocol.links import is_code

from ..engines.outbound import RouteStats
from .app_keys import ACCOUNTS, NODE
from .auth import account_in_path, operator
from .errors import ApiError
from .paging import int_param

MAX_USER_AGENT = 512


async def follow_link(request: web.Request) -> web.Response:
    code = request.match_info["code"]
    node = request.app[NODE]
    link = None
    if is_code(code):
        link = await node.engine.links.click(code, node.clock.time(), request.headers.get("User-Agent", "")[:MAX_USER_AGENT])
    if link is None:
        raise ApiError(ErrorCode.NOT_FOUND, "no such link")
    # 302, not 301: a permanent redirect would be cached and later clicks not counted.
    raise web.HTTPFound(link.url, headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"})


def render_stats(s: RouteStats) -> dict[str, Any]:
    outcomes = s.delivered + s.undelivered + s.failed + s.rejected
    return {
        "provider": s.provider,
        "route": s.route,
        **({"minute": int(s.minute)} if s.minute is not None else {}),
        "submitted": s.submitted,
        "rejected": s.rejected,
        "delivered": s.delivered,
        "undelivered": s.undelivered,
        "failed": s.failed,
        "delivered_ratio": round(s.delivered / outcomes, 4) if outcomes else None,
        "mean_time_to_delivery": round(s.latency_sum / s.latency_count, 3) if s.latency_count else None,
        "errors": {str(code): count for code, count in sorted(s.errors.items())},
    }


async def operator_stats(request: web.Request) -> web.Response:
    node = request.app[NODE]
    operator(request, node.config.operator)
    minutes = int_param(request, "Minutes", 60, 1, 1440)
    totals = await node.engine.routing_stats.totals()
    window = await node.engine.routing_stats.window(node.clock.time() - minutes * 60)
    return web.json_response({"totals": [render_stats(s) for s in totals], "minutes": [render_stats(s) for s in window]})


async def account_stats(request: web.Request) -> web.Response:
    account = account_in_path(request, request.app[ACCOUNTS])
    totals = await request.app[NODE].engine.routing_stats.totals(account.sid)
    return web.json_response({"account_sid": account.sid, "totals": [render_stats(s) for s in totals]})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/l/{code}", follow_link)
    app.router.add_get("/v1/Routing/Stats", operator_stats)
    app.router.add_get("/v1/Accounts/{account_sid}/Routing/Stats", account_stats)
