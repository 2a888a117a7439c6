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
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from typing import Any

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


class RedisBus:
    def __init__(
        self,
        publisher: Redis,
        subscriber: Redis,
        keys: KeySpace,
        *,
        barrier_timeout: float = 2.0,
        liveness_interval: float = 10.0,
        max_backoff: float = 0.5,
    ) -> None:
        # PUBLISH goes through the shared command client; the subscriber client
        # exists only for this bus's one pub/sub connection (it must not retry or
        # reconnect on its own: the reader task does that).
        self._publisher = publisher
        self._subscriber = subscriber
        self._pubsub: PubSub = subscriber.pubsub()
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
        conn = self._pubsub.connection
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
        await self._pubsub.aclose()  # type: ignore[no-untyped-call]
        await self._subscriber.aclose()

    async def _connect(self) -> None:
        async with self._lock:
            conn = self._pubsub.connection
            if conn is not None and not conn.is_connected:
                await conn.connect()  # redis-py subscribes again to every channel it knows
            if self._control not in self._pubsub.channels:
                # The first SUBSCRIBE also takes the connection and registers redis-py's
                # resubscribe-on-connect callback. The control channel keeps the
                # connection in subscribed mode for good, where PING answers with a
                # message the reader sees (our barrier), never with a plain reply.
                await self._pubsub.subscribe(self._control)
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
                message = await self._pubsub.get_message(timeout=self._poll_interval)
                if message is not None:
                    self._last_heard = asyncio.get_running_loop().time()
                    self._probe_sent = None
                    self._dispatch(message)
            except asyncio.CancelledError:
                raise
            except REDIS_DOWN as exc:
                if self._connected:
                    log.warning("bus lost its redis connection; reconnecting", error=type(exc).__name__)
                self._connected = False
                self._release_barriers()
                conn = self._pubsub.connection
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
        elif now - self._last_heard > self._liveness_interval:
            await self._pubsub.ping(_PROBE)
            self._probe_sent = now

    def _dispatch(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "message":
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

    def _release_barriers(self) -> None:
        for barrier in self._barriers.values():
            if not barrier.done():
                barrier.set_result(False)
        self._barriers.clear()

    async def _barrier(self) -> bool:
        """Wait until the reader has dispatched everything Redis sent this
        connection so far. False if the connection dropped or it took too long."""
        if not self._is_connected():
            return False
        token = _BARRIER + str(next(self._counter)).encode()
        barrier: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._barriers[token] = barrier
        try:
            await self._pubsub.ping(token)
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
        return int(await self._publisher.publish(channel, packed))

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
                await self._pubsub.subscribe(channel)
                confirmed = await self._barrier()
            except REDIS_DOWN as exc:
                self._forget(channel)
                raise EngineUnavailable(f"redis unavailable: {type(exc).__name__}") from exc
            if not confirmed:
                self._forget(channel)
                raise EngineUnavailable("redis unavailable: subscription not confirmed")
        return sub

    def _forget(self, channel: bytes) -> None:
        self._handlers.pop(channel, None)
        # Otherwise redis-py would subscribe to it again on its next reconnect.
        self._pubsub.channels.pop(channel, None)

    async def _unsubscribe(self, sub: RedisSubscription) -> None:
        async with self._lock:
            subs = self._handlers.get(sub.channel)
            if not subs or sub not in subs:
                return
            subs.remove(sub)
            if subs:
                return
            self._forget(sub.channel)
            if self._is_connected():
                try:
                    await self._pubsub.unsubscribe(sub.channel)
                except REDIS_DOWN:
                    pass  # the connection is gone, and with it the subscription
