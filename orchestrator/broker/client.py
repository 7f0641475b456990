"""A synchronous client of one plugin container, used by the lifecycle service.

The endpoint is typed (``runtime/endpoints.py``): a unix socket (Docker backend) or a TCP
address (Kubernetes); ``transport_for`` is the one place that turns it into an httpx
transport, so tests can swap the transport.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
from summit_sdk.protocol import PROTOCOL, HealthResponse, InitializeRequest
from summit_sdk.unixsock import sync_transport

from orchestrator.broker.errors import PluginCallError
from orchestrator.domain import jsonlimits
from orchestrator.runtime.endpoints import Endpoint, TcpEndpoint, UnixEndpoint

__all__ = ["MAX_BODY_BYTES", "PluginCallError", "PluginClient", "base_url_for", "transport_for"]

# Health, initialize and shutdown answers are small; anything bigger is a misbehaving plugin.
MAX_BODY_BYTES = 256 * 1024


def base_url_for(endpoint: Endpoint) -> str:
    if isinstance(endpoint, TcpEndpoint):
        return endpoint.base_url
    return "http://plugin"


def transport_for(endpoint: Endpoint) -> Any:
    uds = str(endpoint.path) if isinstance(endpoint, UnixEndpoint) else None
    # Plugins speak plain HTTP (verify=False skips loading the CA bundle, ~18 ms a client);
    # a unix socket is opened without following links the plugin may have planted.
    return sync_transport(uds)


class PluginClient:
    """Health, initialize and shutdown. Every answer is read with a size cap and an overall
    deadline: a plugin streaming an endless or slow body cannot hold or bloat the orchestrator."""

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        timeout_s: float = 10.0,
        max_body_bytes: int = MAX_BODY_BYTES,
        call_token: str | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.timeout_s = timeout_s
        self.max_body_bytes = max_body_bytes
        # Over TCP the plugin answers 401 without its call token (see transport.py).
        headers = (
            {"Authorization": f"Bearer {call_token}"}
            if call_token and isinstance(endpoint, TcpEndpoint)
            else None
        )
        self._http = httpx.Client(
            base_url=base_url_for(endpoint),
            transport=transport_for(endpoint),
            timeout=timeout_s,
            headers=headers,
        )

    def _request(
        self, method: str, path: str, *, timeout_s: float, json: Any = None
    ) -> tuple[int, bytes]:
        deadline = time.monotonic() + timeout_s
        with self._http.stream(method, path, json=json, timeout=timeout_s) as r:
            body = bytearray()
            for chunk in r.iter_raw():
                body += chunk
                if len(body) > self.max_body_bytes:
                    raise PluginCallError(f"{path} answered more than {self.max_body_bytes} bytes")
                if time.monotonic() > deadline:
                    raise PluginCallError(f"{path} took longer than {timeout_s:.0f} s to answer")
            return r.status_code, bytes(body)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> PluginClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def health(self, *, timeout_s: float = 2.0) -> HealthResponse:
        status, body = self._request("GET", "/summit/v1/health", timeout_s=timeout_s)
        if status != 200:
            raise PluginCallError(f"health answered {status}")
        health = HealthResponse.model_validate_json(body)
        if health.protocol != PROTOCOL:
            raise PluginCallError(f"plugin speaks {health.protocol!r}, expected {PROTOCOL!r}")
        return health

    def initialize(
        self,
        *,
        config: dict[str, Any],
        permissions: list[str],
        host_url: str | None = None,
        host_token: str | None = None,
    ) -> None:
        body = InitializeRequest.model_validate(
            {
                "config": config,
                "permissions": permissions,
                "host": {"url": host_url, "token": host_token},
            }
        )
        status, answer = self._request(
            "POST",
            "/summit/v1/initialize",
            json=body.model_dump(mode="json"),
            timeout_s=self.timeout_s,
        )
        if status != 200:
            raise PluginCallError(f"initialize failed ({status}): {_error_text(answer)}")

    def shutdown(self, *, timeout_s: float = 5.0) -> None:
        self._request("POST", "/summit/v1/shutdown", timeout_s=timeout_s)


def _error_text(body: bytes) -> str:
    try:
        err = jsonlimits.decode(body).get("error", {})
        return f"{err.get('code')}: {err.get('message')}"
    except (ValueError, AttributeError):  # TooDeep is a ValueError too
        return body[:200].decode("utf-8", "replace")
