"""The node registry in Redis: one hash of announcements, each carrying the
time it runs out. Readers drop run-out entries with a compare-and-delete (a
node that announced itself again meanwhile keeps its new entry)."""

from __future__ import annotations

import msgpack
import redis.asyncio

from ..ports import NodeInfo
from .keys import KeySpace, as_text
from .scripts import LuaScript, Scripts, unavailable_on_redis_errors

# KEYS: nodes; ARGV: field, value, field, value, ... - each deleted only while it still holds that value.
DROP_UNCHANGED = LuaScript(
    "drop_unchanged_nodes",
    """
local dropped = 0
for i = 1, #ARGV, 2 do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[i + 1] then
    dropped = dropped + redis.call('HDEL', KEYS[1], ARGV[i])
  end
end
return dropped
""",
)


class RedisNodeRegistry:
    def __init__(self, client: redis.asyncio.Redis, keys: KeySpace, scripts: Scripts) -> None:
        self._redis = client
        self._key = keys.nodes()
        self._scripts = scripts

    @unavailable_on_redis_errors
    async def heartbeat(self, info: NodeInfo, ttl: float) -> None:
        value = [list(info.roles), info.version, info.address, info.sessions, info.started, info.heartbeat, info.heartbeat + ttl]
        await self._redis.hset(self._key, info.node_id, msgpack.packb(value))

    @unavailable_on_redis_errors
    async def leave(self, node_id: str) -> None:
        await self._redis.hdel(self._key, node_id)

    @unavailable_on_redis_errors
    async def live(self, now: float) -> list[NodeInfo]:
        entries = await self._redis.hgetall(self._key)
        live, gone = [], []
        for field, raw in entries.items():
            roles, version, address, sessions, started, heartbeat, until = msgpack.unpackb(raw)
            if until <= now:
                gone += [field, raw]
                continue
            live.append(NodeInfo(as_text(field), tuple(roles), version, address, sessions, started, heartbeat))
        if gone:
            await self._scripts.call(DROP_UNCHANGED, [self._key], gone)
        return sorted(live, key=lambda n: n.node_id)
