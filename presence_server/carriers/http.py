"""The ``http`` provider: a generic JSON-over-HTTP carrier API.

Each message is one ``POST <url>`` with a JSON body (docs/carriers.md has the
exact format), authenticated with HTTP Basic or a Bearer token. The carrier
answers 2xx with ``{"id": "..."}`` and later reports delivery on
``POST /v1/Ingress/<name>/Status`` (http/ingress_carrier.py).

How answers map to :class:`SendResult` (codes are Twilio's messaging codes):

=========================================  ========  =========  ======
carrier answer                              accepted  temporary  code
=========================================  ========  =========  ======
2xx with a JSON object holding an id        yes
2xx without one (garbage, no id)            no        no         30008
401, 403                                    no        no         30002
429                                         no        yes        30001
other 4xx                                   no        no         30007
503                                         no        yes        30001
other 5xx                                   no        yes        30008
anything else (1xx, 3xx: no redirects)      no        no         30008
timeout, connection failure                 no        yes        30008
=========================================  ========  =========  ======

A 4xx body may name a more precise code (``{"error_code": 30005}``, any
300xx); it is used. A 2xx without an id is *not* temporary although the
carrier may have sent the text: retrying could text the person twice, and a
carrier that answers garbage needs an operator, not a retry loop. Every
request carries ``Idempotency-Key: <message sid>`` so a carrier can drop the
duplicate when a retry follows a timeout.
"""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import aiohttp
import structlog

from ..config import ProviderConfig
from .base import (
    ACCOUNT_SUSPENDED,
    FILTERED,
    QUEUE_OVERFLOW,
    UNKNOWN_ERROR,
    OutboundMessage,
    SendResult,
    capability_refusal,
)

log = structlog.get_logger(__name__)

# A carrier's answer is a small JSON object; anything bigger is not one.
MAX_ANSWER_BYTES = 64 * 1024
MAX_ID_LENGTH = 256


def _answer_error_code(answer: Any) -> int | None:
    code = answer.get("error_code") if isinstance(answer, dict) else None
    if isinstance(code, str) and code.isdigit():
        code = int(code)
    return code if isinstance(code, int) and not isinstance(code, bool) and 30000 <= code <= 30999 else None


def _answer_id(answer: Any) -> str | None:
    if not isinstance(answer, dict):
        return None
    for key in ("id", "message_id"):
        value = answer.get(key)
        if isinstance(value, bool):
            continue
        if isinstance(value, int):
            value = str(value)
        # Printable ASCII, as the delivery report ingress requires: an id no report could name is no id.
        if isinstance(value, str) and 0 < len(value) <= MAX_ID_LENGTH and value.isascii() and value.isprintable():
            return value
    return None


async def _read_capped(resp: aiohttp.ClientResponse, cap: int) -> bytes:
    # Read the answer up to ``cap`` bytes: a carrier (or whatever answers at its URL)
    # streaming without end must not fill our memory.
    data = bytearray()
    async for chunk in resp.content.iter_chunked(16 * 1024):
        data += chunk
        if len(data) >= cap:
            break
    return bytes(data[:cap])


class HttpProvider:
    kind = "http"

    def __init__(self, config: ProviderConfig, *, session: aiohttp.ClientSession | None = None, public_url: str | None = None) -> None:
        if not config.url:
            raise ValueError(f"provider {config.name!r}: a provider of kind 'http' needs a url")
        self.config = config
        self.name = config.name
        self.capabilities: frozenset[str] = frozenset(config.capabilities)
        self.url = config.url
        # This server's base URL as the carrier reaches it; None leaves the status
        # callback out of the body (the carrier then uses the webhook it has configured).
        self.public_url = public_url.rstrip("/") if public_url else None
        self._session = session
        self._owns_session = session is None
        self._closed = False
        self._timeout = aiohttp.ClientTimeout(total=config.timeout)
        self._headers = {"Content-Type": "application/json", "Accept": "application/json"}
        # A bearer token wins when both are configured (documented in docs/carriers.md).
        if config.auth_bearer:
            self._headers["Authorization"] = f"Bearer {config.auth_bearer}"
        elif config.auth_username:
            # Built by hand: aiohttp's BasicAuth / auth= are deprecated as of 3.14.
            pair = f"{config.auth_username}:{config.auth_password or ''}".encode()
            self._headers["Authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")
        self._log = log.bind(provider=self.name)

    @property
    def status_callback(self) -> str | None:
        return f"{self.public_url}/v1/Ingress/{self.name}/Status" if self.public_url else None

    async def start(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        self._log.info("http provider started")

    async def close(self) -> None:
        self._closed = True
        if self._owns_session and self._session is not None:
            await self._session.close()
        self._session = None

    def body(self, message: OutboundMessage) -> dict[str, Any]:
        return {
            "message_sid": message.message_sid,
            "account_sid": message.account_sid,
            "to": message.to,
            "from": message.from_,
            "body": message.body,
            "media_urls": list(message.media_urls),
            "status_callback": self.status_callback,
        }

    async def send(self, message: OutboundMessage) -> SendResult:
        refusal = capability_refusal(self, message)
        if refusal is not None:
            return refusal
        if self._closed:  # shutting down: another node (or a later retry) can send it
            return SendResult(False, error_code=UNKNOWN_ERROR, error_message=f"provider {self.name!r} is closed", temporary=True)
        bound = self._log.bind(message_sid=message.message_sid, account_sid=message.account_sid)
        try:
            result = await self._post(message)
        except asyncio.TimeoutError:
            result = SendResult(False, error_code=UNKNOWN_ERROR, error_message=f"the provider did not answer within {self.config.timeout:g} s", temporary=True)
        except aiohttp.ClientError as exc:
            # The exception's text can name the URL, which may carry credentials: the class only.
            result = SendResult(False, error_code=UNKNOWN_ERROR, error_message=f"could not reach the provider ({type(exc).__name__})", temporary=True)
        except Exception as exc:  # never raise for carrier trouble; a bug here is logged loudly
            bound.exception("http provider failed unexpectedly")
            result = SendResult(False, error_code=UNKNOWN_ERROR, error_message=f"provider request failed ({type(exc).__name__})", temporary=True)
        if result.accepted:
            bound.info("message accepted by provider", provider_message_id=result.provider_message_id)
        else:
            bound.warning("message refused by provider", error_code=result.error_code, reason=result.error_message, temporary=result.temporary)
        return result

    async def _post(self, message: OutboundMessage) -> SendResult:
        if self._session is None:
            await self.start()
        assert self._session is not None
        headers = {**self._headers, "Idempotency-Key": message.message_sid}
        async with self._session.post(
            self.url,
            data=json.dumps(self.body(message)),
            headers=headers,
            timeout=self._timeout,
            # A redirected POST could carry our credentials elsewhere; a carrier API does not redirect.
            allow_redirects=False,
        ) as resp:
            raw = await _read_capped(resp, MAX_ANSWER_BYTES + 1)
            status = resp.status
        answer: Any = None
        if len(raw) <= MAX_ANSWER_BYTES:
            try:
                answer = json.loads(raw)
            # RecursionError: "[[[[..." deeper than the decoder's limit (found by tests/fuzz).
            except (ValueError, UnicodeDecodeError, RecursionError):
                answer = None
        return self._result(status, answer)

    def _result(self, status: int, answer: Any) -> SendResult:
        if 200 <= status < 300:
            provider_message_id = _answer_id(answer)
            if provider_message_id is None:
                what = "a JSON object without an 'id'" if isinstance(answer, dict) else "no JSON object"
                return SendResult(False, error_code=UNKNOWN_ERROR, error_message=f"the provider answered HTTP {status} with {what}; the message may or may not have been sent")
            return SendResult(True, provider_message_id=provider_message_id, status="sent")
        carrier_code = _answer_error_code(answer)
        if status == 429 or status == 503:
            return SendResult(False, error_code=carrier_code or QUEUE_OVERFLOW, error_message=f"the provider is busy (HTTP {status})", temporary=True)
        if status in (401, 403):
            return SendResult(False, error_code=ACCOUNT_SUSPENDED, error_message=f"the provider refused our credentials (HTTP {status})")
        if 400 <= status < 500:
            return SendResult(False, error_code=carrier_code or FILTERED, error_message=f"the provider refused the message (HTTP {status})")
        if 500 <= status < 600:
            return SendResult(False, error_code=carrier_code or UNKNOWN_ERROR, error_message=f"the provider failed (HTTP {status})", temporary=True)
        return SendResult(False, error_code=UNKNOWN_ERROR, error_message=f"unexpected HTTP {status} from the provider")
