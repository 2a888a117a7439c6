"""SSRF protection for every request the server makes to a customer's URL.

Instruction URLs, fallback URLs, action URLs and status callbacks are chosen by
whoever configures an account (or by a document the server just fetched), so
without a guard they would let that person make this server call its own
loopback services, the cloud metadata endpoint (169.254.169.254) or anything
on the private network behind it.

Three checks, all driven by one :class:`UrlPolicy`:

* :meth:`UrlPolicy.check_url` refuses a URL before any connection: a scheme
  other than http/https, no host, a literal IP address of a refused class,
  or a numeric host in one of the legacy forms (``2130706433``, ``0x7f.1``,
  ``127.1``) that resolvers turn into an address nobody looked at.
* :class:`GuardedResolver` resolves host names and drops every address the
  policy refuses, failing when none is left. The connector connects to the
  addresses it returns, so the address checked is the address connected to:
  a DNS answer that changes between a check and the connection (DNS
  rebinding) cannot slip through.
* :func:`guarded_session` builds an ``aiohttp.ClientSession`` with both: the
  resolver on its connector and a client middleware that runs
  :meth:`UrlPolicy.check_url` on every request it sends, redirects included.
  It ignores proxy environment variables, since a proxy would connect on our
  behalf to an address we never saw.

Redirects are followed by the caller (``allow_redirects=False``), hop by hop,
with :func:`redirect_method` and :data:`MAX_REDIRECTS`; each hop goes through
the same session, hence through the same checks.

Error codes are the platform's debugger codes (see docs/webhooks.md).
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import aiohttp
import structlog
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from protocol.instructions import DOCUMENT_TOO_LARGE, HTTP_RETRIEVAL_FAILURE

__all__ = [
    "HTTP_BAD_HOST",
    "HTTP_CONNECTION_FAILURE",
    "HTTP_PROTOCOL_VIOLATION",
    "HTTP_RETRIEVAL_FAILURE",
    "HTTP_SSL_ERROR",
    "HTTP_TOO_MANY_REDIRECTS",
    "MAX_REDIRECTS",
    "REDIRECT_STATUSES",
    "RESPONSE_TOO_LARGE",
    "AddressRefused",
    "GuardedResolver",
    "UrlPolicy",
    "UrlRefused",
    "address_category",
    "check_url_shape",
    "parse_endpoint",
    "guarded_session",
    "redirect_method",
]

log = structlog.get_logger(__name__)

# The platform's debugger codes, so that an app developer who knows them reads
# our logs and ErrorCode parameters the same way.
HTTP_CONNECTION_FAILURE: Final = 11205  # refused, reset, or no TCP connection within the connect timeout
HTTP_PROTOCOL_VIOLATION: Final = 11206  # the peer's answer is not valid HTTP
HTTP_BAD_HOST: Final = 11210  # unresolvable host name, or an address the policy refuses
HTTP_TOO_MANY_REDIRECTS: Final = 11215
HTTP_SSL_ERROR: Final = 11220  # TLS handshake failed, certificate verification included
RESPONSE_TOO_LARGE: Final = DOCUMENT_TOO_LARGE  # 11750, shared with the parser's limit

MAX_REDIRECTS: Final = 5
REDIRECT_STATUSES: Final = frozenset({301, 302, 303, 307, 308})

_SCHEMES: Final = frozenset({"http", "https"})

# A host made only of numbers in the forms inet_aton() accepts ("2130706433",
# "0x7f.1", "017700000001", "127.1"). Resolvers map them onto addresses, so a
# check that only parses canonical dotted quads would pass them; they are
# refused outright instead. Canonical addresses are parsed before this is used.
_NUMERIC_HOST: Final = re.compile(r"(?:0x[0-9a-f]*|[0-9]+)(?:\.(?:0x[0-9a-f]*|[0-9]+)){0,3}\.?", re.IGNORECASE)

_IPv4 = ipaddress.IPv4Network
_IPv6 = ipaddress.IPv6Network

# Every special-purpose block (IANA registries), named by the word used in a
# refusal. Written out rather than taken from ipaddress.is_global, whose
# answers changed between patch releases (192.0.0.8 and fec0::/10 count as
# global on 3.11.7) and which calls multicast global.
_IPV4_BLOCKS: Final[tuple[tuple[ipaddress.IPv4Network, str], ...]] = (
    (_IPv4("0.0.0.0/8"), "unspecified"),  # "this network": 0.0.0.0 reaches the local host on Linux
    (_IPv4("10.0.0.0/8"), "private"),
    (_IPv4("100.64.0.0/10"), "private"),  # carrier-grade NAT shared space
    (_IPv4("127.0.0.0/8"), "loopback"),
    (_IPv4("169.254.0.0/16"), "link-local"),  # includes the cloud metadata service 169.254.169.254
    (_IPv4("172.16.0.0/12"), "private"),
    (_IPv4("192.0.0.0/24"), "reserved"),  # IETF protocol assignments
    (_IPv4("192.0.2.0/24"), "reserved"),  # documentation
    (_IPv4("192.88.99.0/24"), "reserved"),  # deprecated 6to4 relay anycast
    (_IPv4("192.168.0.0/16"), "private"),
    (_IPv4("198.18.0.0/15"), "reserved"),  # benchmarking
    (_IPv4("198.51.100.0/24"), "reserved"),  # documentation
    (_IPv4("203.0.113.0/24"), "reserved"),  # documentation
    (_IPv4("224.0.0.0/4"), "multicast"),
    (_IPv4("240.0.0.0/4"), "reserved"),  # includes the broadcast address 255.255.255.255
)

_IPV6_BLOCKS: Final[tuple[tuple[ipaddress.IPv6Network, str], ...]] = (
    (_IPv6("::/128"), "unspecified"),
    (_IPv6("::1/128"), "loopback"),
    (_IPv6("::/96"), "reserved"),  # deprecated IPv4-compatible addresses
    (_IPv6("64:ff9b:1::/48"), "private"),  # local-use NAT64
    (_IPv6("100::/64"), "reserved"),  # discard-only
    (_IPv6("2001::/23"), "reserved"),  # IETF protocol assignments, Teredo included
    (_IPv6("2001:db8::/32"), "reserved"),  # documentation
    (_IPv6("3fff::/20"), "reserved"),  # documentation
    (_IPv6("fc00::/7"), "private"),  # unique local
    (_IPv6("fe80::/10"), "link-local"),
    (_IPv6("fec0::/10"), "private"),  # deprecated site-local
    (_IPv6("ff00::/8"), "multicast"),
)

# Global unicast space: IPv6 outside it (and outside the translation prefixes
# handled below) is unassigned or special, so refused.
_IPV6_GLOBAL_UNICAST: Final = _IPv6("2000::/3")
_NAT64: Final = _IPv6("64:ff9b::/96")

_Address = ipaddress.IPv4Address | ipaddress.IPv6Address

# The end of every refusal message: says what the rule is, for the developer
# who reads it in a debugger log, without naming the setting that lifts it.
_REFUSED: Final = "private and special-purpose addresses are refused"


class UrlRefused(Exception):
    """A URL the policy will not let the server request. ``code`` is a debugger code."""

    def __init__(self, code: int, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(f"{code}: {message}")


class AddressRefused(OSError):
    """Raised by :class:`GuardedResolver` when every address of a host is refused.

    An OSError because aiohttp's connector wraps exactly those from a resolver
    into ``ClientConnectorDNSError`` (keeping it as ``os_error``); the
    :class:`UrlRefused` it carries says why.
    """

    def __init__(self, refusal: UrlRefused) -> None:
        super().__init__(refusal.message)
        self.refusal = refusal


def _embedded_ipv4(address: ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address, str] | None:
    # An IPv6 address that carries an IPv4 one is routed to that IPv4 address
    # (by the kernel for ::ffff:a.b.c.d, by a translator for NAT64 and 6to4),
    # so it is judged by the address it carries.
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped, "IPv4-mapped"
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF), "NAT64"
    if address.sixtofour is not None:
        return address.sixtofour, "6to4"
    return None


def _translated(address: str) -> bool:
    # NAT64 and 6to4 addresses reach the embedded IPv4 address through a
    # translator: "127.0.0.1" there is the translator's loopback, not ours.
    ip = ipaddress.ip_address(address)
    return isinstance(ip, ipaddress.IPv6Address) and (ip in _NAT64 or ip.sixtofour is not None)


def address_category(address: str | _Address) -> str | None:
    """The class of address the policy cares about, or None for a public unicast address.

    One of ``loopback``, ``private``, ``link-local``, ``unspecified``,
    ``multicast``, ``reserved``; an IPv6 address that embeds an IPv4 one
    (IPv4-mapped, NAT64, 6to4) takes the embedded address's class. A string
    that is not an IP address raises ValueError. An IPv6 zone (``%eth0``) is
    ignored: only link-local addresses have one.
    """
    ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    if isinstance(ip, ipaddress.IPv4Address):
        for network, category in _IPV4_BLOCKS:
            if ip in network:
                return category
        return None
    if ip.scope_id is not None:
        ip = ipaddress.IPv6Address(str(ip).split("%", 1)[0])
    embedded = _embedded_ipv4(ip)
    if embedded is not None:
        return address_category(embedded[0])
    for network6, category in _IPV6_BLOCKS:
        if ip in network6:
            return category
    if ip not in _IPV6_GLOBAL_UNICAST:
        return "reserved"
    return None


@dataclass(frozen=True)
class UrlPolicy:
    """Which destinations the server may request.

    Public unicast addresses are always allowed. ``allow_loopback`` admits
    127.0.0.0/8 and ::1 (and their IPv4-mapped form) - what dev mode needs to
    reach an app on the same machine. ``allow_private`` admits every address
    (``[security] allow_private_urls``): the operator runs the apps on a
    private network and says so; only the scheme and host checks remain.
    ``allowed_endpoints`` admits exactly these (address, port) pairs
    (``[security] allowed_private_endpoints``): one instruction app on the
    private network, without opening the rest of it - a redirect to another
    port or address there is still refused.
    """

    allow_private: bool = False
    allow_loopback: bool = False
    allowed_endpoints: frozenset[tuple[str, int]] = frozenset()

    def address_problem(self, address: str, port: int | None = None) -> str | None:
        """Why the server must not connect to ``address`` (on ``port``), or None when it may."""
        if self.allow_private:
            return None
        if port is not None and self.allowed_endpoints and _endpoint(address, port) in self.allowed_endpoints:
            return None
        try:
            category = address_category(address)
        except ValueError:
            # Fail closed: a resolver answer we cannot parse is not connected to.
            return f"{address!r} is not an IP address"
        if category is None or (category == "loopback" and self.allow_loopback and not _translated(address)):
            return None
        if address == "169.254.169.254":
            return f"{address} is the cloud metadata address (link-local)"
        article = "an" if category[0] in "aeiou" else "a"
        return f"{address} is {article} {category} address"

    def check_url(self, url: str | URL) -> None:
        """Refuse (:class:`UrlRefused`) a URL the server must not request; host names are
        checked later, when they resolve (:class:`GuardedResolver`)."""
        address = check_url_shape(url)
        if address is None:
            return  # a name: judged by what it resolves to
        problem = self.address_problem(address, (url if isinstance(url, URL) else URL(url)).port)
        if problem is not None:
            raise UrlRefused(HTTP_BAD_HOST, f"{problem}; {_REFUSED}")


def _endpoint(address: str, port: int) -> tuple[str, int] | None:
    try:
        return str(ipaddress.ip_address(address)), port
    except ValueError:
        return None


def parse_endpoint(text: str) -> tuple[str, int]:
    """``"10.0.0.5:8080"`` or ``"[fd00::5]:8080"`` as (canonical address, port);
    ValueError (saying what is expected) otherwise. Only literal addresses: the
    guard judges the address connected to, never a name."""
    host, sep, port_text = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        host = ""  # an IPv6 address without brackets: its port is ambiguous
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"{text!r} is not an address:port pair (for example 10.0.0.5:8080 or [fd00::5]:8080)")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{text!r}: {host!r} is not an IP address (names are not accepted)") from None
    return str(address), int(port_text)


def check_url_shape(url: str | URL) -> str | None:
    """The checks that need no policy: an http(s) URL with a host that is a name or a
    canonical IP address. Returns the literal address (None for a name); raises
    :class:`UrlRefused` otherwise."""
    try:
        parsed = url if isinstance(url, URL) else URL(url)
        host = parsed.host
    except (ValueError, TypeError) as exc:
        raise UrlRefused(HTTP_RETRIEVAL_FAILURE, f"malformed URL ({exc})") from None
    if parsed.scheme not in _SCHEMES:
        shown = parsed.scheme or "none"
        raise UrlRefused(HTTP_RETRIEVAL_FAILURE, f"URL scheme {shown!r} is not http or https")
    if not host:
        raise UrlRefused(HTTP_BAD_HOST, "URL has no host")
    # One trailing dot names the same host ("127.0.0.1." resolves to 127.0.0.1).
    bare = host[:-1] if host.endswith(".") else host
    try:
        return str(ipaddress.ip_address(bare))
    except ValueError:
        if _NUMERIC_HOST.fullmatch(bare):
            raise UrlRefused(HTTP_BAD_HOST, f"host {bare[:60]!r} is a numeric address in a non-canonical form") from None
        return None


class GuardedResolver(AbstractResolver):
    """Resolves through ``inner`` (aiohttp's ThreadedResolver) and keeps only the
    addresses ``policy`` allows; raises :class:`AddressRefused` when none is left.

    aiohttp does not call the resolver for a literal IP host; those are
    refused by :meth:`UrlPolicy.check_url` in :func:`guarded_session`'s
    middleware before the connector sees them.
    """

    def __init__(self, policy: UrlPolicy, inner: AbstractResolver | None = None) -> None:
        self._policy = policy
        # ThreadedResolver (getaddrinfo) rather than DefaultResolver: it answers
        # like every other program on the host (/etc/hosts, nsswitch), and it
        # holds nothing to close - the connector never closes a resolver it was given.
        self._inner = inner if inner is not None else aiohttp.ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        allowed: list[ResolveResult] = []
        first_problem: str | None = None
        for result in results:
            problem = self._policy.address_problem(result["host"], port or None)
            if problem is None:
                allowed.append(result)
            elif first_problem is None:
                first_problem = problem
        if allowed:
            # A name with both a public and a private address: connect to the
            # public ones only, rather than fail the whole request.
            return allowed
        if first_problem is None:  # the inner resolver answered nothing at all
            raise OSError(f"{host} has no address")
        refusal = UrlRefused(
            HTTP_BAD_HOST, f"host {host!r} resolves only to refused addresses ({first_problem}); {_REFUSED}"
        )
        log.warning("url refused", host=host, reason=first_problem)
        raise AddressRefused(refusal)

    async def close(self) -> None:
        await self._inner.close()


def _check_middleware(policy: UrlPolicy) -> aiohttp.ClientMiddlewareType:
    async def check_url(request: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType) -> aiohttp.ClientResponse:
        # Runs for each request the session sends, before the connector: the
        # literal-IP half of the guard (the resolver is the host-name half).
        policy.check_url(request.url)
        return await handler(request)

    return check_url


def guarded_session(policy: UrlPolicy, **kw: Any) -> aiohttp.ClientSession:
    """A ClientSession whose every request is held to ``policy``.

    ``kw`` goes to ``aiohttp.ClientSession`` (``timeout``, ``headers``, ...);
    ``middlewares`` given there run after the guard. ``connector`` and
    ``trust_env`` are refused: either would take the guard away. Must be
    called with an event loop running; close the session when done.
    """
    for name in ("connector", "trust_env"):
        if name in kw:
            raise TypeError(f"guarded_session() does not accept {name!r}: it would bypass the URL guard")
    extra: Sequence[aiohttp.ClientMiddlewareType] = tuple(kw.pop("middlewares", ()))
    connector = aiohttp.TCPConnector(resolver=GuardedResolver(policy))
    return aiohttp.ClientSession(
        connector=connector,
        trust_env=False,  # HTTP(S)_PROXY would make a proxy connect where we never looked
        middlewares=(_check_middleware(policy), *extra),
        **kw,
    )


def redirect_method(status: int, method: str) -> str:
    """The method of the request that follows a redirect with ``status``.

    301, 302 and 303 turn a POST into a GET without a body (what browsers and
    the platform do); 307 and 308 keep the method and the body.
    """
    if status in (301, 302, 303) and method != "HEAD":
        return "GET"
    return method
