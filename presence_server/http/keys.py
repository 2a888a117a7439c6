"""REST: revoking an API key (``DELETE /2010-04-01/Accounts/{AccountSid}/Keys/{KeySid}.json``).

Only the account's own auth token may revoke keys: an API key, even the one
named in the path, is answered 403 (20403). A leaked key must not be able to
lock its owner's other keys out, and the auth token is the credential an
owner keeps for exactly this. A key that is unknown, another account's or
already revoked is answered 404, like a deleted key on the platform whose
API this mirrors (a revoked key is gone as far as the API is concerned).
"""

from __future__ import annotations

from aiohttp import web

from protocol.addresses import is_sid
from protocol.errors import ErrorCode

from .app_keys import ACCOUNTS, NODE
from .auth import account_in_path, basic_credentials
from .errors import ApiError


async def revoke(request: web.Request) -> web.Response:
    accounts = request.app[ACCOUNTS]
    account = account_in_path(request, accounts)
    creds = basic_credentials(request)
    if creds is None or creds[0] != account.sid:
        raise ApiError(ErrorCode.FORBIDDEN, "API keys may not revoke API keys; use the account's auth token")
    key_sid = request.match_info["key_sid"]
    key = accounts.account_key(account.sid, key_sid) if is_sid(key_sid, "SK") else None
    if key is None or key.revoked:
        raise ApiError(ErrorCode.NOT_FOUND, f"no API key {key_sid[:40]!r} in this account")
    await request.app[NODE].revocations.revoke(account.sid, key_sid)
    return web.Response(status=204)


def add_routes(app: web.Application) -> None:
    app.router.add_delete("/2010-04-01/Accounts/{account_sid}/Keys/{key_sid}.json", revoke)
