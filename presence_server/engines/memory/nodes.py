"""The node registry of the embedded engine: one process, so one node; kept
in a dict all the same, so the contract suite holds it to the redis engine's
behaviour (run-out entries drop out)."""

from __future__ import annotations

from ..ports import NodeInfo


class MemoryNodeRegistry:
    def __init__(self) -> None:
        self._nodes: dict[str, tuple[NodeInfo, float]] = {}

    async def heartbeat(self, info: NodeInfo, ttl: float) -> None:
        self._nodes[info.node_id] = (info, info.heartbeat + ttl)

    async def leave(self, node_id: str) -> None:
        self._nodes.pop(node_id, None)

    async def live(self, now: float) -> list[NodeInfo]:
        for node_id in [n for n, (_, until) in self._nodes.items() if until <= now]:
            del self._nodes[node_id]
        return [info for _, (info, _) in sorted(self._nodes.items())]
