"""Where the redis engine's Redis is: one server or a Redis Cluster, from ``[engine] url``.

- ``redis://[user:password@]host:port/db``, ``rediss://...`` (TLS), ``unix:///path``:
  one server (or a primary behind a failover address), as ``redis.asyncio.from_url``
  reads it.
- ``redis+cluster://[user:password@]host1:port1,host2:port2[/0]`` (``rediss+cluster://``
  with TLS): a Redis Cluster. The hosts are seed nodes: the client asks any of
  them for the slot map and follows it (MOVED/ASK) from then on, so listing two
  or three is enough. A cluster has only database 0.

``parse`` raises ValueError with a message that names the mistake; config.py
calls it so a bad URL is refused at startup, not at first use.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import redis.asyncio
import redis.exceptions
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from .pool import MAX_CONNECTIONS, WaitingConnectionPool

SINGLE_SCHEMES = ("redis", "rediss", "unix")
CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")


@dataclass(frozen=True)
class Target:
    url: str
    cluster: bool
    nodes: tuple[tuple[str, int], ...] = ()  # cluster seed nodes
    username: str | None = None
    password: str | None = None
    tls: bool = False


def parse(url: str) -> Target:
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError(f"engine.url {redact(url)!r} is not a URL (expected redis://host:port/0)")
    if scheme in SINGLE_SCHEMES:
        return Target(url, cluster=False)
    if scheme not in CLUSTER_SCHEMES:
        allowed = ", ".join(f"{s}://" for s in SINGLE_SCHEMES + CLUSTER_SCHEMES)
        raise ValueError(f"engine.url scheme {scheme!r} is not supported: use one of {allowed}")
    if "?" in rest or "#" in rest:
        raise ValueError("a redis+cluster:// URL takes no query or fragment")
    netloc, _, path = rest.partition("/")
    if path not in ("", "0"):
        raise ValueError(f"a Redis Cluster has only database 0, not {path!r}")
    userinfo, at, hosts = netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    nodes: list[tuple[str, int]] = []
    for item in hosts.split(","):
        host, port = _host_port(item.strip())
        nodes.append((host, port))
    return Target(url, cluster=True, nodes=tuple(nodes), username=username, password=password, tls=scheme == "rediss+cluster")


def _host_port(item: str) -> tuple[str, int]:
    if not item:
        raise ValueError("a redis+cluster:// URL lists its nodes as host:port,host:port (one is empty)")
    if item.startswith("["):  # [IPv6]:port
        host, bracket, tail = item[1:].partition("]")
        if not bracket or not tail.startswith(":"):
            raise ValueError(f"cluster node {item!r}: write an IPv6 address as [addr]:port")
        port_text = tail[1:]
    else:
        host, colon, port_text = item.rpartition(":")
        if not colon or not host:
            raise ValueError(f"cluster node {item!r} needs a port (host:port)")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"cluster node {item!r}: the port must be a number from 1 to 65535")
    return host, int(port_text)


def redact(url: str) -> str:
    """The URL without its password, for logs."""
    scheme, sep, rest = url.partition("://")
    netloc, slash, path = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    if not sep or not at or ":" not in userinfo:
        return url
    if scheme in SINGLE_SCHEMES:
        parts = urlsplit(url)
        return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{hosts}"))
    user = userinfo.split(":", 1)[0]
    return f"{scheme}://{user}:***@{hosts}{slash}{path}"


class _Cluster(redis.asyncio.RedisCluster):
    # redis-py retries a cluster command after a timeout too; a timed-out command
    # may have run (a second upsert or sweep would report another change), so only
    # errors that mean "it did not run" are retried, as on one server.
    ERRORS_ALLOW_RETRY = (  # type: ignore[assignment]
        redis.exceptions.ConnectionError,
        redis.exceptions.ClusterDownError,
        redis.exceptions.SlotNotCoveredError,
    )


def client(target: Target, *, retries: int, **options: Any) -> Any:
    """A command client: ``redis.asyncio.Redis`` or ``RedisCluster`` (same command API)."""
    retry = Retry(NoBackoff(), retries, supported_errors=(redis.exceptions.ConnectionError,) if retries else ())
    if not target.cluster:
        # Past MAX_CONNECTIONS commands in flight the next waits for a connection
        # (up to the socket timeout) instead of failing at once (pool.py).
        pool = WaitingConnectionPool.from_url(
            target.url, retry=retry, max_connections=MAX_CONNECTIONS, timeout=options.get("socket_timeout"), **options
        )
        return redis.asyncio.Redis.from_pool(pool)
    return _Cluster(
        startup_nodes=[ClusterNode(host, port) for host, port in target.nodes],
        username=target.username,
        password=target.password,
        ssl=target.tls,
        retry=retry,
        # A slot map that does not cover every slot (a master down, no replica yet)
        # still serves the slots it covers; the others fail with EngineUnavailable.
        require_full_coverage=False,
        **options,
    )


def node_client(target: Target, host: str, port: int, **options: Any) -> redis.asyncio.Redis:
    """A plain client of one cluster node (the bus's pub/sub connection)."""
    return redis.asyncio.Redis(
        host=host,
        port=port,
        username=target.username,
        password=target.password,
        ssl=target.tls,
        retry=Retry(NoBackoff(), 0, supported_errors=()),  # the bus's reader reconnects
        **options,
    )
