"""Carrier webhooks and carrier answers, fuzzed through the real HTTP stack.

Carrier webhooks (``POST /v1/Ingress/{provider}/Status|Messages|Voice``) are
parsed by aiohttp (JSON, urlencoded and multipart bodies, the Authorization
header) and then by our handlers, so the target is a real server on a
loopback port: a Node with every role and the embedded engine, as
``tests/helpers/servers.py`` starts it. A refusal must be a 4xx with the JSON
error body (a known code, a message, the same status); a 5xx is a crash.

Carrier *answers* (what the ``http`` provider reads back from a carrier's API)
are outside bytes too: a real carrier HTTP server (``tests/helpers/carrier.py``)
answers with the fuzzer's status and body, and the provider must turn any
answer into a SendResult without ever taking its "failed unexpectedly" path.

:class:`WebhookRig` runs all of it on a private event loop, so that both a
synchronous Hypothesis test and the atheris harness can drive it one input at
a time.
"""

from __future__ import annotations

import asyncio
import base64
import json
from dataclasses import dataclass
from typing import Any

import aiohttp
import structlog

from presence_server.carriers.base import OutboundMessage, SendResult
from presence_server.carriers.http import HttpProvider
from presence_server.config import ProviderConfig
from protocol.errors import ErrorCode
from tests.fuzz.targets import MAX_MESSAGE, TRIED, Crash, Outcome, Refused
from tests.helpers.carrier import FakeCarrier
from tests.helpers.messaging import NUMBER, OTHER_NUMBER, account_with_number, send, wait_status
from tests.helpers.servers import RunningServer, start_server

INGRESS_USER = "carrier"
INGRESS_PASSWORD = "fuzz-ingress-password-0123"
PROVIDER = "carrier"
ROUTES = ("Status", "Messages", "Voice")
CONTENT_TYPES = (
    "application/json",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=fuzzboundary",
    "text/plain",
)
KNOWN_CODES = frozenset(e.code for e in ErrorCode)


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


VALID_AUTH = basic(INGRESS_USER, INGRESS_PASSWORD)


@dataclass(frozen=True)
class WebhookRequest:
    route: str  # one of ROUTES
    content_type: str
    body: bytes
    authorization: str | None = VALID_AUTH
    provider: str = PROVIDER


class WebhookRig:
    """A real server and a real carrier API, driven one input at a time."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.server: RunningServer | None = None
        self.http: aiohttp.ClientSession | None = None
        self.carrier = FakeCarrier()
        self.provider: HttpProvider | None = None
        # A message the carrier provider really sent, so that reports about it
        # are accepted and reach the pipeline's report handling.
        self.sent_id = ""

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def start(self) -> WebhookRig:
        self.run(self._start())
        return self

    async def _start(self) -> None:
        provider = {"name": PROVIDER, "kind": "outbox", "inbound_username": INGRESS_USER, "inbound_password": INGRESS_PASSWORD}
        # No per-address limit on failed authentications: the fuzzer sends wrong
        # credentials on purpose, and a 429 would hide what comes after the check.
        limits = {"auth_failure_rate": 1e9, "auth_failure_burst": 10**9}
        self.server = await start_server([account_with_number()], providers=[provider], http=limits)
        self.http = aiohttp.ClientSession()
        status, body = await send(self.server, From=NUMBER, To=OTHER_NUMBER, Body="hello")
        assert status == 201, body
        record = await wait_status(self.server, body["sid"], "sent")
        assert record.provider_message_id, record
        self.sent_id = record.provider_message_id
        await self.carrier.start()
        config = ProviderConfig.model_validate({"name": "fuzzed", "kind": "http", "url": self.carrier.url, "timeout": 2})
        self.provider = HttpProvider(config, session=self.http)
        await self.provider.start()

    def close(self) -> None:
        async def _close() -> None:
            if self.http is not None:
                await self.http.close()
            await self.carrier.close()
            if self.server is not None:
                await self.server.node.stop()

        self.run(_close())
        self.loop.close()

    # -- carrier webhooks -------------------------------------------------------------

    def feed(self, request: WebhookRequest) -> Outcome:
        TRIED["webhooks"] += 1
        try:
            status, body, content_type = self.run(self._post(request))
        except Exception as exc:  # the client side of loopback HTTP: only a server failure ends here
            raise Crash(f"webhooks: the request failed ({type(exc).__name__}: {exc})") from exc
        return judge_answer(status, body, content_type)

    async def _post(self, request: WebhookRequest) -> tuple[int, bytes, str]:
        assert self.server is not None and self.http is not None
        headers = {"Content-Type": request.content_type}
        if request.authorization is not None:
            headers["Authorization"] = request.authorization
        url = f"{self.server.http_url}/v1/Ingress/{request.provider}/{request.route}"
        async with self.http.post(url, data=request.body, headers=headers, allow_redirects=False) as resp:
            return resp.status, await resp.read(), resp.content_type

    # -- carrier answers ----------------------------------------------------------------

    def answer(self, status: int, body: bytes) -> SendResult:
        """Send one message through the http provider, the carrier answering ``status`` / ``body``."""
        TRIED["carrier_answer"] += 1
        assert self.provider is not None
        self.carrier.status, self.carrier.answer = status, body
        self.carrier.requests.clear()
        message = OutboundMessage(message_sid="SM" + "c3" * 16, account_sid="AC" + "d4" * 16, to=OTHER_NUMBER, from_=NUMBER, body="hi")
        with structlog.testing.capture_logs() as logs:
            try:
                result: SendResult = self.run(self.provider.send(message))
            except Exception as exc:
                raise Crash(f"carrier_answer: send raised {type(exc).__name__}: {exc}") from exc
        unexpected = [entry for entry in logs if entry.get("log_level") in ("error", "critical", "exception")]
        if unexpected:
            raise Crash(f"carrier_answer: HTTP {status} took the provider's 'failed unexpectedly' path: {unexpected[0]}")
        check_send_result(result)
        return result


def judge_answer(status: int, body: bytes, content_type: str) -> Outcome:
    """The rule, for an HTTP answer: 2xx accepted; 4xx with the JSON error body refused."""
    if 200 <= status < 300:
        return "accepted"
    if not 400 <= status < 500:
        raise Crash(f"webhooks: HTTP {status}: {body[:300]!r}")
    if content_type != "application/json":
        raise Crash(f"webhooks: HTTP {status} answered {content_type}, not the JSON error body")
    try:
        error = json.loads(body)
    except ValueError as exc:
        raise Crash(f"webhooks: HTTP {status} body is not JSON: {body[:300]!r}") from exc
    if not isinstance(error, dict) or error.get("code") not in KNOWN_CODES or error.get("status") != status:
        raise Crash(f"webhooks: HTTP {status} error body lacks a known code or the status: {error!r}"[:600])
    message = error.get("message")
    if not isinstance(message, str) or not message.strip() or len(message) > MAX_MESSAGE:
        raise Crash(f"webhooks: HTTP {status} error message is empty or too long: {message!r}"[:600])
    return Refused(error["code"], message)


def check_send_result(result: SendResult) -> None:
    if result.accepted:
        pid = result.provider_message_id
        if not (isinstance(pid, str) and 0 < len(pid) <= 256 and pid.isprintable()):
            raise Crash(f"carrier_answer: accepted with an unusable provider id {pid!r}"[:400])
    elif not (isinstance(result.error_code, int) and 30000 <= result.error_code <= 30999 and result.error_message):
        raise Crash(f"carrier_answer: a refusal without a 300xx code and a message: {result!r}"[:400])


def bytes_webhooks(rig: WebhookRig, data: bytes) -> Outcome:
    # Byte 0 picks the route and the body's content type, byte 1 the credentials
    # (right, missing, wrong, or the next line of input as the header); the rest
    # is the body.
    head, data = data[:2].ljust(2, b"\0"), data[2:]
    route = ROUTES[head[0] % len(ROUTES)]
    content_type = CONTENT_TYPES[(head[0] // len(ROUTES)) % len(CONTENT_TYPES)]
    mode = head[1] % 4
    authorization: str | None = VALID_AUTH
    if mode == 1:
        authorization = None
    elif mode == 2:
        authorization = basic(INGRESS_USER, "wrong-password-0123456789")
    elif mode == 3:
        line, _, data = data.partition(b"\n")
        # Bytes an HTTP client cannot put in a header (CR, LF, NUL...) never reach a server.
        authorization = "".join(ch for ch in line.decode("latin-1") if " " <= ch != "\x7f")
    return rig.feed(WebhookRequest(route, content_type, data, authorization))


def bytes_carrier_answer(rig: WebhookRig, data: bytes) -> SendResult:
    # Two bytes of status (200..599: a 1xx is never a final answer, the client
    # would wait for one until its timeout), then the answer's body.
    head, body = data[:2].ljust(2, b"\0"), data[2:]
    status = 200 + int.from_bytes(head, "big") % 400
    return rig.answer(status, body)


