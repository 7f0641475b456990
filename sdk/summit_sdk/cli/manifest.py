"""Reading ``plugin.yaml`` with the basic checks an author needs before a build.

The orchestrator validates the full manifest at install time; this is the small subset the
CLI needs (the SDK never imports the orchestrator).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from summit_sdk.manifest_yaml import ManifestTextError, load_manifest_json, load_manifest_yaml
from summit_sdk.spec import EXTENSION_POINTS

__all__ = ["ManifestError", "check_manifest", "load_manifest", "manifest_from_label"]

PLUGIN_ID = re.compile(r"^[a-z][a-z0-9-]*(\.[a-z0-9][a-z0-9-]*)+$")
SEMVER = re.compile(r"^\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$")
ENTRYPOINT = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
LABEL_MANIFEST = "io.summit.plugin"


class ManifestError(ValueError):
    """The manifest is missing or wrong; the message lists every problem found."""


def check_manifest(data: Any) -> list[str]:
    """Every problem found, each prefixed by the field path; empty when fine."""
    if not isinstance(data, dict):
        return ["(root): the manifest must be a mapping"]
    problems: list[str] = []
    if data.get("schema_version") != 1:
        problems.append("schema_version: must be 1")
    if not isinstance(data.get("id"), str) or not PLUGIN_ID.fullmatch(data["id"]):
        problems.append("id: must be a reverse-DNS id such as com.example.word-count")
    if not isinstance(data.get("name"), str) or not data["name"].strip():
        problems.append("name: required")
    if not isinstance(data.get("version"), str) or not SEMVER.fullmatch(data["version"]):
        problems.append("version: must be a semantic version such as 1.0.0")
    runtime = data.get("runtime")
    if not isinstance(runtime, dict):
        problems.append("runtime: required mapping")
    else:
        entry = runtime.get("entrypoint")
        if entry is not None and (not isinstance(entry, str) or not ENTRYPOINT.fullmatch(entry)):
            problems.append("runtime.entrypoint: must look like 'module:object'")
    extensions = data.get("extensions", [])
    if not isinstance(extensions, list):
        problems.append("extensions: must be a list")
        extensions = []
    seen: set[tuple[str, str]] = set()
    for i, ext in enumerate(extensions):
        where = f"extensions[{i}]"
        if not isinstance(ext, dict):
            problems.append(f"{where}: must be a mapping")
            continue
        if ext.get("point") not in EXTENSION_POINTS:
            problems.append(f"{where}.point: must be one of {', '.join(EXTENSION_POINTS)}")
        if not isinstance(ext.get("name"), str) or not SLUG.fullmatch(ext["name"]):
            problems.append(f"{where}.name: lowercase letters, digits, '-' or '_'")
        key = (str(ext.get("point")), str(ext.get("name")))
        if key in seen:
            problems.append(f"{where}: {key[0]}/{key[1]} is declared twice")
        seen.add(key)
        for schema_key in ("input_schema", "output_schema"):
            if schema_key in ext and not isinstance(ext[schema_key], dict | bool):
                problems.append(f"{where}.{schema_key}: must be a JSON Schema object")
    if "permissions" in data and not isinstance(data["permissions"], list):
        problems.append("permissions: must be a list")
    for section in ("resources", "config_schema", "network", "events"):
        if data.get(section) is not None and not isinstance(data[section], dict):
            problems.append(f"{section}: must be a mapping")
    return problems


def load_manifest(folder: Path) -> dict[str, Any]:
    path = folder / "plugin.yaml"
    if not path.is_file():
        raise ManifestError(f"{path} not found (a plugin folder has plugin.yaml at its root)")
    try:
        data = load_manifest_yaml(path.read_bytes())
    except ManifestTextError as exc:
        raise ManifestError(f"{path} {exc.headline}: {exc}") from None
    problems = check_manifest(data)
    if problems:
        raise ManifestError(f"{path}: " + "; ".join(problems))
    assert isinstance(data, dict)
    return data


def manifest_from_label(labels: dict[str, str] | None, image: str) -> dict[str, Any]:
    raw = (labels or {}).get(LABEL_MANIFEST)
    if not raw:
        raise ManifestError(f"image {image} has no {LABEL_MANIFEST} label (not a Summit plugin?)")
    try:
        data = load_manifest_json(raw)
    except ManifestTextError as exc:
        raise ManifestError(f"the {LABEL_MANIFEST} label of {image} {exc.headline}") from None
    problems = check_manifest(data)
    if problems:
        raise ManifestError(f"the manifest of {image}: " + "; ".join(problems))
    assert isinstance(data, dict)
    return data
