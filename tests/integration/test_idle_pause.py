"""Idle pause on a real Docker Engine: an orchestrator with a 2-second idle time freezes an
idle plugin (Docker pause), shows it paused (API, metrics), thaws it for the next call, which
succeeds, and after a restart adopts the frozen container as it is."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.orchestrator import OrchestratorProcess
from tests.fixtures.plugins import make_plugin

from .conftest import sqlite_orchestrator

pytestmark = [pytest.mark.docker, pytest.mark.slow]

PID = "com.summit-tests.sleepy"


@pytest.fixture(scope="module")
def orch(base_image, docker_client, tmp_path_factory) -> Iterator[OrchestratorProcess]:  # type: ignore[no-untyped-def]
    with sqlite_orchestrator(
        tmp_path_factory, docker_client, "idle", idle_pause_s="2", health_interval_s="0.5"
    ) as o:
        yield o


def _paused_at(orch: OrchestratorProcess) -> Any:
    return orch.plugin(PID)["container"]["paused_at"]


def _wait(what: str, done: Any, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def _docker_paused(docker_client: Any, cid: str) -> bool:
    return bool(docker_client.containers.get(cid).attrs["State"]["Paused"])


def _call(orch: OrchestratorProcess, text: str) -> Any:
    r = orch.client.post(
        "/v1/extension-points/analyzer/execute", json={"input": text, "plugins": [PID]}
    )
    assert r.status_code == 200, r.text
    return r.json()["results"][0]["output"]["echo"]


def test_an_idle_plugin_is_frozen_then_thawed_by_its_next_call(
    orch: OrchestratorProcess, docker_client: Any, tmp_path: Path
) -> None:
    assert orch.install_dir(make_plugin(tmp_path / "p", id=PID)).status_code == 201
    cid = orch.client.post(f"/v1/plugins/{PID}/enable").json()["container"]["id"]

    _wait("the pause", lambda: _paused_at(orch) is not None)
    assert _docker_paused(docker_client, cid)
    metrics = orch.client.get("/metrics").text
    assert f'summit_plugin_state{{plugin="{PID}",state="PAUSED"}} 1.0' in metrics
    time.sleep(2)  # health probes every 0.5 s meanwhile: a frozen plugin is no crash
    assert orch.plugin(PID)["state"] == "ACTIVE"

    assert _call(orch, "wake up") == "wake up"
    assert not _docker_paused(docker_client, cid)

    def logged() -> set[str]:
        events = orch.client.get("/v1/events", params={"type": "plugin.*"}).json()["events"]
        return {e["type"] for e in events if e["subject"] == PID}

    _wait("the resume on record", lambda: "plugin.resumed" in logged())
    assert "plugin.paused" in logged()


def test_a_frozen_plugin_survives_an_orchestrator_restart(
    orch: OrchestratorProcess, docker_client: Any
) -> None:
    cid = orch.plugin(PID)["container"]["id"]
    _wait("the pause", lambda: _docker_paused(docker_client, cid))
    started = docker_client.containers.get(cid).attrs["State"]["StartedAt"]

    orch.stop()
    orch.start()

    plugin = orch.plugin(PID)
    assert plugin["state"] == "ACTIVE" and plugin["container"]["id"] == cid
    assert plugin["container"]["paused_at"] is not None
    assert _docker_paused(docker_client, cid)
    assert _call(orch, "still here") == "still here"
    assert docker_client.containers.get(cid).attrs["State"]["StartedAt"] == started
