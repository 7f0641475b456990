"""Safe unpacking of plugin source bundles (``.tar.gz`` with ``plugin.yaml`` at the root).

The interpreter's ``tarfile`` is not used to read a bundle. Its "data" filter let a chain of
symlinks, each pointing inside, carry a file out of the folder (CVE-2025-4517 and kin, not
fixed in 3.11.7), and its reader trusts header sizes and searches pax headers with a regex
that is quadratic on a run of digits while holding the GIL. So the tar format is read here,
in one linear pass over a decompressed stream that is counted as it is read:

- at most ``max_bytes`` compressed, and at most ``max_bytes`` decompressed, every header and
  padding block included (413 ``bundle_too_large`` the moment either is crossed); no pax or
  GNU extended header over ``MAX_HEADER_BYTES``; at most ``max_members`` members;
- only regular files and folders: symbolic and hard links, devices and fifos are refused,
  as are absolute names, ``..``, backslashes and a name used twice (400 ``invalid_bundle``
  naming the member);
- modes become 0o644, or 0o755 with any x bit (folders 0o755); owners and times are dropped.

The whole archive is read once and ``plugin.yaml`` validated before anything is written, so
a refused bundle leaves nothing on disk. Then it is read again and written member by member
through file descriptors relative to the new folder, never following a link and never
replacing a file (``O_NOFOLLOW``, ``O_EXCL``), so no path is resolved through anything the
archive created.
"""

from __future__ import annotations

import io
import os
import shutil
import struct
import tempfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

from summit_sdk.imagebuild import pack_bundle
from summit_sdk.manifest_yaml import MAX_BYTES as MANIFEST_MAX_BYTES

from orchestrator.domain.errors import BadRequest, TooLarge
from orchestrator.domain.manifest import Manifest, load_manifest_text

__all__ = [
    "MAX_HEADER_BYTES",
    "MAX_MEMBERS",
    "BundleError",
    "BundleTooLarge",
    "UnpackedBundle",
    "extract_bundle",
    "pack_directory",
    "read_bundle_manifest",
]

MAX_MEMBERS = 10_000
# One pax extended header or GNU long name: a path is at most MAX_NAME_BYTES, and the other
# records writers add (times, xattrs) are small.
MAX_HEADER_BYTES = 64 * 1024
# Extended headers describe the member that follows; a run of them describes nothing.
MAX_EXTENDED_IN_A_ROW = 8
# Paths stay well under PATH_MAX once joined to the state folder, so the builder's own
# path-based copies cannot fail on a name the bundle chose.
MAX_NAME_BYTES = 1024
MAX_COMPONENT_BYTES = 255
# Each level is a few system calls to write and a check to read; plugin source is shallow.
MAX_NAME_PARTS = 32
MAX_GZIP_MEMBERS = 16

BLOCK = 512
CHUNK = 64 * 1024
ZERO_BLOCK = bytes(BLOCK)
FILE_TYPES = (b"0", b"\0", b"7")  # regular, old regular, contiguous
EXTENDED_TYPES = (b"x", b"g", b"L", b"K")  # pax, pax global, GNU long name, GNU long link
LINK_TYPES = (b"1", b"2")
NOFOLLOW_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class BundleError(BadRequest):
    code = "invalid_bundle"


class BundleTooLarge(TooLarge):
    code = "bundle_too_large"


@dataclass(frozen=True)
class UnpackedBundle:
    """A bundle's folder (the caller removes it) and its validated manifest."""

    root: Path
    manifest: Manifest


@dataclass(frozen=True)
class _Member:
    name: str  # relative, normalised; "" for the bundle's own folder ("." or "./")
    kind: Literal["file", "dir"]
    mode: int
    size: int


def _too_large(limit: int) -> BundleTooLarge:
    return BundleTooLarge(
        f"the bundle unpacks to more than {limit} bytes",
        details={"limit_bytes": limit},
    )


def _refuse(member: str, why: str) -> BundleError:
    return BundleError(f"bundle member {member!r} {why}", details={"member": member})


class _Gunzip:
    """A gzip stream inflated by zlib, headers and all, at most ``size`` bytes a read.

    Not ``gzip.GzipFile``: it reads a header's file name and comment a byte at a time in
    Python, a second of CPU for each 10 MiB of name an upload may carry.
    """

    def __init__(self, data: bytes) -> None:
        self._data = memoryview(data)
        self._pos = 0
        self._zlib = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)  # gzip wrapper only
        self._tail = b""  # the start of the next gzip member
        self._members = 1

    def read(self, size: int) -> bytes:
        while True:
            if self._zlib.eof and not self._next_member():
                return b""
            source = self._zlib.unconsumed_tail or self._take()
            if not source:
                raise EOFError("the gzip stream is truncated")
            out = self._zlib.decompress(source, size)
            if out:
                return out

    def _take(self) -> bytes:
        if self._tail:
            tail, self._tail = self._tail, b""
            return tail
        chunk = bytes(self._data[self._pos : self._pos + CHUNK])
        self._pos += len(chunk)
        return chunk

    def _next_member(self) -> bool:
        """Members may be concatenated (``cat a.gz b.gz``); anything else after one ends
        is not read, so the tar reader sees the end of its stream there."""
        rest = self._zlib.unused_data
        if len(rest) < 2:
            rest += self._take()
        if rest[:2] != b"\x1f\x8b":
            return False
        self._members += 1
        if self._members > MAX_GZIP_MEMBERS:
            raise BundleError(f"the bundle has more than {MAX_GZIP_MEMBERS} gzip members")
        self._zlib = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        self._tail = rest
        return True


class _Stream:
    """The bundle's tar stream, decompressed on demand and counted against ``limit``."""

    def __init__(self, data: bytes, limit: int) -> None:
        gzipped = data[:2] == b"\x1f\x8b"
        self._source: _Gunzip | io.BytesIO = _Gunzip(data) if gzipped else io.BytesIO(data)
        self.limit = limit
        self.count = 0

    def read(self, size: int) -> bytes:
        try:
            chunk = self._source.read(size)
        except (OSError, EOFError, zlib.error) as exc:
            raise BundleError(f"the bundle is not a readable tar.gz archive: {exc}") from None
        self.count += len(chunk)
        if self.count > self.limit:
            raise _too_large(self.limit)
        return chunk

    def read_exactly(self, size: int) -> bytes:
        parts = []
        while size > 0:
            chunk = self.read(min(size, CHUNK))
            if not chunk:
                raise BundleError("the bundle is truncated (or not a tar archive)")
            parts.append(chunk)
            size -= len(chunk)
        return b"".join(parts)

    def expect(self, size: int) -> None:
        """Refuse now what reading ``size`` more bytes would refuse later."""
        if self.count + size > self.limit:
            raise _too_large(self.limit)


class _Content:
    """One member's content, to be read (or not) before the next member is reached."""

    def __init__(self, stream: _Stream, size: int) -> None:
        self._stream = stream
        self.left = size

    def chunks(self) -> Iterator[bytes]:
        while self.left > 0:
            chunk = self._stream.read_exactly(min(self.left, CHUNK))
            self.left -= len(chunk)
            yield chunk

    def head(self, size: int) -> bytes:
        parts, wanted = [], min(size, self.left)
        while wanted > 0:
            chunk = self._stream.read_exactly(min(wanted, CHUNK))
            self.left -= len(chunk)
            wanted -= len(chunk)
            parts.append(chunk)
        return b"".join(parts)

    def skip(self) -> None:
        for _ in self.chunks():
            pass


def _padded(size: int) -> int:
    return -(-size // BLOCK) * BLOCK


def _number(field: bytes) -> int:
    if field[:1] == b"\x80":  # GNU base-256, for values octal cannot hold
        return int.from_bytes(field[1:], "big")
    if field[:1] == b"\xff":
        raise BundleError("a tar header holds a negative number")
    digits = field.split(b"\0", 1)[0].strip(b" ")
    if not digits:
        return 0
    if digits.strip(b"01234567"):
        raise BundleError("a tar header holds a malformed number (corrupt or not a tar archive)")
    return int(digits, 8)


def _checksum_ok(block: bytes) -> bool:
    stored = _number(block[148:156])
    # The checksum field counts as eight spaces; old writers summed signed bytes.
    unsigned = sum(block[:148]) + sum(block[156:]) + 8 * 32
    signed = sum(struct.unpack("148b8x356b", block)) + 8 * 32
    return stored in (unsigned, signed)


def _pax_records(payload: bytes) -> dict[bytes, bytes]:
    """``"%d %s=%s\\n"`` records, each length covering the whole record; read linearly."""
    records: dict[bytes, bytes] = {}
    pos, stop = 0, len(payload.rstrip(b"\0"))  # some writers pad with NULs
    while pos < stop:
        space = payload.find(b" ", pos, pos + 21)
        digits = payload[pos:space] if space > pos else b""
        if not digits.isdigit():
            raise BundleError("a pax header record has no length (corrupt archive)")
        end = pos + int(digits)
        if end <= space + 1 or end > len(payload) or payload[end - 1 : end] != b"\n":
            raise BundleError("a pax header record has a wrong length (corrupt archive)")
        key, eq, value = payload[space + 1 : end - 1].partition(b"=")
        if not eq or not key:
            raise BundleError("a pax header record is not key=value (corrupt archive)")
        records[key] = value
        pos = end
    return records


def _clean_name(raw: bytes) -> str:
    try:
        name = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BundleError(
            f"bundle member {raw!r} has a name that is not UTF-8", details={"member": repr(raw)}
        ) from None
    if "\x00" in name or "\\" in name:
        raise _refuse(name, "has a forbidden character")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if name.startswith("/") or ".." in parts:
        raise _refuse(name, "points outside the bundle")
    if (
        len(name.encode()) > MAX_NAME_BYTES
        or len(parts) > MAX_NAME_PARTS
        or any(len(p.encode()) > MAX_COMPONENT_BYTES for p in parts)
    ):
        raise _refuse(
            name[:100] + "..." if len(name) > 100 else name,
            f"has a name longer than {MAX_NAME_BYTES} bytes, deeper than {MAX_NAME_PARTS} "
            f"folders or with a part longer than {MAX_COMPONENT_BYTES} bytes",
        )
    return "/".join(parts)


def _members(stream: _Stream, max_members: int) -> Iterator[tuple[_Member, _Content]]:
    """Every member of the archive, checked; its content must be consumed (or is skipped)
    before the next one is read."""
    pax: dict[bytes, bytes] = {}
    long_name: bytes | None = None
    in_a_row = count = 0
    while True:
        block = stream.read_exactly(BLOCK)
        if block == ZERO_BLOCK:
            if pax or long_name is not None or in_a_row:
                raise BundleError("the bundle ends with an extended header and no member")
            # Read to the end (within the budget), so zlib checks the gzip trailer's CRC.
            while stream.read(CHUNK):
                pass
            return
        if not _checksum_ok(block):
            raise BundleError("a tar header's checksum is wrong (corrupt or not a tar archive)")
        kind, size = block[156:157], _number(block[124:136])
        if kind in EXTENDED_TYPES:
            in_a_row += 1
            if in_a_row > MAX_EXTENDED_IN_A_ROW:
                raise BundleError(
                    f"the bundle has more than {MAX_EXTENDED_IN_A_ROW} extended headers in a row"
                )
            if size > MAX_HEADER_BYTES:
                raise BundleTooLarge(
                    f"the bundle has an extended header of {size} bytes, more than the "
                    f"{MAX_HEADER_BYTES} allowed",
                    details={"limit_bytes": MAX_HEADER_BYTES},
                )
            stream.expect(_padded(size))
            payload = stream.read_exactly(_padded(size))[:size]
            if kind == b"x":
                pax.update(_pax_records(payload))
            elif kind == b"g":
                _pax_records(payload)  # checked, then ignored: it names no member
            elif kind == b"L":
                long_name = payload.split(b"\0", 1)[0]
            # b"K", a GNU long link name: the link it belongs to is refused below.
            continue
        in_a_row = 0
        count += 1
        if count > max_members:
            raise BundleError(f"the bundle has more than {max_members} members")

        raw_name = block[0:100].split(b"\0", 1)[0]
        prefix = block[345:500].split(b"\0", 1)[0] if block[257:263] == b"ustar\x00" else b""
        if b"path" in pax:
            raw_name = pax[b"path"]
        elif long_name is not None:
            raw_name = long_name
        elif prefix:
            raw_name = prefix + b"/" + raw_name
        if b"size" in pax:
            if not pax[b"size"].isdigit() or len(pax[b"size"]) > 20:
                raise BundleError("a pax header holds a malformed size (corrupt archive)")
            size = int(pax[b"size"])
        sparse = any(key.startswith(b"GNU.sparse.") for key in pax)
        pax, long_name = {}, None

        name = _clean_name(raw_name)
        shown = name or "."
        if kind in LINK_TYPES:
            raise _refuse(shown, "is a link; bundles may not contain symbolic or hard links")
        if kind == b"5" or (kind == b"\0" and raw_name.endswith(b"/")):
            yield _Member(name, "dir", 0o755, 0), _Content(stream, 0)
            continue  # a folder has no content
        if kind not in FILE_TYPES or sparse:
            raise _refuse(shown, "is not a file or directory")
        if not name:
            raise _refuse(shown, "is a file without a name")
        mode = 0o755 if _number(block[100:108]) & 0o111 else 0o644
        stream.expect(_padded(size))
        content = _Content(stream, size)
        yield _Member(name, "file", mode, size), content
        content.skip()
        stream.read_exactly(_padded(size) - size)


def _check_upload_size(size: int, max_bytes: int) -> None:
    if size > max_bytes:
        raise BundleTooLarge(
            f"the bundle is larger than {max_bytes} bytes", details={"limit_bytes": max_bytes}
        )


def _survey(data: bytes, max_bytes: int, max_members: int) -> bytes:
    """Read the whole archive, writing nothing; return the head of ``plugin.yaml``."""
    files: set[str] = set()
    folders: set[str] = {""}
    manifest: bytes | None = None
    for member, content in _members(_Stream(data, max_bytes), max_members):
        # Its folders, deepest first; one already seen means all above it were too.
        cut = member.name.rfind("/")
        while cut > 0 and (parent := member.name[:cut]) not in folders:
            if parent in files:
                raise _refuse(member.name, f"uses the name {parent!r} twice (file and folder)")
            folders.add(parent)
            cut = member.name.rfind("/", 0, cut)
        if member.kind == "dir":
            if member.name in files:
                raise _refuse(member.name, "uses its name twice (file and folder)")
            folders.add(member.name)
        else:
            if member.name in files or member.name in folders:
                raise _refuse(member.name, "is in the bundle twice")
            files.add(member.name)
            if member.name == "plugin.yaml":
                # One byte more than a manifest may have, so the reader refuses a larger one.
                manifest = content.head(MANIFEST_MAX_BYTES + 1)
        # Folders a name implies count too (10 000 deep names could make 300 000 of them);
        # the bundle's own folder does not.
        if len(files) + len(folders) - 1 > max_members:
            raise BundleError(f"the bundle has more than {max_members} members")
    if manifest is None:
        raise BundleError("the bundle has no plugin.yaml at its root")
    return manifest


class _Folders:
    """File descriptors of the bundle's folders, opened from its root without following
    links; the last one used is kept, as members usually come folder by folder."""

    def __init__(self, root_fd: int) -> None:
        self.root_fd = root_fd
        self._last: tuple[str, int] | None = None

    def open(self, path: str) -> int:
        if not path:
            return self.root_fd
        if self._last is not None and self._last[0] == path:
            return self._last[1]
        fd = self.root_fd
        for part in path.split("/"):
            child = self._child(fd, part)
            if fd != self.root_fd:
                os.close(fd)
            fd = child
        self.close()
        self._last = (path, fd)
        return fd

    def _child(self, parent_fd: int, name: str) -> int:
        try:
            os.mkdir(name, 0o755, dir_fd=parent_fd)
            created = True
        except FileExistsError:
            created = False
        fd = os.open(name, NOFOLLOW_DIR, dir_fd=parent_fd)
        if created:
            os.fchmod(fd, 0o755)  # whatever the umask
        return fd

    def close(self) -> None:
        if self._last is not None:
            os.close(self._last[1])
            self._last = None


def _write_file(dir_fd: int, name: str, mode: int, content: _Content) -> None:
    fd = os.open(name, NEW_FILE, 0o600, dir_fd=dir_fd)
    try:
        for chunk in content.chunks():
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd, view) :]
        os.fchmod(fd, mode)
    finally:
        os.close(fd)


def _unpack(data: bytes, max_bytes: int, max_members: int, workdir: Path) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="bundle-", dir=workdir))
    try:
        root_fd = os.open(root, NOFOLLOW_DIR)
        folders = _Folders(root_fd)
        try:
            for member, content in _members(_Stream(data, max_bytes), max_members):
                if not member.name:
                    continue
                parent, _, leaf = member.name.rpartition("/")
                if member.kind == "dir":
                    folders.open(member.name)
                else:
                    _write_file(folders.open(parent), leaf, member.mode, content)
        finally:
            folders.close()
            os.close(root_fd)
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    return root


def read_bundle_manifest(data: bytes, *, max_bytes: int, max_members: int = MAX_MEMBERS) -> bytes:
    """``plugin.yaml`` of a bundle, after every check ``extract_bundle`` makes; nothing is
    written. Longer than a manifest may be, it is cut one byte past the limit."""
    _check_upload_size(len(data), max_bytes)
    return _survey(data, max_bytes, max_members)


def extract_bundle(
    stream: BinaryIO, *, max_bytes: int, workdir: Path, max_members: int = MAX_MEMBERS
) -> UnpackedBundle:
    """Check the bundle and its manifest, then unpack it into a new folder under ``workdir``.

    The caller removes the folder. Refused (``BundleError`` 400, ``BundleTooLarge`` 413,
    ``ManifestError`` 422), nothing is left on disk.
    """
    data = stream.read(max_bytes + 1)
    _check_upload_size(len(data), max_bytes)
    manifest = load_manifest_text(_survey(data, max_bytes, max_members))
    return UnpackedBundle(_unpack(data, max_bytes, max_members, workdir), manifest)


def pack_directory(source: Path) -> bytes:
    """A reproducible tar.gz of a plugin folder (used by the CLI and tests)."""
    if not (source / "plugin.yaml").is_file():
        raise BundleError(f"{source} has no plugin.yaml")
    return pack_bundle(source)
