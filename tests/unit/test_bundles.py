"""Source bundles: hostile archives are refused without leaving anything on disk."""

from __future__ import annotations

import gzip
import io
import tarfile
from pathlib import Path
from types import SimpleNamespace
from typing import Literal

import pytest

from orchestrator.services.bundles import BundleError, extract_bundle, pack_directory

REPO = Path(__file__).resolve().parents[2]
MANIFEST = b"schema_version: 1\nid: com.example.x\n"
LIMIT = 1_000_000

Member = tuple[tarfile.TarInfo, bytes | None]


def file(name: str, data: bytes = b"x") -> Member:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def special(name: str, kind: bytes, linkname: str = "") -> Member:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info, None


def make_tar(*members: Member, mode: Literal["w", "w:gz"] = "w:gz") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def extract(data: bytes, workdir: Path, max_bytes: int = LIMIT) -> Path:
    return extract_bundle(io.BytesIO(data), max_bytes=max_bytes, workdir=workdir)


def assert_refused(data: bytes, tmp_path: Path, code: str = "invalid_bundle", **kw: int) -> str:
    workdir = tmp_path / "work"
    with pytest.raises(BundleError) as info:
        extract(data, workdir, **kw)
    assert info.value.code == code
    assert info.value.status_code == 400
    leftovers = list(workdir.rglob("*")) if workdir.exists() else []
    assert leftovers == [], "a refused bundle leaves nothing under workdir"
    return info.value.message


# --- accepted --------------------------------------------------------------------------------


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


def test_each_bundle_gets_its_own_folder(tmp_path: Path) -> None:
    data = make_tar(file("plugin.yaml", MANIFEST))
    assert extract(data, tmp_path) != extract(data, tmp_path)


def test_dot_slash_prefixed_members_are_accepted(tmp_path: Path) -> None:
    # What `tar -C plugin -czf bundle.tar.gz .` produces.
    data = make_tar(special(".", tarfile.DIRTYPE), file("./plugin.yaml", MANIFEST))
    assert (extract(data, tmp_path) / "plugin.yaml").read_bytes() == MANIFEST


def test_symlink_pointing_inside_is_kept(tmp_path: Path) -> None:
    data = make_tar(
        file("plugin.yaml", MANIFEST),
        file("lib/real.py", b"X = 1\n"),
        special("lib/alias.py", tarfile.SYMTYPE, "real.py"),
        special("top.py", tarfile.SYMTYPE, "lib/../lib/real.py"),
    )
    dest = extract(data, tmp_path)
    assert (dest / "lib/alias.py").is_symlink()
    assert (dest / "lib/alias.py").read_text() == "X = 1\n"
    assert (dest / "top.py").read_text() == "X = 1\n"


def test_hardlink_inside_is_kept(tmp_path: Path) -> None:
    data = make_tar(
        file("plugin.yaml", MANIFEST), special("copy.yaml", tarfile.LNKTYPE, "plugin.yaml")
    )
    assert (extract(data, tmp_path) / "copy.yaml").read_bytes() == MANIFEST


def test_bundle_exactly_at_the_limit_is_accepted(tmp_path: Path) -> None:
    data = make_tar(file("plugin.yaml", MANIFEST), file("blob", b"\0" * (100_000 - len(MANIFEST))))
    assert (extract(data, tmp_path, max_bytes=100_000) / "blob").stat().st_size > 0


def test_setuid_bit_is_stripped(tmp_path: Path) -> None:
    info, data = file("plugin.yaml", MANIFEST)
    info.mode = 0o4777
    dest = extract(make_tar((info, data)), tmp_path)
    assert (dest / "plugin.yaml").stat().st_mode & 0o4000 == 0


# --- refused: paths and links -----------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["../evil.py", "a/../../evil.py", "/tmp/evil.py", "/plugin.yaml", ".."]
)
def test_member_outside_the_bundle_is_refused(name: str, tmp_path: Path) -> None:
    data = make_tar(file("plugin.yaml", MANIFEST), file(name, b"pwned"))
    message = assert_refused(data, tmp_path)
    assert name in message
    assert not (tmp_path / "evil.py").exists()


@pytest.mark.parametrize(
    ("name", "target"),
    [
        ("escape", "/etc/passwd"),
        ("escape", ".."),
        ("escape", "../outside"),
        ("sub/escape", "../../outside"),
        ("sub/escape", "../x/../../outside"),
    ],
)
def test_symlink_pointing_outside_is_refused(name: str, target: str, tmp_path: Path) -> None:
    data = make_tar(file("plugin.yaml", MANIFEST), special(name, tarfile.SYMTYPE, target))
    assert_refused(data, tmp_path)


@pytest.mark.parametrize("target", ["/etc/passwd", "../outside", "a/../../outside"])
def test_hardlink_pointing_outside_is_refused(target: str, tmp_path: Path) -> None:
    data = make_tar(file("plugin.yaml", MANIFEST), special("link", tarfile.LNKTYPE, target))
    assert_refused(data, tmp_path)


def test_symlink_chain_that_escapes_is_refused(tmp_path: Path) -> None:
    # Each name is harmless read lexically; through the symlink on disk it leaves the bundle.
    data = make_tar(
        file("plugin.yaml", MANIFEST),
        special("here", tarfile.SYMTYPE, "."),
        file("here/here/../../escaped.txt", b"pwned"),
    )
    assert_refused(data, tmp_path)
    assert list(tmp_path.rglob("escaped.txt")) == []


def test_write_through_inside_symlink_to_outside_is_refused(tmp_path: Path) -> None:
    data = make_tar(
        file("plugin.yaml", MANIFEST),
        special("d", tarfile.SYMTYPE, "."),
        special("d/up", tarfile.SYMTYPE, ".."),
        file("d/up/escaped.txt", b"pwned"),
    )
    assert_refused(data, tmp_path)
    assert list(tmp_path.rglob("escaped.txt")) == []


@pytest.mark.parametrize(
    "kind", [tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE], ids=["chr", "blk", "fifo"]
)
def test_devices_and_fifos_are_refused(kind: bytes, tmp_path: Path) -> None:
    data = make_tar(file("plugin.yaml", MANIFEST), special("dev", kind))
    assert "not a file or directory" in assert_refused(data, tmp_path)


# --- refused: content and size -------------------------------------------------------------


def test_missing_plugin_yaml_is_refused(tmp_path: Path) -> None:
    data = make_tar(file("main.py"), file("sub/plugin.yaml", MANIFEST))
    assert "plugin.yaml" in assert_refused(data, tmp_path)


def test_compressed_size_over_the_limit_is_refused(tmp_path: Path) -> None:
    import os

    data = make_tar(file("plugin.yaml", MANIFEST), file("noise", os.urandom(20_000)))
    assert len(data) > 10_000
    assert_refused(data, tmp_path, code="bundle_too_large", max_bytes=10_000)


def test_small_gzip_that_expands_past_the_limit_is_refused(tmp_path: Path) -> None:
    data = make_tar(file("plugin.yaml", MANIFEST), file("zeros", b"\0" * 5_000_000))
    assert len(data) < 50_000, "the bundle itself is small"
    assert_refused(data, tmp_path, code="bundle_too_large", max_bytes=1_000_000)


def test_many_small_files_adding_up_past_the_limit_are_refused(tmp_path: Path) -> None:
    members = [file(f"f{i}", b"\0" * 5_000) for i in range(30)]
    data = make_tar(file("plugin.yaml", MANIFEST), *members)
    assert_refused(data, tmp_path, code="bundle_too_large", max_bytes=100_000)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"definitely not a tarball",
        gzip.compress(b"plain text, gzipped"),
        b"\x1f\x8b\x08\x00" + b"\xff" * 64,
    ],
    ids=["empty", "text", "gzipped-text", "broken-gzip"],
)
def test_not_a_tar_is_refused(data: bytes, tmp_path: Path) -> None:
    assert_refused(data, tmp_path)


def test_truncated_bundle_is_refused(tmp_path: Path) -> None:
    import os

    whole = make_tar(file("plugin.yaml", MANIFEST), file("noise", os.urandom(50_000)), mode="w")
    assert_refused(whole[: len(whole) // 2], tmp_path)


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
    import os

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
