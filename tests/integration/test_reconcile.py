"""Start-up reconcile: adopt, restart, clean up; SIGKILL mid-operation leaves nothing behind."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import temp_database
from tests.fixtures.orchestrator import OrchestratorProcess
from tests.fixtures.plugins import make_plugin

from .conftest import start_orchestrator

pytestmark = [pytest.mark.docker, pytest.mark.slow]


@pytest.fixture(params=["sqlite", "postgres"])
def orch(request, base_image, docker_client, tmp_path) -> Iterator[OrchestratorProcess]:  # type: ignore[no-untyped-def]
    with temp_database(request.param, tmp_path) as url:
        o = start_orchestrator(tmp_path, url)
        try:
            yield o
        finally:
            o.cleanup(docker_client)


def _in_background(fn) -> None:  # type: ignore[no-untyped-def]
    """Run a request that the test is about to cut short by killing the orchestrator."""

    def run() -> None:
        with contextlib.suppress(httpx.HTTPError):
            fn()

    threading.Thread(target=run, daemon=True).start()


def _restart(orch: OrchestratorProcess) -> None:
    orch.kill()
    orch.client.close()
    fresh = OrchestratorProcess(
        database_url=orch.database_url,
        state_dir=orch.state_dir,
        instance=orch.instance,
        env=orch.extra_env,
    )
    orch.proc = None
    orch.port, orch.url, orch.client = fresh.port, fresh.url, fresh.client
    orch.start()


def test_running_plugin_is_adopted_without_restart(
    orch: OrchestratorProcess,
    tmp_path: Path,
    docker_client,  # type: ignore[no-untyped-def]
) -> None:
    pid = "com.summit-tests.adopt"
    assert orch.install_dir(make_plugin(tmp_path / "p", id=pid)).status_code == 201
    cid = orch.client.post(f"/v1/plugins/{pid}/enable").json()["container"]["id"]
    started = docker_client.containers.get(cid).attrs["State"]["StartedAt"]
    transitions = len(orch.client.get(f"/v1/plugins/{pid}/events").json())

    _restart(orch)

    plugin = orch.plugin(pid)
    assert plugin["state"] == "ACTIVE" and plugin["container"]["id"] == cid
    assert docker_client.containers.get(cid).attrs["State"]["StartedAt"] == started
    assert len(orch.client.get(f"/v1/plugins/{pid}/events").json()) == transitions
    r = orch.client.post(
        "/v1/extension-points/analyzer/execute", json={"input": "hi", "plugins": [pid]}
    )
    assert r.json()["results"][0]["output"]["echo"] == "hi"


def test_gone_container_is_restarted_and_strangers_removed(
    orch: OrchestratorProcess,
    tmp_path: Path,
    docker_client,
    base_image,  # type: ignore[no-untyped-def]
) -> None:
    pid = "com.summit-tests.regrow"
    assert orch.install_dir(make_plugin(tmp_path / "p", id=pid)).status_code == 201
    cid = orch.client.post(f"/v1/plugins/{pid}/enable").json()["container"]["id"]
    orch.kill()
    docker_client.containers.get(cid).remove(force=True)
    stranger = docker_client.containers.create(
        base_image,
        labels={"io.summit.owner": orch.instance, "io.summit.plugin-id": "com.nobody.ghost"},
        network_mode="none",
    )

    _restart(orch)

    plugin = orch.wait_state(pid, "ACTIVE")
    assert plugin["container"]["id"] != cid
    owned = {c.id for c in orch.owned_containers(docker_client)}
    assert owned == {plugin["container"]["id"]}
    assert stranger.id not in owned


def test_sigkill_during_enable_leaves_no_orphan(
    orch: OrchestratorProcess,
    tmp_path: Path,
    docker_client,  # type: ignore[no-untyped-def]
) -> None:
    pid = "com.summit-tests.slowstart"
    src = make_plugin(tmp_path / "p", id=pid)
    assert orch.install_dir(src, config={"init_delay_s": 3}).status_code == 201
    _in_background(lambda: orch.client.post(f"/v1/plugins/{pid}/enable"))
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if orch.plugin(pid)["state"] == "INITIALIZING" and orch.owned_containers(docker_client):
            break
        time.sleep(0.05)
    else:
        pytest.fail("never saw the plugin INITIALIZING with a container")
    doomed = {c.id for c in orch.owned_containers(docker_client)}

    _restart(orch)

    plugin = orch.wait_state(pid, "ACTIVE", timeout_s=30)
    owned = {c.id for c in orch.owned_containers(docker_client)}
    assert owned == {plugin["container"]["id"]}
    assert not owned & doomed
    sockets = list((orch.state_dir / "run").iterdir())
    assert len(sockets) == 1  # the live container's socket folder only


def test_sigkill_during_install_leaves_nothing_half_written(
    orch: OrchestratorProcess,
    tmp_path: Path,
    docker_client,  # type: ignore[no-untyped-def]
) -> None:
    import os

    pid = "com.summit-tests.halfway"
    src = make_plugin(tmp_path / "p", id=pid)
    (src / "payload.bin").write_bytes(os.urandom(30 * 1024 * 1024))  # a build worth killing
    _in_background(lambda: orch.install_dir(src))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if any((orch.state_dir / "build").glob("*")) or any((orch.state_dir / "bundles").glob("*")):
            break
        time.sleep(0.01)
    orch.kill()

    _restart(orch)

    r = orch.client.get(f"/v1/plugins/{pid}")
    assert r.status_code in (200, 404)
    if r.status_code == 200:  # the kill came after the commit: then it is fully installed
        assert r.json()["state"] == "LOADED"
    assert not list((orch.state_dir / "build").glob("*"))
    assert not list((orch.state_dir / "bundles").glob("*"))
    assert orch.owned_containers(docker_client) == []
    # And it can be installed cleanly now.
    if r.status_code == 404:
        assert orch.install_dir(src).status_code == 201
    assert orch.client.delete(f"/v1/plugins/{pid}").status_code == 204


def test_docker_down_is_503_and_state_untouched(
    orch: OrchestratorProcess,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    pid = "com.summit-tests.nodocker"
    assert orch.install_dir(make_plugin(tmp_path / "p", id=pid)).status_code == 201
    orch.stop()
    orch.client.close()
    down = OrchestratorProcess(
        database_url=orch.database_url,
        state_dir=orch.state_dir,
        instance=orch.instance,
        env={"DOCKER_HOST": f"unix://{tmp_path}/no-docker.sock"},
    )
    down.start(wait_ready=False)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                ready = down.client.get("/readyz")
                break
            except Exception:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert ready.status_code == 503
        assert ready.json()["checks"]["runtime"].startswith("error")
        for path in (f"/v1/plugins/{pid}/enable",):
            r = down.client.post(path)
            assert r.status_code == 503, r.text
            assert r.json()["error"]["code"] == "runtime_unavailable"
            assert "Docker" in r.json()["error"]["message"]
        r = down.install_dir(make_plugin(tmp_path / "q", id="com.summit-tests.nodocker2"))
        assert r.status_code == 503
        assert down.plugin(pid)["state"] == "LOADED"
        assert down.client.get("/v1/plugins/com.summit-tests.nodocker2").status_code == 404
        assert len(down.client.get(f"/v1/plugins/{pid}/events").json()) == 1
    finally:
        down.stop()
        down.client.close()
    orch.proc = None
    _restart(orch)
