"""Revoking API keys at run time, and keeping every node's view of them true.

A revocation (``DELETE /2010-04-01/Accounts/{AccountSid}/Keys/{KeySid}.json``)
is written to the engine first (:class:`~.engines.ports.KeyRevocations`: durable,
shared by every node, kept across restarts), then published on the bus. Each
node applies it to its own :class:`~.accounts.AccountRegistry` - so token
verification and REST authentication, which are synchronous, refuse the key at
once - and its gateway ends the live sessions whose token that key signed.

The bus delivers at most once: a node whose pub/sub connection was down when
the revocation was published misses it. So every node also reads the engine's
revocations when it starts and again every ``interval`` seconds; a missed
revocation takes effect there, within one interval.
"""

from __future__ import annotations

from typing import Any, Callable

import structlog

from .accounts import AccountRegistry
from .clock import Clock
from .engines.ports import REVOCATIONS_TOPIC, Engine, EngineUnavailable, Subscription

log = structlog.get_logger(__name__)

KeyRevoked = Callable[[str], int]  # key sid -> live sessions ended


class KeyRevocationService:
    def __init__(self, engine: Engine, accounts: AccountRegistry, clock: Clock, on_revoked: KeyRevoked) -> None:
        self._engine = engine
        self._accounts = accounts
        self._clock = clock
        self._on_revoked = on_revoked
        self._sub: Subscription | None = None

    async def start(self) -> None:
        self._sub = await self._engine.bus.subscribe(REVOCATIONS_TOPIC, self._on_message)
        try:
            await self.sync()
        except EngineUnavailable:
            # Redis may be down at start (not fatal for the engine either); the
            # loop below reads them as soon as it is back.
            log.warning("could not read revoked API keys at start; retrying")

    async def close(self) -> None:
        if self._sub is not None:
            await self._sub.close()
            self._sub = None

    async def revoke(self, account_sid: str, key_sid: str) -> bool:
        """Revoke one of the account's keys everywhere. False when it was already
        revoked (in the engine or in the config)."""
        newly = await self._engine.revocations.revoke(account_sid, key_sid, self._clock.time())
        # Applied here before the publish: this node refuses the key even when
        # the bus is slow, and the REST caller's next request sees it revoked.
        applied = self._apply(account_sid, key_sid)
        await self._engine.bus.publish(REVOCATIONS_TOPIC, {"account": account_sid, "key": key_sid})
        return newly or applied

    async def sync(self) -> int:
        """Apply every revocation the engine holds for the configured accounts;
        returns how many were new to this node."""
        applied = 0
        for account_sid in self._accounts.account_sids():
            for key_sid in await self._engine.revocations.revoked(account_sid):
                applied += self._apply(account_sid, key_sid)
        return applied

    async def sync_loop(self, interval: float) -> None:
        while True:
            await self._clock.sleep(interval)
            try:
                applied = await self.sync()
            except Exception:
                log.warning("reading revoked API keys failed; retrying next round", exc_info=True)
                continue
            if applied:
                log.info("applied API key revocations the bus did not bring", count=applied)

    def _on_message(self, message: dict[str, Any]) -> None:
        account_sid, key_sid = message.get("account"), message.get("key")
        if isinstance(account_sid, str) and isinstance(key_sid, str):
            self._apply(account_sid, key_sid)

    def _apply(self, account_sid: str, key_sid: str) -> bool:
        if not self._accounts.revoke_key(key_sid, account_sid):
            return False  # already revoked here, or not this account's key
        ended = self._on_revoked(key_sid)
        log.info("api key revoked", account_sid=account_sid, key_sid=key_sid, sessions_ended=ended)
        return True
