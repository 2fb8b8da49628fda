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


def refused_address(text: str) -> str | None:
    """The address, when it is link-local or a cloud metadata service's; else None."""
    address = ipaddress.ip_address(text.split("%", 1)[0])  # drop an IPv6 zone (fe80::1%eth0)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # ::ffff:169.254.169.254 reaches 169.254.169.254
    if address.is_link_local or address in METADATA_ADDRESSES:
        return str(address)
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
