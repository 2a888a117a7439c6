"""The SDK's exceptions.

Everything the SDK raises on purpose is a :class:`PresenceError`, so one
``except PresenceError`` covers refusals from the server and connection
trouble alike. A refusal carries the server's numeric ``code`` (the table in
``protocol.errors``); errors found on this side (no connection, a timeout) have
``code`` None. Invalid arguments are not PresenceErrors: they raise
ValueError / TypeError at the call, because they are bugs in the calling code.
"""

from __future__ import annotations

from typing import Any, Mapping

from protocol.errors import CLOSE_FORBIDDEN, CLOSE_TOKEN_EXPIRED, CLOSE_UNAUTHORIZED, ErrorCode

# Close codes after which the same token will be refused again.
AUTH_CLOSE_CODES = frozenset({CLOSE_UNAUTHORIZED, CLOSE_TOKEN_EXPIRED, CLOSE_FORBIDDEN})

# The server's table, by wire code: what a code is called and how it closes.
_SPECS: dict[int, ErrorCode] = {e.code: e for e in ErrorCode}


class PresenceError(Exception):
    """A refusal from the server (``code`` set) or a failure on this side (``code`` None)."""

    def __init__(self, code: int | None, message: str, *, fatal: bool = False, close_code: int | None = None) -> None:
        self.code = code
        self.message = message
        self.fatal = fatal
        spec = _SPECS.get(code) if code is not None else None
        # The close code that follows a fatal error; the table knows it even
        # when the frame did not say.
        self.close_code = close_code if close_code is not None else (spec.close_code if spec and fatal else None)
        super().__init__(f"{message} (code {code})" if code is not None else message)

    @property
    def name(self) -> str | None:
        """The error's name in ``protocol.errors.ErrorCode`` (e.g. ``TOKEN_EXPIRED``), if known."""
        spec = _SPECS.get(self.code) if self.code is not None else None
        return spec.name if spec else None

    @property
    def is_auth_refusal(self) -> bool:
        """True when retrying with the same token is pointless: the token was
        refused, expired, or lacks a grant the session needs."""
        return self.close_code in AUTH_CLOSE_CODES

    @classmethod
    def from_frame(cls, frame: Mapping[str, Any]) -> PresenceError:
        """Build from a server ``error`` frame."""
        code = frame.get("code")
        message = frame.get("message")
        return cls(
            code if isinstance(code, int) and not isinstance(code, bool) else None,
            message if isinstance(message, str) and message else "the server refused the request",
            fatal=bool(frame.get("fatal", False)),
        )


class NotConnectedError(PresenceError):
    """The client is not connected: connect() was not called, or it is closed."""

    def __init__(self, message: str = "the client is not connected") -> None:
        super().__init__(None, message)


class PresenceConnectionError(PresenceError, ConnectionError):
    """The connection could not be opened, or ended before a reply came.
    ``close_code`` is the WebSocket close code when there was one (1006: the
    connection dropped without one)."""

    def __init__(self, message: str, *, close_code: int | None = None, reason: str = "") -> None:
        super().__init__(None, message, close_code=close_code)
        self.reason = reason


class RequestTimeoutError(PresenceError, TimeoutError):
    """No reply (or no connection to send on) within ``request_timeout``."""

    def __init__(self, message: str) -> None:
        super().__init__(None, message)


class TokenError(PresenceError):
    """Getting a token from the token callable, or renewing the session with
    it (``update_token``), failed. Renewal failures are reported through
    ``on_error``; ``__cause__`` holds the underlying exception, and ``code``
    the server's code when the server refused the token."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(code, message)


class CallError(PresenceError):
    """A call request failed: the server refused it (``code`` 310xx, e.g.
    31002 answered on another device, 31003 not in a state that allows it),
    or the call cannot do it from here (``code`` None: it has ended, it is not
    answered yet, it is not an incoming call). ``call_sid`` names the call
    (None for a call that was never created); ``end_reason`` is the call's
    end reason when it had ended."""

    def __init__(
        self, code: int | None, message: str, *, call_sid: str | None = None, end_reason: str | None = None
    ) -> None:
        super().__init__(code, message)
        self.call_sid = call_sid
        self.end_reason = end_reason
