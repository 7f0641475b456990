"""Semantic versions and the npm-style ranges manifests use: :mod:`summit_sdk.versions`.

The SDK owns the manifest contract, versions included; the orchestrator's modules import them
by this name.
"""

from summit_sdk.versions import Version, VersionError, VersionRange

__all__ = ["Version", "VersionError", "VersionRange"]
