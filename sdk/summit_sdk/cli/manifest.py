"""``plugin.yaml`` for the author's commands: read from a folder or an image label and held to
the checks the orchestrator applies at install (:mod:`summit_sdk.manifest`).

The manifest is returned as the mapping it was written as (a build puts exactly that into
the image), with each problem as one line ``path: message``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from summit_sdk.labels import LABEL_MANIFEST
from summit_sdk.manifest import manifest_problems
from summit_sdk.manifest_yaml import ManifestTextError, load_manifest_json, load_manifest_yaml

__all__ = ["ManifestError", "check_manifest", "load_manifest", "manifest_from_label"]


class ManifestError(ValueError):
    """The manifest is missing or wrong; the message lists every problem found."""


def check_manifest(data: Any) -> list[str]:
    """Every problem found, each prefixed by the field path; empty when fine."""
    return [f"{p['path']}: {p['message']}" for p in manifest_problems(data)]


def _checked(data: Any, what: str) -> dict[str, Any]:
    problems = check_manifest(data)
    if problems:
        raise ManifestError(f"{what}: " + "; ".join(problems))
    assert isinstance(data, dict)
    return data


def load_manifest(folder: Path) -> dict[str, Any]:
    path = folder / "plugin.yaml"
    if not path.is_file():
        raise ManifestError(f"{path} not found (a plugin folder has plugin.yaml at its root)")
    try:
        data = load_manifest_yaml(path.read_bytes())
    except ManifestTextError as exc:
        raise ManifestError(f"{path} {exc.headline}: {exc}") from None
    return _checked(data, str(path))


def manifest_from_label(labels: dict[str, str] | None, image: str) -> dict[str, Any]:
    raw = (labels or {}).get(LABEL_MANIFEST)
    if not raw:
        raise ManifestError(f"image {image} has no {LABEL_MANIFEST} label (not a Summit plugin?)")
    try:
        data = load_manifest_json(raw)
    except ManifestTextError as exc:
        raise ManifestError(f"the {LABEL_MANIFEST} label of {image} {exc.headline}") from None
    return _checked(data, f"the manifest of {image}")
