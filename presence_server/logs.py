"""Structured logs: console lines in dev mode, JSON lines otherwise.

Context is bound where it is known (account_sid, session_id, ...). Tokens,
secrets and message bodies are never logged: the code logs sids, codes and
URLs without their credentials (``log_url``). Two processors are a second
line of defence, for what a library or an exception message might carry:

* ``redact`` masks every field whose name says it holds a secret;
* ``scrub`` masks, in every string of an entry (exception text included),
  what has the shape of a credential: an access token (a JWT), the value of
  an ``Authorization: Basic``/``Bearer`` header, and the password of a URL's
  userinfo (``redis://:password@host``).

The standard library's loggers (aiohttp, redis-py, asyncio) go through the
same processors and the same renderer, so a JSON log is JSON on every line and
none of it bypasses the masking.

A malformed HTTP request (a head over aiohttp's limits, TLS bytes on the plain
port, a bad ``Content-Length``...) is the client's fault: aiohttp answers it
400 and would log it as an error with a traceback, so any client could fill
the error log. :class:`MalformedRequests` turns those lines into one debug line.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

import structlog
from aiohttp.http_exceptions import HttpProcessingError

_SECRET_FIELDS = frozenset({"token", "secret", "auth_token", "password", "authorization", "body", "api_key_secret"})

REDACTED = "[redacted]"

# Shapes of credentials. A JWT's header and payload are base64url JSON objects,
# so they start with "eyJ" ('{"'); the signature may be empty (alg none).
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*")
# The credential must hold a digit or a base64 symbol, so that prose ("Basic
# authentication") is left alone; random credentials essentially always do.
_AUTH_HEADER = re.compile(r"\b(Basic|Bearer)(?:\s+|%20)(?=[A-Za-z._~-]*[0-9+/=%])[A-Za-z0-9._~+/=%-]{6,}", re.IGNORECASE)
# scheme://user:password@ -> scheme://user:***@ (user kept: it says which account)
_USERINFO = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*://[^/@\s:\"']*):[^/@\s\"']*@")


def scrub_text(text: str) -> str:
    """``text`` with every credential-shaped part masked (see the module docstring)."""
    if "eyJ" in text:
        text = _JWT.sub(REDACTED, text)
    if "@" in text:
        text = _USERINFO.sub(r"\1:***@", text)
    return _AUTH_HEADER.sub(lambda m: f"{m.group(1)} {REDACTED}", text)


def redact(_logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
    for key in event.keys() & _SECRET_FIELDS:
        event[key] = REDACTED
    return event


def _scrub_value(value: Any) -> Any:
    if isinstance(value, str):
        return scrub_text(value)
    if isinstance(value, (list, tuple)):
        return type(value)(_scrub_value(v) for v in value)
    if isinstance(value, dict):
        return {k: _scrub_value(v) for k, v in value.items()}
    return value


def scrub(_logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
    """Runs after ``format_exc_info``, so exception text is scrubbed too."""
    for key, value in event.items():
        event[key] = _scrub_value(value)
    return event


class MalformedRequests(logging.Filter):
    """On ``aiohttp.server``: a request aiohttp refused as malformed
    (:class:`~aiohttp.http_exceptions.HttpProcessingError`: 400, 413, 431...)
    becomes one debug line without its traceback. Errors of our handlers (500)
    keep their error line and traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, HttpProcessingError):
            return True
        # The message may quote up to ~100 of the client's bytes: cut, and masked by ``scrub``.
        _log.debug("malformed HTTP request refused", status=exc.code, reason=str(exc.message)[:200], remote=_remote(record))
        return False


def _remote(record: logging.LogRecord) -> str | None:
    # aiohttp logs "Error handling request from %s" with the peer address as the only argument.
    args = record.args
    return str(args[0]) if isinstance(args, tuple) and args else None


_log = structlog.get_logger("presence_server.http")
_handler: logging.Handler | None = None
_malformed = MalformedRequests()


def quiet_malformed_requests() -> None:
    """Install :class:`MalformedRequests` on aiohttp's server logger (once; the
    node does it before it serves, whoever configured the logging)."""
    server_log = logging.getLogger("aiohttp.server")
    if _malformed not in server_log.filters:
        server_log.addFilter(_malformed)


def configure_logging(fmt: str, level: str = "info", stream: Any = None) -> None:
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=False) if fmt == "console" else structlog.processors.JSONRenderer()
    )
    shared: list[Any] = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact,
        structlog.processors.format_exc_info,
        scrub,
    ]
    structlog.configure(
        processors=[structlog.contextvars.merge_contextvars, *shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=structlog.PrintLoggerFactory(stream or sys.stderr),
        cache_logger_on_first_use=False,
    )
    # aiohttp's, redis-py's and asyncio's records: rendered like ours, masked like ours.
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    global _handler
    root = logging.getLogger()
    if _handler is not None:  # configured before: replace our handler, leave others' alone
        root.removeHandler(_handler)
    _handler = handler
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper()))
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
