"""The embedded engine's bus: topics in this process."""

from __future__ import annotations

from typing import Any

import msgpack
import structlog

from ..ports import MessageHandler

log = structlog.get_logger(__name__)


class MemorySubscription:
    def __init__(self, bus: MemoryBus, topic: str, handler: MessageHandler) -> None:
        self._bus = bus
        self.topic = topic
        self.handler = handler

    async def close(self) -> None:
        handlers = self._bus._topics.get(self.topic)
        if handlers and self in handlers:
            handlers.remove(self)
            if not handlers:
                del self._bus._topics[self.topic]


class MemoryBus:
    def __init__(self) -> None:
        self._topics: dict[str, list[MemorySubscription]] = {}

    async def publish(self, topic: str, message: dict[str, Any]) -> int:
        subs = self._topics.get(topic)
        if not subs:
            return 0
        # The same wire round trip as the redis engine, so both engines accept
        # exactly the same messages and no subscriber shares the publisher's objects.
        packed = msgpack.packb(message, use_bin_type=True)
        for sub in list(subs):
            try:
                sub.handler(msgpack.unpackb(packed, raw=False))
            except Exception:
                # One faulty handler must not stop delivery to the others.
                log.exception("bus handler failed", topic=topic)
        return 1  # this process's engine is the only one

    def may_have_listeners(self, topic: str) -> bool:
        return topic in self._topics  # this process is the only one

    async def subscribe(self, topic: str, handler: MessageHandler) -> MemorySubscription:
        sub = MemorySubscription(self, topic, handler)
        self._topics.setdefault(topic, []).append(sub)
        return sub
