"""What a built plugin says about itself, in manifest terms, and how that meets ``plugin.yaml``.

``describe`` turns a :class:`~summit_sdk.builder.Plugin` into the manifest fields the code
knows (metadata, permissions, config schema, extensions with their schemas, event types).
:func:`describe_folder` does so in a child Python process started in the plugin folder, so the
author's module is imported exactly as the runtime imports it and leaves nothing behind in the
CLI's own process. ``generate`` and ``compare`` then write or check ``plugin.yaml``.

Run as ``python -m summit_sdk.cli.introspect module:object`` it prints the description as JSON.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from summit_sdk.builder import Plugin

__all__ = ["IntrospectionError", "compare", "describe", "describe_folder", "generate"]

EXTENSION_OPTIONS = ("priority", "idempotent", "timeout_ms")


class IntrospectionError(Exception):
    """The plugin's code could not be imported or described."""


def describe(plugin: Plugin) -> dict[str, Any]:
    """The manifest fields the code sets; absent keys mean "the code does not say"."""
    out: dict[str, Any] = {}
    for key in ("id", "version", "name", "description"):
        value = getattr(plugin, key)
        if value:
            out[key] = value
    if plugin.permissions:
        out["permissions"] = list(plugin.permissions)
    if plugin.config_schema is not None:
        out["config_schema"] = json.loads(json.dumps(dict(plugin.config_schema)))
    extensions = []
    for (point, name), info in plugin.extension_info.items():
        entry: dict[str, Any] = {"point": point, "name": name}
        for option in EXTENSION_OPTIONS:
            value = getattr(info, option)
            if value is not None:
                entry[option] = value
        input_schema, output_schema = info.schemas()
        if input_schema is not None:
            entry["input_schema"] = input_schema
        if output_schema is not None:
            entry["output_schema"] = output_schema
        # Which schemas the author wrote down (checked strictly) and which come from models.
        entry["explicit_schemas"] = [
            key
            for key, value in (
                ("input_schema", info.input_schema),
                ("output_schema", info.output_schema),
            )
            if value is not None
        ]
        extensions.append(entry)
    out["extensions"] = extensions
    out["subscribe"] = sorted(plugin.event_handlers)
    out["publish"] = list(plugin.publishes)
    return out


def describe_folder(folder: Path, entrypoint: str, *, timeout_s: float = 60) -> dict[str, Any]:
    """Import ``entrypoint`` in a child process whose working directory is ``folder``."""
    try:
        done = subprocess.run(
            [sys.executable, "-m", "summit_sdk.cli.introspect", entrypoint],
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise IntrospectionError(
            f"importing {entrypoint} took more than {timeout_s:.0f} s"
        ) from None
    if done.returncode != 0:
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        reason = lines[-1] if lines else f"exit status {done.returncode}"
        raise IntrospectionError(f"cannot load {entrypoint}: {reason}")
    try:
        described: dict[str, Any] = json.loads(done.stdout)
    except ValueError:
        raise IntrospectionError(f"importing {entrypoint} printed to stdout") from None
    return described


def generate(
    described: dict[str, Any], base: dict[str, Any] | None, entrypoint: str
) -> dict[str, Any]:
    """``plugin.yaml`` content: ``base`` (the current manifest, if any) updated from the code.

    The code wins for what it says; what it cannot know (resources, network, dependencies,
    authors, license, hand-written schemas) is kept from ``base``.
    """
    manifest: dict[str, Any] = copy.deepcopy(base) if base else {}
    manifest.setdefault("schema_version", 1)
    for key in ("id", "name", "version", "description"):
        if key in described:
            manifest[key] = described[key]
    manifest.setdefault("name", manifest.get("id", ""))
    runtime = manifest.setdefault("runtime", {})
    runtime.setdefault("base", "python")
    runtime["entrypoint"] = entrypoint
    if "permissions" in described:
        manifest["permissions"] = described["permissions"]
    if "config_schema" in described:
        manifest["config_schema"] = described["config_schema"]
    old = {(e.get("point"), e.get("name")): e for e in manifest.get("extensions") or []}
    extensions = []
    for entry in described["extensions"]:
        merged = dict(old.get((entry["point"], entry["name"]), {}))
        merged.update({k: v for k, v in entry.items() if k != "explicit_schemas"})
        extensions.append(merged)
    manifest["extensions"] = extensions
    events = dict(manifest.get("events") or {})
    subscribe = [t for t in described["subscribe"] if t != "*"]
    if subscribe or "*" not in described["subscribe"]:
        events["subscribe"] = subscribe
    if described["publish"]:
        events["publish"] = described["publish"]
    events = {k: v for k, v in events.items() if v}
    if events:
        manifest["events"] = events
    else:
        manifest.pop("events", None)
    return manifest


def compare(described: dict[str, Any], manifest: dict[str, Any]) -> list[str]:
    """Every way the code and ``plugin.yaml`` disagree; empty when they agree."""
    problems: list[str] = []
    for key in ("id", "version", "name", "description"):
        if key in described and manifest.get(key) != described[key]:
            problems.append(
                f"{key}: the code says {described[key]!r}, plugin.yaml {manifest.get(key)!r}"
            )
    declared = set(manifest.get("permissions") or [])
    if "permissions" in described and set(described["permissions"]) != declared:
        problems.append(
            "permissions: the code requests "
            f"{sorted(described['permissions'])}, plugin.yaml {sorted(declared)}"
        )
    if "config_schema" in described and described["config_schema"] != manifest.get("config_schema"):
        problems.append("config_schema: the code's schema differs from plugin.yaml's")
    in_yaml = {(e.get("point"), e.get("name")): e for e in manifest.get("extensions") or []}
    in_code = {(e["point"], e["name"]): e for e in described["extensions"]}
    for point, name in sorted(set(in_code) - set(in_yaml)):
        problems.append(f"extensions: {point}/{name} has a handler but is not in plugin.yaml")
    for point, name in sorted(set(in_yaml) - set(in_code), key=str):
        problems.append(f"extensions: {point}/{name} is in plugin.yaml but has no handler")
    for pair in sorted(set(in_code) & set(in_yaml)):
        code, yaml_entry = in_code[pair], in_yaml[pair]
        for option in (*EXTENSION_OPTIONS, *code["explicit_schemas"]):
            if option in code and yaml_entry.get(option) != code[option]:
                problems.append(
                    f"extensions: {pair[0]}/{pair[1]}.{option} differs "
                    f"(code {_short(code[option])}, plugin.yaml {_short(yaml_entry.get(option))})"
                )
    events = manifest.get("events") or {}
    subscribed = set(events.get("subscribe") or [])
    handled = set(described["subscribe"])
    for event_type in sorted(handled - subscribed - {"*"}):
        problems.append(f"events.subscribe: the code handles {event_type!r}; plugin.yaml omits it")
    if "*" not in handled:
        for event_type in sorted(subscribed - handled):
            problems.append(
                f"events.subscribe: {event_type!r} is subscribed but the code has no handler"
            )
    for event_type in described["publish"]:
        if event_type not in set(events.get("publish") or []):
            problems.append(
                f"events.publish: the code publishes {event_type!r}; plugin.yaml omits it"
            )
    return problems


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 60 else text[:57] + "..."


def main(argv: list[str]) -> int:
    from summit_sdk.runtime import EntrypointError, load_entrypoint

    if len(argv) != 1:
        print("usage: python -m summit_sdk.cli.introspect module:object", file=sys.stderr)
        return 2
    # The author's module may print while importing: keep stdout for the JSON.
    real_stdout, sys.stdout = sys.stdout, sys.stderr
    try:
        plugin = load_entrypoint(argv[0])
        described = describe(plugin)
    except EntrypointError as exc:
        print(" ".join(str(exc).split()), file=sys.stderr)
        return 1
    except Exception as exc:
        print(f"cannot describe {argv[0]}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    finally:
        sys.stdout = real_stdout
    json.dump(described, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
