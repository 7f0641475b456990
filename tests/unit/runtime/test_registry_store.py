"""``RegistryImageStore`` against the real OCI registry on 127.0.0.1:5000 (an image built with
Docker from the plugin base image, pushed, then read back without Docker), and its token
handshake against a scripted registry."""

from __future__ import annotations

import hashlib
import json
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from orchestrator.domain.errors import Conflict, InvalidInput, RuntimeFailure
from orchestrator.runtime.base import LABEL_MANIFEST
from orchestrator.runtime.registry import DOCKER_HUB, RegistryImageStore, parse_reference

REGISTRY = "127.0.0.1:5000"


@pytest.fixture(scope="module")
def pushed(base_image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A plugin-labelled image in the registry, by tag; no local copy is kept."""
    repo = f"{REGISTRY}/summit-tests/registry-store-{secrets.token_hex(3)}"
    ref = f"{repo}:v1"
    context = tmp_path_factory.mktemp("image")
    (context / "Dockerfile").write_text(f"FROM {base_image}\nLABEL io.summit.test=registry\n")
    manifest = json.dumps({"id": "com.example.registry", "version": "1.0.0"})
    subprocess.run(
        ["docker", "build", "-q", "--label", f"{LABEL_MANIFEST}={manifest}", "-t", ref, "."],
        cwd=context,
        check=True,
        capture_output=True,
    )
    try:
        subprocess.run(["docker", "push", "-q", ref], check=True, capture_output=True)
    finally:
        subprocess.run(["docker", "rmi", ref], capture_output=True)
    yield ref


@pytest.fixture
def store() -> Iterator[RegistryImageStore]:
    images = RegistryImageStore(insecure_registries=[REGISTRY])
    yield images
    images.close()


def _registry_manifest(ref: str) -> tuple[bytes, str]:
    name, tag = ref.rsplit(":", 1)
    repo = name.split("/", 1)[1]
    response = httpx.get(
        f"http://{REGISTRY}/v2/{repo}/manifests/{tag}",
        headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
    )
    response.raise_for_status()
    return response.content, response.headers["content-type"]


@pytest.mark.registry
@pytest.mark.docker
def test_image_reads_labels_and_pins_the_digest(store: RegistryImageStore, pushed: str) -> None:
    info = store.image(pushed)
    assert info is not None
    body, _ = _registry_manifest(pushed)
    digest = "sha256:" + hashlib.sha256(body).hexdigest()
    name = pushed.rsplit(":", 1)[0]
    assert info.id == f"{name}@{digest}"
    assert info.repo_digests == (f"{name}@{digest}",)
    assert info.tags == (pushed,)
    assert json.loads(info.labels[LABEL_MANIFEST])["id"] == "com.example.registry"
    assert info.labels["io.summit.test"] == "registry"
    # The pinned reference reads back as the same image (what ``ensure`` does before a start).
    again = store.image(info.id)
    assert again is not None and again.id == info.id and again.labels == info.labels
    assert store.pull_image(pushed).id == info.id


@pytest.mark.registry
@pytest.mark.docker
def test_an_index_resolves_to_this_platform(store: RegistryImageStore, pushed: str) -> None:
    body, media_type = _registry_manifest(pushed)
    child = "sha256:" + hashlib.sha256(body).hexdigest()
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                {  # the right architecture for arm64, but the wrong os
                    "mediaType": media_type,
                    "digest": child,
                    "size": len(body),
                    "platform": {"os": "windows", "architecture": "arm64"},
                },
                {
                    "mediaType": media_type,
                    "digest": child,
                    "size": len(body),
                    "platform": {"os": "linux", "architecture": "amd64"},
                },
            ],
        }
    ).encode()
    name = pushed.rsplit(":", 1)[0]
    repo = name.split("/", 1)[1]
    put = httpx.put(
        f"http://{REGISTRY}/v2/{repo}/manifests/multi",
        content=index,
        headers={"Content-Type": "application/vnd.oci.image.index.v1+json"},
    )
    assert put.status_code == 201, put.text
    amd64 = RegistryImageStore(insecure_registries=[REGISTRY], platform=("linux", "amd64"))
    arm64 = RegistryImageStore(insecure_registries=[REGISTRY], platform=("linux", "arm64"))
    try:
        info = amd64.image(f"{name}:multi")
        assert info is not None
        # Pinned to the index (the kubelet picks the platform), labels from the child.
        assert info.id == f"{name}@sha256:{hashlib.sha256(index).hexdigest()}"
        assert info.labels["io.summit.test"] == "registry"
        with pytest.raises(InvalidInput) as refused:
            arm64.image(f"{name}:multi")
        assert refused.value.code == "image_not_found"
    finally:
        amd64.close()
        arm64.close()


@pytest.mark.registry
def test_a_missing_image_is_none_and_refused_on_pull(store: RegistryImageStore) -> None:
    ref = f"{REGISTRY}/summit-tests/never-pushed-{secrets.token_hex(3)}:v1"
    assert store.image(ref) is None
    with pytest.raises(InvalidInput) as refused:
        store.pull_image(ref)
    assert refused.value.code == "image_not_found"


def test_an_unreachable_registry_is_image_not_found_on_pull() -> None:
    images = RegistryImageStore(insecure_registries=["127.0.0.1:9"], timeout_s=2)
    with pytest.raises(InvalidInput) as refused:
        images.pull_image("127.0.0.1:9/x/y:1")
    assert refused.value.code == "image_not_found"
    assert "cannot be reached" in refused.value.message


def test_sources_are_refused_naming_publish(tmp_path: Path) -> None:
    images = RegistryImageStore()
    for attempt in (
        lambda: images.build_image(tmp_path, tag="t", labels={}, progress=print),
        lambda: images.push_image("r/x:1"),
    ):
        with pytest.raises(Conflict) as refused:
            attempt()
        assert refused.value.code == "source_install_unsupported"
        assert refused.value.status_code == 409
        assert "summit-plugin publish" in refused.value.message
    images.remove_image("r/x:1")  # nothing to do, no error


def test_references() -> None:
    ref = parse_reference("nginx")
    assert ref is not None
    assert (ref.registry, ref.repository, ref.reference) == (DOCKER_HUB, "library/nginx", "latest")
    ref = parse_reference("localhost:5000/a/b:1.2@sha256:" + "a" * 64)
    assert ref is not None
    assert (ref.registry, ref.repository, ref.reference, ref.tag) == (
        "localhost:5000",
        "a/b",
        "sha256:" + "a" * 64,
        "1.2",
    )
    assert parse_reference("sha256:" + "a" * 64) is None
    assert parse_reference("Bad/Name") is None


def _scripted_registry(manifest: bytes, config: bytes) -> httpx.MockTransport:
    """A registry that wants an anonymous bearer token from its realm, as Docker Hub does."""
    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.host == "auth.example.com":
            assert request.url.params["scope"] == "repository:team/app:pull"
            assert request.url.params["service"] == "registry.example.com"
            return httpx.Response(200, json={"token": "anon-token"})
        if request.headers.get("authorization") != "Bearer anon-token":
            return httpx.Response(
                401,
                headers={
                    "WWW-Authenticate": 'Bearer realm="https://auth.example.com/token",'
                    'service="registry.example.com",scope="repository:team/app:pull"'
                },
            )
        if request.url.path == "/v2/team/app/manifests/1.0":
            return httpx.Response(
                200,
                content=manifest,
                headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
            )
        if request.url.path == f"/v2/team/app/blobs/{config_digest}":
            return httpx.Response(200, content=config)
        return httpx.Response(404)

    return httpx.MockTransport(handle)


def _image_documents(config: bytes) -> bytes:
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": "sha256:" + hashlib.sha256(config).hexdigest(),
                "size": len(config),
            },
            "layers": [],
        }
    ).encode()


def test_a_bearer_challenge_is_answered_with_an_anonymous_token() -> None:
    config = json.dumps({"config": {"Labels": {"a": "b"}}}).encode()
    manifest = _image_documents(config)
    images = RegistryImageStore(transport=_scripted_registry(manifest, config))
    info = images.image("registry.example.com/team/app:1.0")
    assert info is not None and info.labels == {"a": "b"}
    assert info.id.endswith(hashlib.sha256(manifest).hexdigest())


def test_a_blob_that_does_not_match_its_digest_is_refused() -> None:
    config = json.dumps({"config": {"Labels": {"a": "b"}}}).encode()
    manifest = _image_documents(config)
    tampered = config.replace(b'"b"', b'"c"')
    transport = _scripted_registry(manifest, config)

    def handle(request: httpx.Request) -> httpx.Response:
        response = transport.handle_request(request)
        if "/blobs/" in request.url.path:
            return httpx.Response(200, content=tampered)
        return response

    images = RegistryImageStore(transport=httpx.MockTransport(handle))
    with pytest.raises(RuntimeFailure, match="does not match its digest"):
        images.image("registry.example.com/team/app:1.0")
