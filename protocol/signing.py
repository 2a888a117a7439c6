"""The well-known webhook signature (``X-Twilio-Signature``).

Every request the signaling node makes to a customer's instruction URL, action
URL or status callback is signed so that the validators already deployed in
the wild (``RequestValidator`` in the official helper libraries) accept it::

    signature = base64(HMAC-SHA1(auth_token, url + name1 + value1 + name2 + value2 ...))

with the form parameters sorted by name and, for a repeated name, its values
sorted too. This module reproduces the Python helper library's
``RequestValidator.compute_signature`` byte for byte, including two quirks that
validators depend on:

* a name is counted once, and so is a repeated *identical* value of one name
  (the library iterates over ``sorted(set(values))``), so ``To=a&To=a`` signs
  like ``To=a``;
* sorting is by Unicode code point (Python's ``sorted`` on ``str``), not by
  locale or by UTF-8 bytes.

JSON bodies are not form parameters: the sender adds a ``bodySHA256`` query
parameter holding the hex SHA-256 of the body to the URL and signs the URL
alone (no parameters). :func:`add_body_hash` builds such a URL.

Validation accepts the URL with and without its port, as the library does,
because proxies and load balancers disagree on whether the standard port
appears in the URL the application sees (see :func:`url_variants`).

Sans-I/O: no clock, no network; the auth token is the only secret and it is
never logged or put in an exception here.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from typing import Final, TypeAlias
from urllib.parse import ParseResult, parse_qs, urlencode, urlparse

__all__ = [
    "BODY_HASH_PARAMETER",
    "SIGNATURE_HEADER",
    "SignatureParams",
    "add_body_hash",
    "compute_body_hash",
    "compute_signature",
    "signing_string",
    "url_variants",
    "validate_signature",
]

SIGNATURE_HEADER: Final = "X-Twilio-Signature"
BODY_HASH_PARAMETER: Final = "bodySHA256"

# A form: one value per name, or several for a repeated name (``To=a&To=b``).
# Multi-valued mappings (aiohttp's MultiDict, Django's QueryDict) work as they are.
SignatureParams: TypeAlias = Mapping[str, str | Sequence[str]]

_STANDARD_PORTS: Final = {"https": 443, "http": 80}


def _values(params: SignatureParams, name: str) -> list[str]:
    # A multi-valued form (aiohttp's MultiDict, Django's QueryDict) answers
    # params[name] with the first value only; ask it for all of them, as the
    # helper library does.
    for method in ("getall", "getlist"):
        get_all = getattr(params, method, None)
        if callable(get_all):
            return [str(value) for value in get_all(name)]
    value = params[name]
    # A str is itself a Sequence[str]; without this check "abc" would be
    # signed as the three values "a", "b", "c".
    if isinstance(value, str):
        return [value]
    return list(value)


def signing_string(url: str, params: SignatureParams | None) -> str:
    """The exact text that is HMAC'd: the URL, then each name and value in order."""
    parts = [url]
    if params:
        for name in sorted(set(params)):
            for value in sorted(set(_values(params, name))):
                parts.append(name)
                parts.append(value)
    return "".join(parts)


def compute_signature(auth_token: str, url: str, params: SignatureParams | None) -> str:
    """base64(HMAC-SHA1(auth_token, signing_string(url, params))), as the validators compute it.

    ``url`` is signed exactly as given: sign the URL you actually request
    (query string included).
    """
    mac = hmac.new(
        auth_token.encode("utf-8"),
        signing_string(url, params).encode("utf-8"),
        hashlib.sha1,
    )
    return base64.b64encode(mac.digest()).decode("ascii")


def compute_body_hash(body: bytes | str) -> str:
    """Hex SHA-256 of a JSON request body, the value of the ``bodySHA256`` query parameter.

    A ``str`` body is hashed as UTF-8, which is what the helper library does.
    """
    data = body.encode("utf-8") if isinstance(body, str) else body
    return hashlib.sha256(data).hexdigest()


def add_body_hash(url: str, body: bytes | str) -> str:
    """``url`` with ``bodySHA256=<hex>`` appended to its query, ready to sign with no params."""
    parsed = urlparse(url)
    extra = urlencode({BODY_HASH_PARAMETER: compute_body_hash(body)})
    query = f"{parsed.query}&{extra}" if parsed.query else extra
    return parsed._replace(query=query).geturl()


def _netloc_without_port(parsed: ParseResult) -> str:
    # Keep user info and IPv6 brackets intact; the helper library's
    # ``netloc.split(":")[0]`` would cut "user:pw@host:8080" down to "user"
    # and "[::1]:8080" down to "[", which can never match a real signature.
    userinfo, at, hostport = parsed.netloc.rpartition("@")
    if hostport.startswith("["):
        host = hostport[: hostport.find("]") + 1]
    else:
        host = hostport.partition(":")[0]
    return userinfo + at + host


def url_variants(url: str) -> tuple[str, ...]:
    """The spellings of ``url`` a signature is checked against, as given first.

    Like the helper library's validator: the URL without any port, and the URL
    with a port (the standard one, 443 for https and 80 otherwise, added when
    none is given). The URL exactly as given is tried as well, because
    ``urlparse(url).geturl()`` drops an empty query (``.../path?``) or fragment
    and the sender signed what it requested. An unparseable port leaves only
    the URL as given.
    """
    variants = [url]
    try:
        parsed = urlparse(url)
        port = parsed.port
    except ValueError:  # "host:99999", "host:abc", "[::1" - nothing to strip or add
        return (url,)
    bare_netloc = _netloc_without_port(parsed)
    without_port = parsed._replace(netloc=bare_netloc).geturl()
    if port is None:
        standard = _STANDARD_PORTS.get(parsed.scheme, 80)
        with_port = parsed._replace(netloc=f"{bare_netloc}:{standard}").geturl()
    else:
        with_port = parsed.geturl()
    for variant in (without_port, with_port):
        if variant not in variants:
            variants.append(variant)
    return tuple(variants)


def _same(expected: str, signature: str) -> bool:
    # compare_digest refuses non-ASCII str; bytes keep it constant-time for
    # any header value an attacker can send.
    return hmac.compare_digest(expected.encode("utf-8"), signature.encode("utf-8"))


def validate_signature(
    auth_token: str,
    url: str,
    params: SignatureParams | bytes | str | None,
    signature: str,
) -> bool:
    """Whether ``signature`` signs this request, in constant time per candidate.

    ``params`` is the form (a mapping) or, for a JSON request, the raw body
    (``bytes`` or ``str``). A body is only acceptable when ``url`` carries a
    ``bodySHA256`` query parameter equal to the body's hash; the signature then
    covers the URL alone. A body without that parameter cannot be validated
    and returns False (the helper library raises a TypeError there).
    """
    form: SignatureParams | None
    body_ok = True
    if isinstance(params, (bytes, str)):
        try:
            claimed = parse_qs(urlparse(url).query).get(BODY_HASH_PARAMETER)
        except ValueError:
            return False
        if not claimed:
            return False
        body_ok = _same(compute_body_hash(params), claimed[0])
        form = None
    else:
        form = params
    # Every candidate is computed and compared, so the time taken does not
    # reveal which spelling (if any) matched.
    matches = [
        _same(compute_signature(auth_token, candidate, form), signature)
        for candidate in url_variants(url)
    ]
    return body_ok and any(matches)
