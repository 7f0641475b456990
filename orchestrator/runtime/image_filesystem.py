"""An image's files read without running it: its tar streams unpacked safely, within a size
cap, and only the files the caller asks for.

Two shapes of stream come in. ``docker export`` of a created (never started) container gives
the flattened filesystem; a registry gives the image's layers, applied lowest first, where an
entry ``.wh.NAME`` deletes NAME from the layers below and ``.wh..wh..opq`` hides everything the
layers below put in its folder (the OCI image spec's whiteouts).

What the stream says is never trusted:

* only regular files and folders are ever written, at paths made of checked names under the
  destination: a leading ``/`` is read relative to the image root (as the engines do), and a
  name with a ``..`` part refuses the image. Devices, fifos and sockets are skipped.
* a symbolic link is never created, so nothing written can be redirected through one; it is
  remembered in ``ImageFilesystem.links`` (the scan must know when the plugin folder is one).
  A hard link to a file that was extracted is copied; a wanted one whose target was not
  extracted is listed in ``unresolved``.
* the sizes of all regular files, every layer counted, may add up to ``max_bytes``, and the
  entries to ``max_entries``; past either, ``ImageTooLarge``. Compressed layers are counted
  after decompression, and a tar's own long-name and extended headers are held to 1 MiB each,
  so neither a gzip bomb nor a crafted header can make the reader hold more.

Only the entries ``wanted`` selects (by absolute path in the image) are written: the scan
needs a few small files (``*.dist-info/METADATA``, lockfiles, the plugin's code) out of
thousands, and skipping the rest is most of what makes reading an image fast.
"""

from __future__ import annotations

import gzip
import io
import os
import shutil
import stat
import tarfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from orchestrator.domain.errors import InvalidInput, TooLarge

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_ENTRIES",
    "ChunkReader",
    "FilesystemWriter",
    "ImageFilesystem",
    "ImageTooLarge",
    "ImageUnreadable",
    "PathSelector",
]

DEFAULT_MAX_BYTES = 2 * 1024**3  # 2 GiB unpacked
DEFAULT_MAX_ENTRIES = 1_000_000
# A long name or a pax record is a few hundred bytes; a megabyte is already absurd.
MAX_HEADER_BYTES = 1024 * 1024
MAX_LINKS = 100_000
_COPY_CHUNK = 1024 * 1024
_READ_CHUNK = 64 * 1024

OPAQUE = ".wh..wh..opq"
WHITEOUT = ".wh."

# (absolute image path such as "/plugin/app.py", is it a folder) -> extract it?
PathSelector = Callable[[str, bool], bool]


class ImageTooLarge(TooLarge):
    """The image unpacks to more than the scan will read."""

    code = "image_too_large"


class ImageUnreadable(InvalidInput):
    """The image's archive is unsafe (a ``..`` path) or not a readable tar stream."""

    code = "image_unreadable"


@dataclass
class ImageFilesystem:
    """What was extracted, under ``root``, and what the stream held besides."""

    root: Path
    files: int = 0  # regular files written
    written_bytes: int = 0
    unpacked_bytes: int = 0  # every regular file's size in the stream(s), layers summed
    entries: int = 0
    # Symbolic links in the image: absolute path -> target as written (never followed).
    links: dict[str, str] = field(default_factory=dict)
    # Wanted hard links whose target was not extracted (absolute paths).
    unresolved: list[str] = field(default_factory=list)


class _HeaderTooLarge(Exception):
    pass


class _BoundedTarInfo(tarfile.TarInfo):
    """Refuses a long-name or pax header larger than ``MAX_HEADER_BYTES`` before tarfile
    reads it whole into memory."""

    _META_TYPES = frozenset(
        {tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XHDTYPE, tarfile.XGLTYPE}
    )

    def _proc_member(self, tarfile: tarfile.TarFile) -> Any:
        if self.type in self._META_TYPES and self.size > MAX_HEADER_BYTES:
            raise _HeaderTooLarge(f"a {self.size}-byte tar header")
        return super()._proc_member(tarfile)  # type: ignore[misc]


class ChunkReader(io.RawIOBase):
    """A readable file over an iterator of byte chunks (a streamed HTTP body, an export)."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks: Iterator[bytes] = iter(chunks)
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        while not self._pending:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._pending = bytes(chunk)
        n = min(len(view), len(self._pending))
        view[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n

    def drain(self) -> None:
        """Read what is left (a digest over the whole stream needs all of it)."""
        self._pending = b""
        for _ in self._chunks:
            pass


class _Counted(io.RawIOBase):
    """Passes reads through, refusing to deliver more than ``limit`` bytes in all."""

    def __init__(self, inner: IO[bytes], limit: int, on_over: Callable[[], Exception]) -> None:
        self._inner = inner
        self._left = limit
        self._on_over = on_over

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self._inner.read(len(view))
        if not data:
            return 0
        self._left -= len(data)
        if self._left < 0:
            raise self._on_over()
        view[: len(data)] = data
        return len(data)


def _clean(name: str) -> tuple[str, ...]:
    """The path parts of a tar entry's name; ``()`` for the root itself."""
    parts = tuple(p for p in name.replace("\\", "/").split("/") if p not in ("", "."))
    if ".." in parts:
        raise ImageUnreadable(
            f"the image's archive has an entry that leaves its root ({name[:200]!r})",
            details={"entry": name[:200]},
        )
    if any("\0" in p for p in parts):
        raise ImageUnreadable("the image's archive has an entry with a NUL in its name")
    return parts


def _absolute(parts: tuple[str, ...]) -> str:
    return "/" + "/".join(parts)


class FilesystemWriter:
    """Unpacks one image's tar streams into the empty folder ``root`` (created if absent).

    Feed it ``add_flat`` once (a flattened filesystem) or ``add_layer`` per layer, lowest
    first; ``result`` says what was written. Not thread-safe: one writer per extraction.
    """

    def __init__(
        self,
        root: Path,
        *,
        wanted: PathSelector,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        what: str = "the image",
    ) -> None:
        root.mkdir(parents=True, exist_ok=True)
        if any(root.iterdir()):
            raise ValueError(f"{root} is not empty")
        self.fs = ImageFilesystem(root=root)
        self.wanted = wanted
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self.what = what
        # Paths (and every folder above them) that the layer being applied has written:
        # whiteouts hide only what the layers below put there.
        self._layer_paths: set[tuple[str, ...]] = set()
        self._layer_prefixes: set[tuple[str, ...]] = set()

    def result(self) -> ImageFilesystem:
        return self.fs

    def too_large(self, *, entries: bool = False) -> ImageTooLarge:
        if entries:
            message = f"{self.what} has more than {self.max_entries} files; it is not scanned"
        else:
            message = (
                f"{self.what} unpacks to more than {self.max_bytes} bytes, the most an image "
                "scan reads (SUMMIT_IMAGE_SCAN_MAX_BYTES)"
            )
        return ImageTooLarge(
            message,
            details={"limit_bytes": self.max_bytes, "limit_entries": self.max_entries},
        )

    # -- streams ---------------------------------------------------------------------------

    def add_flat(self, stream: IO[bytes]) -> None:
        """A flattened filesystem as one plain tar stream (``docker export``)."""
        self._apply(stream, layer=False)

    def add_layer(self, stream: IO[bytes], *, compression: str | None) -> None:
        """One layer, ``compression`` ``"gzip"`` or None; its whiteouts act on what the layers
        added before it wrote."""
        if compression not in (None, "gzip"):
            raise ImageUnreadable(
                f"{self.what} has a layer compressed with {compression}, which the scan "
                "cannot read (gzip or none only)",
                details={"compression": compression},
            )
        self._layer_paths.clear()
        self._layer_prefixes.clear()
        raw: IO[bytes] = stream
        if compression == "gzip":
            raw = gzip.GzipFile(fileobj=stream, mode="rb")  # type: ignore[assignment]
        self._apply(raw, layer=True)

    def _apply(self, stream: IO[bytes], *, layer: bool) -> None:
        # Every byte the tar parser sees is counted: headers and padding besides file data.
        budget = self.max_bytes - self.fs.unpacked_bytes + 64 * 1024 * 1024
        counted = io.BufferedReader(_Counted(stream, budget, self.too_large), _COPY_CHUNK)
        try:
            # Skipping a member's data is reading it, bufsize bytes at a time; but each header
            # read also copies what is left of the buffer, so a large one costs more than it
            # saves. 64 KiB measured best on the base image (1 MiB was slower than 10 KiB).
            with tarfile.open(
                fileobj=counted,
                mode="r|",
                tarinfo=_BoundedTarInfo,
                errorlevel=2,
                bufsize=_READ_CHUNK,
            ) as tar:
                while (member := tar.next()) is not None:
                    self._entry(tar, member, layer=layer)
                    # tarfile keeps every header it read; a layer of a million files would
                    # keep them all, and nothing here looks back.
                    tar.members.clear()  # type: ignore[attr-defined]
        except _HeaderTooLarge as exc:
            raise ImageUnreadable(f"the archive of {self.what} has {exc}") from None
        except (tarfile.TarError, EOFError, gzip.BadGzipFile, zlib.error) as exc:
            raise ImageUnreadable(
                f"the archive of {self.what} cannot be read: {exc}",
                details={"error": str(exc)[:500]},
            ) from exc

    # -- one entry -------------------------------------------------------------------------

    def _entry(self, tar: tarfile.TarFile, member: tarfile.TarInfo, *, layer: bool) -> None:
        fs = self.fs
        fs.entries += 1
        if fs.entries > self.max_entries:
            raise self.too_large(entries=True)
        if member.isreg():
            fs.unpacked_bytes += member.size
            if fs.unpacked_bytes > self.max_bytes:
                raise self.too_large()
        parts = _clean(member.name)
        if not parts:
            return
        base = parts[-1]
        if base.startswith(WHITEOUT):
            # A flattened export has no whiteouts; a file so named there is never needed.
            if layer:
                if base == OPAQUE:
                    self._opaque(parts[:-1])
                else:
                    self._whiteout((*parts[:-1], base[len(WHITEOUT) :]))
            return
        if layer:
            self._layer_paths.add(parts)
            self._layer_prefixes.update(parts[:i] for i in range(1, len(parts) + 1))
        path = _absolute(parts)
        target = fs.root.joinpath(*parts)
        if fs.links:
            # A link at this path or above it is replaced by what is written here.
            for i in range(1, len(parts) + 1):
                fs.links.pop(_absolute(parts[:i]), None)
        if member.isdir():
            if self.wanted(path, True):
                self._make_dirs(parts)
            elif os.path.lexists(target) and not target.is_dir():
                target.unlink()  # a folder now stands where a lower layer had a file
            return
        # Anything else replaces what was at its path (a lower layer's file or folder).
        self._remove(parts)
        if member.issym():
            if len(fs.links) < MAX_LINKS:
                fs.links[path] = member.linkname
            return
        if member.islnk():
            if self.wanted(path, False):
                self._hard_link(parts, _clean(member.linkname))
            return
        if not member.isreg() or not self.wanted(path, False):
            return  # devices, fifos, and what the caller does not need
        source = tar.extractfile(member)
        if source is None:
            return
        self._make_dirs(parts[:-1])
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
        fd = os.open(target, flags, 0o600)
        with os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(source, out, _COPY_CHUNK)
        fs.files += 1
        fs.written_bytes += member.size

    def _make_dirs(self, parts: tuple[str, ...]) -> None:
        here = self.fs.root
        for part in parts:
            here = here / part
            st = _lstat(here)
            if st is not None and stat.S_ISDIR(st.st_mode):
                continue
            if st is not None:
                here.unlink()  # a file from a lower layer where a folder now is
            here.mkdir(mode=0o700)

    def _remove(self, parts: tuple[str, ...]) -> None:
        target = self.fs.root.joinpath(*parts)
        st = _lstat(target)
        if st is None:
            return
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(target)
        else:
            target.unlink()

    def _forget_links(self, parts: tuple[str, ...]) -> None:
        path = _absolute(parts)
        inside = path.rstrip("/") + "/"
        for link in [k for k in self.fs.links if k == path or k.startswith(inside)]:
            del self.fs.links[link]

    def _whiteout(self, parts: tuple[str, ...]) -> None:
        if parts in self._layer_prefixes:
            return  # written by this same layer: a whiteout hides only lower layers
        self._remove(parts)
        self._forget_links(parts)

    def _opaque(self, folder: tuple[str, ...]) -> None:
        """Hide what lower layers put in ``folder``, keeping what this layer wrote there."""
        directory = self.fs.root.joinpath(*folder)
        if directory.is_dir() and not directory.is_symlink():
            for child in list(directory.iterdir()):
                parts = (*folder, child.name)
                if parts in self._layer_prefixes:
                    # This layer's own: kept, but what lower layers put inside it is hidden.
                    if child.is_dir() and not child.is_symlink():
                        self._opaque(parts)
                    continue
                self._remove(parts)
        prefix = _absolute(folder).rstrip("/") + "/"
        for link in [k for k in self.fs.links if k.startswith(prefix)]:
            if tuple(link[1:].split("/")) not in self._layer_paths:
                del self.fs.links[link]

    def _hard_link(self, parts: tuple[str, ...], target_parts: tuple[str, ...]) -> None:
        source = self.fs.root.joinpath(*target_parts)
        st = _lstat(source)
        if not target_parts or st is None or not stat.S_ISREG(st.st_mode):
            self.fs.unresolved.append(_absolute(parts))
            return
        self._make_dirs(parts[:-1])
        shutil.copyfile(source, self.fs.root.joinpath(*parts), follow_symlinks=False)
        self.fs.files += 1
        self.fs.written_bytes += st.st_size


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return path.lstat()
    except FileNotFoundError:
        return None
