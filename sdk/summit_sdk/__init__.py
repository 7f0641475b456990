"""Summit plugin SDK: build a plugin with :func:`create_plugin`, serve it with the runtime.

The wire models of ``summit.plugin/v1`` live in :mod:`summit_sdk.protocol`. ``create_app`` and
``serve`` load the web stack lazily, so importing ``summit_sdk`` (or only its protocol models)
stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from summit_sdk.builder import Plugin, PluginBuilder, PluginContext, PluginError, create_plugin
from summit_sdk.spec import EXTENSION_POINTS, PROTOCOL

if TYPE_CHECKING:
    from summit_sdk.runtime import create_app, serve

__version__ = "0.1.0"

__all__ = [
    "EXTENSION_POINTS",
    "PROTOCOL",
    "Plugin",
    "PluginBuilder",
    "PluginContext",
    "PluginError",
    "__version__",
    "create_app",
    "create_plugin",
    "serve",
]


def __getattr__(name: str) -> Any:
    if name in ("create_app", "serve"):
        from summit_sdk import runtime

        return getattr(runtime, name)
    raise AttributeError(f"module 'summit_sdk' has no attribute {name!r}")
