"""The plugin manifest as the orchestrator reads it: the SDK's model and checks
(:mod:`summit_sdk.manifest`), held to this orchestrator's version, with a refusal as the API's
422 ``invalid_manifest`` error listing every problem with its path.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from summit_sdk import manifest as sdk_manifest
from summit_sdk.manifest import (  # noqa: F401
    Dependency,
    Events,
    Extension,
    ExtensionPoint,
    Manifest,
    Network,
    Permission,
    Resources,
    Runtime,
    schema_key,
)

from orchestrator import __version__
from orchestrator.domain.errors import InvalidInput


class ManifestError(InvalidInput):
    code = "invalid_manifest"


@contextlib.contextmanager
def _refusals() -> Iterator[None]:
    try:
        yield
    except sdk_manifest.InvalidManifest as exc:
        raise ManifestError(exc.message, details=exc.errors) from None


def parse_manifest(data: Any) -> Manifest:
    """Validate a manifest mapping; raise ManifestError listing every problem with its path."""
    with _refusals():
        return sdk_manifest.parse_manifest(data, summit_version=__version__)


def load_manifest_text(text: str | bytes) -> Manifest:
    """Parse YAML (or JSON, which is YAML) text into a validated manifest."""
    with _refusals():
        return sdk_manifest.load_manifest_text(text, summit_version=__version__)
