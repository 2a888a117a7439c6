"""Structured logs: console lines in dev mode, JSON lines otherwise.

Context is bound where it is known (account_sid, session_id, ...). Tokens,
secrets and message bodies are never logged; the ``redact`` processor is a
second line of defence that masks any field whose name says it holds one.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

_SECRET_FIELDS = frozenset({"token", "secret", "auth_token", "password", "authorization", "body", "api_key_secret"})


def redact(_logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
    for key in event.keys() & _SECRET_FIELDS:
        event[key] = "[redacted]"
    return event


def configure_logging(fmt: str, level: str = "info", stream: Any = None) -> None:
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=False) if fmt == "console" else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=structlog.PrintLoggerFactory(stream or sys.stderr),
        cache_logger_on_first_use=False,
    )
    # aiohttp's access log and errors go through the standard library.
    logging.basicConfig(level=getattr(logging, level.upper()), stream=stream or sys.stderr, format="%(name)s %(levelname)s %(message)s")
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
