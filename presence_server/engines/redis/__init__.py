"""The redis engine: shared state for many processes, in one Redis or a Redis Cluster.

Presence, the bus, call and message records, and the messaging pipeline's
send queue, carrier submissions, tracked links and routing statistics all live
in Redis, so any number of gateway, signaling and messaging processes see the
same state and reach each other. See docs/redis.md for the key layout, the Lua
scripts and what happens when Redis is down (every port method raises
EngineUnavailable; ``ready()`` is False until it is back).
"""

from __future__ import annotations

import time
from typing import Any, Callable

import redis.asyncio
import structlog

from . import topology
from .bus import RedisBus
from .calls import RedisCallStore, call_table
from .keys import KeySpace
from .links import RedisLinkStore
from .messages import RedisMessageStore
from .nodes import RedisNodeRegistry
from .ratelimits import RedisRateLimiter
from .presence import RedisPresenceStore
from .queue import RedisSendQueue
from .api_keys import RedisApiKeyStore
from .revocations import RedisKeyRevocations
from .routing import RedisRoutingStatsStore
from .scripts import REDIS_DOWN, Scripts
from .submissions import RedisSubmissionStore

log = structlog.get_logger(__name__)

__all__ = ["RedisEngine"]


redact = topology.redact


class RedisEngine:
    kind = "redis"

    def __init__(
        self,
        url: str,
        *,
        data_dir: str | None = None,
        key_prefix: str = "ps",
        socket_timeout: float = 2.0,
        connect_timeout: float = 1.0,
        health_check_interval: int = 10,
        scan_limit: int | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        # data_dir is accepted so both engines are made the same way; Redis holds
        # everything this engine keeps, so it needs no local files.
        self.data_dir = data_dir
        self.url = url
        self.target = topology.parse(url)  # ValueError names what is wrong with the URL
        self.cluster = self.target.cluster
        self.keys = KeySpace(key_prefix)
        options: dict[str, Any] = dict(
            decode_responses=False,  # values are msgpack
            socket_timeout=socket_timeout,  # a hung Redis fails a call instead of stalling it
            socket_connect_timeout=connect_timeout,
            socket_keepalive=True,
            health_check_interval=health_check_interval,  # PING a connection idle that long before use
        )
        # Commands: one immediate retry on a connection error only (a pooled connection
        # that Redis closed when it restarted), never on a timeout, whose command may
        # have run: a second upsert or sweep would report a different change. A
        # RedisCluster (same command API) also follows MOVED/ASK by itself.
        self._redis: redis.asyncio.Redis = topology.client(self.target, retries=1, **options)
        # The bus's pub/sub connection: no retries at all (its reader task reconnects)
        # and no redis-py health check (the reader probes the connection itself).
        subscriber_options = {**options, "health_check_interval": 0}
        if self.cluster:

            async def subscriber() -> redis.asyncio.Redis:
                # The master that owns the bus's slot now (asked again after a move).
                cluster: Any = self._redis
                await cluster.initialize()
                node = cluster.get_node_from_key(self.keys.channel("any"))
                return topology.node_client(self.target, node.host, node.port, **subscriber_options)

        else:

            async def subscriber() -> redis.asyncio.Redis:
                client: redis.asyncio.Redis = topology.client(self.target, retries=0, **subscriber_options)
                return client

        self._scripts = Scripts(self._redis)
        table_options = {} if scan_limit is None else {"scan_limit": scan_limit}
        self.presence = RedisPresenceStore(self._redis, self.keys, self._scripts, cluster=self.cluster)
        self.bus = RedisBus(
            self._redis,
            subscriber,
            self.keys,
            sharded=self.cluster,
            barrier_timeout=socket_timeout,
            liveness_interval=health_check_interval,
        )
        self.calls = RedisCallStore(call_table(self._redis, self.keys, self._scripts, **table_options))
        self.messages = RedisMessageStore(self._redis, self.keys, self._scripts, clock=clock, **table_options)
        # The messaging pipeline's (engines/outbound.py); jobs are enqueued by messages.create_batch.
        self.queue = RedisSendQueue(self._redis, self.keys, self._scripts)
        self.submissions = RedisSubmissionStore(self._redis, self.keys, self._scripts)
        self.links = RedisLinkStore(self._redis, self.keys, self._scripts)
        self.routing_stats = RedisRoutingStatsStore(self._redis, self.keys, self._scripts)
        self.nodes = RedisNodeRegistry(self._redis, self.keys, self._scripts)
        self.rate_limits = RedisRateLimiter(self.keys, self._scripts)
        self.revocations = RedisKeyRevocations(self._redis, self.keys)
        self.api_keys = RedisApiKeyStore(self._redis, self.keys)
        self._closed = False

    async def start(self) -> None:
        """Connect. Redis being down is not fatal: the engine reports not ready and
        recovers by itself when Redis comes back (as after any outage)."""
        log.info("redis engine starting", url=redact(self.url), key_prefix=self.keys.prefix)
        try:
            await self._scripts.load()  # saves the first call of each a NOSCRIPT round trip
        except REDIS_DOWN as exc:
            log.warning("redis unreachable at start; not ready until it is", error=type(exc).__name__)
        await self.bus.start()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self.bus.close()
        await self._redis.aclose()

    async def ready(self) -> bool:
        """True when Redis answers and the bus's subscriber connection is up."""
        try:
            await self._redis.ping()
        except REDIS_DOWN:
            return False
        return self.bus.connected
