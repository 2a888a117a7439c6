"""REST: ``GET /v1/Nodes`` (operator credentials) - the live server processes
of this deployment, as each last announced itself in the node registry."""

from __future__ import annotations

from aiohttp import web

from ..engines.ports import NodeInfo
from .app_keys import NODE
from .auth import operator


def render_node(info: NodeInfo, now: float) -> dict[str, object]:
    return {
        "node_id": info.node_id,
        "roles": list(info.roles),
        "version": info.version,
        "address": info.address,
        "sessions": info.sessions,
        "started": info.started,
        "last_heartbeat": info.heartbeat,
        "age": round(max(0.0, now - info.heartbeat), 3),
    }


async def list_nodes(request: web.Request) -> web.Response:
    node = request.app[NODE]
    operator(request, node.config.operator)
    now = node.clock.time()
    live = await node.engine.nodes.live(now)
    # This node's own entry is fresh (its session count right now), whatever
    # its last announcement said.
    entries = {n.node_id: n for n in live}
    entries[node.node_id] = node.announcement()
    return web.json_response({"nodes": [render_node(n, now) for _, n in sorted(entries.items())]})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/Nodes", list_nodes)
