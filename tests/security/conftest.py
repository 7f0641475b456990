"""One orchestrator for the whole escape suite, and the malicious plugin it runs.

Starting an orchestrator and building a plugin image cost seconds each, so the folder shares
one orchestrator (SQLite) and two installs of the escape plugin: ``escape`` that attacks and
``peer``, a second plugin for it to aim at. Attacks that leave their plugin broken on purpose
(OOM, a hijacked socket) install their own copy and remove it afterwards.

The posture and escape suites run once per isolation tier (:data:`TIERS`) through ``tier``:
``runc`` is the package's orchestrator above; ``gvisor`` is a second one started with
``SUMMIT_ISOLATION=gvisor``, so every container it starts runs under runsc. Each tier's
orchestrator is started once and shared by both suites.
"""

from __future__ import annotations

import contextlib
import secrets
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import REPO
from tests.fixtures.orchestrator import OrchestratorProcess
from tests.fixtures.plugins import make_plugin
from tests.integration.conftest import start_orchestrator

ESCAPE_TEMPLATE = Path(__file__).parent / "plugins" / "escape"
ESCAPE = "com.summit-tests.escape"
PEER = "com.summit-tests.escape-peer"
PLUGIN_UID = "10001"
# Put in the orchestrator's environment: a plugin that finds it has read the host's processes.
HOST_CANARY = f"summit-host-canary-{secrets.token_hex(8)}"
TIERS = [
    pytest.param("runc", id="runc"),
    pytest.param("gvisor", id="gvisor", marks=pytest.mark.gvisor),
]


@dataclass
class EscapePlugin:
    orch: OrchestratorProcess
    plugin_id: str

    def execute(self, input: Any, **body: Any) -> httpx.Response:
        return self.orch.client.post(
            "/v1/extension-points/workflow/execute",
            json={"input": input, "plugins": [self.plugin_id], **body},
        )

    def attack(self, name: str, *, timeout_ms: int | None = None, **args: Any) -> dict[str, Any]:
        """Run one attack and return its report; the attack itself must not have broken."""
        extra = {"timeout_ms": timeout_ms} if timeout_ms else {}
        r = self.execute({"attack": name, **args}, **extra)
        assert r.status_code == 200, r.text
        (result,) = r.json()["results"]
        assert "output" in result, result
        report: dict[str, Any] = result["output"]
        assert "error" not in report, report
        return report

    @property
    def container_id(self) -> str:
        return str(self.orch.plugin(self.plugin_id)["container"]["id"])

    def container(self, docker_client: Any) -> Any:
        return docker_client.containers.get(self.container_id)


def install_escape(
    orch: OrchestratorProcess, tmp: Path, plugin_id: str, **manifest_changes: Any
) -> EscapePlugin:
    folder = make_plugin(tmp / plugin_id, str(ESCAPE_TEMPLATE), id=plugin_id, **manifest_changes)
    r = orch.install_dir(folder, approve=["storage"])
    assert r.status_code == 201, r.text
    r = orch.client.post(f"/v1/plugins/{plugin_id}/enable")
    assert r.status_code == 200, r.text
    return EscapePlugin(orch, plugin_id)


def remove_plugin(orch: OrchestratorProcess, plugin_id: str, timeout_s: float = 30) -> None:
    """Disable and uninstall, riding out a crash restart the attack may have caused."""
    deadline = time.monotonic() + timeout_s
    while True:
        r = orch.client.get(f"/v1/plugins/{plugin_id}")
        if r.status_code == 404:
            return
        state = r.json()["state"]
        if state in ("ACTIVE", "FAILED"):
            orch.client.post(f"/v1/plugins/{plugin_id}/disable")
        elif state == "LOADED":
            r = orch.client.delete(f"/v1/plugins/{plugin_id}")
            if r.status_code in (204, 404):
                return
        assert time.monotonic() < deadline, f"{plugin_id} stuck in {state}"
        time.sleep(0.2)


@contextlib.contextmanager
def escape_plugin(
    orch: OrchestratorProcess, tmp: Path, plugin_id: str, **manifest_changes: Any
) -> Iterator[EscapePlugin]:
    plugin = install_escape(orch, tmp, plugin_id, **manifest_changes)
    try:
        yield plugin
    finally:
        remove_plugin(orch, plugin_id)


def start_security_orchestrator(tmp: Path, **settings: str) -> OrchestratorProcess:
    return start_orchestrator(
        tmp,
        f"sqlite:///{tmp / 'summit.db'}",
        health_interval_s="1",
        restart_backoff_s="0.2",
        # The suite calls the same plugin more often than the default window allows.
        rate_limit_requests="0",
        # The escape plugin forks, loads libc and opens raw sockets in plain sight; the sandbox
        # must contain it even when the scanner would have refused it, so the scanner only reports.
        scan_fail_on="never",
        escape_canary=HOST_CANARY,
        **settings,
    )


def require_gvisor(docker_client: Any) -> None:
    """Register runsc with dockerd when it is missing (as ``base_image`` builds the base
    image), and fail with the script's error when that cannot be done: never skip, since a
    skipped tier would read as a passed one."""
    if "runsc" not in (docker_client.info().get("Runtimes") or {}):
        done = subprocess.run(
            ["bash", str(REPO / "scripts" / "ensure-gvisor.sh")], capture_output=True, text=True
        )
        assert done.returncode == 0, f"scripts/ensure-gvisor.sh failed:\n{done.stderr}"


# The runc tier's orchestrator and plugins, which the hostile suites share under the names
# orch, escape and peer.


@pytest.fixture(scope="package")
def runc_orch(base_image, docker_client, tmp_path_factory) -> Iterator[OrchestratorProcess]:  # type: ignore[no-untyped-def]
    o = start_security_orchestrator(tmp_path_factory.mktemp("security"))
    try:
        yield o
    finally:
        o.cleanup(docker_client)


@pytest.fixture(scope="package")
def runc_escape(
    runc_orch: OrchestratorProcess, tmp_path_factory: pytest.TempPathFactory
) -> EscapePlugin:
    return install_escape(runc_orch, tmp_path_factory.mktemp("escape"), ESCAPE)


@pytest.fixture(scope="package")
def runc_peer(
    runc_orch: OrchestratorProcess, tmp_path_factory: pytest.TempPathFactory
) -> EscapePlugin:
    return install_escape(runc_orch, tmp_path_factory.mktemp("peer"), PEER)


@pytest.fixture(scope="package")
def orch(runc_orch: OrchestratorProcess) -> OrchestratorProcess:
    return runc_orch


@pytest.fixture(scope="package")
def escape(runc_escape: EscapePlugin) -> EscapePlugin:
    return runc_escape


@pytest.fixture(scope="package")
def peer(runc_peer: EscapePlugin) -> EscapePlugin:
    return runc_peer


@dataclass
class Tier:
    """One isolation tier: its orchestrator and its two installs of the escape plugin."""

    isolation: str
    orch: OrchestratorProcess
    escape: EscapePlugin
    peer: EscapePlugin


@pytest.fixture(scope="package", params=TIERS)
def tier(  # type: ignore[no-untyped-def]
    request: pytest.FixtureRequest, base_image, docker_client, tmp_path_factory
) -> Iterator[Tier]:
    """The posture and escape suites' orchestrator and plugins, once per isolation tier.

    Those modules name the tier's ``orch``, ``escape`` and ``peer`` after the package's, so a
    test reads the same in both tiers; what differs by tier is asserted where it differs.
    """
    isolation = request.param
    if isolation == "runc":
        yield Tier(
            "runc",
            request.getfixturevalue("runc_orch"),
            request.getfixturevalue("runc_escape"),
            request.getfixturevalue("runc_peer"),
        )
        return
    require_gvisor(docker_client)
    tmp = tmp_path_factory.mktemp(f"security-{isolation}")
    o = start_security_orchestrator(tmp, isolation=isolation)
    try:
        yield Tier(
            isolation,
            o,
            install_escape(o, tmp / "escape", ESCAPE),
            install_escape(o, tmp / "peer", PEER),
        )
    finally:
        o.cleanup(docker_client)
