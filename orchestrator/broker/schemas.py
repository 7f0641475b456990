"""The input and output schemas of every routed extension, compiled once and checked on
every call."""

from __future__ import annotations

from typing import Any

import fastjsonschema
import jsonschema

from orchestrator.broker.routes import Provider, Route
from orchestrator.domain.manifest import Extension, ExtensionPoint, schema_key

__all__ = ["SchemaCheck", "SchemaChecks"]


class SchemaCheck:
    """A JSON Schema compiled to Python for the yes/no check every call makes; jsonschema
    (slower, complete) only runs to list the errors of a value that fails."""

    def __init__(self, schema: dict[str, Any]) -> None:
        self._full = jsonschema.Draft202012Validator(schema)
        try:
            self._fast: Any = fastjsonschema.compile(schema)
        except Exception:  # a construct fastjsonschema lacks: jsonschema alone decides
            self._fast = None

    def is_valid(self, value: Any) -> bool:
        if self._fast is None:
            return bool(self._full.is_valid(value))
        try:
            self._fast(value)
        except fastjsonschema.JsonSchemaException:
            return False
        return True

    def errors(self, value: Any) -> list[jsonschema.ValidationError]:
        return list(self._full.iter_errors(value))


class SchemaChecks:
    def __init__(self) -> None:
        self._by_extension: dict[tuple[str, str, ExtensionPoint, str, str], SchemaCheck] = {}
        # Identical schemas (copies of one plugin, shared input types) share one compiled
        # check, and a fan-out checks its input once per distinct schema.
        self._by_schema: dict[str, SchemaCheck] = {}

    def check(self, route: Route, ext: Extension, which: str) -> SchemaCheck | None:
        """The check of ``ext``'s ``which`` ("input" or "output") schema; None without one."""
        schema = ext.input_schema if which == "input" else ext.output_schema
        if schema is None:
            return None
        # The member, not .value: an enum's value is a property lookup, and this runs for
        # every provider of every call.
        key = (route.plugin_id, route.version, ext.point, ext.name, which)
        check = self._by_extension.get(key)
        if check is None:
            text = schema_key(schema)
            check = self._by_schema.get(text) if text is not None else None
            if check is None:
                check = SchemaCheck(schema)
                if text is not None:  # shared only by schemas that are the same JSON
                    self._by_schema[text] = check
            self._by_extension[key] = check
        return check

    def errors(self, route: Route, ext: Extension, value: Any, which: str) -> list[dict[str, str]]:
        """Where ``value`` breaks the schema, for the API's error details; [] when it fits."""
        check = self.check(route, ext, which)
        if check is None or check.is_valid(value):
            return []
        return _described(route, ext, check, value, which)

    def input_errors(self, providers: list[Provider], value: Any) -> list[dict[str, str]]:
        """:meth:`errors` of one input for every provider, each distinct schema run once."""
        verdicts: dict[int, bool] = {}
        errors: list[dict[str, str]] = []
        for route, ext in providers:
            check = self.check(route, ext, "input")
            if check is None:
                continue
            ok = verdicts.get(id(check))
            if ok is None:
                ok = verdicts[id(check)] = check.is_valid(value)
            if not ok:
                errors += _described(route, ext, check, value, "input")
        return errors


def _described(
    route: Route, ext: Extension, check: SchemaCheck, value: Any, which: str
) -> list[dict[str, str]]:
    return [
        {
            "plugin": route.plugin_id,
            "extension": ext.name,
            "path": which + "".join(f"[{p!r}]" for p in e.absolute_path),
            "message": e.message,
        }
        for e in check.errors(value)
    ]
