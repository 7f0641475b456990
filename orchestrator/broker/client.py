"""A synchronous client of one plugin container, used by the lifecycle service.

The endpoint is ``unix:///path.sock`` (Docker backend) or ``tcp://host:port``; ``transport_for``
is the one place that turns it into an httpx transport, so tests can swap the transport.
"""

from __future__ import annotations

from typing import Any

import httpx
from summit_sdk.protocol import PROTOCOL, HealthResponse, InitializeRequest

from orchestrator.domain.errors import SummitError


class PluginCallError(SummitError):
    status_code = 502
    code = "plugin_error"


def base_url_for(endpoint: str) -> str:
    if endpoint.startswith("tcp://"):
        return "http://" + endpoint.removeprefix("tcp://")
    return "http://plugin"


def transport_for(endpoint: str, *, asynchronous: bool = False) -> Any:
    uds = endpoint.removeprefix("unix://") if endpoint.startswith("unix://") else None
    # Plugins speak plain HTTP; verify=False skips loading the CA bundle (~18 ms a client).
    if asynchronous:
        return httpx.AsyncHTTPTransport(uds=uds, retries=0, verify=False)
    return httpx.HTTPTransport(uds=uds, retries=0, verify=False)


class PluginClient:
    def __init__(self, endpoint: str, *, timeout_s: float = 10.0) -> None:
        self.endpoint = endpoint
        self._http = httpx.Client(
            base_url=base_url_for(endpoint),
            transport=transport_for(endpoint),
            timeout=timeout_s,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> PluginClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def health(self, *, timeout_s: float = 2.0) -> HealthResponse:
        r = self._http.get("/summit/v1/health", timeout=timeout_s)
        if r.status_code != 200:
            raise PluginCallError(f"health answered {r.status_code}")
        health = HealthResponse.model_validate(r.json())
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
        r = self._http.post("/summit/v1/initialize", json=body.model_dump(mode="json"))
        if r.status_code != 200:
            raise PluginCallError(f"initialize failed ({r.status_code}): {_error_text(r)}")

    def shutdown(self, *, timeout_s: float = 5.0) -> None:
        self._http.post("/summit/v1/shutdown", timeout=timeout_s)


def _error_text(r: httpx.Response) -> str:
    try:
        err = r.json().get("error", {})
        return f"{err.get('code')}: {err.get('message')}"
    except (ValueError, AttributeError):
        return r.text[:200]
