"""Summit plugin SDK: build a plugin with :func:`create_plugin` or decorators, serve it.

The wire models of ``summit.plugin/v1`` live in :mod:`summit_sdk.protocol`, the typed extension
points in :mod:`summit_sdk.points`, the host API client in :mod:`summit_sdk.host` and the test
helpers in :mod:`summit_sdk.testing`. Those (and ``create_app`` / ``serve``) load pydantic,
httpx or the web stack, so they are imported on first use: importing ``summit_sdk`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from summit_sdk.builder import Plugin, PluginBuilder, PluginContext, create_plugin
from summit_sdk.decorators import (
    analyzer,
    auth_provider,
    collect,
    data_source,
    export,
    on_event,
    on_initialize,
    on_shutdown,
    visualization,
    workflow,
)
from summit_sdk.errors import HostError, PermissionDenied, PluginError
from summit_sdk.spec import EXTENSION_POINTS, PROTOCOL

if TYPE_CHECKING:
    from summit_sdk.host import HostClient
    from summit_sdk.points import (
        Analyzer,
        AuthProvider,
        DataSource,
        Export,
        Visualization,
        Workflow,
    )
    from summit_sdk.runtime import create_app, serve

__version__ = "0.1.0"

_LAZY = {
    "create_app": "summit_sdk.runtime",
    "serve": "summit_sdk.runtime",
    "HostClient": "summit_sdk.host",
    "Analyzer": "summit_sdk.points",
    "AuthProvider": "summit_sdk.points",
    "DataSource": "summit_sdk.points",
    "Export": "summit_sdk.points",
    "Visualization": "summit_sdk.points",
    "Workflow": "summit_sdk.points",
}

__all__ = [
    "EXTENSION_POINTS",
    "PROTOCOL",
    "Analyzer",
    "AuthProvider",
    "DataSource",
    "Export",
    "HostClient",
    "HostError",
    "PermissionDenied",
    "Plugin",
    "PluginBuilder",
    "PluginContext",
    "PluginError",
    "Visualization",
    "Workflow",
    "__version__",
    "analyzer",
    "auth_provider",
    "collect",
    "create_app",
    "create_plugin",
    "data_source",
    "export",
    "on_event",
    "on_initialize",
    "on_shutdown",
    "serve",
    "visualization",
    "workflow",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is not None:
        return getattr(importlib.import_module(module), name)
    raise AttributeError(f"module 'summit_sdk' has no attribute {name!r}")
