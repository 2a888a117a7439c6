"""The redis engine's tracked links.

A link is a hash at ``ps:link:<code>`` (global: ``GET /l/{code}`` names only the
code): ``data`` (the link, msgpack), ``clicks`` (a counter) and, for a
broadcast's link, where its clicks are counted. ``ps:link:<code>:clicks``
keeps the latest clicks: a sorted set of ``<n>:<user agent>`` scored by the
click's time, trimmed to the newest CLICK_LOG. Per broadcast, ``ps:{AC}:bclinks:<BC>`` counts links, clicks and
unique clicks per content version, and ``...:clicked`` holds the
(version, message) pairs with a click, which make a click unique or not.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import msgpack
from redis.asyncio import Redis

from ..outbound import LinkStats, TrackedLink
from .batch import number
from .keys import KeySpace, as_text
from .outbound_scripts import ADD_LINKS, CLICK
from .scripts import Scripts, unavailable_on_redis_errors

CLICK_LOG = 1000  # clicks kept per code (the counters count them all)
USER_AGENT_MAX = 512


def version_tag(version: str | None) -> str:
    """A content version in a counter's name: '-' for None, '=<version>' otherwise."""
    return "-" if version is None else "=" + version


def _decode(raw: Any) -> TrackedLink:
    return TrackedLink(**msgpack.unpackb(raw, raw=False))


class RedisLinkStore:
    def __init__(self, client: Redis, keys: KeySpace, scripts: Scripts) -> None:
        self._redis = client
        self._keys = keys
        self._scripts = scripts

    @unavailable_on_redis_errors
    async def add(self, links: Sequence[TrackedLink]) -> None:
        if not links:
            return
        names: list[str] = []
        args: list[Any] = []
        for link in links:
            names.append(self._keys.link(link.code))
            stats = clicked = ""
            if link.broadcast_sid is not None:
                stats = self._keys.link_stats(link.account_sid, link.broadcast_sid)
                clicked = self._keys.link_clicked(link.account_sid, link.broadcast_sid)
            tag = version_tag(link.content_version)
            args += [msgpack.packb(dataclasses.asdict(link), use_bin_type=True), stats, clicked, tag, f"{tag}|{link.message_sid}"]
        taken = await self._scripts.call(ADD_LINKS, names, args)
        if taken:
            raise ValueError(f"link code {links[int(taken) - 1].code!r} already exists: no link was stored")

    @unavailable_on_redis_errors
    async def get(self, code: str) -> TrackedLink | None:
        raw = await self._redis.hget(self._keys.link(code), "data")
        return None if raw is None else _decode(raw)

    @unavailable_on_redis_errors
    async def click(self, code: str, at: float, user_agent: str) -> TrackedLink | None:
        raw = await self._scripts.call(
            CLICK, [self._keys.link(code), self._keys.link_clicks(code)], [number(at), user_agent[:USER_AGENT_MAX], CLICK_LOG]
        )
        return None if raw is None else _decode(raw)

    @unavailable_on_redis_errors
    async def clicks(self, account_sid: str, code: str, limit: int = 100) -> list[tuple[float, str]]:
        if limit < 0:
            raise ValueError("limit must not be negative")
        if limit == 0:
            return []
        link = await self.get(code)
        if link is None or link.account_sid != account_sid:
            return []  # another account's link is not found either
        # Newest first by time, then the later click first (members start with its number).
        entries: list[tuple[bytes, float]] = await self._redis.zrevrange(  # type: ignore[assignment]
            self._keys.link_clicks(code), 0, limit - 1, withscores=True
        )
        return [(float(at), as_text(member).split(":", 1)[1]) for member, at in entries]

    @unavailable_on_redis_errors
    async def broadcast_stats(self, account_sid: str, broadcast_sid: str) -> list[LinkStats]:
        raw: dict[bytes, bytes] = await self._redis.hgetall(self._keys.link_stats(account_sid, broadcast_sid))  # type: ignore[assignment]
        counts: dict[str | None, dict[str, int]] = {}
        for name, value in raw.items():
            kind, tag = as_text(name).split(":", 1)  # 'links|clicks|unique:<tag>'
            version = None if tag == "-" else tag[1:]
            counts.setdefault(version, {})[kind] = int(value)
        ordered = sorted(counts, key=lambda v: (v is not None, v or ""))
        return [LinkStats(v, counts[v].get("clicks", 0), counts[v].get("unique", 0)) for v in ordered]
