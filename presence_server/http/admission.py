"""REST admission: per-account request rates and per-address failed-auth rates.

A request with an account's credentials (its auth token or one of its API
keys) takes a token from that account's bucket (``[http] rate``/``burst``);
every other request is charged to its client address only when it fails
authentication (401), and an address out of tokens is answered 429 for
everything until one is back. So a caller that knows its credentials is never
held up by a neighbour behind the same NAT guessing passwords, and guessing is
slowed to ``auth_failure_rate`` per address.

The buckets live in this process: a node's limit protects that node. Across N
nodes behind a balancer an account gets up to N times the rate, which is the
capacity N nodes have; sharing the buckets through the engine would put a
Redis round trip in front of every request and make the API fail when Redis
does (docs/reliability.md#attacks).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Sequence

from aiohttp import web
from aiohttp.typedefs import Middleware

from protocol.errors import ErrorCode
from protocol.forwarding import Network, client_address, limit_key, parse_networks
from protocol.ratelimit import BucketTable

from .auth import basic_credentials
from .errors import Handler, error_response

if TYPE_CHECKING:
    from ..node import Node

# Probes must answer whatever the load; the WebSocket has its own limits ([gateway]).
EXEMPT_PATHS = frozenset({"/healthz", "/readyz", "/v1/connect"})


def request_client_address(request: web.BaseRequest, trusted: Sequence[Network]) -> str:
    """The client's address: the peer's, or the one a trusted proxy forwards for."""
    return client_address(request.remote, request.headers.getall("X-Forwarded-For", []), trusted)


def too_many(wait: float, message: str) -> web.Response:
    # Retry-After is whole seconds (RFC 9110); round up, so a client that waits it is let in.
    return error_response(ErrorCode.TOO_MANY_REQUESTS, message, headers={"Retry-After": str(max(1, math.ceil(wait)))})


def rest_limits(node: Node) -> Middleware:
    config = node.config.http
    per_account = BucketTable(config.rate, config.burst)
    per_address = BucketTable(config.auth_failure_rate, config.auth_failure_burst)
    trusted = parse_networks(node.config.server.trusted_proxies)
    accounts, clock = node.accounts, node.clock

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in EXEMPT_PATHS:
            return await handler(request)
        now = clock.monotonic()
        creds = basic_credentials(request)
        account = accounts.authenticate(*creds) if creds is not None else None
        if account is not None:
            wait = per_account.take(account.sid, now)
            if wait:
                return too_many(wait, f"this account is over its request rate ({config.rate:g}/s, bursts of {config.burst})")
            return await handler(request)
        address = limit_key(request_client_address(request, trusted))
        wait = per_address.wait(address, now)
        if wait:
            return too_many(wait, "too many failed authentications from this address")
        response = await handler(request)
        if response.status == 401:
            per_address.charge(address, now)
        return response

    return middleware
