"""Canary through the REST API against real Docker: two versions of a plugin that answer with
their version, the candidate at 30% of 1,000 calls, then promoted while a thread keeps calling,
then another candidate aborted the same way; not one call fails."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fixtures.orchestrator import OrchestratorProcess
from tests.fixtures.plugins import make_plugin
from tests.integration.conftest import sqlite_orchestrator

pytestmark = [pytest.mark.docker, pytest.mark.slow]

PID = "com.summit-tests.canary"
CALLS = 1000
WEIGHT = 30
TOLERANCE = 5  # percentage points: over 3 standard deviations of the share at 1,000 calls


@pytest.fixture(scope="module")
def orch(
    base_image: str, docker_client: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OrchestratorProcess]:
    with sqlite_orchestrator(tmp_path_factory, docker_client, "orch-canary") as o:
        yield o


def versioned(dest: Path, version: str) -> Path:
    """The probe fixture as ``version``, its ``echo`` naming the version that answered."""
    folder = make_plugin(dest, id=PID, version=version)
    code = folder / "probe.py"
    source = code.read_text()
    marker = '"hostname": os.uname().nodename}'
    assert marker in source
    code.write_text(source.replace(marker, f'"hostname": os.uname().nodename, "v": "{version}"}}'))
    return folder


def call(client: httpx.Client, n: int) -> str:
    """One execute naming the plugin; the version that answered (raises on any failure)."""
    r = client.post(
        "/v1/extension-points/analyzer/execute", json={"input": {"n": n}, "plugins": [PID]}
    )
    r.raise_for_status()
    return str(r.json()["results"][0]["output"]["v"])


class Caller:
    """Calls the plugin in a loop on a thread of its own: the versions that answered and
    every call that was not served."""

    def __init__(self, orch: OrchestratorProcess) -> None:
        self.orch = orch
        self.answered: Counter[str] = Counter()
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            n += 1
            try:
                self.answered[call(self.orch.client, n)] += 1
            except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError) as exc:
                self.failures.append(repr(exc)[:300])

    def __enter__(self) -> Caller:
        self._thread.start()
        time.sleep(0.5)
        return self

    def __exit__(self, *_: object) -> None:
        time.sleep(0.5)
        self._stop.set()
        self._thread.join()


def test_canary_share_then_promote_and_abort_without_a_failed_call(
    orch: OrchestratorProcess, tmp_path: Path, docker_client: Any
) -> None:
    client = orch.client
    assert orch.install_dir(versioned(tmp_path / "v1", "1.0.0")).status_code == 201
    # The default rate limit (100 calls per 15 minutes) would throttle the calls below.
    r = client.put(f"/v1/plugins/{PID}/limits", json={"rate_limit_requests": 0})
    assert r.status_code == 200, r.text
    assert client.post(f"/v1/plugins/{PID}/enable").status_code == 200
    first = orch.plugin(PID)["container"]["id"]
    for version in ("2.0.0", "3.0.0"):
        r = orch.install_dir(versioned(tmp_path / version, version))
        assert r.status_code == 201, r.text

    r = client.post(f"/v1/plugins/{PID}/canary", json={"version": "9.9.9", "weight": WEIGHT})
    assert r.status_code == 404, r.text
    assert r.json()["error"]["details"]["installed_versions"] == ["1.0.0", "2.0.0", "3.0.0"]
    r = client.post(f"/v1/plugins/{PID}/canary", json={"version": "2.0.0", "weight": WEIGHT})
    assert r.status_code == 200, r.text
    assert (r.json()["weight"], r.json()["candidate"]["version"]) == (WEIGHT, "2.0.0")
    candidate = r.json()["candidate"]["container"]
    assert sorted(c.id for c in orch.owned_containers(docker_client)) == sorted([first, candidate])

    answered = Counter(call(client, n) for n in range(CALLS))

    assert sum(answered.values()) == CALLS and set(answered) == {"1.0.0", "2.0.0"}
    share = 100 * answered["2.0.0"] / CALLS
    assert abs(share - WEIGHT) <= TOLERANCE, answered
    view = client.get(f"/v1/plugins/{PID}/canary").json()
    assert view["state"] == "running" and view["weight"] == WEIGHT
    assert view["current"]["calls"] == answered["1.0.0"]
    assert view["candidate"]["calls"] == answered["2.0.0"]
    assert view["current"]["errors"] == view["candidate"]["errors"] == 0
    assert (
        view["candidate"]["p50_ms"] > 0
        and view["candidate"]["p99_ms"] >= view["candidate"]["p50_ms"]
    )
    metrics = client.get("/metrics").text
    assert (
        f'summit_canary_calls_total{{plugin="{PID}",role="candidate",version="2.0.0"}}' in metrics
    )

    with Caller(orch) as promoting:
        r = client.post(f"/v1/plugins/{PID}/canary/promote")
    assert r.status_code == 200, r.text
    assert (r.json()["version"], r.json()["container"]["id"]) == ("2.0.0", candidate)
    assert promoting.failures == [] and sum(promoting.answered.values()) > 20
    assert [c.id for c in orch.owned_containers(docker_client)] == [candidate]
    assert Counter(call(client, n) for n in range(20)) == Counter({"2.0.0": 20})
    assert client.get(f"/v1/plugins/{PID}/canary").status_code == 404

    r = client.post(f"/v1/plugins/{PID}/canary", json={"version": "3.0.0", "weight": 50})
    assert r.status_code == 200, r.text
    third = r.json()["candidate"]["container"]
    with Caller(orch) as aborting:
        time.sleep(0.5)  # long enough for the candidate to take calls
        r = client.post(f"/v1/plugins/{PID}/canary/abort")
    assert r.status_code == 200, r.text
    assert (r.json()["version"], r.json()["container"]["id"]) == ("2.0.0", candidate)
    assert aborting.failures == [] and aborting.answered["3.0.0"] > 0
    assert [c.id for c in orch.owned_containers(docker_client)] == [candidate]
    assert third != candidate

    items = client.get(f"/v1/plugins/{PID}/history").json()["items"]
    actions = [(h["action"], h["version"], h["from_version"]) for h in reversed(items)]
    assert actions[-4:] == [
        ("canary_started", "2.0.0", "1.0.0"),
        ("upgraded", "2.0.0", "1.0.0"),
        ("canary_started", "3.0.0", "2.0.0"),
        ("canary_aborted", "3.0.0", "2.0.0"),
    ]

    assert client.post(f"/v1/plugins/{PID}/disable").status_code == 200
    assert client.delete(f"/v1/plugins/{PID}").status_code == 204
    assert not orch.owned_containers(docker_client)
