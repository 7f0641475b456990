"""H1Pool against a real loopback server that answers each request with scripted bytes:
framing (length, chunked, close-delimited, 1xx), keep-alive reuse and its race, caps, and
broken peers."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from orchestrator.broker.h1pool import (
    MAX_HEADER_BYTES,
    READ_CHUNK,
    BodyTooLarge,
    H1Pool,
    ProtocolFailure,
    encode_request,
)

Script = Callable[[int, bytes], bytes | None]  # (request number, request) -> answer, None: close


def run(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    @functools.wraps(test)
    def sync(*args: Any, **kwargs: Any) -> None:
        asyncio.run(test(*args, **kwargs))

    return sync


class Server:
    """Reads one request at a time (head + Content-Length body) and writes what ``script``
    returns; ``None`` closes the connection without an answer."""

    def __init__(self, script: Script, *, close_after_answer: bool = False) -> None:
        self.script = script
        self.close_after_answer = close_after_answer
        self.requests: list[bytes] = []
        self.connections = 0
        self.server: asyncio.Server | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> Server:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    def pool(self, **options: object) -> H1Pool:
        async def connect() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
            return await asyncio.open_connection("127.0.0.1", self.port)

        return H1Pool(connect, host_header=b"test", **options)  # type: ignore[arg-type]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                request = head + await reader.readexactly(length)
                self.requests.append(request)
                answer = self.script(len(self.requests), request)
                if answer is None:
                    break
                writer.write(answer)
                await writer.drain()
                if self.close_after_answer or b"connection: close" in answer.lower():
                    break
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()


def ok(body: bytes = b'{"ok":true}', extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n%s\r\n%s" % (len(body), extra, body)


async def post(pool: H1Pool, body: bytes = b"{}", **options: object):  # type: ignore[no-untyped-def]
    return await pool.request(
        b"POST",
        b"/summit/v1/x",
        headers=[(b"content-type", b"application/json")],
        content=body,
        **options,  # type: ignore[arg-type]
    )


@run
async def test_keep_alive_reuses_one_connection_and_sends_what_it_says() -> None:
    async with Server(lambda n, req: ok(b"answer %d" % n)) as server:
        pool = server.pool()
        for n in (1, 2, 3):
            r = await post(pool, b'{"n":%d}' % n)
            assert (r.status, r.body) == (200, b"answer %d" % n)
            assert (b"content-length", b"8") in r.headers
        await pool.aclose()
    assert server.connections == 1
    first = server.requests[0]
    assert first.startswith(b"POST /summit/v1/x HTTP/1.1\r\nhost: test\r\ncontent-length: 7\r\n")
    assert first.endswith(b'\r\n\r\n{"n":1}')


@run
async def test_chunked_close_delimited_and_interim_answers() -> None:
    answers = {
        1: b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        2: b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\nhi",
        3: b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nuntil the end",
    }
    async with Server(lambda n, req: answers[n]) as server:
        pool = server.pool()
        assert (await post(pool)).body == b"abcde"
        r = await post(pool)
        assert (r.status, r.body) == (201, b"hi")
        assert (await post(pool)).body == b"until the end"
        assert server.connections == 1  # the close-delimited answer came last
        await pool.aclose()


@run
async def test_connection_close_and_http10_are_not_reused() -> None:
    answers = {
        1: ok(extra=b"connection: close\r\n"),
        2: b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok",
        3: ok(),
    }
    async with Server(lambda n, req: answers[n]) as server:
        pool = server.pool()
        for _ in answers:
            assert (await post(pool)).status == 200
        await pool.aclose()
    assert server.connections == 3


@run
async def test_a_stale_keep_alive_connection_is_retried_once_on_a_new_one() -> None:
    # The server drops the connection on the second request without answering: the pool
    # cannot tell that from an idle close racing the write, so it resends on a new one.
    async with Server(lambda n, req: None if n == 2 else ok(b"%d" % n)) as server:
        pool = server.pool()
        assert (await post(pool)).body == b"1"
        assert (await post(pool)).body == b"3"
        await pool.aclose()
    assert server.connections == 2
    # A fresh connection is not retried: the peer saw the request.
    async with Server(lambda n, req: None) as server:
        pool = server.pool()
        with pytest.raises(ProtocolFailure, match="mid-answer"):
            await post(pool)
        await pool.aclose()
    assert len(server.requests) == 1


@run
async def test_the_body_cap_refuses_or_truncates_and_drops_the_connection() -> None:
    async with Server(lambda n, req: ok(b"x" * 100)) as server:
        pool = server.pool()
        with pytest.raises(BodyTooLarge):
            await post(pool, max_body=10)
        r = await post(pool, max_body=10, truncate=True)
        assert r.body == b"x" * 10
        assert (await post(pool)).body == b"x" * 100
        await pool.aclose()
    assert server.connections == 3


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (b"garbage\r\n\r\n", "bad HTTP"),
        (b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc", "mid-answer"),
        (b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\nab", "bad HTTP"),
        (b"HTTP/1.1 200 OK\r\nx: " + b"a" * 70_000 + b"\r\n\r\n", "head over"),
        (
            b"HTTP/1.1 101 Switching Protocols\r\nupgrade: x\r\nconnection: upgrade\r\n\r\n",
            "unasked",
        ),
    ],
)
@run
async def test_broken_answers_are_protocol_failures(answer: bytes, message: str) -> None:
    def script(n: int, req: bytes) -> bytes:
        return answer

    async with Server(script, close_after_answer=True) as server:
        pool = server.pool()
        with pytest.raises(ProtocolFailure, match=message):
            await post(pool)
        await pool.aclose()


def test_fields_that_would_break_the_framing_are_refused() -> None:
    assert encode_request(b"GET", b"/a?b=c", b"h", [(b"x-a", b"1 2")], b"") == (
        b"GET /a?b=c HTTP/1.1\r\nhost: h\r\ncontent-length: 0\r\nx-a: 1 2\r\n\r\n"
    )
    for method, target, headers in [
        (b"POST", b"/a b", []),
        (b"POST", b"a", []),
        (b"PO ST", b"/", []),
        (b"POST", b"/", [(b"x-a", b"1\r\nx-b: 2")]),
        (b"POST", b"/", [(b"x a", b"1")]),
        (b"POST", b"/", [(b"x-a", b"\x00")]),
    ]:
        with pytest.raises(ValueError):
            encode_request(method, target, b"h", headers, b"")
    with pytest.raises(ValueError, match="host"):
        H1Pool(asyncio.open_connection, host_header=b"a\r\nx: y")  # type: ignore[arg-type]


class _CountingReader:
    """The pool's end of the connection, counting the bytes the pool reads."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self.reader = reader
        self.taken = 0

    async def read(self, n: int) -> bytes:
        data = await self.reader.read(n)
        self.taken += len(data)
        return data

    def at_eof(self) -> bool:
        return self.reader.at_eof()


@pytest.mark.parametrize(
    ("opening", "filler"),
    [
        (b"HTTP/1.1 200 OK\r\nx-endless: ", b"a" * 4096),  # one header value without end
        (b"HTTP/1.1 200 ", b"O" * 4096),  # a reason phrase without end
        (b"", b"HTTP/1.1 100 Continue\r\n\r\n" * 128),  # interim answers without end
    ],
    ids=["header-value", "reason-phrase", "interim-answers"],
)
@run
async def test_an_endless_answer_head_fails_soon_after_the_cap(
    opening: bytes, filler: bytes
) -> None:
    # A peer that never finishes its head must cost about the cap to read, not what it can
    # send before the caller's deadline; the server stops on its own after 64 MiB.
    async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(opening)
            for _ in range(64 * 1024 * 1024 // len(filler)):
                writer.write(filler)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    listener = await asyncio.start_server(endless, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    readers: list[_CountingReader] = []

    async def connect() -> tuple[Any, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        readers.append(_CountingReader(reader))
        return readers[-1], writer

    pool = H1Pool(connect, host_header=b"test")
    started = asyncio.get_running_loop().time()
    try:
        with pytest.raises(ProtocolFailure, match="head over"):
            async with asyncio.timeout(10):
                await post(pool)
    finally:
        await pool.aclose()
        listener.close()
    assert asyncio.get_running_loop().time() - started < 5
    (counted,) = readers
    assert counted.taken <= MAX_HEADER_BYTES + READ_CHUNK
