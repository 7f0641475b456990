"""Sample values generated from JSON Schemas, for the conformance suite and for scaffolds.

Covers what common plugin schemas use: ``type`` (also a list of types), ``enum``, ``const``,
``default``, ``examples``, ``object`` (``required``, ``properties``), ``array`` (``items``,
``prefixItems``, ``minItems``/``maxItems``), string length and a few ``format``\\s, numeric bounds
(``minimum``, ``maximum``, exclusive bounds, ``multipleOf``), ``anyOf``/``oneOf``/``allOf`` and
local ``$ref`` (``#/...``). The value is deterministic: the same schema gives the same sample.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["SchemaSampleError", "config_from_schema", "sample_from_schema"]

_MAX_DEPTH = 12
_FORMATS = {
    "date-time": "2024-01-01T00:00:00Z",
    "date": "2024-01-01",
    "time": "00:00:00Z",
    "email": "user@example.com",
    "uri": "https://example.com/",
    "url": "https://example.com/",
    "hostname": "example.com",
    "ipv4": "192.0.2.1",
    "ipv6": "2001:db8::1",
    "uuid": "00000000-0000-4000-8000-000000000000",
}


class SchemaSampleError(ValueError):
    """The schema cannot be satisfied by the generator (e.g. an unresolvable ``$ref``)."""


def sample_from_schema(schema: Any, *, root: Any = None, _depth: int = 0) -> Any:
    """A value that validates against ``schema`` for the common cases listed above."""
    if root is None:
        root = schema
    if _depth > _MAX_DEPTH:
        raise SchemaSampleError("schema nests too deeply (recursive $ref?)")
    if schema is True or schema is None or schema == {}:
        return "sample"
    if schema is False:
        raise SchemaSampleError("schema 'false' accepts no value")
    if not isinstance(schema, dict):
        raise SchemaSampleError(f"a schema must be an object, got {type(schema).__name__}")

    def again(sub: Any) -> Any:
        return sample_from_schema(sub, root=root, _depth=_depth + 1)

    if "$ref" in schema:
        return again(_resolve(schema["$ref"], root))
    if "const" in schema:
        return schema["const"]
    if "default" in schema:
        return schema["default"]
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    examples = schema.get("examples")
    if isinstance(examples, list) and examples:
        return examples[0]
    for key in ("anyOf", "oneOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            non_null = [o for o in options if not (isinstance(o, dict) and o.get("type") == "null")]
            return again((non_null or options)[0])
    all_of = schema.get("allOf")
    if isinstance(all_of, list) and all_of:
        merged = {k: v for k, v in schema.items() if k != "allOf"}
        for part in all_of:
            part = (
                _resolve(part["$ref"], root) if isinstance(part, dict) and "$ref" in part else part
            )
            if isinstance(part, dict):
                merged = _merge(merged, part)
        return again(merged)

    kind = _pick_type(schema)
    if kind == "object":
        return _object(schema, again)
    if kind == "array":
        return _array(schema, again)
    if kind == "string":
        return _string(schema)
    if kind == "integer":
        return _integer(schema)
    if kind == "number":
        return _number(schema)
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return "sample"


def config_from_schema(schema: Any) -> dict[str, Any]:
    """A config object: every property's ``default``, plus samples for required ones."""
    if not isinstance(schema, dict):
        return {}
    properties = schema.get("properties")
    properties = properties if isinstance(properties, dict) else {}
    required = [r for r in schema.get("required") or [] if isinstance(r, str)]
    config: dict[str, Any] = {}
    for name, sub in properties.items():
        if isinstance(sub, dict) and "default" in sub:
            config[name] = sub["default"]
        elif name in required:
            config[name] = sample_from_schema(sub, root=schema)
    for name in required:
        config.setdefault(name, "sample")
    return config


def _pick_type(schema: dict[str, Any]) -> str | None:
    kind = schema.get("type")
    if isinstance(kind, list):
        choices = [k for k in kind if k != "null"] or kind
        kind = choices[0] if choices else None
    if isinstance(kind, str):
        return kind
    if "properties" in schema or "required" in schema:
        return "object"
    if "items" in schema or "prefixItems" in schema:
        return "array"
    if any(k in schema for k in ("minLength", "maxLength", "pattern", "format")):
        return "string"
    if any(k in schema for k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")):
        return "number"
    return None


def _object(schema: dict[str, Any], again: Any) -> dict[str, Any]:
    properties = schema.get("properties")
    properties = properties if isinstance(properties, dict) else {}
    required = [r for r in schema.get("required") or [] if isinstance(r, str)]
    # Required properties only; with no 'required' list, every declared property.
    names = required or list(properties)
    out: dict[str, Any] = {}
    for name in names:
        out[name] = again(properties.get(name, {}))
    return out


def _array(schema: dict[str, Any], again: Any) -> list[Any]:
    prefix = schema.get("prefixItems")
    out: list[Any] = [again(s) for s in prefix] if isinstance(prefix, list) else []
    items = schema.get("items")
    min_items = _int(schema.get("minItems"), 0) or 0
    max_items = _int(schema.get("maxItems"), None)
    want = max(min_items, 1)
    if max_items is not None:
        want = min(want, max_items)
    if items is False:
        return out
    while len(out) < want:
        out.append(again(items if items is not None else {}))
    return out


def _string(schema: dict[str, Any]) -> str:
    fmt = schema.get("format")
    value = _FORMATS.get(fmt, "sample") if isinstance(fmt, str) else "sample"
    min_len = _int(schema.get("minLength"), 0) or 0
    max_len = _int(schema.get("maxLength"), None)
    if len(value) < min_len:
        value = value + "x" * (min_len - len(value))
    if max_len is not None and len(value) > max_len:
        value = value[:max_len]
    return value


def _bounds(schema: dict[str, Any]) -> tuple[float | None, float | None, bool, bool]:
    low, high = schema.get("minimum"), schema.get("maximum")
    low_x, high_x = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
    low_open = high_open = False
    if isinstance(low_x, bool):  # draft 4 style
        low_open = low_x
    elif isinstance(low_x, int | float) and (low is None or low_x >= low):
        low, low_open = low_x, True
    if isinstance(high_x, bool):
        high_open = high_x
    elif isinstance(high_x, int | float) and (high is None or high_x <= high):
        high, high_open = high_x, True
    num = (int, float)
    return (
        low if isinstance(low, num) else None,
        high if isinstance(high, num) else None,
        low_open,
        high_open,
    )


def _integer(schema: dict[str, Any]) -> int:
    low, high, low_open, high_open = _bounds(schema)
    lo = None if low is None else (math.floor(low) + 1 if low_open else math.ceil(low))
    hi = None if high is None else (math.ceil(high) - 1 if high_open else math.floor(high))
    value = 1
    if lo is not None and value < lo:
        value = lo
    if hi is not None and value > hi:
        value = hi
    step = schema.get("multipleOf")
    if isinstance(step, int) and not isinstance(step, bool) and step > 0 and value % step:
        up = value + (step - value % step)
        value = up if hi is None or up <= hi else value - value % step
    return value


def _number(schema: dict[str, Any]) -> float | int:
    low, high, low_open, high_open = _bounds(schema)
    step = schema.get("multipleOf")
    if isinstance(step, int | float) and not isinstance(step, bool) and step > 0:
        start = 1.0 if low is None else low
        k = math.ceil(start / step)
        value = k * step
        if low_open and low is not None and value <= low:
            value += step
        return int(value) if float(value).is_integer() else value
    value = 1.0
    if low is not None and (value < low or (low_open and value <= low)):
        value = low + 1 if high is None else (low + high) / 2 if low_open else low
    if high is not None and (value > high or (high_open and value >= high)):
        value = high - 1 if low is None else (low + high) / 2 if high_open else high
    return value


def _int(value: Any, fallback: int | None) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else fallback


def _resolve(ref: Any, root: Any) -> Any:
    if not isinstance(ref, str) or not ref.startswith("#"):
        raise SchemaSampleError(f"only local $ref ('#/...') is supported, got {ref!r}")
    node = root
    for raw in ref.lstrip("#").split("/"):
        if not raw:
            continue
        part = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise SchemaSampleError(f"$ref {ref!r} does not resolve")
    return node


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for key, value in b.items():
        if key == "properties" and isinstance(value, dict):
            out["properties"] = {**(out.get("properties") or {}), **value}
        elif key == "required" and isinstance(value, list):
            out["required"] = list(dict.fromkeys([*(out.get("required") or []), *value]))
        else:
            out.setdefault(key, value)
    return out
