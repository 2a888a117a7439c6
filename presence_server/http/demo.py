"""The demo softphone at ``/demo`` and the dev endpoints it talks to (dev mode
only: ``app.py`` adds these routes only when the server runs with ``--dev``).

- ``POST /dev/token``: an access token for any identity of the dev account.
  That is why all of this exists in dev mode only - anyone who can reach the
  server can become anyone - and dev mode binds 127.0.0.1 unless told otherwise.
- ``GET /dev/directory``: the identities the page lists.
- ``GET /dev/outbox``: what the SMS fallback "sent" (the embedded outbox).
- ``POST /dev/messages``: an in-app message from one identity to another,
  through the messaging pipeline like any other message;
  ``GET /dev/messages/{sid}``: its status (the page's read receipts).

The handlers answer JSON only; the page renders every string with
``textContent``, so nothing is escaped here.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from protocol.addresses import identity_problem, is_sid
from protocol.errors import ErrorCode
from protocol.tokens import default_grants, mint_token

from ..carriers.outbox import OutboxProvider
from ..config import AccountConfig, ApiKeyConfig, ApplicationConfig
from ..messaging.intake import MAX_BODY, SendRequest
from .app_keys import NODE
from .dev import dev_account
from .errors import ApiError
from .static import WEB_DIR, directory_route

TOKEN_TTL = 3600
OUTBOX_LIMIT = 50
# Identities a token was minted for since start, so the directory lists a
# name someone signed in as even before (or after) it has a session. Bounded:
# the endpoint is open to anyone who reaches the server.
MINTED_LIMIT = 1000
MINTED: web.AppKey[set[str]] = web.AppKey("dev_minted")


def _dev(request: web.Request) -> tuple[AccountConfig, ApiKeyConfig, ApplicationConfig]:
    found = dev_account(request.app[NODE].config)
    if found is None:  # a dev-mode config always has one (cli.py); a hand-made one may not
        raise ApiError(ErrorCode.NOT_FOUND, "this server has no dev account")
    return found


async def _json_object(request: web.Request) -> dict[str, Any]:
    try:
        data = json.loads(await request.text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ApiError(ErrorCode.PARAMETER_INVALID, "the body must be a JSON object") from None
    if not isinstance(data, dict):
        raise ApiError(ErrorCode.PARAMETER_INVALID, "the body must be a JSON object")
    return data


def _identity(data: dict[str, Any], field: str) -> str:
    value = data.get(field)
    problem = identity_problem(value)
    if problem is not None:
        raise ApiError(ErrorCode.IDENTITY_INVALID, f"'{field}': {problem}")
    assert isinstance(value, str)
    return value


def _ws_url(request: web.Request) -> str:
    # The Host the browser used, so a page opened as localhost or 127.0.0.1
    # (or through a TLS proxy, wss) connects back the same way.
    scheme = "wss" if request.secure else "ws"
    return f"{scheme}://{request.host}/v1/connect"


async def token(request: web.Request) -> web.Response:
    account, key, application = _dev(request)
    identity = _identity(await _json_object(request), "identity")
    node = request.app[NODE]
    now = node.clock.time()
    grants = default_grants(identity)
    # Calls the page places go to the dev application, whose /dev/voice dials
    # client:<name>: two tabs can call each other with nothing else set up.
    grants["voice"]["outgoing"] = {"application_sid": application.sid}
    assert key.secret is not None  # dev_account picks a key with a secret
    jwt = mint_token(key_sid=key.sid, account_sid=account.sid, identity=identity, secret=key.secret, ttl=TOKEN_TTL, now=now, grants=grants)
    minted = request.app[MINTED]
    if len(minted) < MINTED_LIMIT:
        minted.add(identity)
    return web.json_response(
        {"token": jwt, "identity": identity, "account_sid": account.sid, "url": _ws_url(request), "expires": now + TOKEN_TTL}
    )


async def directory(request: web.Request) -> web.Response:
    account, _, _ = _dev(request)
    node = request.app[NODE]
    phones = {i.identity: i.phone for i in account.identities}
    present = await node.engine.presence.identities(account.sid)
    minted = request.app[MINTED]
    names = sorted({*phones, *present, *minted})
    return web.json_response(
        {"identities": [{"identity": n, "phone": phones.get(n), "has_phone": phones.get(n) is not None} for n in names]}
    )


async def outbox(request: web.Request) -> web.Response:
    account, _, _ = _dev(request)
    entries: list[dict[str, Any]] = []
    for provider in request.app[NODE].providers.values():
        if isinstance(provider, OutboxProvider):
            # entries() reads on the provider's own thread (never this loop's).
            # It is not filtered by account: a few spare rows make up for other
            # accounts' entries in a dev server's outbox.
            recent = await provider.entries(OUTBOX_LIMIT * 4)  # oldest first
            entries += [e for e in reversed(recent) if e["account_sid"] == account.sid]
    # Newest first; the sort is stable, so entries of one time keep the
    # provider's own (recording) order.
    entries.sort(key=lambda e: e["created"], reverse=True)
    keep = ("message_sid", "provider", "from", "to", "body", "media_urls", "status", "created")
    return web.json_response({"entries": [{k: e[k] for k in keep} for e in entries[:OUTBOX_LIMIT]]})


async def send_message(request: web.Request) -> web.Response:
    account_cfg, _, _ = _dev(request)
    data = await _json_object(request)
    sender, recipient = _identity(data, "from"), _identity(data, "to")
    body = data.get("body")
    if not isinstance(body, str) or not body.strip():
        raise ApiError(ErrorCode.MESSAGE_BODY_REQUIRED, "'body' must be a non-empty string")
    # The sender. The in-app frame's `from` may be `client:<identity>`
    # (docs/protocol.md), but a message record has one `from` for every
    # channel, and when bob is away (or does not ack) the same record goes
    # on by SMS, which needs a real number to come from. So the message is
    # sent from the dev account's number with the text prefixed "alice: "
    # (what the SMS shows), and its in-app variant carries the plain text and
    # {"from": "client:alice"} as payload: the page shows alice as the sender.
    prefix = f"{sender}: "
    if len(prefix) + len(body) > MAX_BODY:
        raise ApiError(
            ErrorCode.MESSAGE_BODY_TOO_LONG,
            f"'body' has {len(body)} characters; at most {MAX_BODY - len(prefix)} (the SMS carries {prefix!r} before it, {MAX_BODY} in all)",
        )
    node = request.app[NODE]
    account = node.accounts.account(account_cfg.sid)
    number = next((n.number for n in account_cfg.phone_numbers), None)
    if account is None or number is None:
        raise ApiError(ErrorCode.NOT_FOUND, "the dev account has no phone number to send from")
    variant = {"text": body, "payload": {"from": f"client:{sender}"}}
    request_ = SendRequest(
        to=f"client:{recipient}", body=prefix + body, from_=number, app_payload=json.dumps(variant)
    )
    (record,) = await node.messaging.send(account, [request_])
    return web.json_response({"sid": record.sid, "status": record.status, "from": f"client:{sender}", "to": record.to}, status=201)


async def message_status(request: web.Request) -> web.Response:
    """Where a message sent from the page is now (queued, sending, delivered,
    read, or sent by SMS): the page shows it as a read receipt."""
    account, _, _ = _dev(request)
    sid = request.match_info["sid"]
    record = await request.app[NODE].engine.messages.get(account.sid, sid) if is_sid(sid, "SM") or is_sid(sid, "MM") else None
    if record is None:
        raise ApiError(ErrorCode.NOT_FOUND, "no such message of the dev account")
    return web.json_response(
        {
            "sid": record.sid, "status": record.status, "channel": record.channel, "to": record.to,
            "fallback_reason": record.fallback_reason, "error_code": record.error_code,
        }
    )


def add_routes(app: web.Application) -> None:
    app[MINTED] = set()
    page = directory_route(WEB_DIR / "demo")
    app.router.add_get("/demo", page)
    app.router.add_get("/demo/", page)
    app.router.add_get("/demo/{name}", page)
    app.router.add_post("/dev/token", token)
    app.router.add_get("/dev/directory", directory)
    app.router.add_get("/dev/outbox", outbox)
    app.router.add_post("/dev/messages", send_message)
    app.router.add_get("/dev/messages/{sid}", message_status)
