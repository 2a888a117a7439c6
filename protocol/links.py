"""Links in message text: finding them, shortening them, media as links.

Shortened links (``<base>/l/<code>``) save SMS characters and let the server
count clicks; the code -> URL mapping is stored by the caller. Media that
cannot go as MMS go as links appended to the text.

URL finding is deliberately simple (http and https only, ended by whitespace
or a character never allowed in a URL) with the one rule every linkifier
needs: punctuation that ends a sentence is not part of the URL, except a
closing bracket whose opening one is inside it, as in
``https://en.wikipedia.org/wiki/Mercury_(planet)``.
"""

from __future__ import annotations

import re
import secrets
import string
from collections.abc import Callable, Sequence
from typing import Final

# Letters and digits only: no "-" or "_", which some phones do not include
# when they make a link of the text around them.
CODE_ALPHABET: Final = string.ascii_letters + string.digits
CODE_LENGTH: Final = 10  # 62**10 ~ 2**59: not guessable by enumeration

_CODE = re.compile(r"[A-Za-z0-9]{6,32}")
# Not preceded by a letter or digit, so "xhttp://" is not a link; ended by
# whitespace or a character that is never part of a URL (RFC 3986).
_URL = re.compile(r"(?<![A-Za-z0-9])https?://[^\s<>\"]+", re.IGNORECASE)
_TRAILING: Final = frozenset(".,;:!?'\"")
_CLOSERS: Final = {")": "(", "]": "[", "}": "{"}


def _trim(url: str) -> str:
    while url:
        last = url[-1]
        if last in _TRAILING:
            url = url[:-1]
        elif last in _CLOSERS and url.count(_CLOSERS[last]) < url.count(last):
            url = url[:-1]
        else:
            break
    return url


def find_urls(text: str) -> list[tuple[int, int]]:
    """(start, end) spans of the http(s) URLs in ``text``, in order."""
    spans: list[tuple[int, int]] = []
    for match in _URL.finditer(text):
        url = _trim(match.group())
        rest = url.partition("://")[2]
        if any(ch.isalnum() for ch in rest):  # "http://." is not a link
            spans.append((match.start(), match.start() + len(url)))
    return spans


def new_code() -> str:
    """A fresh random short-link code."""
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))


def is_code(value: str) -> bool:
    """True if ``value`` looks like a short-link code (so a lookup is worth doing)."""
    return _CODE.fullmatch(value) is not None


# A code generator that keeps returning taken codes is broken, not unlucky.
_MAX_DRAWS: Final = 10


def shorten(text: str, base_url: str, new_code: Callable[[], str]) -> tuple[str, list[tuple[str, str]]]:
    """Replace each URL in ``text`` by a short link under ``base_url``.

    Returns the new text and the (code, original URL) pairs to store, in the
    order the URLs first appear. A URL repeated in the text gets one code;
    a URL that is already one of ours is left as it is.
    """
    base = base_url.rstrip("/")
    codes: dict[str, str] = {}  # url -> code
    taken: set[str] = set()
    parts: list[str] = []
    position = 0
    for start, end in find_urls(text):
        url = text[start:end]
        if url == base or url.startswith(base + "/"):
            continue
        code = codes.get(url)
        if code is None:
            code = _fresh(new_code, taken)
            codes[url] = code
            taken.add(code)
        parts.append(text[position:start])
        parts.append(f"{base}/l/{code}")
        position = end
    parts.append(text[position:])
    return "".join(parts), [(code, url) for url, code in codes.items()]


def _fresh(draw: Callable[[], str], taken: set[str]) -> str:
    for _ in range(_MAX_DRAWS):
        code = draw()
        if code not in taken:
            return code
    raise ValueError(f"new_code returned only codes already used ({_MAX_DRAWS} draws)")


def media_as_links(body: str, media: Sequence[str]) -> str:
    """``body`` with the media URLs appended, one per line."""
    return "\n".join([body, *media] if body else media)
