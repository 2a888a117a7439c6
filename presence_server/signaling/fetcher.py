"""Fetching instruction documents from customers' URLs, signed, bounded and guarded.

One request to a customer URL, whatever it is for (an instruction document, a
fallback, a status callback in ``presence_server.webhooks``), goes through
:func:`signed_request`: the ``#ct=..`` connection-override fragment is
stripped, credentials in the URL become a Basic ``Authorization`` header, the
request is signed with ``X-Twilio-Signature`` over exactly the URL sent (and,
for a POST, the form), and redirects are followed by hand, each hop re-signed
and re-checked by the session's URL guard (build the session with
:func:`presence_server.signaling.urlguard.guarded_session`).

:class:`InstructionFetcher` adds what instruction documents need: retries
chosen by the fragment, the total-time budget, a body read that stops at the
size limit, the Content-Type check, the parse, and the fallback URL. Every
failure is a :class:`FetchError` with a debugger code; docs/webhooks.md lists
them.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import parse_qsl, urlencode

import aiohttp
import structlog
from yarl import URL

from protocol.instructions import (
    HTTP_RETRIEVAL_FAILURE,
    InstructionError,
    Instructions,
    check_content_type,
    parse_instructions,
)
from protocol.signing import SIGNATURE_HEADER, compute_signature

from .urlguard import (
    HTTP_BAD_HOST,
    HTTP_CONNECTION_FAILURE,
    HTTP_PROTOCOL_VIOLATION,
    HTTP_SSL_ERROR,
    HTTP_TOO_MANY_REDIRECTS,
    MAX_REDIRECTS,
    REDIRECT_STATUSES,
    RESPONSE_TOO_LARGE,
    AddressRefused,
    UrlRefused,
    check_url_shape,
    redirect_method,
)

__all__ = [
    "ACCEPT",
    "DEFAULT_USER_AGENT",
    "IDEMPOTENCY_HEADER",
    "RETRY_CLASSES",
    "FetchError",
    "FetchOverrides",
    "FetchedInstructions",
    "InstructionFetcher",
    "SignedResponse",
    "log_url",
    "new_idempotency_token",
    "read_capped",
    "signed_request",
    "split_fragment",
]

log = structlog.get_logger(__name__)

DEFAULT_USER_AGENT: Final = "presence-server/0.1"
ACCEPT: Final = "text/xml, application/xml, */*"
IDEMPOTENCY_HEADER: Final = "I-Twilio-Idempotency-Token"
FORM_CONTENT_TYPE: Final = "application/x-www-form-urlencoded"

# What the ``rp`` override can name: TCP/TLS connection failures, read
# timeouts, and 4xx / 5xx answers. ("all" is all four.)
RETRY_CLASSES: Final = frozenset({"ct", "rt", "4xx", "5xx"})
RETRY_BACKOFF: Final = 0.05  # seconds times the attempt number: a blip, not an outage

# The platform's bounds for the connection overrides, in milliseconds (ct, rt,
# tt) and attempts (rc); a value outside them is clamped to them.
_BOUNDS_MS: Final = {"ct": (100, 10_000), "rt": (100, 15_000), "tt": (100, 15_000)}
_RETRY_COUNT_BOUNDS: Final = (0, 5)


@dataclass(frozen=True)
class FetchOverrides:
    """Connection settings for one URL, from its ``#`` fragment (seconds, attempts).

    ``total_timeout`` bounds every attempt of one URL together, retries and
    redirects included (not the fallback URL, which has its own budget).
    ``retries`` more attempts are made after the first when a failure's class
    is in ``retry_on`` (see :data:`RETRY_CLASSES`).
    """

    connect_timeout: float = 5.0
    read_timeout: float = 15.0
    total_timeout: float = 15.0
    retries: int = 1
    retry_on: frozenset[str] = frozenset({"ct"})


def _clamp(value: int, bounds: tuple[int, int]) -> int:
    return max(bounds[0], min(bounds[1], value))


def split_fragment(url: str) -> tuple[str, FetchOverrides]:
    """``url`` without its fragment, and the connection overrides the fragment names.

    ``#ct=1000&rt=2000&tt=5000&rc=2&rp=ct,rt,5xx``: ``ct``/``rt``/``tt`` in
    milliseconds (ct 100..10000, rt and tt 100..15000), ``rc`` retries 0..5,
    ``rp`` a comma list of ``ct``, ``rt``, ``4xx``, ``5xx``, ``all``. Values
    out of bounds are clamped; values that are not numbers, unknown keys
    (``e``, ``sni`` ... included) and unknown ``rp`` words are ignored. A
    fragment that is not overrides at all is stripped all the same: a
    fragment is never sent over HTTP, so it is never signed either.
    """
    base, hash_sign, fragment = url.partition("#")
    defaults = FetchOverrides()
    if not hash_sign:
        return url, defaults
    timeouts = {"ct": defaults.connect_timeout, "rt": defaults.read_timeout, "tt": defaults.total_timeout}
    retries = defaults.retries
    retry_on = defaults.retry_on
    for key, raw in parse_qsl(fragment, keep_blank_values=False):
        key, raw = key.strip().lower(), raw.strip()
        if key in _BOUNDS_MS and raw.isdigit():
            timeouts[key] = _clamp(int(raw), _BOUNDS_MS[key]) / 1000.0
        elif key == "rc" and raw.isdigit():
            retries = _clamp(int(raw), _RETRY_COUNT_BOUNDS)
        elif key == "rp":
            words = {word.strip().lower() for word in raw.split(",")}
            chosen = RETRY_CLASSES if "all" in words else frozenset(words & RETRY_CLASSES)
            if chosen:  # nothing recognisable: keep the default rather than retry on nothing
                retry_on = chosen
    return base, FetchOverrides(
        connect_timeout=timeouts["ct"],
        read_timeout=timeouts["rt"],
        total_timeout=timeouts["tt"],
        retries=retries,
        retry_on=retry_on,
    )


class FetchError(Exception):
    """A request to a customer URL failed. ``code`` is a debugger code (docs/webhooks.md).

    ``url`` is the URL requested, without fragment or credentials; from
    :meth:`InstructionFetcher.fetch` it is the URL the caller gave, even when
    a redirect hop failed (the message names the hop), and it goes to the
    fallback URL as ``ErrorUrl``. ``status`` is the HTTP status when
    there was an answer. ``retry_class`` is ``ct``, ``rt``, ``tt``, ``4xx``
    or ``5xx`` for failures a retry may cure, None for the others (refused
    addresses, parse errors, oversized answers ...). ``attempts`` counts the
    requests made; ``fallback_error`` is set when a fallback URL failed too.
    """

    def __init__(
        self,
        code: int,
        message: str,
        url: str,
        *,
        status: int | None = None,
        retry_class: str | None = None,
    ) -> None:
        super().__init__(code, message, url)
        self.code = code
        self.message = message
        self.url = url
        self.status = status
        self.retry_class = retry_class
        self.attempts = 1
        self.fallback_error: FetchError | None = None

    def __str__(self) -> str:
        text = f"{self.code}: {self.message}"
        if self.fallback_error is not None:
            text += f" (fallback also failed: {self.fallback_error.code}: {self.fallback_error.message})"
        return text


@dataclass(frozen=True)
class FetchedInstructions:
    url: str  # the final URL, after redirects (without credentials)
    instructions: Instructions
    status: int


@dataclass(frozen=True)
class SignedResponse:
    """The answer to a signed request, after redirects; the body is not read yet."""

    response: aiohttp.ClientResponse
    url: str  # the final URL (without credentials); relative URLs in a document resolve against it
    redirects: int = field(default=0)


def new_idempotency_token() -> str:
    """A token for one logical request: the same on its retries, so the receiver can
    recognise a repeat of a request it already acted on."""
    return str(uuid.uuid4())


def log_url(url: URL | str) -> str:
    """Scheme, host and path only: query strings carry customers' own secrets often enough."""
    try:
        parsed = url if isinstance(url, URL) else URL(url)
        return str(parsed.with_user(None).with_query(None).with_fragment(None))
    except (ValueError, TypeError):
        return "(malformed URL)"


def _public(url: URL) -> str:
    try:
        return str(url.with_user(None).with_fragment(None))
    except (ValueError, TypeError):  # a relative or host-less URL
        return str(url.with_fragment(None))[:200]


def _public_str(url: str) -> str:
    try:
        return _public(URL(url))
    except (ValueError, TypeError):
        return url.partition("#")[0][:200]


def _basic_auth(url: URL) -> str | None:
    if url.user is None and url.password is None:
        return None
    # Built by hand rather than with aiohttp's helpers, which changed between
    # releases (BasicAuth deprecated in 3.14, encode_basic_auth new there).
    pair = f"{url.user or ''}:{url.password or ''}".encode()
    return "Basic " + base64.b64encode(pair).decode("ascii")


def _checked_url(url: str | URL) -> URL:
    """``url`` parsed, if it is an http(s) URL with a usable host; FetchError otherwise.

    The session's guard would refuse such a URL too, but aiohttp refuses some
    of them first, with exceptions that say less.
    """
    try:
        parsed = url if isinstance(url, URL) else URL(url)
        check_url_shape(parsed)
    except UrlRefused as exc:
        raise FetchError(exc.code, exc.message, _public_str(str(url))) from None
    except (ValueError, TypeError) as exc:
        raise FetchError(HTTP_RETRIEVAL_FAILURE, f"malformed URL ({exc})", _public_str(str(url))) from None
    return parsed


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


def _transport_error(
    exc: BaseException, url: str, overrides: FetchOverrides, deadline: float
) -> FetchError:
    """The FetchError for an exception raised while requesting or reading ``url``."""
    if isinstance(exc, FetchError):
        return exc
    if isinstance(exc, UrlRefused):
        return FetchError(exc.code, exc.message, url)
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        if isinstance(exc.os_error, AddressRefused):
            refusal = exc.os_error.refusal
            return FetchError(refusal.code, refusal.message, url)
        return FetchError(HTTP_BAD_HOST, f"cannot resolve host {exc.host!r}", url, retry_class="ct")
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        # A certificate that fails verification will fail the next attempt too.
        return FetchError(HTTP_SSL_ERROR, f"TLS certificate not valid: {exc.certificate_error}", url)
    if isinstance(exc, (aiohttp.ClientSSLError, ssl.SSLError)):
        return FetchError(HTTP_SSL_ERROR, f"TLS handshake failed: {exc}", url, retry_class="ct")
    if isinstance(exc, asyncio.TimeoutError) and asyncio.get_running_loop().time() >= deadline - 0.001:
        # aiohttp reports the total timeout as a connection timeout when it
        # fires during the connect; our own deadline says which one it was.
        return FetchError(
            HTTP_RETRIEVAL_FAILURE,
            f"no complete answer within the total timeout ({_ms(overrides.total_timeout)} ms)",
            url,
            retry_class="tt",
        )
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return FetchError(
            HTTP_CONNECTION_FAILURE,
            f"no connection within the connect timeout ({_ms(overrides.connect_timeout)} ms)",
            url,
            retry_class="ct",
        )
    if isinstance(exc, aiohttp.SocketTimeoutError):
        return FetchError(
            HTTP_RETRIEVAL_FAILURE,
            f"no data within the read timeout ({_ms(overrides.read_timeout)} ms)",
            url,
            retry_class="rt",
        )
    if isinstance(exc, asyncio.TimeoutError):
        return FetchError(HTTP_RETRIEVAL_FAILURE, "timed out", url, retry_class="tt")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return FetchError(
            HTTP_CONNECTION_FAILURE,
            f"cannot connect to {exc.host}:{exc.port} ({exc.strerror or type(exc.os_error).__name__})",
            url,
            retry_class="ct",
        )
    if isinstance(exc, (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError, ConnectionError)):
        # Connected, request sent, no complete answer: like a read timeout,
        # the receiver may have acted on it (the idempotency token is for that).
        return FetchError(
            HTTP_CONNECTION_FAILURE, f"connection closed before a complete answer ({type(exc).__name__})", url,
            retry_class="rt",
        )
    if isinstance(exc, (aiohttp.ClientPayloadError, aiohttp.ClientResponseError)):
        return FetchError(HTTP_PROTOCOL_VIOLATION, f"the answer is not valid HTTP ({type(exc).__name__})", url)
    if isinstance(exc, (aiohttp.InvalidURL, aiohttp.NonHttpUrlClientError, ValueError)):
        return FetchError(HTTP_RETRIEVAL_FAILURE, f"malformed URL ({type(exc).__name__})", url)
    log.exception("unexpected error requesting a customer URL", url=log_url(url))
    return FetchError(HTTP_RETRIEVAL_FAILURE, f"unexpected error ({type(exc).__name__})", url)


@asynccontextmanager
async def signed_request(
    session: aiohttp.ClientSession,
    url: str,
    method: str,
    params: Mapping[str, str],
    auth_token: str,
    *,
    overrides: FetchOverrides,
    deadline: float,
    idempotency_token: str,
    user_agent: str = DEFAULT_USER_AGENT,
) -> AsyncIterator[SignedResponse]:
    """Send one signed request (following redirects); yield the final response, unread.

    ``url`` is taken without its fragment (use :func:`split_fragment` first to
    get ``overrides``). POST sends ``params`` form-encoded; GET appends them to
    the query, after the URL's own. ``deadline`` is an event-loop time that
    bounds every hop. Raises :class:`FetchError` for anything but a response;
    the response is released when the block exits.
    """
    loop = asyncio.get_running_loop()
    current = _checked_url(url.partition("#")[0])
    authorization = _basic_auth(current)
    current = current.with_user(None).with_fragment(None)
    method = method.upper()
    if method not in ("GET", "POST"):
        raise FetchError(HTTP_RETRIEVAL_FAILURE, f"method {method!r} is not GET or POST", _public(current))
    form: Mapping[str, str] = params
    redirects = 0
    while True:
        shown = _public(current)
        if method == "GET":
            # The signature covers the query as sent; the helper libraries
            # validate a GET with the full URL and no parameters.
            target = current.extend_query(dict(form)) if form else current
            data: bytes | None = None
            signature = compute_signature(auth_token, str(target), None)
        else:
            target = current
            data = urlencode(list(form.items())).encode("ascii")
            signature = compute_signature(auth_token, str(target), form)
        headers = {
            SIGNATURE_HEADER: signature,
            IDEMPOTENCY_HEADER: idempotency_token,
            "User-Agent": user_agent,
            "Accept": ACCEPT,
        }
        if data is not None:
            headers["Content-Type"] = FORM_CONTENT_TYPE
        if authorization is not None:
            headers["Authorization"] = authorization
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise FetchError(
                HTTP_RETRIEVAL_FAILURE,
                f"no complete answer within the total timeout ({_ms(overrides.total_timeout)} ms)",
                shown,
                retry_class="tt",
            )
        timeout = aiohttp.ClientTimeout(
            total=remaining, sock_connect=overrides.connect_timeout, sock_read=overrides.read_timeout
        )
        try:
            response = await session.request(
                method, target, data=data, headers=headers, allow_redirects=False, timeout=timeout
            )
        except Exception as exc:  # every failure becomes a FetchError, never anything else
            error = _transport_error(exc, shown, overrides, deadline)
            if redirects:
                error.message = f"redirected to {log_url(current)}: {error.message}"
            raise error from exc
        location = response.headers.get("Location")
        if response.status not in REDIRECT_STATUSES or not location:
            try:
                yield SignedResponse(response=response, url=shown, redirects=redirects)
            finally:
                response.release()
            return
        response.release()
        redirects += 1
        if redirects > MAX_REDIRECTS:
            raise FetchError(
                HTTP_TOO_MANY_REDIRECTS, f"more than {MAX_REDIRECTS} redirects", shown, status=response.status
            )
        try:
            following = _checked_url(current.join(URL(location)).with_fragment(None))
        except FetchError as exc:
            raise FetchError(exc.code, f"redirect refused: {exc.message}", shown, status=response.status) from None
        except (ValueError, TypeError):
            raise FetchError(
                HTTP_RETRIEVAL_FAILURE, "redirect to a malformed Location", shown, status=response.status
            ) from None
        if following.user is not None or following.password is not None:
            authorization = _basic_auth(following)
            following = following.with_user(None)
        elif following.origin() != current.origin():
            # Like browsers: the credentials of one site are not handed to another.
            authorization = None
        new_method = redirect_method(response.status, method)
        if new_method != "POST":
            # A GET's parameters were in the old query; a POST turned into a GET drops its body.
            form = {}
        log.debug(
            "following redirect", status=response.status, from_url=log_url(current), to_url=log_url(following)
        )
        method, current = new_method, following


async def read_capped(response: aiohttp.ClientResponse, max_bytes: int, url: str) -> bytes:
    """The body, or FetchError(11750) as soon as it passes ``max_bytes``.

    Read as it streams: an endless or 50 MB answer costs ``max_bytes`` plus
    one chunk of memory, and the connection is dropped at once.
    """
    declared = response.content_length
    if declared is not None and declared > max_bytes:
        response.close()
        raise FetchError(
            RESPONSE_TOO_LARGE, f"answer is {declared} bytes (Content-Length); the limit is {max_bytes}", url,
            status=response.status,
        )
    body = bytearray()
    async for chunk in response.content.iter_any():
        body += chunk
        if len(body) > max_bytes:
            response.close()
            raise FetchError(
                RESPONSE_TOO_LARGE, f"answer is larger than the limit of {max_bytes} bytes", url,
                status=response.status,
            )
    return bytes(body)


def _status_error(status: int, url: str) -> FetchError:
    retry_class = "4xx" if 400 <= status < 500 else "5xx" if 500 <= status < 600 else None
    return FetchError(HTTP_RETRIEVAL_FAILURE, f"HTTP {status} from {url}", url, status=status, retry_class=retry_class)


class InstructionFetcher:
    """Fetches and parses instruction documents over a guarded session.

    ``session`` should come from :func:`~presence_server.signaling.urlguard.guarded_session`:
    the SSRF guard lives in the session. ``max_bytes`` is the document size
    limit (``[signaling] instruction_max_bytes``).
    """

    def __init__(
        self, session: aiohttp.ClientSession, *, max_bytes: int, user_agent: str = DEFAULT_USER_AGENT
    ) -> None:
        self._session = session
        self._max_bytes = max_bytes
        self._user_agent = user_agent

    async def fetch(
        self, url: str, method: str, params: Mapping[str, str], auth_token: str
    ) -> FetchedInstructions:
        """Fetch, check and parse the document at ``url``; raise :class:`FetchError` on any failure."""
        target, overrides = split_fragment(url)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + overrides.total_timeout
        token = new_idempotency_token()
        attempt = 0
        while True:
            attempt += 1
            try:
                fetched = await self._attempt(target, method, params, auth_token, overrides, deadline, token)
            except FetchError as err:
                # Reported with the URL the caller asked for (it becomes ErrorUrl);
                # a redirect hop that failed is named in the message.
                err.url = _public_str(target)
                err.attempts = attempt
                delay = RETRY_BACKOFF * attempt
                if (
                    attempt <= overrides.retries
                    and err.retry_class in overrides.retry_on
                    and deadline - loop.time() > delay
                ):
                    log.info("instruction fetch retried", url=log_url(err.url), code=err.code, attempt=attempt)
                    await asyncio.sleep(delay)
                    continue
                log.warning(
                    "instruction fetch failed",
                    url=log_url(err.url),
                    code=err.code,
                    reason=err.message,
                    status=err.status,
                    attempts=attempt,
                )
                raise
            log.debug("instructions fetched", url=log_url(fetched.url), status=fetched.status, verbs=len(fetched.instructions))
            return fetched

    async def _attempt(
        self,
        url: str,
        method: str,
        params: Mapping[str, str],
        auth_token: str,
        overrides: FetchOverrides,
        deadline: float,
        token: str,
    ) -> FetchedInstructions:
        shown = _public_str(url)
        status: int | None = None
        try:
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
                shown = sent.url
                response = sent.response
                status = response.status
                if not 200 <= response.status < 300:
                    raise _status_error(response.status, shown)
                # Checked before the body is read: an image or a JSON error page is refused unread.
                check_content_type(response.headers.get("Content-Type"))
                body = await read_capped(response, self._max_bytes, shown)
            instructions = parse_instructions(body, max_bytes=self._max_bytes)
        except FetchError:
            raise
        except InstructionError as exc:
            raise FetchError(exc.error_code, exc.message, shown, status=status) from exc
        except Exception as exc:  # reading the body: timeouts, resets, bad chunking
            raise _transport_error(exc, shown, overrides, deadline) from exc
        return FetchedInstructions(url=shown, instructions=instructions, status=response.status)

    async def fetch_with_fallback(
        self,
        url: str,
        method: str,
        fallback_url: str | None,
        fallback_method: str,
        params: Mapping[str, str],
        auth_token: str,
    ) -> FetchedInstructions:
        """:meth:`fetch` ``url``; when that fails, fetch ``fallback_url`` (if any) with the
        same parameters plus ``ErrorCode`` and ``ErrorUrl``. When both fail, the primary's
        FetchError is raised, its ``fallback_error`` set (and chained)."""
        try:
            return await self.fetch(url, method, params, auth_token)
        except FetchError as primary:
            if not fallback_url:
                raise
            fallback_params = {**params, "ErrorCode": str(primary.code), "ErrorUrl": primary.url}
            log.info("instruction fallback used", url=log_url(fallback_url), code=primary.code)
            try:
                return await self.fetch(fallback_url, fallback_method, fallback_params, auth_token)
            except FetchError as fallback:
                primary.fallback_error = fallback
                raise primary from fallback
