"""How a plugin image is made from a source folder: the one recipe both builders follow.

The orchestrator's builder (``orchestrator/runtime/builder.py``) and ``summit-plugin build``
use these functions, so an author's local image is the image the orchestrator would build, and
the content digest (source files + base image id + builder version) means the same on both
sides. Standard library only: the orchestrator imports it from the SDK, never the reverse.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import shutil
import tarfile
from collections.abc import Mapping
from pathlib import Path

__all__ = [
    "BUILDER_VERSION",
    "IGNORED",
    "dockerfile",
    "pack_bundle",
    "prepare_context",
    "source_digest",
    "source_files",
]

BUILDER_VERSION = "1"
# Tool caches and VCS data are never part of a plugin's source.
IGNORED = frozenset({"__pycache__", ".git", ".venv", ".pytest_cache", ".mypy_cache", ".ruff_cache"})


def source_files(root: Path) -> list[Path]:
    """The plugin's files under ``root`` in a stable order (no symlinks, caches or .pyc)."""
    files = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if any(part in IGNORED for part in rel.parts) or path.suffix == ".pyc":
            continue
        if path.is_file() and not path.is_symlink():
            files.append(path)
    return files


def source_digest(root: Path, *, base_image_id: str) -> str:
    """sha256 over the builder version, the base image id and every file's path and content."""
    h = hashlib.sha256()
    h.update(f"summit-builder/{BUILDER_VERSION}\0{base_image_id}\0".encode())
    for path in source_files(root):
        h.update(path.relative_to(root).as_posix().encode() + b"\0")
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def dockerfile(base_image_id: str, entrypoint: str) -> str:
    """The build context holds ``plugin/`` (the source) and ``summit/`` (the manifest)."""
    return (
        f"FROM {base_image_id}\n"
        "COPY plugin/ /plugin/\n"
        "COPY summit/ /summit/\n"
        f"ENV SUMMIT_PLUGIN_ENTRYPOINT={entrypoint} "
        "SUMMIT_PLUGIN_MANIFEST=/summit/plugin.json\n"
    )


def prepare_context(
    ctx: Path,
    source: Path,
    *,
    base_image_id: str,
    entrypoint: str,
    manifest_json: str,
    manifest_yaml: str,
) -> None:
    """Fill the empty folder ``ctx`` with the build context: ``plugin/`` (the source files),
    ``summit/plugin.json`` and ``summit/plugin.yaml`` (the manifest) and the Dockerfile."""
    plugin_dir = ctx / "plugin"
    plugin_dir.mkdir()
    for path in source_files(source):
        dest = plugin_dir / path.relative_to(source)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, dest)
    meta = ctx / "summit"
    meta.mkdir()
    (meta / "plugin.json").write_text(manifest_json)
    (meta / "plugin.yaml").write_text(manifest_yaml)
    (ctx / "Dockerfile").write_text(dockerfile(base_image_id, entrypoint))


def pack_bundle(source: Path, *, replace: Mapping[str, bytes] | None = None) -> bytes:
    """A reproducible ``.tar.gz`` of the plugin folder: the build's own file list (what is
    packed is what is built, scanned and signed), fixed times and owners. ``replace`` swaps
    the content of some files (``summit-plugin dev`` sends a plugin.yaml with a dev version)."""
    replace = dict(replace or {})
    buf = io.BytesIO()
    # gzip writes the current time into its header unless told otherwise.
    with (
        gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w") as tar,
    ):

        def add(name: str, data: bytes, mode: int) -> None:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), mode, 0
            tar.addfile(info, io.BytesIO(data))

        for path in source_files(source):
            rel = path.relative_to(source).as_posix()
            data = replace.pop(rel) if rel in replace else path.read_bytes()
            add(rel, data, path.stat().st_mode & 0o755)
        for rel, data in sorted(replace.items()):  # files that exist only in ``replace``
            add(rel, data, 0o644)
    return buf.getvalue()
