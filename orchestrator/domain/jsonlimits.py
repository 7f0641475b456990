"""JSON from outside Summit, decoded with limits on its size and on its nesting.

Every JSON document a caller or a plugin hands us (the API's JSON fields, a plugin's config,
an execute input, a plugin's answer) goes through here. Why a depth limit: ``json.loads``
recurses in C and gives up with ``RecursionError`` near the interpreter's limit (about 1,000
levels), and whatever walks the value afterwards (schema checks, encoding an answer) recurses
in Python with less room still. Refusing anything deeper than :data:`MAX_DEPTH` keeps a hostile
document a 4xx (or, for a plugin's answer, that plugin's 502) instead of a 500.

Depth counts containers: ``1`` and ``"a"`` are 0 deep, ``[]`` and ``{}`` are 1, ``[{}]`` is 2.
"""

from __future__ import annotations

import json
from typing import Any

from orchestrator.domain.errors import InvalidInput, TooLarge

__all__ = [
    "MAX_DEPTH",
    "TooDeep",
    "check",
    "check_depth",
    "decode",
    "depth_exceeds",
    "loads",
    "may_exceed",
    "too_deep",
]

MAX_DEPTH = 64


class TooDeep(ValueError):
    """The JSON nests deeper than allowed (a ValueError, like any other JSON that is refused)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"JSON nested deeper than {limit} levels")
        self.limit = limit


def depth_exceeds(value: Any, limit: int) -> bool:
    """Whether ``value`` nests more than ``limit`` containers deep (iterative: any depth)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend(
            (child, depth + 1) for child in children if isinstance(child, dict | list | tuple)
        )
    return False


def may_exceed(raw: bytes | bytearray | str, limit: int) -> bool:
    """False when the JSON text ``raw`` cannot nest deeper than ``limit``: each level opens
    with ``[`` or ``{``, so fewer of them than that settles it (in C, without a walk)."""
    if len(raw) <= limit:
        return False
    if isinstance(raw, str):
        return raw.count("[") + raw.count("{") > limit
    return raw.count(b"[") + raw.count(b"{") > limit


def decode(raw: bytes | bytearray | str, *, max_depth: int = MAX_DEPTH) -> Any:
    """``json.loads`` that refuses nesting deeper than ``max_depth`` with :class:`TooDeep`;
    other bad JSON raises ValueError as ``json.loads`` does."""
    try:
        value = json.loads(raw)
    except RecursionError:
        raise TooDeep(max_depth) from None
    if may_exceed(raw, max_depth) and depth_exceeds(value, max_depth):
        raise TooDeep(max_depth)
    return value


def check_depth(
    raw: bytes | bytearray | str, value: Any, *, what: str, max_depth: int = MAX_DEPTH
) -> None:
    """Refuse ``value`` (decoded from ``raw``, or encoded as ``raw``) when it nests deeper than
    ``max_depth``: for a value that came through a decoder without this module's limit."""
    if may_exceed(raw, max_depth) and depth_exceeds(value, max_depth):
        raise too_deep(what, max_depth)


def too_deep(what: str, max_depth: int = MAX_DEPTH) -> InvalidInput:
    """The error for ``what`` nesting too deep (one wording, whichever door refuses it)."""
    return InvalidInput(
        f"{what} is nested deeper than {max_depth} levels",
        code="too_deep",
        details={"max_depth": max_depth},
    )


def _too_large(what: str, size: int, max_bytes: int, code: str) -> TooLarge:
    return TooLarge(
        f"{what} is {size} bytes; the limit is {max_bytes}",
        code=code,
        details={"limit_bytes": max_bytes},
    )


def loads(
    raw: bytes | bytearray | str,
    *,
    what: str,
    max_bytes: int | None = None,
    max_depth: int = MAX_DEPTH,
    too_large_code: str = "too_large",
) -> Any:
    """Decode JSON text from a caller, in ``max_bytes`` (UTF-8) and ``max_depth`` levels.

    Raises :class:`TooLarge` (413, code ``too_large_code``) or :class:`InvalidInput` (422:
    ``too_deep``, or ``invalid_request`` for text that is not JSON); ``what`` names the
    document in the message ("field 'config'")."""
    if max_bytes is not None:
        size = len(raw) if not isinstance(raw, str) or len(raw) > max_bytes else len(raw.encode())
        if size > max_bytes:
            raise _too_large(what, size, max_bytes, too_large_code)
    try:
        return decode(raw, max_depth=max_depth)
    except TooDeep:
        raise too_deep(what, max_depth) from None
    except ValueError:
        raise InvalidInput(f"{what} must be JSON text", code="invalid_request") from None


def check(
    value: Any,
    *,
    what: str,
    max_bytes: int | None = None,
    max_depth: int = MAX_DEPTH,
    too_large_code: str = "too_large",
) -> None:
    """The limits of :func:`loads` for a value already decoded (its compact JSON is what
    ``max_bytes`` measures), for code that receives values rather than text."""
    try:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    except RecursionError:
        raise too_deep(what, max_depth) from None
    except (TypeError, ValueError):
        raise InvalidInput(f"{what} is not JSON data", code="invalid_request") from None
    if max_bytes is not None:
        size = len(text) if len(text) > max_bytes else len(text.encode())
        if size > max_bytes:
            raise _too_large(what, size, max_bytes, too_large_code)
    check_depth(text, value, what=what, max_depth=max_depth)
