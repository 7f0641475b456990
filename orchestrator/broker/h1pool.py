"""A keep-alive pool of HTTP/1.1 connections to one origin: httptools (llhttp) parses the
answers, asyncio streams carry the bytes.

Why not httpcore's pool: it re-matches every queued request against every connection on each
event, and each exchange goes through anyio's locks and task lookups; measured on the webhook
sender that was 0.5 ms of CPU per request, more than everything else a delivery costs. Every
request here goes to one origin, so a stack of idle connections is all the bookkeeping needed.
Why not h11: its pure-Python state machine was the largest single item left in the broker's
profile (about 0.1 ms per call); llhttp, the parser uvicorn already uses, does it in C.

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

import httptools

from orchestrator.domain.http_grammar import FIELD_VALUE, REQUEST_TARGET, TOKEN_BYTES

__all__ = [
    "BodyTooLarge",
    "Connector",
    "H1Pool",
    "H1Response",
    "ProtocolFailure",
]

Connector = Callable[[], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]
READ_CHUNK = 64 * 1024
MAX_HEADER_BYTES = 64 * 1024


class ProtocolFailure(Exception):
    """The peer broke HTTP/1.1 or closed the connection mid-answer."""


class BodyTooLarge(Exception):
    def __init__(self, seen: int, cap: int) -> None:
        super().__init__(f"answer of at least {seen} bytes is over the cap of {cap}")
        self.seen = seen
        self.cap = cap


@dataclass(frozen=True)
class Phases:
    """Where an exchange's time went, in seconds: waiting for one of the pool's connection
    slots, connecting (0 on a kept-alive connection), the peer's time from our last byte to
    its first, and reading the rest of its answer."""

    waited_s: float = 0.0
    connect_s: float = 0.0
    peer_s: float = 0.0
    read_s: float = 0.0


NO_PHASES = Phases()


@dataclass(frozen=True)
class H1Response:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    phases: Phases = NO_PHASES


def encode_request(
    method: bytes, target: bytes, host: bytes, headers: list[tuple[bytes, bytes]], body: bytes
) -> bytes:
    """The request (Host and Content-Length first) as one buffer; refuses a request line or
    fields that would break the framing. ``host`` is the pool's own, checked once."""
    if not REQUEST_TARGET.fullmatch(target) or not TOKEN_BYTES.fullmatch(method):
        raise ValueError(f"invalid request line: {method!r} {target!r}")
    head = b"%s %s HTTP/1.1\r\nhost: %s\r\ncontent-length: %d"
    lines = [head % (method, target, host, len(body))]
    for name, value in headers:
        if not TOKEN_BYTES.fullmatch(name) or not FIELD_VALUE.fullmatch(value):
            raise ValueError(f"invalid header field {name!r}")
        lines.append(name + b": " + value)
    lines.append(b"")
    lines.append(body)
    return b"\r\n".join(lines)


class _Answer:
    """httptools callbacks collecting one response (1xx interim answers are skipped)."""

    __slots__ = (
        "body_framed",
        "chunks",
        "complete",
        "extra",
        "head_bytes",
        "headers",
        "keep_alive",
        "max_body",
        "over",
        "parser",
        "size",
        "status",
        "truncate",
    )

    def __init__(self, max_body: int, truncate: bool) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.max_body = max_body
        self.truncate = truncate
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.chunks: list[bytes] = []
        self.size = 0
        self.head_bytes = 0
        self.body_framed = False  # Content-Length or chunked: the end is known without EOF
        self.complete = False
        self.keep_alive = False
        self.over = False
        self.extra = False  # bytes of a further message: the connection is not reusable

    def on_message_begin(self) -> None:
        if self.complete:
            self.extra = True
            return
        self.headers = []
        self.head_bytes = 0
        self.body_framed = False

    def on_status(self, status: bytes) -> None:
        self._count(len(status))

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.complete:
            return
        self._count(len(name) + len(value))
        lowered = name.lower()
        if lowered in (b"content-length", b"transfer-encoding"):
            self.body_framed = True
        self.headers.append((lowered, value))

    def on_headers_complete(self) -> None:
        if not self.complete:
            self.status = self.parser.get_status_code()
            # Asked here: llhttp forgets it once the message is complete.
            self.keep_alive = self.parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        if self.complete or self.over:
            return
        self.size += len(body)
        if self.size > self.max_body:
            self.over = True
            if self.truncate:
                self.chunks.append(body[: self.max_body - (self.size - len(body))])
            return
        self.chunks.append(body)

    def on_message_complete(self) -> None:
        if self.complete:
            return
        # 1xx answers are interim (101 is never asked for): the real one follows.
        if 100 <= self.status < 200:
            self.status = 0
            return
        self.complete = True

    def _count(self, n: int) -> None:
        self.head_bytes += n
        if self.head_bytes > MAX_HEADER_BYTES:
            raise ProtocolFailure(f"answer head over {MAX_HEADER_BYTES} bytes")

    def response(self) -> H1Response:
        return H1Response(self.status, self.headers, b"".join(self.chunks))


class _Connection:
    sent_at = first_byte_at = 0.0

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.idle_since = time.monotonic()
        self.reused = False
        self.answer_started = False
        self.reusable = False

    def usable(self, expiry_s: float) -> bool:
        return (
            not self.reader.at_eof()
            and not self.writer.is_closing()
            and time.monotonic() - self.idle_since < expiry_s
        )

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()

    async def exchange(self, request: bytes, max_body: int, *, truncate: bool) -> H1Response:
        self.answer_started = False
        self.reusable = False
        self.writer.write(request)
        await self.writer.drain()
        self.sent_at = self.first_byte_at = time.perf_counter()
        answer = _Answer(max_body, truncate)
        parser = answer.parser
        # Bytes read while no final head is complete. httptools reports a header only once
        # its line ends, so a peer streaming one endless line (or endless 1xx answers) would
        # pass the callbacks' count: this one holds whatever the bytes are.
        head_read = 0
        while not answer.complete:
            data = await self.reader.read(READ_CHUNK)
            if not data:
                if answer.status and not answer.body_framed and not answer.over:
                    # Delimited by the close: what came is the whole body.
                    return answer.response()
                raise ProtocolFailure("the peer closed the connection mid-answer")
            if not self.answer_started:
                self.first_byte_at = time.perf_counter()
            self.answer_started = True
            try:
                parser.feed_data(data)
            except httptools.HttpParserUpgrade:  # 101 to a request that asked for none
                raise ProtocolFailure("the peer switched protocols unasked") from None
            except httptools.HttpParserError as exc:
                if isinstance(exc.__context__, ProtocolFailure):
                    raise exc.__context__ from None
                raise ProtocolFailure(f"bad HTTP from the peer: {exc}") from None
            if answer.status < 200:  # 0: the head is still coming; 1xx: an interim answer
                head_read += len(data)
                if head_read > MAX_HEADER_BYTES:
                    raise ProtocolFailure(f"answer head over {MAX_HEADER_BYTES} bytes")
            if answer.over:
                if not truncate:
                    raise BodyTooLarge(answer.size, max_body)
                # Keep what fits, drop the connection (the rest is never read).
                return answer.response()
        self.reusable = answer.keep_alive and not answer.extra and not self.reader.at_eof()
        return answer.response()

    def recycle(self) -> bool:
        if self.reusable:
            self.reusable = False
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
        if not host_header or not FIELD_VALUE.fullmatch(host_header) or b" " in host_header:
            raise ValueError(f"invalid host header {host_header!r}")
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
        request = encode_request(method, target, self.host_header, headers, content)
        asked = time.perf_counter()
        async with self._slots:
            for _ in range(2):
                admitted = time.perf_counter()
                connection = await self._take()
                connected = time.perf_counter()
                try:
                    response = await connection.exchange(request, max_body, truncate=truncate)
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
                done = time.perf_counter()
                return H1Response(
                    response.status,
                    response.headers,
                    response.body,
                    Phases(
                        admitted - asked,
                        connected - admitted,
                        connection.first_byte_at - connection.sent_at,
                        done - connection.first_byte_at,
                    ),
                )
            raise ProtocolFailure("the connection closed twice before an answer")

    async def aclose(self) -> None:
        self._closed = True
        connections, self._open, self._idle = list(self._open), set(), []
        for connection in connections:
            connection.close()
