"""Reading form parameters (the Twilio-compatible API takes forms) with
errors that name the parameter."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from multidict import MultiDictProxy

from protocol.errors import ErrorCode

from .errors import ApiError


async def read(request: web.Request) -> MultiDictProxy[Any]:
    """The request's form. A body aiohttp cannot parse as the form its
    Content-Type names (``multipart/form-data`` without a boundary, say) is the
    caller's mistake: 400, not the 500 its ValueError would become."""
    try:
        return await request.post()
    except (ValueError, HttpProcessingError) as exc:  # HttpProcessingError: a part's malformed headers
        detail = str(exc) if isinstance(exc, ValueError) else "a part's headers are malformed"
        raise ApiError(ErrorCode.PARAMETER_INVALID, f"the body is not a valid form: {detail[:120]}") from None


def bad(name: str, why: str) -> ApiError:
    return ApiError(ErrorCode.PARAMETER_INVALID, f"{name} {why}")


def text(form: MultiDictProxy[Any], name: str, *, required: bool = False, max_len: int = 1600) -> str | None:
    value = form.get(name)
    if value is None or value == "":
        if required:
            raise bad(name, "is required")
        return None
    if not isinstance(value, str):
        raise bad(name, "must be text")
    if len(value) > max_len:
        raise bad(name, f"is longer than {max_len} characters")
    return value


def url(form: MultiDictProxy[Any], name: str, *, required: bool = False) -> str | None:
    value = text(form, name, required=required, max_len=4096)
    if value is not None and not value.startswith(("http://", "https://")):
        raise bad(name, "must be an http:// or https:// URL")
    return value


def method(form: MultiDictProxy[Any], name: str) -> str:
    value = (text(form, name, max_len=8) or "POST").upper()
    if value not in ("GET", "POST"):
        raise bad(name, "must be GET or POST")
    return value


def integer(form: MultiDictProxy[Any], name: str, *, default: int, low: int, high: int) -> int:
    value = text(form, name, max_len=12)
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        raise bad(name, "must be an integer") from None
    if not low <= number <= high:
        raise bad(name, f"must be from {low} to {high}")
    return number


def iso_time(raw: str) -> float:
    """Epoch seconds of an ISO 8601 time with its zone ("2026-11-21T10:00:00Z");
    ValueError (saying what is expected) otherwise."""
    from datetime import datetime

    try:
        when = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError("must be an ISO 8601 time such as 2026-11-21T10:00:00Z") from None
    if when.tzinfo is None:
        raise ValueError("must give its time zone (Z or +00:00)")
    return when.timestamp()
