"""Decorators that mark handlers, and :func:`collect`, which turns the marked ones into a Plugin.

.. code-block:: python

    from summit_sdk import analyzer, collect, on_initialize

    @on_initialize
    def setup(ctx): ...

    @analyzer("word-count")
    def count(input, ctx): ...

    plugin = collect(__name__, id="com.example.words", version="1.0.0")

Decorators leave the function unchanged (only a mark is attached), so decorated functions stay
callable in tests. They work on module-level functions, on methods (``collect(MyClass)``
instantiates the class without arguments; ``collect(instance)`` uses the instance) and on
subclasses of the typed points in :mod:`summit_sdk.points` (instantiated the same way).
``input_model`` / ``output_model`` make a plain function validate like a typed point.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any, TypeVar

from summit_sdk.builder import Plugin, PluginBuilder

__all__ = [
    "analyzer",
    "auth_provider",
    "collect",
    "data_source",
    "export",
    "on_event",
    "on_initialize",
    "on_shutdown",
    "visualization",
    "workflow",
]

F = TypeVar("F", bound=Callable[..., Any])

_MARK = "__summit_marks__"


def _mark(target: Any, mark: tuple[Any, ...]) -> None:
    marks = target.__dict__.get(_MARK) if hasattr(target, "__dict__") else None
    if marks is None:
        marks = []
        setattr(target, _MARK, marks)  # on the function itself, not inherited from a base
    marks.append(mark)


def _extension(point: str) -> Callable[..., Callable[[F], F]]:
    def decorator_factory(
        name: str,
        *,
        input_model: Any = None,
        output_model: Any = None,
        priority: int | None = None,
        idempotent: bool | None = None,
        timeout_ms: int | None = None,
    ) -> Callable[[F], F]:
        if not isinstance(name, str) or not name:
            raise TypeError(f"@{point} needs the extension's name, e.g. @{point}('my-{point}')")

        def decorate(fn: F) -> F:
            options = {"priority": priority, "idempotent": idempotent, "timeout_ms": timeout_ms}
            _mark(fn, ("extension", point, name, input_model, output_model, options))
            return fn

        return decorate

    decorator_factory.__name__ = point
    decorator_factory.__doc__ = f"Mark a function, method or typed class as the {point} ``name``."
    return decorator_factory


data_source = _extension("data_source")
analyzer = _extension("analyzer")
visualization = _extension("visualization")
export = _extension("export")
auth_provider = _extension("auth_provider")
workflow = _extension("workflow")


def on_initialize(fn: F) -> F:
    """Mark ``fn(ctx)`` to run on ``/initialize``."""
    _mark(fn, ("initialize",))
    return fn


def on_shutdown(fn: F) -> F:
    """Mark ``fn(ctx)`` to run on ``/shutdown``."""
    _mark(fn, ("shutdown",))
    return fn


def on_event(event_type: str) -> Callable[[F], F]:
    """Mark ``fn(event, ctx)`` to receive events of ``event_type`` (``"*"``: all)."""
    if not isinstance(event_type, str) or not event_type:
        raise TypeError("@on_event needs the event type, e.g. @on_event('document.created')")

    def decorate(fn: F) -> F:
        _mark(fn, ("event", event_type))
        return fn

    return decorate


def collect(
    target: ModuleType | str | type | object,
    *,
    id: str | None = None,
    version: str | None = None,
    name: str | None = None,
    description: str | None = None,
    permissions: tuple[str, ...] | list[str] = (),
    config_schema: dict[str, Any] | None = None,
    publishes: tuple[str, ...] | list[str] = (),
) -> Plugin:
    """Build a Plugin from the handlers marked in a module (or its name), a class or an object.

    Missing metadata falls back to the target's module-level ``PLUGIN_ID``, ``PLUGIN_VERSION``
    (or the runtime reads them from the manifest).
    """
    if isinstance(target, str):
        target = sys.modules.get(target) or importlib.import_module(target)
    if inspect.isclass(target):
        target = target()
    builder = PluginBuilder().with_metadata(
        id=id or getattr(target, "PLUGIN_ID", None),
        version=version or getattr(target, "PLUGIN_VERSION", None),
        name=name,
        description=description,
    )
    builder.request_permissions(*permissions)
    builder.publishes(*publishes)
    if config_schema is not None:
        builder.with_config_schema(config_schema)
    found = False
    for obj in _members(target):
        for mark in getattr(obj, _MARK, ()):
            found = True
            _register(builder, obj, mark)
    if not found:
        raise ValueError(f"{_describe(target)} has no handlers marked with summit_sdk decorators")
    return builder.build()


def _members(target: object) -> Iterator[Any]:
    """Marked members in definition order (``vars`` keeps it; ``dir`` would sort by name)."""
    if isinstance(target, ModuleType):
        module_name = target.__name__
        for value in list(vars(target).values()):
            # Only what the module defines, not handlers it imported from elsewhere.
            if getattr(value, "__module__", module_name) == module_name and _MARK in getattr(
                value, "__dict__", {}
            ):
                yield value
        return
    seen: set[str] = set()
    for cls in type(target).__mro__:
        for attr, value in vars(cls).items():
            if attr in seen:
                continue
            seen.add(attr)
            if _MARK in getattr(value, "__dict__", {}) or _MARK in getattr(
                getattr(value, "__func__", None), "__dict__", {}
            ):
                yield getattr(target, attr)  # bound to the instance


def _register(builder: PluginBuilder, obj: Any, mark: tuple[Any, ...]) -> None:
    kind = mark[0]
    if kind == "initialize":
        builder.on_initialize(obj)
    elif kind == "shutdown":
        builder.on_shutdown(obj)
    elif kind == "event":
        builder.on_event(mark[1], obj)
    else:
        _, point, name, input_model, output_model, options = mark
        handler: Any = obj() if inspect.isclass(obj) else obj  # a typed point class
        if input_model is not None or output_model is not None:
            from summit_sdk.points import typed_handler

            handler = typed_handler(handler, input_model, output_model, f"{point} {name}")
        builder.extension(point, name, handler, **options)


def _describe(target: object) -> str:
    if isinstance(target, ModuleType):
        return f"module {target.__name__}"
    return f"{type(target).__name__} object"
