"""URLs inside instruction documents: which are acceptable, and how relative ones resolve.

A document may name an http(s) URL or a relative one (resolved later against
the URL the document was fetched from, like a browser does). Every other
scheme is refused: ``file:``, ``ftp:``, ``data:``, ``javascript:`` ... would let
a document make the node read local files or speak protocols it should not.
Nothing is resolved or fetched here; the parser keeps the string as written.
"""

from __future__ import annotations

from typing import Final
from urllib.parse import urljoin, urlsplit

from ._base import SCHEMA_INVALID, InstructionError

__all__ = ["URL_MAX_LENGTH", "resolve_url", "url_problem"]

URL_MAX_LENGTH: Final = 4096
_SCHEMES: Final = ("http", "https")


def _has_control_character(value: str) -> bool:
    # A CR/LF in a URL is a request-splitting attempt on some HTTP stacks.
    return any(ord(char) < 0x20 or ord(char) == 0x7F for char in value)


def url_problem(value: str) -> str | None:
    """Why ``value`` is not an acceptable URL in a document, or None when it is."""
    if not value:
        return "URL is empty"
    if len(value) > URL_MAX_LENGTH:
        return f"URL is longer than {URL_MAX_LENGTH} characters"
    if _has_control_character(value):
        return "URL holds a control character"
    try:
        parts = urlsplit(value)
    except ValueError as exc:  # "http://[::1" and friends
        return f"URL is malformed ({exc})"
    if not parts.scheme:
        return None  # relative: resolved against the document's URL later
    if parts.scheme.lower() not in _SCHEMES:
        return "URL must be http, https or relative"
    if not parts.netloc:
        return "an absolute URL needs a host"
    return None


def resolve_url(base: str, relative: str) -> str:
    """``relative`` resolved against ``base`` (the document's URL); http(s) results only.

    Raises InstructionError(12200) when the result is not an absolute http(s)
    URL, e.g. ``javascript:...`` or a relative URL against a non-http base.
    """
    problem = url_problem(relative)
    if problem is not None:
        raise InstructionError(SCHEMA_INVALID, f"{problem}: {relative[:80]!r}")
    try:
        resolved = urljoin(base, relative)
        parts = urlsplit(resolved)
    except ValueError as exc:
        raise InstructionError(SCHEMA_INVALID, f"URL cannot be resolved ({exc})") from None
    if parts.scheme.lower() not in _SCHEMES or not parts.netloc:
        raise InstructionError(
            SCHEMA_INVALID,
            f"URL {relative[:80]!r} does not resolve to an http(s) URL against {base[:80]!r}",
        )
    return resolved
