"""The address policy shared by the egress proxy and webhooks, asked directly: what counts as
public, what an operator's networks open, and what a name's addresses must all pass."""

from __future__ import annotations

import asyncio
import ipaddress

import pytest

from orchestrator.security.targets import (
    EgressFailed,
    EgressRefused,
    Target,
    address_allowed,
    networks,
    parse_url,
    resolve_allowed,
)


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("93.184.215.14", True),
        ("2606:2800:21f:cb07:6820:80da:af6b:8b2c", True),
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("169.254.169.254", False),  # cloud metadata
        ("224.0.0.1", False),
        ("0.0.0.0", False),
        ("::1", False),
        ("fe80::1", False),
        ("::ffff:127.0.0.1", False),  # IPv4-mapped
        ("2002:7f00:1::", False),  # 6to4 of 127.0.0.1
        ("64:ff9b::a00:1", False),  # NAT64 of 10.0.0.1
    ],
)
def test_only_public_addresses_are_allowed_by_default(address: str, allowed: bool) -> None:
    assert address_allowed(ipaddress.ip_address(address)) is allowed


def test_an_operators_networks_open_only_themselves() -> None:
    opened = networks(["10.1.0.0/16", "127.0.0.1"])
    assert address_allowed(ipaddress.ip_address("10.1.200.3"), opened)
    assert address_allowed(ipaddress.ip_address("::ffff:127.0.0.1"), opened)
    assert not address_allowed(ipaddress.ip_address("10.2.0.1"), opened)
    assert not address_allowed(ipaddress.ip_address("127.0.0.2"), opened)


def test_a_url_is_split_into_its_canonical_target() -> None:
    assert parse_url("https://Example.COM./path?q=1") == Target(
        "https", "example.com", 443, b"/path?q=1", None
    )
    literal = parse_url("http://[::1]:8080/")
    assert (literal.host, literal.port, literal.literal) == (
        "::1",
        8080,
        ipaddress.ip_address("::1"),
    )


def test_every_address_a_name_resolves_to_must_pass() -> None:
    async def check(*answers: str) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
        async def resolver(host: str, port: int) -> list[str]:
            return list(answers)

        return await resolve_allowed(parse_url("https://example.com/"), resolver=resolver)

    assert asyncio.run(check("93.184.215.14", "::ffff:93.184.215.14")) == [
        ipaddress.ip_address("93.184.215.14")
    ]
    with pytest.raises(EgressRefused) as refused:
        asyncio.run(check("93.184.215.14", "10.0.0.1"))
    assert refused.value.code == "address_not_allowed"
    assert "10.0.0.1" not in refused.value.message  # internal DNS is not told
    with pytest.raises(EgressFailed):
        asyncio.run(check())


@pytest.mark.parametrize(
    "url", ["ftp://example.com/", "https://user:pw@example.com/", "http://exa mple.com/"]
)
def test_urls_outside_the_policy_are_bad(url: str) -> None:
    with pytest.raises(EgressRefused) as refused:
        parse_url(url)
    assert (refused.value.code, refused.value.status) == ("bad_url", 403)
