"""Catalog archives without Docker: a registry kept in memory behind ``httpx.MockTransport``
(the distribution API's reads, blob uploads and manifest pushes), two SQLite catalogs, and
the archive itself opened and rewritten to check each refusal."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import tarfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy.engine import Engine
from typer.testing import CliRunner

from orchestrator import cli
from orchestrator.catalog.archive import (
    INDEX_NAME,
    SIGNATURE_NAME,
    ArchiveRefused,
    RegistryMirror,
    export_catalog,
    import_catalog,
    load_signing_key,
)
from orchestrator.cli import connection
from orchestrator.domain.errors import NotFound, RuntimeFailure, SummitError, TooLarge
from orchestrator.domain.manifest import Manifest
from orchestrator.security.trust import SignatureRefused, TrustStore
from orchestrator.store import catalog as store
from orchestrator.store.db import make_engine, migrate, session_scope
from tests.fixtures.manifests import minimal_manifest

SOURCE = "registry.test:5000"
MIRROR = "mirror.test:5000"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
PID = "com.acme.weather"


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# -- a registry in memory -------------------------------------------------------------------------


class FakeRegistry:
    """The distribution API v2, as much of it as copying images uses, for several hosts."""

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        self.links: set[tuple[str, str, str]] = set()  # host, repository, blob digest
        self.manifests: dict[tuple[str, str, str], tuple[str, bytes]] = {}
        self.uploads: dict[str, tuple[str, str]] = {}
        self.pushed: list[tuple[str, str, str]] = []  # host, repository, what
        self.corrupt: set[str] = set()  # blobs served with a byte changed
        self.guarded: dict[str, str] = {}  # host -> the bearer token it wants
        self.read_only: set[str] = set()  # hosts that refuse every push

    def add_blob(self, host: str, repo: str, data: bytes) -> str:
        digest = sha(data)
        self.blobs[digest] = data
        self.links.add((host, repo, digest))
        return digest

    def add_manifest(self, host: str, repo: str, body: bytes, media_type: str) -> str:
        digest = sha(body)
        self.manifests[(host, repo, digest)] = (media_type, body)
        return digest

    def __call__(self, request: httpx.Request) -> httpx.Response:
        host = request.url.netloc.decode()
        path = request.url.path
        if host in self.guarded:
            if path == "/token":
                return httpx.Response(200, json={"token": self.guarded[host]})
            if request.headers.get("authorization") != f"Bearer {self.guarded[host]}":
                challenge = f'Bearer realm="http://{host}/token",service="{host}"'
                return httpx.Response(401, headers={"WWW-Authenticate": challenge})
        if host in self.read_only and request.method in ("POST", "PUT"):
            return httpx.Response(403, json={"errors": [{"code": "DENIED"}]})
        match = re.fullmatch(r"/v2/(.+)/(manifests|blobs)/(.+)", path)
        if match is None:
            return httpx.Response(404)
        repo, kind, ref = match.groups()
        if kind == "blobs" and ref.startswith("uploads"):
            return self._upload(request, host, repo, ref)
        if kind == "manifests":
            return self._manifest(request, host, repo, ref)
        if (host, repo, ref) not in self.links:
            return httpx.Response(404)
        data = self.blobs[ref]
        if ref in self.corrupt:
            data = bytes([data[0] ^ 1]) + data[1:]
        if request.method == "HEAD":
            return httpx.Response(200, headers={"Content-Length": str(len(data))})
        return httpx.Response(200, content=data)

    def _manifest(self, request: httpx.Request, host: str, repo: str, ref: str) -> httpx.Response:
        if request.method == "PUT":
            body = request.read()
            if sha(body) != ref:
                return httpx.Response(400, json={"errors": [{"code": "DIGEST_INVALID"}]})
            self.manifests[(host, repo, ref)] = (request.headers["content-type"], body)
            self.pushed.append((host, repo, f"manifest {ref}"))
            return httpx.Response(201, headers={"Docker-Content-Digest": ref})
        found = self.manifests.get((host, repo, ref))
        if found is None:
            return httpx.Response(404)
        media_type, body = found
        return httpx.Response(200, content=body, headers={"Content-Type": media_type})

    def _upload(self, request: httpx.Request, host: str, repo: str, ref: str) -> httpx.Response:
        if request.method == "POST":
            upload = uuid.uuid4().hex
            self.uploads[upload] = (host, repo)
            return httpx.Response(202, headers={"Location": f"/v2/{repo}/blobs/uploads/{upload}"})
        upload = ref.rsplit("/", 1)[1]
        if request.method != "PUT" or self.uploads.pop(upload, None) != (host, repo):
            return httpx.Response(404)
        data = request.read()
        digest = request.url.params["digest"]
        if sha(data) != digest:
            return httpx.Response(400, json={"errors": [{"code": "DIGEST_INVALID"}]})
        self.blobs[digest] = data
        self.links.add((host, repo, digest))
        self.pushed.append((host, repo, f"blob {digest}"))
        return httpx.Response(201)

    def client(self) -> RegistryMirror:
        return RegistryMirror(
            insecure_registries=[SOURCE, MIRROR], transport=httpx.MockTransport(self)
        )


def layer(content: bytes) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        info = tarfile.TarInfo("app/plugin.py")
        info.size = len(content)
        tar.addfile(info, io.BytesIO(content))
    return gzip.compress(raw.getvalue(), mtime=0)


def push_image(registry: FakeRegistry, repo: str, manifest: dict[str, Any]) -> tuple[str, str]:
    """A plugin image (config with the manifest label, one layer); (reference, digest)."""
    config = json.dumps(
        {"config": {"Labels": {"io.summit.plugin": json.dumps(manifest)}}, "rootfs": {}}
    ).encode()
    blob = layer(f"# {manifest['version']}\n".encode() * 2000)
    body = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": {
                "mediaType": "application/vnd.docker.container.image.v1+json",
                "digest": registry.add_blob(SOURCE, repo, config),
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                    "digest": registry.add_blob(SOURCE, repo, blob),
                    "size": len(blob),
                }
            ],
        }
    ).encode()
    digest = registry.add_manifest(SOURCE, repo, body, DOCKER_MANIFEST)
    return f"{SOURCE}/{repo}@{digest}", digest


def plugin_manifest(version: str, **changes: Any) -> dict[str, Any]:
    return minimal_manifest(
        id=PID,
        name="Weather",
        version=version,
        extensions=[{"point": "analyzer", "name": "weather"}],
        **changes,
    )


def publish(engine: Engine, image: str, version: str, **fields: Any) -> None:
    with session_scope(engine) as session:
        store.publish_version(
            session,
            manifest=Manifest.model_validate(plugin_manifest(version)),
            image=image,
            publisher="acme",
            published_by="acme-ci (tok_1)",
            **fields,
        )


# -- fixtures -------------------------------------------------------------------------------------


@pytest.fixture
def registry() -> FakeRegistry:
    return FakeRegistry()


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def public_pem(private: Ed25519PrivateKey) -> str:
    return (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def new_engine(path: Path) -> Engine:
    eng = make_engine(f"sqlite:///{path}")
    migrate(eng)
    return eng


@pytest.fixture
def source(tmp_path: Path, registry: FakeRegistry) -> Iterator[Engine]:
    """A catalog with acme's weather plugin: 1.0.0 (yanked) and 1.1.0, deprecated."""
    eng = new_engine(tmp_path / "source.db")
    with session_scope(eng) as session:
        store.add_publisher(session, publisher_id="acme", name="Acme")
        store.claim_namespace(session, publisher_id="acme", prefix="com.acme.")
    for version in ("1.0.0", "1.1.0"):
        image, _ = push_image(registry, "plugins/weather", plugin_manifest(version))
        publish(
            eng,
            image,
            version,
            readme=f"# Weather {version}",
            categories=["data"],
            keywords=["forecast"],
            links={"homepage": "https://acme.example/weather"},
            changelog=f"changes of {version}",
            scan_report={"summary": {"high": 0}, "blocking": []},
            scan_summary={"high": 0},
        )
    with session_scope(eng) as session:
        store.yank_version(session, plugin_id=PID, version="1.0.0", reason="wrong units")
        store.deprecate_plugin(session, plugin_id=PID, reason="use the new one")
    yield eng
    eng.dispose()


@pytest.fixture
def target(tmp_path: Path) -> Iterator[Engine]:
    eng = new_engine(tmp_path / "target.db")
    yield eng
    eng.dispose()


@pytest.fixture
def archive(tmp_path: Path, source: Engine, registry: FakeRegistry, key: Ed25519PrivateKey) -> Path:
    path = tmp_path / "catalog.tar"
    export_catalog(source, path, key=key, registry=registry.client())
    return path


def trust(engine: Engine, private: Ed25519PrivateKey) -> TrustStore:
    store_ = TrustStore(engine)
    store_.add(name="exporter", public_key=public_pem(private))
    return store_


def do_import(engine: Engine, path: Path, registry: FakeRegistry, **kw: Any) -> Any:
    kw.setdefault("target", f"{MIRROR}/site")
    return import_catalog(engine, path, registry=registry.client(), **kw)


def members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {
            m.name: (tar.extractfile(m).read() if m.isfile() else b"")  # type: ignore[union-attr]
            for m in tar.getmembers()
        }


def rewrite(path: Path, change: Callable[[str, bytes], bytes | None], *, extra: Any = ()) -> None:
    """Rewrite the archive in place: ``change`` returns each member's new bytes (None drops
    it); ``extra`` are (TarInfo, bytes) members added at the end."""
    old = members(path)
    with tarfile.open(path) as tar:
        infos = {m.name: m for m in tar.getmembers()}
    with tarfile.open(path, "w") as tar:
        for name, data in old.items():
            new = change(name, data)
            if new is None:
                continue
            info = infos[name]
            info.size = len(new)
            tar.addfile(info, io.BytesIO(new) if info.isfile() else None)
        for info, data in extra:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)


def versions(engine: Engine) -> list[tuple[str, str, str, bool]]:
    with session_scope(engine) as session:
        return [
            (v.version, v.image, v.digest, v.yanked)
            for v in store.list_versions(session, plugin_id=PID)
        ]


# -- export ---------------------------------------------------------------------------------------


def test_export_writes_an_oci_image_layout_with_a_signed_index(
    archive: Path, source: Engine, registry: FakeRegistry
) -> None:
    files = members(archive)
    assert json.loads(files["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    # Every blob is stored under its own digest, byte for byte as the registry holds it.
    blobs = {n: d for n, d in files.items() if n.startswith("blobs/sha256/")}
    for name, data in blobs.items():
        assert "sha256:" + name.rsplit("/", 1)[1] == sha(data)
        assert registry.blobs.get(sha(data), data) == data
    layout = json.loads(files["index.json"])
    refs = {m["annotations"]["org.opencontainers.image.ref.name"]: m for m in layout["manifests"]}
    assert set(refs) == {f"{PID}:1.0.0", f"{PID}:1.1.0"}
    index = json.loads(files[INDEX_NAME])
    [plugin] = index["plugins"]
    assert plugin["deprecated"] is True and plugin["deprecation_reason"] == "use the new one"
    assert index["publishers"] == [{"id": "acme", "name": "Acme", "namespaces": ["com.acme."]}]
    by_version = {v["version"]: v for v in plugin["versions"]}
    assert by_version["1.0.0"]["yanked"] is True
    assert by_version["1.0.0"]["yanked_reason"] == "wrong units"
    assert by_version["1.1.0"]["readme"] == "# Weather 1.1.0"
    assert by_version["1.1.0"]["scan_report"] == {"summary": {"high": 0}, "blocking": []}
    for entry in by_version.values():
        assert refs[f"{PID}:{entry['version']}"]["digest"] == entry["digest"]
        assert sha(blobs["blobs/sha256/" + entry["digest"][7:]]) == entry["digest"]
        assert entry["source_image"].endswith("@" + entry["digest"])
    signature = json.loads(files[SIGNATURE_NAME])
    assert signature["document"]["index_sha256"] == hashlib.sha256(files[INDEX_NAME]).hexdigest()
    assert not list(archive.parent.glob(".*partial"))


def test_export_can_leave_yanked_versions_out_and_select_plugins(
    tmp_path: Path, source: Engine, registry: FakeRegistry, key: Ed25519PrivateKey
) -> None:
    path = tmp_path / "unyanked.tar"
    result = export_catalog(
        source, path, key=key, registry=registry.client(), plugin_ids=[PID], include_yanked=False
    )
    assert result.versions == 1
    index = json.loads(members(path)[INDEX_NAME])
    assert [v["version"] for v in index["plugins"][0]["versions"]] == ["1.1.0"]
    with pytest.raises(NotFound):
        export_catalog(source, path, key=key, registry=registry.client(), plugin_ids=["com.x.y"])


def test_an_export_whose_registry_sends_a_bad_blob_leaves_no_file(
    tmp_path: Path, source: Engine, registry: FakeRegistry, key: Ed25519PrivateKey
) -> None:
    layers = [d for d, data in registry.blobs.items() if data[:2] == b"\x1f\x8b"]
    registry.corrupt.add(layers[0])
    path = tmp_path / "bad.tar"
    with pytest.raises(RuntimeFailure, match="does not match its digest"):
        export_catalog(source, path, key=key, registry=registry.client())
    assert not path.exists() and not list(tmp_path.glob(".*partial"))


def test_a_multi_arch_image_is_copied_whole(
    tmp_path: Path,
    target: Engine,
    registry: FakeRegistry,
    key: Ed25519PrivateKey,
) -> None:
    src = new_engine(tmp_path / "multi.db")
    with session_scope(src) as session:
        store.add_publisher(session, publisher_id="acme", name="Acme")
    _, amd = push_image(registry, "plugins/multi", plugin_manifest("2.0.0"))
    _, arm = push_image(registry, "plugins/multi", plugin_manifest("2.0.0", description="arm"))
    children = []
    for digest, arch in ((amd, "amd64"), (arm, "arm64")):
        body = registry.manifests[(SOURCE, "plugins/multi", digest)][1]
        children.append(
            {
                "mediaType": DOCKER_MANIFEST,
                "digest": digest,
                "size": len(body),
                "platform": {"os": "linux", "architecture": arch},
            }
        )
    index_body = json.dumps(
        {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": children}
    ).encode()
    top = registry.add_manifest(SOURCE, "plugins/multi", index_body, OCI_INDEX)
    publish(src, f"{SOURCE}/plugins/multi@{top}", "2.0.0")
    path = tmp_path / "multi.tar"
    export_catalog(src, path, key=key, registry=registry.client())
    names = set(members(path))
    for digest in (top, amd, arm):
        assert f"blobs/sha256/{digest[7:]}" in names

    trust(target, key)
    report = do_import(target, path, registry)
    assert [i["image"] for i in report.imported] == [f"{MIRROR}/site/plugins/multi@{top}"]
    pushed = [what for host, _, what in registry.pushed if host == MIRROR]
    # Children before the index that names them; the index last.
    assert pushed[-1] == f"manifest {top}"
    assert {f"manifest {amd}", f"manifest {arm}"} <= set(pushed[:-1])
    assert registry.manifests[(MIRROR, "site/plugins/multi", top)] == (OCI_INDEX, index_body)
    src.dispose()


# -- import ---------------------------------------------------------------------------------------


def test_import_publishes_the_versions_with_their_images_under_the_target(
    archive: Path, target: Engine, registry: FakeRegistry, key: Ed25519PrivateKey
) -> None:
    trust(target, key)
    report = do_import(target, archive, registry, actor="admin token")
    assert [(i["version"], i["yanked"]) for i in report.imported] == [
        ("1.0.0", True),
        ("1.1.0", False),
    ]
    assert report.skipped == [] and report.conflicts == []
    rows = versions(target)
    source_digests = {
        d for (h, r, d) in registry.manifests if h == SOURCE and r == "plugins/weather"
    }
    assert {digest for _, _, digest, _ in rows} == source_digests
    for version, image, digest, yanked in rows:
        assert image == f"{MIRROR}/site/plugins/weather@{digest}"
        assert yanked is (version == "1.0.0")
        # The image is in the mirror, byte for byte.
        assert (
            registry.manifests[(MIRROR, "site/plugins/weather", digest)][1]
            == (registry.manifests[(SOURCE, "plugins/weather", digest)][1])
        )
    with session_scope(target) as session:
        plugin = store.get_plugin(session, plugin_id=PID)
        assert plugin is not None and plugin.deprecated and plugin.publisher == "acme"
        assert plugin.latest_version == "1.1.0"
        assert store.list_namespaces(session, publisher_id="acme") == ["com.acme."]
        row = store.get_version(session, plugin_id=PID, version="1.0.0")
        assert row is not None and row.yanked_reason == "wrong units"
        assert row.readme == "# Weather 1.0.0" and row.published_by == "acme-ci (tok_1)"
        assert row.links == {"homepage": "https://acme.example/weather"}
    assert report.blobs_pushed == 4 and report.blobs_present == 0


def test_importing_twice_changes_nothing_and_a_new_yank_reaches_the_mirror(
    tmp_path: Path,
    archive: Path,
    source: Engine,
    target: Engine,
    registry: FakeRegistry,
    key: Ed25519PrivateKey,
) -> None:
    trust(target, key)
    do_import(target, archive, registry)
    before, pushes = versions(target), len(registry.pushed)
    again = do_import(target, archive, registry)
    assert again.imported == [] and again.conflicts == [] and again.updated == []
    assert [s["version"] for s in again.skipped] == ["1.0.0", "1.1.0"]
    assert versions(target) == before and len(registry.pushed) == pushes

    with session_scope(source) as session:
        store.yank_version(session, plugin_id=PID, version="1.1.0", reason="leaks")
    later = tmp_path / "later.tar"
    export_catalog(source, later, key=key, registry=registry.client())
    report = do_import(target, later, registry)
    assert [(u["version"], u["change"]) for u in report.updated] == [("1.1.0", "yanked")]
    assert [v[3] for v in versions(target)] == [True, True]


def test_a_version_present_with_another_digest_is_a_conflict_of_its_own(
    archive: Path, target: Engine, registry: FakeRegistry, key: Ed25519PrivateKey
) -> None:
    trust(target, key)
    with session_scope(target) as session:
        store.add_publisher(session, publisher_id="acme", name="Acme")
    other, other_digest = push_image(
        registry, "plugins/weather", plugin_manifest("1.0.0", description="another build")
    )
    publish(target, other, "1.0.0")
    report = do_import(target, archive, registry)
    assert [(c["version"], c["code"]) for c in report.conflicts] == [("1.0.0", "version_immutable")]
    assert report.conflicts[0]["local_digest"] == other_digest
    assert [i["version"] for i in report.imported] == ["1.1.0"]
    assert versions(target)[1][1] == other  # 1.0.0 untouched


def test_another_publishers_namespace_is_reported_not_taken(
    archive: Path, target: Engine, registry: FakeRegistry, key: Ed25519PrivateKey
) -> None:
    trust(target, key)
    with session_scope(target) as session:
        store.add_publisher(session, publisher_id="rival", name="Rival")
        store.claim_namespace(session, publisher_id="rival", prefix="com.acme.")
    report = do_import(target, archive, registry)
    assert report.imported == []
    codes = sorted(c["code"] for c in report.conflicts)
    assert codes == ["namespace_taken", "namespace_taken", "namespace_taken"]
    assert versions(target) == []
    assert not [p for p in registry.pushed if p[0] == MIRROR]  # nothing pushed for them


def test_a_registry_that_wants_a_token_gets_one_and_one_that_refuses_is_reported(
    archive: Path, target: Engine, registry: FakeRegistry, key: Ed25519PrivateKey
) -> None:
    trust(target, key)
    registry.read_only.add(MIRROR)
    with pytest.raises(RuntimeFailure) as refused:
        do_import(target, archive, registry)
    assert refused.value.code == "registry_refused" and "HTTP 403" in refused.value.message
    assert versions(target) == []  # no row names an image that is not there

    registry.read_only.clear()
    registry.guarded[MIRROR] = "let-me-in"
    report = do_import(target, archive, registry)
    assert len(report.imported) == 2 and report.blobs_pushed == 4


def test_a_plugin_signature_this_site_does_not_trust_is_shown_unverified(
    tmp_path: Path, target: Engine, registry: FakeRegistry, key: Ed25519PrivateKey
) -> None:
    src = new_engine(tmp_path / "signed.db")
    with session_scope(src) as session:
        store.add_publisher(session, publisher_id="acme", name="Acme")
    image, _ = push_image(registry, "plugins/weather", plugin_manifest("3.0.0"))
    envelope = {"key_id": "0123456789abcdef", "document": {}, "signature": "x"}
    publish(src, image, "3.0.0", signature=envelope, signature_status="verified")
    path = tmp_path / "signed.tar"
    export_catalog(src, path, key=key, registry=registry.client())
    trust(target, key)
    do_import(target, path, registry)
    with session_scope(target) as session:
        row = store.get_version(session, plugin_id=PID, version="3.0.0")
        assert row is not None
        assert row.signature == envelope and row.signature_status == "unverified"
    src.dispose()


# -- signatures -----------------------------------------------------------------------------------


def refused_nothing_written(
    engine: Engine, path: Path, registry: FakeRegistry, error: type[SummitError], code: str
) -> SummitError:
    with pytest.raises(error) as caught:
        do_import(engine, path, registry)
    assert caught.value.code == code, caught.value.message
    assert 400 <= caught.value.status_code < 500
    assert versions(engine) == []
    assert not [p for p in registry.pushed if p[0] == MIRROR]
    return caught.value


def test_an_unsigned_archive_is_refused(
    archive: Path, target: Engine, registry: FakeRegistry, key: Ed25519PrivateKey
) -> None:
    trust(target, key)
    rewrite(archive, lambda name, data: None if name == SIGNATURE_NAME else data)
    refused_nothing_written(target, archive, registry, SignatureRefused, "catalog_unsigned")


def test_an_archive_signed_by_an_untrusted_or_revoked_key_is_refused(
    archive: Path, target: Engine, registry: FakeRegistry, key: Ed25519PrivateKey
) -> None:
    trust(target, Ed25519PrivateKey.generate())  # some other key
    err = refused_nothing_written(target, archive, registry, SignatureRefused, "untrusted_key")
    assert "does not trust" in err.message
    store_ = trust(target, key)
    store_.revoke(json.loads(members(archive)[SIGNATURE_NAME])["document"]["key_id"])
    err = refused_nothing_written(target, archive, registry, SignatureRefused, "untrusted_key")
    assert "revoked" in err.message


def test_a_changed_index_is_refused(
    archive: Path, target: Engine, registry: FakeRegistry, key: Ed25519PrivateKey
) -> None:
    trust(target, key)

    def unyank(name: str, data: bytes) -> bytes:
        return data.replace(b'"yanked": true', b'"yanked":false') if name == INDEX_NAME else data

    rewrite(archive, unyank)
    err = refused_nothing_written(target, archive, registry, SignatureRefused, "signature_invalid")
    assert "tampered" in err.message


def test_a_changed_signature_document_is_refused(
    archive: Path, target: Engine, registry: FakeRegistry, key: Ed25519PrivateKey
) -> None:
    trust(target, key)

    def other_index(name: str, data: bytes) -> bytes:
        if name != SIGNATURE_NAME:
            return data
        envelope = json.loads(data)
        envelope["document"]["index_sha256"] = "0" * 64
        return json.dumps(envelope).encode()

    rewrite(archive, other_index)
    refused_nothing_written(target, archive, registry, SignatureRefused, "signature_invalid")


def test_a_blob_with_one_byte_changed_is_refused_before_anything_is_pushed(
    archive: Path, target: Engine, registry: FakeRegistry, key: Ed25519PrivateKey
) -> None:
    trust(target, key)
    index = json.loads(members(archive)[INDEX_NAME])
    newest = index["plugins"][0]["versions"][-1]["digest"]
    body = json.loads(members(archive)["blobs/sha256/" + newest[7:]])
    layer_name = "blobs/sha256/" + body["layers"][0]["digest"][7:]

    def flip(name: str, data: bytes) -> bytes:
        return bytes([data[0], data[1] ^ 1]) + data[2:] if name == layer_name else data

    rewrite(archive, flip)
    refused_nothing_written(target, archive, registry, ArchiveRefused, "archive_tampered")


def test_a_missing_blob_is_refused(
    archive: Path, target: Engine, registry: FakeRegistry, key: Ed25519PrivateKey
) -> None:
    trust(target, key)
    gone: list[str] = []

    def drop_a_layer(name: str, data: bytes) -> bytes | None:
        if name.startswith("blobs/sha256/") and data[:2] == b"\x1f\x8b" and not gone:
            gone.append(name)
            return None
        return data

    rewrite(archive, drop_a_layer)
    refused_nothing_written(target, archive, registry, ArchiveRefused, "archive_incomplete")


# -- the archive's shape --------------------------------------------------------------------------


def entry(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    return info


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        ((entry("../escape"), b"x"), "outside its layout"),
        ((entry("/etc/cron.d/x"), b"x"), "outside its layout"),
        ((entry("blobs/sha256/../../x"), b"x"), "outside its layout"),
        ((entry("notes.txt"), b"x"), "not part of a catalog archive"),
        ((entry("blobs/sha256/abc"), b"x"), "not part of a catalog archive"),
        ((entry("blobs/other", tarfile.DIRTYPE), None), "directory outside the layout"),
        ((entry("blobs/sha256/" + "0" * 64, tarfile.SYMTYPE, "/etc/passwd"), None), "a link"),
        ((entry("blobs/sha256/" + "1" * 64, tarfile.LNKTYPE, "oci-layout"), None), "a link"),
        ((entry("blobs/sha256/" + "2" * 64, tarfile.FIFOTYPE), None), "not a regular file"),
        ((entry("blobs/sha256/" + "3" * 64, tarfile.CHRTYPE), None), "not a regular file"),
        ((entry("oci-layout"), b"{}"), "twice"),
    ],
)
def test_entries_outside_the_layout_are_refused(
    archive: Path,
    target: Engine,
    registry: FakeRegistry,
    key: Ed25519PrivateKey,
    extra: tuple[tarfile.TarInfo, bytes | None],
    words: str,
) -> None:
    trust(target, key)
    info, data = extra
    if data is not None:
        info.size = len(data)
    rewrite(archive, lambda name, content: content, extra=[(info, data)])
    err = refused_nothing_written(target, archive, registry, ArchiveRefused, "invalid_archive")
    assert words in err.message


def test_size_caps_hold(
    archive: Path, target: Engine, registry: FakeRegistry, key: Ed25519PrivateKey
) -> None:
    trust(target, key)
    size = archive.stat().st_size
    with pytest.raises(TooLarge) as whole:
        do_import(target, archive, registry, max_bytes=size - 1)
    assert whole.value.code == "archive_too_large" and whole.value.status_code == 413
    index_size = len(members(archive)[INDEX_NAME])
    with pytest.raises(TooLarge, match=r"summit-catalog\.json"):
        do_import(target, archive, registry, max_index_bytes=index_size - 1)
    assert versions(target) == []
    do_import(target, archive, registry, max_bytes=size, max_index_bytes=index_size)
    assert len(versions(target)) == 2


def test_a_compressed_archive_or_another_file_is_refused_clearly(
    archive: Path, tmp_path: Path, target: Engine, registry: FakeRegistry
) -> None:
    packed = tmp_path / "catalog.tar.gz"
    packed.write_bytes(gzip.compress(archive.read_bytes()))
    with pytest.raises(ArchiveRefused) as compressed:
        do_import(target, packed, registry)
    assert compressed.value.code == "archive_compressed"
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"this is not a tar file at all" * 40)
    with pytest.raises(ArchiveRefused):
        do_import(target, junk, registry)


def test_the_target_must_name_a_registry(archive: Path, target: Engine, registry: Any) -> None:
    for bad in ("mirror", "Mirror.test:5000/UPPER", ""):
        with pytest.raises(SummitError) as caught:
            do_import(target, archive, registry, target=bad)
        assert caught.value.status_code == 422


# -- the signing key and the CLI ------------------------------------------------------------------


def test_the_signing_key_must_be_an_unencrypted_ed25519_pem(key: Ed25519PrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    assert load_signing_key(pem.decode()).public_key() == key.public_key()
    secret = b"-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n"
    with pytest.raises(SummitError) as caught:
        load_signing_key(secret)
    assert caught.value.code == "invalid_signing_key" and "not a key" not in caught.value.message
    with pytest.raises(SummitError):
        load_signing_key(public_pem(key))


def cli_run(*args: str) -> Any:
    return CliRunner().invoke(cli.app, ["--url", "http://summit.test", *args])


def test_cli_bad_input_is_one_line_and_exit_2(tmp_path: Path) -> None:
    not_a_key = tmp_path / "key.pem"
    not_a_key.write_text("hello\n")
    for args in (
        ["catalog", "export", str(tmp_path / "out.tar"), "--key", str(not_a_key)],
        ["catalog", "export", str(tmp_path / "out.tar"), "--key", str(tmp_path / "none.pem")],
        ["catalog", "import", str(tmp_path / "missing.tar"), "--registry", "r.test/x"],
    ):
        result = cli_run(*args)
        assert result.exit_code == 2, result.output
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: bad_input: "), result.stderr


def test_cli_streams_the_export_to_the_file_and_uploads_the_import(
    tmp_path: Path, archive: Path, monkeypatch: pytest.MonkeyPatch, key: Ed25519PrivateKey
) -> None:
    seen: list[httpx.Request] = []
    report = {
        "key_id": "k1",
        "imported": [{"plugin_id": PID, "version": "1.1.0", "image": "m/x@sha256:1"}],
        "skipped": [],
        "conflicts": [{"plugin_id": PID, "version": "1.0.0", "message": "another image"}],
        "updated": [],
        "blobs": {"pushed": 2, "bytes_pushed": 10},
    }

    def handle(request: httpx.Request) -> httpx.Response:
        request.read()
        seen.append(request)
        if request.url.path == "/v1/catalog/export":
            return httpx.Response(
                200,
                content=archive.read_bytes(),
                headers={"X-Summit-Versions": "2", "X-Summit-Key-Id": "k1"},
            )
        return httpx.Response(200, json=report)

    def client(url: str, token: str) -> httpx.Client:
        return httpx.Client(transport=httpx.MockTransport(handle), base_url=url)

    monkeypatch.setattr(connection, "_client", client)
    key_path = tmp_path / "signing.key"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    out = tmp_path / "copy.tar"
    result = cli_run("catalog", "export", str(out), "--key", str(key_path), "--plugin", PID)
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == archive.read_bytes()
    body = json.loads(seen[0].content)
    assert body["ids"] == [PID] and body["include_yanked"] is True
    assert body["key"].startswith("-----BEGIN PRIVATE KEY-----")
    assert "exported 2 versions" in result.stdout

    result = cli_run("catalog", "import", str(out), "--registry", "mirror.test/site")
    assert result.exit_code == 0, result.output
    upload = seen[1]
    assert upload.url.params["registry"] == "mirror.test/site"
    assert upload.headers["content-type"] == "application/x-tar"
    assert upload.content == archive.read_bytes()
    assert "1 imported, 0 skipped (already here), 1 conflicts" in result.stdout
    assert "conflict: com.acme.weather 1.0.0: another image" in result.stderr


def test_cli_reports_a_refused_import_as_one_line(
    tmp_path: Path, archive: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        body = {"error": {"code": "untrusted_key", "message": "key k1 is not trusted"}}
        return httpx.Response(422, json=body)

    monkeypatch.setattr(
        connection,
        "_client",
        lambda url, token: httpx.Client(transport=httpx.MockTransport(handle), base_url=url),
    )
    result = cli_run("catalog", "import", str(archive), "--registry", "mirror.test/site")
    assert result.exit_code == 2
    assert result.stderr.strip() == "error: untrusted_key: key k1 is not trusted"
