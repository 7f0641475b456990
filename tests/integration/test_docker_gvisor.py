"""``DockerRuntime`` deploys a real plugin container under gVisor (``isolation="gvisor"``).

The plugin is the escape suite's (``tests/security/plugins/escape``), built once into an image
and started by ``DockerRuntime.deploy`` with no orchestrator around it, so what is checked is
the runtime's own doing: the container runs under runsc, its ``plugin.sock`` answers from the
host, and the sandbox holds (memory limit, read-only root, ``/tmp`` tmpfs, no network). The
orchestrator's view of the same tier is ``tests/security`` (every test there runs per tier).
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import yaml
from summit_sdk.cli.docker_ops import build_image

from orchestrator.runtime.base import ContainerSpec, ContainerStatus
from orchestrator.runtime.docker import DockerRuntime
from orchestrator.runtime.endpoints import UnixEndpoint
from tests.conftest import BASE_IMAGE, REPO
from tests.fixtures.waiting import wait_until

pytestmark = [pytest.mark.docker, pytest.mark.gvisor, pytest.mark.slow]

ESCAPE_DIR = REPO / "tests" / "security" / "plugins" / "escape"
MIB = 1 << 20


@pytest.fixture(scope="module")
def escape_image(base_image: str, docker_client: Any) -> Iterator[str]:
    runtimes = docker_client.info().get("Runtimes") or {}
    assert "runsc" in runtimes, (
        f"dockerd has no runsc runtime ({sorted(runtimes)}): run scripts/ensure-gvisor.sh"
    )
    tag = f"summit-test/gvisor-escape:{secrets.token_hex(4)}"
    manifest = yaml.safe_load((ESCAPE_DIR / "plugin.yaml").read_text())
    build_image(docker_client, ESCAPE_DIR, manifest, tag=tag, base=BASE_IMAGE, progress=print)
    try:
        yield tag
    finally:
        docker_client.images.remove(tag, force=True)


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerRuntime]:
    sockets = tmp_path_factory.mktemp("gvisor") / "run"
    rt = DockerRuntime(owner=f"summit-test-gvisor-{secrets.token_hex(4)}", sockets_dir=sockets)
    try:
        yield rt
    finally:
        for container in rt.list_owned():
            rt.remove(container.id)
        shutil.rmtree(sockets, ignore_errors=True)


class Plugin:
    """A deployed container and an HTTP client on its socket, from the host."""

    def __init__(self, status: ContainerStatus) -> None:
        assert isinstance(status.endpoint, UnixEndpoint), status
        self.status = status
        self.http = httpx.Client(
            base_url="http://plugin",
            transport=httpx.HTTPTransport(uds=str(status.endpoint.path)),
            timeout=60,
        )

    def wait_healthy(self, timeout_s: float = 30) -> httpx.Response:
        deadline = time.monotonic() + timeout_s
        while True:
            with contextlib.suppress(httpx.TransportError):
                answer = self.http.get("/summit/v1/health")
                if answer.status_code == 200:
                    return answer
            assert time.monotonic() < deadline, "the plugin never answered health"
            time.sleep(0.05)

    def call(self, attack: str, **args: Any) -> httpx.Response:
        return self.http.post(
            "/summit/v1/extensions/workflow/try",
            json={"input": {"attack": attack, **args}, "context": {"request_id": attack}},
        )

    def attack(self, attack: str, **args: Any) -> dict[str, Any]:
        answer = self.call(attack, **args)
        assert answer.status_code == 200, answer.text
        report: dict[str, Any] = answer.json()["output"]
        assert "error" not in report, report
        return report


@contextlib.contextmanager
def deployed(runtime: DockerRuntime, image: str, **limits: Any) -> Iterator[Plugin]:
    spec = ContainerSpec(
        plugin_id="com.summit-tests.escape",
        version="1.0.0",
        image=image,
        isolation="gvisor",
        **limits,
    )
    plugin = Plugin(runtime.deploy(spec))
    try:
        yield plugin
    finally:
        plugin.http.close()
        runtime.remove(plugin.status.id)


@pytest.fixture(scope="module")
def plugin(runtime: DockerRuntime, escape_image: str) -> Iterator[Plugin]:
    with deployed(runtime, escape_image) as p:
        p.wait_healthy()
        yield p


def test_it_runs_under_runsc_without_a_pids_limit(plugin: Plugin, docker_client: Any) -> None:
    host = docker_client.containers.get(plugin.status.id).attrs["HostConfig"]
    assert host["Runtime"] == "runsc"
    assert host["PidsLimit"] in (None, 0)  # sandbox.py says why
    # The rest of the sandbox is runc's.
    assert host["NetworkMode"] == "none" and host["ReadonlyRootfs"] is True
    assert host["CapDrop"] == ["ALL"] and host["Memory"] == 256 * MIB


def test_its_socket_answers_health_from_the_host(runtime: DockerRuntime, plugin: Plugin) -> None:
    health = plugin.wait_healthy().json()
    assert health["status"] == "ok"
    assert health["plugin"]["id"] == "com.summit-tests.escape"
    # A unix socket the plugin made inside gVisor, in the folder the runtime made on the host.
    endpoint = plugin.status.endpoint
    assert isinstance(endpoint, UnixEndpoint) and endpoint.path.is_socket()
    assert endpoint.folder.parent == runtime.sockets_dir


def test_the_root_is_read_only(plugin: Plugin) -> None:
    report = plugin.attack("write_rootfs")
    assert not report["escaped"], report["detail"]
    assert set(report["evidence"].values()) <= {"EROFS", "EACCES", "EPERM"}, report
    mounts = plugin.attack("other_plugin")["evidence"]["mountinfo"].splitlines()
    (root,) = [line for line in mounts if line.split()[4] == "/"]
    assert "ro" in root.split()[5].split(","), root


def test_tmp_is_a_16_mib_tmpfs(plugin: Plugin) -> None:
    report = plugin.attack("fill_tmp", max_mb=64)
    assert report["evidence"]["refusal"] == "ENOSPC", report
    assert 15 * MIB <= report["evidence"]["written"] <= 16 * MIB


def test_it_has_no_network(plugin: Plugin) -> None:
    targets = [["1.1.1.1", 443], ["172.17.0.1", 2375], ["169.254.169.254", 80]]
    report = plugin.attack("network", targets=targets)
    assert not report["escaped"], report["detail"]
    seen = report["evidence"]
    assert seen["interfaces"] == ["lo"] and seen["routes"] == []
    for host, port in targets:
        result = seen["connects"][f"{host}:{port}"]
        assert result["result"] == "EHOSTUNREACH" and result["ms"] < 100, (host, result)


def test_memory_beyond_the_limit_is_oom_killed(
    runtime: DockerRuntime, escape_image: str, docker_client: Any
) -> None:
    with deployed(runtime, escape_image, memory_mb=64) as p:
        p.wait_healthy()
        with contextlib.suppress(httpx.TransportError):
            answer = p.call("memory_bomb")
            pytest.fail(f"the memory bomb was answered: {answer.status_code} {answer.text}")

        def stopped() -> Any:
            status = runtime.status(p.status.id)
            return status if status is not None and not status.running else None

        status = wait_until(stopped, 20, "the container to stop")
        # gVisor's kernel runs in the container's memory cgroup: the host's OOM killer ends the
        # whole sandbox, and Docker reports it as it does under runc.
        assert status.oom_killed, status
        assert status.exit_code == 137, status
