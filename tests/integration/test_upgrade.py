"""Upgrade, automatic rollback and rollback through the REST API against real Docker: a new
version that never becomes healthy is rolled back while every call keeps being served, a good
one takes over, rollback returns to the version before it, and the history (who and when)
outlives the uninstall."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fixtures.orchestrator import OrchestratorProcess
from tests.fixtures.plugins import make_plugin
from tests.integration.conftest import sqlite_orchestrator

pytestmark = [pytest.mark.docker, pytest.mark.slow]

PID = "com.summit-tests.upgrade"


@pytest.fixture(scope="module")
def orch(
    base_image: str, docker_client: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OrchestratorProcess]:
    # A version that never answers health is given up after 8 s, not the suite's 20.
    with sqlite_orchestrator(
        tmp_path_factory, docker_client, "orch-upgrade", startup_timeout_s="8"
    ) as o:
        yield o


class Caller:
    """Calls the plugin in a loop on a thread of its own, counting what was not served."""

    def __init__(self, orch: OrchestratorProcess) -> None:
        self.orch = orch
        self.calls = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.calls += 1
            try:
                r = self.orch.client.post(
                    "/v1/extension-points/analyzer/execute",
                    json={"input": {"n": self.calls}, "plugins": [PID]},
                )
                if r.status_code == 200 and "echo" in r.json()["results"][0]["output"]:
                    continue
                self.failures.append(f"{r.status_code} {r.text[:300]}")
            except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError) as exc:
                self.failures.append(repr(exc))

    def __enter__(self) -> Caller:
        self._thread.start()
        time.sleep(0.5)
        return self

    def __exit__(self, *_: object) -> None:
        time.sleep(0.5)
        self._stop.set()
        self._thread.join()


def _error(r: httpx.Response) -> dict[str, Any]:
    error: dict[str, Any] = r.json()["error"]
    return error


def _container_id(orch: OrchestratorProcess) -> str:
    container = orch.plugin(PID)["container"]
    assert container is not None
    return str(container["id"])


def test_upgrade_rolled_back_upgrade_rollback_and_history(
    orch: OrchestratorProcess, tmp_path: Path, docker_client: Any
) -> None:
    assert (
        orch.install_dir(make_plugin(tmp_path / "v1", id=PID, version="1.0.0")).status_code == 201
    )
    # The default rate limit (100 calls per 15 minutes) would throttle the callers below.
    r = orch.client.put(f"/v1/plugins/{PID}/limits", json={"rate_limit_requests": 0})
    assert r.status_code == 200, r.text
    r = orch.client.post(f"/v1/plugins/{PID}/enable")
    assert r.status_code == 200, r.text
    first = _container_id(orch)

    # v2 blocks while importing: it never answers health.
    r = orch.install_dir(make_plugin(tmp_path / "v2", "hang", id=PID, version="2.0.0"))
    assert r.status_code == 201, r.text
    assert (r.json()["version"], r.json()["pending_version"]) == ("1.0.0", "2.0.0")

    with Caller(orch) as during:
        r = orch.client.post(f"/v1/plugins/{PID}/upgrade", json={})
    assert r.status_code == 409, r.text
    error = _error(r)
    assert error["code"] == "upgrade_rolled_back"
    assert error["details"]["version"] == "2.0.0" and error["details"]["serving"] == "1.0.0"
    assert error["details"]["error"]["code"] == "startup_timeout"
    assert "did not become healthy" in error["details"]["error"]["message"]
    assert during.calls > 20 and during.failures == []
    after = orch.plugin(PID)
    assert (after["state"], after["version"], after["pending_version"]) == ("ACTIVE", "1.0.0", None)
    assert after["container"]["id"] == first
    # The new version's container went with the failed upgrade.
    assert [c.id for c in orch.owned_containers(docker_client)] == [first]
    assert docker_client.containers.get(first).status == "running"

    # A good v3 takes over; calls keep being served through the switch.
    r = orch.install_dir(make_plugin(tmp_path / "v3", id=PID, version="3.0.0"))
    assert r.status_code == 201, r.text
    with Caller(orch) as switching:
        r = orch.client.post(f"/v1/plugins/{PID}/upgrade", json={"version": "3.0.0"})
    assert r.status_code == 200, r.text
    assert (r.json()["state"], r.json()["version"]) == ("ACTIVE", "3.0.0")
    assert r.json()["container"]["id"] != first
    assert switching.calls > 5 and switching.failures == []

    # Rollback goes to the version v3 replaced (v1: v2 never took over), by an operator.
    r = orch.client.post("/v1/tokens", json={"name": "release bot", "role": "operator"})
    assert r.status_code == 201, r.text
    bot = r.json()
    headers = {"Authorization": f"Bearer {bot['token']}"}
    r = orch.client.post(f"/v1/plugins/{PID}/rollback", headers=headers)
    assert r.status_code == 200, r.text
    assert (r.json()["state"], r.json()["version"]) == ("ACTIVE", "1.0.0")
    with Caller(orch) as rolled_back:
        pass
    assert rolled_back.calls > 0 and rolled_back.failures == []

    r = orch.client.get(f"/v1/plugins/{PID}/history")
    assert r.status_code == 200, r.text
    admin, ops = "admin token", f"release bot ({bot['id']})"
    expected = [
        ("installed", "1.0.0", None, admin),
        ("enabled", "1.0.0", None, admin),
        ("installed", "2.0.0", None, admin),
        ("upgrade_failed", "2.0.0", "1.0.0", admin),
        ("installed", "3.0.0", None, admin),
        ("upgraded", "3.0.0", "1.0.0", admin),
        ("rolled_back", "1.0.0", "3.0.0", ops),
    ]
    items = r.json()["items"]
    assert [(h["action"], h["version"], h["from_version"], h["actor"]) for h in items] == list(
        reversed(expected)
    )
    assert r.json()["next"] is None and all(h["at"] for h in items)
    assert "did not become healthy" in items[3]["reason"]

    # Uninstalled: the plugin is gone, its history is not; one page at a time.
    assert orch.client.post(f"/v1/plugins/{PID}/disable").status_code == 200
    assert orch.client.delete(f"/v1/plugins/{PID}").status_code == 204
    assert orch.client.get(f"/v1/plugins/{PID}").status_code == 404
    page = orch.client.get(f"/v1/plugins/{PID}/history", params={"limit": 2}).json()
    assert [h["action"] for h in page["items"]] == ["uninstalled", "disabled"]
    rest = orch.client.get(
        f"/v1/plugins/{PID}/history", params={"limit": 100, "before": page["next"]}
    ).json()
    assert len(rest["items"]) == len(expected) and rest["next"] is None

    missing = orch.client.get("/v1/plugins/com.summit-tests.never/history")
    assert missing.status_code == 404 and _error(missing)["code"] == "plugin_not_found"
    missing = orch.client.post("/v1/plugins/com.summit-tests.never/rollback")
    assert missing.status_code == 404 and _error(missing)["code"] == "plugin_not_found"
    assert not orch.owned_containers(docker_client)


def test_roles_for_upgrade_rollback_and_history(orch: OrchestratorProcess) -> None:
    tokens = {}
    for role in ("viewer", "operator"):
        r = orch.client.post("/v1/tokens", json={"name": f"{role} of upgrades", "role": role})
        assert r.status_code == 201, r.text
        tokens[role] = {"Authorization": f"Bearer {r.json()['token']}"}
    absent = "/v1/plugins/com.summit-tests.absent"
    viewer, operator = tokens["viewer"], tokens["operator"]
    # A viewer reads the history (404: past authorization) but may not change versions.
    assert orch.client.get(f"{absent}/history", headers=viewer).status_code == 404
    for action in ("upgrade", "rollback"):
        refused = orch.client.post(f"{absent}/{action}", headers=viewer)
        assert refused.status_code == 403
        assert _error(refused)["details"] == {"role": "viewer", "required": "operator"}
        assert orch.client.post(f"{absent}/{action}", headers=operator).status_code == 404
