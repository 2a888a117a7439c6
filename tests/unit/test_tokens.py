"""Access-token verification: formats, algorithms, grants, and every rejection."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import time
from types import MappingProxyType
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol.addresses import identity_problem
from protocol.errors import ErrorCode, LocalProtocolError, RemoteProtocolError
from protocol.tokens import (
    MAX_TOKEN_LENGTH,
    AccessToken,
    Grants,
    SigningKey,
    check_renewal,
    default_grants,
    mint_token,
    parse_grants,
    verify_token,
)

SK = "SK" + "0123456789abcdef" * 2
SK_OTHER = "SK" + "fedcba9876543210" * 2
SK_PUBLIC = "SK" + "aa" * 16
SK_ED = "SK" + "bb" * 16
AC = "AC" + "0123456789abcdef" * 2
AC_OTHER = "AC" + "ffffffffffffffff" * 2
AP = "AP" + "12" * 16
CR = "CR" + "34" * 16
SECRET = "s3cr3t-0123456789-abcdefghijklmnop"  # >= 32 bytes: no PyJWT key-length warning
NOW = 1_700_000_000.0


def _pem_private(key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def _pem_public(key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


EC_PRIVATE = ec.generate_private_key(ec.SECP256R1())
ED_PRIVATE = ed25519.Ed25519PrivateKey.generate()
EC_PRIVATE_PEM, EC_PUBLIC_PEM = _pem_private(EC_PRIVATE), _pem_public(EC_PRIVATE)
ED_PRIVATE_PEM, ED_PUBLIC_PEM = _pem_private(ED_PRIVATE), _pem_public(ED_PRIVATE)

KEYS = {
    SK: SigningKey(sid=SK, account_sid=AC, secret=SECRET),
    SK_PUBLIC: SigningKey(sid=SK_PUBLIC, account_sid=AC, public_key_pem=EC_PUBLIC_PEM),
    SK_ED: SigningKey(sid=SK_ED, account_sid=AC, public_key_pem=ED_PUBLIC_PEM),
    SK_OTHER: SigningKey(sid=SK_OTHER, account_sid=AC_OTHER, secret=SECRET),
}


def lookup(sid: str) -> SigningKey | None:
    return KEYS.get(sid)


def b64(data: Any) -> str:
    """base64url without padding; str/bytes taken as they are, anything else JSON-encoded first."""
    if not isinstance(data, (str, bytes)):
        data = json.dumps(data, default=dict)
    if isinstance(data, str):
        data = data.encode()
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def craft(header: Any, payload: Any, *, secret: str | bytes = SECRET, signature: bytes | None = None) -> str:
    """Hand-built HS256 token: no library in the way, so anything can be put in it."""
    signing_input = b64(header) + "." + b64(payload)
    if signature is None:
        key = secret.encode() if isinstance(secret, str) else secret
        signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + b64(signature)


HEADER = {"typ": "JWT", "alg": "HS256", "cty": "twilio-fpa;v=1"}
_DROP = object()


def claims(**overrides: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "jti": f"{SK}-{int(NOW)}",
        "iss": SK,
        "sub": AC,
        "nbf": int(NOW),
        "exp": int(NOW) + 3600,
        "grants": default_grants("alice"),
    }
    for name, value in overrides.items():
        if value is _DROP:
            payload.pop(name, None)
        else:
            payload[name] = value
    return payload


def reject(token: str, code: ErrorCode, *, now: float = NOW, **kwargs: Any) -> RemoteProtocolError:
    with pytest.raises(RemoteProtocolError) as info:
        verify_token(token, lookup, now, **kwargs)
    assert info.value.error is code, info.value
    assert info.value.detail
    return info.value


# -- accepted tokens --------------------------------------------------------------


def test_hs256_round_trip() -> None:
    token = mint_token(key_sid=SK, account_sid=AC, identity="alice", secret=SECRET, now=NOW)
    verified = verify_token(token, lookup, NOW)
    assert verified == AccessToken(
        jti=f"{SK}-{int(NOW)}",
        key_sid=SK,
        account_sid=AC,
        identity="alice",
        not_before=NOW,
        expires=NOW + 3600,
        algorithm="HS256",
        grants=verified.grants,
    )
    assert verified.grants.can_register_presence()
    assert verified.grants.can_subscribe("anyone")
    assert verified.grants.voice_incoming


def test_mint_produces_the_helper_library_shape() -> None:
    token = mint_token(key_sid=SK, account_sid=AC, identity="alice", secret=SECRET, now=NOW + 0.7, ttl=600)
    assert jwt.get_unverified_header(token) == HEADER
    payload = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    assert payload == {
        "jti": f"{SK}-{int(NOW)}",
        "iss": SK,
        "sub": AC,
        "nbf": int(NOW),
        "exp": int(NOW) + 600,
        "grants": default_grants("alice"),
    }


@pytest.mark.parametrize(
    ("algorithm", "key_sid", "private_pem"),
    [("ES256", SK_PUBLIC, EC_PRIVATE_PEM), ("EdDSA", SK_ED, ED_PRIVATE_PEM)],
)
def test_public_key_round_trip(algorithm: str, key_sid: str, private_pem: str) -> None:
    token = mint_token(
        key_sid=key_sid, account_sid=AC, identity="bob", private_key_pem=private_pem, algorithm=algorithm, now=NOW
    )
    verified = verify_token(token, lookup, NOW)
    assert (verified.algorithm, verified.key_sid, verified.identity) == (algorithm, key_sid, "bob")


def test_key_with_secret_and_public_key_accepts_both() -> None:
    both = SigningKey(sid=SK, account_sid=AC, secret=SECRET, public_key_pem=ED_PUBLIC_PEM)
    hs = mint_token(key_sid=SK, account_sid=AC, identity="a", secret=SECRET, now=NOW)
    ed = mint_token(key_sid=SK, account_sid=AC, identity="a", private_key_pem=ED_PRIVATE_PEM, algorithm="EdDSA", now=NOW)
    assert verify_token(hs, lambda sid: both, NOW).algorithm == "HS256"
    assert verify_token(ed, lambda sid: both, NOW).algorithm == "EdDSA"


def test_token_minted_by_the_twilio_library() -> None:
    from twilio.jwt.access_token import AccessToken as TwilioAccessToken
    from twilio.jwt.access_token.grants import VoiceGrant

    twilio = TwilioAccessToken(AC, SK, SECRET, identity="alice")
    twilio.add_grant(VoiceGrant(incoming_allow=True, outgoing_application_sid=AP, push_credential_sid=CR))
    now = time.time()
    verified = verify_token(twilio.to_jwt(), lookup, now)
    assert (verified.identity, verified.key_sid, verified.account_sid) == ("alice", SK, AC)
    assert verified.jti.startswith(SK + "-")
    assert verified.grants.can_register_presence()
    assert verified.grants.voice_incoming
    assert verified.grants.voice_outgoing_application_sid == AP
    assert verified.grants.voice_push_credential_sid == CR
    assert not verified.grants.can_subscribe("bob")
    assert not verified.grants.presence_publish


def test_twilio_token_without_nbf_measures_from_now() -> None:
    from twilio.jwt.access_token import AccessToken as TwilioAccessToken
    from twilio.jwt.access_token.grants import VoiceGrant

    now = time.time()
    twilio = TwilioAccessToken(AC, SK, SECRET, identity="alice", nbf=None, grants=[VoiceGrant(incoming_allow=True)])
    verified = verify_token(twilio.to_jwt(), lookup, now)
    assert verified.not_before == now
    too_long = TwilioAccessToken(AC, SK, SECRET, identity="alice", nbf=None, ttl=86400 + 120)
    reject(too_long.to_jwt(), ErrorCode.TOKEN_TTL_TOO_LONG, now=now)


def test_twilio_token_of_exactly_24_hours_is_accepted_and_one_second_more_is_not() -> None:
    from twilio.jwt.access_token import AccessToken as TwilioAccessToken

    now = time.time()
    day = TwilioAccessToken(AC, SK, SECRET, identity="alice", ttl=86400).to_jwt()
    assert verify_token(day, lookup, now).expires - verify_token(day, lookup, now).not_before == 86400
    longer = TwilioAccessToken(AC, SK, SECRET, identity="alice", ttl=86401).to_jwt()
    reject(longer, ErrorCode.TOKEN_TTL_TOO_LONG, now=now)


def test_extra_header_fields_are_ignored() -> None:
    # twr is the helper library's region header; kid/jku never pick the key.
    token = craft({**HEADER, "twr": "us1", "kid": "whatever", "jku": "https://evil.example/keys"}, claims())
    assert verify_token(token, lookup, NOW).identity == "alice"


def test_typ_and_cty_are_optional() -> None:
    assert verify_token(craft({"alg": "HS256"}, claims()), lookup, NOW).identity == "alice"


def test_iat_stands_in_for_missing_nbf() -> None:
    token = craft(HEADER, claims(nbf=_DROP, iat=int(NOW) - 10))
    assert verify_token(token, lookup, NOW).not_before == NOW - 10


# -- rejections: structure ---------------------------------------------------------


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        "abc",
        "a.b",
        "a.b.c.d",
        "...",
        "!!!.!!!.!!!",
        "eyJ.eyJ.sig",
        b64("not json") + "." + b64(claims()) + ".c2ln",
        b64([1, 2]) + "." + b64(claims()) + ".c2ln",
        b64(HEADER) + "." + b64("not json") + ".c2ln",
        b64(HEADER) + "." + b64([1, 2]) + ".c2ln",
        b64(HEADER) + "." + b64('"a string"') + ".c2ln",
        b64(HEADER) + "." + b64("{}") + ".!!",
        "é.é.é",
        "Bearer " + craft(HEADER, claims()),
    ],
)
def test_garbage_is_malformed(garbage: str) -> None:
    reject(garbage, ErrorCode.TOKEN_MALFORMED)


def test_non_string_token_is_malformed() -> None:
    reject(b"a.b.c", ErrorCode.TOKEN_MALFORMED)  # type: ignore[arg-type]


def test_oversize_token_is_refused_before_parsing() -> None:
    token = craft(HEADER, claims(padding="x" * MAX_TOKEN_LENGTH))
    error = reject(token, ErrorCode.TOKEN_MALFORMED)
    assert str(MAX_TOKEN_LENGTH) in (error.detail or "")


def test_payload_with_nan_is_malformed() -> None:
    payload = json.dumps(claims()).replace(f'"exp": {int(NOW) + 3600}', '"exp": NaN')
    assert "NaN" in payload
    reject(craft(HEADER, payload), ErrorCode.TOKEN_MALFORMED)


# -- rejections: header and algorithm ------------------------------------------------


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
def test_alg_none_is_refused(alg: str) -> None:
    token = b64({"alg": alg, "typ": "JWT"}) + "." + b64(claims()) + "."
    error = reject(token, ErrorCode.TOKEN_ALGORITHM_REFUSED)
    assert "none" in (error.detail or "")


@pytest.mark.parametrize("alg", ["HS512", "RS256", "PS256", "ES384", "hs256", ""])
def test_other_algorithms_are_refused(alg: str) -> None:
    reject(craft({**HEADER, "alg": alg}, claims()), ErrorCode.TOKEN_ALGORITHM_REFUSED)


@pytest.mark.parametrize("header", [{"typ": "JWT"}, {"alg": 256}, {"alg": None}])
def test_missing_or_non_string_alg_is_a_header_error(header: dict[str, Any]) -> None:
    reject(craft(header, claims()), ErrorCode.TOKEN_HEADER_INVALID)


def test_rs256_token_is_refused() -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = jwt.encode(claims(), rsa_key, algorithm="RS256")
    reject(token, ErrorCode.TOKEN_ALGORITHM_REFUSED)


def test_algorithm_confusion_public_key_as_hmac_secret() -> None:
    # The classic attack: sign HS256 with the (public!) PEM as the HMAC secret
    # and hope the server feeds its stored PEM to HMAC.
    token = craft(HEADER, claims(iss=SK_PUBLIC), secret=EC_PUBLIC_PEM)
    error = reject(token, ErrorCode.TOKEN_ALGORITHM_REFUSED)
    assert "HS256" in (error.detail or "") and SK_PUBLIC in (error.detail or "")


def test_algorithm_confusion_public_algorithm_against_secret_only_key() -> None:
    token = jwt.encode(claims(iss=SK), EC_PRIVATE, algorithm="ES256", headers={"cty": "twilio-fpa;v=1"})
    error = reject(token, ErrorCode.TOKEN_ALGORITHM_REFUSED)
    assert "ES256" in (error.detail or "")


def test_es256_token_against_ed25519_key_is_refused() -> None:
    token = jwt.encode(claims(iss=SK_ED), EC_PRIVATE, algorithm="ES256")
    reject(token, ErrorCode.TOKEN_ALGORITHM_REFUSED)


def test_eddsa_token_against_p256_key_is_refused() -> None:
    token = jwt.encode(claims(iss=SK_PUBLIC), ED_PRIVATE, algorithm="EdDSA")
    reject(token, ErrorCode.TOKEN_ALGORITHM_REFUSED)


def test_key_without_any_material_refuses_everything() -> None:
    bare = SigningKey(sid=SK, account_sid=AC)
    with pytest.raises(RemoteProtocolError) as info:
        verify_token(craft(HEADER, claims()), lambda sid: bare, NOW)
    assert info.value.error is ErrorCode.TOKEN_ALGORITHM_REFUSED


def test_typ_wrong() -> None:
    error = reject(craft({**HEADER, "typ": "JWS"}, claims()), ErrorCode.TOKEN_HEADER_INVALID)
    assert "typ" in (error.detail or "")


def test_cty_wrong() -> None:
    error = reject(craft({**HEADER, "cty": "twilio-fpa;v=2"}, claims()), ErrorCode.TOKEN_HEADER_INVALID)
    assert "cty" in (error.detail or "")


@pytest.mark.parametrize(
    "extra",
    [{"crit": ["exp"], "exp": 1}, {"b64": True}, {"b64": False, "crit": ["b64"]}, {"kid": 7}],
)
def test_unsupported_header_parameters(extra: dict[str, Any]) -> None:
    code = ErrorCode.TOKEN_MALFORMED if extra.get("b64") is False else ErrorCode.TOKEN_HEADER_INVALID
    reject(craft({**HEADER, **extra}, claims()), code)


# -- rejections: issuer, key, signature ---------------------------------------------


def test_wrong_secret() -> None:
    token = craft(HEADER, claims(), secret="another-secret-that-is-long-enough!!")
    error = reject(token, ErrorCode.TOKEN_SIGNATURE_INVALID)
    assert SK in (error.detail or "")


def test_tampered_payload_breaks_the_signature() -> None:
    header, _, signature = craft(HEADER, claims()).split(".")
    forged = header + "." + b64(claims(grants=default_grants("mallory"))) + "." + signature
    reject(forged, ErrorCode.TOKEN_SIGNATURE_INVALID)


def test_stripped_signature() -> None:
    header, payload, _ = craft(HEADER, claims()).split(".")
    reject(header + "." + payload + ".", ErrorCode.TOKEN_SIGNATURE_INVALID)


def test_public_key_signature_by_another_key() -> None:
    stranger = ec.generate_private_key(ec.SECP256R1())
    token = jwt.encode(claims(iss=SK_PUBLIC), stranger, algorithm="ES256")
    reject(token, ErrorCode.TOKEN_SIGNATURE_INVALID)


def test_revoked_key() -> None:
    revoked = dataclasses.replace(KEYS[SK], revoked=True)
    with pytest.raises(RemoteProtocolError) as info:
        verify_token(craft(HEADER, claims()), lambda sid: revoked, NOW)
    assert info.value.error is ErrorCode.TOKEN_KEY_REVOKED
    assert SK in (info.value.detail or "")


def test_unknown_key() -> None:
    unknown = "SK" + "99" * 16
    error = reject(craft(HEADER, claims(iss=unknown)), ErrorCode.TOKEN_KEY_UNKNOWN)
    assert unknown in (error.detail or "")


def test_key_of_another_account() -> None:
    # Validly signed by SK_OTHER (account AC_OTHER) but claiming account AC.
    error = reject(craft(HEADER, claims(iss=SK_OTHER, sub=AC)), ErrorCode.TOKEN_KEY_ACCOUNT_MISMATCH)
    assert AC_OTHER not in (error.detail or "")  # the key's real account is not disclosed


@pytest.mark.parametrize(
    ("claim", "value"),
    [
        ("iss", AC),
        ("iss", "SK123"),
        ("iss", 42),
        ("iss", SK.upper()),
        ("iss", SK + "\n"),  # a final newline must not slip through the SID pattern
        ("sub", SK),
        ("sub", "AC"),
        ("sub", ["x"]),
        ("sub", AC + "\n"),
    ],
)
def test_issuer_or_subject_not_a_sid(claim: str, value: Any) -> None:
    error = reject(craft(HEADER, claims(**{claim: value})), ErrorCode.TOKEN_ISSUER_INVALID)
    assert claim in (error.detail or "")


@pytest.mark.parametrize("claim", ["iss", "sub", "exp", "jti"])
def test_missing_claim(claim: str) -> None:
    error = reject(craft(HEADER, claims(**{claim: _DROP})), ErrorCode.TOKEN_CLAIM_MISSING)
    assert repr(claim) in (error.detail or "")


@pytest.mark.parametrize("claim", ["iss", "exp"])
def test_null_claim_counts_as_missing(claim: str) -> None:
    reject(craft(HEADER, claims(**{claim: None})), ErrorCode.TOKEN_CLAIM_MISSING)


def test_empty_jti() -> None:
    reject(craft(HEADER, claims(jti="")), ErrorCode.TOKEN_CLAIM_MISSING)


@pytest.mark.parametrize(
    ("claim", "value"),
    [("exp", "tomorrow"), ("exp", True), ("exp", [1]), ("nbf", "now"), ("iat", {}), ("exp", 10**400), ("jti", 5)],
)
def test_claim_of_the_wrong_type(claim: str, value: Any) -> None:
    error = reject(craft(HEADER, claims(**{claim: value})), ErrorCode.TOKEN_MALFORMED)
    assert claim in (error.detail or "")


# -- rejections: time ----------------------------------------------------------------


def test_expired() -> None:
    token = craft(HEADER, claims(nbf=int(NOW) - 3600, exp=int(NOW) - 31))
    error = reject(token, ErrorCode.TOKEN_EXPIRED)
    assert "expired" in (error.detail or "")


def test_expired_within_leeway_is_accepted() -> None:
    token = craft(HEADER, claims(nbf=int(NOW) - 3600, exp=int(NOW) - 29))
    assert verify_token(token, lookup, NOW).expires == NOW - 29
    reject(token, ErrorCode.TOKEN_EXPIRED, leeway=0)


def test_exp_exactly_at_the_leeway_edge_is_expired() -> None:
    reject(craft(HEADER, claims(nbf=int(NOW) - 3600, exp=int(NOW) - 30)), ErrorCode.TOKEN_EXPIRED)


def test_not_yet_valid_beyond_leeway() -> None:
    token = craft(HEADER, claims(nbf=int(NOW) + 31))
    error = reject(token, ErrorCode.TOKEN_NOT_YET_VALID)
    assert "nbf" in (error.detail or "")


def test_not_yet_valid_within_leeway_is_accepted() -> None:
    token = craft(HEADER, claims(nbf=int(NOW) + 29))
    assert verify_token(token, lookup, NOW).not_before == NOW + 29


def test_future_iat_without_nbf_is_not_yet_valid() -> None:
    error = reject(craft(HEADER, claims(nbf=_DROP, iat=int(NOW) + 600)), ErrorCode.TOKEN_NOT_YET_VALID)
    assert "iat" in (error.detail or "")


def test_exp_not_after_nbf_is_never_valid() -> None:
    token = craft(HEADER, claims(nbf=int(NOW) + 20, exp=int(NOW) + 10))
    reject(token, ErrorCode.TOKEN_EXPIRED)


def test_ttl_over_24_hours() -> None:
    error = reject(craft(HEADER, claims(exp=int(NOW) + 86401)), ErrorCode.TOKEN_TTL_TOO_LONG)
    assert "86401" in (error.detail or "")


def test_ttl_of_exactly_24_hours_is_accepted() -> None:
    assert verify_token(craft(HEADER, claims(exp=int(NOW) + 86400)), lookup, NOW)


def test_ttl_without_nbf_or_iat_is_measured_from_now() -> None:
    reject(craft(HEADER, claims(nbf=_DROP, exp=int(NOW) + 90000)), ErrorCode.TOKEN_TTL_TOO_LONG)
    verified = verify_token(craft(HEADER, claims(nbf=_DROP, exp=int(NOW) + 3600)), lookup, NOW)
    assert verified.not_before == NOW


def test_ttl_measured_from_an_old_nbf() -> None:
    # A long-lived token cannot dodge the rule by having started long ago.
    reject(craft(HEADER, claims(nbf=int(NOW) - 86400, exp=int(NOW) + 60)), ErrorCode.TOKEN_TTL_TOO_LONG)


def test_max_ttl_is_configurable() -> None:
    reject(craft(HEADER, claims()), ErrorCode.TOKEN_TTL_TOO_LONG, max_ttl=600)


# -- rejections: grants and identity ------------------------------------------------


@pytest.mark.parametrize(
    ("identity", "reason"),
    [
        ("", "empty"),
        ("x" * 122, "longer than"),
        ("client:bob", "client:"),
        ("bob smith", "letters, digits"),
        ("-bob", "start with"),
        ("alice\n", "may hold only"),
        (42, "string"),
    ],
)
def test_bad_identity(identity: Any, reason: str) -> None:
    grants = {**default_grants("x"), "identity": identity}
    error = reject(craft(HEADER, claims(grants=grants)), ErrorCode.TOKEN_IDENTITY_INVALID)
    assert reason in (error.detail or "")


def test_missing_identity() -> None:
    grants = {"voice": {"incoming": {"allow": True}}}
    error = reject(craft(HEADER, claims(grants=grants)), ErrorCode.TOKEN_IDENTITY_INVALID)
    assert "missing" in (error.detail or "")


def test_longest_identity_is_accepted() -> None:
    assert verify_token(craft(HEADER, claims(grants=default_grants("x" * 121))), lookup, NOW).identity == "x" * 121


@pytest.mark.parametrize("grants", ["alice", ["identity", "alice"], 1, True, _DROP, None])
def test_grants_not_an_object(grants: Any) -> None:
    error = reject(craft(HEADER, claims(grants=grants)), ErrorCode.TOKEN_GRANTS_INVALID)
    assert "grants" in (error.detail or "")


@pytest.mark.parametrize(
    ("grant", "path"),
    [
        ({"presence": True}, "grants.presence"),
        ({"presence": {"publish": "yes"}}, "grants.presence.publish"),
        ({"presence": {"subscribe": "alice"}}, "grants.presence.subscribe"),
        ({"presence": {"subscribe": [1]}}, "grants.presence.subscribe"),
        ({"presence": {"subscribe": ["bob smith"]}}, "grants.presence.subscribe"),
        ({"presence": {"subscribe": ["**"]}}, "grants.presence.subscribe"),
        ({"voice": "yes"}, "grants.voice"),
        ({"voice": {"incoming": True}}, "grants.voice.incoming"),
        ({"voice": {"incoming": {"allow": "true"}}}, "grants.voice.incoming.allow"),
        ({"voice": {"outgoing": {"application_sid": "my-app"}}}, "application_sid"),
        ({"voice": {"outgoing": {}}}, "application_sid"),
        ({"voice": {"outgoing": {"application_sid": AP + "\n"}}}, "application_sid"),
        ({"voice": {"outgoing": {"application_sid": AP, "params": "a=b"}}}, "params"),
        ({"voice": {"push_credential_sid": 5}}, "push_credential_sid"),
    ],
)
def test_grant_of_the_wrong_shape(grant: dict[str, Any], path: str) -> None:
    error = reject(craft(HEADER, claims(grants={"identity": "alice", **grant})), ErrorCode.TOKEN_GRANTS_INVALID)
    assert path in (error.detail or "")


def test_deeply_nested_grants_are_refused() -> None:
    nested: Any = "leaf"
    for _ in range(40):
        nested = {"n": nested}
    reject(craft(HEADER, claims(grants={"identity": "alice", "video": nested})), ErrorCode.TOKEN_GRANTS_INVALID)


# -- grants and permissions -----------------------------------------------------------


def _grants(**grant: Any) -> Grants:
    return parse_grants({"identity": "alice", **grant})


def test_can_subscribe_with_patterns() -> None:
    grants = _grants(presence={"subscribe": ["bob", "team-*"]})
    assert grants.presence_subscribe == ("bob", "team-*")
    assert grants.can_subscribe("bob")
    assert not grants.can_subscribe("bobby")
    assert grants.can_subscribe("team-red")
    assert grants.can_subscribe("team-")
    assert not grants.can_subscribe("team")
    assert not grants.can_subscribe("carol")


@pytest.mark.parametrize(
    ("subscribe", "expected"),
    [(True, ("*",)), (False, ()), ([], ()), (None, ()), (["*"], ("*",))],
)
def test_subscribe_forms(subscribe: Any, expected: tuple[str, ...]) -> None:
    grants = _grants(presence={"subscribe": subscribe})
    assert grants.presence_subscribe == expected
    assert grants.can_subscribe("zoe") is (expected == ("*",))


def test_subscribe_needs_the_presence_grant() -> None:
    assert not _grants(voice={"incoming": {"allow": True}}).can_subscribe("bob")


@pytest.mark.parametrize(
    ("grant", "allowed"),
    [
        ({"presence": {"publish": True}}, True),
        ({"voice": {"incoming": {"allow": True}}}, True),
        ({"presence": {"publish": False}, "voice": {"incoming": {"allow": True}}}, True),
        ({"presence": {"publish": False}}, False),
        ({"presence": {"subscribe": True}}, False),
        ({"voice": {"incoming": {"allow": False}}}, False),
        ({"voice": {"outgoing": {"application_sid": AP}}}, False),
        ({"video": {"room": "r"}}, False),
        ({}, False),
    ],
)
def test_can_register_presence(grant: dict[str, Any], allowed: bool) -> None:
    assert _grants(**grant).can_register_presence() is allowed


def test_raw_grants_are_read_only_and_keep_unknown_grants() -> None:
    grants = _grants(video={"room": "r1"}, chat={"service_sid": "IS1", "tags": ["a"]})
    assert grants.raw["video"]["room"] == "r1"
    assert grants.raw["chat"]["tags"] == ("a",)
    with pytest.raises(TypeError):
        grants.raw["identity"] = "mallory"  # type: ignore[index]
    with pytest.raises(TypeError):
        grants.raw["video"]["room"] = "r2"
    assert isinstance(grants.raw, MappingProxyType)


def test_tokens_and_grants_are_hashable_values() -> None:
    token = verify_token(craft(HEADER, claims()), lookup, NOW)
    assert {token, verify_token(craft(HEADER, claims()), lookup, NOW)} == {token}
    with pytest.raises(dataclasses.FrozenInstanceError):
        token.identity = "mallory"  # type: ignore[misc]


def test_default_grants() -> None:
    grants = parse_grants(default_grants("carol"))
    assert grants.identity == "carol"
    assert grants.presence_publish and grants.voice_incoming and grants.presence_subscribe == ("*",)


def test_mint_with_custom_grants_sets_identity() -> None:
    token = mint_token(
        key_sid=SK, account_sid=AC, identity="dave", secret=SECRET, now=NOW, grants={"presence": {"publish": True}}
    )
    verified = verify_token(token, lookup, NOW)
    assert verified.identity == "dave"
    assert verified.grants.presence_publish and not verified.grants.voice_incoming


def test_mint_with_future_nbf() -> None:
    token = mint_token(key_sid=SK, account_sid=AC, identity="a", secret=SECRET, now=NOW, nbf=NOW + 600)
    reject(token, ErrorCode.TOKEN_NOT_YET_VALID)
    assert verify_token(token, lookup, NOW + 600).not_before == NOW + 600


# -- renewal ----------------------------------------------------------------------------


def test_renewal_keeps_account_and_identity() -> None:
    current = verify_token(craft(HEADER, claims()), lookup, NOW)
    rotated = dataclasses.replace(current, key_sid=SK_PUBLIC, jti="other")
    check_renewal(current, rotated)
    with pytest.raises(RemoteProtocolError) as info:
        check_renewal(current, dataclasses.replace(current, identity="mallory"))
    assert info.value.error is ErrorCode.TOKEN_IDENTITY_CHANGED
    with pytest.raises(RemoteProtocolError) as info:
        check_renewal(current, dataclasses.replace(current, account_sid=AC_OTHER))
    assert info.value.error is ErrorCode.TOKEN_IDENTITY_CHANGED


# -- local misuse ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"sid": "SK1", "account_sid": AC},
        {"sid": SK, "account_sid": SK},
        {"sid": SK, "account_sid": AC, "secret": ""},
        {"sid": SK, "account_sid": AC, "secret": EC_PUBLIC_PEM},
        {"sid": SK, "account_sid": AC, "public_key_pem": "not a pem"},
        {"sid": SK, "account_sid": AC, "public_key_pem": EC_PRIVATE_PEM},
        {"sid": SK, "account_sid": AC, "public_key_pem": _pem_public(ec.generate_private_key(ec.SECP384R1()))},
        {"sid": SK, "account_sid": AC, "public_key_pem": _pem_public(rsa.generate_private_key(65537, 2048))},
    ],
)
def test_bad_signing_key_records_fail_at_construction(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        SigningKey(**kwargs)


def test_signing_key_repr_hides_the_secret() -> None:
    assert SECRET not in repr(KEYS[SK])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"algorithm": "none", "secret": SECRET},
        {"algorithm": "HS256"},
        {"algorithm": "ES256"},
        {"algorithm": "ES256", "private_key_pem": ED_PRIVATE_PEM},
        {"algorithm": "EdDSA", "private_key_pem": EC_PRIVATE_PEM},
        {"secret": SECRET, "identity": "client:x"},
        {"secret": SECRET, "key_sid": AC},
        {"secret": SECRET, "ttl": 0},
    ],
)
def test_mint_refuses_misuse(kwargs: dict[str, Any]) -> None:
    arguments: dict[str, Any] = {"key_sid": SK, "account_sid": AC, "identity": "alice", "now": NOW, **kwargs}
    with pytest.raises(ValueError):
        mint_token(**arguments)


def test_lookup_returning_the_wrong_key_is_a_local_error() -> None:
    with pytest.raises(LocalProtocolError):
        verify_token(craft(HEADER, claims()), lambda sid: KEYS[SK_OTHER], NOW)


# -- properties -----------------------------------------------------------------------------

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=15,
)
b64_segment = st.one_of(
    st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=", max_size=40),
    st.binary(max_size=40).map(b64),
    json_values.map(lambda v: b64(json.dumps(v))),
)


def _verify_or_refuse(token: str) -> AccessToken | None:
    try:
        return verify_token(token, lookup, NOW)
    except RemoteProtocolError:
        return None


@FAST
@given(st.text(max_size=300))
def test_arbitrary_text_only_raises_remote_protocol_error(text: str) -> None:
    assert _verify_or_refuse(text) is None


@FAST
@given(st.binary(max_size=300))
def test_arbitrary_bytes_as_text_only_raise_remote_protocol_error(data: bytes) -> None:
    assert _verify_or_refuse(data.decode("latin-1")) is None


@FAST
@given(b64_segment, b64_segment, b64_segment)
def test_arbitrary_three_part_tokens_only_raise_remote_protocol_error(a: str, b: str, c: str) -> None:
    _verify_or_refuse(f"{a}.{b}.{c}")


def _assert_valid(token: AccessToken) -> None:
    assert identity_problem(token.identity) is None
    assert token.key_sid == SK and token.account_sid == AC
    assert token.expires > NOW - 30
    assert token.not_before <= NOW + 30
    assert token.expires - token.not_before <= 86400
    assert token.grants.identity == token.identity


grant_values = st.one_of(
    json_values,
    st.sampled_from(["alice", "", "client:x", "team-*", "*", AP, True, False]),
    st.fixed_dictionaries(
        {},
        optional={
            "publish": st.booleans() | json_values,
            "subscribe": st.booleans() | st.lists(st.sampled_from(["*", "bob", "team-*", "", "a b"])) | json_values,
            "incoming": st.fixed_dictionaries({}, optional={"allow": st.booleans() | json_values}) | json_values,
            "outgoing": st.fixed_dictionaries({}, optional={"application_sid": st.just(AP) | json_values}),
        },
    ),
)
grant_objects = st.dictionaries(
    st.sampled_from(["identity", "presence", "voice", "video", "x"]), grant_values, max_size=4
) | json_values
claim_values = st.one_of(
    json_values,
    st.integers(min_value=int(NOW) - 100_000, max_value=int(NOW) + 100_000),
    st.sampled_from([SK, AC, SK_OTHER, "", None]),
)


@FAST
@given(
    st.dictionaries(
        st.sampled_from(["jti", "iss", "sub", "nbf", "iat", "exp", "grants", "extra"]), claim_values, max_size=4
    ),
    st.lists(st.sampled_from(["jti", "iss", "sub", "nbf", "exp", "grants"]), max_size=2),
    grant_objects,
    st.booleans(),
)
def test_validly_signed_arbitrary_payloads_verify_or_raise_remote_protocol_error(
    overrides: dict[str, Any], dropped: list[str], grants: Any, replace_grants: bool
) -> None:
    payload = claims()
    if replace_grants:
        payload["grants"] = grants
    payload.update(overrides)
    for name in dropped:
        payload.pop(name, None)
    verified = _verify_or_refuse(craft(HEADER, payload))
    if verified is not None:
        _assert_valid(verified)


@FAST
@given(st.dictionaries(st.text(max_size=6), json_values, max_size=6))
def test_validly_signed_arbitrary_objects_verify_or_raise_remote_protocol_error(payload: dict[str, Any]) -> None:
    verified = _verify_or_refuse(craft(HEADER, payload))
    if verified is not None:
        _assert_valid(verified)


header_objects = st.fixed_dictionaries(
    {"alg": st.sampled_from(["HS256", "none", "ES256", "EdDSA", "RS256"]) | json_values},
    optional={
        "typ": st.sampled_from(["JWT", "jwt"]) | json_values,
        "cty": st.sampled_from(["twilio-fpa;v=1", "JWT"]) | json_values,
        "kid": json_values,
        "crit": json_values,
        "b64": st.booleans() | json_values,
        "zip": json_values,
    },
)


@FAST
@given(header_objects | st.dictionaries(st.text(max_size=6), json_values, max_size=4) | json_values)
def test_validly_signed_arbitrary_headers_only_raise_remote_protocol_error(header: Any) -> None:
    verified = _verify_or_refuse(craft(json.dumps(header), claims()))
    if verified is not None:
        _assert_valid(verified)
