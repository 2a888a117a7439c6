"""REST: the Twilio-compatible Message resource.

``POST /2010-04-01/Accounts/{AccountSid}/Messages.json`` sends (a form with
Twilio's parameters, docs/messaging.md); ``POST .../Messages/{Sid}.json`` with
``Status=canceled`` cancels a scheduled or queued message.
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

from aiohttp import web
from multidict import MultiDictProxy

from protocol.addresses import is_sid
from protocol.errors import ErrorCode, RemoteProtocolError
from protocol.plans import PRIORITY_NAMES, priority_of

from ..messaging.intake import SendRequest
from . import forms

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


_CREATE_PARAMS = frozenset({
    "To", "From", "MessagingServiceSid", "Body", "MediaUrl", "StatusCallback", "ValidityPeriod", "ScheduleType", "SendAt",
    "ShortenUrls", "SmartEncoded", "SendAsMms", "Priority",
})


def _flag(form: MultiDictProxy[Any], name: str) -> bool:
    value = forms.text(form, name, max_len=5)
    if value is None:
        return False
    if value.lower() not in ("true", "false"):
        raise forms.bad(name, "must be true or false")
    return value.lower() == "true"


def _send_at(form: MultiDictProxy[Any]) -> float | None:
    schedule = forms.text(form, "ScheduleType", max_len=16)
    raw = forms.text(form, "SendAt", max_len=40)
    if schedule is None and raw is None:
        return None
    if schedule != "fixed":
        raise forms.bad("ScheduleType", "must be 'fixed' (with SendAt)")
    if raw is None:
        raise ApiError(ErrorCode.MESSAGE_SCHEDULE_INVALID, "ScheduleType=fixed needs SendAt")
    try:
        return forms.iso_time(raw)
    except ValueError as exc:
        raise ApiError(ErrorCode.MESSAGE_SCHEDULE_INVALID, f"SendAt {exc}") from None


def parse_send_form(form: MultiDictProxy[Any]) -> SendRequest:
    unknown = sorted(k for k in form.keys() if k not in _CREATE_PARAMS)
    if unknown:
        raise forms.bad(unknown[0], "is not a parameter of this request")
    to = forms.text(form, "To", max_len=200)
    if to is None:
        raise ApiError(ErrorCode.MESSAGE_TO_REQUIRED)
    media = tuple(v for v in form.getall("MediaUrl", []) if isinstance(v, str) and v)
    if any(not isinstance(v, str) for v in form.getall("MediaUrl", [])):
        raise ApiError(ErrorCode.MESSAGE_MEDIA_INVALID, "MediaUrl must be text")
    body = form.get("Body", "")
    if not isinstance(body, str):
        raise forms.bad("Body", "must be text")
    priority = forms.text(form, "Priority", max_len=8)
    if priority is not None and priority not in PRIORITY_NAMES:
        raise forms.bad("Priority", f"must be one of {', '.join(PRIORITY_NAMES)}")
    validity = forms.text(form, "ValidityPeriod", max_len=12)
    return SendRequest(
        to=to,
        body=body,
        from_=forms.text(form, "From", max_len=200),
        messaging_service_sid=forms.text(form, "MessagingServiceSid", max_len=64),
        media_urls=media,
        status_callback=forms.url(form, "StatusCallback"),
        validity=None if validity is None else forms.integer(form, "ValidityPeriod", default=0, low=1, high=36000),
        send_at=_send_at(form),
        track_links=_flag(form, "ShortenUrls"),
        smart_encoded=_flag(form, "SmartEncoded"),
        send_as_mms=_flag(form, "SendAsMms"),
        priority=None if priority is None else priority_of(priority),
    )


async def create(request: web.Request) -> web.Response:
    account = account_in_path(request, request.app[ACCOUNTS])
    form = await forms.read(request)
    send = parse_send_form(form)
    try:
        (record,) = await request.app[NODE].messaging.send(account, [send])
    except RemoteProtocolError as exc:
        if exc.error is ErrorCode.MESSAGE_QUEUE_FULL:
            raise ApiError(exc.error, exc.message, headers={"Retry-After": "1"}) from None
        raise
    return web.json_response(record.to_api(API_VERSION), status=201)


async def update(request: web.Request) -> web.Response:
    account = account_in_path(request, request.app[ACCOUNTS])
    sid = request.match_info["sid"]
    form = await forms.read(request)
    unknown = sorted(k for k in form.keys() if k != "Status")
    if unknown:
        raise forms.bad(unknown[0], "cannot be changed (only Status=canceled is supported)")
    if form.get("Status") != "canceled":
        raise forms.bad("Status", "must be 'canceled'")
    if not (is_sid(sid, "SM") or is_sid(sid, "MM")):
        raise _not_found(request)
    record = await request.app[NODE].messaging.cancel(account.sid, sid)
    if record is None:
        raise _not_found(request)
    return web.json_response(record.to_api(API_VERSION))


def add_routes(app: web.Application) -> None:
    app[MESSAGES] = app[NODE].engine.messages  # type: ignore[attr-defined]
    app.router.add_get("/2010-04-01/Accounts/{account_sid}/Messages.json", get_list)
    app.router.add_post("/2010-04-01/Accounts/{account_sid}/Messages.json", create)
    app.router.add_get("/2010-04-01/Accounts/{account_sid}/Messages/{sid}.json", get_one)
    app.router.add_post("/2010-04-01/Accounts/{account_sid}/Messages/{sid}.json", update)
