"""The host API on a network address (plugins in pods): one TCP listener serves every plugin,
and the bearer token alone says which one calls."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import Engine

from orchestrator.api.host.app import PLUGIN_SCOPE_KEY
from orchestrator.api.host.server import HostGateway, HostServer, advertised_host_url
from orchestrator.runtime.endpoints import TcpEndpoint
from orchestrator.security.tokens import HostTokens
from tests.fixtures.orchestrator import free_port


async def whoami(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers with the plugin the listener says is calling."""
    body = str(scope.get(PLUGIN_SCOPE_KEY)).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()


def test_the_token_names_the_calling_plugin(
    engine: Engine, loop: asyncio.AbstractEventLoop
) -> None:
    tokens = HostTokens(engine)
    server = HostServer(whoami, loop)  # type: ignore[arg-type]
    port = free_port()
    server.listen_tcp("127.0.0.1", port, tokens)
    gateway = HostGateway(server, tokens, advertised_url=f"http://127.0.0.1:{port}")
    try:
        opened = gateway.open("com.example.a", "pod-a", TcpEndpoint("10.0.0.9", 8080))
        assert opened is not None
        url, token = opened
        assert url == f"http://127.0.0.1:{port}"
        r = httpx.get(url + "/v1/anything", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200 and r.text == "com.example.a"

        for headers in ({}, {"Authorization": "Bearer forged"}, {"Authorization": token}):
            refused = httpx.get(url + "/v1/anything", headers=headers)
            assert refused.status_code == 401, headers
            assert refused.json()["error"]["code"] == "unauthenticated"

        gateway.close("pod-a", TcpEndpoint("10.0.0.9", 8080))  # the container is retired
        gone = httpx.get(url + "/v1/anything", headers={"Authorization": f"Bearer {token}"})
        assert gone.status_code == 401
    finally:
        asyncio.run_coroutine_threadsafe(server.aclose(), loop).result(10)


def test_without_an_advertised_address_a_networked_container_gets_no_host_api(
    engine: Engine, loop: asyncio.AbstractEventLoop
) -> None:
    gateway = HostGateway(HostServer(whoami, loop), HostTokens(engine))  # type: ignore[arg-type]
    assert gateway.open("com.example.a", "pod-a", TcpEndpoint("10.0.0.9", 8080)) is None


@pytest.mark.parametrize(
    ("address", "pod_ip", "url"),
    [
        (None, "10.1.2.3", "http://10.1.2.3:8701"),
        ("10.96.0.40", None, "http://10.96.0.40:8701"),
        ("10.96.0.40:9000", "10.1.2.3", "http://10.96.0.40:9000"),
        ("[fd00::40]:9000", None, "http://[fd00::40]:9000"),
        ("fd00::40", None, "http://[fd00::40]:8701"),
    ],
)
def test_plugins_are_told_an_ip(address: str | None, pod_ip: str | None, url: str) -> None:
    assert advertised_host_url(address, 8701, pod_ip) == url


def test_a_name_is_resolved_once_since_pods_get_no_dns() -> None:
    assert advertised_host_url("localhost:9000", 8701, None) in (
        "http://127.0.0.1:9000",
        "http://[::1]:9000",
    )


def test_nowhere_to_advertise_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="SUMMIT_HOST_API_ADDRESS"):
        advertised_host_url(None, 8701, None)
