"""REST: the Twilio-compatible Calls resource."""

from __future__ import annotations

from aiohttp import web

from protocol.addresses import is_e164, is_sid
from protocol.calls import CallStatus
from protocol.errors import ErrorCode
from protocol.messages import destination_problem

from ..accounts import Webhook
from . import forms, paging
from .app_keys import ACCOUNTS, CALLS, NODE
from .auth import account_in_path
from .errors import ApiError

CALL_EVENTS = ("initiated", "ringing", "answered", "completed")
_STATUSES = tuple(s.value for s in CallStatus)


def _signaling(request: web.Request):  # type: ignore[no-untyped-def]
    signaling = request.app[NODE].signaling
    if signaling is None:
        raise ApiError(ErrorCode.SIGNALING_UNAVAILABLE)
    return signaling


async def create(request: web.Request) -> web.Response:
    account = account_in_path(request, request.app[ACCOUNTS])
    form = await forms.read(request)
    to = forms.text(form, "To", required=True, max_len=128)
    assert to is not None
    problem = destination_problem(to)
    if problem:
        raise forms.bad("To", f"is not a client address or E.164 number: {problem}")
    sender = forms.text(form, "From", required=True, max_len=128)
    assert sender is not None
    url = forms.url(form, "Url")
    app_sid = forms.text(form, "ApplicationSid", max_len=34)
    if (url is None) == (app_sid is None):
        raise forms.bad("Url", "or ApplicationSid is required (one of them)")
    if url is not None:
        webhook = Webhook(url, forms.method(form, "Method"), forms.url(form, "FallbackUrl"), forms.method(form, "FallbackMethod"))
    else:
        found = account.application_webhook(app_sid or "") if is_sid(app_sid, "AP") else None
        if found is None:
            raise forms.bad("ApplicationSid", "is not an application of this account with a voice_url")
        webhook = found
    given = form.getall("StatusCallbackEvent", [])
    if not all(isinstance(v, str) for v in given):
        raise forms.bad("StatusCallbackEvent", "must be text")
    events = frozenset(" ".join(given).split()) or frozenset({"completed"})  # type: ignore[arg-type]
    if not events <= set(CALL_EVENTS):
        raise forms.bad("StatusCallbackEvent", f"must be among {', '.join(CALL_EVENTS)}")
    record = await _signaling(request).rest_call(
        account,
        # A bare identity is a client address, as in <Dial><Client>.
        to=to if is_e164(to) else "client:" + (to[7:] if to.lower().startswith("client:") else to),
        from_=sender,
        webhook=webhook,
        timeout=forms.integer(form, "Timeout", default=60, low=1, high=600),
        status_callback=forms.url(form, "StatusCallback"),
        status_callback_method=forms.method(form, "StatusCallbackMethod"),
        status_callback_events=events,
    )
    return web.json_response(record.to_api(), status=201)


async def get_one(request: web.Request) -> web.Response:
    account = account_in_path(request, request.app[ACCOUNTS])
    sid = request.match_info["call_sid"]
    record = await request.app[CALLS].get(account.sid, sid) if is_sid(sid, "CA") else None
    if record is None:
        raise ApiError(ErrorCode.NOT_FOUND, f"no call {sid[:40]}")
    return web.json_response(record.to_api())


async def get_list(request: web.Request) -> web.Response:
    account = account_in_path(request, request.app[ACCOUNTS])
    found = paging.filters(request, ("To", "From", "Status", "ParentCallSid"))
    # A misspelt status ("in_progress") would otherwise match nothing, silently.
    if "Status" in found and found["Status"] not in _STATUSES:
        raise forms.bad("Status", f"must be one of {', '.join(_STATUSES)}")
    page = paging.Page.of(request, found)
    records = await request.app[CALLS].list(
        account.sid,
        status=found.get("Status"),
        to=found.get("To"),
        from_=found.get("From"),
        parent_call_sid=found.get("ParentCallSid"),
        limit=page.size + 1,
        offset=page.offset,
    )
    items = [r.to_api() for r in records[: page.size]]
    return web.json_response(page.envelope("calls", items, request.path, len(records) > page.size))


def add_routes(app: web.Application) -> None:
    app.router.add_post("/2010-04-01/Accounts/{account_sid}/Calls.json", create)
    app.router.add_get("/2010-04-01/Accounts/{account_sid}/Calls.json", get_list)
    app.router.add_get("/2010-04-01/Accounts/{account_sid}/Calls/{call_sid}.json", get_one)
