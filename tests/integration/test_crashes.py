"""Crashes, OOM kills, failed health checks and start-up timeouts, with real containers."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import temp_database
from tests.fixtures.orchestrator import OrchestratorProcess
from tests.fixtures.plugins import make_plugin

from .conftest import start_orchestrator

pytestmark = [pytest.mark.docker, pytest.mark.slow]


@pytest.fixture(scope="module")
def orch(base_image, docker_client, tmp_path_factory) -> Iterator[OrchestratorProcess]:  # type: ignore[no-untyped-def]
    tmp = tmp_path_factory.mktemp("crash")
    with temp_database("sqlite", tmp) as url:
        o = start_orchestrator(
            tmp,
            url,
            restart_backoff_s="0.2",
            health_interval_s="0.5",
            health_failures="2",
            startup_timeout_s="4",
        )
        try:
            yield o
        finally:
            o.cleanup(docker_client)


def _crash(orch: OrchestratorProcess, pid: str, **action: object) -> None:
    orch.client.post(
        "/v1/extension-points/workflow/execute", json={"input": action, "plugins": [pid]}
    )


def _failures(orch: OrchestratorProcess, pid: str) -> list[dict]:  # type: ignore[type-arg]
    events = orch.client.get(f"/v1/plugins/{pid}/events").json()
    return [e for e in events if e["to_state"] == "FAILED"]


def test_exit_is_failed_then_restarted_then_stays_failed(
    orch: OrchestratorProcess,
    tmp_path: Path,
    docker_client,  # type: ignore[no-untyped-def]
) -> None:
    pid = "com.summit-tests.crashy"
    assert orch.install_dir(make_plugin(tmp_path / "p", id=pid)).status_code == 201
    first = orch.client.post(f"/v1/plugins/{pid}/enable").json()["container"]["id"]

    _crash(orch, pid, action="exit", code=3)
    orch.wait_state(pid, "FAILED", timeout_s=10)
    [failure] = _failures(orch, pid)
    assert failure["reason"].startswith("exited with code 3")
    # Restarted with backoff: ACTIVE again in a new container; the crashed one is gone.
    second = orch.wait_state(pid, "ACTIVE", timeout_s=15)["container"]["id"]
    assert second != first
    assert first not in {c.id for c in orch.owned_containers(docker_client)}

    _crash(orch, pid, action="exit", code=4)
    orch.wait_state(pid, "FAILED", timeout_s=10)
    orch.wait_state(pid, "ACTIVE", timeout_s=15)
    _crash(orch, pid, action="exit", code=5)
    orch.wait_state(pid, "FAILED", timeout_s=10)
    # Third crash within the window: it stays FAILED, with no container left behind.
    time.sleep(2.0)
    final = orch.plugin(pid)
    assert final["state"] == "FAILED"
    assert final["state_reason"].startswith("exited with code 5")
    assert final["container"] is None
    assert not [
        c for c in orch.owned_containers(docker_client) if c.labels["io.summit.plugin-id"] == pid
    ]
    # An operator can still enable it by hand.
    assert orch.client.post(f"/v1/plugins/{pid}/enable").json()["state"] == "ACTIVE"
    orch.client.post(f"/v1/plugins/{pid}/disable")
    assert orch.client.delete(f"/v1/plugins/{pid}").status_code == 204


def test_oom_kill_is_reported(orch: OrchestratorProcess, tmp_path: Path) -> None:
    pid = "com.summit-tests.oom"
    assert orch.install_dir(make_plugin(tmp_path / "p", id=pid)).status_code == 201
    assert orch.client.post(f"/v1/plugins/{pid}/enable").status_code == 200
    _crash(orch, pid, action="oom")
    orch.wait_state(pid, "FAILED", timeout_s=20)
    assert _failures(orch, pid)[0]["reason"] == "OOMKilled"
    orch.wait_state(pid, "ACTIVE", timeout_s=15)
    orch.client.post(f"/v1/plugins/{pid}/disable")
    assert orch.client.delete(f"/v1/plugins/{pid}").status_code == 204


def test_failed_health_checks_fail_the_plugin(
    orch: OrchestratorProcess,
    tmp_path: Path,
    docker_client,  # type: ignore[no-untyped-def]
) -> None:
    pid = "com.summit-tests.frozen"
    assert orch.install_dir(make_plugin(tmp_path / "p", id=pid)).status_code == 201
    cid = orch.client.post(f"/v1/plugins/{pid}/enable").json()["container"]["id"]
    docker_client.containers.get(cid).pause()  # alive, but answers nothing
    orch.wait_state(pid, "FAILED", timeout_s=20)
    assert _failures(orch, pid)[0]["reason"].startswith("failed 2 health checks")
    orch.wait_state(pid, "ACTIVE", timeout_s=15)
    assert cid not in {c.id for c in orch.owned_containers(docker_client)}
    orch.client.post(f"/v1/plugins/{pid}/disable")
    assert orch.client.delete(f"/v1/plugins/{pid}").status_code == 204


def test_plugin_that_never_gets_healthy_ends_failed_with_its_logs(
    orch: OrchestratorProcess,
    tmp_path: Path,
    docker_client,  # type: ignore[no-untyped-def]
) -> None:
    pid = "com.summit-tests.hang"
    assert orch.install_dir(make_plugin(tmp_path / "p", "hang", id=pid)).status_code == 201
    r = orch.client.post(f"/v1/plugins/{pid}/enable")
    assert r.status_code == 502
    assert r.json()["error"]["code"] == "startup_timeout"
    plugin = orch.plugin(pid)
    assert plugin["state"] == "FAILED"
    assert "did not become healthy within 4s" in plugin["state_reason"]
    assert "hang plugin: blocking at import" in plugin["state_reason"]
    assert plugin["container"] is None
    assert not [
        c for c in orch.owned_containers(docker_client) if c.labels["io.summit.plugin-id"] == pid
    ]
    assert orch.client.delete(f"/v1/plugins/{pid}").status_code == 204
