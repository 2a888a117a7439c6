"""Status callbacks: signed, fire-and-forget requests to customers' URLs.

A status callback tells the customer's app what happened (a call was
answered, a message delivered); nothing waits for the answer, so a failure is
logged, retried a few times, and never raised. The request itself is the
fetcher's (:func:`~presence_server.signaling.fetcher.signed_request`): same
signature, same idempotency token across retries, same URL guard (through the
session), same ``#`` connection overrides for its timeouts.

Retries follow this sender's policy, not the fragment's ``rc``/``rp``: a
callback is not on a caller's critical path, so it can afford to wait longer
between attempts (``backoff`` seconds, doubling) than an instruction fetch can.
The waits go through the injected clock, so tests advance time instead of
sleeping.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, Final

import aiohttp
import structlog

from .clock import Clock
from .signaling.fetcher import (
    DEFAULT_USER_AGENT,
    FetchError,
    FetchOverrides,
    log_url,
    new_idempotency_token,
    signed_request,
    split_fragment,
)

__all__ = ["WebhookSender"]

log = structlog.get_logger(__name__)

# Failures worth another attempt: the receiver may be restarting or overloaded.
# 4xx (the URL or the app is wrong), refused addresses, TLS certificate and
# protocol errors will fail the same way again.
_RETRYABLE: Final = frozenset({"ct", "rt", "tt", "5xx"})

# Parameters that identify what a callback is about; logged so an operator can
# follow one call or message. Nothing else from the form is logged: it may hold
# a message body.
_CONTEXT_PARAMS: Final = {"AccountSid": "account_sid", "CallSid": "call_sid", "MessageSid": "message_sid"}


class WebhookSender:
    """Sends signed status callbacks with retries; never raises.

    ``session`` should come from ``guarded_session`` (the SSRF guard lives in
    it). ``retries`` more attempts follow a connection failure, a timeout or a
    5xx, after ``backoff``, ``2 * backoff``, ``4 * backoff`` ... seconds of
    ``clock`` time.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        clock: Clock,
        *,
        retries: int = 3,
        backoff: float = 1.0,
        user_agent: str = DEFAULT_USER_AGENT,
    ) -> None:
        self._session = session
        self._clock = clock
        self._retries = max(0, retries)
        self._backoff = backoff
        self._user_agent = user_agent
        self._tasks: set[asyncio.Task[bool]] = set()
        self._closed = False

    async def send(self, url: str, method: str, params: Mapping[str, str], auth_token: str) -> bool:
        """Deliver one callback; True once a 2xx answer came back, False when it never did."""
        context = {name: params[key] for key, name in _CONTEXT_PARAMS.items() if key in params}
        try:
            target, overrides = split_fragment(url)
            token = new_idempotency_token()  # one per callback, the same on every retry
            attempts = self._retries + 1
            for attempt in range(1, attempts + 1):
                code: int | None = None
                status: int | None = None
                try:
                    status, final_url = await self._attempt(target, method, params, auth_token, overrides, token)
                except FetchError as err:
                    code, status, reason = err.code, err.status, err.message
                    retryable = err.retry_class in _RETRYABLE
                else:
                    if 200 <= status < 300:
                        log.info("webhook delivered", url=log_url(final_url), status=status, attempts=attempt, **context)
                        return True
                    reason, retryable = f"HTTP {status}", status >= 500
                if not retryable or attempt == attempts:
                    log.warning(
                        "webhook failed", url=log_url(target), reason=reason, code=code, status=status,
                        attempts=attempt, **context,
                    )
                    return False
                delay = self._backoff * 2 ** (attempt - 1)
                log.info("webhook retry scheduled", url=log_url(target), reason=reason, delay=delay, attempt=attempt, **context)
                await self._clock.sleep(delay)
        except asyncio.CancelledError:
            raise
        except Exception:  # a callback must never take its caller down
            log.exception("webhook sender error", url=log_url(url), **context)
        return False

    async def _attempt(
        self,
        url: str,
        method: str,
        params: Mapping[str, str],
        auth_token: str,
        overrides: FetchOverrides,
        token: str,
    ) -> tuple[int, str]:
        """One attempt (redirects followed): the final status and URL; the body is not read."""
        # The fragment's total timeout bounds each attempt here, not all of them:
        # the retries are spread over seconds of backoff on purpose.
        deadline = asyncio.get_running_loop().time() + overrides.total_timeout
        async with signed_request(
            self._session,
            url,
            method,
            params,
            auth_token,
            overrides=overrides,
            deadline=deadline,
            idempotency_token=token,
            user_agent=self._user_agent,
        ) as sent:
            return sent.response.status, sent.url

    def send_soon(
        self, url: str, method: str, params: Mapping[str, str], auth_token: str
    ) -> asyncio.Task[bool] | None:
        """Schedule :meth:`send` in the background; the task is tracked until it ends.

        Returns the task (to await it if one wants to), or None once the sender is closed.
        """
        if self._closed:
            log.warning("webhook dropped: sender closed", url=log_url(url))
            return None
        # A copy: the caller may reuse or change its dict after this returns.
        task = asyncio.create_task(self.send(url, method, dict(params), auth_token), name=f"webhook {log_url(url)}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    @property
    def pending(self) -> int:
        """Callbacks scheduled with :meth:`send_soon` and not finished yet."""
        return len(self._tasks)

    async def close(self, timeout: float = 5.0) -> None:
        """Stop accepting callbacks; wait up to ``timeout`` seconds (real time) for
        the pending ones, then cancel what is left and wait for it to unwind."""
        self._closed = True
        if not self._tasks:
            return
        tasks = set(self._tasks)
        _, pending = await asyncio.wait(tasks, timeout=timeout)
        for task in pending:
            task.cancel()
        if pending:
            log.warning("webhooks cancelled at close", count=len(pending))
            await asyncio.gather(*pending, return_exceptions=True)

    async def __aenter__(self) -> WebhookSender:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()
