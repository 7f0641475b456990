"""A keep-alive pool of HTTP/1.1 connections to one origin: h11 for the protocol, asyncio
streams for the bytes.

Why not httpcore's pool: it re-matches every queued request against every connection on each
event, and each exchange goes through anyio's locks and task lookups; measured on the webhook
sender that was 0.5 ms of CPU per request, more than everything else a delivery costs. Every
request here goes to one origin, so a stack of idle connections is all the bookkeeping needed.

A request that fails on a *reused* connection before a byte of the answer arrived is sent
once more on a new connection: the server closed the idle connection as we wrote (the
standard keep-alive race), so it never saw the request.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import h11

__all__ = ["BodyTooLarge", "Connector", "H1Pool", "H1Response", "ProtocolFailure"]

Connector = Callable[[], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]
READ_CHUNK = 64 * 1024


class ProtocolFailure(Exception):
    """The peer broke HTTP/1.1 or closed the connection mid-answer."""


class BodyTooLarge(Exception):
    def __init__(self, seen: int, cap: int) -> None:
        super().__init__(f"answer of at least {seen} bytes is over the cap of {cap}")
        self.seen = seen
        self.cap = cap


@dataclass(frozen=True)
class H1Response:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=64 * 1024)
        self.idle_since = time.monotonic()
        self.reused = False
        self.answer_started = False

    def usable(self, expiry_s: float) -> bool:
        return (
            not self.reader.at_eof()
            and not self.writer.is_closing()
            and time.monotonic() - self.idle_since < expiry_s
        )

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()

    async def exchange(
        self,
        method: bytes,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        max_body: int,
        *,
        truncate: bool,
    ) -> H1Response:
        conn = self.h11
        self.answer_started = False
        out = conn.send(h11.Request(method=method, target=target, headers=headers))
        assert out is not None
        if body:
            out += conn.send(h11.Data(data=body)) or b""
        out += conn.send(h11.EndOfMessage()) or b""
        self.writer.write(out)
        await self.writer.drain()
        status = 0
        answer_headers: list[tuple[bytes, bytes]] = []
        chunks: list[bytes] = []
        size = 0
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                raise ProtocolFailure(f"bad HTTP from the peer: {exc}") from None
            if event is h11.NEED_DATA:
                data = await self.reader.read(READ_CHUNK)
                if data:
                    self.answer_started = True
                conn.receive_data(data)
                continue
            if isinstance(event, h11.Response):
                status = event.status_code
                answer_headers = list(event.headers)
            elif isinstance(event, h11.Data):
                size += len(event.data)
                if size > max_body:
                    if not truncate:
                        raise BodyTooLarge(size, max_body)
                    # Keep what fits, drop the connection (the rest is never read).
                    chunks.append(event.data[: max_body - (size - len(event.data))])
                    self.h11 = h11.Connection(h11.CLIENT)  # poisoned: not reusable
                    self.close()
                    return H1Response(status, answer_headers, b"".join(chunks))
                chunks.append(event.data)
            elif isinstance(event, h11.EndOfMessage):
                break
            elif isinstance(event, h11.ConnectionClosed):
                raise ProtocolFailure("the peer closed the connection mid-answer")
            # InformationalResponse (1xx): keep reading.
        return H1Response(status, answer_headers, b"".join(chunks))

    def recycle(self) -> bool:
        conn = self.h11
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
            self.idle_since = time.monotonic()
            self.reused = True
            return True
        return False


class H1Pool:
    def __init__(
        self,
        connect: Connector,
        *,
        host_header: bytes,
        max_connections: int = 64,
        keepalive_expiry_s: float = 4.0,
        retry_stale: bool = True,
    ) -> None:
        self._connect = connect
        self._retry_stale = retry_stale
        self.host_header = host_header
        self._expiry = keepalive_expiry_s
        self._idle: list[_Connection] = []
        self._slots = asyncio.Semaphore(max_connections)
        self._open: set[_Connection] = set()
        self._closed = False

    async def _take(self) -> _Connection:
        while self._idle:
            connection = self._idle.pop()
            if connection.usable(self._expiry):
                return connection
            self._drop(connection)
        reader, writer = await self._connect()
        connection = _Connection(reader, writer)
        self._open.add(connection)
        return connection

    def _drop(self, connection: _Connection) -> None:
        self._open.discard(connection)
        connection.close()

    async def request(
        self,
        method: bytes,
        target: bytes,
        *,
        headers: list[tuple[bytes, bytes]],
        content: bytes = b"",
        max_body: int = 1024 * 1024,
        truncate: bool = False,
    ) -> H1Response:
        """Send one request; ``max_body`` caps the answer (:class:`BodyTooLarge`, or cut to
        the cap with ``truncate``). Host and Content-Length are added here."""
        full = [
            (b"host", self.host_header),
            (b"content-length", str(len(content)).encode()),
            *headers,
        ]
        async with self._slots:
            for _ in range(2):
                connection = await self._take()
                try:
                    response = await connection.exchange(
                        method, target, full, content, max_body, truncate=truncate
                    )
                except BaseException as exc:
                    self._drop(connection)
                    stale = isinstance(exc, ProtocolFailure | ConnectionError)
                    if (
                        self._retry_stale
                        and connection.reused
                        and stale
                        and not connection.answer_started
                    ):
                        continue  # the keep-alive race: the server never saw it
                    raise
                if not self._closed and connection.recycle():
                    self._idle.append(connection)
                else:
                    self._drop(connection)
                return response
            raise ProtocolFailure("the connection closed twice before an answer")

    async def aclose(self) -> None:
        self._closed = True
        connections, self._open, self._idle = list(self._open), set(), []
        for connection in connections:
            connection.close()
