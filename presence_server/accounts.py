"""Accounts, their credentials and their identities, as configured.

The registry answers the three questions every entry point asks: which key
signed this token (for protocol.tokens), who is this REST caller (HTTP Basic
with AccountSid:AuthToken or ApiKeySid:ApiKeySecret), and what do we know of
this identity (its phone number, for SMS fallback).
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field

from protocol.tokens import SigningKey

from .config import AccountConfig, Config


@dataclass(frozen=True)
class Account:
    sid: str
    auth_token: str
    friendly_name: str = ""
    phones: dict[str, str] = field(default_factory=dict)  # identity -> E.164 phone

    @classmethod
    def from_config(cls, cfg: AccountConfig) -> Account:
        return cls(
            sid=cfg.sid,
            auth_token=cfg.auth_token,
            friendly_name=cfg.friendly_name,
            phones={i.identity: i.phone for i in cfg.identities if i.phone},
        )


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


class AccountRegistry:
    def __init__(self, config: Config) -> None:
        self._accounts = {a.sid: Account.from_config(a) for a in config.accounts}
        self._keys: dict[str, SigningKey] = {
            k.sid: SigningKey(
                sid=k.sid,
                account_sid=a.sid,
                secret=k.secret,
                public_key_pem=k.public_key_pem,
                revoked=k.revoked,
            )
            for a in config.accounts
            for k in a.api_keys
        }

    def account(self, sid: str) -> Account | None:
        return self._accounts.get(sid)

    def signing_key(self, key_sid: str) -> SigningKey | None:
        return self._keys.get(key_sid)

    def key_is_live(self, key_sid: str) -> bool:
        key = self._keys.get(key_sid)
        return key is not None and not key.revoked

    def revoke_key(self, key_sid: str) -> bool:
        """Revoke an API key at run time: its tokens are refused from now on,
        and live sessions that registered with it end at their next request."""
        key = self._keys.get(key_sid)
        if key is None:
            return False
        self._keys[key_sid] = SigningKey(key.sid, key.account_sid, key.secret, key.public_key_pem, revoked=True)
        return True

    def authenticate(self, username: str, password: str) -> Account | None:
        """HTTP Basic credentials: an account's sid and auth token, or one of its
        (unrevoked, secret-bearing) API keys' sid and secret."""
        account = self._accounts.get(username)
        if account is not None:
            return account if _same(password, account.auth_token) else None
        key = self._keys.get(username)
        if key is None or key.revoked or key.secret is None or not _same(password, key.secret):
            return None
        return self._accounts.get(key.account_sid)
