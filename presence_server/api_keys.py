"""API keys created and revoked at run time, and every node's view of them.

A key created (``POST /2010-04-01/Accounts/{AccountSid}/Keys.json``) or revoked
(``DELETE .../Keys/{KeySid}.json``) is written to the engine first
(:class:`~.engines.ports.ApiKeyStore`, :class:`~.engines.ports.KeyRevocations`:
durable, shared by every node, kept across restarts), then announced on the
bus. Each node applies it to its own :class:`~.accounts.AccountRegistry`, so
token verification and REST authentication, which are synchronous, know the key
at once; on a revocation its gateway also ends the live sessions whose token
that key signed. The bus carries sids only: a node that hears of a new key
reads it (and its secret) from the engine.

The bus delivers at most once: a node whose pub/sub connection was down when a
change was published misses it. So every node also reads the engine's keys and
revocations when it starts and again every ``interval`` seconds; a missed change
takes effect there, within one interval.
"""

from __future__ import annotations

import asyncio
import secrets
from typing import Any, Callable

import structlog

from protocol.addresses import new_sid

from .accounts import AccountRegistry, ApiKeyInfo
from .clock import Clock
from .engines.ports import API_KEYS_TOPIC, REVOCATIONS_TOPIC, CreatedApiKey, Engine, EngineUnavailable, Subscription

log = structlog.get_logger(__name__)

KeyRevoked = Callable[[str], int]  # key sid -> live sessions ended

# Keys created over REST and not revoked, per account: enough for a key per
# developer, service and CI runner; a bound, so that a leaked auth token cannot
# grow every node's registry without limit.
MAX_CREATED_KEYS = 100


class TooManyKeys(Exception):
    pass


class ApiKeyService:
    def __init__(self, engine: Engine, accounts: AccountRegistry, clock: Clock, on_revoked: KeyRevoked) -> None:
        self._engine = engine
        self._accounts = accounts
        self._clock = clock
        self._on_revoked = on_revoked
        self._subs: list[Subscription] = []
        self._reads: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        self._subs = [
            await self._engine.bus.subscribe(REVOCATIONS_TOPIC, self._on_revocation),
            await self._engine.bus.subscribe(API_KEYS_TOPIC, self._on_created),
        ]
        try:
            await self.sync()
        except EngineUnavailable:
            # Redis may be down at start (not fatal for the engine either); the
            # loop below reads them as soon as it is back.
            log.warning("could not read the API keys created and revoked at run time at start; retrying")

    async def close(self) -> None:
        for sub in self._subs:
            await sub.close()
        self._subs = []
        for task in list(self._reads):
            task.cancel()

    async def create(self, account_sid: str, friendly_name: str) -> tuple[ApiKeyInfo, str]:
        """A new key of the account, known on every node; returns it and its
        secret (shown once: the API never shows it again)."""
        created = sum(1 for k in self._accounts.live_keys(account_sid) if k.source == "api")
        if created >= MAX_CREATED_KEYS:
            raise TooManyKeys(f"this account has {created} API keys created over REST; revoke one first (at most {MAX_CREATED_KEYS})")
        key = CreatedApiKey(new_sid("SK"), account_sid, friendly_name, secrets.token_urlsafe(32), self._clock.time())
        if not await self._engine.api_keys.create(key):
            raise RuntimeError("a new API key sid was already taken")  # 128 random bits: never
        self._accounts.add_key(key.account_sid, key.sid, key.secret, key.friendly_name, key.date_created)
        await self._announce(API_KEYS_TOPIC, account_sid, key.sid)
        info = self._accounts.key_info(account_sid, key.sid)
        assert info is not None
        log.info("api key created", account_sid=account_sid, key_sid=key.sid)
        return info, key.secret

    async def revoke(self, account_sid: str, key_sid: str) -> bool:
        """Revoke one of the account's keys everywhere. False when it was already
        revoked (in the engine or in the config)."""
        newly = await self._engine.revocations.revoke(account_sid, key_sid, self._clock.time())
        # Applied here before the publish: this node refuses the key even when
        # the bus is slow, and the REST caller's next request sees it revoked.
        applied = self._apply_revocation(account_sid, key_sid)
        await self._announce(REVOCATIONS_TOPIC, account_sid, key_sid)
        return newly or applied

    async def _announce(self, topic: str, account_sid: str, key_sid: str) -> None:
        # The change is stored and applied here: a failed publish must not turn it
        # into an error for the caller (who would retry a creation, or be told 404
        # for a revocation that happened). The other nodes read it within one sync.
        try:
            await self._engine.bus.publish(topic, {"account": account_sid, "key": key_sid})
        except EngineUnavailable:
            log.warning("could not announce an API key change; the other nodes read it at their next sync", topic=topic, key_sid=key_sid)

    async def sync(self) -> int:
        """Apply every created key and revocation the engine holds for the
        configured accounts; returns how many were new to this node."""
        applied = 0
        for account_sid in self._accounts.account_sids():
            applied += await self._read_created(account_sid)
            # After the created keys: a key created and revoked ends up revoked.
            for key_sid in await self._engine.revocations.revoked(account_sid):
                applied += self._apply_revocation(account_sid, key_sid)
        return applied

    async def sync_loop(self, interval: float) -> None:
        while True:
            await self._clock.sleep(interval)
            try:
                applied = await self.sync()
            except Exception:
                log.warning("reading API keys failed; retrying next round", exc_info=True)
                continue
            if applied:
                log.info("applied API key changes the bus did not bring", count=applied)

    async def _read_created(self, account_sid: str) -> int:
        return sum(
            self._accounts.add_key(k.account_sid, k.sid, k.secret, k.friendly_name, k.date_created)
            for k in await self._engine.api_keys.list(account_sid)
        )

    def _on_created(self, message: dict[str, Any]) -> None:
        account_sid, key_sid = message.get("account"), message.get("key")
        if not (isinstance(account_sid, str) and isinstance(key_sid, str)):
            return
        if self._accounts.account(account_sid) is None or self._accounts.signing_key(key_sid) is not None:
            return  # not ours, or known already (this node created it)
        task = asyncio.get_running_loop().create_task(self._read_announced(account_sid))
        self._reads.add(task)
        task.add_done_callback(self._reads.discard)

    async def _read_announced(self, account_sid: str) -> None:
        try:
            await self._read_created(account_sid)
        except Exception:
            log.warning("reading a new API key failed; the next sync reads it", account_sid=account_sid, exc_info=True)

    def _on_revocation(self, message: dict[str, Any]) -> None:
        account_sid, key_sid = message.get("account"), message.get("key")
        if isinstance(account_sid, str) and isinstance(key_sid, str):
            self._apply_revocation(account_sid, key_sid)

    def _apply_revocation(self, account_sid: str, key_sid: str) -> bool:
        if not self._accounts.revoke_key(key_sid, account_sid):
            return False  # already revoked here, or not this account's key
        ended = self._on_revoked(key_sid)
        log.info("api key revoked", account_sid=account_sid, key_sid=key_sid, sessions_ended=ended)
        return True
