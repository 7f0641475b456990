"""Async execute end to end: a real orchestrator, real plugin containers, real Redis, and
``summit worker`` processes that are started, and killed, as an operator's supervisor would."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.conftest import temp_database
from tests.fixtures.orchestrator import TOKEN, OrchestratorProcess
from tests.fixtures.plugins import make_plugin
from tests.integration.conftest import start_orchestrator

pytestmark = [pytest.mark.docker, pytest.mark.slow]

PLUGIN = "com.summit-tests.jobs"
REDIS_URL = os.environ.get("SUMMIT_TEST_REDIS", "redis://127.0.0.1:6379/0")
LEASE_S = "2"


class WorkerProcess:
    """``summit worker`` with the orchestrator's settings, logging to a file."""

    def __init__(self, orch: OrchestratorProcess, name: str) -> None:
        self.log_path = orch.state_dir.parent / f"{name}.log"
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "orchestrator.cli", "worker", "--log-level", "info"],
            env=orch.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()

    def kill(self) -> None:
        """SIGKILL: the worker gets no chance to hand anything back."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def terminate(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode

    def log(self) -> str:
        return self.log_path.read_text()[-4000:]


@pytest.fixture
def redis_orch(
    base_image: str, docker_client: Any, tmp_path: Path
) -> Iterator[OrchestratorProcess]:
    """An orchestrator on PostgreSQL and Redis that leaves every job to external workers."""
    client = redis.Redis.from_url(REDIS_URL)
    client.ping()
    with temp_database("postgres", tmp_path) as url:
        orch = start_orchestrator(
            tmp_path,
            url,
            redis_url=REDIS_URL,
            embedded_worker="false",
            worker_lease_s=LEASE_S,
            health_interval_s="60",  # a paused plugin must not be restarted under the test
        )
        try:
            yield orch
        finally:
            orch.cleanup(docker_client)
            keys = list(client.scan_iter(match=f"{orch.instance}:*", count=500))
            if keys:
                client.delete(*keys)
            client.close()


@pytest.fixture
def workers() -> Iterator[list[WorkerProcess]]:
    started: list[WorkerProcess] = []
    yield started
    for w in started:
        w.kill()


def activate(orch: OrchestratorProcess, tmp_path: Path) -> dict[str, Any]:
    r = orch.install_dir(make_plugin(tmp_path / "plugin", id=PLUGIN))
    assert r.status_code == 201, r.text
    r = orch.client.post(f"/v1/plugins/{PLUGIN}/enable")
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "ACTIVE"
    return dict(r.json())


def submit(orch: OrchestratorProcess, value: Any, **extra: Any) -> str:
    body = {"input": value, "plugins": [PLUGIN], "async": True, **extra}
    r = orch.client.post("/v1/extension-points/analyzer/execute", json=body)
    assert r.status_code == 202, r.text
    answer = r.json()
    assert answer["status"] == "queued"
    assert answer["links"] == {"self": f"/v1/jobs/{answer['job_id']}"}
    return str(answer["job_id"])


def job(orch: OrchestratorProcess, job_id: str) -> dict[str, Any]:
    r = orch.client.get(f"/v1/jobs/{job_id}")
    assert r.status_code == 200, r.text
    return dict(r.json())


def wait_job(
    orch: OrchestratorProcess, job_id: str, status: str, *, timeout_s: float = 60, why: str = ""
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        last = job(orch, job_id)
        if last["status"] == status:
            return last
        time.sleep(0.1)
    raise AssertionError(f"job is {last.get('status')}, not {status}: {last}\n{why}")


def echoed(done: dict[str, Any]) -> Any:
    [result] = done["result"]["results"]
    assert result["plugin"] == PLUGIN
    return result["output"]["echo"]


@pytest.mark.redis
@pytest.mark.postgres
def test_jobs_wait_for_a_worker_and_survive_its_crash(
    redis_orch: OrchestratorProcess,
    workers: list[WorkerProcess],
    docker_client: Any,
    tmp_path: Path,
) -> None:
    orch = redis_orch
    plugin = activate(orch, tmp_path)

    # The API checks what it can before queueing, and jobs need the bearer token.
    r = orch.client.post("/v1/extension-points/nope/execute", json={"async": True})
    assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_point"
    r = orch.client.get("/v1/jobs/no-such-job")
    assert r.status_code == 404 and r.json()["error"]["code"] == "job_not_found"
    first = submit(orch, {"n": 1})
    anonymous = orch.client.get(f"/v1/jobs/{first}", headers={"Authorization": "Bearer wrong"})
    assert anonymous.status_code == 401
    assert TOKEN not in anonymous.text

    # No worker runs yet (the orchestrator's own is switched off): the job waits.
    time.sleep(1.5)
    queued = job(orch, first)
    assert (queued["status"], queued["attempts"], queued["started_at"]) == ("queued", 0, None)

    w1 = WorkerProcess(orch, "worker-1")
    workers.append(w1)
    done = wait_job(orch, first, "succeeded", why=w1.log())
    assert echoed(done) == {"n": 1}
    assert done["attempts"] == 1 and done["error"] is None
    assert done["created_at"] <= done["started_at"] <= done["finished_at"]
    assert f":{w1.proc.pid}:" in done["worker"]  # the external worker ran it

    # A job whose worker is killed mid-call: the plugin is paused so the call hangs.
    container = docker_client.containers.get(plugin["container"]["id"])
    container.pause()
    try:
        second = submit(orch, {"n": 2}, timeout_ms=60_000)
        running = wait_job(orch, second, "running", why=w1.log())
        assert running["attempts"] == 1
        w1.kill()
    finally:
        container.unpause()
    still = job(orch, second)
    assert still["status"] == "running"  # nobody has noticed yet: its lease is still fresh

    w2 = WorkerProcess(orch, "worker-2")
    workers.append(w2)
    done = wait_job(orch, second, "succeeded", why=w2.log())
    assert echoed(done) == {"n": 2}
    assert done["attempts"] == 2
    assert f":{w2.proc.pid}:" in done["worker"]

    # It stays done: no one runs it again once the dead worker's lease is long gone.
    time.sleep(2 * float(LEASE_S))
    assert job(orch, second) == done
    assert "taken back" in w2.log()

    # SIGTERM: the worker stops cleanly.
    assert w2.terminate() == 0, w2.log()


def test_async_execute_runs_in_process_without_redis(
    base_image: str, docker_client: Any, tmp_path: Path
) -> None:
    with temp_database("sqlite", tmp_path) as url:
        orch = start_orchestrator(tmp_path, url)
        try:
            activate(orch, tmp_path)
            job_id = submit(orch, {"hello": "world"})
            done = wait_job(orch, job_id, "succeeded", why=orch.log_path.read_text()[-3000:])
            assert echoed(done) == {"hello": "world"}
            assert done["attempts"] == 1

            # A caller's mistake is kept as failed at once, with its error.
            r = orch.client.post(
                "/v1/extension-points/analyzer/execute",
                json={"input": {}, "plugins": ["com.summit-tests.absent"], "async": True},
            )
            assert r.status_code == 202, r.text
            failed = wait_job(orch, r.json()["job_id"], "failed")
            assert failed["attempts"] == 1
            assert failed["error"]["code"] == "not_active"
        finally:
            orch.cleanup(docker_client)


@pytest.mark.redis
@pytest.mark.postgres
def test_builds_run_on_the_queue_with_progress_on_the_job(
    redis_orch: OrchestratorProcess, workers: list[WorkerProcess], tmp_path: Path
) -> None:
    from orchestrator.services.bundles import pack_directory

    pid = "com.summit-tests.queued-build"
    folder = make_plugin(tmp_path / "queued", id=pid)
    r = redis_orch.client.post(
        "/v1/plugins",
        params={"async": "true"},
        files={"bundle": ("p.tar.gz", pack_directory(folder), "application/gzip")},
    )
    assert r.status_code == 202, r.text
    job_id = r.json()["job_id"]
    uploads = list((redis_orch.state_dir / "uploads").iterdir())
    assert len(uploads) == 1  # kept for the worker, which may be another process
    time.sleep(1)
    assert job(redis_orch, job_id)["status"] == "queued"  # no embedded worker: it waits
    assert redis_orch.client.get(f"/v1/plugins/{pid}").status_code == 404

    workers.append(WorkerProcess(redis_orch, "builder"))
    done = wait_job(redis_orch, job_id, "succeeded", timeout_s=120, why=workers[0].log())
    assert done["result"] == {"id": pid, "version": "1.0.0", "state": "LOADED"}
    lines = "\n".join(done["progress"])
    assert f"validated {pid} 1.0.0" in lines and "scanned" in lines
    assert f"installed {pid} 1.0.0 (LOADED)" in lines
    assert redis_orch.plugin(pid)["state"] == "LOADED"
    assert list((redis_orch.state_dir / "uploads").iterdir()) == []

    # A bundle that cannot install fails its job at once (no retry), and leaves no file.
    broken = make_plugin(tmp_path / "broken", id=pid, version="not-semver")
    r = redis_orch.client.post(
        "/v1/plugins",
        params={"async": "true"},
        files={"bundle": ("p.tar.gz", pack_directory(broken), "application/gzip")},
    )
    assert r.status_code == 202, r.text
    failed = wait_job(redis_orch, r.json()["job_id"], "failed", timeout_s=60)
    assert failed["attempts"] == 1 and failed["error"]["code"] == "invalid_manifest"
    assert list((redis_orch.state_dir / "uploads").iterdir()) == []
