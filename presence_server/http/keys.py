"""REST: the Twilio-compatible Keys resource - create, list, fetch and revoke
API keys (``/2010-04-01/Accounts/{AccountSid}/Keys.json`` and ``Keys/{KeySid}.json``).

Only the account's own auth token may manage keys: an API key, even the one
named in the path, is answered 403 (20403). A leaked key must not be able to
mint more keys that outlive it, nor lock its owner's other keys out, and the
auth token is the credential an owner keeps for exactly this. A key that is
unknown, another account's or revoked is answered 404, like a deleted key on
the platform whose API this mirrors (a revoked key is gone as far as the API
is concerned).

The secret of a created key is in the answer to its creation only; nothing
shows it again (a lost secret means a new key).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from protocol.addresses import is_sid
from protocol.errors import ErrorCode

from ..accounts import Account, ApiKeyInfo
from ..api_keys import TooManyKeys
from ..engines.calls import rfc2822
from . import forms, paging
from .app_keys import ACCOUNTS, NODE
from .auth import account_in_path, basic_credentials
from .errors import ApiError

FRIENDLY_NAME_MAX = 64


def _owner(request: web.Request) -> Account:
    """The path's account, authenticated with its auth token (not an API key)."""
    account = account_in_path(request, request.app[ACCOUNTS])
    creds = basic_credentials(request)
    if creds is None or creds[0] != account.sid:
        raise ApiError(ErrorCode.FORBIDDEN, "API keys may not manage API keys; use the account's auth token")
    return account


def _key(request: web.Request, account: Account) -> ApiKeyInfo:
    key_sid = request.match_info["key_sid"]
    info = request.app[ACCOUNTS].key_info(account.sid, key_sid) if is_sid(key_sid, "SK") else None
    if info is None:
        raise ApiError(ErrorCode.NOT_FOUND, f"no API key {key_sid[:40]!r} in this account")
    return info


def _api(info: ApiKeyInfo) -> dict[str, Any]:
    date = rfc2822(info.date_created)
    return {"sid": info.sid, "friendly_name": info.friendly_name, "date_created": date, "date_updated": date, "source": info.source}


async def create(request: web.Request) -> web.Response:
    account = _owner(request)
    form = await forms.read(request)
    name = forms.text(form, "FriendlyName", max_len=FRIENDLY_NAME_MAX) or ""
    try:
        info, secret = await request.app[NODE].api_keys.create(account.sid, name)
    except TooManyKeys as exc:
        raise ApiError(ErrorCode.API_KEY_LIMIT, str(exc)) from None
    return web.json_response({**_api(info), "secret": secret}, status=201)


async def get_list(request: web.Request) -> web.Response:
    account = _owner(request)
    page = paging.Page.of(request, {})
    keys = request.app[ACCOUNTS].live_keys(account.sid)[page.offset : page.offset + page.size + 1]
    items = [_api(k) for k in keys[: page.size]]
    return web.json_response(page.envelope("keys", items, request.path, len(keys) > page.size))


async def get_one(request: web.Request) -> web.Response:
    account = _owner(request)
    return web.json_response(_api(_key(request, account)))


async def revoke(request: web.Request) -> web.Response:
    account = _owner(request)
    info = _key(request, account)
    await request.app[NODE].api_keys.revoke(account.sid, info.sid)
    return web.Response(status=204)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/2010-04-01/Accounts/{account_sid}/Keys.json", create)
    app.router.add_get("/2010-04-01/Accounts/{account_sid}/Keys.json", get_list)
    app.router.add_get("/2010-04-01/Accounts/{account_sid}/Keys/{key_sid}.json", get_one)
    app.router.add_delete("/2010-04-01/Accounts/{account_sid}/Keys/{key_sid}.json", revoke)
