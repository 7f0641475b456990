"""Builds a plugin image from a source folder, content-addressed.

The tag carries a digest of every source file, the manifest and the base image id, so an
unchanged source never rebuilds: the existing image is found by tag and reused.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml
from summit_sdk.imagebuild import prepare_context, source_digest

from orchestrator.domain.errors import ServiceUnavailable
from orchestrator.domain.manifest import Manifest
from orchestrator.runtime.base import (
    LABEL_MANIFEST,
    LABEL_SOURCE_DIGEST,
    BuildProgress,
    ImageInfo,
    ImageStore,
)


@dataclass(frozen=True)
class BuiltImage:
    tag: str
    info: ImageInfo
    digest: str
    reused: bool
    # The base the digest covers: with it, a kept source can be checked against ``digest``.
    base_image_id: str


class ImageBuilder:
    def __init__(self, images: ImageStore, *, base_image: str, workdir: Path) -> None:
        self.images = images
        self.base_image = base_image
        self.workdir = workdir

    def build(self, source: Path, manifest: Manifest, progress: BuildProgress) -> BuiltImage:
        base = self.images.image(self.base_image)
        if base is None:
            raise ServiceUnavailable(
                f"the plugin base image {self.base_image} is not present",
                code="base_image_missing",
                details={"hint": "build it with plugin-base-images/build.sh"},
            )
        digest = source_digest(source, base_image_id=base.id)
        tag = f"summit-plugin/{manifest.id}:{manifest.version}-{digest[:16]}"
        existing = self.images.image(tag)
        if existing is not None and existing.labels.get(LABEL_SOURCE_DIGEST) == digest:
            progress(f"source unchanged, reusing {tag}")
            return BuiltImage(tag, existing, digest, reused=True, base_image_id=base.id)
        self.workdir.mkdir(parents=True, exist_ok=True)
        ctx = Path(tempfile.mkdtemp(prefix="build-", dir=self.workdir))
        try:
            manifest_json = json.dumps(manifest.to_json(), sort_keys=True)
            prepare_context(
                ctx,
                source,
                base_image_id=base.id,
                entrypoint=manifest.runtime.entrypoint or "",
                manifest_json=manifest_json,
                manifest_yaml=yaml.safe_dump(manifest.to_json(), sort_keys=False),
            )
            progress(f"building {tag} from {self.base_image}")
            info = self.images.build_image(
                ctx,
                tag=tag,
                labels={
                    LABEL_MANIFEST: manifest_json,
                    LABEL_SOURCE_DIGEST: digest,
                },
                progress=progress,
            )
        finally:
            shutil.rmtree(ctx, ignore_errors=True)
        return BuiltImage(tag, info, digest, reused=False, base_image_id=base.id)
