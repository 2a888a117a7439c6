"""REST: the Twilio-compatible Message resource, read side.

``GET /2010-04-01/Accounts/{AccountSid}/Messages/{Sid}.json`` and
``GET /2010-04-01/Accounts/{AccountSid}/Messages.json`` with ``To``, ``From``,
``DateSent`` (also ``DateSent<`` / ``DateSent>``), ``PageSize``, ``Page`` and
``PageToken``, in Twilio's list envelope, so the helper libraries page through
it unchanged. docs/carriers.md describes the fields.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from protocol.addresses import is_sid
from protocol.errors import ErrorCode

from .app_keys import ACCOUNTS, MESSAGES, NODE
from .auth import account_in_path
from .errors import ApiError

API_VERSION = "2010-04-01"
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
MAX_FILTER_LENGTH = 256
DAY = 86_400

_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
# A date, or the timestamp the helper libraries send for one ("2024-05-01T00:00:00Z").
_DATE_RE = re.compile(r"(\d{4}-\d{2}-\d{2})(?:T(\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?)(?:Z|\+00:00))?")
_PAGE_TOKEN_RE = re.compile(r"PA(\d{1,15})")
_FILTERS = ("To", "From", "DateSent", "DateSent<", "DateSent>")


def _param(request: web.Request, name: str) -> str | None:
    values = request.query.getall(name, [])
    if len(values) > 1:
        raise ApiError(ErrorCode.PARAMETER_INVALID, f"{name} is given {len(values)} times; give it at most once")
    return values[0] if values else None


def _int_param(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = _param(request, name)
    if raw is None:
        return default
    if not raw.isascii() or not raw.isdigit() or len(raw) > 12 or not low <= int(raw) <= high:
        raise ApiError(ErrorCode.PARAMETER_INVALID, f"{name} must be an integer from {low} to {high}, not {raw[:32]!r}")
    return int(raw)


def _day_start(name: str, raw: str) -> int:
    """Epoch seconds of the UTC day ``raw`` names. A full timestamp is accepted (the
    helper libraries send dates that way) and only its date is used: Twilio filters
    messages by day."""
    match = _DATE_RE.fullmatch(raw)
    problem = None
    if match is None:
        problem = "the format is YYYY-MM-DD (UTC)"
    else:
        try:
            day = date.fromisoformat(match.group(1))
            if match.group(2):
                datetime.fromisoformat(f"{match.group(1)}T{match.group(2)}")
        except ValueError as exc:
            problem = str(exc)
    if problem is not None:
        raise ApiError(ErrorCode.PARAMETER_INVALID, f"{name} {raw[:40]!r} is not a date: {problem}")
    # Ordinal arithmetic rather than datetime.timestamp(): no overflow at year 1 or 9999.
    return (day.toordinal() - _EPOCH_ORDINAL) * DAY


@dataclass(frozen=True)
class ListQuery:
    to: str | None
    from_: str | None
    sent_after: float | None
    sent_before: float | None
    filters: dict[str, str]  # as given, to repeat in the paging URIs
    page_size: int
    page: int
    offset: int


def parse_list_query(request: web.Request) -> ListQuery:
    filters: dict[str, str] = {}
    for name in _FILTERS:
        value = _param(request, name)
        if value is None:
            continue
        if not value or len(value) > MAX_FILTER_LENGTH:
            raise ApiError(ErrorCode.PARAMETER_INVALID, f"{name} must be 1 to {MAX_FILTER_LENGTH} characters")
        filters[name] = value
    sent_after: int | None = None
    sent_before: int | None = None
    if "DateSent" in filters:
        sent_after = _day_start("DateSent", filters["DateSent"])
        sent_before = sent_after + DAY
    if "DateSent>" in filters:  # on or after that day
        start = _day_start("DateSent>", filters["DateSent>"])
        sent_after = start if sent_after is None else max(sent_after, start)
    if "DateSent<" in filters:  # on or before that day (the whole day)
        end = _day_start("DateSent<", filters["DateSent<"]) + DAY
        sent_before = end if sent_before is None else min(sent_before, end)

    page_size = _int_param(request, "PageSize", DEFAULT_PAGE_SIZE, 1, MAX_PAGE_SIZE)
    page = _int_param(request, "Page", 0, 0, 10**9)
    token = _param(request, "PageToken")
    if token is None:
        offset = page * page_size
    else:
        # Our tokens carry the offset of the page they open; the next/previous URIs we
        # hand out hold both Page and PageToken, as Twilio's do, and the token wins.
        match = _PAGE_TOKEN_RE.fullmatch(token)
        if match is None:
            raise ApiError(ErrorCode.PARAMETER_INVALID, "PageToken is not one this server handed out (use next_page_uri as given)")
        offset = int(match.group(1))
        if _param(request, "Page") is None:
            page = offset // page_size
    return ListQuery(
        to=filters.get("To"),
        from_=filters.get("From"),
        sent_after=sent_after,
        sent_before=sent_before,
        filters=filters,
        page_size=page_size,
        page=page,
        offset=offset,
    )


def _page_uri(path: str, query: ListQuery, page: int, offset: int | None) -> str:
    params: dict[str, Any] = {**query.filters, "PageSize": query.page_size, "Page": page}
    if offset is not None:
        params["PageToken"] = f"PA{offset}"
    return f"{path}?{urlencode(params)}"


def _not_found(request: web.Request) -> ApiError:
    # Twilio's wording, naming the resource (only the caller's own path, never another account's data).
    return ApiError(ErrorCode.NOT_FOUND, f"The requested resource {request.path} was not found")


async def get_one(request: web.Request) -> web.Response:
    account = account_in_path(request, request.app[ACCOUNTS])
    sid = request.match_info["sid"]
    if not (is_sid(sid, "SM") or is_sid(sid, "MM")):
        raise _not_found(request)
    record = await request.app[MESSAGES].get(account.sid, sid)
    if record is None:
        raise _not_found(request)
    return web.json_response(record.to_api(API_VERSION))


async def get_list(request: web.Request) -> web.Response:
    account = account_in_path(request, request.app[ACCOUNTS])
    query = parse_list_query(request)
    # One more than a page tells whether there is a next page without counting them all.
    records = await request.app[MESSAGES].list(
        account.sid,
        to=query.to,
        from_=query.from_,
        sent_after=query.sent_after,
        sent_before=query.sent_before,
        limit=query.page_size + 1,
        offset=query.offset,
    )
    has_more = len(records) > query.page_size
    records = records[: query.page_size]
    path = request.path
    current_token = query.offset if _param(request, "PageToken") is not None else None
    return web.json_response(
        {
            "messages": [r.to_api(API_VERSION) for r in records],
            "first_page_uri": _page_uri(path, query, 0, None),
            "next_page_uri": _page_uri(path, query, query.page + 1, query.offset + query.page_size) if has_more else None,
            "previous_page_uri": (
                _page_uri(path, query, max(query.page - 1, 0), max(query.offset - query.page_size, 0)) if query.offset > 0 else None
            ),
            "page": query.page,
            "page_size": query.page_size,
            "uri": _page_uri(path, query, query.page, current_token),
            "start": query.offset,
            "end": query.offset + max(len(records), 1) - 1,
        }
    )


def add_routes(app: web.Application) -> None:
    app[MESSAGES] = app[NODE].engine.messages  # type: ignore[attr-defined]
    app.router.add_get("/2010-04-01/Accounts/{account_sid}/Messages.json", get_list)
    app.router.add_get("/2010-04-01/Accounts/{account_sid}/Messages/{sid}.json", get_one)
