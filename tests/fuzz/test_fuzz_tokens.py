"""Access tokens: random headers, claims and segments, signed and unsigned (tests/fuzz/targets.py)."""

from __future__ import annotations

import json
from typing import Any

import jwt
from hypothesis import example, given, settings
from hypothesis import strategies as st

from protocol.tokens import AccessToken, mint_token
from tests.fuzz.targets import (
    ACCOUNT_SID,
    ED_KID,
    ED_PRIVATE_PEM,
    ES_KID,
    ES_PRIVATE_PEM,
    HS_KID,
    HS_SECRET,
    KEYS,
    TOKEN_NOW,
    Refused,
    b64url,
    feed_token,
    hs256_token,
)


def examples(n: int) -> settings:
    """The suite's ``fuzz`` profile (conftest.py) with this test's share of the time budget."""
    return settings(settings.get_profile("fuzz"), max_examples=n)


scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=6)
times = st.none() | st.integers(-(2**70), 2**70) | st.floats() | st.sampled_from([TOKEN_NOW, TOKEN_NOW - 60, TOKEN_NOW + 60, TOKEN_NOW + 3600, TOKEN_NOW + 90000]) | scalars
identities = st.sampled_from(["alice", "bob", "", " ", "a" * 200, "team-*", "*"]) | st.text(max_size=20)

headers = st.fixed_dictionaries(
    {"alg": st.sampled_from(["HS256", "ES256", "EdDSA", "none", "NONE", "RS256", "HS512", ""]) | scalars},
    optional={
        "typ": st.sampled_from(["JWT", "jwt"]) | scalars,
        "cty": st.sampled_from(["twilio-fpa;v=1"]) | scalars,
        "kid": values,
        "crit": values,
        "b64": values,
        "jku": st.text(max_size=20),
    },
)
grants = st.fixed_dictionaries(
    {},
    optional={
        "identity": identities | values,
        "presence": st.fixed_dictionaries({}, optional={"publish": values, "subscribe": st.lists(identities, max_size=4) | values}) | values,
        "voice": st.fixed_dictionaries(
            {},
            optional={
                "incoming": st.fixed_dictionaries({}, optional={"allow": values}) | values,
                "outgoing": st.fixed_dictionaries({}, optional={"application_sid": st.just("AP" + "0" * 32) | values, "params": values}) | values,
                "push_credential_sid": st.just("CR" + "1" * 32) | values,
            },
        ) | values,
        "video": values,
    },
)
claims = st.fixed_dictionaries(
    {},
    optional={
        "iss": st.sampled_from(sorted(KEYS)) | values,
        "sub": st.sampled_from([ACCOUNT_SID, "AC" + "0" * 32]) | values,
        "jti": st.text(max_size=10) | values,
        "exp": times,
        "nbf": times,
        "iat": times,
        "grants": grants | values,
    },
)


DEEP: Any = 1
for _ in range(20):  # grants nested deeper than MAX_GRANTS_DEPTH
    DEEP = [DEEP]


def dumps(value: Any) -> bytes:
    return json.dumps(value).encode()  # NaN and Infinity included, as a sloppy minter writes them


@examples(250)
@given(headers, claims)
@example({"alg": "HS256"}, {"iss": HS_KID, "sub": ACCOUNT_SID, "jti": "j", "exp": 1e400, "grants": {"identity": "a"}})
@example({"alg": "HS256"}, {"iss": HS_KID, "sub": ACCOUNT_SID, "jti": "j", "exp": 10**400, "grants": {"identity": "a"}})
@example({"alg": "HS256"}, {"iss": HS_KID, "sub": ACCOUNT_SID, "jti": "j", "exp": TOKEN_NOW + 60, "grants": {"identity": "a", "x": DEEP}})
def test_hs256_signed_headers_and_claims_are_verified_or_refused_with_a_code(header: dict[str, Any], payload: dict[str, Any]) -> None:
    # Signed with the real secret, so every claim check after the signature is reached.
    feed_token(hs256_token(dumps(header), dumps(payload)))


@examples(60)
@given(st.sampled_from([(ES_KID, "ES256", ES_PRIVATE_PEM), (ED_KID, "EdDSA", ED_PRIVATE_PEM), (ES_KID, "EdDSA", ED_PRIVATE_PEM)]), claims, headers)
def test_public_key_tokens_with_random_claims(key: tuple[str, str, str], payload: dict[str, Any], extra: dict[str, Any]) -> None:
    kid, alg, pem = key
    header = {k: v for k, v in extra.items() if isinstance(k, str) and k not in ("alg", "b64", "crit", "kid")}
    try:
        token = jwt.api_jws.encode(dumps({"iss": kid, **payload}), jwt.algorithms.get_default_algorithms()[alg].prepare_key(pem), alg, headers=header)
    except (TypeError, ValueError):  # PyJWT will not write some of these headers: nothing to send
        return
    feed_token(token)


@examples(300)
@given(
    st.lists(st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=+/.", max_size=40), min_size=0, max_size=5).map(".".join)
    | st.text(max_size=200)
    | st.binary(max_size=200).map(lambda b: b.decode("latin-1"))
)
@example("a" * 9000)
@example("..")
@example("e30.e30.")
@example(b64url(b'{"alg":"HS256","crit":["b64"],"b64":false}') + ".e30.x")
@example(b64url(b'{"alg":"HS256","kid":7}') + ".e30.x")
@example(b64url(b"[" * 5000) + ".e30.x")
def test_raw_token_text_is_refused_with_a_code(token: str) -> None:
    assert isinstance(feed_token(token), Refused)


@examples(100)
@given(st.integers(0, 2), st.binary(max_size=60))
def test_one_segment_of_a_valid_token_replaced(segment: int, replacement: bytes) -> None:
    token = mint_token(key_sid=HS_KID, account_sid=ACCOUNT_SID, identity="alice", secret=HS_SECRET, now=TOKEN_NOW)
    parts = token.split(".")
    parts[segment] = b64url(replacement)
    feed_token(".".join(parts))


@examples(120)
@given(
    st.sampled_from(["HS256", "ES256", "EdDSA"]),
    st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.@+:,\-]{0,30}", fullmatch=True),
    st.floats(1, 86400),
    st.booleans(),
)
def test_minted_tokens_verify_to_what_was_minted(algorithm: str, identity: str, ttl: float, publish: bool) -> None:
    kid, secret, pem = {"HS256": (HS_KID, HS_SECRET, None), "ES256": (ES_KID, None, ES_PRIVATE_PEM), "EdDSA": (ED_KID, None, ED_PRIVATE_PEM)}[algorithm]
    grants = {"identity": identity, "presence": {"publish": publish, "subscribe": ["*"]}}
    token = mint_token(key_sid=kid, account_sid=ACCOUNT_SID, identity=identity, secret=secret, private_key_pem=pem,
                       algorithm=algorithm, ttl=ttl, now=TOKEN_NOW, grants=grants)
    verified = feed_token(token)
    assert isinstance(verified, AccessToken), verified
    assert (verified.identity, verified.account_sid, verified.key_sid, verified.algorithm) == (identity, ACCOUNT_SID, kid, algorithm)
    assert verified.grants.presence_publish is publish and verified.grants.presence_subscribe == ("*",)
    assert verified.expires == int(TOKEN_NOW) + ttl or verified.expires == int(int(TOKEN_NOW) + ttl)
