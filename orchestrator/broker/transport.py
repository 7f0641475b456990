"""How the broker reaches a plugin: the ``PluginTransport`` seam and its two implementations.

* :class:`UnixTransport` (Docker): the container's unix socket, opened without following a
  link the plugin may have planted in its socket folder.
* :class:`TcpTransport` (Kubernetes): ``host:port`` of the pod, every request carrying
  ``Authorization: Bearer <call token>`` because a network address, unlike the socket folder
  only the orchestrator can reach, is open to whatever the cluster's network plugin lets by.

Both are :class:`~orchestrator.broker.h1pool.H1Pool` (httptools on asyncio streams: httpx's
models and httpcore's pool cost more CPU than the plugin's own work on small calls). The broker
builds one per endpoint through a :class:`TransportFactory`; :func:`open_transport`, the
default, picks by the endpoint's kind, and tests inject one of their own.

A transport's contract, which ``wire.py`` relies on to map failures: an answer over
``max_body`` raises :class:`BodyTooLarge`; any other failure to get an answer raises some
other ``Exception``; a request that fails on a reused connection is not sent again (only
idempotent extensions are retried, by the broker, within the caller's deadline).
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from summit_sdk.unixsock import checked_socket

from orchestrator.broker.h1pool import BodyTooLarge, Connector, H1Pool, H1Response
from orchestrator.runtime.endpoints import Endpoint, TcpEndpoint, UnixEndpoint

__all__ = [
    "CONNECT_BACKOFF_CAP_S",
    "CONNECT_BACKOFF_FIRST_S",
    "BodyTooLarge",
    "H1Response",
    "PluginTransport",
    "TcpTransport",
    "TransportFactory",
    "UnixTransport",
    "open_transport",
]

Headers = list[tuple[bytes, bytes]]


class PluginTransport(Protocol):
    async def request(
        self,
        method: bytes,
        target: bytes,
        *,
        headers: Headers,
        content: bytes = b"",
        max_body: int = 1024 * 1024,
    ) -> H1Response:
        """One exchange; ``headers`` come without Host and Content-Length (the transport's)."""
        ...

    async def aclose(self) -> None:
        """Close every connection; calls still in flight fail."""
        ...


class TransportFactory(Protocol):
    def __call__(
        self, endpoint: Endpoint, *, max_connections: int, call_token: str | None
    ) -> PluginTransport:
        """A transport to ``endpoint`` with at most ``max_connections`` open at once."""
        ...


# A connect that fails before a byte is written is safe to repeat for any extension: the
# plugin's accept queue was full for a moment (EAGAIN on a unix socket), or it is restarting
# (ECONNREFUSED). The caller's deadline (asyncio.timeout around the call) ends the retries.
_CONNECT_RETRYABLE = (BlockingIOError, ConnectionRefusedError)
CONNECT_BACKOFF_FIRST_S = 0.002
CONNECT_BACKOFF_CAP_S = 0.1


def _retrying(connect: Connector) -> Connector:
    async def connect_with_retries() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        delay = CONNECT_BACKOFF_FIRST_S
        while True:
            try:
                return await connect()
            except _CONNECT_RETRYABLE:
                await asyncio.sleep(delay)
                delay = min(delay * 2, CONNECT_BACKOFF_CAP_S)

    return connect_with_retries


class UnixTransport(H1Pool):
    def __init__(self, endpoint: UnixEndpoint, *, max_connections: int) -> None:
        path = str(endpoint.path)

        async def connect() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
            with checked_socket(path) as safe:
                return await asyncio.open_unix_connection(safe)

        super().__init__(
            _retrying(connect),
            host_header=b"plugin",
            # No more connections than calls the plugin may have in flight: a burst of
            # callers queues here instead of flooding its accept queue.
            max_connections=max_connections,
            retry_stale=False,
        )


class TcpTransport(H1Pool):
    def __init__(
        self, endpoint: TcpEndpoint, *, max_connections: int, call_token: str | None = None
    ) -> None:
        host, port = endpoint.host, endpoint.port

        async def connect() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
            return await asyncio.open_connection(host, port)

        super().__init__(
            _retrying(connect),
            host_header=endpoint.base_url.removeprefix("http://").encode("ascii"),
            max_connections=max_connections,
            retry_stale=False,
        )
        self._authorization: Headers = (
            [(b"authorization", b"Bearer " + call_token.encode("ascii"))] if call_token else []
        )

    async def request(
        self,
        method: bytes,
        target: bytes,
        *,
        headers: Headers,
        content: bytes = b"",
        max_body: int = 1024 * 1024,
        truncate: bool = False,
    ) -> H1Response:
        return await super().request(
            method,
            target,
            headers=headers + self._authorization,
            content=content,
            max_body=max_body,
            truncate=truncate,
        )


def open_transport(
    endpoint: Endpoint, *, max_connections: int, call_token: str | None = None
) -> PluginTransport:
    """The default :class:`TransportFactory`: by the endpoint's kind. A call token is only
    sent over TCP; the unix socket's folder is the orchestrator's, so only it can connect."""
    if isinstance(endpoint, UnixEndpoint):
        return UnixTransport(endpoint, max_connections=max_connections)
    return TcpTransport(endpoint, max_connections=max_connections, call_token=call_token)
