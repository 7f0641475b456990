"""Two orchestrator replicas on one PostgreSQL and one Redis behave as one: routes are shared,
one operation per plugin runs at a time across them, and one of them supervises, with another
taking over when it dies."""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from summit_sdk.labels import LABEL_PLUGIN

from tests.conftest import temp_database
from tests.fixtures.orchestrator import OrchestratorProcess
from tests.fixtures.plugins import make_plugin

pytestmark = [pytest.mark.docker, pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]

SPY = "com.summit.tests.replica-spy"
REDIS_URL = "redis://127.0.0.1:6379/0"
LEASE_S = 6.0


def _replica(tmp: Path, name: str, url: str, instance: str) -> OrchestratorProcess:
    return OrchestratorProcess(
        database_url=url,
        state_dir=tmp / name,
        instance=instance,
        env={
            # Replicas on one Docker host share the socket folders' parent.
            "SUMMIT_RUN_DIR": str(tmp / "run"),
            "SUMMIT_REDIS_URL": REDIS_URL,
            "SUMMIT_SCAN_FAIL_ON": "never",
            "SUMMIT_LEADER_LEASE_S": str(LEASE_S),
            "SUMMIT_LEADER_RENEW_S": "1",
            "SUMMIT_HEALTH_INTERVAL_S": "1",
            "SUMMIT_RESTART_BACKOFF_S": "0.2",
            "SUMMIT_MONITOR_INTERVAL_S": "1",
        },
    )


@pytest.fixture
def pair(base_image, docker_client, tmp_path) -> Iterator[tuple[OrchestratorProcess, ...]]:  # type: ignore[no-untyped-def]
    """Replica A (started first: the supervisor) and replica B, one deployment."""
    instance = f"summit-test-{secrets.token_hex(4)}"
    with temp_database("postgres", tmp_path) as url:
        a = _replica(tmp_path, "a", url, instance)
        b = _replica(tmp_path, "b", url, instance)
        a.start()
        assert role(a) == "supervisor"
        b.start()
        try:
            yield a, b
        finally:
            survivor = b if b.proc is not None and b.proc.poll() is None else a
            survivor.cleanup(docker_client)
            for replica in (a, b):
                replica.stop()
                replica.client.close()
            for c in a.owned_containers(docker_client):
                c.remove(force=True)


def role(orch: OrchestratorProcess) -> str:
    return str(httpx.get(f"{orch.url}/readyz", timeout=5).json()["role"])


def install(orch: OrchestratorProcess, tmp_path: Path) -> None:
    folder = make_plugin(tmp_path / "spy", "hostspy", id=SPY)
    manifest = yaml.safe_load((folder / "plugin.yaml").read_text())
    r = orch.install_dir(folder, approve=manifest["permissions"])
    assert r.status_code == 201, r.text


def call(orch: OrchestratorProcess, op: str, *args: Any) -> httpx.Response:
    return orch.client.post(
        "/v1/extension-points/workflow/execute",
        json={"input": {"op": op, "args": list(args)}, "plugins": [SPY]},
    )


def output(r: httpx.Response) -> dict[str, Any]:
    assert r.status_code == 200, r.text
    (result,) = r.json()["results"]
    assert result.get("error") is None, result
    out: dict[str, Any] = result["output"]
    return out


def eventually(check: Any, timeout_s: float) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def containers_of(orch: OrchestratorProcess, docker_client: Any) -> list[Any]:
    return [
        c
        for c in orch.owned_containers(docker_client)
        if c.labels.get(LABEL_PLUGIN) == SPY and c.status == "running"
    ]


def test_a_change_through_one_replica_reaches_the_other(
    pair: tuple[OrchestratorProcess, ...], tmp_path: Path
) -> None:
    a, b = pair
    install(a, tmp_path)
    assert a.client.post(f"/v1/plugins/{SPY}/enable").status_code == 200
    # B routes it (the event stream carries the change; the host API works through it too).
    eventually(lambda: output(call(b, "storage.put", "k", 1)), timeout_s=5)
    assert output(call(b, "storage.get", "k"))["result"] == 1

    # Disabled through A, the plugin is never called by B: 409 not_active at once, not 502.
    assert a.client.post(f"/v1/plugins/{SPY}/disable").status_code == 200
    stale = call(b, "storage.get", "k")
    assert stale.status_code == 409, stale.text
    assert stale.json()["error"]["code"] == "not_active"

    # Enabled again through B, reloaded through B: A follows each time.
    assert b.client.post(f"/v1/plugins/{SPY}/enable").status_code == 200
    eventually(lambda: output(call(a, "storage.get", "k")), timeout_s=5)
    before = output(call(a, "whoami"))["result"]["token"]
    assert b.client.post(f"/v1/plugins/{SPY}/reload").status_code == 200
    after = eventually(lambda: output(call(a, "whoami")), timeout_s=5)["result"]["token"]
    assert after != before  # a new container, with a token of its own
    assert output(call(a, "storage.get", "k"))["result"] == 1


def calls_recorded(orch: OrchestratorProcess) -> tuple[int, int]:
    """The calls and failed calls of the spy in the usage series (the supervisor samples)."""
    r = orch.client.get(f"/v1/plugins/{SPY}/usage", params={"since": "-1h", "step": "10s"})
    points = r.json()["series"]["points"]
    return (
        sum(p["calls_in_step"] or 0 for p in points),
        sum(p["errors_in_step"] or 0 for p in points),
    )


def brokered(orch: OrchestratorProcess) -> tuple[int, int]:
    """The spy's calls and failed calls as this replica's broker counted them (/metrics)."""
    calls = errors = 0
    for line in orch.client.get("/metrics").text.splitlines():
        if line.startswith("summit_extension_calls_total{") and f'plugin="{SPY}"' in line:
            n = int(float(line.rsplit(" ", 1)[1]))
            calls += n
            errors += 0 if 'outcome="ok"' in line else n
    return calls, errors


def test_the_usage_series_counts_the_calls_of_every_replica_once(
    pair: tuple[OrchestratorProcess, ...], tmp_path: Path
) -> None:
    a, b = pair
    install(a, tmp_path)
    assert a.client.post(f"/v1/plugins/{SPY}/enable").status_code == 200
    eventually(lambda: output(call(b, "whoami")), timeout_s=5)  # B routes it: 1 call on B
    for _ in range(3):
        output(call(b, "storage.get", "k"))
    output(call(a, "whoami"))
    failed = call(b, "no.such.op")
    assert failed.status_code != 200 or failed.json()["results"][0].get("error"), failed.text
    # 4 ok and 1 failed through B (the supervisor does not broker them), 1 through A.

    def all_counted() -> tuple[int, int]:
        found = calls_recorded(a)
        assert found[0] >= 6, found
        return found

    first = eventually(all_counted, timeout_s=30)
    time.sleep(7)  # more sampling rounds and shared writes: nothing is counted twice
    assert calls_recorded(a) == first == calls_recorded(b)
    # Exactly what the two brokers counted, each replica's calls once.
    assert first == tuple(x + y for x, y in zip(brokered(a), brokered(b), strict=True))
    assert first[1] >= 1


def test_concurrent_enables_through_two_replicas_start_one_container(
    pair: tuple[OrchestratorProcess, ...], tmp_path: Path, docker_client: Any
) -> None:
    a, b = pair
    install(a, tmp_path)
    answers: dict[str, int] = {}

    def enable(name: str, orch: OrchestratorProcess) -> None:
        answers[name] = orch.client.post(f"/v1/plugins/{SPY}/enable").status_code

    threads = [threading.Thread(target=enable, args=pair) for pair in (("a", a), ("b", b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(answers.values()) == [200, 409], answers
    assert len(containers_of(a, docker_client)) == 1
    output(call(a, "whoami"))
    output(call(b, "whoami"))


def test_a_new_supervisor_takes_over_and_adopts_what_runs(
    pair: tuple[OrchestratorProcess, ...], tmp_path: Path, docker_client: Any
) -> None:
    a, b = pair
    install(a, tmp_path)
    assert a.client.post(f"/v1/plugins/{SPY}/enable").status_code == 200
    output(call(a, "storage.put", "k", "before"))
    [container] = containers_of(a, docker_client)
    assert role(b) == "replica"

    a.kill()  # the supervisor dies: its lease stops being renewed
    killed = time.monotonic()
    eventually(lambda: _assert_role(b, "supervisor"), timeout_s=15)
    assert time.monotonic() - killed < 15

    # Nothing was restarted; the host API A served comes back from B.
    assert [c.id for c in containers_of(b, docker_client)] == [container.id]
    got = eventually(lambda: output(call(b, "storage.get", "k")), timeout_s=35)
    assert got == {"ok": True, "result": "before"}, got

    # And B now restarts a plugin that crashes.
    container.kill()
    eventually(lambda: _assert_new_container(b, docker_client, container.id), timeout_s=30)
    eventually(lambda: output(call(b, "whoami")), timeout_s=10)


def _assert_role(orch: OrchestratorProcess, expected: str) -> None:
    try:
        assert role(orch) == expected
    except httpx.HTTPError as exc:
        raise AssertionError(str(exc)) from exc


def _assert_new_container(orch: OrchestratorProcess, docker_client: Any, old: str) -> None:
    running = containers_of(orch, docker_client)
    assert running and all(c.id != old for c in running), running
    assert orch.plugin(SPY)["state"] == "ACTIVE"
