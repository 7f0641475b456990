"""Fault 7: a plugin whose image was removed from the host (``docker image prune -a``) starts
again. A built plugin is rebuilt from the source kept at install, a pulled one is pulled again
by its reference (and must still be the image that was installed); when neither is possible,
enable says to install it again instead of a Docker error."""

from __future__ import annotations

import io
import secrets
from pathlib import Path
from typing import Any

import docker.errors
import pytest

from tests.fixtures.orchestrator import OrchestratorProcess
from tests.fixtures.plugins import make_plugin

pytestmark = [pytest.mark.docker, pytest.mark.slow]

REGISTRY = "127.0.0.1:5000"


def _enable_then_disable(orch: OrchestratorProcess, pid: str) -> str:
    """Run the plugin once; the id of the image its container ran."""
    r = orch.client.post(f"/v1/plugins/{pid}/enable")
    assert r.status_code == 200, r.text
    image_id = str(r.json()["container"]["image"])
    assert image_id.startswith("sha256:")
    r = orch.client.post(f"/v1/plugins/{pid}/disable")
    assert r.status_code == 200 and r.json()["state"] == "LOADED", r.text
    return image_id


def _prune(docker_client: Any, image_id: str) -> None:
    """What ``docker image prune -a`` does to an image no container uses: gone, every tag."""
    docker_client.images.remove(image_id, force=True)
    with pytest.raises(docker.errors.ImageNotFound):
        docker_client.images.get(image_id)


def _restored(orch: OrchestratorProcess, pid: str) -> list[Any]:
    r = orch.client.get("/v1/events", params={"type": "plugin.image_restored", "subject": pid})
    assert r.status_code == 200, r.text
    return list(r.json()["events"])


def _echo(orch: OrchestratorProcess, pid: str) -> Any:
    r = orch.client.post(
        "/v1/extension-points/analyzer/execute", json={"input": 7, "plugins": [pid]}
    )
    assert r.status_code == 200, r.text
    return r.json()["results"][0]["output"]["echo"]


def test_a_built_plugin_whose_image_was_removed_is_rebuilt(
    orch: OrchestratorProcess,
    tmp_path: Path,
    docker_client,  # type: ignore[no-untyped-def]
) -> None:
    pid = f"com.summit-tests.pruned-{secrets.token_hex(3)}"
    assert orch.install_dir(make_plugin(tmp_path / "p", id=pid)).status_code == 201
    image_id = _enable_then_disable(orch, pid)
    _prune(docker_client, image_id)

    r = orch.client.post(f"/v1/plugins/{pid}/enable")
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "ACTIVE"
    assert _echo(orch, pid) == 7
    # The same source on the same base builds under the same content-addressed tag.
    assert docker_client.images.list(name=f"summit-plugin/{pid}")
    [restored] = _restored(orch, pid)
    assert restored["payload"]["how"] == "rebuilt"

    # The rebuilt image is the version's own now: the next start builds nothing.
    assert orch.client.post(f"/v1/plugins/{pid}/disable").status_code == 200
    _enable_then_disable(orch, pid)
    assert len(_restored(orch, pid)) == 1
    assert orch.client.delete(f"/v1/plugins/{pid}").status_code == 204
    assert not docker_client.images.list(name=f"summit-plugin/{pid}")


def test_a_removed_image_that_cannot_be_rebuilt_is_a_clear_409(
    orch: OrchestratorProcess,
    tmp_path: Path,
    docker_client,  # type: ignore[no-untyped-def]
) -> None:
    pid = f"com.summit-tests.lost-{secrets.token_hex(3)}"
    assert orch.install_dir(make_plugin(tmp_path / "p", id=pid)).status_code == 201
    image_id = _enable_then_disable(orch, pid)
    _prune(docker_client, image_id)
    # Its kept source is gone too (a wiped state folder): nothing to rebuild from.
    sources = list((orch.state_dir / "sources").glob("*.tar.gz"))
    assert sources
    for path in sources:
        path.unlink()

    r = orch.client.post(f"/v1/plugins/{pid}/enable")
    assert r.status_code == 409, r.text
    error = r.json()["error"]
    assert error["code"] == "image_missing"
    assert "install the plugin again" in error["message"]
    assert orch.plugin(pid)["state"] == "FAILED"
    assert orch.client.delete(f"/v1/plugins/{pid}").status_code == 204


@pytest.mark.registry
def test_a_pulled_plugin_whose_image_was_removed_is_pulled_again(
    orch: OrchestratorProcess,
    tmp_path: Path,
    base_image: str,
    docker_client,  # type: ignore[no-untyped-def]
) -> None:
    pid = f"com.summit-tests.repull-{secrets.token_hex(3)}"
    r = orch.install_dir(make_plugin(tmp_path / "p", id=pid))
    assert r.status_code == 201, r.text
    [built] = docker_client.images.list(name=f"summit-plugin/{pid}")
    remote = f"{REGISTRY}/summit-tests/{pid}:{secrets.token_hex(4)}"
    built.tag(remote)
    for line in docker_client.images.push(remote, stream=True, decode=True):
        assert "error" not in line, line
    docker_client.images.remove(remote)
    assert orch.client.delete(f"/v1/plugins/{pid}").status_code == 204
    try:
        r = orch.client.post("/v1/plugins", json={"image": remote, "approved_permissions": []})
        assert r.status_code == 201, r.text
        image_id = _enable_then_disable(orch, pid)
        _prune(docker_client, image_id)

        r = orch.client.post(f"/v1/plugins/{pid}/enable")
        assert r.status_code == 200, r.text
        assert r.json()["container"]["image"] == image_id
        assert _echo(orch, pid) == 7
        orch.client.post(f"/v1/plugins/{pid}/disable")

        # The tag now names another image: pulled again, it is refused, not run.
        moved, _ = docker_client.images.build(
            fileobj=io.BytesIO(f"FROM {base_image}\nLABEL io.summit.test=moved\n".encode()),
            tag=remote,
            pull=False,
            rm=True,
        )
        for line in docker_client.images.push(remote, stream=True, decode=True):
            assert "error" not in line, line
        docker_client.images.remove(moved.id, force=True)
        _prune(docker_client, image_id)
        r = orch.client.post(f"/v1/plugins/{pid}/enable")
        assert r.status_code == 409, r.text
        assert r.json()["error"]["code"] == "image_changed"
        assert orch.plugin(pid)["state"] == "FAILED"
    finally:
        orch.client.delete(f"/v1/plugins/{pid}")
        for img in docker_client.images.list(name=remote.rsplit(":", 1)[0]):
            docker_client.images.remove(img.id, force=True)
        for img in docker_client.images.list(name=f"summit-plugin/{pid}"):
            docker_client.images.remove(img.id, force=True)
