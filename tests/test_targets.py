"""Alert targets: link-local and cloud metadata addresses are refused, before and at connect."""

from __future__ import annotations

import socket

import aiohttp
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult

from driftline.targets import VettingResolver, link_local_target


def test_link_local_targets_are_recognised() -> None:
    assert link_local_target("http://169.254.169.254/latest/meta-data/") == "169.254.169.254"
    assert link_local_target("http://169.254.170.2:80/v2/credentials") == "169.254.170.2"
    assert link_local_target("http://2852039166/") == "169.254.169.254"  # the same, as a number
    assert link_local_target("http://[fe80::a9fe:a9fe]/") is not None
    # Written as an IPv4-mapped IPv6 address, it still reaches the metadata service.
    assert link_local_target("http://[::ffff:169.254.169.254]/latest") is not None
    # Other IPv6 forms that carry the IPv4 address: IPv4-compatible, NAT64 (well-known and
    # local-use prefixes), SIIT's IPv4-translated form, 6to4 and Teredo.
    for embedded in (
        "::169.254.169.254",
        "64:ff9b::a9fe:a9fe",
        "64:ff9b:1::a9fe:a9fe",
        "::ffff:0:a9fe:a9fe",
        "2002:a9fe:a9fe::1",
        "2001:0:4136:e378:8000:63bf:5601:5601",  # Teredo, client 169.254.169.254 (inverted)
        "64:ff9b::6464:64c8",  # NAT64 to Alibaba Cloud's 100.100.100.200
    ):
        assert link_local_target(f"http://[{embedded}]/latest") is not None, embedded
    # The same prefixes around ordinary IPv4 addresses stay allowed.
    for ordinary in ("64:ff9b::a00:1", "::ffff:0:a00:1", "2002:a00:1::1", "::1"):
        assert link_local_target(f"http://[{ordinary}]/") is None, ordinary
    # Metadata services outside the link-local ranges: AWS over IPv6, Alibaba Cloud.
    assert link_local_target("http://[fd00:ec2::254]/latest/meta-data/") == "fd00:ec2::254"
    assert link_local_target("http://100.100.100.200/latest/meta-data/") == "100.100.100.200"
    assert link_local_target("http://[fd00:ec2::253]/") is None  # its neighbours are not
    assert link_local_target("http://127.0.0.1:9093/") is None
    assert link_local_target("https://localhost/hook") is None
    assert link_local_target("http://10.0.0.1/") is None
    # Hosts nobody can resolve or connect to are not link-local (the POST refuses them).
    assert link_local_target("http://a..b/hook") is None
    assert link_local_target("http://[zz]/hook") is None


class _Zone(AbstractResolver):
    """A DNS zone of fixed answers: the boundary a rebinding attacker controls."""

    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            ResolveResult(hostname=host, host=a, port=port, family=family, proto=0, flags=0)
            for a in self.answers[host]
        ]

    async def close(self) -> None:
        pass


async def test_vetting_resolver_keeps_ordinary_addresses_of_real_names() -> None:
    resolver = VettingResolver()
    try:
        found = await resolver.resolve("localhost", 80)
    finally:
        await resolver.close()
    assert found and all(r["host"] in ("127.0.0.1", "::1") for r in found)


async def test_connections_never_reach_metadata_addresses_a_name_resolves_to() -> None:
    # The URL check resolves a name once; the connection resolves it again. A name that
    # answers a metadata address the second time must not be connected to.
    hits: list[str] = []

    async def hook(request: web.Request) -> web.Response:
        hits.append(request.host)
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    zone = _Zone(
        {
            "receiver.test": ["169.254.169.254", "127.0.0.1"],
            "metadata.test": ["169.254.169.254", "fd00:ec2::254"],
        }
    )
    connector = aiohttp.TCPConnector(resolver=VettingResolver(zone))
    try:
        async with aiohttp.ClientSession(connector=connector) as session:
            async with session.post(f"http://receiver.test:{port}/", data=b"{}") as response:
                assert response.status == 200
            with pytest.raises(aiohttp.ClientConnectorError) as refused:
                await session.post(f"http://metadata.test:{port}/", data=b"{}")
            assert "link-local or metadata" in str(refused.value.os_error)
    finally:
        await runner.cleanup()
    assert hits == [f"receiver.test:{port}"]
