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


def test_a_malformed_request_is_one_debug_line_and_a_handler_error_stays_an_error(logs: io.StringIO) -> None:
    from aiohttp.http_exceptions import BadHttpMessage

    from presence_server.logs import quiet_malformed_requests

    quiet_malformed_requests()
    quiet_malformed_requests()  # once is enough: a second node in the process adds nothing
    server_log = logging.getLogger("aiohttp.server")
    assert len([f for f in server_log.filters if type(f).__name__ == "MalformedRequests"]) == 1
    for exc in (BadHttpMessage(f"Invalid header: Authorization: Basic {JWT}"), ValueError("our bug")):
        try:
            raise exc
        except Exception as caught:  # noqa: BLE001 - logged as aiohttp does
            server_log.error("Error handling request from %s", "203.0.113.9", exc_info=caught)
    refused, bug = entries(logs)
    assert refused["level"] == "debug" and refused["event"] == "malformed HTTP request refused", refused
    assert refused["status"] == 400 and refused["remote"] == "203.0.113.9" and "exception" not in refused
    assert JWT not in json.dumps(refused)  # the client's bytes are masked like everything else
    assert bug["level"] == "error" and "ValueError: our bug" in str(bug["exception"])
