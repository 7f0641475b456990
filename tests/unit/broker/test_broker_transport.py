"""The two transports against real local servers: TCP (answers, the call token, a connect
refused while the plugin restarts is retried within the deadline) and the unix socket; the
default factory picks by the endpoint's kind, for the broker and for PluginClient."""

from __future__ import annotations

import asyncio
import http.server
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.broker import Broker, BrokerLimits, PluginClient, Route
from orchestrator.broker.transport import TcpTransport, UnixTransport, open_transport
from orchestrator.domain.manifest import Extension, ExtensionPoint
from orchestrator.runtime.endpoints import TcpEndpoint, UnixEndpoint

JSON = [(b"content-type", b"application/json")]


class Plugin:
    """An HTTP/1.1 server on asyncio streams that answers every request with ``body`` and
    keeps the heads it was sent."""

    def __init__(self, body: bytes = b'{"output":"hi"}') -> None:
        self.body = body
        self.heads: list[dict[bytes, bytes]] = []

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                fields = dict(
                    (name.strip().lower(), value.strip())
                    for name, _, value in (line.partition(b":") for line in head.split(b"\r\n")[1:])
                    if name
                )
                self.heads.append(fields)
                await reader.readexactly(int(fields.get(b"content-length", b"0")))
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(self.body), self.body)
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass  # the client hung up, or the test's loop is closing
        finally:
            writer.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def tcp_plugin(plugin: Plugin, port: int = 0) -> tuple[asyncio.Server, TcpEndpoint]:
    server = await asyncio.start_server(plugin.serve, "127.0.0.1", port)
    return server, TcpEndpoint("127.0.0.1", server.sockets[0].getsockname()[1])


def test_tcp_answers_and_sends_the_call_token_on_every_request() -> None:
    async def scenario() -> tuple[list[int], Plugin, TcpEndpoint]:
        plugin = Plugin()
        server, endpoint = await tcp_plugin(plugin)
        transport = TcpTransport(endpoint, max_connections=2, call_token="tok-123")
        try:
            answers = [
                await transport.request(b"POST", b"/summit/v1/events", headers=JSON, content=b"{}")
                for _ in range(2)
            ]
        finally:
            await transport.aclose()
            server.close()
        return [a.status for a in answers], plugin, endpoint

    statuses, plugin, endpoint = asyncio.run(scenario())
    assert statuses == [200, 200]
    assert [head[b"authorization"] for head in plugin.heads] == [b"Bearer tok-123"] * 2
    assert plugin.heads[0][b"host"] == f"127.0.0.1:{endpoint.port}".encode()


def test_tcp_without_a_token_sends_no_authorization() -> None:
    async def scenario() -> Plugin:
        plugin = Plugin()
        server, endpoint = await tcp_plugin(plugin)
        transport = TcpTransport(endpoint, max_connections=1)
        try:
            await transport.request(b"GET", b"/summit/v1/health", headers=[])
        finally:
            await transport.aclose()
            server.close()
        return plugin

    assert b"authorization" not in asyncio.run(scenario()).heads[0]


def test_a_refused_connect_is_retried_until_the_plugin_listens() -> None:
    """A pod restarting refuses connections for a moment: the call waits it out."""
    port = free_port()

    async def scenario() -> int:
        plugin = Plugin()
        transport = TcpTransport(TcpEndpoint("127.0.0.1", port), max_connections=1)

        async def start_late() -> asyncio.Server:
            await asyncio.sleep(0.2)
            server, _ = await tcp_plugin(plugin, port)
            return server

        starting = asyncio.create_task(start_late())
        try:
            async with asyncio.timeout(5):
                answer = await transport.request(b"GET", b"/summit/v1/health", headers=[])
        finally:
            await transport.aclose()
            (await starting).close()
        return answer.status

    assert asyncio.run(scenario()) == 200


def test_connect_retries_end_with_the_callers_deadline() -> None:
    port = free_port()

    async def scenario() -> float:
        transport = TcpTransport(TcpEndpoint("127.0.0.1", port), max_connections=1)
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):
                await transport.request(b"GET", b"/summit/v1/health", headers=[])
        await transport.aclose()
        return loop.time() - started

    assert asyncio.run(scenario()) < 1.0


def test_the_default_factory_picks_by_endpoint_kind(tmp_path: Path) -> None:
    unix = open_transport(UnixEndpoint(tmp_path / "p.sock"), max_connections=1, call_token="t")
    tcp = open_transport(TcpEndpoint("::1", 8080), max_connections=1, call_token="t")
    assert isinstance(unix, UnixTransport)
    assert isinstance(tcp, TcpTransport)
    assert tcp.host_header == b"[::1]:8080"


def test_the_broker_reaches_plugins_over_both_kinds(tmp_path: Path) -> None:
    ext = Extension(point=ExtensionPoint.ANALYZER, name="run")

    async def scenario() -> tuple[dict[str, Any], Plugin, Plugin]:
        over_tcp, over_unix = Plugin(b'{"output":"tcp"}'), Plugin(b'{"output":"unix"}')
        tcp_server, tcp = await tcp_plugin(over_tcp)
        unix_server = await asyncio.start_unix_server(over_unix.serve, str(tmp_path / "p.sock"))
        broker = Broker(limits=BrokerLimits(rate_limit_requests=0))
        broker.set_route(Route("k", "1.0.0", tcp, (ext,), call_token="pod-token"))
        # A token on a unix route is not sent: only the orchestrator can reach the socket.
        broker.set_route(
            Route("d", "1.0.0", UnixEndpoint(tmp_path / "p.sock"), (ext,), call_token="x")
        )
        try:
            result = await broker.execute("analyzer", {"text": "a"})
        finally:
            await broker.aclose()
            tcp_server.close()
            unix_server.close()
        return result, over_tcp, over_unix

    result, over_tcp, over_unix = asyncio.run(scenario())
    assert {r["plugin"]: r["output"] for r in result["results"]} == {"k": "tcp", "d": "unix"}
    assert over_tcp.heads[0][b"authorization"] == b"Bearer pod-token"
    assert b"authorization" not in over_unix.heads[0]
    assert over_unix.heads[0][b"host"] == b"plugin"


@pytest.fixture
def health_server() -> Iterator[tuple[TcpEndpoint, list[str | None]]]:
    seen: list[str | None] = []

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.headers.get("Authorization"))
            body = (
                b'{"status":"ok","protocol":"summit.plugin/v1",'
                b'"plugin":{"id":"com.t.k","version":"1.0.0"},"extensions":[]}'
            )
            self.send_response(200)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield TcpEndpoint("127.0.0.1", server.server_address[1]), seen
    finally:
        server.shutdown()
        server.server_close()


def test_plugin_client_over_tcp_sends_the_call_token(
    health_server: tuple[TcpEndpoint, list[str | None]],
) -> None:
    endpoint, seen = health_server
    with PluginClient(endpoint, call_token="pod-token") as client:
        assert client.health().plugin.id == "com.t.k"
    with PluginClient(endpoint) as client:
        client.health()
    assert seen == ["Bearer pod-token", None]
