"""The address policy of every road out of Summit: which URLs may be asked for, which addresses
count as public, and which of the others an operator opened.

Two roads use it: the egress proxy (``egress.py``, for plugins with ``network:access``) and
webhook deliveries (``events/``). Both refuse loopback, private, link-local, multicast,
reserved and unspecified addresses, including IPv4 space tunnelled inside an IPv6 address,
unless the operator listed the network (``SUMMIT_ALLOW_PRIVATE_TARGETS``,
``SUMMIT_WEBHOOK_ALLOW_PRIVATE``). A name is resolved by the caller of
:func:`resolve_allowed`, every address it resolves to is checked, and the connection must go to
one of exactly those: a second DNS answer (rebinding) never gets a say.

Refusals raise :class:`EgressRefused` and resolution trouble :class:`EgressFailed`; both are
:class:`EgressError`, which carries the HTTP status the host API answers with.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

import httpx

__all__ = [
    "Address",
    "EgressError",
    "EgressFailed",
    "EgressRefused",
    "Network",
    "Resolver",
    "Target",
    "address_allowed",
    "canonical_host",
    "networks",
    "parse_url",
    "resolve_allowed",
    "system_resolver",
]

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

Resolver = Callable[[str, int], Awaitable[list[str]]]
"""``(host, port) -> addresses``; every address it returns is checked."""

_HOST_NAME = re.compile(r"[a-z0-9_-]+(?:\.[a-z0-9_-]+)*")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


class EgressError(Exception):
    """An outbound request (egress proxy or webhook) that did not produce an upstream response."""

    default_status: ClassVar[int] = 502
    statuses: ClassVar[Mapping[str, int]] = {}

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = self.statuses.get(code, self.default_status)


class EgressRefused(EgressError):
    """The policy forbids the request: ``bad_url``, ``bad_request``, ``host_not_allowed``,
    ``address_not_allowed`` or ``request_too_large``."""

    default_status: ClassVar[int] = 403
    statuses: ClassVar[Mapping[str, int]] = {"request_too_large": 413, "bad_request": 400}


class EgressFailed(EgressError):
    """The request was allowed but the upstream did not answer acceptably:
    ``upstream_unreachable``, ``upstream_timeout`` or ``response_too_large``."""

    default_status: ClassVar[int] = 502
    statuses: ClassVar[Mapping[str, int]] = {"upstream_timeout": 504}


@dataclass(frozen=True)
class Target:
    """An http(s) URL split into what a connection needs."""

    scheme: str
    host: str  # canonical: lower-case ASCII, no trailing dot, IPv6 without brackets
    port: int
    target: bytes  # path and query, as sent on the request line
    literal: Address | None


def networks(cidrs: Sequence[str]) -> tuple[Network, ...]:
    """An operator's list of CIDRs (a host address is taken as its own network)."""
    return tuple(ipaddress.ip_network(cidr, strict=False) for cidr in cidrs)


async def system_resolver(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def address_allowed(address: Address, allow_private: Sequence[Network] = ()) -> bool:
    """Whether Summit may connect to ``address``: public, or inside a network the operator
    allowed, and so is every IPv4 address it tunnels to."""
    address = _unmapped(address)
    return all(
        any(inner in network for network in allow_private) or _is_public(inner)
        for inner in _embedded(address)
    )


async def resolve_allowed(
    target: Target,
    *,
    allow_private: Sequence[Network] = (),
    resolver: Resolver = system_resolver,
    timeout_s: float = 30.0,
    reaching: str = "plugins",
) -> list[Address]:
    """The addresses ``target``'s host resolves to, each checked with :func:`address_allowed`
    (the connection must then go to one of exactly these). :class:`EgressFailed` when the name
    does not resolve, :class:`EgressRefused` when any address is not allowed; the address stays
    out of that message, so ``reaching`` (who asked) cannot learn internal DNS through it."""
    if target.literal is not None:
        candidates = [target.literal]
    else:
        try:
            async with asyncio.timeout(timeout_s):
                answers = await resolver(target.host, target.port)
        except TimeoutError:
            raise EgressFailed("upstream_timeout", f"resolving {target.host} timed out") from None
        except OSError as exc:
            raise EgressFailed(
                "upstream_unreachable", f"{target.host} does not resolve: {exc}"
            ) from None
        candidates = []
        for answer in answers:
            try:
                candidates.append(ipaddress.ip_address(answer))
            except ValueError:
                raise EgressRefused(
                    "address_not_allowed", f"{target.host} resolved to a non-address"
                ) from None
    if not candidates:
        raise EgressFailed("upstream_unreachable", f"{target.host} has no address")
    addresses: list[Address] = []
    for candidate in candidates:
        address = _unmapped(candidate)
        if not address_allowed(address, allow_private):
            raise EgressRefused(
                "address_not_allowed",
                f"{target.host} resolves to an address {reaching} may not reach",
            )
        if address not in addresses:
            addresses.append(address)
    return addresses


def parse_url(url: str) -> Target:
    """An http(s) URL split into what a connection needs; :class:`EgressRefused` (code
    ``bad_url``) for anything else, credentials in the URL included."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise EgressRefused("bad_url", f"not a URL: {exc}") from None
    if parsed.scheme not in ("http", "https"):
        raise EgressRefused("bad_url", "only http and https URLs are allowed")
    if parsed.userinfo:
        raise EgressRefused("bad_url", "credentials in the URL are not allowed")
    host = canonical_host(parsed.raw_host.decode("ascii"))
    if not host:
        raise EgressRefused("bad_url", "the URL has no host")
    literal = _ip_literal(host)
    if literal is None and (len(host) > 253 or not _HOST_NAME.fullmatch(host)):
        raise EgressRefused("bad_url", f"{host!r} is not a host name")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    if not 0 < port < 65536:
        raise EgressRefused("bad_url", f"port {port} is out of range")
    return Target(parsed.scheme, host, port, parsed.raw_path, literal)


def canonical_host(host: str) -> str:
    """``host`` as names are compared: lower case, IDNA, no trailing dot, an IP literal in
    canonical form without brackets."""
    host = host.strip().lower().removesuffix(".")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    literal = _ip_literal(host)
    if literal is not None:
        return str(literal)
    if not host.isascii():
        try:
            return host.encode("idna").decode("ascii")
        except UnicodeError:
            return host
    return host


def _ip_literal(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _unmapped(address: Address) -> Address:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _embedded(address: Address) -> list[Address]:
    """The address and every IPv4 address it tunnels to, each of which must be allowed:
    ``2002:7f00:1::`` (6to4) or ``64:ff9b::a00:1`` (NAT64) would otherwise smuggle loopback
    or private space past a check that looks only at the IPv6 address."""
    found: list[Address] = [address]
    if isinstance(address, ipaddress.IPv6Address):
        if address.sixtofour is not None:
            found.append(address.sixtofour)
        if address.teredo is not None:
            found.extend(address.teredo)
        if address in _NAT64:
            found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return found


def _is_public(address: Address) -> bool:
    # is_global alone admits multicast, so every category is refused explicitly.
    return address.is_global and not (
        address.is_loopback
        or address.is_private
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or (isinstance(address, ipaddress.IPv6Address) and address.is_site_local)
    )
