"""The guarded HTTP protocol under a real uvicorn server: head cap, head deadline, connection cap.

Each test talks raw HTTP/1.1 over a socket, as a hostile client would, to a uvicorn server
running in a thread with the limits under test. The app echoes the method, path and body size.
"""

from __future__ import annotations

import asyncio
import resource
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from orchestrator.api.http_guard import HttpLimits

KIB = 1024
HEAD_CAP = 64 * KIB


async def _echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    assert scope["type"] == "http"
    size = 0
    while True:
        message = await receive()
        size += len(message.get("body", b""))
        if not message.get("more_body"):
            break
    out = f"{scope['method']} {scope['path']} {size}".encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", str(len(out)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": out})


@contextmanager
def _serve(
    limits: HttpLimits, address: str | None = None, app: Any = _echo
) -> Iterator[Callable[[], Client]]:
    """Serve ``app`` with ``limits`` on a unix socket (``address``) or 127.0.0.1."""
    if address is None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
    else:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(address)
    config = uvicorn.Config(
        app,
        lifespan="off",
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=1,
        **limits.uvicorn_options("test listener"),
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.01)
    bound = listener.getsockname()

    def connect() -> Client:
        sock = socket.socket(listener.family, socket.SOCK_STREAM)
        sock.settimeout(5)
        sock.connect(bound)
        return Client(sock)

    try:
        yield connect
    finally:
        server.should_exit = True
        thread.join(timeout=5)
        listener.close()


class Client:
    """A raw HTTP/1.1 client connection that keeps what it read past one response."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before a whole response; got {self.buffer[:200]!r}")
        self.buffer += chunk

    def response(self, timeout_s: float = 5) -> tuple[int, bytes]:
        """One response: (status, body); the body is read by its content-length."""
        self.sock.settimeout(timeout_s)
        while b"\r\n\r\n" not in self.buffer:
            self._fill()
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(self.buffer) < length:
            self._fill()
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return int(lines[0].split()[1]), body

    def closed(self, within_s: float) -> bool:
        """True when the peer closes (EOF or reset) within ``within_s``, sending nothing else."""
        if self.buffer:
            return False
        self.sock.settimeout(within_s)
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False


def _request(path: str = "/", body: bytes = b"", extra: bytes = b"") -> bytes:
    method = b"POST" if body else b"GET"
    return (
        method + b" " + path.encode() + b" HTTP/1.1\r\nHost: test\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n" + extra + b"\r\n" + body
    )


# -- the request head cap -------------------------------------------------------------------


def test_endless_head_is_answered_431_and_closed() -> None:
    with _serve(HttpLimits(max_head_bytes=HEAD_CAP)) as connect:
        client = connect()
        sent = 0

        def stream() -> None:
            nonlocal sent
            try:
                client.send(b"GET / HTTP/1.1\r\nHost: test\r\nX-Pad: ")
                while sent < 32 * 1024 * KIB:
                    client.send(b"a" * (16 * KIB))
                    sent += 16 * KIB
            except OSError:
                pass  # the server hung up, as it should

        sender = threading.Thread(target=stream, daemon=True)
        sender.start()
        status, body = client.response()
        assert status == 431, body
        assert client.closed(2)
        sender.join(5)
        # It stopped reading near the cap, long before the 32 MiB were sent.
        assert sent < 32 * 1024 * KIB


def test_head_over_the_cap_in_one_write_is_refused() -> None:
    # The head completes inside one read: the cap holds for complete heads too.
    with _serve(HttpLimits(max_head_bytes=HEAD_CAP)) as connect:
        client = connect()
        client.send(_request(extra=b"X-Pad: " + b"a" * (HEAD_CAP + 10) + b"\r\n"))
        assert client.response()[0] == 431
        assert client.closed(2)


def test_head_under_the_cap_and_big_bodies_pass() -> None:
    with _serve(HttpLimits(max_head_bytes=HEAD_CAP)) as connect:
        client = connect()
        near_cap = b"X-Pad: " + b"a" * (HEAD_CAP - 200) + b"\r\n"
        client.send(_request("/big-head", extra=near_cap))
        assert client.response() == (200, b"GET /big-head 0")
        # A body is not head: 1 MiB arrives with the head in the same reads, on the same
        # connection (the second request's head is counted from its first byte).
        client.send(_request("/big-body", body=b"b" * (1024 * KIB)))
        assert client.response() == (200, b"POST /big-body 1048576")
        client.send(_request("/big-head-again", extra=near_cap))
        assert client.response() == (200, b"GET /big-head-again 0")


def test_pipelined_requests_are_all_answered() -> None:
    with _serve(HttpLimits(max_head_bytes=HEAD_CAP)) as connect:
        client = connect()
        client.send(_request("/1", body=b"x" * 300 * KIB) + _request("/2") + _request("/3"))
        assert [client.response() for _ in range(3)] == [
            (200, b"POST /1 307200"),
            (200, b"GET /2 0"),
            (200, b"GET /3 0"),
        ]


# -- the head deadline and the idle timeout -------------------------------------------------


def test_trickled_head_is_answered_408_at_the_deadline() -> None:
    with _serve(HttpLimits(head_timeout_s=0.5)) as connect:
        client = connect()
        started = time.monotonic()
        client.send(b"GET / HTTP/1.1\r\n")
        # One header line every 0.1 s: each line is in time, the head as a whole is not.
        for i in range(30):
            try:
                client.send(b"X-Slow-%d: 1\r\n" % i)
            except OSError:
                break
            time.sleep(0.1)
            if client.closed(0.01) or client.buffer:
                break
        assert client.response(timeout_s=2)[0] == 408
        took = time.monotonic() - started
        assert client.closed(2)
        assert 0.4 <= took < 2.0, took


def test_silent_connection_is_closed_at_the_deadline() -> None:
    with _serve(HttpLimits(head_timeout_s=0.5)) as connect:
        client = connect()
        started = time.monotonic()
        assert client.closed(3)  # and no 408: it asked nothing
        assert 0.4 <= time.monotonic() - started < 2.0


def test_trickle_on_a_kept_alive_connection_meets_the_deadline_too() -> None:
    with _serve(HttpLimits(head_timeout_s=0.5, keep_alive_s=30)) as connect:
        client = connect()
        client.send(_request("/first"))
        assert client.response() == (200, b"GET /first 0")
        client.send(b"GET /second HTTP/1.1\r\n")
        started = time.monotonic()
        assert client.response(timeout_s=3)[0] == 408
        assert client.closed(2)
        assert time.monotonic() - started < 2.0


def test_slow_handler_is_not_cut_by_the_head_deadline() -> None:
    async def slow(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await asyncio.sleep(1.0)
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    with _serve(HttpLimits(head_timeout_s=0.3), app=slow) as connect:
        client = connect()
        client.send(_request("/slow"))
        assert client.response()[0] == 204
        client.send(_request("/slow-again"))
        assert client.response()[0] == 204


def test_body_trickled_after_an_early_answer_is_cut_at_the_deadline() -> None:
    async def refuse_early(scope: dict[str, Any], receive: Any, send: Any) -> None:
        # Answers at once without reading the body, as a 413 for a too-large body does.
        headers = [(b"content-length", b"0")]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": b""})

    with _serve(HttpLimits(head_timeout_s=0.5, keep_alive_s=30), app=refuse_early) as connect:
        client = connect()
        client.send(b"POST / HTTP/1.1\r\nHost: test\r\nContent-Length: 1000000\r\n\r\n")
        assert client.response() == (413, b"")
        started, closed = time.monotonic(), False
        for _ in range(30):  # 100 bytes every 0.1 s, for up to 3 s
            try:
                client.send(b"b" * 100)
            except OSError:
                closed = True
                break
            if client.closed(0.1):
                closed = True
                break
        assert closed
        assert time.monotonic() - started < 2.0


def test_idle_kept_alive_connection_is_closed_after_keep_alive() -> None:
    with _serve(HttpLimits(keep_alive_s=1, head_timeout_s=30)) as connect:
        client = connect()
        for i in range(3):
            client.send(_request(f"/{i}"))
            assert client.response() == (200, f"GET /{i} 0".encode())
        started = time.monotonic()
        assert client.closed(4)
        assert 0.8 <= time.monotonic() - started < 3.0


# -- the connection cap ---------------------------------------------------------------------


def test_connections_over_the_cap_are_closed_at_once(tmp_path: Path) -> None:
    address = str(tmp_path / "h.sock")
    if len(address) > 100:  # sun_path is 108 bytes
        address = f"/tmp/summit-guard-{time.monotonic_ns()}.sock"
    limits = HttpLimits(max_connections=4, head_timeout_s=30, keep_alive_s=30)
    try:
        with _serve(limits, address) as connect:
            held = [connect() for _ in range(4)]
            time.sleep(0.2)
            extra = [connect() for _ in range(20)]
            assert [client.closed(1) for client in extra] == [True] * 20
            # Those under the cap are untouched and still served, kept alive.
            for i, client in enumerate(held):
                client.send(_request(f"/held/{i}"))
                assert client.response() == (200, f"GET /held/{i} 0".encode())
            # A place freed is a place taken.
            held.pop().sock.close()
            time.sleep(0.2)
            again = connect()
            again.send(_request("/again"))
            assert again.response() == (200, b"GET /again 0")
    finally:
        Path(address).unlink(missing_ok=True)


def test_no_connection_cap_by_default() -> None:
    with _serve(HttpLimits(head_timeout_s=30)) as connect:
        clients = [connect() for _ in range(100)]
        for client in clients[::10]:
            client.send(_request())
            assert client.response()[0] == 200


# -- the process's own file limit -----------------------------------------------------------


def test_open_files_limit_is_raised_to_the_hard_limit() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < 512:
        pytest.skip(f"hard open-files limit is only {hard}")
    code = (
        "import resource\n"
        "from orchestrator.api.http_guard import raise_open_files_limit\n"
        "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))\n"
        "print(raise_open_files_limit())\n"
        "print(resource.getrlimit(resource.RLIMIT_NOFILE))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert out == [f"(256, {hard})", f"({hard}, {hard})"]
