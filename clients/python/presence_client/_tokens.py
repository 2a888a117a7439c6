"""Where the client's access tokens come from, and what it knows of the current one."""

from __future__ import annotations

import asyncio
import inspect
from typing import Awaitable, Callable, Union

from . import _validate
from .clock import Clock
from .errors import TokenError

TokenSource = Union[str, Callable[[], Awaitable[str]], Callable[[], str]]


class TokenKeeper:
    """The token source (a fixed string, or a plain or async callable) and
    the current token: its value, its expiry (as the server reported it) and
    when it was fetched."""

    def __init__(self, source: TokenSource, clock: Clock, timeout: float, renew_before: float) -> None:
        if isinstance(source, str):
            _validate.token(source)
        elif not callable(source):
            raise TypeError(f"token must be a string or a callable returning one, not {type(source).__name__}")
        self._source = source
        self._clock = clock
        self._timeout = timeout
        self._renew_before = renew_before
        self.value: str | None = source if isinstance(source, str) else None
        self.expires: float | None = None  # epoch seconds, server clock; None until the server has read it
        self.fetched_at: float | None = None  # clock.monotonic() of the last token from the callable

    @property
    def renewable(self) -> bool:
        """Only a callable can supply a new token."""
        return not isinstance(self._source, str)

    def age(self) -> float | None:
        return None if self.fetched_at is None else self._clock.monotonic() - self.fetched_at

    async def fetch(self) -> str:
        """A new token from the callable (the fixed one for a string). Any
        failure is a :class:`TokenError` with the cause attached."""
        source = self._source
        if isinstance(source, str):
            return source
        try:
            async with asyncio.timeout(self._timeout):
                value = source()
                if inspect.isawaitable(value):
                    value = await value
        except TimeoutError:
            raise TokenError(f"the token callable did not return within {self._timeout:g} s") from None
        except Exception as exc:
            raise TokenError(f"the token callable failed: {exc!r}") from exc
        try:
            token = _validate.token(value)
        except (TypeError, ValueError) as exc:
            raise TokenError(f"the token callable returned a bad token: {exc}") from exc
        self.fetched_at = self._clock.monotonic()
        return token

    async def for_connect(self, *, refetch: bool = False) -> str:
        """The token to register with: the current one while it has more than
        ``renew_before`` seconds left, else (or when ``refetch``: the current
        one was refused) a new one. Reusing spares the backend a token request
        on every reconnect attempt of an outage."""
        if isinstance(self._source, str):
            return self._source
        near_expiry = self.expires is not None and self.expires - self._clock.time() <= self._renew_before
        if refetch or self.value is None or near_expiry:
            self.value = await self.fetch()
            self.expires = None
        return self.value

    def accepted(self, token: str, expires: float) -> None:
        """The server took ``token``; it expires at ``expires``."""
        self.value = token
        self.expires = expires

    def forget(self) -> None:
        """The current token was refused: never offer it again."""
        if self.renewable:
            self.value = None
            self.expires = None
