"""Wire models of the plugin protocol ``summit.plugin/v1``.

The orchestrator imports these models to talk to plugins, and the SDK runtime implements
them; changing a name or a field here changes the protocol for both sides.

Endpoints (orchestrator -> plugin, JSON over HTTP):

- ``GET  /summit/v1/health``                       -> :class:`HealthResponse`
- ``POST /summit/v1/initialize``  :class:`InitializeRequest` -> :class:`InitializeResponse`
- ``POST /summit/v1/extensions/{point}/{name}``  :class:`ExtensionRequest`
  -> :class:`ExtensionResponse` or :class:`ErrorResponse`
- ``POST /summit/v1/events``  :class:`EventRequest` -> ``{"status": "ok"}``
- ``POST /summit/v1/shutdown``                     -> :class:`ShutdownResponse`

Every failure is answered with an :class:`ErrorResponse`; its ``code`` is one of
:data:`ERROR_CODES`. The SDK runtime validates requests by hand (pydantic costs ~80 ms of
cold start); ``tests/unit/sdk`` checks that it accepts and refuses what these models do.
"""

from typing import Any

from pydantic import BaseModel, Field

from summit_sdk.spec import BASE_PATH, ERROR_CODES, EXTENSION_POINTS, PROTOCOL

__all__ = [
    "BASE_PATH",
    "ERROR_CODES",
    "EXTENSION_POINTS",
    "PROTOCOL",
    "CallContext",
    "ErrorDetail",
    "ErrorResponse",
    "EventRequest",
    "ExtensionRef",
    "ExtensionRequest",
    "ExtensionResponse",
    "HealthResponse",
    "HostInfo",
    "InitializeRequest",
    "InitializeResponse",
    "PluginRef",
    "ShutdownResponse",
]


class PluginRef(BaseModel):
    id: str
    version: str


class ExtensionRef(BaseModel):
    point: str
    name: str


class HealthResponse(BaseModel):
    status: str = "ok"
    protocol: str = PROTOCOL
    plugin: PluginRef
    extensions: list[ExtensionRef]


class HostInfo(BaseModel):
    """Where the plugin reaches the host API, and the token that authenticates it."""

    url: str | None = None
    token: str | None = None


class InitializeRequest(BaseModel):
    config: dict[str, Any] = Field(default_factory=dict)
    host: HostInfo = Field(default_factory=HostInfo)
    permissions: list[str] = Field(default_factory=list)


class InitializeResponse(BaseModel):
    status: str = "ok"


class CallContext(BaseModel):
    request_id: str
    # Milliseconds the caller still allows for this call (a budget, not a timestamp).
    deadline_ms: int | None = None


class ExtensionRequest(BaseModel):
    input: Any
    context: CallContext


class ExtensionResponse(BaseModel):
    output: Any


class ErrorDetail(BaseModel):
    code: str
    message: str
    # Machine-readable extras, e.g. the pydantic errors of ``invalid_input``.
    details: Any = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


class EventRequest(BaseModel):
    event: dict[str, Any]


class ShutdownResponse(BaseModel):
    status: str = "ok"
