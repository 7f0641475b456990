"""A fluent builder for plugins, and the immutable :class:`Plugin` it produces.

.. code-block:: python

    plugin = (
        create_plugin()
        .with_metadata(id="com.example.echo", version="1.0.0")
        .extension("analyzer", "echo", lambda input, ctx: input)
        .build()
    )

Handlers may be plain functions (run in a worker thread) or ``async def`` functions (run on
the event loop). ``id`` and ``version`` may be left out: the runtime then reads them from the
manifest file the base image ships (``SUMMIT_PLUGIN_MANIFEST``).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from summit_sdk.spec import EXTENSION_POINTS

Handler = Callable[..., Any]
"""A sync or async callable; see :class:`PluginBuilder` for each handler's arguments."""


@dataclass(frozen=True)
class PluginContext:
    """What a handler knows about the call it serves and the plugin's state."""

    config: dict[str, Any]
    request_id: str | None = None
    deadline_ms: int | None = None
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("summit.plugin"))
    host_url: str | None = None
    host_token: str | None = None
    permissions: tuple[str, ...] = ()


class PluginError(Exception):
    """Raise from a handler to answer with a chosen error code instead of ``handler_error``.

    The message is sent to the caller, so it must not contain secrets.
    """

    def __init__(self, message: str, *, code: str = "plugin_error", status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


@dataclass(frozen=True)
class Plugin:
    """A built plugin: metadata plus its handlers. Serve it with :func:`summit_sdk.serve`."""

    id: str | None
    version: str | None
    name: str | None = None
    description: str | None = None
    permissions: tuple[str, ...] = ()
    config_schema: Mapping[str, Any] | None = None
    initialize_handler: Handler | None = None
    shutdown_handler: Handler | None = None
    event_handlers: Mapping[str, tuple[Handler, ...]] = field(
        default_factory=lambda: MappingProxyType({})
    )
    extensions: Mapping[tuple[str, str], Handler] = field(
        default_factory=lambda: MappingProxyType({})
    )

    def extension_handler(self, point: str, name: str) -> Handler | None:
        return self.extensions.get((point, name))


class PluginBuilder:
    """Collects metadata and handlers; :meth:`build` freezes them into a :class:`Plugin`.

    Handler arguments:

    - ``on_initialize(ctx)``: ``ctx.config`` is the config of the initialize request.
    - ``on_shutdown(ctx)``
    - ``on_event(type, fn)``: ``fn(event, ctx)``; ``type`` ``"*"`` receives every event.
    - ``extension(point, name, fn)``: ``fn(input, ctx)`` returns the JSON-serialisable output.
    """

    def __init__(self) -> None:
        self._id: str | None = None
        self._version: str | None = None
        self._name: str | None = None
        self._description: str | None = None
        self._permissions: list[str] = []
        self._config_schema: dict[str, Any] | None = None
        self._initialize: Handler | None = None
        self._shutdown: Handler | None = None
        self._events: dict[str, list[Handler]] = {}
        self._extensions: dict[tuple[str, str], Handler] = {}

    def with_metadata(
        self,
        id: str | None = None,
        version: str | None = None,
        name: str | None = None,
        description: str | None = None,
    ) -> PluginBuilder:
        self._id, self._version = id, version
        self._name, self._description = name, description
        return self

    def request_permissions(self, *permissions: str) -> PluginBuilder:
        for permission in permissions:
            if permission not in self._permissions:
                self._permissions.append(permission)
        return self

    def with_config_schema(self, schema: dict[str, Any]) -> PluginBuilder:
        if not isinstance(schema, dict):
            raise TypeError("config schema must be a JSON Schema object (dict)")
        self._config_schema = schema
        return self

    def on_initialize(self, fn: Handler) -> PluginBuilder:
        self._initialize = _check_callable(fn)
        return self

    def on_shutdown(self, fn: Handler) -> PluginBuilder:
        self._shutdown = _check_callable(fn)
        return self

    def on_event(self, event_type: str, fn: Handler) -> PluginBuilder:
        if not event_type:
            raise ValueError("event type must not be empty")
        self._events.setdefault(event_type, []).append(_check_callable(fn))
        return self

    def extension(self, point: str, name: str, fn: Handler) -> PluginBuilder:
        if point not in EXTENSION_POINTS:
            raise ValueError(
                f"unknown extension point {point!r}; expected one of {', '.join(EXTENSION_POINTS)}"
            )
        if not name or "/" in name:
            raise ValueError(f"invalid extension name {name!r}")
        if (point, name) in self._extensions:
            raise ValueError(f"extension {point}/{name} is already registered")
        self._extensions[(point, name)] = _check_callable(fn)
        return self

    def build(self) -> Plugin:
        return Plugin(
            id=self._id,
            version=self._version,
            name=self._name,
            description=self._description,
            permissions=tuple(self._permissions),
            config_schema=MappingProxyType(dict(self._config_schema))
            if self._config_schema is not None
            else None,
            initialize_handler=self._initialize,
            shutdown_handler=self._shutdown,
            event_handlers=MappingProxyType({k: tuple(v) for k, v in self._events.items()}),
            extensions=MappingProxyType(dict(self._extensions)),
        )


def create_plugin() -> PluginBuilder:
    return PluginBuilder()


def is_async_handler(fn: Handler) -> bool:
    """True for ``async def`` functions, partials of them and objects with ``async __call__``."""
    if inspect.iscoroutinefunction(fn):
        return True
    call = getattr(fn, "__call__", None)  # noqa: B004 - we need the bound __call__ itself
    return call is not None and inspect.iscoroutinefunction(call)


def _check_callable(fn: Handler) -> Handler:
    if not callable(fn):
        raise TypeError(f"handler must be callable, got {type(fn).__name__}")
    return fn
