"""Catalog statistics on a real orchestrator (Docker, the OCI registry on 127.0.0.1:5000): a
plugin published to the catalog, installed by its catalog image reference, enabled and called
shows its install, its active install, its calls, the failed one and a latency p50 in
``GET /v1/catalog/plugins/{id}/stats``; its uninstall is counted too, and a plugin built here
with the same id and version counts nothing."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.fixtures.orchestrator import OrchestratorProcess
from tests.fixtures.plugins import make_plugin

from .conftest import sqlite_orchestrator
from .test_catalog_api import REGISTRY, push_plugin_image

pytestmark = [pytest.mark.docker, pytest.mark.registry, pytest.mark.slow]

PID = "com.example.stats-probe"
INTERVAL_S = 1.0  # the summaries' interval, which the statistics flush on too


@pytest.fixture(scope="module")
def orch(base_image, docker_client, tmp_path_factory) -> Iterator[OrchestratorProcess]:  # type: ignore[no-untyped-def]
    with sqlite_orchestrator(
        tmp_path_factory,
        docker_client,
        "catalog-stats",
        event_summary_interval_s=str(INTERVAL_S),
    ) as o:
        yield o


@pytest.fixture(scope="module")
def pushed(
    orch: OrchestratorProcess, docker_client: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The plugin's image in the registry, by digest; deleted from it at the end."""
    tmp = tmp_path_factory.mktemp("push")
    ref = push_plugin_image(orch, docker_client, tmp, PID, template="misbehave", version="1.0.0")
    yield ref
    name, digest = ref.split("@")
    with httpx.Client(base_url=f"http://{REGISTRY}", timeout=10) as http:
        http.delete(f"/v2/{name.removeprefix(REGISTRY + '/')}/manifests/{digest}")


def stats(orch: OrchestratorProcess) -> dict[str, Any]:
    r = orch.client.get(f"/v1/catalog/plugins/{PID}/stats")
    assert r.status_code == 200, r.text
    return dict(r.json()["summary"])


def wait_for(orch: OrchestratorProcess, **expected: int) -> dict[str, Any]:
    """The stats summary once it shows ``expected`` (a few flushes at most)."""
    deadline = time.monotonic() + 30
    summary = stats(orch)
    while any(summary[k] != v for k, v in expected.items()) and time.monotonic() < deadline:
        time.sleep(0.2)
        summary = stats(orch)
    assert {k: summary[k] for k in expected} == expected, summary
    return summary


def call(orch: OrchestratorProcess, point: str, payload: Any) -> int:
    r = orch.client.post(
        f"/v1/extension-points/{point}/execute", json={"input": payload, "plugins": [PID]}
    )
    return r.status_code


def test_a_catalog_plugin_shows_its_installs_calls_errors_and_latency(
    orch: OrchestratorProcess, pushed: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    ref = pushed
    published = orch.client.post(f"/v1/catalog/plugins/{PID}/versions", json={"image": ref})
    assert published.status_code == 201, published.text
    # Built and removed again by push_plugin_image before it was in the catalog: not counted.
    assert stats(orch)["installs"] == 0

    r = orch.client.post("/v1/plugins", json={"image": ref}, timeout=300)
    assert r.status_code == 201, r.text
    wait_for(orch, installs=1, active_installs=0)

    assert orch.client.post(f"/v1/plugins/{PID}/enable").status_code == 200
    wait_for(orch, installs=1, active_installs=1)

    for _ in range(5):
        assert call(orch, "data_source", {"seconds": 0.05}) == 200
    assert call(orch, "workflow", {}) >= 400  # its answer breaks its own output_schema
    summary = wait_for(orch, calls=6, errors=1)
    assert summary["latency_p50_ms"] >= 45  # each of the five slept 50 ms
    assert summary["by_version"] == {"1.0.0": 6}
    today = orch.client.get(f"/v1/catalog/plugins/{PID}/stats").json()["days"][-1]
    assert (today["calls"], today["errors"], today["installs"]) == (6, 1, 1)

    assert orch.client.post(f"/v1/plugins/{PID}/disable").status_code == 200
    assert orch.client.delete(f"/v1/plugins/{PID}").status_code == 204
    wait_for(orch, installs=1, uninstalls=1, active_installs=0)

    # The same id and version built here from source: used, and counted nowhere.
    source = tmp_path_factory.mktemp("local") / "misbehave"
    local = orch.install_dir(make_plugin(source, "misbehave", id=PID, version="1.0.0"))
    assert local.status_code == 201, local.text
    assert orch.client.post(f"/v1/plugins/{PID}/enable").status_code == 200
    assert call(orch, "data_source", {"seconds": 0}) == 200
    assert orch.client.post(f"/v1/plugins/{PID}/disable").status_code == 200
    assert orch.client.delete(f"/v1/plugins/{PID}").status_code == 204
    time.sleep(3 * INTERVAL_S)  # flushes that would have counted them
    after = stats(orch)
    assert (after["installs"], after["uninstalls"], after["active_installs"]) == (1, 1, 0)
    assert (after["calls"], after["errors"]) == (6, 1)
