"""A node's mailbox: its address on the bus, shared by the roles it runs.

Everything one node tells another goes through here as ``{"kind": ..., ...}``:
signaling sends a gateway ``deliver`` (a frame for one of its sessions);
a gateway sends signaling ``place_call``, ``call_event`` and ``ack``. The
roles never call each other's objects, so the same code works when they are
separate processes.
"""

from __future__ import annotations

from typing import Any, Callable

import msgpack
import structlog

from .engines.ports import Bus, Subscription, node_topic

log = structlog.get_logger(__name__)

Handler = Callable[[dict[str, Any]], None]


class Mailbox:
    def __init__(self, bus: Bus, node_id: str) -> None:
        self._bus = bus
        self.node_id = node_id
        # A probe only asks whether anyone listens here (peers.py): the
        # publish's receiver count is the answer, the message itself is dropped.
        self._handlers: dict[str, Handler] = {"probe": lambda message: None}
        self._sub: Subscription | None = None

    def on(self, kind: str, handler: Handler) -> None:
        if kind in self._handlers:
            raise ValueError(f"a handler for {kind!r} exists")
        self._handlers[kind] = handler

    async def start(self) -> None:
        self._sub = await self._bus.subscribe(node_topic(self.node_id), self._dispatch)

    async def close(self) -> None:
        if self._sub is not None:
            await self._sub.close()
            self._sub = None

    def _dispatch(self, message: dict[str, Any]) -> None:
        handler = self._handlers.get(message.get("kind", ""))
        if handler is None:
            # A newer node may send kinds this one does not know: drop, loudly.
            log.warning("mailbox message of unknown kind dropped", kind=message.get("kind"))
            return
        handler(message)

    async def send(self, node_id: str, kind: str, **payload: Any) -> bool:
        """False when no node listens at that address (it is gone): the message is lost."""
        message = {"kind": kind, "from_node": self.node_id, **payload}
        if node_id == self.node_id and self._sub is not None:
            # To this very process (its signaling ringing its own gateway's
            # sessions): handed over here, as the embedded engine's bus would,
            # instead of a trip to Redis and back (two round trips: the publish,
            # and the barrier that waits for our own subscriber to read it). The
            # msgpack round trip keeps what the bus guarantees: the same messages
            # accepted, and no objects shared with the sender.
            copy = msgpack.unpackb(msgpack.packb(message, use_bin_type=True), raw=False)
            try:
                self._dispatch(copy)
            except Exception:
                log.exception("mailbox handler failed", kind=kind)  # as the bus does: the sender goes on
            return True
        reached = await self._bus.publish(node_topic(node_id), message)
        return reached > 0

    async def probe(self, node_id: str) -> bool:
        """Whether a process listens at that node's address (EngineUnavailable
        when the bus cannot tell)."""
        return await self.send(node_id, "probe")
