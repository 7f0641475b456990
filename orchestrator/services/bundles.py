"""Safe unpacking of plugin source bundles (``.tar.gz`` with ``plugin.yaml`` at the root).

Every member is checked before anything is written: no absolute paths, no ``..``, no links
that leave the bundle, no devices or fifos, and no more than ``max_bytes`` compressed or
uncompressed. A refused bundle leaves nothing on disk.
"""

from __future__ import annotations

import io
import posixpath
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import BinaryIO

from summit_sdk.imagebuild import pack_bundle

from orchestrator.domain.errors import BadRequest

MAX_MEMBERS = 10_000


class BundleError(BadRequest):
    code = "invalid_bundle"


def _safe_name(name: str) -> str:
    norm = posixpath.normpath(name)
    if name.startswith("/") or norm.startswith("/") or norm == ".." or norm.startswith("../"):
        raise BundleError(
            f"bundle member {name!r} points outside the bundle", details={"member": name}
        )
    if "\\" in name or "\x00" in name:
        raise BundleError(
            f"bundle member {name!r} has a forbidden character", details={"member": name}
        )
    return norm


def _check_members(tar: tarfile.TarFile, max_bytes: int) -> list[tarfile.TarInfo]:
    members = []
    total = 0
    for i, m in enumerate(tar):
        if i >= MAX_MEMBERS:
            raise BundleError(f"the bundle has more than {MAX_MEMBERS} files")
        name = _safe_name(m.name)
        if m.issym() or m.islnk():
            target = m.linkname
            resolved = (
                posixpath.normpath(posixpath.join(posixpath.dirname(name), target))
                if m.issym()
                else posixpath.normpath(target)
            )
            if target.startswith("/") or resolved == ".." or resolved.startswith("../"):
                raise BundleError(
                    f"link {m.name!r} -> {target!r} points outside the bundle",
                    details={"member": m.name, "target": target},
                )
        elif not (m.isfile() or m.isdir()):
            raise BundleError(
                f"bundle member {m.name!r} is not a file or directory", details={"member": m.name}
            )
        total += max(m.size, 0)
        if total > max_bytes:
            raise BundleError(
                f"the bundle unpacks to more than {max_bytes} bytes",
                code="bundle_too_large",
                details={"limit_bytes": max_bytes},
            )
        members.append(m)
    return members


def extract_bundle(stream: BinaryIO, *, max_bytes: int, workdir: Path) -> Path:
    """Unpack ``stream`` into a new folder under ``workdir`` and return it.

    The caller removes the folder; on any error it is removed here before raising.
    """
    data = stream.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise BundleError(
            f"the bundle is larger than {max_bytes} bytes",
            code="bundle_too_large",
            details={"limit_bytes": max_bytes},
        )
    try:
        tar = tarfile.open(fileobj=io.BytesIO(data), mode="r:*")  # noqa: SIM115 (closed below)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise BundleError(f"the bundle is not a readable tar.gz archive: {exc}") from None
    with tar:
        try:
            members = _check_members(tar, max_bytes)
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise BundleError(f"the bundle is corrupt: {exc}") from None
        names = {_safe_name(m.name) for m in members}
        if "plugin.yaml" not in names:
            raise BundleError("the bundle has no plugin.yaml at its root")
        workdir.mkdir(parents=True, exist_ok=True)
        dest = Path(tempfile.mkdtemp(prefix="bundle-", dir=workdir))
        try:
            # The "data" filter re-checks every member and strips modes and owners.
            tar.extractall(dest, members=members, filter="data")
        except (tarfile.TarError, OSError) as exc:
            shutil.rmtree(dest, ignore_errors=True)
            raise BundleError(f"the bundle could not be unpacked: {exc}") from None
        except BaseException:
            shutil.rmtree(dest, ignore_errors=True)
            raise
    return dest


def pack_directory(source: Path) -> bytes:
    """A reproducible tar.gz of a plugin folder (used by the CLI and tests)."""
    if not (source / "plugin.yaml").is_file():
        raise BundleError(f"{source} has no plugin.yaml")
    return pack_bundle(source)
