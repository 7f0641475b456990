"""Source bundles: hostile archives are refused without leaving anything on disk."""

from __future__ import annotations

import gzip
import io
import os
import stat
import struct
import tarfile
import zlib
from pathlib import Path
from types import SimpleNamespace

import pytest

from orchestrator.domain.errors import SummitError
from orchestrator.domain.manifest import ManifestError
from orchestrator.services.bundles import (
    MAX_HEADER_BYTES,
    BundleError,
    extract_bundle,
    pack_directory,
    read_bundle_manifest,
)
from tests.fixtures.hostile_bundles import (
    MKDTEMP_SUFFIX,
    alias_bomb,
    file,
    make_tar,
    pax_padding,
    special,
    symlink_chain,
    with_pax,
)

REPO = Path(__file__).resolve().parents[3]
MANIFEST = (
    b"schema_version: 1\nid: com.example.x\nname: X\nversion: 1.0.0\n"
    b"runtime: {base: python, entrypoint: x:plugin}\n"
)
LIMIT = 1_000_000
BLOCK = 512


def extract(data: bytes, workdir: Path, max_bytes: int = LIMIT, **kw: int) -> Path:
    return extract_bundle(io.BytesIO(data), max_bytes=max_bytes, workdir=workdir, **kw).root


def assert_refused(
    data: bytes,
    tmp_path: Path,
    code: str = "invalid_bundle",
    status: int = 400,
    **kw: int,
) -> SummitError:
    workdir = tmp_path / "work"
    with pytest.raises(SummitError) as info:
        extract(data, workdir, **kw)
    assert (info.value.code, info.value.status_code) == (code, status), info.value.message
    leftovers = list(workdir.rglob("*")) if workdir.exists() else []
    assert leftovers == [], "a refused bundle leaves nothing under workdir"
    return info.value


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


# --- accepted ---------------------------------------------------------------------------------


def test_files_land_with_their_content(tmp_path: Path) -> None:
    data = make_tar(
        file("plugin.yaml", MANIFEST),
        special("pkg", tarfile.DIRTYPE),
        file("pkg/__init__.py", b"VALUE = 1\n"),
        file("deep/er/data.json", b"{}"),
    )
    dest = extract(data, tmp_path / "work")
    assert dest.parent == tmp_path / "work"
    assert (dest / "plugin.yaml").read_bytes() == MANIFEST
    assert (dest / "pkg/__init__.py").read_text() == "VALUE = 1\n"
    assert (dest / "deep/er/data.json").read_text() == "{}"


def test_the_validated_manifest_comes_with_the_folder(tmp_path: Path) -> None:
    bundle = extract_bundle(
        io.BytesIO(make_tar(file("plugin.yaml", MANIFEST))), max_bytes=LIMIT, workdir=tmp_path
    )
    assert (bundle.manifest.id, str(bundle.manifest.version)) == ("com.example.x", "1.0.0")


def test_modes_are_reduced_to_sane_ones(tmp_path: Path) -> None:
    data = make_tar(
        file("plugin.yaml", MANIFEST, mode=0o4777),  # setuid, world-writable
        file("run.sh", b"#!/bin/sh\n", mode=0o700),
        file("secret.txt", b"", mode=0o600),
        file("group.py", b"", mode=0o610),  # one x bit is enough
        special("locked", tarfile.DIRTYPE, mode=0o000),
        file("locked/inside.py", b""),
        special("open", tarfile.DIRTYPE, mode=0o7777),
    )
    dest = extract(data, tmp_path)
    assert mode_of(dest / "plugin.yaml") == 0o755
    assert mode_of(dest / "run.sh") == 0o755
    assert mode_of(dest / "secret.txt") == 0o644
    assert mode_of(dest / "group.py") == 0o755
    assert mode_of(dest / "locked") == 0o755
    assert mode_of(dest / "open") == 0o755
    assert (dest / "locked/inside.py").is_file()


def test_owners_in_the_archive_are_ignored(tmp_path: Path) -> None:
    info, data = file("plugin.yaml", MANIFEST)
    info.uid, info.gid, info.uname, info.gname = 0, 0, "root", "root"
    dest = extract(make_tar((info, data)), tmp_path)
    assert (dest / "plugin.yaml").stat().st_uid == os.getuid()


def test_each_bundle_gets_its_own_folder(tmp_path: Path) -> None:
    data = make_tar(file("plugin.yaml", MANIFEST))
    assert extract(data, tmp_path) != extract(data, tmp_path)


def test_dot_slash_prefixed_members_are_accepted(tmp_path: Path) -> None:
    # What `tar -C plugin -czf bundle.tar.gz .` produces.
    data = make_tar(
        special(".", tarfile.DIRTYPE),
        file("./plugin.yaml", MANIFEST),
        special("./pkg/", tarfile.DIRTYPE),
        file("./pkg//mod.py", b"X = 1\n"),
    )
    dest = extract(data, tmp_path)
    assert (dest / "plugin.yaml").read_bytes() == MANIFEST
    assert (dest / "pkg/mod.py").read_text() == "X = 1\n"


def test_a_folder_listed_twice_is_fine(tmp_path: Path) -> None:
    data = make_tar(
        special("pkg", tarfile.DIRTYPE),
        file("plugin.yaml", MANIFEST),
        special("pkg/", tarfile.DIRTYPE),
        file("pkg/a.py"),
    )
    assert (extract(data, tmp_path) / "pkg/a.py").is_file()


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_long_names_in_every_tar_format(fmt: int, tmp_path: Path) -> None:
    # ustar splits a long name into prefix + name, GNU writes a ././@LongLink member, pax a
    # "path" record; non-ASCII names need pax (or GNU's raw bytes).
    long_name = "/".join(["folder-" + "x" * 40] * 4) + "/module.py"
    names = [long_name] + (["données/é.py"] if fmt != tarfile.USTAR_FORMAT else [])
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=fmt) as tar:
        for name, content in [("plugin.yaml", MANIFEST), *((n, n.encode()) for n in names)]:
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    dest = extract(buf.getvalue(), tmp_path)
    for name in names:
        assert (dest / name).read_text() == name


def test_a_global_pax_header_is_accepted(tmp_path: Path) -> None:
    # `git archive` starts with one, carrying the commit id.
    buf = io.BytesIO()
    with tarfile.open(
        fileobj=buf, mode="w:gz", format=tarfile.PAX_FORMAT, pax_headers={"comment": "0" * 40}
    ) as tar:
        info, _ = file("plugin.yaml", MANIFEST)
        tar.addfile(info, io.BytesIO(MANIFEST))
    assert (extract(buf.getvalue(), tmp_path) / "plugin.yaml").is_file()


def test_an_uncompressed_tar_is_accepted(tmp_path: Path) -> None:
    data = make_tar(file("plugin.yaml", MANIFEST), mode="w")
    assert (extract(data, tmp_path) / "plugin.yaml").read_bytes() == MANIFEST


def test_decompressed_stream_exactly_at_the_budget_is_accepted(tmp_path: Path) -> None:
    blob = b"x" * 5000
    # Every header, every padded content, the end blocks and the padding after them count.
    raw = make_tar(file("plugin.yaml", MANIFEST), file("blob", blob), mode="w")
    data = gzip.compress(raw)
    assert len(data) < len(raw) and len(raw) > len(MANIFEST) + len(blob) + 4 * BLOCK
    assert (extract(data, tmp_path, max_bytes=len(raw)) / "blob").read_bytes() == blob
    error = assert_refused(data, tmp_path, "bundle_too_large", 413, max_bytes=len(raw) - 1)
    assert error.details == {"limit_bytes": len(raw) - 1}


# --- refused: links ---------------------------------------------------------------------------


def test_symlink_chain_that_escapes_through_path_max_is_refused(tmp_path: Path) -> None:
    # CVE-2025-4517: with tarfile's "data" filter, escaped.txt landed in `outside`.
    workdir, outside = tmp_path / "work", tmp_path / "outside"
    outside.mkdir()
    bundle_dir_len = len(str(workdir.resolve())) + len("/bundle-") + MKDTEMP_SUFFIX
    data = make_tar(file("plugin.yaml", MANIFEST), *symlink_chain(str(outside), bundle_dir_len))
    error = assert_refused(data, tmp_path)
    assert error.details == {"member": "a"}
    assert "link" in error.message and "'a'" in error.message
    assert list(outside.iterdir()) == []


@pytest.mark.parametrize(
    ("member", "name"),
    [
        (special("lib/alias.py", tarfile.SYMTYPE, "real.py"), "lib/alias.py"),
        (special("./here", tarfile.SYMTYPE, "."), "here"),
        (special("copy.yaml", tarfile.LNKTYPE, "plugin.yaml"), "copy.yaml"),
        (special("escape", tarfile.SYMTYPE, "/etc/passwd"), "escape"),
        (special("sub/escape", tarfile.SYMTYPE, "../../outside"), "sub/escape"),
        (special("link", tarfile.LNKTYPE, "/etc/passwd"), "link"),
    ],
    ids=["symlink-inside", "symlink-to-dot", "hardlink-inside", "abs", "dotdot", "hardlink-out"],
)
def test_links_are_refused_wherever_they_point(
    member: tuple[tarfile.TarInfo, None], name: str, tmp_path: Path
) -> None:
    data = make_tar(file("plugin.yaml", MANIFEST), file("lib/real.py"), member)
    error = assert_refused(data, tmp_path)
    assert error.details == {"member": name}
    assert repr(name) in error.message and "link" in error.message


def test_a_file_written_through_an_earlier_link_is_refused(tmp_path: Path) -> None:
    data = make_tar(
        file("plugin.yaml", MANIFEST),
        special("d", tarfile.SYMTYPE, "."),
        special("d/up", tarfile.SYMTYPE, ".."),
        file("d/up/escaped.txt", b"pwned"),
    )
    assert_refused(data, tmp_path)
    assert list(tmp_path.rglob("escaped.txt")) == []


# --- refused: names and kinds -----------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["../evil.py", "a/../../evil.py", "a/../b.py", "/tmp/evil.py", "/plugin.yaml", ".."]
)
def test_member_names_with_dotdot_or_absolute_are_refused(name: str, tmp_path: Path) -> None:
    data = make_tar(file("plugin.yaml", MANIFEST), file(name, b"pwned"))
    error = assert_refused(data, tmp_path)
    assert name in error.message
    assert not (tmp_path / "evil.py").exists()


@pytest.mark.parametrize(
    "name",
    ["a\\b.py", "x" * 256, "/".join(["d" * 200] * 6), "/".join(["d"] * 33)],
    ids=["backslash", "long-part", "long-name", "deep"],
)
def test_odd_or_overlong_names_are_refused(name: str, tmp_path: Path) -> None:
    assert_refused(make_tar(file("plugin.yaml", MANIFEST), file(name)), tmp_path)


@pytest.mark.parametrize(
    "kind", [tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE], ids=["chr", "blk", "fifo"]
)
def test_devices_and_fifos_are_refused(kind: bytes, tmp_path: Path) -> None:
    data = make_tar(file("plugin.yaml", MANIFEST), special("dev", kind))
    assert "not a file or directory" in assert_refused(data, tmp_path).message


@pytest.mark.parametrize(
    "members",
    [
        [file("a.py"), file("a.py")],
        [file("a.py"), special("a.py", tarfile.DIRTYPE)],
        [file("a.py"), file("a.py/b.py")],
        [special("d", tarfile.DIRTYPE), file("d")],
        [file("plugin.yaml", b"id: shadowed\n")],
        [file("a/b/c.py"), file("a/b")],
        [file("a/b"), file("a/b/c/d.py")],
    ],
    ids=[
        "file-twice",
        "file-then-dir",
        "file-under-file",
        "dir-then-file",
        "manifest-twice",
        "implicit-dir-then-file",
        "file-then-implicit-dirs",
    ],
)
def test_a_name_used_twice_is_refused(
    members: list[tuple[tarfile.TarInfo, bytes]], tmp_path: Path
) -> None:
    # tar's "the last one wins" would let a later member replace what was checked earlier.
    data = make_tar(file("plugin.yaml", MANIFEST), *members)
    assert "twice" in assert_refused(data, tmp_path).message


def test_more_members_than_allowed_are_refused(tmp_path: Path) -> None:
    data = make_tar(file("plugin.yaml", MANIFEST), *(file(f"f{i}") for i in range(50)))
    assert (extract(data, tmp_path / "ok", max_members=51) / "f49").is_file()
    assert "more than 50 members" in assert_refused(data, tmp_path, max_members=50).message


def test_folders_implied_by_names_count_as_members(tmp_path: Path) -> None:
    # Ten deep names from a few hundred bytes would otherwise be hundreds of folders.
    deep = [file("/".join([f"top{i}", *["d"] * 30, "f.py"])) for i in range(10)]
    data = make_tar(file("plugin.yaml", MANIFEST), *deep)
    assert (extract(data, tmp_path / "ok", max_members=1 + 10 * 32) / "top9").is_dir()
    assert_refused(data, tmp_path, max_members=10 * 32)


# --- refused: the manifest, before anything is written ----------------------------------------


def test_missing_plugin_yaml_is_refused(tmp_path: Path) -> None:
    data = make_tar(file("main.py"), file("sub/plugin.yaml", MANIFEST))
    assert "plugin.yaml" in assert_refused(data, tmp_path).message


def test_plugin_yaml_that_is_a_folder_is_refused(tmp_path: Path) -> None:
    data = make_tar(special("plugin.yaml", tarfile.DIRTYPE), file("plugin.yaml/x"))
    assert "plugin.yaml" in assert_refused(data, tmp_path).message


def test_invalid_manifest_writes_nothing(tmp_path: Path) -> None:
    # Listed last: every other member was read (and would have been written) before it.
    data = make_tar(file("main.py"), file("pkg/mod.py"), file("plugin.yaml", b"id: Not Valid\n"))
    error = assert_refused(data, tmp_path, "invalid_manifest", 422)
    assert isinstance(error, ManifestError)
    assert "id" in [d["path"] for d in error.details]


def test_alias_bomb_manifest_writes_nothing(tmp_path: Path) -> None:
    data = make_tar(file("main.py"), file("plugin.yaml", alias_bomb(MANIFEST, levels=9)))
    error = assert_refused(data, tmp_path, "invalid_manifest", 422)
    assert "alias" in error.message or "anchor" in error.message


def test_oversized_manifest_is_refused(tmp_path: Path) -> None:
    huge = MANIFEST + b"#" * (10 * LIMIT) + b"\n"
    data = make_tar(file("plugin.yaml", huge))
    error = assert_refused(data, tmp_path, "invalid_manifest", 422, max_bytes=20 * LIMIT)
    assert "larger than 256 KiB" in error.message


def test_the_manifest_alone_can_be_read_without_writing(tmp_path: Path) -> None:
    data = make_tar(file("main.py"), file("./plugin.yaml", MANIFEST))
    assert read_bundle_manifest(data, max_bytes=LIMIT) == MANIFEST
    with pytest.raises(BundleError):
        link = special("l", tarfile.SYMTYPE, "x")
        read_bundle_manifest(make_tar(file("plugin.yaml", MANIFEST), link), max_bytes=LIMIT)
    assert not list(tmp_path.iterdir())


# --- refused: size ----------------------------------------------------------------------------


def test_compressed_size_over_the_limit_is_refused(tmp_path: Path) -> None:
    data = make_tar(file("plugin.yaml", MANIFEST), file("noise", os.urandom(20_000)))
    assert len(data) > 10_000
    assert_refused(data, tmp_path, "bundle_too_large", 413, max_bytes=10_000)


def test_small_gzip_that_expands_past_the_limit_is_refused(tmp_path: Path) -> None:
    data = make_tar(file("plugin.yaml", MANIFEST), file("zeros", b"\0" * 5_000_000))
    assert len(data) < 50_000, "the bundle itself is small"
    assert_refused(data, tmp_path, "bundle_too_large", 413, max_bytes=1_000_000)


def test_many_small_files_adding_up_past_the_limit_are_refused(tmp_path: Path) -> None:
    members = [file(f"f{i}", b"\0" * 5_000) for i in range(30)]
    data = make_tar(file("plugin.yaml", MANIFEST), *members)
    assert_refused(data, tmp_path, "bundle_too_large", 413, max_bytes=100_000)


def test_one_huge_pax_header_is_refused_before_it_is_read(tmp_path: Path) -> None:
    # The reported bomb, smaller: 32 MiB of pax header from a small gzip, members of size 0.
    data = make_tar(file("plugin.yaml", MANIFEST), with_pax(file("x"), comment="A" * (32 << 20)))
    assert len(data) < 100_000
    error = assert_refused(data, tmp_path, "bundle_too_large", 413, max_bytes=8 << 20)
    assert error.details["limit_bytes"] == MAX_HEADER_BYTES
    assert "header" in error.message


def test_pax_headers_past_the_decompressed_budget_are_refused(tmp_path: Path) -> None:
    # Headers of an ordinary size, but their sum passes the budget; members' sizes are 0.
    data = make_tar(file("plugin.yaml", MANIFEST), *pax_padding(200, 50_000))
    error = assert_refused(data, tmp_path, "bundle_too_large", 413, max_bytes=8 << 20)
    assert error.details == {"limit_bytes": 8 << 20}


def pax_block(records: bytes) -> bytes:
    """A hand-made pax extended header: its ustar block, then its records padded."""
    info = tarfile.TarInfo("././@PaxHeader")
    info.type, info.size = tarfile.XHDTYPE, len(records)
    return info.tobuf(tarfile.USTAR_FORMAT) + records + b"\0" * (-len(records) % BLOCK)


def raw_tar(*chunks: bytes) -> bytes:
    return gzip.compress(b"".join(chunks) + b"\0" * 2 * BLOCK)


def test_chained_pax_headers_without_a_member_are_refused(tmp_path: Path) -> None:
    manifest = make_tar(file("plugin.yaml", MANIFEST), mode="w")
    manifest = manifest[: BLOCK + -(-len(MANIFEST) // BLOCK) * BLOCK]
    data = raw_tar(manifest, *[pax_block(b"19 comment=chained\n")] * 100)
    assert "extended headers in a row" in assert_refused(data, tmp_path).message


@pytest.mark.parametrize(
    "records",
    [b"5 a=b", b"99 comment=short\n", b"0 =\n", b"x comment=y\n", b"11 nothing\n"],
    ids=["unterminated", "overlong", "zero", "no-length", "no-equals"],
)
def test_malformed_pax_records_are_refused(records: bytes, tmp_path: Path) -> None:
    member = make_tar(file("plugin.yaml", MANIFEST), mode="w")[: 2 * BLOCK]
    assert_refused(raw_tar(pax_block(records), member), tmp_path)


@pytest.mark.timeout(10)
def test_pax_header_full_of_digits_is_read_in_linear_time(tmp_path: Path) -> None:
    # Python 3.11.7's tarfile searches a pax header with a regex that is quadratic on a run of
    # digits and holds the GIL: 60 kB of digits took 4 s a header, 1 MB about twenty minutes.
    data = make_tar(file("plugin.yaml", MANIFEST), *pax_padding(4, 60_000, fill="1"))
    assert (extract(data, tmp_path) / "pad/3").is_file()


# --- refused: not a tar -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"definitely not a tarball",
        gzip.compress(b"plain text, gzipped"),
        b"\x1f\x8b\x08\x00" + b"\xff" * 64,
        gzip.compress(b"\0" * 1024),
    ],
    ids=["empty", "text", "gzipped-text", "broken-gzip", "only-end-blocks"],
)
def test_not_a_tar_is_refused(data: bytes, tmp_path: Path) -> None:
    assert_refused(data, tmp_path)


def gzip_member(data: bytes, *, name: bytes = b"") -> bytes:
    """One gzip member, optionally with a file name in its header (FNAME)."""
    deflate = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    body = deflate.compress(data) + deflate.flush()
    flags = b"\x08" if name else b"\x00"
    header = b"\x1f\x8b\x08" + flags + bytes(4) + b"\x00\xff" + (name + b"\0" if name else b"")
    return header + body + struct.pack("<II", zlib.crc32(data), len(data))


def test_concatenated_gzip_members_are_one_stream(tmp_path: Path) -> None:
    raw = make_tar(file("plugin.yaml", MANIFEST), file("pkg/a.py", b"A = 1\n"), mode="w")
    data = b"".join(gzip_member(raw[i : i + 700]) for i in range(0, len(raw), 700))
    assert (extract(data, tmp_path) / "pkg/a.py").read_text() == "A = 1\n"


def test_too_many_gzip_members_are_refused(tmp_path: Path) -> None:
    raw = make_tar(file("plugin.yaml", MANIFEST), mode="w")
    data = b"".join(gzip_member(b"") for _ in range(20)) + gzip_member(raw)
    assert "gzip members" in assert_refused(data, tmp_path).message


def test_a_long_name_in_the_gzip_header_is_skipped_by_zlib(tmp_path: Path) -> None:
    # gzip.GzipFile reads this name a byte at a time: about a second per 10 MiB.
    raw = make_tar(file("plugin.yaml", MANIFEST), mode="w")
    data = gzip_member(raw, name=b"n" * (8 << 20))
    assert (extract(data, tmp_path, max_bytes=len(data)) / "plugin.yaml").is_file()


def test_a_gzip_stream_with_a_wrong_crc_is_refused(tmp_path: Path) -> None:
    data = bytearray(gzip.compress(make_tar(file("plugin.yaml", MANIFEST), mode="w")))
    data[-8] ^= 0xFF
    assert_refused(bytes(data), tmp_path)


def test_truncated_bundle_is_refused(tmp_path: Path) -> None:
    whole = make_tar(file("plugin.yaml", MANIFEST), file("noise", os.urandom(50_000)), mode="w")
    assert_refused(whole[: len(whole) // 2], tmp_path)


def test_a_header_with_a_wrong_checksum_is_refused(tmp_path: Path) -> None:
    raw = bytearray(make_tar(file("plugin.yaml", MANIFEST), mode="w"))
    raw[0:1] = b"q"  # the name changes, the checksum does not
    assert "checksum" in assert_refused(gzip.compress(bytes(raw)), tmp_path).message


def test_extraction_does_not_use_tarfile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The interpreter's reader and filter are what the hostile bundles above defeated.
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("tarfile was used")

    data = make_tar(file("plugin.yaml", MANIFEST), file("pkg/a.py"))
    for name in ("open", "TarFile"):
        monkeypatch.setattr(tarfile, name, refuse)
    assert (extract(data, tmp_path) / "pkg/a.py").is_file()


# --- pack_directory ---------------------------------------------------------------------------


def plugin_folder(root: Path) -> Path:
    (root / "pkg/__pycache__").mkdir(parents=True)
    (root / "plugin.yaml").write_bytes(MANIFEST)
    (root / "pkg/mod.py").write_text("X = 1\n")
    (root / "pkg/__pycache__/mod.cpython-311.pyc").write_bytes(b"\0")
    (root / "stray.pyc").write_bytes(b"\0")
    return root


def names_in(data: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return sorted(tar.getnames())


def test_pack_skips_bytecode(tmp_path: Path) -> None:
    names = names_in(pack_directory(plugin_folder(tmp_path)))
    assert names == ["pkg/mod.py", "plugin.yaml"]  # files only: folders come with them


def test_pack_then_extract_round_trips(tmp_path: Path) -> None:
    data = pack_directory(REPO / "examples/word-count")
    dest = extract(data, tmp_path / "work", max_bytes=10_000_000)
    for src in (REPO / "examples/word-count").rglob("*"):
        if src.is_file() and "__pycache__" not in src.parts and src.suffix != ".pyc":
            rel = src.relative_to(REPO / "examples/word-count")
            assert (dest / rel).read_bytes() == src.read_bytes(), rel


def test_pack_is_reproducible(tmp_path: Path) -> None:
    folder = plugin_folder(tmp_path)
    assert pack_directory(folder) == pack_directory(folder)


def test_pack_ignores_file_times(tmp_path: Path) -> None:
    folder = plugin_folder(tmp_path)
    first = pack_directory(folder)
    os.utime(folder / "pkg/mod.py", (1_000_000, 1_000_000))
    assert pack_directory(folder) == first


def test_pack_is_reproducible_across_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = plugin_folder(tmp_path)
    # gzip reads the wall clock through its module-level ``time``; move only that clock.
    monkeypatch.setattr(gzip, "time", SimpleNamespace(time=lambda: 1_700_000_000.0))
    first = pack_directory(folder)
    monkeypatch.setattr(gzip, "time", SimpleNamespace(time=lambda: 1_800_000_000.0))
    assert pack_directory(folder) == first


def test_pack_refuses_a_folder_without_plugin_yaml(tmp_path: Path) -> None:
    (tmp_path / "main.py").write_text("")
    with pytest.raises(BundleError) as info:
        pack_directory(tmp_path)
    assert info.value.code == "invalid_bundle"
