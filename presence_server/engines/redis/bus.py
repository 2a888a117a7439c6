"""The redis engine's bus: Redis pub/sub, one subscriber connection per engine.

One reader task owns the pub/sub connection: it reads, dispatches messages in
order (handlers are called synchronously, one at a time, and a failing handler
is logged and skipped, as in the memory bus) and reconnects after an outage
(redis-py then subscribes again to every channel). Nothing else ever
reconnects that connection, so two tasks never race to open it.

Publish returns after this engine's own subscribers have had the message, as
the memory bus does. It cannot know that from PUBLISH alone (the message
arrives on the other connection), so it sends a PING down the subscriber
connection after PUBLISH has answered: Redis queued the message on that
connection before it ran the PING, so once the reader sees the PONG the
message has been dispatched. The same barrier makes ``subscribe`` return
only once Redis has the subscription. Other engines get the message as soon
as Redis sends it; delivery is at most once (a message published while a
subscriber is disconnected is lost to it).

On a Redis Cluster the bus is sharded pub/sub (SPUBLISH/SSUBSCRIBE): every
channel carries the ``{bus}`` hash tag, so all of them live on the one master
that owns that slot. Every engine subscribes there and publishes there, which
keeps what the single-server bus promises - one order per topic, a publish
count that counts the engines listening, the PING barrier on the same
connection - and, unlike classic PUBLISH, no message is copied to every node
of the cluster. When the slot moves (failover, resharding) Redis drops the
subscriptions with an ``sunsubscribe`` push, or the connection dies; the reader
then asks the cluster for the new owner and subscribes there again.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from typing import Any, Awaitable, Callable

import msgpack
import redis.exceptions
import structlog
from redis.asyncio import Redis
from redis.asyncio.client import PubSub

from ..ports import EngineUnavailable, MessageHandler
from .keys import KeySpace
from .scripts import REDIS_DOWN, unavailable_on_redis_errors

log = structlog.get_logger(__name__)

_BARRIER = b"ps-barrier:"
_PROBE = b"ps-probe"
_BARRIER_FAILED: tuple[type[BaseException], ...] = (asyncio.TimeoutError, *REDIS_DOWN)
# What makes the reader reconnect: Redis gone, or (a cluster) MOVED to SSUBSCRIBE.
_RECONNECT: tuple[type[BaseException], ...] = (*REDIS_DOWN, redis.exceptions.ResponseError)


class RedisSubscription:
    def __init__(self, bus: RedisBus, channel: bytes, topic: str, handler: MessageHandler) -> None:
        self._bus = bus
        self.channel = channel
        self.topic = topic
        self.handler = handler

    async def close(self) -> None:
        """Stop delivery to this handler. Never raises: during an outage the local
        handler goes at once, and Redis forgets the subscription with the connection."""
        await self._bus._unsubscribe(self)


# Opens the client of the subscriber connection: the one server, or (cluster) the
# master that owns the bus's slot now.
SubscriberFactory = Callable[[], Awaitable[Redis]]


class RedisBus:
    def __init__(
        self,
        publisher: Redis,
        subscriber: SubscriberFactory,
        keys: KeySpace,
        *,
        sharded: bool = False,
        barrier_timeout: float = 2.0,
        liveness_interval: float = 10.0,
        max_backoff: float = 0.5,
    ) -> None:
        # PUBLISH goes through the shared command client; the subscriber client
        # exists only for this bus's one pub/sub connection (it must not retry or
        # reconnect on its own: the reader task does that).
        self._publisher = publisher
        self._open_subscriber = subscriber
        self._subscriber: Redis | None = None
        self._pubsub: PubSub | None = None
        self._sharded = sharded
        self._message_type = "smessage" if sharded else "message"
        self._keys = keys
        self._control = keys.control_channel(uuid.uuid4().hex).encode()
        self._handlers: dict[bytes, list[RedisSubscription]] = {}
        self._barriers: dict[bytes, asyncio.Future[bool]] = {}
        self._counter = itertools.count()
        # Serializes SUBSCRIBE/UNSUBSCRIBE and (re)connecting.
        self._lock = asyncio.Lock()
        self._reader: asyncio.Task[None] | None = None
        self._connected = False
        self._closed = False
        self._barrier_timeout = barrier_timeout
        self._liveness_interval = liveness_interval
        self._poll_interval = min(1.0, barrier_timeout)
        self._max_backoff = max_backoff
        # Liveness: a connection that has been silent for liveness_interval gets a
        # PING; no answer within barrier_timeout and it counts as lost. Without this a
        # half-open connection (a partition, a hung server) would look healthy forever.
        self._last_heard = 0.0
        self._probe_sent: float | None = None

    @property
    def connected(self) -> bool:
        """True while the subscriber connection is up (and resubscribed)."""
        return self._connected and self._is_connected()

    def _is_connected(self) -> bool:
        conn = None if self._pubsub is None else self._pubsub.connection
        return conn is not None and conn.is_connected

    # -- lifetime -----------------------------------------------------------------------

    async def start(self) -> None:
        """Connect now if Redis is there; if not, the reader keeps trying (and the
        engine is not ready until it succeeds)."""
        try:
            await self._connect()
        except REDIS_DOWN as exc:
            log.warning("bus cannot reach redis yet; retrying", error=type(exc).__name__)
        self._reader = asyncio.create_task(self._read_loop(), name="redis-bus-reader")

    async def close(self) -> None:
        self._closed = True
        if self._reader is not None:
            self._reader.cancel()
            try:
                await self._reader
            except asyncio.CancelledError:
                pass
            self._reader = None
        self._release_barriers()
        self._handlers.clear()
        await self._drop_connection()

    async def _drop_connection(self) -> None:
        pubsub, subscriber = self._pubsub, self._subscriber
        self._pubsub = self._subscriber = None
        if pubsub is not None:
            await pubsub.aclose()  # type: ignore[no-untyped-call]
        if subscriber is not None:
            await subscriber.aclose()

    async def _subscribe(self, pubsub: PubSub, *channels: bytes) -> None:
        if self._sharded:
            await pubsub.ssubscribe(*channels)
        else:
            await pubsub.subscribe(*channels)

    async def _connect(self) -> None:
        """A fresh pub/sub connection subscribed to the control channel and every
        channel that has handlers. (Always a new one, not redis-py's reconnect: on a
        cluster the bus's slot may have moved to another node meanwhile.)"""
        async with self._lock:
            await self._drop_connection()
            self._subscriber = await self._open_subscriber()
            self._pubsub = self._subscriber.pubsub()
            # The control channel keeps the connection in subscribed mode for good,
            # where PING answers with a message the reader sees (our barrier), never
            # with a plain reply. On a cluster, SSUBSCRIBE here answers MOVED if this
            # node no longer owns the slot (the factory then asks again next time).
            await self._subscribe(self._pubsub, self._control, *self._handlers)
            self._connected = True
            self._last_heard = asyncio.get_running_loop().time()
            self._probe_sent = None

    async def _read_loop(self) -> None:
        backoff = 0.05
        while not self._closed:
            try:
                if not self._is_connected():
                    await self._connect()
                    log.info("bus connected to redis")
                    backoff = 0.05
                await self._check_liveness()
                assert self._pubsub is not None  # connected
                message = await self._pubsub.get_message(timeout=self._poll_interval)
                if message is not None:
                    self._last_heard = asyncio.get_running_loop().time()
                    self._probe_sent = None
                    self._dispatch(message)
            except asyncio.CancelledError:
                raise
            except _RECONNECT as exc:
                # ResponseError: a cluster answered MOVED to SSUBSCRIBE (the slot moved).
                if self._connected:
                    log.warning("bus lost its redis connection; reconnecting", error=type(exc).__name__)
                self._connected = False
                self._release_barriers()
                conn = None if self._pubsub is None else self._pubsub.connection
                if conn is not None:
                    await conn.disconnect(nowait=True)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self._max_backoff)
            except Exception:
                # A bug here must not end delivery for the process: log, breathe, go on.
                log.exception("bus reader failed")
                await asyncio.sleep(backoff)

    async def _check_liveness(self) -> None:
        now = asyncio.get_running_loop().time()
        if self._probe_sent is not None:
            if now - self._probe_sent > self._barrier_timeout:
                raise redis.exceptions.TimeoutError("redis did not answer the bus's liveness probe")
        elif now - self._last_heard > self._liveness_interval and self._pubsub is not None:
            await self._pubsub.ping(_PROBE)
            self._probe_sent = now

    def _dispatch(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == self._message_type:
            channel: bytes = message["channel"]
            subs = self._handlers.get(channel)
            if not subs:
                return
            data: bytes = message["data"]
            for sub in list(subs):
                try:
                    # A fresh copy per handler: no subscriber shares another's objects.
                    sub.handler(msgpack.unpackb(data, raw=False))
                except Exception:
                    log.exception("bus handler failed", topic=sub.topic)
        elif kind == "pong":
            barrier = self._barriers.pop(message["data"], None)
            if barrier is not None and not barrier.done():
                barrier.set_result(True)
        elif kind == "sunsubscribe" and (message["channel"] in self._handlers or message["channel"] == self._control):
            # Not ours: the cluster moved the bus's slot to another node and dropped
            # our subscriptions. Reconnect to the new owner (the reader does it).
            raise redis.exceptions.ConnectionError("the bus's slot moved to another node")

    def _release_barriers(self) -> None:
        for barrier in self._barriers.values():
            if not barrier.done():
                barrier.set_result(False)
        self._barriers.clear()

    async def _barrier(self) -> bool:
        """Wait until the reader has dispatched everything Redis sent this
        connection so far. False if the connection dropped or it took too long."""
        pubsub = self._pubsub
        if pubsub is None or not self._is_connected():
            return False
        token = _BARRIER + str(next(self._counter)).encode()
        barrier: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._barriers[token] = barrier
        try:
            await pubsub.ping(token)
            return await asyncio.wait_for(barrier, self._barrier_timeout)
        except _BARRIER_FAILED:
            return False
        finally:
            self._barriers.pop(token, None)

    # -- Bus ------------------------------------------------------------------------------

    async def publish(self, topic: str, message: dict[str, Any]) -> int:
        # Packed before anything is sent: data msgpack cannot carry raises TypeError
        # here, exactly as in the memory bus.
        packed = msgpack.packb(message, use_bin_type=True)
        channel = self._keys.channel(topic).encode()
        # PUBLISH answers how many connections had the channel subscribed; every
        # engine subscribes through exactly one, so this counts engines.
        receivers = await self._publish(channel, packed)
        if channel in self._handlers and not await self._barrier():
            # Published, but our own reader lost its connection meanwhile: local
            # subscribers miss it, as remote ones would (at most once).
            log.debug("bus publish not confirmed locally", topic=topic)
        return receivers

    @unavailable_on_redis_errors
    async def _publish(self, channel: bytes, packed: bytes) -> int:
        if self._sharded:
            # SPUBLISH goes to the slot's owner (the cluster client follows MOVED),
            # where every engine's subscriber connection is.
            return int(await self._publisher.spublish(channel, packed))
        return int(await self._publisher.publish(channel, packed))

    def may_have_listeners(self, topic: str) -> bool:
        # Other processes subscribe through their own connections: only a
        # PUBLISH (or a round trip to ask) would tell.
        return True

    async def subscribe(self, topic: str, handler: MessageHandler) -> RedisSubscription:
        channel = self._keys.channel(topic).encode()
        sub = RedisSubscription(self, channel, topic, handler)
        async with self._lock:
            if not self._is_connected():
                raise EngineUnavailable("redis unavailable: the bus is not connected")
            subs = self._handlers.get(channel)
            if subs is not None:
                subs.append(sub)  # Redis already has this channel (confirmed under the lock)
                return sub
            self._handlers[channel] = [sub]
            try:
                assert self._pubsub is not None  # connected, checked above
                await self._subscribe(self._pubsub, channel)
                confirmed = await self._barrier()
            except _RECONNECT as exc:
                self._forget(channel)
                raise EngineUnavailable(f"redis unavailable: {type(exc).__name__}") from exc
            if not confirmed:
                self._forget(channel)
                raise EngineUnavailable("redis unavailable: subscription not confirmed")
        return sub

    def _forget(self, channel: bytes) -> None:
        self._handlers.pop(channel, None)
        if self._pubsub is not None:
            # Otherwise redis-py would subscribe to it again if it reconnected by itself.
            self._pubsub.channels.pop(channel, None)
            self._pubsub.shard_channels.pop(channel, None)

    async def _unsubscribe(self, sub: RedisSubscription) -> None:
        async with self._lock:
            subs = self._handlers.get(sub.channel)
            if not subs or sub not in subs:
                return
            subs.remove(sub)
            if subs:
                return
            self._forget(sub.channel)
            pubsub = self._pubsub
            if pubsub is not None and self._is_connected():
                try:
                    if self._sharded:
                        await pubsub.sunsubscribe(sub.channel)
                    else:
                        await pubsub.unsubscribe(sub.channel)
                except REDIS_DOWN:
                    pass  # the connection is gone, and with it the subscription
