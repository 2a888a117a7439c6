"""The logs' second line of defence: fields named for secrets, and
credential-shaped text anywhere in an entry (exceptions and the standard
library's loggers included), are masked."""

from __future__ import annotations

import io
import json
import logging
from typing import Iterator

import pytest
import structlog

from presence_server.logs import REDACTED, configure_logging, scrub_text

JWT = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJTSzEyMyJ9.dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"


@pytest.fixture
def logs() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    buf = io.StringIO()
    configure_logging("json", "debug", buf)
    try:
        yield buf
    finally:
        # Other tests run in this process: leave logging as it was.
        structlog.reset_defaults()
        root.handlers[:] = handlers
        root.setLevel(level)


def entries(buf: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in buf.getvalue().splitlines()]


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        (f"token {JWT} refused", "token [redacted] refused"),
        (f"unsigned {JWT.rsplit('.', 1)[0]}.", "unsigned [redacted]"),
        ("Authorization: Basic QUMxMjM6c2VjcmV0", "Authorization: Basic [redacted]"),
        ("Bearer sk_live_51Hx", "Bearer [redacted]"),
        ("redis://:s3cret@10.0.0.1:6379/0", "redis://:***@10.0.0.1:6379/0"),
        ("see https://user:pa55@app.example/voice", "see https://user:***@app.example/voice"),
        # Prose and credential-free URLs are left alone.
        ("HTTP Basic authentication is required", "HTTP Basic authentication is required"),
        ("https://user@app.example/ and https://x.example/@foo", "https://user@app.example/ and https://x.example/@foo"),
    ],
)
def test_scrub_text(text: str, kept: str) -> None:
    assert scrub_text(text) == kept


def test_fields_and_exceptions_are_masked(logs: io.StringIO) -> None:
    log = structlog.get_logger("test")
    log.info("event", token="abc", password="p", url="redis://:pw-1@h/0", headers={"a": [f"Bearer {JWT}"]})
    try:
        raise ValueError(f"cannot parse {JWT}")
    except ValueError:
        log.exception("failed")
    first, second = entries(logs)
    assert first["token"] == first["password"] == REDACTED
    assert first["url"] == "redis://:***@h/0" and first["headers"] == {"a": [f"Bearer {REDACTED}"]}
    assert JWT not in second["exception"] and REDACTED in str(second["exception"])


def test_standard_library_records_are_json_and_masked(logs: io.StringIO) -> None:
    logging.getLogger("redis.asyncio.connection").debug("connecting to %s", "redis://:pw-2@127.0.0.1:1/0")
    (entry,) = entries(logs)
    assert entry == {
        "event": "connecting to redis://:***@127.0.0.1:1/0", "logger": "redis.asyncio.connection",
        "level": "debug", "timestamp": entry["timestamp"],
    }
