"""The fast verification path (HS256 checked with hmac on the raw segments,
the token decoded once) against the reference path (PyJWT for everything):
the same token or the same error code, for every input."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.errors import ErrorCode, RemoteProtocolError
from protocol.tokens import AccessToken, SigningKey, mint_token, verify_token, verify_token_reference
from tests.unit.test_tokens import (
    AC,
    EC_PRIVATE_PEM,
    FAST,
    HEADER,
    KEYS,
    NOW,
    SECRET,
    SK,
    SK_OTHER,
    SK_PUBLIC,
    b64,
    b64_segment,
    claims,
    craft,
    header_objects,
    json_values,
)

SK_SSH = "SK" + "cc" * 16
SK_SECOND = "SK" + "dd" * 16
SECOND_SECRET = "another-secret-0123456789-abcdefgh"
FAST_KEYS = {
    **KEYS,
    # PyJWT refuses an HMAC secret that looks like an SSH public key; so must the fast path.
    SK_SSH: SigningKey(sid=SK_SSH, account_sid=AC, secret="ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC0 user@host"),
    SK_SECOND: SigningKey(sid=SK_SECOND, account_sid=AC, secret=SECOND_SECRET),
}


def lookup(sid: str) -> SigningKey | None:
    return FAST_KEYS.get(sid)


def outcome(verify: Any, token: Any, **kwargs: Any) -> AccessToken | ErrorCode:
    try:
        return verify(token, lookup, NOW, **kwargs)  # type: ignore[no-any-return]
    except RemoteProtocolError as exc:
        assert exc.detail
        return exc.error


def same(token: Any, **kwargs: Any) -> AccessToken | ErrorCode:
    """Both paths' outcome, which must be the same; returned for further checks."""
    fast = outcome(verify_token, token, **kwargs)
    assert fast == outcome(verify_token_reference, token, **kwargs), token
    return fast


def resign(token: str, signature: bytes) -> str:
    return token.rsplit(".", 1)[0] + "." + b64(signature)


def test_a_valid_token_gives_the_same_access_token() -> None:
    token = mint_token(key_sid=SK, account_sid=AC, identity="alice", secret=SECRET, now=NOW)
    verified = same(token)
    assert isinstance(verified, AccessToken) and verified.identity == "alice" and verified.algorithm == "HS256"


def test_public_key_tokens_still_go_through_pyjwt() -> None:
    token = mint_token(key_sid=SK_PUBLIC, account_sid=AC, identity="bob", private_key_pem=EC_PRIVATE_PEM, algorithm="ES256", now=NOW)
    assert isinstance(same(token), AccessToken)
    assert same(resign(token, b"\x00" * 64)) is ErrorCode.TOKEN_SIGNATURE_INVALID


def test_every_flipped_signature_bit_is_refused() -> None:
    token = craft(HEADER, claims())
    signature = base64.urlsafe_b64decode(token.rsplit(".", 1)[1] + "=")
    for bit in range(0, len(signature) * 8, 7):
        flipped = bytearray(signature)
        flipped[bit // 8] ^= 1 << (bit % 8)
        assert same(resign(token, bytes(flipped))) is ErrorCode.TOKEN_SIGNATURE_INVALID


@pytest.mark.parametrize("signature", [b"", b"\x00", b"\x01" * 31, b"\x01" * 33, b"\x00" * 64])
def test_signatures_of_the_wrong_length_are_refused(signature: bytes) -> None:
    assert same(resign(craft(HEADER, claims()), signature)) is ErrorCode.TOKEN_SIGNATURE_INVALID


def test_a_signature_by_another_keys_secret_is_refused() -> None:
    assert same(craft(HEADER, claims(iss=SK_SECOND, jti="x"), secret=SECRET)) is ErrorCode.TOKEN_SIGNATURE_INVALID
    assert isinstance(same(craft(HEADER, claims(iss=SK_SECOND, jti="x"), secret=SECOND_SECRET)), AccessToken)


def test_a_tampered_payload_is_refused() -> None:
    token = craft(HEADER, claims())
    head, _, signature = token.split(".")
    forged = head + "." + b64(claims(grants={"identity": "mallory", "presence": {"publish": True}})) + "." + signature
    assert same(forged) is ErrorCode.TOKEN_SIGNATURE_INVALID


@pytest.mark.parametrize("alg", ["ES256", "EdDSA", "RS256", "HS384", "none", "hs256"])
def test_an_hmac_signed_token_under_another_alg_is_refused(alg: str) -> None:
    assert same(craft({**HEADER, "alg": alg}, claims())) in (ErrorCode.TOKEN_ALGORITHM_REFUSED, ErrorCode.TOKEN_HEADER_INVALID)


def test_hs256_against_a_public_key_only_key_is_refused() -> None:
    # Algorithm confusion: the public key's PEM text must never serve as an HMAC secret.
    pem = FAST_KEYS[SK_PUBLIC].public_key_pem
    assert pem is not None
    assert same(craft(HEADER, claims(iss=SK_PUBLIC), secret=pem)) is ErrorCode.TOKEN_ALGORITHM_REFUSED


def test_an_hmac_secret_that_looks_like_an_ssh_key_is_refused() -> None:
    secret = FAST_KEYS[SK_SSH].secret
    assert secret is not None
    assert same(craft(HEADER, claims(iss=SK_SSH), secret=secret)) is ErrorCode.TOKEN_ALGORITHM_REFUSED


@pytest.mark.parametrize("kid", [SK, SK_OTHER, "", "whatever"])
def test_kid_is_ignored_the_key_comes_from_iss(kid: str) -> None:
    verified = same(craft({**HEADER, "kid": kid}, claims()))
    assert isinstance(verified, AccessToken) and verified.key_sid == SK


@pytest.mark.parametrize("kid", [1, None, True, ["SK"], {"k": 1}])
def test_a_kid_that_is_not_a_string_is_a_header_error(kid: Any) -> None:
    assert same(craft({**HEADER, "kid": kid}, claims())) is ErrorCode.TOKEN_HEADER_INVALID


@pytest.mark.parametrize(
    "extra",
    [{"crit": ["b64"], "b64": False}, {"crit": ["b64"], "b64": True}, {"b64": False}, {"crit": []}, {"crit": "b64"}, {"crit": ["x"]}],
)
def test_crit_and_b64_headers_get_pyjwts_answer(extra: dict[str, Any]) -> None:
    assert same(craft({**HEADER, **extra}, claims())) in (ErrorCode.TOKEN_HEADER_INVALID, ErrorCode.TOKEN_MALFORMED)


def test_padding_and_non_canonical_segments_are_judged_alike() -> None:
    token = craft(HEADER, claims())
    head, payload, signature = token.split(".")
    # 32 signature bytes are 43 base64url characters: one '=' pads them, as some issuers write it.
    assert len(signature) == 43
    assert isinstance(same(f"{head}.{payload}.{signature}="), AccessToken)
    assert same(f"{head}.{payload}.{signature}==") is ErrorCode.TOKEN_MALFORMED
    # The last character of a base64url segment may carry unused bits: only the
    # canonical form (those bits zero) is accepted.
    non_canonical = signature[:-1] + ("B" if signature[-1] == "A" else "A")
    assert same(f"{head}.{payload}.{non_canonical}") in (ErrorCode.TOKEN_MALFORMED, ErrorCode.TOKEN_SIGNATURE_INVALID)
    for junk in ("===", "!", "a+b", "a/b", " ", "a=b"):
        assert same(f"{head}.{payload}.{signature}{junk}") is ErrorCode.TOKEN_MALFORMED


def test_the_signature_covers_the_header_too() -> None:
    token = craft(HEADER, claims())
    _, payload, signature = token.split(".")
    other_header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}))
    assert same(f"{other_header}.{payload}.{signature}") is ErrorCode.TOKEN_SIGNATURE_INVALID


def test_claims_are_judged_alike_with_the_injected_clock() -> None:
    token = craft(HEADER, claims(exp=int(NOW) + 10))
    assert isinstance(same(token), AccessToken)
    assert same(token, leeway=0.0) == outcome(verify_token_reference, token, leeway=0.0)
    assert same(craft(HEADER, claims(exp=int(NOW) - 100))) is ErrorCode.TOKEN_EXPIRED


# -- generated inputs: the two paths never disagree ------------------------------------


@FAST
@given(b64_segment, b64_segment, b64_segment)
def test_arbitrary_three_part_tokens_get_the_same_answer(a: str, b: str, c: str) -> None:
    same(f"{a}.{b}.{c}")


@FAST
@given(st.text(max_size=200))
def test_arbitrary_text_gets_the_same_answer(text: str) -> None:
    same(text)


@FAST
@given(header_objects | st.dictionaries(st.text(max_size=6), json_values, max_size=4) | json_values)
def test_arbitrary_signed_headers_get_the_same_answer(header: Any) -> None:
    same(craft(json.dumps(header), claims()))


@FAST
@given(st.dictionaries(st.sampled_from(["jti", "iss", "sub", "nbf", "iat", "exp", "grants"]), json_values, max_size=4))
def test_arbitrary_signed_claims_get_the_same_answer(overrides: dict[str, Any]) -> None:
    same(craft(HEADER, claims(**overrides)))


@FAST
@given(st.binary(max_size=48), st.sampled_from([SECRET, SECOND_SECRET]), st.sampled_from([SK, SK_SECOND, SK_SSH, SK_PUBLIC]))
def test_arbitrary_signatures_and_keys_get_the_same_answer(signature: bytes, secret: str, iss: str) -> None:
    token = craft(HEADER, claims(iss=iss))
    same(resign(token, signature))
    same(token.rsplit(".", 1)[0] + "." + b64(hmac.new(secret.encode(), token.rsplit(".", 1)[0].encode(), hashlib.sha256).digest()))


def test_the_session_copy_keeps_every_parsed_grant_and_drops_only_the_raw_object() -> None:
    grants = {"identity": "alice", "presence": {"publish": True, "subscribe": ["team-*"]}, "voice": {"incoming": {"allow": True}}, "video": {"room": "x"}}
    verified = same(craft(HEADER, claims(grants=grants)))
    assert isinstance(verified, AccessToken) and verified.grants.raw["video"] == {"room": "x"}
    slim = verified.for_session()
    assert not slim.grants.raw
    assert dataclasses.replace(slim, grants=dataclasses.replace(slim.grants, raw=verified.grants.raw)) == verified
    assert slim.grants.can_subscribe("team-a") and not slim.grants.can_subscribe("bob") and slim.grants.can_register_presence()
    assert slim.for_session() is slim
