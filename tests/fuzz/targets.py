"""Every parser that takes outside bytes, and the one rule they are all held to.

The rule: an input is either *accepted*, or *refused* with the parser's
documented error type carrying a precise code and a short message. Anything
else - another exception, an error without a known code, an empty or
unbounded message - is a :class:`Crash`.

The Hypothesis tests (``tests/fuzz/test_fuzz_*.py``) and the coverage-guided
atheris harnesses (``tests/fuzz/harness/fuzz_*.py``) both judge through the
functions here, so the two kinds of fuzzing cannot disagree about what a crash
is. Each ``feed_*`` function takes what a peer controls in the shape the server
receives it (a WebSocket frame, a token string, a document, a byte stream, a
config file); each ``bytes_*`` function is the atheris entry point: it maps raw
fuzzer bytes onto the same ``feed_*``.

Hangs are the harness's business: libFuzzer's ``-timeout`` (``run.py`` sets it)
turns a slow input into a crash report of its own.
"""

from __future__ import annotations

import atexit
import base64
import collections
import hashlib
import hmac
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from presence_server.carriers.smpp_session import Reassembly
from presence_server.config import ConfigError, load_config, parse_config
from protocol import sms
from protocol.errors import ErrorCode, RemoteProtocolError
from protocol.frames import JSON_CODEC, MSGPACK_CODEC, Codec
from protocol.instructions import InstructionError, parse_instructions
from protocol.session import FrameAccepted, ServerSession, SessionLimits
from protocol.smpp.content import ContentError
from protocol.smpp.pdu import DeliverSm, Pdu, SmppDecodeError, SmppEncodeError, decode_pdu
from protocol.smpp.receipts import ReceiptError, parse_receipt
from protocol.smpp.stream import MalformedPdu, PduStream, StreamError, UnknownCommand
from protocol.tokens import AccessToken, SigningKey, verify_token

# A refusal's message goes back to the peer (error frame, HTTP body, SMPP log
# line): a message that can grow with the input is an amplification and a
# log-injection channel, so it counts as a crash.
MAX_MESSAGE = 512

# How many inputs each parser saw in this process (conftest.py records it for
# docs/reliability.md: "examples per parser per make test run").
TRIED: collections.Counter[str] = collections.Counter()


class Crash(AssertionError):
    """A parser broke the rule. The original exception is the ``__cause__``."""


@dataclass(frozen=True)
class Refused:
    """A refusal that met the rule: its code (int or name) and message."""

    code: int | str
    message: str


Outcome = Literal["accepted"] | Refused
_T = TypeVar("_T")


def _message_ok(parser: str, message: object, what: str) -> str:
    if not isinstance(message, str) or not message.strip():
        raise Crash(f"{parser}: {what} carries no message")
    if len(message) > MAX_MESSAGE:
        raise Crash(f"{parser}: {what} message is {len(message)} characters (limit {MAX_MESSAGE}): {message[:80]!r}...")
    return message


def judge(parser: str, call: Callable[[], _T], refusals: Mapping[type[BaseException], Callable[[Any], Refused]]) -> _T | Refused:
    """Run ``call``; a listed exception becomes its (checked) Refused, any other is a Crash."""
    try:
        return call()
    except Crash:
        raise
    except tuple(refusals) as exc:
        for kind, check in refusals.items():
            if isinstance(exc, kind):
                return check(exc)
        raise AssertionError("unreachable")  # pragma: no cover
    except Exception as exc:
        raise Crash(f"{parser}: {type(exc).__name__}: {exc}"[:2000]) from exc


def _protocol_refusal(parser: str, codes: frozenset[ErrorCode]) -> Callable[[Any], Refused]:
    def check(exc: RemoteProtocolError) -> Refused:
        if exc.error not in codes:
            raise Crash(f"{parser}: refused with {exc.error.name}, not one of this parser's codes")
        return Refused(exc.error.code, _message_ok(parser, exc.message, exc.error.name))

    return check


# -- wire frames (both encodings), through the session the gateway runs -------------------

FRAME_CODES: frozenset[ErrorCode] = frozenset(
    {
        ErrorCode.FRAME_UNDECODABLE, ErrorCode.FRAME_NOT_OBJECT, ErrorCode.FRAME_MISSING_TYPE,
        ErrorCode.FRAME_UNKNOWN_TYPE, ErrorCode.FRAME_INVALID_FIELD, ErrorCode.FRAME_TOO_LARGE,
        ErrorCode.WRONG_FRAME_KIND, ErrorCode.NOT_REGISTERED, ErrorCode.ALREADY_REGISTERED,
        ErrorCode.RATE_LIMITED, ErrorCode.RATE_LIMIT_CLOSE, ErrorCode.IDENTITY_INVALID,
        ErrorCode.STATUS_INVALID, ErrorCode.CALL_DESTINATION_INVALID,
    }
)
# No rate limit in the way: fuzzing is about parsing, and the limiter is itself
# fed every frame (tests/unit/test_session.py covers it).
FUZZ_LIMITS = SessionLimits(max_frame_bytes=64 * 1024, rate=1e9, burst=10**9)
SESSION_NOW = 1_800_000_000.0


CALL = "CA" + "ab" * 16
MESSAGE = "SM" + "cd" * 16
SESSION = "SE" + "ef" * 16

# One valid frame of every client type: mutations (and the seed corpus) start from these.
VALID_FRAMES: list[dict[str, Any]] = [
    {"type": "register", "id": 1, "token": "x.y.z", "status": "available", "text": "hi", "priority": 0, "capabilities": ["voice"]},
    {"type": "register", "id": "r", "token": "x.y.z", "resume": SESSION},
    {"type": "presence", "id": 2, "status": "away", "text": "brb"},
    {"type": "subscribe", "id": 3, "identities": ["alice", "bob"]},
    {"type": "unsubscribe", "identities": ["alice"]},
    {"type": "ping", "id": 4},
    {"type": "update_token", "id": 5, "token": "a.b.c"},
    {"type": "call", "id": 6, "to": "client:alice", "params": {"k": "v"}},
    {"type": "call", "to": "+15550100001"},
    {"type": "ringing", "call": CALL},
    {"type": "accept", "call": CALL},
    {"type": "reject", "call": CALL, "reason": "busy"},
    {"type": "hangup", "call": CALL},
    {"type": "signal", "call": CALL, "payload": {"sdp": "v=0", "type": "offer"}},
    {"type": "ack", "sid": MESSAGE, "read": True},
    {"type": "bye"},
]

def new_session(codec: Codec, *, registered: bool = True) -> ServerSession:
    session = ServerSession(codec, FUZZ_LIMITS, SESSION_NOW)
    if registered:  # every frame type is parsed in this state
        session.registered(SESSION_NOW + 3600)
    return session


def feed_frame(session: ServerSession, data: str | bytes) -> Outcome:
    """One WebSocket frame into a live session, as the gateway hands it over."""
    parser = "frames_msgpack" if session.codec.binary else "frames_json"
    TRIED[parser] += 1
    try:
        result = session.receive(data, SESSION_NOW)
    except Exception as exc:  # the session's contract: it never raises for peer input
        raise Crash(f"{parser}: {type(exc).__name__}: {exc}"[:2000]) from exc
    if isinstance(result, FrameAccepted):
        return "accepted"
    return _protocol_refusal(parser, FRAME_CODES)(result.error)


def bytes_frames_json(data: bytes) -> Outcome:
    # websockets hands text frames over as str; undecodable bytes would have
    # been refused by it, so the fuzzer's bytes are read leniently as UTF-8.
    return feed_frame(new_session(JSON_CODEC), data.decode("utf-8", "replace"))


def bytes_frames_msgpack(data: bytes) -> Outcome:
    return feed_frame(new_session(MSGPACK_CODEC), data)


# -- access tokens --------------------------------------------------------------------------

TOKEN_CODES: frozenset[ErrorCode] = frozenset(e for e in ErrorCode if 20100 <= e.code < 20200)
ACCOUNT_SID = "AC" + "a1" * 16
OTHER_ACCOUNT_SID = "AC" + "b2" * 16
HS_KID = "SK" + "01" * 16
ES_KID = "SK" + "02" * 16
ED_KID = "SK" + "03" * 16
REVOKED_KID = "SK" + "04" * 16
OTHER_KID = "SK" + "05" * 16  # a key of another account
HS_SECRET = "fuzzing-secret-0123456789abcdef-0123456789"
# Fixed private keys, so that committed corpus tokens keep verifying.
ES_PRIVATE = ec.derive_private_key(0x5EED_F00D_CAFE_BABE, ec.SECP256R1())
ED_PRIVATE = ed25519.Ed25519PrivateKey.from_private_bytes(bytes(range(32)))


def _pem(private: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey, *, public: bool) -> str:
    if public:
        return private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()


ES_PRIVATE_PEM = _pem(ES_PRIVATE, public=False)
ED_PRIVATE_PEM = _pem(ED_PRIVATE, public=False)
KEYS: dict[str, SigningKey] = {
    k.sid: k
    for k in (
        SigningKey(HS_KID, ACCOUNT_SID, secret=HS_SECRET),
        SigningKey(ES_KID, ACCOUNT_SID, public_key_pem=_pem(ES_PRIVATE, public=True)),
        SigningKey(ED_KID, ACCOUNT_SID, public_key_pem=_pem(ED_PRIVATE, public=True)),
        SigningKey(REVOKED_KID, ACCOUNT_SID, secret=HS_SECRET, revoked=True),
        SigningKey(OTHER_KID, OTHER_ACCOUNT_SID, secret=HS_SECRET),
    )
}
TOKEN_NOW = 1_800_000_000.0


def feed_token(token: str, parser: str = "tokens") -> AccessToken | Refused:
    TRIED[parser] += 1
    return judge(parser, lambda: verify_token(token, KEYS.get, TOKEN_NOW), {RemoteProtocolError: _protocol_refusal(parser, TOKEN_CODES)})


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def hs256_token(header: bytes, payload: bytes, secret: str = HS_SECRET) -> str:
    """A token over arbitrary header and payload bytes, with a valid HS256 signature."""
    signing_input = f"{b64url(header)}.{b64url(payload)}"
    signature = hmac.new(secret.encode(), signing_input.encode("ascii"), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"


def bytes_tokens(data: bytes) -> AccessToken | Refused:
    # Two shapes, chosen by the first byte: the token text itself (header and
    # signature parsing), or "header \n payload" that the harness signs with the
    # known secret - a random signature never verifies, so without this the
    # fuzzer would never reach the claim and grant checks.
    if not data:
        return feed_token("")
    if data[0] % 2 == 0:
        return feed_token(data[1:].decode("latin-1"))
    header, _, payload = data[1:].partition(b"\n")
    return feed_token(hs256_token(header, payload))


# -- instruction documents ------------------------------------------------------------------

INSTRUCTION_CODES = frozenset({11750, 12100, 12102, 12200})


def _instruction_refusal(exc: InstructionError) -> Refused:
    if exc.error_code not in INSTRUCTION_CODES:
        raise Crash(f"instructions: refused with code {exc.error_code}, not one of {sorted(INSTRUCTION_CODES)}")
    return Refused(exc.error_code, _message_ok("instructions", exc.message, str(exc.error_code)))


def feed_instructions(document: bytes | str) -> Outcome:
    TRIED["instructions"] += 1
    result = judge("instructions", lambda: parse_instructions(document), {InstructionError: _instruction_refusal})
    return result if isinstance(result, Refused) else "accepted"


def bytes_instructions(data: bytes) -> Outcome:
    return feed_instructions(data)


# -- SMPP: the byte stream an SMSC sends, and what the adapter does with each PDU ------------

def _smpp_refusal(kind: str) -> Callable[[Any], Refused]:
    def check(exc: Exception) -> Refused:
        return Refused(kind, _message_ok("smpp", str(exc), kind))

    return check


def _check_reply(event: MalformedPdu | UnknownCommand | StreamError) -> None:
    reply = event.reply()
    _message_ok("smpp", getattr(event, "reason", "unknown command"), type(event).__name__)
    if reply is not None:
        reply.encode()  # the answer we send must always be encodable


def feed_smpp(chunks: list[bytes], *, max_command_length: int = 65536) -> list[Outcome]:
    """An SMSC's bytes, in the chunks the socket delivered them, through the
    stream and - for each deliver_sm - the receipt parser and the MO reassembly."""
    TRIED["smpp"] += 1
    stream = PduStream(max_command_length=max_command_length)
    mo = Reassembly(timeout=60.0, log=_NullLog())
    outcomes: list[Outcome] = []
    for chunk in chunks:
        try:
            stream.receive_data(chunk)
            events = stream.events()
        except Exception as exc:  # the stream's contract: nothing the peer sends makes it raise
            raise Crash(f"smpp: stream raised {type(exc).__name__}: {exc}"[:2000]) from exc
        for event in events:
            if isinstance(event, (MalformedPdu, UnknownCommand, StreamError)):
                _check_reply(event)
                outcomes.append(Refused(type(event).__name__, getattr(event, "reason", "unknown command")))
                continue
            outcomes.append(_check_pdu(event, mo))
    return outcomes


def _check_pdu(pdu: Pdu, mo: Reassembly) -> Outcome:
    # Whatever decoded must encode back to the same PDU, unless a field is one
    # the lenient reader takes but the strict writer refuses (an overlong C-string).
    try:
        encoded = pdu.encode()
    except SmppEncodeError:
        encoded = None
    if encoded is not None:
        again = judge("smpp", lambda: decode_pdu(encoded), {})
        if again != pdu:
            raise Crash(f"smpp: {type(pdu).__name__} does not round-trip: {pdu!r} -> {again!r}")
    if not isinstance(pdu, DeliverSm):
        return "accepted"
    refusals = {ReceiptError: _smpp_refusal("receipt"), sms.UdhError: _smpp_refusal("udh"), ContentError: _smpp_refusal("content")}
    if pdu.is_receipt:
        result: object = judge("smpp", lambda: parse_receipt(pdu, hex_ids=True), refusals)
    else:
        result = judge("smpp", lambda: mo.add(pdu, 0.0), refusals)
    return result if isinstance(result, Refused) else "accepted"


class _NullLog:
    """Reassembly logs dropped parts; the fuzzer has nobody to tell."""

    def warning(self, *args: object, **kwargs: object) -> None:
        pass


def bytes_smpp(data: bytes) -> list[Outcome]:
    # The first byte picks where the socket split the stream (0: all at once),
    # so partial headers and bodies across reads are fuzzed too.
    if not data:
        return feed_smpp([b""])
    step, rest = data[0], data[1:]
    if step == 0:
        return feed_smpp([rest])
    return feed_smpp([rest[i : i + step] for i in range(0, len(rest), step)] or [b""])


def decode_one_pdu(data: bytes) -> Pdu | Refused:
    """``decode_pdu`` alone: SmppDecodeError (with the status a reply carries) or a PDU."""

    def check(exc: SmppDecodeError) -> Refused:
        return Refused(int(exc.status), _message_ok("smpp", exc.reason, "SmppDecodeError"))

    TRIED["smpp"] += 1
    return judge("smpp", lambda: decode_pdu(data), {SmppDecodeError: check})


# -- config files -----------------------------------------------------------------------------

def _config_refusal(exc: ConfigError) -> Refused:
    if not exc.problems:
        raise Crash("config: ConfigError without problems")
    for problem in exc.problems:
        # Every problem names where it is: "<file>: ...", "accounts[0].sid: ...", "PRESENCE_X: ...".
        if not isinstance(problem, str) or ": " not in problem:
            raise Crash(f"config: problem {problem!r} does not name its key")
    return Refused("ConfigError", exc.problems[0])


def feed_config_data(data: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> Outcome:
    """What tomllib made of a file (plus PRESENCE_* variables), into the validator."""
    TRIED["config"] += 1
    result = judge("config", lambda: parse_config(data, dict(environ or {})), {ConfigError: _config_refusal})
    return result if isinstance(result, Refused) else "accepted"


_CONFIG_DIR = tempfile.mkdtemp(prefix="fuzz-config-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
atexit.register(shutil.rmtree, _CONFIG_DIR, True)


def feed_config_file(content: bytes, environ: Mapping[str, str] | None = None) -> Outcome:
    """A config file's bytes, read the way ``presence-server serve --config`` reads them."""
    TRIED["config"] += 1
    path = os.path.join(_CONFIG_DIR, "presence.toml")
    with open(path, "wb") as f:
        f.write(content)
    result = judge("config", lambda: load_config(path, dict(environ or {})), {ConfigError: _config_refusal})
    return result if isinstance(result, Refused) else "accepted"


def bytes_config(data: bytes) -> Outcome:
    return feed_config_file(data)


def json_bytes(value: object) -> bytes:
    return json.dumps(value).encode()
