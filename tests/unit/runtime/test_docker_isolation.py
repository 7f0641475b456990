"""``DockerRuntime.deploy`` and the isolation tier of its spec, against a recorded daemon.

The daemon is a stand-in that answers ``info`` with the runtimes a test chooses and records
every container asked of it, so the refusal paths (runsc not registered, gone after it was
seen, an unknown tier) can be shown to create nothing: no container, no socket folder.
``tests/integration/test_docker_gvisor.py`` runs the same deploy on a real dockerd and runsc.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import docker.errors
import pytest

from orchestrator.domain.errors import InvalidInput, RuntimeFailure, ServiceUnavailable
from orchestrator.runtime import docker as docker_runtime
from orchestrator.runtime.base import ContainerSpec
from orchestrator.runtime.docker import DockerRuntime

RUNC_ONLY = {"runc": {"path": "runc"}}
WITH_RUNSC = {**RUNC_ONLY, "runsc": {"path": "/usr/bin/runsc"}}


class RecordedContainer:
    def __init__(self, name: str, options: dict[str, Any], start_error: Exception | None):
        self.id = f"id-{name}"
        self.name = name
        self.options = options
        self.start_error = start_error
        self.labels = options["labels"]
        self.attrs = {
            "State": {"Running": True, "Status": "running", "ExitCode": 0},
            "Config": {"Labels": self.labels, "Image": "plugin:1"},
        }
        self.removed = False

    def start(self) -> None:
        if self.start_error is not None:
            raise self.start_error

    def reload(self) -> None:
        pass

    def remove(self, **_: Any) -> None:
        self.removed = True


class RecordedContainers:
    def __init__(self, daemon: RecordedDaemon) -> None:
        self.daemon = daemon

    def create(self, image: str, *, name: str, **options: Any) -> RecordedContainer:
        if self.daemon.create_error is not None:
            raise self.daemon.create_error
        container = RecordedContainer(name, options, self.daemon.start_error)
        self.daemon.created.append(container)
        return container

    def get(self, name: str) -> RecordedContainer:
        for container in self.daemon.created:
            if container.name == name and not container.removed:
                return container
        raise docker.errors.NotFound(f"No such container: {name}")


class RecordedDaemon:
    """The parts of ``docker.DockerClient`` that ``deploy`` uses."""

    def __init__(self, runtimes: dict[str, Any]) -> None:
        self.runtimes = runtimes
        self.info_calls = 0
        self.created: list[RecordedContainer] = []
        self.create_error: Exception | None = None
        self.start_error: Exception | None = None
        self.containers = RecordedContainers(self)

    def info(self) -> dict[str, Any]:
        self.info_calls += 1
        return {"Runtimes": dict(self.runtimes)}


@pytest.fixture
def sockets_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    # A plain folder per container: as root, deploy would mount a tmpfs on each.
    def plain_folder(path: Path, uid: int, gid: int, *, inodes: int) -> None:
        path.mkdir(parents=True)

    monkeypatch.setattr(docker_runtime, "_make_socket_dir", plain_folder)
    folder = tmp_path / "run"
    folder.mkdir()
    return folder


def runtime_on(daemon: RecordedDaemon, sockets_dir: Path) -> DockerRuntime:
    runtime = DockerRuntime(owner="test", sockets_dir=sockets_dir)
    runtime._client = daemon  # type: ignore[assignment]
    return runtime


def spec(isolation: str) -> ContainerSpec:
    return ContainerSpec(
        plugin_id="com.x.p", version="1.0.0", image="plugin:1", isolation=isolation
    )


def left_behind(daemon: RecordedDaemon, sockets_dir: Path) -> tuple[list[str], list[str]]:
    live = [c.name for c in daemon.created if not c.removed]
    return live, sorted(p.name for p in sockets_dir.iterdir())


def test_gvisor_without_runsc_is_refused_before_anything_is_made(sockets_dir: Path) -> None:
    daemon = RecordedDaemon(RUNC_ONLY)
    with pytest.raises(ServiceUnavailable) as caught:
        runtime_on(daemon, sockets_dir).deploy(spec("gvisor"))
    error = caught.value
    assert (error.status_code, error.code) == (503, "isolation_unavailable")
    assert "scripts/ensure-gvisor.sh" in error.message and "runsc" in error.message
    assert error.details["isolation"] == "gvisor"
    assert daemon.created == []
    assert left_behind(daemon, sockets_dir) == ([], [])


def test_gvisor_with_runsc_asks_the_daemon_once(sockets_dir: Path) -> None:
    daemon = RecordedDaemon(WITH_RUNSC)
    runtime = runtime_on(daemon, sockets_dir)
    for _ in range(3):
        runtime.deploy(spec("gvisor"))
    assert daemon.info_calls == 1
    for container in daemon.created:
        assert container.options["runtime"] == "runsc"
        assert "pids_limit" not in container.options


def test_runc_never_asks_for_the_runtimes(sockets_dir: Path) -> None:
    daemon = RecordedDaemon(RUNC_ONLY)
    runtime_on(daemon, sockets_dir).deploy(spec("runc"))
    assert daemon.info_calls == 0
    (container,) = daemon.created
    assert "runtime" not in container.options
    assert container.options["pids_limit"] == 128


def test_an_unknown_tier_is_refused_before_anything_is_made(sockets_dir: Path) -> None:
    daemon = RecordedDaemon(WITH_RUNSC)
    with pytest.raises(InvalidInput) as caught:
        runtime_on(daemon, sockets_dir).deploy(spec("kata"))
    assert (caught.value.status_code, caught.value.code) == (422, "invalid_isolation")
    assert "kata" in caught.value.message
    assert left_behind(daemon, sockets_dir) == ([], [])


def test_runsc_gone_after_it_was_seen_is_the_same_refusal(sockets_dir: Path) -> None:
    daemon = RecordedDaemon(WITH_RUNSC)
    runtime = runtime_on(daemon, sockets_dir)
    runtime.deploy(spec("gvisor"))
    # The operator took runsc out of daemon.json and reloaded dockerd.
    daemon.runtimes = dict(RUNC_ONLY)
    daemon.create_error = docker.errors.APIError(
        "400 Client Error", explanation="Unknown runtime specified runsc"
    )
    with pytest.raises(ServiceUnavailable) as caught:
        runtime.deploy(spec("gvisor"))
    assert caught.value.code == "isolation_unavailable"
    assert isinstance(caught.value.__cause__, RuntimeFailure)
    assert len(left_behind(daemon, sockets_dir)[1]) == 1  # the first deploy's folder only


def test_a_gvisor_start_failure_with_runsc_present_stays_a_runtime_failure(
    sockets_dir: Path,
) -> None:
    daemon = RecordedDaemon(WITH_RUNSC)
    daemon.start_error = docker.errors.APIError(
        "500 Server Error", explanation='urpc method "containerManager.StartRoot" failed: EOF'
    )
    with pytest.raises(RuntimeFailure, match="StartRoot"):
        runtime_on(daemon, sockets_dir).deploy(spec("gvisor"))
    assert left_behind(daemon, sockets_dir) == ([], [])
