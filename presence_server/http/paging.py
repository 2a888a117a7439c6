"""Paging of the Twilio-compatible list resources, one way for all of them.

``PageSize`` (1-1000, default 50), ``Page`` and the ``PageToken`` the
next/previous URIs carry (it holds the page's offset and wins over
``Page``); the envelope repeats the list's filters in every URI, so the
helper libraries page through a filtered list unchanged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from protocol.errors import ErrorCode

from .errors import ApiError

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
MAX_FILTER_LENGTH = 256
_PAGE_TOKEN_RE = re.compile(r"PA(\d{1,15})")


def param(request: web.Request, name: str) -> str | None:
    values = request.query.getall(name, [])
    if len(values) > 1:
        raise ApiError(ErrorCode.PARAMETER_INVALID, f"{name} is given {len(values)} times; give it at most once")
    return values[0] if values else None


def int_param(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = param(request, name)
    if raw is None:
        return default
    if not raw.isascii() or not raw.isdigit() or len(raw) > 12 or not low <= int(raw) <= high:
        raise ApiError(ErrorCode.PARAMETER_INVALID, f"{name} must be an integer from {low} to {high}, not {raw[:32]!r}")
    return int(raw)


def filters(request: web.Request, names: tuple[str, ...]) -> dict[str, str]:
    """The list's filter parameters that were given, each checked for length."""
    found: dict[str, str] = {}
    for name in names:
        value = param(request, name)
        if value is None:
            continue
        if not value or len(value) > MAX_FILTER_LENGTH:
            raise ApiError(ErrorCode.PARAMETER_INVALID, f"{name} must be 1 to {MAX_FILTER_LENGTH} characters")
        found[name] = value
    return found


@dataclass(frozen=True)
class Page:
    size: int
    number: int
    offset: int
    token_given: bool
    filters: dict[str, str]  # as given, to repeat in the paging URIs

    @classmethod
    def of(cls, request: web.Request, filters: dict[str, str]) -> Page:
        size = int_param(request, "PageSize", DEFAULT_PAGE_SIZE, 1, MAX_PAGE_SIZE)
        number = int_param(request, "Page", 0, 0, 10**9)
        token = param(request, "PageToken")
        if token is None:
            return cls(size, number, number * size, False, filters)
        match = _PAGE_TOKEN_RE.fullmatch(token)
        if match is None:
            raise ApiError(ErrorCode.PARAMETER_INVALID, "PageToken is not one this server handed out (use next_page_uri as given)")
        offset = int(match.group(1))
        if param(request, "Page") is None:
            number = offset // size
        return cls(size, number, offset, True, filters)

    def _uri(self, path: str, number: int, offset: int | None) -> str:
        params: dict[str, Any] = {**self.filters, "PageSize": self.size, "Page": number}
        if offset is not None:
            params["PageToken"] = f"PA{offset}"
        return f"{path}?{urlencode(params)}"

    def envelope(self, key: str, items: list[dict[str, Any]], path: str, has_more: bool) -> dict[str, Any]:
        """The list envelope; ``items`` is this page (ask the store for size + 1
        to know ``has_more`` without counting everything)."""
        return {
            key: items,
            "first_page_uri": self._uri(path, 0, None),
            "next_page_uri": self._uri(path, self.number + 1, self.offset + self.size) if has_more else None,
            "previous_page_uri": (
                self._uri(path, max(self.number - 1, 0), max(self.offset - self.size, 0)) if self.offset > 0 else None
            ),
            "page": self.number,
            "page_size": self.size,
            "uri": self._uri(path, self.number, self.offset if self.token_given else None),
            "start": self.offset,
            "end": self.offset + max(len(items), 1) - 1,
        }
