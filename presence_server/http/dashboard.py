"""The operator dashboard at ``/dashboard`` and its JSON endpoints (operator
credentials, HTTP Basic ``[operator]``, on the page and on every endpoint).

The page (``presence_server/web/dashboard/``) is static and polls three
endpoints; everything it shows comes from here and from ``GET /v1/Nodes``:

- ``GET /v1/Dashboard/Accounts``: the configured accounts, without secrets.
- ``GET /v1/Dashboard/Accounts/{AccountSid}``: one account's presence, calls,
  messages (counted over a window of the newest records) and broadcasts.
- ``GET /v1/Dashboard/Routing``: routing statistics per provider, per minute.

Message bodies and broadcast contents are customer data: they never leave
these endpoints (docs/dashboard.md). Timestamps are epoch seconds, which the
page formats in the viewer's time zone.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Iterable

from aiohttp import web

from protocol.addresses import is_sid
from protocol.calls import CallStatus
from protocol.errors import ErrorCode

from ..accounts import Account
from ..engines.calls import CallRecord
from ..engines.outbound import RouteStats
from ..engines.ports import MessageRecord
from .app_keys import NODE
from .auth import operator
from .errors import ApiError
from .paging import int_param
from .static import WEB_DIR, send_file
from .tracking import render_stats

if TYPE_CHECKING:
    from ..node import Node

DASHBOARD_DIR = WEB_DIR / "dashboard"

LIVE_CALL_STATUSES = ("queued", "initiated", "ringing", "in-progress")
FINAL_CALL_STATUSES = frozenset(s.value for s in CallStatus if s.final)
# The newest calls looked at for "recent outcomes" and their counts by status.
CALL_WINDOW = 200
# In-progress calls listed per status; more than that is a deployment the
# dashboard summarises rather than lists ("in_progress_truncated").
LIVE_CALLS_PER_STATUS = 100

# The account view's query parameters: name -> (default, lowest, highest).
ACCOUNT_PARAMS = {
    "Identities": (200, 1, 1000),  # identities whose presence is shown
    "Calls": (10, 1, 100),  # recent call outcomes listed
    "Window": (1000, 1, 5000),  # newest message records counted by status and channel
    "Messages": (10, 0, 100),  # newest messages listed
    "Broadcasts": (5, 0, 20),  # newest broadcasts with their access-rate statistics
}
ROUTING_PARAMS = {"Minutes": (30, 1, 1440)}


def _operator(request: web.Request) -> Node:
    node = request.app[NODE]
    operator(request, node.config.operator)
    return node


def _params(request: web.Request, known: dict[str, tuple[int, int, int]]) -> dict[str, int]:
    """The endpoint's integer parameters, each bounded; an unknown parameter is
    a 400 too (a misspelt ``Window`` would otherwise silently mean 1000)."""
    unknown = sorted(set(request.query) - set(known))
    if unknown:
        allowed = ", ".join(known) or "none"
        raise ApiError(ErrorCode.PARAMETER_INVALID, f"{unknown[0][:40]!r} is not a parameter of this endpoint (known: {allowed})")
    return {name: int_param(request, name, default, low, high) for name, (default, low, high) in known.items()}


# -- the page ----------------------------------------------------------------------------


async def page(request: web.Request) -> web.FileResponse:
    """``/dashboard`` (the page) and ``/dashboard/{name}`` (its scripts and style)."""
    # Credentials before the file name is looked at: without them, every
    # /dashboard URL is the same 401 and nothing tells which files exist.
    _operator(request)
    return send_file(DASHBOARD_DIR, request.match_info.get("name", "index.html"))


# -- accounts ----------------------------------------------------------------------------


def _configured_identities(node: Node, account_sid: str) -> list[str]:
    for cfg in node.config.accounts:
        if cfg.sid == account_sid:
            return [i.identity for i in cfg.identities]
    return []


async def list_accounts(request: web.Request) -> web.Response:
    node = _operator(request)
    _params(request, {})
    accounts = []
    for cfg in node.config.accounts:
        account = node.accounts.account(cfg.sid)
        if account is None:
            continue
        # Counts and names only: never an auth token, an API key or its secret.
        accounts.append({
            "sid": account.sid,
            "friendly_name": account.friendly_name,
            "identities": len(cfg.identities),
            "phone_numbers": len(cfg.phone_numbers),
            "applications": len(cfg.applications),
            "uri": f"/v1/Dashboard/Accounts/{account.sid}",
        })
    return web.json_response({"accounts": accounts})


def _account(request: web.Request, node: Node) -> Account:
    sid = request.match_info["account_sid"]
    account = node.accounts.account(sid) if is_sid(sid, "AC") else None
    if account is None:
        raise ApiError(ErrorCode.NOT_FOUND, f"no account {sid[:40]!r} is configured")
    return account


async def _presence(node: Node, account_sid: str, limit: int) -> dict[str, Any]:
    """Present identities first (they are what an operator looks for), then the
    configured ones that are offline, each group by name; at most ``limit``."""
    present = await node.engine.presence.identities(account_sid, limit=limit + 1)  # + 1: to know there are more
    configured = _configured_identities(node, account_sid)
    offline = sorted(set(configured) - set(present))
    names = (present + offline)[:limit]
    results = await node.presence.query(account_sid, names) if names else []
    configured_set = set(configured)
    by_status: dict[str, int] = {}
    for r in results:
        by_status[r.presence.status.value] = by_status.get(r.presence.status.value, 0) + 1
    return {
        "identities": [{**r.to_wire(), "configured": r.presence.identity in configured_set} for r in results],
        "by_status": by_status,
        "present": sum(1 for r in results if r.presence.sessions),
        "sessions": sum(len(r.presence.sessions) for r in results),
        "truncated": len(present) + len(offline) > limit,
    }


def _call(c: CallRecord) -> dict[str, Any]:
    return {
        "sid": c.sid,
        "parent_call_sid": c.parent_call_sid,
        "from": c.from_,
        "to": c.to,
        "status": c.status,
        "direction": c.direction,
        "date_created": c.date_created,
        "start_time": c.start_time,
        "end_time": c.end_time,
        "duration": c.duration,
        "error_code": c.error_code,
    }


async def _calls(node: Node, account_sid: str, recent: int) -> dict[str, Any]:
    store = node.engine.calls
    per_status = await asyncio.gather(*(store.list(account_sid, status=s, limit=LIVE_CALLS_PER_STATUS + 1) for s in LIVE_CALL_STATUSES))
    live = sorted((c for group in per_status for c in group[:LIVE_CALLS_PER_STATUS]), key=lambda c: c.date_created, reverse=True)
    window = await store.list(account_sid, limit=CALL_WINDOW)
    by_status: dict[str, int] = {}
    for c in window:
        by_status[c.status] = by_status.get(c.status, 0) + 1
    finished = [c for c in window if c.status in FINAL_CALL_STATUSES]
    return {
        "in_progress": [_call(c) for c in live],
        "in_progress_truncated": any(len(group) > LIVE_CALLS_PER_STATUS for group in per_status),
        "recent": [_call(c) for c in finished[:recent]],
        "window": CALL_WINDOW,
        "counted": len(window),
        "by_status": by_status,
    }


def _message(m: MessageRecord) -> dict[str, Any]:
    # No body and no media URLs: customer content is not for a dashboard.
    return {
        "sid": m.sid,
        "date_created": m.date_created,
        "direction": m.direction,
        "from": m.from_,
        "to": m.to,
        "channel": m.channel,
        "status": m.status,
        "error_code": m.error_code,
        "fallback_reason": m.fallback_reason,
        "provider": m.provider,
        "broadcast_sid": m.broadcast_sid,
    }


def _count(values: Iterable[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    return dict(sorted(counts.items()))


async def _messages(node: Node, account_sid: str, window: int, listed: int) -> dict[str, Any]:
    records = await node.engine.messages.list(account_sid, limit=window)
    by_channel_status: dict[str, dict[str, int]] = {}
    for r in records:
        statuses = by_channel_status.setdefault(r.channel, {})
        statuses[r.status] = statuses.get(r.status, 0) + 1
    return {
        "window": window,
        "counted": len(records),
        "by_status": _count(r.status for r in records),
        "by_channel": _count(r.channel for r in records),
        "by_channel_status": {c: dict(sorted(s.items())) for c, s in sorted(by_channel_status.items())},
        "recent": [_message(r) for r in records[:listed]],
    }


async def _broadcasts(node: Node, account_sid: str, limit: int) -> list[dict[str, Any]]:
    if limit == 0:
        return []
    items = await node.engine.messages.list_broadcasts(account_sid, limit=limit)
    views = await asyncio.gather(*(node.messaging.broadcast_view(account_sid, b.sid) for b in items))
    out = []
    for b, view in zip(items, views):
        if view is None:  # not possible within one account's store; kept safe
            continue
        # The view's content (the text sent) and per-destination list stay out.
        out.append({
            "sid": b.sid,
            "date_created": b.date_created,
            "destinations": view["destinations"],
            "by_status": view["by_status"],
            "by_channel": view["by_channel"],
            "access_stats": view["access_stats"],
        })
    return out


async def account_view(request: web.Request) -> web.Response:
    node = _operator(request)
    account = _account(request, node)
    p = _params(request, ACCOUNT_PARAMS)
    presence, calls, messages, broadcasts = await asyncio.gather(
        _presence(node, account.sid, p["Identities"]),
        _calls(node, account.sid, p["Calls"]),
        _messages(node, account.sid, p["Window"], p["Messages"]),
        _broadcasts(node, account.sid, p["Broadcasts"]),
    )
    return web.json_response({
        "account": {"sid": account.sid, "friendly_name": account.friendly_name},
        "generated_at": node.clock.time(),
        "presence": presence,
        "calls": calls,
        "messages": messages,
        "broadcasts": broadcasts,
    })


# -- routing -----------------------------------------------------------------------------


def _sum(provider: str, stats: Iterable[RouteStats], minute: float | None = None) -> RouteStats:
    """One provider's counts over its routes. Summed from the raw counters (not
    averaged from each route's ratios), so the ratio and mean stay exact."""
    counts = {"submitted": 0, "rejected": 0, "delivered": 0, "undelivered": 0, "failed": 0, "latency_count": 0}
    latency_sum = 0.0
    errors: dict[int, int] = {}
    for s in stats:
        for name in counts:
            counts[name] += getattr(s, name)
        latency_sum += s.latency_sum
        for code, count in s.errors.items():
            errors[code] = errors.get(code, 0) + count
    return RouteStats(provider=provider, route="*", minute=minute, errors=errors, latency_sum=latency_sum, **counts)


def _rendered(s: RouteStats) -> dict[str, Any]:
    out = render_stats(s)
    out.pop("route")
    out.pop("provider")
    return out


async def routing(request: web.Request) -> web.Response:
    """Per provider (routes summed): totals, and one point per minute that had
    outcomes (delivered ratio, mean time to delivery), oldest first."""
    node = _operator(request)
    minutes = _params(request, ROUTING_PARAMS)["Minutes"]
    now = node.clock.time()
    since = (now // 60 - minutes + 1) * 60  # the start of the oldest minute shown
    totals = await node.engine.routing_stats.totals()
    window = await node.engine.routing_stats.window(since)
    providers = sorted({s.provider for s in totals} | {s.provider for s in window})
    out = []
    for provider in providers:
        buckets: dict[float, list[RouteStats]] = {}
        for s in window:
            if s.provider == provider and s.minute is not None:
                buckets.setdefault(s.minute, []).append(s)
        out.append({
            "provider": provider,
            "routes": sorted({s.route for s in totals if s.provider == provider}),
            "totals": _rendered(_sum(provider, (s for s in totals if s.provider == provider))),
            "series": [_rendered(_sum(provider, buckets[m], m)) for m in sorted(buckets)],
        })
    return web.json_response({"minutes": minutes, "since": since, "now": now, "providers": out})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/dashboard", page)
    app.router.add_get("/dashboard/", page)
    app.router.add_get("/dashboard/{name}", page)
    app.router.add_get("/v1/Dashboard/Accounts", list_accounts)
    app.router.add_get("/v1/Dashboard/Accounts/{account_sid}", account_view)
    app.router.add_get("/v1/Dashboard/Routing", routing)
