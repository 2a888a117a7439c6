"""Webhook signatures: byte-for-byte agreement with the official validator."""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlparse

import pytest
from hypothesis import assume, given, settings
from multidict import MultiDict, MultiDictProxy
from hypothesis import strategies as st
from twilio.request_validator import RequestValidator

from protocol.signing import (
    BODY_HASH_PARAMETER,
    add_body_hash,
    compute_body_hash,
    compute_signature,
    signing_string,
    url_variants,
    validate_signature,
)

# Vectors from the helper library's own test suite (tests/unit/test_request_validator.py).
TOKEN = "12345"
URI = "https://mycompany.com/myapp.php?foo=1&bar=2"
PARAMS = {
    "CallSid": "CA1234567890ABCDE",
    "Digits": "1234",
    "From": "+14158675309",
    "To": "+18005551212",
    "Caller": "+14158675309",
}
EXPECTED = "RSOYDt4T1cUTdK1PDd93/VVr8B8="
BODY = '{"property": "value", "boolean": true}'
BODY_HASH = "0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620"


class _MultiDict(dict[str, list[str]]):
    """The smallest multi-valued form the helper library understands (``getall``)."""

    def getall(self, name: str) -> list[str]:
        return list(self[name])


# -- known vectors ---------------------------------------------------------------


def test_known_vector() -> None:
    assert compute_signature(TOKEN, URI, PARAMS) == EXPECTED
    assert validate_signature(TOKEN, URI, PARAMS, EXPECTED)


def test_security_docs_vector() -> None:
    # The example on the helper libraries' "validate requests" page.
    params = {
        "CallSid": "CA1234567890ABCDE",
        "Caller": "+12349013030",
        "Digits": "1234",
        "From": "+12349013030",
        "To": "+18005551212",
    }
    assert compute_signature(TOKEN, URI, params) == "0/KCTR6DLpKmkAf8muzZqo1nDgQ="


def test_repeated_parameter_values_are_sorted() -> None:
    params = {"Sid": "CA123", "SidAccount": "AC123", "Digits": ["5678", "1234"]}
    assert compute_signature(TOKEN, URI, params) == "IK+Dwps556ElfBT0I3Rgjkr1wJU="


def test_multidict_forms_sign_every_value() -> None:
    # What aiohttp's request.post() returns: params["Digits"] is only the first value.
    form = MultiDict([("Sid", "CA123"), ("SidAccount", "AC123"), ("Digits", "5678"), ("Digits", "1234")])
    assert compute_signature(TOKEN, URI, form) == "IK+Dwps556ElfBT0I3Rgjkr1wJU="
    assert validate_signature(TOKEN, URI, MultiDictProxy(form), "IK+Dwps556ElfBT0I3Rgjkr1wJU=")


def test_repeated_identical_values_count_once_like_the_library() -> None:
    assert compute_signature(TOKEN, URI, {"To": ["a", "a"]}) == compute_signature(TOKEN, URI, {"To": "a"})


def test_signing_string_layout() -> None:
    assert signing_string("https://x/y", {"b": "2", "a": ["z", "1"]}) == "https://x/ya1azb2"
    assert signing_string("https://x/y", None) == "https://x/y"
    assert signing_string("https://x/y", {}) == "https://x/y"


def test_string_value_is_one_value_not_characters() -> None:
    assert signing_string("u", {"a": "xyz"}) == "uaxyz"


@pytest.mark.parametrize(
    ("uri", "signature"),
    [
        (URI.replace(".com", ".com:1234"), EXPECTED),  # port removed (https)
        (URI.replace(".com", ".com:1234").replace("https", "http"), "Zmvh+3yNM1Phv2jhDCwEM3q5ebU="),
        (URI, "kvajT1Ptam85bY51eRf/AJRuM3w="),  # :443 added
        (URI.replace("https", "http"), "0ZXoZLH/DfblKGATFgpif+LLRf4="),  # :80 added
    ],
)
def test_port_variants_from_library_suite(uri: str, signature: str) -> None:
    assert validate_signature(TOKEN, uri, PARAMS, signature)
    assert RequestValidator(TOKEN).validate(uri, PARAMS, signature)


def test_url_variants() -> None:
    assert url_variants("https://h.example/p?q=1") == (
        "https://h.example/p?q=1",
        "https://h.example:443/p?q=1",
    )
    assert url_variants("http://h.example:8080/p") == ("http://h.example:8080/p", "http://h.example/p")
    # Unlike the library, user info and IPv6 literals survive port removal.
    assert "https://u:pw@h.example/p" in url_variants("https://u:pw@h.example:8443/p")
    assert "http://[::1]/p" in url_variants("http://[::1]:8080/p")
    # An unparseable port: only the URL as given.
    assert url_variants("http://h.example:99999/p") == ("http://h.example:99999/p",)


def test_url_as_given_is_accepted_even_when_geturl_normalises_it() -> None:
    url = "https://h.example/p?"  # urlparse(...).geturl() drops the empty query
    signature = compute_signature(TOKEN, url, PARAMS)
    assert validate_signature(TOKEN, url, PARAMS, signature)


# -- JSON bodies -----------------------------------------------------------------------


def test_body_hash_vector() -> None:
    assert compute_body_hash(BODY) == BODY_HASH
    assert compute_body_hash(BODY.encode()) == BODY_HASH


def test_body_signature_vector() -> None:
    uri = URI + "&bodySHA256=" + BODY_HASH
    assert validate_signature(TOKEN, uri, BODY, "a9nBmqA0ju/hNViExpshrM61xv4=")
    assert validate_signature(TOKEN, uri, BODY.encode(), "a9nBmqA0ju/hNViExpshrM61xv4=")


def test_add_body_hash_then_sign_is_accepted_by_library() -> None:
    body = b'{"CallSid": "CA1", "text": "h\xc3\xa9"}'
    url = add_body_hash("https://h.example/hook?x=1", body)
    assert url == f"https://h.example/hook?x=1&{BODY_HASH_PARAMETER}={compute_body_hash(body)}"
    assert add_body_hash("https://h.example/hook", body).endswith(f"/hook?{BODY_HASH_PARAMETER}={compute_body_hash(body)}")
    signature = compute_signature(TOKEN, url, None)
    assert validate_signature(TOKEN, url, body, signature)
    assert RequestValidator(TOKEN).validate(url, body.decode(), signature)


def test_tampered_body_fails() -> None:
    url = add_body_hash("https://h.example/hook", b"{}")
    signature = compute_signature(TOKEN, url, None)
    assert not validate_signature(TOKEN, url, b'{"a": 1}', signature)


def test_body_without_hash_parameter_fails() -> None:
    signature = compute_signature(TOKEN, "https://h.example/hook", None)
    assert not validate_signature(TOKEN, "https://h.example/hook", b"{}", signature)


# -- refusals ------------------------------------------------------------------------


def test_tampering_fails() -> None:
    assert not validate_signature(TOKEN, URI, {**PARAMS, "Digits": "1235"}, EXPECTED)
    assert not validate_signature(TOKEN, URI, {**PARAMS, "Extra": ""}, EXPECTED)
    assert not validate_signature(TOKEN, URI.replace("foo=1", "foo=2"), PARAMS, EXPECTED)
    assert not validate_signature("54321", URI, PARAMS, EXPECTED)
    assert not validate_signature(TOKEN, URI, PARAMS, EXPECTED[:-2])
    assert not validate_signature(TOKEN, URI, PARAMS, "")


def test_non_ascii_signature_header_is_false_not_an_error() -> None:
    assert not validate_signature(TOKEN, URI, PARAMS, "é" * 28)


# -- property tests against the helper library -----------------------------------------

_name = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=12)
_value = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=20)
_form = st.dictionaries(_name, st.lists(_value, min_size=1, max_size=3), max_size=6)
_token = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=40)
_host = st.from_regex(r"[a-z][a-z0-9\-]{0,10}(\.[a-z]{2,6}){1,2}", fullmatch=True)
_path = st.from_regex(r"(/[A-Za-z0-9._~\-]{0,8}){0,3}", fullmatch=True)
_query = st.from_regex(r"([A-Za-z0-9]{1,5}=[A-Za-z0-9%]{0,6}(&[A-Za-z0-9]{1,5}=[A-Za-z0-9%]{0,6}){0,3})?", fullmatch=True)


@st.composite
def _urls(draw: st.DrawFn) -> str:
    scheme = draw(st.sampled_from(["http", "https"]))
    port = draw(st.none() | st.integers(min_value=1, max_value=65535))
    netloc = draw(_host) + ("" if port is None else f":{port}")
    query = draw(_query)
    url = f"{scheme}://{netloc}{draw(_path) or '/'}" + (f"?{query}" if query else "")
    # The library validates the re-assembled URL; keep to URLs that survive it.
    assume(urlparse(url).geturl() == url)
    return url


def _ours(form: dict[str, list[str]]) -> dict[str, str | Sequence[str]]:
    # Single values as plain strings, repeated ones as lists: both spellings.
    return {name: values[0] if len(values) == 1 else values for name, values in form.items()}


@settings(max_examples=300)
@given(token=_token, url=_urls(), form=_form)
def test_matches_library_and_library_accepts_it(token: str, url: str, form: dict[str, list[str]]) -> None:
    library = RequestValidator(token)
    ours = compute_signature(token, url, _ours(form))
    assert ours == library.compute_signature(url, _MultiDict(form))
    assert library.validate(url, _MultiDict(form), ours)
    assert validate_signature(token, url, _ours(form), ours)


@settings(max_examples=200)
@given(token=_token, url=_urls(), form=_form)
def test_we_accept_what_the_library_accepts_for_every_port_spelling(
    token: str, url: str, form: dict[str, list[str]]
) -> None:
    library = RequestValidator(token)
    for variant in url_variants(url):
        signature = library.compute_signature(variant, _MultiDict(form))
        assert validate_signature(token, url, _ours(form), signature)


@settings(max_examples=200)
@given(token=_token, url=_urls(), form=_form.filter(bool), data=st.data())
def test_tampering_any_parameter_or_the_url_fails(
    token: str, url: str, form: dict[str, list[str]], data: st.DataObject
) -> None:
    signature = compute_signature(token, url, _ours(form))
    name = data.draw(st.sampled_from(sorted(form)))
    changed_value = {**form, name: [v + "x" for v in form[name]]}
    assert not validate_signature(token, url, _ours(changed_value), signature)
    extra_name = name + "\x00"
    assume(extra_name not in form)
    assert not validate_signature(token, url, _ours({**form, extra_name: [""]}), signature)
    removed = {k: v for k, v in form.items() if k != name}
    assert not validate_signature(token, url, _ours(removed), signature)
    assert not validate_signature(token, url + "x", _ours(form), signature)
    assert not validate_signature(token, url.replace("://", "://a", 1), _ours(form), signature)
