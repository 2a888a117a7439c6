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

from .config import AccountConfig, ApplicationConfig, Config, FallbackConfig, MessagingServiceConfig, PhoneNumberConfig


@dataclass(frozen=True)
class Webhook:
    """A URL the server requests, with its method and fallback."""

    url: str
    method: str = "POST"
    fallback_url: str | None = None
    fallback_method: str = "POST"


@dataclass(frozen=True)
class Account:
    sid: str
    auth_token: str
    friendly_name: str = ""
    phones: dict[str, str] = field(default_factory=dict)  # identity -> E.164 phone
    applications: dict[str, ApplicationConfig] = field(default_factory=dict)
    numbers: dict[str, PhoneNumberConfig] = field(default_factory=dict)  # E.164 -> number
    fallback: FallbackConfig = field(default_factory=FallbackConfig)
    messaging_services: dict[str, MessagingServiceConfig] = field(default_factory=dict)  # sid -> service

    @classmethod
    def from_config(cls, cfg: AccountConfig) -> Account:
        return cls(
            sid=cfg.sid,
            auth_token=cfg.auth_token,
            friendly_name=cfg.friendly_name,
            phones={i.identity: i.phone for i in cfg.identities if i.phone},
            applications={a.sid: a for a in cfg.applications},
            numbers={n.number: n for n in cfg.phone_numbers},
            fallback=cfg.fallback,
            messaging_services={s.sid: s for s in cfg.messaging_services},
        )

    def identity_for_phone(self, phone: str) -> str | None:
        """The client identity whose configured phone this is (carrier <-> IP transition)."""
        for identity, number in self.phones.items():
            if number == phone:
                return identity
        return None

    def voice_webhook(self, number: str) -> Webhook | None:
        """Where an incoming call to one of our numbers asks what to do."""
        n = self.numbers.get(number)
        if n is None:
            return None
        app = self.applications.get(n.application_sid) if n.application_sid else None
        url = n.voice_url or (app.voice_url if app else None)
        if url is None:
            return None
        if n.voice_url:
            return Webhook(url, n.voice_method, n.voice_fallback_url, n.voice_fallback_method)
        assert app is not None
        return Webhook(url, app.voice_method, app.voice_fallback_url, app.voice_fallback_method)

    def sms_webhook(self, number: str) -> Webhook | None:
        n = self.numbers.get(number)
        if n is None:
            return None
        app = self.applications.get(n.application_sid) if n.application_sid else None
        if n.sms_url:
            return Webhook(n.sms_url, n.sms_method, n.sms_fallback_url, n.sms_fallback_method)
        if app is not None and app.sms_url:
            return Webhook(app.sms_url, app.sms_method, app.sms_fallback_url, app.sms_fallback_method)
        return None

    def application_webhook(self, application_sid: str) -> Webhook | None:
        app = self.applications.get(application_sid)
        if app is None or app.voice_url is None:
            return None
        return Webhook(app.voice_url, app.voice_method, app.voice_fallback_url, app.voice_fallback_method)


@dataclass(frozen=True)
class ApiKeyInfo:
    """What the Keys resource shows of a key (never its secret)."""

    sid: str
    friendly_name: str
    date_created: float | None  # None: from the config file, which has no dates
    source: str  # "config" or "api"


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


class AccountRegistry:
    def __init__(self, config: Config) -> None:
        self._accounts = {a.sid: Account.from_config(a) for a in config.accounts}
        self._number_owners = {n: acc for acc in self._accounts.values() for n in acc.numbers}
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
        self._key_info: dict[str, ApiKeyInfo] = {
            k.sid: ApiKeyInfo(k.sid, k.friendly_name, None, "config") for a in config.accounts for k in a.api_keys
        }

    def account(self, sid: str) -> Account | None:
        return self._accounts.get(sid)

    def owner_of_number(self, number: str) -> Account | None:
        """The account one of whose phone numbers this is."""
        return self._number_owners.get(number)

    def signing_key(self, key_sid: str) -> SigningKey | None:
        return self._keys.get(key_sid)

    def key_is_live(self, key_sid: str) -> bool:
        key = self._keys.get(key_sid)
        return key is not None and not key.revoked

    def account_key(self, account_sid: str, key_sid: str) -> SigningKey | None:
        """One of this account's API keys (None for another account's: callers
        answer both the same, so nobody learns that a key exists elsewhere)."""
        key = self._keys.get(key_sid)
        return key if key is not None and key.account_sid == account_sid else None

    def revoke_key(self, key_sid: str, account_sid: str | None = None) -> bool:
        """Mark an API key revoked in this process: its tokens are refused from
        now on (see presence_server/api_keys.py for the shared, durable half).
        True when this changed it; False when it was already revoked, unknown,
        or (with ``account_sid``) another account's."""
        key = self._keys.get(key_sid)
        if key is None or key.revoked or (account_sid is not None and key.account_sid != account_sid):
            return False
        self._keys[key_sid] = SigningKey(key.sid, key.account_sid, key.secret, key.public_key_pem, revoked=True)
        return True

    def add_key(self, account_sid: str, key_sid: str, secret: str, friendly_name: str, date_created: float) -> bool:
        """Know an API key created at run time (presence_server/api_keys.py holds
        the shared, durable half). False when the sid is already known (this
        node created it, or heard of it before) or the account is not ours."""
        if key_sid in self._keys or account_sid not in self._accounts:
            return False
        self._keys[key_sid] = SigningKey(sid=key_sid, account_sid=account_sid, secret=secret)
        self._key_info[key_sid] = ApiKeyInfo(key_sid, friendly_name, date_created, "api")
        return True

    def live_keys(self, account_sid: str) -> list[ApiKeyInfo]:
        """The account's keys that are not revoked: the config's in its order,
        then the created ones, oldest first."""
        live = [
            info for sid, info in self._key_info.items()
            if self._keys[sid].account_sid == account_sid and not self._keys[sid].revoked
        ]
        return sorted(live, key=lambda i: (i.source != "config", i.date_created or 0.0))  # stable: config order kept

    def key_info(self, account_sid: str, key_sid: str) -> ApiKeyInfo | None:
        """One of the account's live keys (None for a revoked, unknown or another account's key)."""
        key = self.account_key(account_sid, key_sid)
        return self._key_info[key_sid] if key is not None and not key.revoked else None

    def account_sids(self) -> list[str]:
        return list(self._accounts)

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
