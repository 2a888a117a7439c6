"""REST: presence queries (``/v1/Accounts/{AccountSid}/Presence``)."""

from __future__ import annotations

from aiohttp import web

from protocol.addresses import identity_problem
from protocol.errors import ErrorCode
from protocol.messages import MAX_IDENTITIES_PER_REQUEST

from .app_keys import ACCOUNTS, PRESENCE
from .auth import account_in_path
from .errors import ApiError


def _checked(identity: str) -> str:
    problem = identity_problem(identity)
    if problem:
        raise ApiError(ErrorCode.IDENTITY_INVALID, f"{identity[:64]!r}: {problem}")
    return identity


async def get_one(request: web.Request) -> web.Response:
    account = account_in_path(request, request.app[ACCOUNTS])
    identity = _checked(request.match_info["identity"])
    (result,) = await request.app[PRESENCE].query(account.sid, [identity])
    return web.json_response(result.to_wire())


async def get_many(request: web.Request) -> web.Response:
    account = account_in_path(request, request.app[ACCOUNTS])
    identities = request.query.getall("Identity", [])
    if not identities:
        raise ApiError(ErrorCode.PARAMETER_INVALID, "give at least one Identity query parameter")
    if len(identities) > MAX_IDENTITIES_PER_REQUEST:
        raise ApiError(ErrorCode.PARAMETER_INVALID, f"at most {MAX_IDENTITIES_PER_REQUEST} Identity parameters")
    unique = list(dict.fromkeys(_checked(i) for i in identities))
    results = await request.app[PRESENCE].query(account.sid, unique)
    return web.json_response({"presence": [r.to_wire() for r in results]})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/Accounts/{account_sid}/Presence", get_many)
    app.router.add_get("/v1/Accounts/{account_sid}/Presence/{identity}", get_one)
