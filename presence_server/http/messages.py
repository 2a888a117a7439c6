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

from aiohttp import web

from protocol.addresses import is_sid
from protocol.errors import ErrorCode

from .app_keys import ACCOUNTS, MESSAGES, NODE
from .auth import account_in_path
from .errors import ApiError
from .paging import Page, filters

API_VERSION = "2010-04-01"
DAY = 86_400

_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
# A date, or the timestamp the helper libraries send for one ("2024-05-01T00:00:00Z").
_DATE_RE = re.compile(r"(\d{4}-\d{2}-\d{2})(?:T(\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?)(?:Z|\+00:00))?")
_FILTERS = ("To", "From", "DateSent", "DateSent<", "DateSent>")


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
    page: Page


def parse_list_query(request: web.Request) -> ListQuery:
    found = filters(request, _FILTERS)
    sent_after: int | None = None
    sent_before: int | None = None
    if "DateSent" in found:
        sent_after = _day_start("DateSent", found["DateSent"])
        sent_before = sent_after + DAY
    if "DateSent>" in found:  # on or after that day
        start = _day_start("DateSent>", found["DateSent>"])
        sent_after = start if sent_after is None else max(sent_after, start)
    if "DateSent<" in found:  # on or before that day (the whole day)
        end = _day_start("DateSent<", found["DateSent<"]) + DAY
        sent_before = end if sent_before is None else min(sent_before, end)
    return ListQuery(found.get("To"), found.get("From"), sent_after, sent_before, Page.of(request, found))


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
    page = query.page
    records = await request.app[MESSAGES].list(
        account.sid,
        to=query.to,
        from_=query.from_,
        sent_after=query.sent_after,
        sent_before=query.sent_before,
        limit=page.size + 1,
        offset=page.offset,
    )
    items = [r.to_api(API_VERSION) for r in records[: page.size]]
    return web.json_response(page.envelope("messages", items, request.path, len(records) > page.size))


def add_routes(app: web.Application) -> None:
    app[MESSAGES] = app[NODE].engine.messages  # type: ignore[attr-defined]
    app.router.add_get("/2010-04-01/Accounts/{account_sid}/Messages.json", get_list)
    app.router.add_get("/2010-04-01/Accounts/{account_sid}/Messages/{sid}.json", get_one)
