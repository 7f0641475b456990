"""A catalog carried to another site as one signed file, on two real orchestrators, Docker and
the OCI registry on 127.0.0.1:5000: orchestrator A publishes two versions of a plugin (one
yanked) and exports them signed with an operator's key; orchestrator B, which trusts that key,
imports them under another repository prefix of the same registry, shows the same versions,
digests and yank state, and installs one by its new image reference, which runs and answers.
Archives with a byte changed (in a layer, in the index) or signed by a key B does not trust
are refused, and nothing is written. Every image, container and registry manifest made here
is removed."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from summit_sdk import signing

from tests.fixtures.orchestrator import TOKEN, OrchestratorProcess

from .conftest import sqlite_orchestrator
from .test_catalog_api import client_for, push_plugin_image

pytestmark = [pytest.mark.docker, pytest.mark.registry, pytest.mark.slow]

REGISTRY = "127.0.0.1:5000"
RUN = secrets.token_hex(3)
PID = f"com.acme.mirrored-{RUN}"
MIRROR = f"{REGISTRY}/mirror-{RUN}"
ACCEPT = ", ".join(
    [
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
    ]
)


@pytest.fixture(scope="module")
def registry_manifests() -> Iterator[list[tuple[str, str]]]:
    """(repository, digest) pairs to delete from the registry when the module ends."""
    made: list[tuple[str, str]] = []
    yield made
    with httpx.Client(base_url=f"http://{REGISTRY}", timeout=10) as http:
        for repo, digest in made:
            http.delete(f"/v2/{repo}/manifests/{digest}")


@pytest.fixture(scope="module")
def local_images(docker_client: Any) -> Iterator[list[str]]:
    """Image references to remove from Docker when the module ends (a pushed image keeps its
    registry digest as a name after its tag is removed)."""
    refs: list[str] = []
    yield refs
    for ref in refs:
        with contextlib.suppress(Exception):
            docker_client.images.remove(ref, force=True)


@pytest.fixture(scope="module")
def site_a(
    base_image: str, docker_client: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OrchestratorProcess]:
    with sqlite_orchestrator(tmp_path_factory, docker_client, "archive-a") as o:
        yield o


@pytest.fixture(scope="module")
def site_b(
    base_image: str, docker_client: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OrchestratorProcess]:
    with sqlite_orchestrator(tmp_path_factory, docker_client, "archive-b") as o:
        yield o


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("keys")
    signing.generate_keypair(folder / "exporter")
    signing.generate_keypair(folder / "stranger")
    return {name: folder / name / "summit-signing.key" for name in ("exporter", "stranger")}


def public_pem(private_key: Path) -> str:
    private = signing.load_private_key(private_key)
    return (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


@pytest.fixture(scope="module")
def published(
    site_a: OrchestratorProcess,
    docker_client: Any,
    tmp_path_factory: pytest.TempPathFactory,
    registry_manifests: list[tuple[str, str]],
    local_images: list[str],
) -> dict[str, str]:
    """Two versions of PID in A's catalog, published by acme; 1.0.0 yanked. version -> image."""
    token = site_a.client.post("/v1/tokens", json={"name": "acme-ci", "role": "publisher"})
    r = site_a.client.post(
        "/v1/catalog/publishers",
        json={
            "id": "acme",
            "name": "Acme",
            "token_id": token.json()["id"],
            "namespaces": ["com.acme."],
        },
    )
    assert r.status_code == 201, r.text
    images = {}
    with client_for(site_a, token.json()["token"]) as publisher:
        for version in ("1.0.0", "1.1.0"):
            image = push_plugin_image(
                site_a, docker_client, tmp_path_factory.mktemp("img"), PID, version=version
            )
            name, digest = image.split("@")
            registry_manifests.append((name.split("/", 1)[1], digest))
            local_images.append(image)
            r = publisher.post(
                f"/v1/catalog/plugins/{PID}/versions",
                json={
                    "image": image,
                    "readme": f"# Mirrored {version}",
                    "categories": ["data"],
                    "keywords": ["mirror"],
                    "changelog": f"release {version}",
                },
            )
            assert r.status_code == 201, r.text
            images[version] = image
        r = publisher.post(
            f"/v1/catalog/plugins/{PID}/versions/1.0.0/yank", json={"reason": "wrong units"}
        )
        assert r.status_code == 200, r.text
    return images


def export(site: OrchestratorProcess, key: Path, dest: Path) -> httpx.Response:
    with site.client.stream(
        "POST",
        "/v1/catalog/export",
        json={"key": key.read_text(), "ids": [PID]},
        timeout=600,
    ) as answer:
        if answer.status_code == 200:
            with dest.open("wb") as out:
                for chunk in answer.iter_bytes():
                    out.write(chunk)
        else:
            answer.read()
        return answer


def import_file(site: OrchestratorProcess, path: Path, prefix: str = MIRROR) -> httpx.Response:
    with path.open("rb") as body:
        return site.client.post(
            "/v1/catalog/import",
            params={"registry": prefix},
            content=body,
            headers={"Content-Type": "application/x-tar"},
            timeout=600,
        )


def changed_copy(path: Path, dest: Path, member: str, offset: int = 0) -> Path:
    """A copy of ``path`` with one byte of ``member``'s content flipped."""
    data = bytearray(path.read_bytes())
    with tarfile.open(path) as tar:
        info = tar.getmember(member)
    data[info.offset_data + offset] ^= 0x01
    dest.write_bytes(bytes(data))
    return dest


def read_member(path: Path, name: str) -> bytes:
    with tarfile.open(path) as tar:
        handle = tar.extractfile(name)
        assert handle is not None
        return handle.read()


def summit_cli(*args: str, site: OrchestratorProcess) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUMMIT_")}
    env.update(SUMMIT_URL=site.url, SUMMIT_ADMIN_TOKEN=TOKEN)
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", *args],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )


def test_export_and_import_need_the_admin_role(site_a: OrchestratorProcess) -> None:
    operator = site_a.client.post("/v1/tokens", json={"name": "ops", "role": "operator"}).json()
    with client_for(site_a, operator["token"]) as client:
        r = client.post("/v1/catalog/export", json={"key": "x"})
        assert r.status_code == 403, r.text
        r = client.post(
            "/v1/catalog/import",
            params={"registry": MIRROR},
            content=b"",
            headers={"Content-Type": "application/x-tar"},
        )
        assert r.status_code == 403, r.text


def test_a_catalog_is_carried_to_another_site_and_installed_there(
    site_a: OrchestratorProcess,
    site_b: OrchestratorProcess,
    published: dict[str, str],
    keys: dict[str, Path],
    tmp_path: Path,
    registry_manifests: list[tuple[str, str]],
    local_images: list[str],
) -> None:
    archive = tmp_path / "catalog.tar"
    started = time.monotonic()
    answer = export(site_a, keys["exporter"], archive)
    took = time.monotonic() - started
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/x-tar"
    print(f"\nexport of 2 versions: {took:.2f} s, {archive.stat().st_size} bytes")
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
    assert {"oci-layout", "index.json", "summit-catalog.json", "summit-catalog.sig"} <= names
    digests = {v: image.split("@")[1] for v, image in published.items()}
    for digest in digests.values():
        assert f"blobs/sha256/{digest[7:]}" in names  # the manifests, under their own digests

    # B trusts the exporter's key but not the stranger's.
    r = site_b.client.post(
        "/v1/trust/keys", json={"name": "site A", "public_key": public_pem(keys["exporter"])}
    )
    assert r.status_code == 201, r.text

    # Refused, and nothing written: a layer with one byte changed, a changed index, an
    # archive signed by a key B does not trust.
    manifest = json.loads(read_member(archive, f"blobs/sha256/{digests['1.1.0'][7:]}"))
    layer = manifest["layers"][-1]["digest"]
    bad_layer = changed_copy(
        archive, tmp_path / "bad-layer.tar", f"blobs/sha256/{layer[7:]}", offset=100
    )
    r = import_file(site_b, bad_layer)
    assert r.status_code == 400 and r.json()["error"]["code"] == "archive_tampered", r.text
    index = read_member(archive, "summit-catalog.json")
    at = index.index(b'"yanked": true') + len(b'"yanked": ')
    bad_index = changed_copy(archive, tmp_path / "bad-index.tar", "summit-catalog.json", at)
    r = import_file(site_b, bad_index)
    assert r.status_code == 422 and r.json()["error"]["code"] == "signature_invalid", r.text
    stranger = tmp_path / "stranger.tar"
    assert export(site_a, keys["stranger"], stranger).status_code == 200
    r = import_file(site_b, stranger)
    assert r.status_code == 422 and r.json()["error"]["code"] == "untrusted_key", r.text
    assert site_b.client.get(f"/v1/catalog/plugins/{PID}").status_code == 404
    repo = f"{MIRROR.split('/', 1)[1]}/summit-tests/{PID}"
    with httpx.Client(base_url=f"http://{REGISTRY}", timeout=10) as http:
        for digest in digests.values():
            head = http.head(f"/v2/{repo}/manifests/{digest}", headers={"Accept": ACCEPT})
            assert head.status_code == 404

    # The good archive.
    registry_manifests.extend((repo, digest) for digest in digests.values())
    r = import_file(site_b, archive)
    assert r.status_code == 200, r.text
    report = r.json()
    assert sorted(i["version"] for i in report["imported"]) == ["1.0.0", "1.1.0"]
    assert report["skipped"] == [] and report["conflicts"] == []

    there = site_a.client.get(f"/v1/catalog/plugins/{PID}/versions").json()["items"]
    here = site_b.client.get(f"/v1/catalog/plugins/{PID}/versions").json()["items"]
    assert [(v["version"], v["digest"], v["yanked"], v["yanked_reason"]) for v in here] == [
        (v["version"], v["digest"], v["yanked"], v["yanked_reason"]) for v in there
    ]
    assert [v["yanked"] for v in here] == [False, True]  # 1.1.0, then the yanked 1.0.0
    for v in here:
        assert v["image"] == f"{MIRROR}/summit-tests/{PID}@{digests[v['version']]}"
        assert v["readme"] == f"# Mirrored {v['version']}"
    page = site_b.client.get(f"/v1/catalog/plugins/{PID}").json()
    assert page["publisher"] == {"id": "acme", "name": "Acme"}

    # Importing again (through the CLI, from an export the CLI wrote) changes nothing.
    again = tmp_path / "again.tar"
    done = summit_cli(
        "catalog",
        "export",
        str(again),
        "--key",
        str(keys["exporter"]),
        "--plugin",
        PID,
        site=site_a,
    )
    assert done.returncode == 0, done.stderr
    assert "exported 2 versions" in done.stdout
    done = summit_cli("catalog", "import", str(again), "--registry", MIRROR, site=site_b)
    assert done.returncode == 0, done.stderr
    assert "0 imported, 2 skipped" in done.stdout
    # The same as a multipart upload (curl -F archive=@catalog.tar -F registry=...).
    with again.open("rb") as upload:
        r = site_b.client.post(
            "/v1/catalog/import",
            files={"archive": ("catalog.tar", upload, "application/x-tar")},
            data={"registry": MIRROR},
            timeout=600,
        )
    assert r.status_code == 200, r.text
    assert len(r.json()["skipped"]) == 2 and r.json()["imported"] == []
    bad = summit_cli(
        "catalog", "import", str(tmp_path / "none.tar"), "--registry", MIRROR, site=site_b
    )
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1

    # Installed on B from the mirror, by the image the imported catalog names.
    image = next(v["image"] for v in here if v["version"] == "1.1.0")
    local_images.append(image)
    r = site_b.client.post("/v1/plugins", json={"image": image, "approved_permissions": []})
    assert r.status_code == 201, r.text
    try:
        enabled = site_b.client.post(f"/v1/plugins/{PID}/enable")
        assert enabled.status_code == 200, enabled.text
        assert site_b.wait_state(PID, "ACTIVE")["version"] == "1.1.0"
        out = site_b.client.post(
            "/v1/extension-points/analyzer/execute", json={"input": 7, "plugins": [PID]}
        )
        assert out.status_code == 200, out.text
        assert out.json()["results"][0]["output"]["echo"] == 7
    finally:
        site_b.client.post(f"/v1/plugins/{PID}/disable")
        with contextlib.suppress(httpx.HTTPError):
            site_b.client.delete(f"/v1/plugins/{PID}")


def test_an_import_says_what_it_needs(site_b: OrchestratorProcess) -> None:
    tar = {"Content-Type": "application/x-tar"}
    r = site_b.client.post(
        "/v1/catalog/import", params={"registry": MIRROR}, content=b"not a tar" * 100, headers=tar
    )
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_archive", r.text
    r = site_b.client.post("/v1/catalog/import", content=b"x", headers=tar)
    assert r.status_code == 422 and r.json()["error"]["code"] == "registry_required", r.text
    r = site_b.client.post("/v1/catalog/import", json={"registry": MIRROR})
    assert r.status_code == 422 and r.json()["error"]["code"] == "unsupported_media_type"
    r = site_b.client.post("/v1/catalog/export", json={"key": "-----BEGIN PRIVATE KEY-----"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_signing_key"
    assert "BEGIN" not in r.text  # the key is never echoed
