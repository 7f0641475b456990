"""Install by image reference, pulled from the OCI registry on 127.0.0.1:5000."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from tests.fixtures.orchestrator import OrchestratorProcess
from tests.fixtures.plugins import make_plugin

pytestmark = [pytest.mark.docker, pytest.mark.registry, pytest.mark.slow]

REGISTRY = "127.0.0.1:5000"


def test_install_from_registry_image(
    orch: OrchestratorProcess,
    tmp_path: Path,
    docker_client,  # type: ignore[no-untyped-def]
) -> None:
    pid = "com.summit-tests.from-registry"
    # Build the plugin image the normal way, then publish it and forget the local copy.
    r = orch.install_dir(make_plugin(tmp_path / "p", id=pid))
    assert r.status_code == 201, r.text
    [image] = docker_client.images.list(name=f"summit-plugin/{pid}")
    remote = f"{REGISTRY}/summit-tests/{pid}:{secrets.token_hex(4)}"
    image.tag(remote)
    for line in docker_client.images.push(remote, stream=True, decode=True):
        assert "error" not in line, line
    docker_client.images.remove(remote)
    assert orch.client.delete(f"/v1/plugins/{pid}").status_code == 204
    assert not docker_client.images.list(name=f"summit-plugin/{pid}")

    try:
        r = orch.client.post("/v1/plugins", json={"image": remote, "approved_permissions": []})
        assert r.status_code == 201, r.text
        assert r.json()["state"] == "LOADED"
        assert r.json()["manifest"]["id"] == pid
        enabled = orch.client.post(f"/v1/plugins/{pid}/enable").json()
        assert enabled["state"] == "ACTIVE"
        # It runs by image id, never by a tag that could move.
        assert enabled["container"]["image"].startswith("sha256:")
        out = orch.client.post(
            "/v1/extension-points/analyzer/execute", json={"input": 7, "plugins": [pid]}
        ).json()
        assert out["results"][0]["output"]["echo"] == 7
        orch.client.post(f"/v1/plugins/{pid}/disable")
        assert orch.client.delete(f"/v1/plugins/{pid}").status_code == 204
    finally:
        for img in docker_client.images.list(name=remote.rsplit(":", 1)[0]):
            docker_client.images.remove(img.id, force=True)


def test_image_without_manifest_label_is_refused(
    orch: OrchestratorProcess, base_image: str
) -> None:
    r = orch.client.post("/v1/plugins", json={"image": base_image})
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "not_a_plugin_image"
