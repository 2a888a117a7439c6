"""The redis engine's tracked links.

A link is a hash at ``ps:link:<code>`` (global: ``GET /l/{code}`` names only the
code): ``data`` (the link, msgpack), ``clicks`` (a counter) and, for a
broadcast's link, where its clicks are counted. ``ps:link:<code>:clicks``
keeps the latest clicks: a sorted set of ``<n>:<user agent>`` scored by the
click's time, trimmed to the newest CLICK_LOG. Per broadcast, ``ps:{AC}:bclinks:<BC>`` counts links, clicks and
unique clicks per content version, and ``...:clicked`` holds the
(version, message) pairs with a click, which make a click unique or not.

A link (the code is its hash tag, shared with its click log) and its
broadcast's counters (the account's slot) are in different hash slots, so each
operation is two steps: ``add`` stores every link (``add_link``, one script
per code; a code already stored makes it take back the links it stored) and
then counts them; ``click`` logs the click, then counts it for the broadcast.
A process that dies between the two steps leaves a broadcast's counters one
short (the links and clicks themselves are stored).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import msgpack
from redis.asyncio import Redis

from ..outbound import LinkStats, TrackedLink
from .batch import number
from .keys import KeySpace, as_text
from .outbound_scripts import ADD_LINK, CLICK, COUNT, COUNT_CLICK
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
        codes = [link.code for link in links]
        if len(set(codes)) != len(codes):
            twice = next(code for code in codes if codes.count(code) > 1)
            raise ValueError(f"link code {twice!r} is given twice: no link was stored")
        calls: list[tuple[str, list[Any]]] = []
        counts: dict[str, dict[str, int]] = {}
        for link in links:
            stats = clicked = ""
            tag = version_tag(link.content_version)
            if link.broadcast_sid is not None:
                stats = self._keys.link_stats(link.account_sid, link.broadcast_sid)
                clicked = self._keys.link_clicked(link.account_sid, link.broadcast_sid)
                field = f"links:{tag}"
                counts.setdefault(stats, {})[field] = counts.get(stats, {}).get(field, 0) + 1
            data = msgpack.packb(dataclasses.asdict(link), use_bin_type=True)
            calls.append((self._keys.link(link.code), [data, stats, clicked, tag, f"{tag}|{link.message_sid}"]))

        def store(pipe: Any) -> None:
            for key, args in calls:
                self._scripts.queue(pipe, ADD_LINK, [key], args)

        stored = await self._scripts.pipeline(store)
        if not all(stored):
            # Take back the links this call stored (ADD_LINK refused the rest).
            await self._redis.delete(*[key for (key, _), made in zip(calls, stored) if made]) if any(stored) else None
            taken = next(code for code, made in zip(codes, stored) if not made)
            raise ValueError(f"link code {taken!r} already exists: no link was stored")
        if counts:

            def count(pipe: Any) -> None:
                for stats, fields in counts.items():
                    self._scripts.queue(pipe, COUNT, [stats], [x for name, by in fields.items() for x in (name, by)])

            await self._scripts.pipeline(count)

    @unavailable_on_redis_errors
    async def get(self, code: str) -> TrackedLink | None:
        raw = await self._redis.hget(self._keys.link(code), "data")
        return None if raw is None else _decode(raw)

    @unavailable_on_redis_errors
    async def click(self, code: str, at: float, user_agent: str) -> TrackedLink | None:
        reply = await self._scripts.call(
            CLICK, [self._keys.link(code), self._keys.link_clicks(code)], [number(at), user_agent[:USER_AGENT_MAX], CLICK_LOG]
        )
        if reply is None:
            return None
        data, stats, clicked, tag, unique = reply
        if stats:  # a broadcast's link: count the click in the account's counters
            await self._scripts.call(COUNT_CLICK, [as_text(stats), as_text(clicked)], [tag, unique])
        return _decode(data)

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
