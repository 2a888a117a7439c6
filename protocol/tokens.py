"""Access tokens: the JWT a client presents, its grants, and how it is verified.

The format is the widely used access-token JWT (``cty: twilio-fpa;v=1``), so
tokens minted by the official helper libraries work unchanged::

    header  {"typ": "JWT", "alg": "HS256", "cty": "twilio-fpa;v=1"}
    payload {"jti": "SK...-1700000000", "iss": "SK...", "sub": "AC...",
             "nbf": 1700000000, "exp": 1700003600,
             "grants": {"identity": "alice",
                        "voice": {"incoming": {"allow": true}},
                        "presence": {"publish": true, "subscribe": ["*"]}}}

HS256 tokens are signed with an API key's shared secret; ES256 (P-256) and
EdDSA (Ed25519) tokens with a private key whose public half the server holds.
``docs/tokens.md`` is the user-facing reference for every rule below.

Sans-I/O: the clock (``now``) and the key store (``lookup``) are injected;
nothing here reads the system clock or touches the network. PyJWT does the
JWS parsing and the signature check; this module decides which key and which
algorithm are acceptable, and checks the claims with the injected ``now``.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import hashlib
import hmac
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, NoReturn, TypeAlias

import jwt
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.serialization import load_pem_private_key, load_pem_public_key
from jwt.algorithms import HMACAlgorithm
from jwt.api_jws import PyJWS
from jwt.exceptions import (
    DecodeError,
    InvalidAlgorithmError,
    InvalidKeyError,
    InvalidSignatureError,
    InvalidTokenError,
)

from .addresses import identity_matches, identity_problem, is_sid
from .errors import ErrorCode, LocalProtocolError, RemoteProtocolError

__all__ = [
    "ALGORITHMS",
    "CONTENT_TYPE",
    "DEFAULT_LEEWAY",
    "MAX_TOKEN_LENGTH",
    "MAX_TTL",
    "AccessToken",
    "Grants",
    "KeyLookup",
    "SigningKey",
    "check_renewal",
    "default_grants",
    "mint_token",
    "parse_grants",
    "verify_token",
    "verify_token_reference",
]

ALGORITHMS: Final = ("HS256", "ES256", "EdDSA")
CONTENT_TYPE: Final = "twilio-fpa;v=1"
# Real tokens are well under 2 KiB; the guard runs before any parsing so a
# peer cannot make us base64-decode and JSON-parse megabytes.
MAX_TOKEN_LENGTH: Final = 8192
DEFAULT_LEEWAY: Final = 30.0
MAX_TTL: Final = 86400.0  # the 24 h rule of the widely used token format
# Twilio grants nest at most four levels (voice.outgoing.params.x); the cap
# keeps the deep-freeze below far from the recursion limit.
MAX_GRANTS_DEPTH: Final = 16

# A PyJWS restricted to our three algorithms: even if a bug passed a wider
# list, PyJWT itself would refuse "none", RS*, PS* and friends.
_JWS: Final = PyJWS(algorithms=list(ALGORITHMS))

PublicKey: TypeAlias = "ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey"

_HS256: Final = HMACAlgorithm(HMACAlgorithm.SHA256)
_BASE64URL: Final = re.compile(rb"[A-Za-z0-9_-]*")


@functools.lru_cache(maxsize=256)
def load_public_key(pem: str) -> ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey:
    """Load (once) a P-256 or Ed25519 public key; ValueError for anything else."""
    try:
        key = load_pem_public_key(pem.encode("ascii"))
    except (ValueError, UnicodeEncodeError, UnsupportedAlgorithm) as exc:
        raise ValueError(f"public_key_pem is not a PEM public key: {exc}") from None
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return key
    if isinstance(key, ed25519.Ed25519PublicKey):
        return key
    raise ValueError("public_key_pem must be a P-256 (ES256) or Ed25519 (EdDSA) public key")


def _algorithm_of(key: PublicKey) -> str:
    return "ES256" if isinstance(key, ec.EllipticCurvePublicKey) else "EdDSA"


@dataclass(frozen=True)
class SigningKey:
    """What the server knows about one API key.

    Validated on construction, so a bad key record fails where it is loaded
    (a local configuration error), never in the middle of a peer's handshake.
    """

    sid: str
    account_sid: str
    # repr=False: a SigningKey may end up in a log line; its secret must not.
    secret: str | None = field(default=None, repr=False)
    public_key_pem: str | None = field(default=None, repr=False)
    revoked: bool = False

    def __post_init__(self) -> None:
        if not is_sid(self.sid, "SK"):
            raise ValueError(f"SigningKey.sid must be an API key SID (SK + 32 hex), got {self.sid!r}")
        if not is_sid(self.account_sid, "AC"):
            raise ValueError(f"SigningKey.account_sid must be an account SID, got {self.account_sid!r}")
        if self.secret is not None:
            if not isinstance(self.secret, str) or not self.secret:
                # An empty HMAC key makes every token trivially forgeable.
                raise ValueError("SigningKey.secret must be a non-empty string")
            if "-----BEGIN" in self.secret:
                raise ValueError("SigningKey.secret looks like a PEM key; put public keys in public_key_pem")
        if self.public_key_pem is not None:
            load_public_key(self.public_key_pem)


KeyLookup: TypeAlias = Callable[[str], "SigningKey | None"]


@dataclass(frozen=True)
class Grants:
    """The permissions a token carries, parsed from its ``grants`` claim."""

    identity: str
    presence_publish: bool = False
    # Identity patterns (addresses.identity_matches); () none, ("*",) all.
    presence_subscribe: tuple[str, ...] = ()
    voice_incoming: bool = False
    voice_outgoing_application_sid: str | None = None
    voice_push_credential_sid: str | None = None
    # The whole grants object, deep-frozen (objects -> MappingProxyType, arrays
    # -> tuples) so a shared AccessToken cannot be altered by one holder.
    # hash=False: mapping proxies are unhashable; the parsed fields suffice.
    raw: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}), hash=False)

    def can_register_presence(self) -> bool:
        # A client that may receive calls is, by definition, reachable: it
        # has to be present to be rung. So the standard voice grant suffices
        # and tokens minted by existing backends work without our own grant.
        return self.presence_publish or self.voice_incoming

    def can_subscribe(self, identity: str) -> bool:
        return any(identity_matches(pattern, identity) for pattern in self.presence_subscribe)


@dataclass(frozen=True)
class AccessToken:
    """A verified token. Times are seconds since the epoch."""

    jti: str
    key_sid: str  # iss
    account_sid: str  # sub
    identity: str
    not_before: float  # nbf, else iat, else the verification time
    expires: float  # exp
    algorithm: str
    grants: Grants

    def for_session(self) -> AccessToken:
        """This token as a long-lived session keeps it: the parsed grants without
        the whole grants object (``grants.raw``, ~0.7 kB per session), which
        nothing reads after verification."""
        if not self.grants.raw:
            return self
        return dataclasses.replace(self, grants=dataclasses.replace(self.grants, raw=_NO_GRANTS))


_NO_GRANTS: Final[Mapping[str, Any]] = MappingProxyType({})


# -- verification ---------------------------------------------------------------


def _reject(error: ErrorCode, detail: str) -> NoReturn:
    raise RemoteProtocolError(error, detail)


def _show(value: object, limit: int = 40) -> str:
    """A peer-supplied value for an error detail: repr'd and cut short."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _reject_constant(name: str) -> NoReturn:
    # Python's json accepts NaN and Infinity; JSON does not, and a NaN exp
    # would compare false against everything.
    raise ValueError(f"{name} is not JSON")


def _json_object(data: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(data, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        _reject(ErrorCode.TOKEN_MALFORMED, f"token {what} is not valid JSON: {exc}")
    if not isinstance(value, dict):
        _reject(ErrorCode.TOKEN_MALFORMED, f"token {what} is not a JSON object")
    return value


def _check_header(header: Mapping[str, Any]) -> str:
    """Validate the header; return its algorithm."""
    if "alg" not in header:
        _reject(ErrorCode.TOKEN_HEADER_INVALID, "header lacks 'alg'")
    alg = header["alg"]
    if not isinstance(alg, str):
        _reject(ErrorCode.TOKEN_HEADER_INVALID, f"header 'alg' must be a string, got {_show(alg)}")
    if alg.lower() == "none":
        _reject(ErrorCode.TOKEN_ALGORITHM_REFUSED, "alg 'none' (an unsigned token) is refused")
    if alg not in ALGORITHMS:
        _reject(
            ErrorCode.TOKEN_ALGORITHM_REFUSED,
            f"alg {_show(alg)} is refused; accepted: {', '.join(ALGORITHMS)}",
        )
    if "typ" in header and header["typ"] != "JWT":
        _reject(ErrorCode.TOKEN_HEADER_INVALID, f"header 'typ' is {_show(header['typ'])}; expected 'JWT'")
    if "cty" in header and header["cty"] != CONTENT_TYPE:
        _reject(
            ErrorCode.TOKEN_HEADER_INVALID,
            f"header 'cty' is {_show(header['cty'])}; expected {CONTENT_TYPE!r}",
        )
    for name in ("crit", "b64"):
        # JWS extensions (RFC 7797 unencoded payloads and the like): nobody
        # mints access tokens with them, and refusing is the safe reading of
        # a "critical" parameter. kid, jku, jwk, x5u... are ignored: the key is
        # chosen by iss from our own store, never from the header.
        if name in header:
            _reject(ErrorCode.TOKEN_HEADER_INVALID, f"header parameter {name!r} is not supported")
    return alg


def _verification_key(key: SigningKey, alg: str) -> str | PublicKey:
    """The key object PyJWT verifies with, or a refusal when ``alg`` does not fit ``key``.

    This is the defence against algorithm confusion: the algorithm must match
    the kind of key material the server holds, so a public key is never used
    as an HMAC secret and an HMAC secret never stands in for a public key.
    """
    if alg == "HS256":
        if key.secret is None:
            _reject(
                ErrorCode.TOKEN_ALGORITHM_REFUSED,
                f"API key {key.sid} has no shared secret, only a public key: HS256 is refused",
            )
        return key.secret
    if key.public_key_pem is None:
        _reject(
            ErrorCode.TOKEN_ALGORITHM_REFUSED,
            f"API key {key.sid} has only a shared secret: {alg} is refused (use HS256)",
        )
    public = load_public_key(key.public_key_pem)
    if _algorithm_of(public) != alg:
        kind = "a P-256" if alg == "EdDSA" else "an Ed25519"
        _reject(
            ErrorCode.TOKEN_ALGORITHM_REFUSED,
            f"API key {key.sid} holds {kind} public key: {alg} is refused (use {_algorithm_of(public)})",
        )
    return public


def _sid_claim(claims: Mapping[str, Any], name: str, prefix: str, what: str) -> str:
    value = claims.get(name)
    if value is None:
        _reject(ErrorCode.TOKEN_CLAIM_MISSING, f"claim {name!r} ({what}) is missing")
    if not is_sid(value, prefix):
        _reject(
            ErrorCode.TOKEN_ISSUER_INVALID,
            f"claim {name!r} is {_show(value)}, not {what} ({prefix} followed by 32 hex digits)",
        )
    assert isinstance(value, str)  # is_sid checked it; this tells mypy
    return value


def _time_claim(claims: Mapping[str, Any], name: str) -> float | None:
    """A NumericDate claim as a float, None when absent (or null)."""
    value = claims.get(name)
    if value is None:
        return None
    # bool is an int in Python, but `true` is not a date.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        _reject(
            ErrorCode.TOKEN_MALFORMED,
            f"claim {name!r} must be a number (seconds since the epoch), got {_show(value)}",
        )
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        _reject(ErrorCode.TOKEN_MALFORMED, f"claim {name!r} is out of range")
    return number


def verify_token(
    token: str,
    lookup: KeyLookup,
    now: float,
    *,
    leeway: float = DEFAULT_LEEWAY,
    max_ttl: float = MAX_TTL,
) -> AccessToken:
    """Verify ``token`` at time ``now``; RemoteProtocolError(code, detail) on any defect.

    Order matters: only the header and the issuer/subject (to pick the key)
    are read before the signature is verified; every other decision is made
    on the verified payload.

    The token is decoded once, and an HS256 signature is checked here with
    ``hmac`` on the raw segments; PyJWT checks the public-key algorithms. The
    decisions and error codes are :func:`verify_token_reference`'s (PyJWT for
    everything), which did the decoding twice and cost ~4x the time of this
    path: it was the largest part of a registration's CPU (docs/benchmarks.md).
    """
    _check_shape(token, leeway, max_ttl)

    # 2. Header, and the payload (only iss/sub are read from it before the signature).
    header, payload, signing_input, signature = _load(token)
    alg = _check_header(header)
    claims = _json_object(payload, "payload")
    key_sid = _sid_claim(claims, "iss", "SK", "an API key SID")
    account_sid = _sid_claim(claims, "sub", "AC", "an account SID")

    # 3. The key, and whether this algorithm may be used with it.
    key = _key(lookup, key_sid)
    verifier = _verification_key(key, alg)

    # 4. The signature. The claims parsed above are the signed ones: the
    # signature covers the very segment they were decoded from.
    if alg == "HS256":
        assert isinstance(verifier, str)
        try:
            secret = _hmac_secret(verifier)
        except InvalidKeyError as exc:
            _reject(ErrorCode.TOKEN_ALGORITHM_REFUSED, f"{alg} cannot be used with API key {key_sid}: {exc}")
        expected = hmac.new(secret, signing_input, hashlib.sha256).digest()
        if not hmac.compare_digest(signature, expected):
            _reject(ErrorCode.TOKEN_SIGNATURE_INVALID, f"signature does not verify with API key {key_sid} ({alg})")
    else:
        _verify_with_pyjwt(token, verifier, alg, key_sid)

    # 5. Claims, from the verified payload only.
    return _access_token(claims, key, key_sid, account_sid, alg, now, leeway, max_ttl)


def _check_shape(token: object, leeway: float, max_ttl: float) -> None:
    """Step 1: cheap structural guards before any decoding."""
    if leeway < 0 or max_ttl <= 0:
        raise ValueError("leeway must be >= 0 and max_ttl > 0")
    if not isinstance(token, str):
        _reject(ErrorCode.TOKEN_MALFORMED, "token must be a string")
    if len(token) > MAX_TOKEN_LENGTH:
        _reject(
            ErrorCode.TOKEN_MALFORMED,
            f"token is {len(token)} characters long; the limit is {MAX_TOKEN_LENGTH}",
        )
    if not token.isascii():
        _reject(ErrorCode.TOKEN_MALFORMED, "token holds non-ASCII characters; a JWT is base64url text")
    parts = token.count(".") + 1
    if parts != 3:
        _reject(ErrorCode.TOKEN_MALFORMED, f"a JWT is three base64url parts separated by '.'; found {parts}")


def _segment(segment: bytes, name: str) -> bytes:
    """One base64url segment, by PyJWT's rules (so both paths accept the same
    tokens): at most two '=' of padding and then only to a multiple of four,
    nothing outside the alphabet, and only the canonical encoding of its bytes."""
    stripped = segment.rstrip(b"=")
    padding = len(segment) - len(stripped)
    if (
        padding > 2
        or (padding and len(segment) % 4)
        or len(stripped) % 4 == 1
        or _BASE64URL.fullmatch(stripped) is None
    ):
        _reject(ErrorCode.TOKEN_MALFORMED, f"token is not a well-formed JWT: Invalid {name} padding")
    decoded = base64.urlsafe_b64decode(stripped + b"=" * (-len(stripped) % 4))
    if base64.urlsafe_b64encode(decoded).rstrip(b"=") != stripped:
        _reject(ErrorCode.TOKEN_MALFORMED, f"token is not a well-formed JWT: Invalid {name} padding")
    return decoded


def _load(token: str) -> tuple[dict[str, Any], bytes, bytes, bytes]:
    """(header, payload, signing input, signature) of a three-part token, in
    PyJWT's order of checks (header, payload, signature, then ``kid``)."""
    signing_input, crypto_segment = token.encode("ascii").rsplit(b".", 1)
    header_segment, payload_segment = signing_input.split(b".", 1)
    header_data = _segment(header_segment, "header")
    try:
        header = json.loads(header_data)
    except (ValueError, RecursionError) as exc:
        _reject(ErrorCode.TOKEN_MALFORMED, f"token is not a well-formed JWT: Invalid header string: {exc}")
    if not isinstance(header, dict):
        _reject(ErrorCode.TOKEN_MALFORMED, "token is not a well-formed JWT: Invalid header string: must be a json object")
    if "crit" in header or "b64" in header:
        # Refused by _check_header whatever they hold; PyJWT says first what is
        # wrong with them (a detached payload, a bad crit list), as it always has.
        _unverified_with_pyjwt(token)
    payload = _segment(payload_segment, "payload")
    signature = _segment(crypto_segment, "crypto")
    if "kid" in header and not isinstance(header["kid"], str):
        _reject(ErrorCode.TOKEN_HEADER_INVALID, "token header is invalid: Key ID header parameter must be a string")
    return header, payload, signing_input, signature


@functools.lru_cache(maxsize=256)
def _hmac_secret(secret: str) -> bytes:
    """PyJWT's checks of an HMAC secret (not a PEM, SSH, DER or JWK key), once
    per secret: they parse the secret several ways and cost more than the HMAC.
    InvalidKeyError when it is refused (not cached, so checked every time)."""
    return _HS256.prepare_key(secret)


def _key(lookup: KeyLookup, key_sid: str) -> SigningKey:
    key = lookup(key_sid)
    if key is None:
        _reject(ErrorCode.TOKEN_KEY_UNKNOWN, f"API key {key_sid} is unknown")
    if key.sid != key_sid:
        raise LocalProtocolError(ErrorCode.INTERNAL, f"key lookup for {key_sid} returned {key.sid}")
    if key.revoked:
        _reject(ErrorCode.TOKEN_KEY_REVOKED, f"API key {key_sid} was revoked")
    return key


def _unverified_with_pyjwt(token: str) -> dict[str, Any]:
    try:
        return _JWS.decode_complete(token, options={"verify_signature": False})
    except DecodeError as exc:
        _reject(ErrorCode.TOKEN_MALFORMED, f"token is not a well-formed JWT: {exc}")
    except InvalidTokenError as exc:  # kid not a string, bad crit, b64 without crit
        _reject(ErrorCode.TOKEN_HEADER_INVALID, f"token header is invalid: {exc}")


def _verify_with_pyjwt(token: str, verifier: str | PublicKey, alg: str, key_sid: str) -> dict[str, Any]:
    # exp/nbf are not PyJWS's business (it reads the system clock); they are
    # checked by _access_token with the injected `now`.
    try:
        return _JWS.decode_complete(token, key=verifier, algorithms=[alg])
    except InvalidSignatureError:
        _reject(ErrorCode.TOKEN_SIGNATURE_INVALID, f"signature does not verify with API key {key_sid} ({alg})")
    except (InvalidAlgorithmError, InvalidKeyError) as exc:
        _reject(ErrorCode.TOKEN_ALGORITHM_REFUSED, f"{alg} cannot be used with API key {key_sid}: {exc}")
    except DecodeError as exc:  # the same bytes parsed before; kept for safety
        _reject(ErrorCode.TOKEN_MALFORMED, f"token is not a well-formed JWT: {exc}")


def verify_token_reference(
    token: str,
    lookup: KeyLookup,
    now: float,
    *,
    leeway: float = DEFAULT_LEEWAY,
    max_ttl: float = MAX_TTL,
) -> AccessToken:
    """:func:`verify_token` done wholly by PyJWT: the reference the fast path is
    tested against (tests/unit/test_tokens.py compares the two on generated
    tokens), as aiohttp keeps its pure-Python reader beside the fast one."""
    _check_shape(token, leeway, max_ttl)
    unverified = _unverified_with_pyjwt(token)
    alg = _check_header(unverified["header"])
    claims = _json_object(unverified["payload"], "payload")
    key_sid = _sid_claim(claims, "iss", "SK", "an API key SID")
    account_sid = _sid_claim(claims, "sub", "AC", "an account SID")
    key = _key(lookup, key_sid)
    verifier = _verification_key(key, alg)
    verified = _verify_with_pyjwt(token, verifier, alg, key_sid)
    claims = _json_object(verified["payload"], "payload")
    return _access_token(claims, key, key_sid, account_sid, alg, now, leeway, max_ttl)


def _access_token(
    claims: Mapping[str, Any], key: SigningKey, key_sid: str, account_sid: str, alg: str, now: float, leeway: float, max_ttl: float
) -> AccessToken:
    """Step 5 of verification: the claims, from the verified payload only."""
    if key.account_sid != account_sid:
        # Deliberately not naming the key's real account to the peer.
        _reject(ErrorCode.TOKEN_KEY_ACCOUNT_MISMATCH, f"API key {key_sid} does not belong to account {account_sid}")
    jti = claims.get("jti")
    if jti is None:
        _reject(ErrorCode.TOKEN_CLAIM_MISSING, "claim 'jti' (token id) is missing")
    if not isinstance(jti, str):
        _reject(ErrorCode.TOKEN_MALFORMED, f"claim 'jti' must be a string, got {_show(jti)}")
    if not jti:
        _reject(ErrorCode.TOKEN_CLAIM_MISSING, "claim 'jti' (token id) is empty")
    exp = _time_claim(claims, "exp")
    if exp is None:
        _reject(ErrorCode.TOKEN_CLAIM_MISSING, "claim 'exp' (expiry time) is missing")
    nbf = _time_claim(claims, "nbf")
    iat = _time_claim(claims, "iat")
    # nbf is optional in this format (the helper libraries set it by default,
    # but it can be switched off); then iat stands in for it, else nothing.
    start, start_name = (nbf, "nbf") if nbf is not None else (iat, "iat")

    if exp <= now - leeway:
        _reject(ErrorCode.TOKEN_EXPIRED, f"token expired at {exp:.0f}; now is {now:.0f} (leeway {leeway:g} s)")
    if start is not None:
        if start > now + leeway:
            _reject(
                ErrorCode.TOKEN_NOT_YET_VALID,
                f"token is valid from {start:.0f} ({start_name}); now is {now:.0f} (leeway {leeway:g} s)",
            )
        if exp <= start:
            _reject(
                ErrorCode.TOKEN_EXPIRED,
                f"exp ({exp:.0f}) is not after {start_name} ({start:.0f}): the token is never valid",
            )
    # Without nbf/iat the lifetime is measured from now: a token that claims
    # to last beyond now + max_ttl is refused all the same.
    lifetime = exp - (start if start is not None else now)
    if lifetime > max_ttl:
        origin = start_name if start is not None else "now (no nbf or iat)"
        _reject(
            ErrorCode.TOKEN_TTL_TOO_LONG,
            f"token lifetime is {lifetime:.0f} s measured from {origin}; the limit is {max_ttl:g} s",
        )

    grants = parse_grants(claims.get("grants"))
    return AccessToken(
        jti=jti,
        key_sid=key_sid,
        account_sid=account_sid,
        identity=grants.identity,
        not_before=start if start is not None else now,
        expires=exp,
        algorithm=alg,
        grants=grants,
    )


def check_renewal(current: AccessToken, renewed: AccessToken) -> None:
    """A session may swap its token, but not who it is: same account, same identity.

    The key may differ (backends rotate API keys), and so may the grants.
    """
    if renewed.account_sid != current.account_sid:
        _reject(
            ErrorCode.TOKEN_IDENTITY_CHANGED,
            f"renewed token is for account {renewed.account_sid}, the session's is {current.account_sid}",
        )
    if renewed.identity != current.identity:
        _reject(
            ErrorCode.TOKEN_IDENTITY_CHANGED,
            f"renewed token is for identity {renewed.identity!r}, the session's is {current.identity!r}",
        )


# -- grants ---------------------------------------------------------------------


def _grants_invalid(detail: str) -> NoReturn:
    _reject(ErrorCode.TOKEN_GRANTS_INVALID, detail)


def _freeze(value: Any, depth: int = 0) -> Any:
    if depth > MAX_GRANTS_DEPTH:
        _grants_invalid(f"grants are nested deeper than {MAX_GRANTS_DEPTH} levels")
    if isinstance(value, dict):
        return MappingProxyType({k: _freeze(v, depth + 1) for k, v in value.items()})
    if isinstance(value, list):
        return tuple(_freeze(v, depth + 1) for v in value)
    return value


def _optional_bool(obj: Mapping[str, Any], name: str, path: str) -> bool:
    value = obj.get(name)
    if value is None:
        return False
    if not isinstance(value, bool):
        _grants_invalid(f"{path}.{name} must be true or false, got {_show(value)}")
    return value


def _optional_object(obj: Mapping[str, Any], name: str, path: str) -> Mapping[str, Any] | None:
    value = obj.get(name)
    if value is None:
        return None
    if not isinstance(value, Mapping):
        _grants_invalid(f"{path}.{name} must be an object, got {_show(value)}")
    return value


def _subscribe_patterns(value: object) -> tuple[str, ...]:
    if value is None or value is False:
        return ()
    if value is True:
        return ("*",)
    if not isinstance(value, (list, tuple)):
        _grants_invalid(
            f"grants.presence.subscribe must be true, false or a list of identities, got {_show(value)}"
        )
    patterns: list[str] = []
    for pattern in value:
        if not isinstance(pattern, str):
            _grants_invalid(f"grants.presence.subscribe holds a non-string {_show(pattern)}")
        # "*" is everyone; "team-*" a prefix; anything else an exact identity.
        stem = pattern[:-1] if pattern.endswith("*") else pattern
        problem = None if pattern == "*" else identity_problem(stem)
        if problem is not None:
            _grants_invalid(f"grants.presence.subscribe pattern {_show(pattern)} is invalid: {problem}")
        patterns.append(pattern)
    return tuple(patterns)


def parse_grants(value: object) -> Grants:
    """Parse a token's ``grants`` claim. Unknown grants (video, chat...) are kept in ``raw`` only."""
    if value is None:
        _grants_invalid("claim 'grants' is missing")
    if not isinstance(value, Mapping):
        _grants_invalid(f"claim 'grants' must be an object, got {_show(value)}")
    raw: Mapping[str, Any] = _freeze(dict(value))

    identity = raw.get("identity")
    if identity is None:
        _reject(ErrorCode.TOKEN_IDENTITY_INVALID, "grants.identity is missing")
    problem = identity_problem(identity)
    if problem is not None:
        _reject(ErrorCode.TOKEN_IDENTITY_INVALID, f"grants.identity {_show(identity)} is invalid: {problem}")
    assert isinstance(identity, str)

    presence = _optional_object(raw, "presence", "grants")
    publish = False
    subscribe: tuple[str, ...] = ()
    if presence is not None:
        publish = _optional_bool(presence, "publish", "grants.presence")
        subscribe = _subscribe_patterns(presence.get("subscribe"))

    incoming = False
    application_sid: str | None = None
    push_credential_sid: str | None = None
    voice = _optional_object(raw, "voice", "grants")
    if voice is not None:
        incoming_obj = _optional_object(voice, "incoming", "grants.voice")
        if incoming_obj is not None:
            incoming = _optional_bool(incoming_obj, "allow", "grants.voice.incoming")
        outgoing = _optional_object(voice, "outgoing", "grants.voice")
        if outgoing is not None:
            application_sid = outgoing.get("application_sid")
            if not is_sid(application_sid, "AP"):
                _grants_invalid(
                    f"grants.voice.outgoing.application_sid must be an application SID (AP + 32 hex), "
                    f"got {_show(application_sid)}"
                )
            _optional_object(outgoing, "params", "grants.voice.outgoing")
        push_credential_sid = voice.get("push_credential_sid")
        if push_credential_sid is not None and not is_sid(push_credential_sid):
            _grants_invalid(f"grants.voice.push_credential_sid must be a SID, got {_show(push_credential_sid)}")

    return Grants(
        identity=identity,
        presence_publish=publish,
        presence_subscribe=subscribe,
        voice_incoming=incoming,
        voice_outgoing_application_sid=application_sid,
        voice_push_credential_sid=push_credential_sid,
        raw=raw,
    )


# -- minting --------------------------------------------------------------------


def default_grants(identity: str) -> dict[str, Any]:
    """What our CLI mints: present, sees everyone, can be called."""
    return {
        "identity": identity,
        "presence": {"publish": True, "subscribe": ["*"]},
        "voice": {"incoming": {"allow": True}},
    }


def _numeric_date(value: float) -> int | float:
    # Whole seconds as JSON integers, like the helper libraries write them.
    return int(value) if float(value).is_integer() else value


def mint_token(
    *,
    key_sid: str,
    account_sid: str,
    identity: str,
    secret: str | None = None,
    private_key_pem: str | None = None,
    algorithm: str = "HS256",
    ttl: float = 3600,
    now: float,
    grants: Mapping[str, Any] | None = None,
    nbf: float | None = None,
) -> str:
    """Mint a token in exactly the shape the helper libraries produce.

    ``nbf`` defaults to ``now`` and ``exp`` is ``now + ttl`` (as there). The
    SIDs and the identity are checked (ValueError) so a CLI user learns of a
    typo here rather than at connect time; the lifetime is not capped, since
    the 24 h limit is the verifier's setting and tests need over-long tokens.
    """
    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm must be one of {', '.join(ALGORITHMS)}")
    if not is_sid(key_sid, "SK"):
        raise ValueError(f"key_sid must be an API key SID, got {key_sid!r}")
    if not is_sid(account_sid, "AC"):
        raise ValueError(f"account_sid must be an account SID, got {account_sid!r}")
    problem = identity_problem(identity)
    if problem is not None:
        raise ValueError(f"identity {identity!r} is invalid: {problem}")
    if not ttl > 0:
        raise ValueError("ttl must be positive")

    signing_key: str | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
    if algorithm == "HS256":
        if not secret:
            raise ValueError("HS256 needs the API key's secret")
        signing_key = secret
    else:
        if not private_key_pem:
            raise ValueError(f"{algorithm} needs private_key_pem")
        loaded = load_pem_private_key(private_key_pem.encode("ascii"), password=None)
        if algorithm == "ES256" and isinstance(loaded, ec.EllipticCurvePrivateKey):
            if not isinstance(loaded.curve, ec.SECP256R1):
                raise ValueError("ES256 needs a P-256 private key")
            signing_key = loaded
        elif algorithm == "EdDSA" and isinstance(loaded, ed25519.Ed25519PrivateKey):
            signing_key = loaded
        else:
            raise ValueError(f"private_key_pem does not fit {algorithm} (P-256 for ES256, Ed25519 for EdDSA)")

    issued = math.floor(now)
    claims_grants = dict(grants) if grants is not None else default_grants(identity)
    claims_grants["identity"] = identity
    payload: dict[str, Any] = {
        "jti": f"{key_sid}-{issued}",
        "grants": claims_grants,
        "iss": key_sid,
        "exp": _numeric_date(issued + ttl),
        "nbf": _numeric_date(issued if nbf is None else nbf),
        "sub": account_sid,
    }
    return jwt.encode(payload, signing_key, algorithm=algorithm, headers={"typ": "JWT", "cty": CONTENT_TYPE})
