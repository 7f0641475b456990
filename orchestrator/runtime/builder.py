"""Builds a plugin image from a source folder, content-addressed.

The tag carries a digest of every source file, the manifest and the base image id, so an
unchanged source never rebuilds: the existing image is found by tag and reused.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from orchestrator.domain.errors import ServiceUnavailable
from orchestrator.domain.manifest import Manifest
from orchestrator.runtime.base import (
    LABEL_MANIFEST,
    LABEL_SOURCE_DIGEST,
    BuildProgress,
    ContainerRuntime,
    ImageInfo,
)

BUILDER_VERSION = "1"
IGNORED = {"__pycache__", ".git", ".venv", ".pytest_cache", ".mypy_cache"}


def source_files(root: Path) -> list[Path]:
    files = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if any(part in IGNORED for part in rel.parts) or path.suffix == ".pyc":
            continue
        if path.is_file() and not path.is_symlink():
            files.append(path)
    return files


def source_digest(root: Path, *, base_image_id: str) -> str:
    h = hashlib.sha256()
    h.update(f"summit-builder/{BUILDER_VERSION}\0{base_image_id}\0".encode())
    for path in source_files(root):
        h.update(path.relative_to(root).as_posix().encode() + b"\0")
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


@dataclass(frozen=True)
class BuiltImage:
    tag: str
    info: ImageInfo
    digest: str
    reused: bool


class ImageBuilder:
    def __init__(self, runtime: ContainerRuntime, *, base_image: str, workdir: Path) -> None:
        self.runtime = runtime
        self.base_image = base_image
        self.workdir = workdir

    def build(self, source: Path, manifest: Manifest, progress: BuildProgress) -> BuiltImage:
        base = self.runtime.image(self.base_image)
        if base is None:
            raise ServiceUnavailable(
                f"the plugin base image {self.base_image} is not present",
                code="base_image_missing",
                details={"hint": "build it with plugin-base-images/build.sh"},
            )
        digest = source_digest(source, base_image_id=base.id)
        tag = f"summit-plugin/{manifest.id}:{manifest.version}-{digest[:16]}"
        existing = self.runtime.image(tag)
        if existing is not None and existing.labels.get(LABEL_SOURCE_DIGEST) == digest:
            progress(f"source unchanged, reusing {tag}")
            return BuiltImage(tag=tag, info=existing, digest=digest, reused=True)
        self.workdir.mkdir(parents=True, exist_ok=True)
        ctx = Path(tempfile.mkdtemp(prefix="build-", dir=self.workdir))
        try:
            plugin_dir = ctx / "plugin"
            plugin_dir.mkdir()
            for path in source_files(source):
                dest = plugin_dir / path.relative_to(source)
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, dest)
            meta = ctx / "summit"
            meta.mkdir()
            manifest_json = json.dumps(manifest.to_json(), sort_keys=True)
            (meta / "plugin.json").write_text(manifest_json)
            (meta / "plugin.yaml").write_text(yaml.safe_dump(manifest.to_json(), sort_keys=False))
            entrypoint = manifest.runtime.entrypoint or ""
            (ctx / "Dockerfile").write_text(
                f"FROM {base.id}\n"
                "COPY plugin/ /plugin/\n"
                "COPY summit/ /summit/\n"
                f"ENV SUMMIT_PLUGIN_ENTRYPOINT={entrypoint} "
                "SUMMIT_PLUGIN_MANIFEST=/summit/plugin.json\n"
            )
            progress(f"building {tag} from {self.base_image}")
            info = self.runtime.build_image(
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
        return BuiltImage(tag=tag, info=info, digest=digest, reused=False)
