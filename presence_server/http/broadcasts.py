"""REST: broadcasts - one message to many destinations, with intent.

``POST /v1/Accounts/{AccountSid}/Broadcasts`` (JSON) takes the destinations
(numbers and ``client:<identity>``), the content (text, media, per-channel
variants) and the intent (priority, channel order, deadline, budgets, link
tracking); it answers 201 with the broadcast and one message per
destination. ``GET .../Broadcasts/{Sid}`` shows each destination's channel,
content version and status, and the access-rate statistics per content
version. docs/messaging.md has the format; the OpenAPI file the schema.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from protocol.addresses import is_sid, new_sid
from protocol.errors import ErrorCode, RemoteProtocolError
from protocol.plans import PRIORITY_NAMES, priority_of

from ..engines.outbound import BroadcastRecord
from ..messaging.intake import SendRequest
from . import forms
from .app_keys import ACCOUNTS, NODE
from .auth import account_in_path
from .errors import ApiError
from .paging import Page

_TOP = frozenset({"destinations", "from", "messaging_service_sid", "content", "intent", "status_callback"})
_CONTENT = frozenset({"text", "media", "variants"})
_VARIANTS = frozenset({"app", "sms"})
_INTENT = frozenset({"priority", "channels", "deadline", "send_at", "max_segments", "max_cost", "track_links", "smart_encoded"})


def _bad(where: str, why: str) -> ApiError:
    return ApiError(ErrorCode.PARAMETER_INVALID, f"{where} {why}")


def _object(value: Any, where: str, allowed: frozenset[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _bad(where, "must be an object")
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise _bad(f"{where}.{unknown[0]}", f"is not a field (known: {', '.join(sorted(allowed))})")
    return value


def _time(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise _bad(where, "must be an ISO 8601 time such as 2026-11-21T10:00:00Z")
    try:
        return forms.iso_time(value)
    except ValueError as exc:
        raise _bad(where, str(exc)) from None


def _text(value: Any, where: str, *, required: bool = False) -> str | None:
    if value is None:
        if required:
            raise _bad(where, "is required")
        return None
    if not isinstance(value, str):
        raise _bad(where, "must be a string")
    return value


def _number(value: Any, where: str, *, integer: bool) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)) or value <= 0:
        raise _bad(where, f"must be a positive {'integer' if integer else 'number'}")
    return value


def parse_broadcast(data: Any, now: float, max_destinations: int) -> tuple[list[SendRequest], dict[str, Any], dict[str, Any]]:
    """The send requests of a broadcast body, with its content and intent as given."""
    data = _object(data, "body", _TOP)
    destinations = data.get("destinations")
    if not isinstance(destinations, list) or not destinations or not all(isinstance(d, str) for d in destinations):
        raise _bad("destinations", "must be a non-empty list of numbers and client:<identity> addresses")
    if len(destinations) > max_destinations:
        raise _bad("destinations", f"has {len(destinations)} entries; at most {max_destinations}")
    if len(set(destinations)) != len(destinations):
        raise _bad("destinations", "lists a destination twice")
    content = _object(data.get("content"), "content", _CONTENT)
    intent = _object(data.get("intent", {}), "intent", _INTENT)
    text = _text(content.get("text"), "content.text") or ""
    media = content.get("media", [])
    if not isinstance(media, list) or not all(isinstance(u, str) for u in media):
        raise _bad("content.media", "must be a list of URLs")
    variants = _object(content.get("variants", {}), "content.variants", _VARIANTS)
    app = _object(variants["app"], "content.variants.app", frozenset({"text", "payload"})) if "app" in variants else None
    sms_variant = _object(variants["sms"], "content.variants.sms", frozenset({"text"})) if "sms" in variants else None
    # "is not None": an empty sms variant ({}) still lacks its required text.
    sms_text = _text(sms_variant.get("text"), "content.variants.sms.text", required=True) if sms_variant is not None else None
    app_payload = None
    if app is not None:
        app_text = _text(app.get("text"), "content.variants.app.text")
        app_payload = json.dumps({"text": app_text if app_text is not None else text, "payload": app.get("payload")}, separators=(",", ":"))
        if len(app_payload) > 16 * 1024:
            raise _bad("content.variants.app", "is over 16 KiB")
    channels = intent.get("channels", ["app", "sms"])
    if not isinstance(channels, list) or not channels or any(c not in ("app", "sms") for c in channels) or len(set(channels)) != len(channels):
        raise _bad("intent.channels", "must be a list of 'app' and 'sms' in the order to try them")
    priority = intent.get("priority")
    if priority is not None and priority not in PRIORITY_NAMES:
        raise _bad("intent.priority", f"must be one of {', '.join(PRIORITY_NAMES)}")
    send_at = _time(intent.get("send_at"), "intent.send_at")
    deadline = _time(intent.get("deadline"), "intent.deadline")
    validity = None
    if deadline is not None:
        start = send_at or now
        if deadline <= start:
            raise _bad("intent.deadline", "must be after the send time")
        validity = max(1, min(36000, int(deadline - start)))
    for flag in ("track_links", "smart_encoded"):
        if not isinstance(intent.get(flag, False), bool):
            raise _bad(f"intent.{flag}", "must be true or false")
    max_segments = _number(intent.get("max_segments"), "intent.max_segments", integer=True)
    max_cost = _number(intent.get("max_cost"), "intent.max_cost", integer=False)
    if not text and not sms_text and app is not None and isinstance(app.get("text"), str):
        text = app["text"]  # an app-only content still has a text to fall back to
    requests = [
        SendRequest(
            to=to, body=sms_text if sms_text is not None else text, from_=_text(data.get("from"), "from"),
            messaging_service_sid=_text(data.get("messaging_service_sid"), "messaging_service_sid"), media_urls=tuple(media),
            status_callback=_text(data.get("status_callback"), "status_callback"), validity=validity, send_at=send_at,
            track_links=intent.get("track_links", False), smart_encoded=intent.get("smart_encoded", False),
            priority=None if priority is None else priority_of(priority), channels=tuple(channels), app_payload=app_payload,
            max_segments=None if max_segments is None else int(max_segments), max_cost=max_cost,
            text_version="sms" if sms_text is not None else "text",
        )
        for to in destinations
    ]
    cb = requests[0].status_callback
    if cb is not None and not cb.startswith(("http://", "https://")):
        raise _bad("status_callback", "must be an http:// or https:// URL")
    return requests, content, intent


async def create(request: web.Request) -> web.Response:
    account = account_in_path(request, request.app[ACCOUNTS])
    node = request.app[NODE]
    try:
        data = json.loads(await request.read())
    except (ValueError, UnicodeDecodeError):
        raise _bad("body", "is not valid JSON") from None
    now = node.clock.time()
    requests, content, intent = parse_broadcast(data, now, node.config.messaging.max_broadcast_destinations)
    broadcast = BroadcastRecord(
        sid=new_sid("BC"), account_sid=account.sid, destinations=len(requests), intent=intent, content=content,
        date_created=now, messaging_service_sid=requests[0].messaging_service_sid, from_=requests[0].from_,
    )
    try:
        await node.messaging.send(account, requests, broadcast)
    except RemoteProtocolError as exc:
        if exc.error is ErrorCode.MESSAGE_QUEUE_FULL:
            raise ApiError(exc.error, exc.message, headers={"Retry-After": "1"}) from None
        raise
    view = await node.messaging.broadcast_view(account.sid, broadcast.sid)
    return web.json_response(view, status=201)


async def get_one(request: web.Request) -> web.Response:
    account = account_in_path(request, request.app[ACCOUNTS])
    sid = request.match_info["sid"]
    view = await request.app[NODE].messaging.broadcast_view(account.sid, sid) if is_sid(sid, "BC") else None
    if view is None:
        raise ApiError(ErrorCode.NOT_FOUND, f"The requested resource {request.path} was not found")
    return web.json_response(view)


async def get_list(request: web.Request) -> web.Response:
    account = account_in_path(request, request.app[ACCOUNTS])
    page = Page.of(request, {})
    store = request.app[NODE].engine.messages
    items = await store.list_broadcasts(account.sid, limit=page.size + 1, offset=page.offset)
    rendered = [
        {"sid": b.sid, "destinations": b.destinations, "intent": b.intent, "uri": f"/v1/Accounts/{account.sid}/Broadcasts/{b.sid}"}
        for b in items[: page.size]
    ]
    return web.json_response(page.envelope("broadcasts", rendered, request.path, len(items) > page.size))


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/Accounts/{account_sid}/Broadcasts", create)
    app.router.add_get("/v1/Accounts/{account_sid}/Broadcasts", get_list)
    app.router.add_get("/v1/Accounts/{account_sid}/Broadcasts/{sid}", get_one)
