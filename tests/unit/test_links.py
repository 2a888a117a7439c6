"""protocol/links.py: finding and shortening URLs, media as links."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.links import find_urls, is_code, media_as_links, new_code, shorten

BASE = "https://s.example/"


def urls_in(text: str) -> list[str]:
    return [text[a:b] for a, b in find_urls(text)]


def counter() -> Callable[[], str]:
    numbers = itertools.count(1)
    return lambda: f"c{next(numbers):06d}"


@pytest.mark.parametrize(
    ("text", "urls"),
    [
        ("no links here", []),
        ("see https://a.example/x.", ["https://a.example/x"]),
        ("see https://a.example/x?y=1&z=2, ok", ["https://a.example/x?y=1&z=2"]),
        ("(see https://a.example/x)", ["https://a.example/x"]),
        ("https://en.wikipedia.org/wiki/Mercury_(planet)", ["https://en.wikipedia.org/wiki/Mercury_(planet)"]),
        ("(https://en.wikipedia.org/wiki/Mercury_(planet))", ["https://en.wikipedia.org/wiki/Mercury_(planet)"]),
        ("[http://a.example/x]", ["http://a.example/x"]),
        ("'http://a.example/it's'", ["http://a.example/it's"]),
        ('<a href="http://a.example/">x</a>', ["http://a.example/"]),
        ("two: http://a.example http://b.example!", ["http://a.example", "http://b.example"]),
        ("HTTPS://A.EXAMPLE/X", ["HTTPS://A.EXAMPLE/X"]),
        ("ftp://a.example/ and http:// and http://. and xhttp://a.example", []),
        ("https://a.example/?next=http://b.example/", ["https://a.example/?next=http://b.example/"]),
        ("line1\nhttps://a.example/é\tafter", ["https://a.example/é"]),
    ],
)
def test_find_urls(text: str, urls: list[str]) -> None:
    assert urls_in(text) == urls


def test_shorten_replaces_repeats_with_one_code_and_skips_our_own_links() -> None:
    text = "a https://x.example/1 b https://x.example/2 c https://x.example/1. d https://s.example/l/old"
    short, mapping = shorten(text, BASE, counter())
    assert short == (
        "a https://s.example/l/c000001 b https://s.example/l/c000002 c https://s.example/l/c000001. "
        "d https://s.example/l/old"
    )
    assert mapping == [("c000001", "https://x.example/1"), ("c000002", "https://x.example/2")]


def test_shorten_without_urls_draws_no_code() -> None:
    def never() -> str:
        raise AssertionError("no code needed")

    assert shorten("hello there.", BASE, never) == ("hello there.", [])


def test_shorten_redraws_a_code_already_used_in_the_text() -> None:
    codes = iter(["dup123", "dup123", "new456"])
    short, mapping = shorten("http://a.example http://b.example", BASE, lambda: next(codes))
    assert [code for code, _ in mapping] == ["dup123", "new456"]
    with pytest.raises(ValueError):
        shorten("http://a.example http://b.example", BASE, lambda: "same00")


def test_new_code() -> None:
    codes = {new_code() for _ in range(200)}
    assert len(codes) == 200
    assert all(len(c) == 10 and c.isascii() and c.isalnum() and is_code(c) for c in codes)


@pytest.mark.parametrize(
    ("value", "ok"),
    [("abc123", True), ("A" * 32, True), ("abc12", False), ("A" * 33, False), ("abc-12", False), ("äbc123", False)],
)
def test_is_code(value: str, ok: bool) -> None:
    assert is_code(value) is ok


def test_media_as_links() -> None:
    media = ["https://m.example/1.jpg", "https://m.example/2.png"]
    assert media_as_links("hi", media) == "hi\nhttps://m.example/1.jpg\nhttps://m.example/2.png"
    assert media_as_links("", media) == "https://m.example/1.jpg\nhttps://m.example/2.png"
    assert media_as_links("hi", []) == "hi"


# -- properties ------------------------------------------------------------------

words = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=12)
urls = st.builds(
    lambda scheme, host, path: f"{scheme}://{host}.example/{path}",
    st.sampled_from(["http", "https"]),
    st.sampled_from(["a", "b", "shop", "en.wiki"]),
    st.text("abcXYZ019-_./?=&%()'!,", max_size=15),
)
punctuation = st.sampled_from(["", " ", ".", ", ", ")", "(", "!", "\n", '"', "'"])
texts = st.lists(st.one_of(words, urls, punctuation), max_size=12).map(" ".join)


@given(texts)
@settings(max_examples=200)
def test_shortening_then_expanding_restores_the_text(text: str) -> None:
    short, mapping = shorten(text, BASE, counter())
    restored = short
    for code, url in mapping:
        restored = restored.replace(f"https://s.example/l/{code}", url)
    assert restored == text
    assert len({url for _, url in mapping}) == len(mapping)
    assert [url for _, url in mapping] == list(dict.fromkeys(urls_in(text)))


@given(st.text(st.characters(exclude_characters="\x00"), max_size=60).filter(lambda t: "://" not in t))
def test_text_without_urls_is_unchanged(text: str) -> None:
    assert find_urls(text) == []
    assert shorten(text, BASE, counter()) == (text, [])


@given(texts)
def test_spans_are_ordered_and_disjoint(text: str) -> None:
    spans = find_urls(text)
    assert all(a < b for a, b in spans)
    assert all(b1 <= a2 for (_, b1), (a2, _) in itertools.pairwise(spans))
    assert all(text[a:b].lower().startswith(("http://", "https://")) for a, b in spans)
