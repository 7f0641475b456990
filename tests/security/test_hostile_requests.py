"""JSON a caller sends that is nested too deep or is too large: a 4xx in the API's error shape
at every door (multipart fields, JSON install, async install, PUT config, execute), and
nothing left behind (no plugin row, no container, no saved bundle)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from orchestrator.services.bundles import pack_directory
from tests.fixtures.orchestrator import OrchestratorProcess
from tests.fixtures.plugins import make_plugin

from .conftest import PEER, EscapePlugin

pytestmark = [pytest.mark.docker, pytest.mark.slow]

MIB = 1 << 20
CONFIG_MAX_BYTES = 256 * 1024  # SUMMIT_CONFIG_MAX_BYTES's default
VICTIM = "com.summit-tests.hostile-config"


def nested_object(depth: int) -> str:
    """A JSON object ``depth`` containers deep, in few bytes (2 a level)."""
    return '{"a":' + "[" * (depth - 1) + "]" * (depth - 1) + "}"


def big_object(size: int) -> str:
    return json.dumps({"blob": "x" * size})


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return pack_directory(make_plugin(tmp_path_factory.mktemp("hostile") / "p", id=VICTIM))


def assert_error(r: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text[:1000]
    error: dict[str, Any] = r.json()["error"]
    assert set(error) == {"code", "message", "details"}
    if code is not None:
        assert error["code"] == code, error
    return error


def assert_nothing_left(orch: OrchestratorProcess, docker_client: Any, before: int) -> None:
    assert orch.client.get(f"/v1/plugins/{VICTIM}").status_code == 404
    assert len(orch.owned_containers(docker_client)) == before
    for folder in ("uploads", "bundles"):
        path = orch.state_dir / folder
        left = list(path.iterdir()) if path.is_dir() else []
        assert left == [], left


def install_multipart(
    orch: OrchestratorProcess, bundle: bytes, config: str, *, queued: bool = False
) -> httpx.Response:
    return orch.client.post(
        "/v1/plugins",
        params={"async": "true"} if queued else None,
        files={"bundle": ("plugin.tar.gz", bundle, "application/gzip")},
        data={"approved_permissions": "[]", "config": config},
    )


def install_image(orch: OrchestratorProcess, body: str, *, queued: bool = False) -> httpx.Response:
    return orch.client.post(
        "/v1/plugins",
        params={"async": "true"} if queued else None,
        content=body,
        headers={"content-type": "application/json"},
    )


@pytest.mark.parametrize("queued", [False, True], ids=["sync", "async"])
def test_a_deeply_nested_config_is_refused_at_every_install_door(
    orch: OrchestratorProcess, docker_client: Any, bundle: bytes, queued: bool
) -> None:
    before = len(orch.owned_containers(docker_client))
    for depth in (50_000, 65):
        r = install_multipart(orch, bundle, nested_object(depth), queued=queued)
        error = assert_error(r, 422, "too_deep")
        assert error["details"] == {"max_depth": 64}
        body = '{"image": "registry.invalid/p:1", "config": ' + nested_object(depth) + "}"
        assert_error(install_image(orch, body, queued=queued), 422)
    # Other JSON fields of the form get the same decoding.
    r = orch.client.post(
        "/v1/plugins",
        files={"bundle": ("plugin.tar.gz", bundle, "application/gzip")},
        data={"approved_permissions": "[" * 50_000 + "]" * 50_000},
    )
    assert_error(r, 422, "too_deep")
    assert_nothing_left(orch, docker_client, before)


@pytest.mark.parametrize("queued", [False, True], ids=["sync", "async"])
def test_a_config_over_the_cap_is_refused_at_every_install_door(
    orch: OrchestratorProcess, docker_client: Any, bundle: bytes, queued: bool
) -> None:
    before = len(orch.owned_containers(docker_client))
    over = big_object(CONFIG_MAX_BYTES)
    error = assert_error(install_multipart(orch, bundle, over, queued=queued), 413)
    assert error["code"] == "config_too_large"
    assert error["details"] == {"limit_bytes": CONFIG_MAX_BYTES}
    body = '{"image": "registry.invalid/p:1", "config": ' + over + "}"
    assert_error(install_image(orch, body, queued=queued), 413, "config_too_large")
    huge = big_object(64 * MIB)
    assert_error(install_multipart(orch, bundle, huge, queued=queued), 413)
    body = '{"image": "registry.invalid/p:1", "config": ' + huge + "}"
    assert_error(install_image(orch, body, queued=queued), 413)
    assert_nothing_left(orch, docker_client, before)


def test_put_config_refuses_deep_and_large_configs_and_keeps_the_old_one(
    orch: OrchestratorProcess, peer: EscapePlugin
) -> None:
    url = f"/v1/plugins/{PEER}/config"
    old = orch.plugin(PEER)["config"]
    headers = {"content-type": "application/json"}
    for depth in (100_000, 65):
        r = orch.client.put(
            url, content='{"config": ' + nested_object(depth) + "}", headers=headers
        )
        assert_error(r, 422, "too_deep")
    r = orch.client.put(
        url, content='{"config": ' + big_object(CONFIG_MAX_BYTES) + "}", headers=headers
    )
    assert_error(r, 413, "config_too_large")
    r = orch.client.put(url, content='{"config": ' + big_object(64 * MIB) + "}", headers=headers)
    assert_error(r, 413, "config_too_large")
    assert orch.plugin(PEER)["config"] == old
    # A config inside both limits is still taken.
    fine = json.loads(nested_object(63))
    r = orch.client.put(url, json={"config": fine})
    assert r.status_code == 200, r.text
    assert orch.client.put(url, json={"config": old}).status_code == 200


@pytest.mark.parametrize("queued", [False, True], ids=["sync", "async"])
def test_an_execute_input_nested_too_deep_is_refused(
    orch: OrchestratorProcess, peer: EscapePlugin, queued: bool
) -> None:
    for depth in (100_000, 65):
        head = json.dumps({"plugins": [PEER], "async": queued})
        body = head[:-1] + ', "input": ' + nested_object(depth) + "}"
        r = orch.client.post(
            "/v1/extension-points/workflow/execute",
            content=body,
            headers={"content-type": "application/json"},
        )
        error = assert_error(r, 422)
        if depth == 65:
            assert error["code"] == "too_deep"
            assert error["message"] == "the input is nested deeper than 64 levels"
    r = peer.execute({"attack": "ping", "padding": json.loads(nested_object(60))})
    assert r.status_code == 200, r.text
