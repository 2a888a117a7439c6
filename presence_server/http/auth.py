"""HTTP Basic authentication of REST callers, scoped to the account in the path.

A caller authenticates as an account (AccountSid:AuthToken) or one of its API
keys (ApiKeySid:ApiKeySecret). Wrong credentials answer 401; right
credentials for another account than the path's answer 404, so that nobody
learns whether an account they do not hold exists.
"""

from __future__ import annotations

import base64
import binascii
import hmac

from aiohttp import web

from protocol.errors import ErrorCode

from ..accounts import Account, AccountRegistry
from ..config import OperatorConfig
from .errors import ApiError

_CHALLENGE = {"WWW-Authenticate": 'Basic realm="presence-server"'}


def basic_credentials(request: web.Request) -> tuple[str, str] | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or not value:
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    # ValueError: a non-ASCII header value ("Basic é"), which b64decode refuses
    # before binascii sees it (found by tests/fuzz; it was a 500).
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None


def authenticate(request: web.Request, accounts: AccountRegistry) -> Account:
    creds = basic_credentials(request)
    if creds is None:
        raise ApiError(ErrorCode.AUTHENTICATION_FAILED, "HTTP Basic credentials are required", headers=_CHALLENGE)
    account = accounts.authenticate(*creds)
    if account is None:
        raise ApiError(ErrorCode.AUTHENTICATION_FAILED, headers=_CHALLENGE)
    return account


def account_in_path(request: web.Request, accounts: AccountRegistry) -> Account:
    """Authenticate, then require the path's AccountSid to be the caller's."""
    account = authenticate(request, accounts)
    if request.match_info.get("account_sid") != account.sid:
        raise ApiError(ErrorCode.NOT_FOUND)
    return account


_OPERATOR_CHALLENGE = {"WWW-Authenticate": 'Basic realm="presence-server operator"'}


def operator(request: web.Request, config: OperatorConfig) -> None:
    """Require the operator's credentials (HTTP Basic, [operator] in the config).
    With none configured, operator endpoints are closed to everyone."""
    if config.username is None or config.password is None:
        raise ApiError(ErrorCode.OPERATOR_ONLY, "no operator credentials are configured ([operator] username and password)")
    creds = basic_credentials(request)
    if creds is None:
        raise ApiError(ErrorCode.OPERATOR_ONLY, headers=_OPERATOR_CHALLENGE)
    user_ok = hmac.compare_digest(creds[0].encode(), config.username.encode())
    password_ok = hmac.compare_digest(creds[1].encode(), config.password.encode())
    if not (user_ok and password_ok):
        raise ApiError(ErrorCode.OPERATOR_ONLY, headers=_OPERATOR_CHALLENGE)
