"""The egress proxy: the only road from a plugin with ``network:access`` to the outside world.

A plugin container has no network. It hands the host API a request (method, URL, headers,
body) and :class:`EgressProxy` makes it, under the plugin's :class:`EgressPolicy`:

* the URL's host must be one of ``allowed_hosts`` (exact names or ``*.example.com``);
* the proxy resolves the name itself and refuses it if any address it resolves to is not
  public (loopback, private, link-local, metadata services, ...) unless the operator listed
  that range in ``allow_private`` (the address policy of ``targets.py``, which webhooks share);
  it then connects to exactly the address it checked, so a second DNS answer (rebinding)
  never gets a say;
* TLS is verified against the name in the URL, not the address connected to;
* redirects are handed back to the plugin, whose next request is checked afresh;
* request and response sizes are capped and traffic is throttled to the plugin's
  ``network_mbps``.

Refusals raise :class:`EgressRefused`, upstream trouble :class:`EgressFailed`; both carry the
HTTP status the host API answers with.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass

import httpcore

from orchestrator.domain.http_grammar import FIELD_VALUE, TOKEN
from orchestrator.security.targets import (
    Address,
    EgressError,
    EgressFailed,
    EgressRefused,
    Resolver,
    Target,
    canonical_host,
    networks,
    parse_url,
    resolve_allowed,
    system_resolver,
)

# The errors and the resolver type belong to the address policy; they are named here too
# because they are this proxy's API (what request() raises, what resolver= takes).
__all__ = [
    "EgressError",
    "EgressFailed",
    "EgressPolicy",
    "EgressProxy",
    "EgressRefused",
    "EgressResponse",
    "Resolver",
]

_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
# The proxy frames the body itself, and Host must name what the policy checked.
_REQUEST_DROPPED = _HOP_BY_HOP | {"host", "content-length"}
_METHODS_WITH_BODY = frozenset({"POST", "PUT", "PATCH"})

_MAX_HEADER_BYTES = 64 * 1024
_UPLOAD_CHUNK = 16 * 1024
# Long enough to absorb scheduling jitter, short enough that a plugin cannot bank a burst.
_BURST_S = 0.1


@dataclass(frozen=True)
class EgressPolicy:
    """What one plugin may reach, from its manifest (``network.allowed_hosts``) and its
    resources (``network_mbps``; 0 means unthrottled)."""

    allowed_hosts: tuple[str, ...]
    mbps: float

    def allows_host(self, host: str) -> bool:
        """``*.example.com`` admits ``a.example.com`` and ``a.b.example.com`` but not the
        apex; comparison ignores case and a trailing dot; IP literals compare as addresses
        written in canonical form."""
        wanted = canonical_host(host)
        if not wanted:
            return False
        for pattern in self.allowed_hosts:
            if pattern.startswith("*."):
                suffix = "." + canonical_host(pattern[2:])
                if suffix != "." and wanted.endswith(suffix) and len(wanted) > len(suffix):
                    return True
            elif wanted == canonical_host(pattern):
                return True
        return False


@dataclass(frozen=True)
class EgressResponse:
    """The upstream's answer. ``headers`` keeps repeats (``Set-Cookie``) in order; hop-by-hop
    headers are gone and ``body`` is exactly the bytes received (still content-encoded)."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


@dataclass
class _Usage:
    bytes_out: int = 0
    bytes_in: int = 0
    requests: int = 0
    refused: int = 0
    failed: int = 0


class _TokenBucket:
    """Bytes per second shared by all of one plugin's requests.

    Spending may drive the balance below zero; the spender then sleeps off its own debt, so
    a chunk larger than the burst still goes through and concurrent spenders queue up behind
    each other's debt instead of each getting the full rate.
    """

    def __init__(self, bytes_per_s: float) -> None:
        self._rate = bytes_per_s
        self._tokens = self._capacity
        self._stamp = time.monotonic()

    @property
    def _capacity(self) -> float:
        return max(self._rate * _BURST_S, 1.0)

    async def spend(self, n: int, bytes_per_s: float) -> None:
        now = time.monotonic()
        self._tokens = min(self._capacity, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now
        # An operator may change network_mbps while the plugin runs; the next byte obeys it.
        self._rate = bytes_per_s
        self._tokens -= n
        if self._tokens < 0:
            await asyncio.sleep(-self._tokens / self._rate)


class EgressProxy:
    """Makes HTTP requests on behalf of plugins, within each plugin's :class:`EgressPolicy`.

    One instance serves every plugin (usage and throttling are kept per ``plugin_id``) and
    belongs to the event loop that first uses it. No connection is ever reused: a pooled
    connection is keyed by address, so it would carry a request for one name over TLS that
    was verified for another.
    """

    def __init__(
        self,
        *,
        allow_private: Sequence[str] = (),
        timeout_s: float = 30,
        max_response_bytes: int = 10 * 1024 * 1024,
        max_request_bytes: int = 1024 * 1024,
        resolver: Resolver | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._allow_private = networks(allow_private)
        self._timeout_s = timeout_s
        self._max_response_bytes = max_response_bytes
        self._max_request_bytes = max_request_bytes
        self._resolver: Resolver = resolver or system_resolver
        self._ssl_context = ssl_context or ssl.create_default_context()
        self._usage: dict[str, _Usage] = {}
        self._buckets: dict[str, _TokenBucket] = {}
        self._open: set[httpcore.AsyncHTTPConnection] = set()
        self._closed = False

    def usage(self, plugin_id: str) -> dict[str, int]:
        """Counters since this proxy started: ``bytes_out`` and ``bytes_in`` (headers and
        bodies), ``requests`` (every call), and of those ``refused`` and ``failed``."""
        usage = self._usage.get(plugin_id, _Usage())
        return {
            "bytes_out": usage.bytes_out,
            "bytes_in": usage.bytes_in,
            "requests": usage.requests,
            "refused": usage.refused,
            "failed": usage.failed,
        }

    async def aclose(self) -> None:
        """Refuse new requests and cut the ones in flight."""
        self._closed = True
        for connection in list(self._open):
            await connection.aclose()

    async def request(
        self,
        plugin_id: str,
        policy: EgressPolicy,
        *,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes,
    ) -> EgressResponse:
        """Make one request for ``plugin_id``; raises :class:`EgressRefused` or
        :class:`EgressFailed` instead of returning when it cannot answer with a response."""
        if self._closed:
            raise RuntimeError("the egress proxy is closed")
        usage = self._usage.setdefault(plugin_id, _Usage())
        usage.requests += 1
        try:
            target = parse_url(url)
            verb, sent_headers = self._prepare(target, method, headers, body)
            if not policy.allows_host(target.host):
                raise EgressRefused(
                    "host_not_allowed", f"{target.host} is not in the plugin's allowed_hosts"
                )
            addresses = await self._addresses(target)
            return await self._forward(
                plugin_id, policy, usage, target, addresses, verb, sent_headers, body
            )
        except EgressRefused:
            usage.refused += 1
            raise
        except EgressFailed:
            usage.failed += 1
            raise

    def _prepare(
        self, target: Target, method: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[bytes, list[tuple[bytes, bytes]]]:
        verb = method.upper()
        if not TOKEN.fullmatch(verb) or verb == "CONNECT":
            raise EgressRefused("bad_request", f"method {method!r} is not allowed")
        if len(body) > self._max_request_bytes:
            raise EgressRefused(
                "request_too_large",
                f"request body of {len(body)} bytes exceeds {self._max_request_bytes}",
            )
        named_by_connection = {
            token.strip().lower()
            for name, value in headers.items()
            if name.lower() == "connection"
            for token in value.split(",")
        }
        sent: list[tuple[bytes, bytes]] = [(b"Host", _host_header(target).encode("ascii"))]
        for name, value in headers.items():
            lowered = name.lower()
            if (
                lowered in _REQUEST_DROPPED
                or lowered.startswith("proxy-")
                or lowered in named_by_connection
            ):
                continue
            raw_value = value.strip().encode("utf-8")
            # Checked here, a smuggling attempt is a clear refusal, not a protocol error
            # halfway through the exchange.
            if not TOKEN.fullmatch(name) or not FIELD_VALUE.fullmatch(raw_value):
                raise EgressRefused("bad_request", f"header {name!r} is not valid HTTP")
            sent.append((name.encode("ascii"), raw_value))
        if body or verb in _METHODS_WITH_BODY:
            sent.append((b"Content-Length", str(len(body)).encode("ascii")))
        if _header_bytes(sent) > _MAX_HEADER_BYTES:
            raise EgressRefused(
                "request_too_large", f"request headers exceed {_MAX_HEADER_BYTES} bytes"
            )
        return verb.encode("ascii"), sent

    async def _addresses(self, target: Target) -> list[Address]:
        return await resolve_allowed(
            target,
            allow_private=self._allow_private,
            resolver=self._resolver,
            timeout_s=self._timeout_s,
        )

    async def _forward(
        self,
        plugin_id: str,
        policy: EgressPolicy,
        usage: _Usage,
        target: Target,
        addresses: list[Address],
        method: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
    ) -> EgressResponse:
        bucket = self._bucket(plugin_id, policy)
        last_error = "no address to try"
        try:
            for address in addresses:
                try:
                    return await self._exchange(
                        usage, bucket, policy, target, address, method, headers, body
                    )
                except httpcore.ConnectError as exc:
                    # Nothing was sent yet, so the next address may be tried safely.
                    last_error = str(exc) or type(exc).__name__
        except httpcore.TimeoutException as exc:
            raise EgressFailed(
                "upstream_timeout", f"{target.host} did not answer within {self._timeout_s}s"
            ) from exc
        except (httpcore.NetworkError, httpcore.ProtocolError) as exc:
            raise EgressFailed(
                "upstream_unreachable", f"{target.host}: {exc or type(exc).__name__}"
            ) from exc
        raise EgressFailed("upstream_unreachable", f"cannot connect to {target.host}: {last_error}")

    async def _exchange(
        self,
        usage: _Usage,
        bucket: _TokenBucket | None,
        policy: EgressPolicy,
        target: Target,
        address: Address,
        method: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
    ) -> EgressResponse:
        ip = str(address).encode("ascii")
        connection = httpcore.AsyncHTTPConnection(
            origin=httpcore.Origin(target.scheme.encode("ascii"), ip, target.port),
            ssl_context=self._ssl_context,
            http1=True,
            http2=False,
            retries=0,
        )
        extensions: dict[str, object] = {
            "timeout": dict.fromkeys(("connect", "read", "write", "pool"), self._timeout_s)
        }
        if target.scheme == "https" and target.literal is None:
            # httpcore hands this to the TLS handshake as server_hostname, which is both the
            # SNI and the name the certificate is verified against; the socket itself goes to
            # the address in the origin.
            extensions["sni_hostname"] = target.host
        request = httpcore.Request(
            method,
            httpcore.URL(
                scheme=target.scheme.encode("ascii"),
                host=ip,
                port=target.port,
                target=target.target,
            ),
            headers=headers,
            content=self._upload(usage, bucket, policy, headers, body),
            extensions=extensions,
        )
        self._open.add(connection)
        try:
            response = await connection.handle_async_request(request)
            try:
                kept = _response_headers(response.headers)
                await self._account_in(usage, bucket, policy, _header_bytes(response.headers))
                declared = _content_length(response.headers)
                if declared is not None and declared > self._max_response_bytes:
                    raise EgressFailed(
                        "response_too_large",
                        f"response of {declared} bytes exceeds {self._max_response_bytes}",
                    )
                received = bytearray()
                async for chunk in response.aiter_stream():
                    if len(received) + len(chunk) > self._max_response_bytes:
                        raise EgressFailed(
                            "response_too_large",
                            f"response exceeds {self._max_response_bytes} bytes",
                        )
                    received += chunk
                    await self._account_in(usage, bucket, policy, len(chunk))
            finally:
                await response.aclose()
        finally:
            self._open.discard(connection)
            await connection.aclose()
        return EgressResponse(status=response.status, headers=kept, body=bytes(received))

    async def _upload(
        self,
        usage: _Usage,
        bucket: _TokenBucket | None,
        policy: EgressPolicy,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
    ) -> AsyncIterator[bytes]:
        # Metered as it is handed to the socket, so a throttled upload trickles out instead
        # of waiting its whole allowance up front and then bursting.
        await self._account_out(usage, bucket, policy, _header_bytes(headers))
        for start in range(0, len(body), _UPLOAD_CHUNK):
            chunk = body[start : start + _UPLOAD_CHUNK]
            await self._account_out(usage, bucket, policy, len(chunk))
            yield chunk

    async def _account_out(
        self, usage: _Usage, bucket: _TokenBucket | None, policy: EgressPolicy, n: int
    ) -> None:
        usage.bytes_out += n
        if bucket is not None:
            await bucket.spend(n, _bytes_per_s(policy))

    async def _account_in(
        self, usage: _Usage, bucket: _TokenBucket | None, policy: EgressPolicy, n: int
    ) -> None:
        usage.bytes_in += n
        if bucket is not None:
            await bucket.spend(n, _bytes_per_s(policy))

    def _bucket(self, plugin_id: str, policy: EgressPolicy) -> _TokenBucket | None:
        if policy.mbps <= 0:
            return None
        bucket = self._buckets.get(plugin_id)
        if bucket is None:
            bucket = self._buckets[plugin_id] = _TokenBucket(_bytes_per_s(policy))
        return bucket


def _bytes_per_s(policy: EgressPolicy) -> float:
    return policy.mbps * 1_000_000 / 8


def _host_header(target: Target) -> str:
    host = f"[{target.host}]" if ":" in target.host else target.host
    default = 443 if target.scheme == "https" else 80
    return host if target.port == default else f"{host}:{target.port}"


def _response_headers(raw: Iterable[tuple[bytes, bytes]]) -> tuple[tuple[str, str], ...]:
    pairs = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in raw]
    named_by_connection = {
        token.strip().lower()
        for name, value in pairs
        if name.lower() == "connection"
        for token in value.split(",")
    }
    return tuple(
        (name, value)
        for name, value in pairs
        if name.lower() not in _HOP_BY_HOP and name.lower() not in named_by_connection
    )


def _content_length(raw: Iterable[tuple[bytes, bytes]]) -> int | None:
    for name, value in raw:
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _header_bytes(raw: Iterable[tuple[bytes, bytes]]) -> int:
    # Each header costs "name: value\r\n" on the wire.
    return sum(len(name) + len(value) + 4 for name, value in raw)
