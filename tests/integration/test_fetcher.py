"""InstructionFetcher against real HTTP servers on 127.0.0.1.

Every request a server receives is checked with the official helper library's
RequestValidator, and answers are built with its VoiceResponse, so what is
tested is what customers' apps will see.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from twilio.request_validator import RequestValidator
from twilio.twiml.voice_response import VoiceResponse

from protocol.instructions import Client, Dial
from presence_server.signaling.fetcher import FetchError, InstructionFetcher
from presence_server.signaling.urlguard import UrlPolicy, guarded_session

AUTH_TOKEN = "0123456789abcdef0123456789abcdef"
MAX_BYTES = 64 * 1024
CALL_PARAMS = {
    "CallSid": "CA" + "1" * 32,
    "AccountSid": "AC" + "2" * 32,
    "From": "+15551230001",
    "To": "client:alice",
    "CallStatus": "ringing",
    "Direction": "inbound",
    "Note": "it's a test & more = fun/ünïcode",
}


def dial_alice() -> str:
    response = VoiceResponse()
    response.dial().client("alice")
    return str(response)


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, str]
    form: dict[str, str]
    headers: dict[str, str]
    signature_valid: bool


@dataclass
class Recorder:
    """Validates and records every request a test server receives."""

    seen: list[Seen] = field(default_factory=list)

    async def record(self, request: web.Request) -> Seen:
        form = await request.post() if request.method == "POST" else None
        # What a customer's app does: rebuild the URL from Host and the raw
        # request target, and validate against the form (POST) or nothing (GET).
        url = f"http://{request.host}{request.raw_path}"
        valid = RequestValidator(AUTH_TOKEN).validate(url, form or {}, request.headers.get("X-Twilio-Signature", ""))
        seen = Seen(
            method=request.method,
            path=request.path,
            query=dict(request.query),
            form={k: str(v) for k, v in (form or {}).items()},
            headers=dict(request.headers),
            signature_valid=valid,
        )
        self.seen.append(seen)
        return seen


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@asynccontextmanager
async def serve(routes: dict[str, Handler], recorder: Recorder) -> AsyncIterator[str]:
    """An aiohttp server on a free loopback port; yields its base URL."""

    def wrap(handler: Handler) -> Handler:
        async def recorded(request: web.Request) -> web.StreamResponse:
            await recorder.record(request)
            return await handler(request)

        return recorded

    app = web.Application()
    for path, handler in routes.items():
        app.router.add_route("*", path, wrap(handler))
    runner = web.AppRunner(app, shutdown_timeout=0.5, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def twiml(body: str, content_type: str = "text/xml") -> Handler:
    async def handler(_request: web.Request) -> web.StreamResponse:
        return web.Response(text=body, content_type=content_type)

    return handler


def status(code: int, headers: dict[str, str] | None = None) -> Handler:
    async def handler(_request: web.Request) -> web.StreamResponse:
        return web.Response(status=code, headers=headers)

    return handler


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
async def fetcher() -> AsyncIterator[InstructionFetcher]:
    # Loopback allowed (the test servers live there), private addresses not.
    async with guarded_session(UrlPolicy(allow_private=False, allow_loopback=True)) as session:
        yield InstructionFetcher(session, max_bytes=MAX_BYTES)


@pytest.fixture
async def strict_fetcher() -> AsyncIterator[InstructionFetcher]:
    async with guarded_session(UrlPolicy(allow_private=False, allow_loopback=False)) as session:
        yield InstructionFetcher(session, max_bytes=MAX_BYTES)


async def fetch_error(fetcher: InstructionFetcher, url: str, method: str = "POST", **kw: Any) -> FetchError:
    with pytest.raises(FetchError) as info:
        await fetcher.fetch(url, method, kw.get("params", CALL_PARAMS), AUTH_TOKEN)
    return info.value


def is_dial_alice(fetched: Any) -> bool:
    (verb,) = fetched.instructions.verbs
    return isinstance(verb, Dial) and isinstance(verb.nouns[0], Client) and verb.nouns[0].identity == "alice"


# -- signing ------------------------------------------------------------------------------------


async def test_post_is_signed_form_encoded_and_validates(fetcher: InstructionFetcher, recorder: Recorder) -> None:
    async with serve({"/voice": twiml(dial_alice())}, recorder) as base:
        fetched = await fetcher.fetch(f"{base}/voice?app=1", "POST", CALL_PARAMS, AUTH_TOKEN)
    assert is_dial_alice(fetched)
    assert fetched.status == 200 and fetched.url == f"{base}/voice?app=1"
    (seen,) = recorder.seen
    assert seen.method == "POST" and seen.signature_valid
    assert seen.form == CALL_PARAMS and seen.query == {"app": "1"}
    assert seen.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert seen.headers["User-Agent"] == "presence-server/0.1"
    assert seen.headers["Accept"] == "text/xml, application/xml, */*"
    assert len(seen.headers["I-Twilio-Idempotency-Token"]) >= 32


async def test_get_carries_params_in_the_query_and_validates(fetcher: InstructionFetcher, recorder: Recorder) -> None:
    async with serve({"/voice": twiml(dial_alice())}, recorder) as base:
        fetched = await fetcher.fetch(f"{base}/voice?app=1&x=a%20b", "GET", CALL_PARAMS, AUTH_TOKEN)
    assert is_dial_alice(fetched)
    (seen,) = recorder.seen
    assert seen.method == "GET" and seen.signature_valid
    assert seen.query == {"app": "1", "x": "a b", **CALL_PARAMS}  # merged with the URL's own query
    assert "Content-Type" not in seen.headers


async def test_wrong_token_does_not_validate(recorder: Recorder, fetcher: InstructionFetcher) -> None:
    # The check above is not vacuous: another account's token fails validation.
    async with serve({"/voice": twiml(dial_alice())}, recorder) as base:
        await fetcher.fetch(f"{base}/voice", "POST", CALL_PARAMS, "another-token-entirely-0000")
    assert recorder.seen[0].signature_valid is False


async def test_credentials_in_url_become_basic_auth_and_are_not_signed(
    fetcher: InstructionFetcher, recorder: Recorder
) -> None:
    async with serve({"/voice": twiml(dial_alice())}, recorder) as base:
        with_creds = base.replace("http://", "http://app:s3cret@") + "/voice"
        fetched = await fetcher.fetch(with_creds, "POST", CALL_PARAMS, AUTH_TOKEN)
    assert fetched.url == f"{base}/voice"  # reported without the credentials
    (seen,) = recorder.seen
    assert seen.headers["Authorization"] == aiohttp.encode_basic_auth("app", "s3cret")
    assert seen.signature_valid  # signed over the URL the server can rebuild: no user info


# -- connection overrides and timeouts ----------------------------------------------------------


async def test_fragment_is_stripped_and_its_read_timeout_applies(fetcher: InstructionFetcher, recorder: Recorder) -> None:
    async def slow(_request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(0.5)
        return web.Response(text=dial_alice(), content_type="text/xml")

    async with serve({"/slow": slow}, recorder) as base:
        started = time.monotonic()
        err = await fetch_error(fetcher, f"{base}/slow#rt=200")
        elapsed = time.monotonic() - started
        assert err.code == 11200 and err.retry_class == "rt" and "read timeout (200 ms)" in err.message
        assert err.attempts == 1  # rt is not in the default retry policy
        assert elapsed < 0.45
        assert err.url == f"{base}/slow"  # no fragment anywhere

        fetched = await fetcher.fetch(f"{base}/slow", "POST", CALL_PARAMS, AUTH_TOKEN)  # default rt: 15 s
        assert is_dial_alice(fetched)
    assert all(seen.signature_valid and seen.path == "/slow" for seen in recorder.seen)


async def test_total_timeout_override(fetcher: InstructionFetcher, recorder: Recorder) -> None:
    async def slow(_request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(0.5)
        return web.Response(text=dial_alice(), content_type="text/xml")

    async with serve({"/slow": slow}, recorder) as base:
        started = time.monotonic()
        err = await fetch_error(fetcher, f"{base}/slow#tt=200&rp=all&rc=5")
        assert time.monotonic() - started < 0.45
    assert err.code == 11200 and "total timeout (200 ms)" in err.message


async def test_connect_failure_is_retried_once_then_11205(fetcher: InstructionFetcher) -> None:
    url = f"http://127.0.0.1:{closed_port()}/voice"
    err = await fetch_error(fetcher, url)
    assert err.code == 11205 and err.retry_class == "ct" and err.attempts == 2
    assert err.url == url
    err = await fetch_error(fetcher, url + "#rc=0")
    assert err.attempts == 1


async def test_retry_policy_from_fragment_with_one_idempotency_token(
    fetcher: InstructionFetcher, recorder: Recorder
) -> None:
    async with serve({"/flaky": status(503)}, recorder) as base:
        err = await fetch_error(fetcher, f"{base}/flaky")
        assert err.code == 11200 and err.status == 503 and err.attempts == 1  # 5xx: not retried by default
        recorder.seen.clear()
        err = await fetch_error(fetcher, f"{base}/flaky#rc=2&rp=5xx")
    assert err.attempts == 3 and len(recorder.seen) == 3
    tokens = {seen.headers["I-Twilio-Idempotency-Token"] for seen in recorder.seen}
    assert len(tokens) == 1  # one logical request, however many attempts
    assert all(seen.signature_valid for seen in recorder.seen)


# -- answers that are refused -------------------------------------------------------------------


async def test_server_error_is_11200_with_the_status(fetcher: InstructionFetcher, recorder: Recorder) -> None:
    async with serve({"/voice": status(500)}, recorder) as base:
        err = await fetch_error(fetcher, f"{base}/voice")
    assert err.code == 11200 and err.status == 500 and "HTTP 500" in err.message


@pytest.mark.parametrize(
    ("body", "content_type", "code"),
    [
        # text/html is an instruction type (PHP apps serve TwiML as text/html);
        # an actual HTML page is refused by the parser.
        ("<!DOCTYPE html><html><body>It works!</body></html>", "text/html", 12100),
        ("<html><body>It works!</body></html>", "text/html", 12102),
        ("<Response><Say>hi</Say></Response>", "text/plain", 12300),
        ('{"error": "nope"}', "application/json", 12300),
    ],
)
async def test_html_and_wrong_content_types(
    fetcher: InstructionFetcher, recorder: Recorder, body: str, content_type: str, code: int
) -> None:
    async with serve({"/voice": twiml(body, content_type)}, recorder) as base:
        err = await fetch_error(fetcher, f"{base}/voice")
    assert err.code == code and err.status == 200


async def test_endless_answer_is_cut_at_the_size_limit(fetcher: InstructionFetcher, recorder: Recorder) -> None:
    written = 0
    limit = 50 * 1024 * 1024

    async def endless(request: web.Request) -> web.StreamResponse:
        nonlocal written
        response = web.StreamResponse(headers={"Content-Type": "text/xml"})  # chunked: no length to refuse
        await response.prepare(request)
        chunk = b"<Response>" + b" " * (64 * 1024 - 10)
        try:
            while written < limit:
                await response.write(chunk)
                written += len(chunk)
        except (ConnectionError, RuntimeError):
            pass  # the client hung up, as it should
        return response

    async with serve({"/big": endless}, recorder) as base:
        started = time.monotonic()
        err = await fetch_error(fetcher, f"{base}/big")
        elapsed = time.monotonic() - started
    assert err.code == 11750 and str(MAX_BYTES) in err.message
    assert elapsed < 2.0
    assert written < limit // 5  # socket buffers at most, never the 50 MB


async def test_declared_oversize_answer_is_refused_unread(fetcher: InstructionFetcher, recorder: Recorder) -> None:
    async with serve({"/big": twiml("<Response>" + " " * (MAX_BYTES + 1) + "</Response>")}, recorder) as base:
        err = await fetch_error(fetcher, f"{base}/big")
    assert err.code == 11750 and "Content-Length" in err.message


XXE = """<?xml version="1.0"?>
<!DOCTYPE r [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<Response><Say>&xxe;</Say></Response>"""

BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<Response><Say>&lol3;</Say></Response>"""


@pytest.mark.parametrize("document", [XXE, BILLION_LAUGHS], ids=["xxe", "billion-laughs"])
async def test_entity_attacks_are_12100(fetcher: InstructionFetcher, recorder: Recorder, document: str) -> None:
    async with serve({"/voice": twiml(document)}, recorder) as base:
        err = await fetch_error(fetcher, f"{base}/voice")
    assert err.code == 12100


async def test_invalid_twiml_is_12200(fetcher: InstructionFetcher, recorder: Recorder) -> None:
    async with serve({"/voice": twiml("<Response><Teleport to='mars'/></Response>")}, recorder) as base:
        err = await fetch_error(fetcher, f"{base}/voice")
    assert err.code == 12200 and "Teleport" in err.message


# -- redirects ----------------------------------------------------------------------------------


async def test_redirect_chain_is_followed_and_its_final_url_reported(
    fetcher: InstructionFetcher, recorder: Recorder
) -> None:
    routes = {
        "/a": status(307, {"Location": "/b?step=2"}),  # keeps POST and its body
        "/b": status(302, {"Location": "/c"}),  # POST becomes GET, body dropped
        "/c": twiml(dial_alice()),
    }
    async with serve(routes, recorder) as base:
        fetched = await fetcher.fetch(f"{base}/a", "POST", CALL_PARAMS, AUTH_TOKEN)
    assert is_dial_alice(fetched) and fetched.url == f"{base}/c"
    assert [(s.method, s.path) for s in recorder.seen] == [("POST", "/a"), ("POST", "/b"), ("GET", "/c")]
    assert recorder.seen[1].form == CALL_PARAMS and recorder.seen[1].query == {"step": "2"}
    assert recorder.seen[2].form == {} and recorder.seen[2].query == {}
    assert all(s.signature_valid for s in recorder.seen)  # every hop signed for its own URL


async def test_credentials_are_not_sent_to_another_origin(fetcher: InstructionFetcher) -> None:
    other, origin = Recorder(), Recorder()
    async with serve({"/c": twiml(dial_alice())}, other) as other_base:
        async with serve({"/a": status(302, {"Location": f"{other_base}/c"})}, origin) as base:
            await fetcher.fetch(base.replace("http://", "http://app:pw@") + "/a", "POST", CALL_PARAMS, AUTH_TOKEN)
    assert "Authorization" in origin.seen[0].headers
    assert "Authorization" not in other.seen[0].headers


@pytest.mark.parametrize(
    "target",
    ["http://10.0.0.1/twiml", "http://169.254.169.254/latest/meta-data/", "http://[::ffff:192.168.0.1]/", "http://2130706433/"],
)
async def test_redirect_to_a_private_address_is_refused(
    fetcher: InstructionFetcher, recorder: Recorder, target: str
) -> None:
    async with serve({"/voice": status(302, {"Location": target})}, recorder) as base:
        started = time.monotonic()
        err = await fetch_error(fetcher, f"{base}/voice")
    assert err.code == 11210 and err.attempts == 1
    assert "redirect" in err.message and err.url == f"{base}/voice"
    assert time.monotonic() - started < 1.0  # refused before any connection attempt
    assert len(recorder.seen) == 1


@pytest.mark.parametrize("url", ["ftp://example.com/twiml", "file:///etc/passwd", "example.com/twiml"])
async def test_non_http_urls_are_11200(fetcher: InstructionFetcher, url: str) -> None:
    err = await fetch_error(fetcher, url)
    assert err.code == 11200 and "http or https" in err.message


async def test_redirect_to_a_non_http_scheme_is_refused(fetcher: InstructionFetcher, recorder: Recorder) -> None:
    async with serve({"/voice": status(301, {"Location": "file:///etc/passwd"})}, recorder) as base:
        err = await fetch_error(fetcher, f"{base}/voice")
    assert err.code == 11200 and "redirect refused" in err.message


async def test_too_many_redirects_is_11215(fetcher: InstructionFetcher, recorder: Recorder) -> None:
    async def loop(request: web.Request) -> web.StreamResponse:
        hop = int(request.match_info["n"])
        return web.Response(status=302, headers={"Location": f"/r/{hop + 1}"})

    async with serve({"/r/{n}": loop}, recorder) as base:
        err = await fetch_error(fetcher, f"{base}/r/0")
    assert err.code == 11215
    assert len(recorder.seen) == 6  # the request and 5 redirects followed


# -- the URL guard ------------------------------------------------------------------------------


async def test_localhost_is_refused_when_loopback_is_not_allowed(
    strict_fetcher: InstructionFetcher, recorder: Recorder
) -> None:
    async with serve({"/voice": twiml(dial_alice())}, recorder) as base:
        port = base.rsplit(":", 1)[1]
        err = await fetch_error(strict_fetcher, f"http://localhost:{port}/voice")
        assert err.code == 11210 and "localhost" in err.message and "loopback" in err.message
        assert err.attempts == 1  # a refusal is not retried
        err = await fetch_error(strict_fetcher, f"{base}/voice")  # the literal address too
        assert err.code == 11210
    assert recorder.seen == []  # nothing reached the server


# -- fallback -----------------------------------------------------------------------------------


async def test_fallback_url_gets_error_code_and_url(fetcher: InstructionFetcher, recorder: Recorder) -> None:
    primary = f"http://127.0.0.1:{closed_port()}/voice?x=1#rc=0"
    async with serve({"/fallback": twiml(dial_alice())}, recorder) as base:
        fetched = await fetcher.fetch_with_fallback(primary, "POST", f"{base}/fallback", "POST", CALL_PARAMS, AUTH_TOKEN)
    assert is_dial_alice(fetched) and fetched.url == f"{base}/fallback"
    (seen,) = recorder.seen
    assert seen.signature_valid
    assert seen.form == {**CALL_PARAMS, "ErrorCode": "11205", "ErrorUrl": primary.split("#")[0]}


async def test_fallback_after_a_parse_error_with_get(fetcher: InstructionFetcher, recorder: Recorder) -> None:
    routes = {"/voice": twiml("<Response><Nope/></Response>"), "/fallback": twiml(dial_alice())}
    async with serve(routes, recorder) as base:
        fetched = await fetcher.fetch_with_fallback(f"{base}/voice", "POST", f"{base}/fallback", "GET", CALL_PARAMS, AUTH_TOKEN)
    assert is_dial_alice(fetched)
    fallback = recorder.seen[1]
    assert fallback.method == "GET" and fallback.signature_valid
    assert fallback.query["ErrorCode"] == "12200" and fallback.query["ErrorUrl"] == f"{base}/voice"


async def test_both_down_raises_the_primary_error(fetcher: InstructionFetcher, recorder: Recorder) -> None:
    primary = f"http://127.0.0.1:{closed_port()}/voice"
    async with serve({"/fallback": status(500)}, recorder) as base:
        with pytest.raises(FetchError) as info:
            await fetcher.fetch_with_fallback(primary, "POST", f"{base}/fallback", "POST", CALL_PARAMS, AUTH_TOKEN)
    err = info.value
    assert err.code == 11205 and err.url == primary
    assert err.fallback_error is not None and err.fallback_error.code == 11200
    assert err.__cause__ is err.fallback_error
    assert "fallback also failed" in str(err)


async def test_no_fallback_raises_the_primary_error(fetcher: InstructionFetcher) -> None:
    with pytest.raises(FetchError) as info:
        await fetcher.fetch_with_fallback(f"http://127.0.0.1:{closed_port()}/v", "POST", None, "POST", {}, AUTH_TOKEN)
    assert info.value.code == 11205 and info.value.fallback_error is None


# -- transport failures -------------------------------------------------------------------------


async def test_tls_failure_is_11220(fetcher: InstructionFetcher, recorder: Recorder) -> None:
    async with serve({"/voice": twiml(dial_alice())}, recorder) as base:
        err = await fetch_error(fetcher, base.replace("http://", "https://") + "/voice#rc=0")
    assert err.code == 11220 and "TLS" in err.message


async def test_garbage_answer_is_a_protocol_violation(fetcher: InstructionFetcher) -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"SPDY/9 banana\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(garbage, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        err = await fetch_error(fetcher, f"http://127.0.0.1:{port}/voice", method="GET")
    assert err.code == 11206
