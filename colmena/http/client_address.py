"""Which address a request comes from, believing X-Forwarded-For only from trusted proxies.

Behind a TLS proxy every request's peer is the proxy, so every client would share one rate-limit
bucket. The proxy appends the address it saw to X-Forwarded-For; anything to the left of that was
written by the client and can be forged. So the header is read right to left, only while the hop
that handed the request on is a configured proxy: the first address not trusted is the client.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Sequence

from colmena.config.rate_limit_settings import IpNetwork

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@functools.lru_cache(maxsize=4096)
def _address(text: str) -> IpAddress | None:
    """The address written in `text`, IPv4-mapped IPv6 as IPv4; None when it is not one.
    Cached: the same peers and proxies come back request after request, and parsing one is
    dearer than the lookup."""
    try:
        found = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(found, ipaddress.IPv6Address) and found.ipv4_mapped is not None:
        return found.ipv4_mapped
    return found


def _trusted(address: IpAddress, trusted: Sequence[IpNetwork]) -> bool:
    return any(address.version == network.version and address in network for network in trusted)


def client_address(
    peer: str | None, forwarded_for: Sequence[str], trusted: Sequence[IpNetwork]
) -> str:
    """The right-most address not among the trusted proxies; the peer itself when it is not one.

    An unparsable hop ends the walk at the last address that parsed: a proxy writes addresses.
    """
    if peer is None:
        return "unknown"
    current = _address(peer)
    if current is None:
        return peer
    hops = [hop for header in forwarded_for for hop in header.split(",")]
    while hops and _trusted(current, trusted):
        previous = _address(hops.pop())
        if previous is None:
            break
        current = previous
    return str(current)
