"""The one strict reader of manifest text: ``plugin.yaml``, or the JSON an image label carries.

A manifest is plain data, so the YAML it is written in may not use anchors or aliases (nor
the merge keys ``<<: *name`` built on them): a kilobyte of nested aliases names billions of
values once anything walks the result ("billion laughs"), and the walk holds the interpreter
for seconds. They are refused while the document is composed, before any value is built,
with the line they are on. The text may be at most ``MAX_BYTES`` long and nest at most
``MAX_DEPTH`` mappings or lists and hold at most ``MAX_NODES`` values, so no manifest costs
more than a fraction of a second.

Both the orchestrator and ``summit-plugin`` read manifests through this module, so an author
meets the same limits before a build as the orchestrator applies at install. It needs PyYAML
(the SDK's ``manifest`` extra, part of ``cli``), never the orchestrator.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.events import AliasEvent, CollectionStartEvent, Event, NodeEvent
from yaml.nodes import Node

__all__ = [
    "MAX_BYTES",
    "MAX_DEPTH",
    "MAX_NODES",
    "ManifestTextError",
    "dump_manifest_yaml",
    "load_manifest_json",
    "load_manifest_yaml",
]

MAX_BYTES = 256 * 1024
MAX_DEPTH = 64
# Building each value costs PyYAML about 8 us in Python; 256 KiB of "[1,1,1,...]" would be
# 130 000 of them, a second of CPU. A large real manifest has a few thousand.
MAX_NODES = 20_000


class ManifestTextError(ValueError):
    """The text is not a manifest: ``headline`` completes "plugin.yaml ...", ``problem`` says
    what was found, ``line`` and ``column`` (1-based) where, when known."""

    def __init__(
        self, headline: str, problem: str, *, line: int | None = None, column: int | None = None
    ) -> None:
        self.headline = headline
        self.problem = problem
        self.line = line
        self.column = column
        super().__init__(f"{self.where}: {problem}")

    @property
    def where(self) -> str:
        if self.line is None:
            return "(root)"
        return f"line {self.line}, column {self.column}"


def _at(headline: str, problem: str, mark: Any) -> ManifestTextError:
    if mark is None:
        return ManifestTextError(headline, problem)
    return ManifestTextError(headline, problem, line=mark.line + 1, column=mark.column + 1)


class _StrictComposer(Composer):
    """Refuses anchors, aliases and deep nesting as the nodes are composed.

    Aliases are refused here, not after loading: by then an alias bomb is already a graph the
    next ``json.dumps`` or validator expands in full.
    """

    _depth = 0
    _nodes = 0
    # From the parser this is mixed with: PyYAML's Parser or libyaml's CParser.
    peek_event: Callable[[], Event]

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        event = self.peek_event()
        if isinstance(event, AliasEvent):
            raise _at(
                "may not use YAML aliases",
                f"alias *{event.anchor}: anchors and aliases are not allowed in a manifest",
                event.start_mark,
            )
        if isinstance(event, NodeEvent) and event.anchor is not None:
            raise _at(
                "may not use YAML anchors",
                f"anchor &{event.anchor}: anchors and aliases are not allowed in a manifest",
                event.start_mark,
            )
        self._nodes += 1
        if self._nodes > MAX_NODES:
            raise _at(
                f"has more than {MAX_NODES} values",
                f"more than {MAX_NODES} values (mappings, lists and scalars)",
                event.start_mark,
            )
        if not isinstance(event, CollectionStartEvent):
            return super().compose_node(parent, index)
        if self._depth >= MAX_DEPTH:
            raise _at(
                f"is nested more than {MAX_DEPTH} levels deep",
                f"more than {MAX_DEPTH} nested mappings or lists",
                event.start_mark,
            )
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


class _StrictPyLoader(_StrictComposer, yaml.SafeLoader):
    """Pure Python scanner and parser (PyYAML without libyaml)."""


_Loader: type[yaml.SafeLoader] | type[yaml.CSafeLoader] = _StrictPyLoader
if yaml.__with_libyaml__:
    # libyaml scans and parses about ten times faster; composing stays in Python (listed
    # first, Composer's methods replace CParser's own) so the checks above still apply.
    class _StrictCLoader(_StrictComposer, yaml.CSafeLoader):
        def __init__(self, stream: str | bytes) -> None:
            yaml.CSafeLoader.__init__(self, stream)
            self.anchors = {}  # what Composer.__init__ sets; CSafeLoader never calls it

    _Loader = _StrictCLoader


def _check_size(text: str | bytes) -> None:
    size = len(text) if isinstance(text, bytes) else len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_BYTES:
        raise ManifestTextError(
            f"is larger than {MAX_BYTES // 1024} KiB",
            f"{size} bytes; a manifest may have at most {MAX_BYTES}",
        )


def load_manifest_yaml(text: str | bytes) -> Any:
    """The data of one YAML document (JSON is YAML too); ManifestTextError if it is not
    valid YAML, is too large or too deep, or uses anchors or aliases."""
    _check_size(text)
    loader = _Loader(text)
    try:
        return loader.get_single_data()
    except ManifestTextError:
        raise
    except yaml.MarkedYAMLError as exc:
        problem = str(exc.problem or exc.context or "malformed")
        raise _at("is not valid YAML", problem, exc.problem_mark or exc.context_mark) from None
    except yaml.YAMLError as exc:
        raise ManifestTextError("is not valid YAML", " ".join(str(exc).split())) from None
    except (ValueError, OverflowError) as exc:
        # A value YAML reads but Python refuses: an integer of more than 4300 digits, a
        # date such as 2024-13-45.
        raise ManifestTextError("is not valid YAML", str(exc)) from None
    finally:
        loader.dispose()


def load_manifest_json(text: str | bytes) -> Any:
    """The data of a JSON manifest (an image's label) under the same size and depth caps."""
    _check_size(text)
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ManifestTextError("is not valid JSON", str(exc)) from None
    _check_depth(data)
    return data


def _check_depth(data: Any) -> None:
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            children = list(value.values())
        elif isinstance(value, list):
            children = value
        else:
            continue
        if depth > MAX_DEPTH:
            raise ManifestTextError(
                f"is nested more than {MAX_DEPTH} levels deep",
                f"more than {MAX_DEPTH} nested objects or arrays",
            )
        stack.extend((child, depth + 1) for child in children)


class _PlainDumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True


def dump_manifest_yaml(data: Any, **options: Any) -> str:
    """YAML text for a manifest that ``load_manifest_yaml`` reads back.

    PyYAML writes an anchor and an alias when one object appears twice (a schema shared by
    an extension's input and output), which the reader refuses; here every value is written
    out in full. ``options`` are ``yaml.dump``'s (``sort_keys``, ``width``, ...).
    """
    return str(yaml.dump(data, Dumper=_PlainDumper, **options))
