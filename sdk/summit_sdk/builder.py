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
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType, ModuleType
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from summit_sdk.errors import PluginError
from summit_sdk.spec import EXTENSION_POINTS

if TYPE_CHECKING:
    from summit_sdk.host import HostClient

__all__ = [
    "ExtensionInfo",
    "Handler",
    "HostSource",
    "Plugin",
    "PluginBuilder",
    "PluginContext",
    "PluginError",
    "TypedExtension",
    "create_plugin",
    "is_async_handler",
]

Handler = Callable[..., Any]
"""A sync or async callable; see :class:`PluginBuilder` for each handler's arguments."""


@runtime_checkable
class TypedExtension(Protocol):
    """What :class:`summit_sdk.points.ExtensionPoint` instances offer the builder."""

    @property
    def point(self) -> str: ...

    def summit_handler(self) -> Handler: ...


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
    host_source: HostSource | None = field(default=None, repr=False, compare=False)

    @property
    def host(self) -> HostClient:
        """Client of the host API (``/host/v1``), checked against the granted permissions.

        Built on first use, so plugins that never call the host never import httpx.
        """
        source = self.host_source
        if source is None:
            source = HostSource(self.host_url, self.host_token, self.permissions)
        return source.client()


class HostSource:
    """Where the host API is and what the plugin may do there; builds one client lazily.

    ``transport`` (an ``httpx.BaseTransport``) replaces the network, e.g. with
    :class:`summit_sdk.testing.FakeHost`.
    """

    def __init__(
        self,
        url: str | None,
        token: str | None,
        permissions: tuple[str, ...] = (),
        transport: Any = None,
    ) -> None:
        self.url, self.token, self.permissions = url, token, tuple(permissions)
        self.transport = transport
        self._client: HostClient | None = None
        self._lock = threading.Lock()

    def client(self) -> HostClient:
        with self._lock:
            if self._client is None:
                from summit_sdk.host import HostClient

                self._client = HostClient(
                    self.url, self.token, self.permissions, transport=self.transport
                )
            return self._client

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None


@dataclass(frozen=True)
class ExtensionInfo:
    """What the manifest says of one extension, as far as the code knows it.

    ``None`` means "not set here": the manifest's value (or its default) applies. Schemas of
    typed extensions are derived from their pydantic models only when asked for
    (:meth:`schemas`), so serving a plugin never pays for it.
    """

    point: str
    name: str
    priority: int | None = None
    idempotent: bool | None = None
    timeout_ms: int | None = None
    input_schema: Mapping[str, Any] | None = None
    output_schema: Mapping[str, Any] | None = None
    derive_schemas: Callable[[], tuple[dict[str, Any] | None, dict[str, Any] | None]] | None = (
        field(default=None, repr=False, compare=False)
    )

    def schemas(self) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """(input_schema, output_schema): explicit ones first, else those of the models."""
        derived: tuple[dict[str, Any] | None, dict[str, Any] | None] = (None, None)
        if self.derive_schemas is not None and (
            self.input_schema is None or self.output_schema is None
        ):
            derived = self.derive_schemas()
        return (
            dict(self.input_schema) if self.input_schema is not None else derived[0],
            dict(self.output_schema) if self.output_schema is not None else derived[1],
        )


SCHEMAS_ATTRIBUTE = "__summit_schemas__"
"""A handler may carry a callable under this name that returns its (input, output) JSON
Schemas; the typed points and ``typed_handler`` set it."""


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
    extension_info: Mapping[tuple[str, str], ExtensionInfo] = field(
        default_factory=lambda: MappingProxyType({})
    )
    publishes: tuple[str, ...] = ()

    def extension_handler(self, point: str, name: str) -> Handler | None:
        return self.extensions.get((point, name))

    @classmethod
    def from_module(cls, module: ModuleType | str, **metadata: Any) -> Plugin:
        """Collect the decorated handlers of a module; see :func:`summit_sdk.decorators.collect`."""
        from summit_sdk.decorators import collect

        return collect(module, **metadata)


class PluginBuilder:
    """Collects metadata and handlers; :meth:`build` freezes them into a :class:`Plugin`.

    Handler arguments:

    - ``on_initialize(ctx)``: ``ctx.config`` is the config of the initialize request.
    - ``on_shutdown(ctx)``
    - ``on_event(type, fn)``: ``fn(event, ctx)``; ``type`` ``"*"`` receives every event.
    - ``extension(point, name, fn)``: ``fn(input, ctx)`` returns the JSON-serialisable output.
      ``fn`` may also be a typed extension (an instance of a :mod:`summit_sdk.points` class),
      whose input and output are then validated against its models.
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
        self._info: dict[tuple[str, str], ExtensionInfo] = {}
        self._publishes: list[str] = []

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

    def publishes(self, *event_types: str) -> PluginBuilder:
        """Event types the plugin publishes (``events.publish`` of the manifest)."""
        for event_type in event_types:
            if not event_type or "*" in event_type:
                raise ValueError(f"invalid event type to publish {event_type!r}")
            if event_type not in self._publishes:
                self._publishes.append(event_type)
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

    def extension(
        self,
        point: str,
        name: str,
        fn: Handler | TypedExtension,
        *,
        priority: int | None = None,
        idempotent: bool | None = None,
        timeout_ms: int | None = None,
        input_schema: dict[str, Any] | None = None,
        output_schema: dict[str, Any] | None = None,
    ) -> PluginBuilder:
        """Register ``fn`` as ``point/name``; the keywords are those of the manifest entry."""
        if point not in EXTENSION_POINTS:
            raise ValueError(
                f"unknown extension point {point!r}; expected one of {', '.join(EXTENSION_POINTS)}"
            )
        if not name or "/" in name:
            raise ValueError(f"invalid extension name {name!r}")
        if (point, name) in self._extensions:
            raise ValueError(f"extension {point}/{name} is already registered")
        # Typed extensions (summit_sdk.points) expose a validating handler; duck-typed so
        # that plain plugins never import pydantic.
        if isinstance(fn, TypedExtension) and not inspect.isclass(fn):
            if fn.point != point:
                raise ValueError(f"{type(fn).__name__} is a {fn.point}, not a {point}")
            fn = fn.summit_handler()
        self._extensions[(point, name)] = _check_callable(fn)
        self._info[(point, name)] = ExtensionInfo(
            point=point,
            name=name,
            priority=priority,
            idempotent=idempotent,
            timeout_ms=timeout_ms,
            input_schema=input_schema,
            output_schema=output_schema,
            derive_schemas=getattr(fn, SCHEMAS_ATTRIBUTE, None),
        )
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
            extension_info=MappingProxyType(dict(self._info)),
            publishes=tuple(self._publishes),
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
