"""Reading an image's files without running it: what a crafted archive cannot make the
extraction do (leave its folder, follow a link, write a device, grow past its cap), layers
applied with their whiteouts, and ``RegistryImageStore`` reading layers from a registry."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

import httpx
import pytest

from orchestrator.domain.errors import RuntimeFailure
from orchestrator.runtime.image_filesystem import (
    MAX_HEADER_BYTES,
    FilesystemWriter,
    ImageTooLarge,
    ImageUnreadable,
)
from orchestrator.runtime.registry import RegistryImageStore


def everything(path: str, directory: bool) -> bool:
    return True


def entry(name: str, data: bytes = b"", **attrs: object) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    for key, value in attrs.items():
        setattr(info, key, value)
    if info.type not in (tarfile.REGTYPE, tarfile.AREGTYPE):
        info.size = 0
    return info, data


def archive(*entries: tuple[tarfile.TarInfo, bytes], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buf.getvalue()


def flat(root: Path, data: bytes, **kwargs: object) -> FilesystemWriter:
    writer = FilesystemWriter(root, wanted=kwargs.pop("wanted", everything), **kwargs)  # type: ignore[arg-type]
    writer.add_flat(io.BytesIO(data))
    return writer


def tree(root: Path) -> dict[str, str]:
    """Every path under ``root``: "dir", or a file's text."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        assert not path.is_symlink(), rel
        out[rel] = "dir" if path.is_dir() else path.read_text()
    return out


def test_files_and_folders_are_written_relative_to_the_root(tmp_path: Path) -> None:
    data = archive(
        entry("plugin", type=tarfile.DIRTYPE),
        entry("plugin/app.py", b"print(1)\n"),
        entry("/etc/hostname", b"box\n"),  # absolute: read from the image root, as engines do
        entry("./usr/lib/x.txt", b"x"),
    )
    writer = flat(tmp_path / "root", data)
    assert tree(tmp_path / "root") == {
        "etc": "dir",
        "etc/hostname": "box\n",
        "plugin": "dir",
        "plugin/app.py": "print(1)\n",
        "usr": "dir",
        "usr/lib": "dir",
        "usr/lib/x.txt": "x",
    }
    fs = writer.result()
    assert (fs.files, fs.written_bytes, fs.entries) == (3, 14, 4)
    assert not (tmp_path / "etc").exists()


@pytest.mark.parametrize("name", ["../escape.txt", "plugin/../../escape.txt", "a/../../../x"])
def test_a_path_that_leaves_the_root_refuses_the_image(tmp_path: Path, name: str) -> None:
    data = archive(entry("plugin/ok.py", b"ok"), entry(name, b"owned"))
    with pytest.raises(ImageUnreadable, match="leaves its root") as info:
        flat(tmp_path / "root", data)
    assert info.value.code == "image_unreadable"
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path / "x").exists()


def test_symlinks_are_recorded_never_created_nor_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    data = archive(
        entry("plugin", type=tarfile.DIRTYPE),
        # A link out of the root, then a file written "through" it: it must land inside.
        entry("plugin/escape", type=tarfile.SYMTYPE, linkname=str(outside)),
        entry("plugin/escape/planted.py", b"planted"),
        entry("plugin/shadow.py", type=tarfile.SYMTYPE, linkname="/etc/shadow"),
        entry("lib", type=tarfile.SYMTYPE, linkname="usr/lib"),
    )
    writer = flat(tmp_path / "root", data)
    assert list(outside.iterdir()) == []
    assert tree(tmp_path / "root") == {
        "plugin": "dir",
        "plugin/escape": "dir",
        "plugin/escape/planted.py": "planted",
    }
    # The folder written over the link replaced it; the other links are remembered.
    assert writer.result().links == {"/plugin/shadow.py": "/etc/shadow", "/lib": "usr/lib"}


def test_devices_fifos_and_unwanted_files_are_not_written(tmp_path: Path) -> None:
    data = archive(
        entry("dev/sda", type=tarfile.BLKTYPE, devmajor=8, devminor=0),
        entry("dev/null", type=tarfile.CHRTYPE, devmajor=1, devminor=3),
        entry("run/fifo", type=tarfile.FIFOTYPE),
        entry("plugin/app.py", b"code"),
        entry("usr/share/doc/big.txt", b"not needed"),
    )

    def only_python(path: str, directory: bool) -> bool:
        return directory or path.endswith(".py")

    flat(tmp_path / "root", data, wanted=only_python)
    # Folders are made for what is written in them (or for a folder entry that is wanted).
    assert tree(tmp_path / "root") == {"plugin": "dir", "plugin/app.py": "code"}


def test_hard_links_copy_an_extracted_target_and_report_the_rest(tmp_path: Path) -> None:
    data = archive(
        entry("plugin/a.py", b"A"),
        entry("plugin/b.py", type=tarfile.LNKTYPE, linkname="plugin/a.py"),
        entry("usr/bin/tool", b"binary"),
        entry("plugin/c.py", type=tarfile.LNKTYPE, linkname="usr/bin/tool"),
    )

    def plugin_only(path: str, directory: bool) -> bool:
        return directory or path.startswith("/plugin/")

    writer = flat(tmp_path / "root", data, wanted=plugin_only)
    root = tmp_path / "root"
    assert (root / "plugin/b.py").read_text() == "A"
    assert not (root / "plugin/b.py").samefile(root / "plugin/a.py")
    assert not (root / "plugin/c.py").exists()
    assert writer.result().unresolved == ["/plugin/c.py"]


def test_the_unpacked_size_is_capped_counting_skipped_files(tmp_path: Path) -> None:
    data = archive(entry("a.bin", b"x" * 600), entry("b.bin", b"y" * 600))

    def nothing(path: str, directory: bool) -> bool:
        return False

    with pytest.raises(ImageTooLarge, match="more than 1000 bytes") as info:
        flat(tmp_path / "root", data, wanted=nothing, max_bytes=1000)
    assert info.value.status_code == 413 and info.value.code == "image_too_large"
    assert info.value.details["limit_bytes"] == 1000
    flat(tmp_path / "again", data, wanted=nothing, max_bytes=1200)  # at the cap: read


def test_the_number_of_entries_is_capped(tmp_path: Path) -> None:
    data = archive(*(entry(f"f{i}", b"") for i in range(11)))
    with pytest.raises(ImageTooLarge, match="more than 10 files"):
        flat(tmp_path / "root", data, max_entries=10)


def test_a_gzip_bomb_stops_at_the_cap(tmp_path: Path) -> None:
    # 64 MiB of zeros gzip to ~64 KiB: the cap is on what comes out, not what comes in.
    bomb = gzip.compress(archive(entry("zeros", b"\0" * (64 * 1024 * 1024))), compresslevel=9)
    assert len(bomb) < 200 * 1024
    writer = FilesystemWriter(tmp_path / "root", wanted=everything, max_bytes=1024 * 1024)
    with pytest.raises(ImageTooLarge):
        writer.add_layer(io.BytesIO(bomb), compression="gzip")
    assert not (tmp_path / "root" / "zeros").exists()


def test_a_huge_long_name_header_is_refused_before_it_is_read(tmp_path: Path) -> None:
    long_name = "a/" * (MAX_HEADER_BYTES // 2 + 10) + "x"
    data = archive(entry(long_name, b"x"), fmt=tarfile.GNU_FORMAT)
    with pytest.raises(ImageUnreadable, match="tar header"):
        flat(tmp_path / "root", data)


def test_garbage_is_unreadable_not_a_crash(tmp_path: Path) -> None:
    with pytest.raises(ImageUnreadable, match="cannot be read"):
        flat(tmp_path / "root", b"\x01" * 4096)
    writer = FilesystemWriter(tmp_path / "gz", wanted=everything)
    with pytest.raises(ImageUnreadable):
        writer.add_layer(io.BytesIO(b"\x1f\x8b" + b"\0" * 100), compression="gzip")
    with pytest.raises(ImageUnreadable, match="zstd"):
        writer.add_layer(io.BytesIO(b""), compression="zstd")


def test_the_destination_must_be_empty(tmp_path: Path) -> None:
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "left").write_text("over")
    with pytest.raises(ValueError, match="not empty"):
        FilesystemWriter(tmp_path / "root", wanted=everything)


def test_layers_apply_in_order_with_whiteouts(tmp_path: Path) -> None:
    lower = archive(
        entry("app/keep.py", b"keep"),
        entry("app/gone.py", b"gone"),
        entry("app/old", type=tarfile.DIRTYPE),
        entry("app/old/deep.py", b"deep"),
        entry("opq/lower.py", b"lower"),
        entry("opq/sub/lower2.py", b"lower2"),
        entry("swap", b"a file below"),
        entry("link", type=tarfile.SYMTYPE, linkname="/etc"),
    )
    upper = archive(
        entry("app/.wh.gone.py"),
        entry("app/.wh.old"),
        entry("opq/upper.py", b"upper"),  # before the marker: still this layer's, kept
        entry("opq/.wh..wh..opq"),
        entry("opq/sub/upper2.py", b"upper2"),
        entry("swap", type=tarfile.DIRTYPE),  # a folder where a file was
        entry("swap/inside.py", b"inside"),
        entry("app/keep.py", b"replaced"),
        entry(".wh.link"),
    )
    writer = FilesystemWriter(tmp_path / "root", wanted=everything)
    writer.add_layer(io.BytesIO(gzip.compress(lower)), compression="gzip")
    writer.add_layer(io.BytesIO(upper), compression=None)
    assert tree(tmp_path / "root") == {
        "app": "dir",
        "app/keep.py": "replaced",
        "opq": "dir",
        "opq/sub": "dir",
        "opq/sub/upper2.py": "upper2",
        "opq/upper.py": "upper",
        "swap": "dir",
        "swap/inside.py": "inside",
    }
    fs = writer.result()
    assert fs.links == {}
    assert fs.unpacked_bytes == len("keepgonedeeplowerlower2a file below") + len(
        "upper" + "upper2" + "inside" + "replaced"
    )


def test_a_whiteout_in_a_flat_export_is_only_a_name(tmp_path: Path) -> None:
    data = archive(entry("app/x.py", b"x"), entry("app/.wh.x.py"))
    flat(tmp_path / "root", data)
    assert tree(tmp_path / "root") == {"app": "dir", "app/x.py": "x"}


# -- RegistryImageStore.extract_filesystem against a scripted registry -------------------------


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class ScriptedRegistry:
    """A registry of one image, ``registry.test/team/plugin:1``, of two gzip layers."""

    def __init__(self, layers: list[bytes], *, tamper: bool = False) -> None:
        self.blobs = {_digest(b): b for b in layers}
        self.layers = set(self.blobs)
        config = json.dumps({"config": {"Labels": {}, "WorkingDir": "/srv/app"}}).encode()
        self.blobs[_digest(config)] = config
        self.manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"digest": _digest(config), "size": len(config)},
                "layers": [
                    {
                        "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                        "digest": _digest(b),
                        "size": len(b),
                    }
                    for b in layers
                ],
            }
        ).encode()
        self.tamper = tamper
        self.requests: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request.url.path)
        path = request.url.path
        if path.endswith("/manifests/1") or path.endswith("/manifests/" + _digest(self.manifest)):
            return httpx.Response(
                200,
                content=self.manifest,
                headers={"content-type": "application/vnd.oci.image.manifest.v1+json"},
            )
        digest = path.rsplit("/", 1)[-1]
        if "/blobs/" in path and digest in self.blobs:
            body = self.blobs[digest]
            if self.tamper and digest in self.layers:
                # Another valid gzip of other files: it reads, but is not the layer named.
                body = gzip.compress(archive(entry("srv/app/main.py", b"swapped")))
            return httpx.Response(200, content=body)
        return httpx.Response(404)


def _store(registry: ScriptedRegistry) -> RegistryImageStore:
    return RegistryImageStore(transport=httpx.MockTransport(registry))


def test_registry_layers_are_read_with_their_whiteouts(tmp_path: Path) -> None:
    lower = gzip.compress(
        archive(entry("srv/app/main.py", b"main"), entry("srv/app/old.py", b"old"))
    )
    upper = gzip.compress(archive(entry("srv/app/.wh.old.py"), entry("srv/app/new.py", b"new")))
    registry = ScriptedRegistry([lower, upper])
    store = _store(registry)
    info = store.image("registry.test/team/plugin:1")
    assert info is not None and info.workdir == "/srv/app"
    fs = store.extract_filesystem(
        info.id, tmp_path / "root", wanted=everything, max_bytes=1024 * 1024
    )
    assert tree(fs.root) == {
        "srv": "dir",
        "srv/app": "dir",
        "srv/app/main.py": "main",
        "srv/app/new.py": "new",
    }
    store.close()


def test_a_registry_layer_that_does_not_match_its_digest_is_refused(tmp_path: Path) -> None:
    layer = gzip.compress(archive(entry("srv/app/main.py", b"original")))
    registry = ScriptedRegistry([layer], tamper=True)
    store = _store(registry)
    with pytest.raises(RuntimeFailure, match="does not match its digest"):
        store.extract_filesystem(
            "registry.test/team/plugin:1",
            tmp_path / "root",
            wanted=everything,
            max_bytes=1024 * 1024,
        )
    store.close()


def test_a_registry_image_past_the_cap_is_refused(tmp_path: Path) -> None:
    layer = gzip.compress(archive(entry("big.bin", os.urandom(64 * 1024))))
    store = _store(ScriptedRegistry([layer]))
    with pytest.raises(ImageTooLarge):
        store.extract_filesystem(
            "registry.test/team/plugin:1", tmp_path / "root", wanted=everything, max_bytes=1024
        )
    store.close()
