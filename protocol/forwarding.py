"""Who is on the other end: the client address behind trusted proxies.

Behind a load balancer every connection comes from the balancer, so limits
kept per address would count all clients as one. The balancer says who it
forwards for in ``X-Forwarded-For``, which anyone else can write too: it is
believed only from a peer on a trusted network (``[server] trusted_proxies``),
and read from the right, where our own proxies append. The first address that
is not a trusted proxy is the client; what lies to its left was written by
that client, and is ignored.

Limits group IPv6 clients by their /64: one host (or site) is handed a whole
/64 and may pick any address in it, so a per-address limit on single IPv6
addresses would limit nothing.
"""

from __future__ import annotations

import ipaddress
from typing import Iterable, Sequence

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
IPV6_GROUP_PREFIX = 64


def parse_networks(entries: Iterable[str]) -> tuple[Network, ...]:
    """Addresses or CIDR networks (``10.0.0.0/8``, ``::1``). ValueError names a bad one."""
    networks = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            raise ValueError(f"{entry!r} is not an IP address or CIDR network such as '10.0.0.0/8'") from None
    return tuple(networks)


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # [v6]:port
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # v4:port
        text = text.split(":", 1)[0]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped  # ::ffff:1.2.3.4 (a dual-stack socket) is 1.2.3.4
    return ip


def _trusted(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, trusted: Sequence[Network]) -> bool:
    return any(ip.version == net.version and ip in net for net in trusted)


def client_address(peer: str | None, forwarded_for: Sequence[str], trusted: Sequence[Network]) -> str:
    """The client's address: ``peer`` (the socket's), or - when the peer is a
    trusted proxy - the rightmost untrusted address of the ``X-Forwarded-For``
    headers (all of them, in order). A peer that is not an IP (a Unix socket)
    reads as ``"unknown"``."""
    ip = _ip(peer) if peer else None
    if ip is None:
        return "unknown"
    if not trusted or not _trusted(ip, trusted):
        return str(ip)
    hops = [hop for header in forwarded_for for hop in header.split(",")]
    client = ip
    for hop in reversed(hops):
        hop_ip = _ip(hop)
        if hop_ip is None:
            break  # garbage from a proxy of ours: stop at the last hop we could read
        client = hop_ip
        if not _trusted(hop_ip, trusted):
            break
    return str(client)


def limit_key(address: str) -> str:
    """What per-address limits count by: the IPv4 address, or the IPv6 /64."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((ip, IPV6_GROUP_PREFIX), strict=False))
    return address
