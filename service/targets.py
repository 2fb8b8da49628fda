"""Outbound targets: refusing link-local and cloud metadata addresses.

An alert receiver's URL, or a DriftMonitor's serviceUrl, comes from configuration, but
where it leads is decided by DNS. The alert dispatcher checks the URL before each POST
(`link_local_target`, unless `DRIFTLINE_ALERT_ALLOW_LINK_LOCAL` is set), and both the
dispatcher and the operator connect through `VettingResolver`, which drops the addresses
the check refuses, so a name that answers differently the second time (DNS rebinding)
cannot reach a metadata service either.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

# Cloud metadata services outside the link-local ranges: AWS's IPv6 instance metadata
# endpoint (in fd00::/8, unique-local) and Alibaba Cloud's (in the shared 100.64/10).
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a) for a in ("fd00:ec2::254", "100.100.100.200")
)


# IPv6 prefixes whose last 32 bits carry an IPv4 address that the host, a NAT64
# gateway or a SIIT translator reaches: IPv4-compatible (::/96, deprecated but still
# routed by some stacks), NAT64's well-known and local-use prefixes (RFC 6052, 8215),
# and SIIT's IPv4-translated addresses (::ffff:0:0/96, RFC 2765). IPv4-mapped
# (::ffff:0:0/96 without the 0) is `ipv4_mapped`.
EMBEDDING_PREFIXES = tuple(
    ipaddress.ip_network(p) for p in ("::/96", "64:ff9b::/96", "64:ff9b:1::/48", "::ffff:0:0:0/96")
)


def _embedded_ipv4(address: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address leads to: mapped, translated or tunnelled."""
    found = [a for a in (address.ipv4_mapped, address.sixtofour) if a is not None]
    if address.teredo is not None:
        found.append(address.teredo[1])  # the client's address, the one the tunnel reaches
    if any(address in prefix for prefix in EMBEDDING_PREFIXES):
        found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return found


def refused_address(text: str) -> str | None:
    """The address, when it is (or leads to) a link-local or cloud metadata address; else None.

    IPv6 forms that carry an IPv4 address (`::ffff:169.254.169.254`,
    `::169.254.169.254`, NAT64 `64:ff9b::a9fe:a9fe`, SIIT `::ffff:0:a9fe:a9fe`, 6to4,
    Teredo) are judged by that IPv4 address too.
    """
    address = ipaddress.ip_address(text.split("%", 1)[0])  # drop an IPv6 zone (fe80::1%eth0)
    candidates: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = [address]
    if isinstance(address, ipaddress.IPv6Address):
        candidates += _embedded_ipv4(address)
    for candidate in candidates:
        if candidate.is_link_local or candidate in METADATA_ADDRESSES:
            return str(candidate)
    return None


def link_local_target(url: str) -> str | None:
    """The link-local or cloud-metadata address a URL resolves to, if any."""
    try:
        host = urlsplit(url).hostname or ""
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError:
        return None  # unresolvable: the POST will fail and be retried like any outage
    except ValueError:
        return None  # not a valid host (bad IDNA label, bad IP literal): the POST refuses it
    for info in infos:
        refused = refused_address(str(info[4][0]))
        if refused is not None:
            return refused
    return None


class VettingResolver(AbstractResolver):
    """Resolves host names like `inner`, leaving out link-local and metadata addresses.

    `link_local_target` checks a URL before the POST; this checks the addresses the
    connection then uses, so a name that resolves differently the second time (DNS
    rebinding) cannot reach a metadata service either.
    """

    def __init__(self, inner: AbstractResolver | None = None) -> None:
        self._inner = inner or ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """The addresses of `host` that may be connected to; OSError when none may."""
        kept = [
            r
            for r in await self._inner.resolve(host, port, family)
            if not refused_address(r["host"])
        ]
        if not kept:
            raise OSError(f"refused: {host} resolves only to link-local or metadata addresses")
        return kept

    async def close(self) -> None:
        """Release the inner resolver."""
        await self._inner.close()
