"""After a burst of calls the orchestrator's open file descriptors and threads come back to
their level: a leak (a connection, a transport, a thread per call) shows as growth here. The
long version of this, 100,000 calls with figures, is ``bench/soak.py``."""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fixtures.orchestrator import TOKEN, OrchestratorProcess
from tests.fixtures.plugins import make_plugin

from .conftest import sqlite_orchestrator

pytestmark = [pytest.mark.docker, pytest.mark.slow]

PID = "com.summit-tests.burst"
CONCURRENCY = 16
SLACK = 2
# The database pool may keep one more connection than the first burst needed, opened when a
# sampling round or an event write met the burst: on SQLite in WAL mode that is three
# descriptors (the database, its -wal and its -shm). A leak per call or connection would be
# thousands or dozens.
FD_SLACK = SLACK + 3


@pytest.fixture(scope="module")
def orch(base_image, docker_client, tmp_path_factory) -> Iterator[OrchestratorProcess]:  # type: ignore[no-untyped-def]
    with sqlite_orchestrator(
        tmp_path_factory, docker_client, "burst", rate_limit_requests="0"
    ) as o:
        yield o


def _fd_targets(pid: int) -> list[str]:
    out = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            out.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            continue
    return sorted(out)


def _level(pid: int) -> tuple[int, int]:
    """(open file descriptors, threads) of process ``pid``."""
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    with open(f"/proc/{pid}/status") as f:
        threads = next(int(line.split()[1]) for line in f if line.startswith("Threads:"))
    return fds, threads


async def _burst(url: str, calls: int) -> int:
    """``calls`` executes, ``CONCURRENCY`` at a time, over a client closed at the end (its
    connections would otherwise count as the orchestrator's descriptors); the failures."""
    body: dict[str, Any] = {"input": "burst", "plugins": [PID]}
    failed = 0
    queue = iter(range(calls))
    async with httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60
    ) as client:

        async def worker() -> None:
            nonlocal failed
            for _ in queue:
                r = await client.post("/v1/extension-points/analyzer/execute", json=body)
                failed += r.status_code != 200

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return failed


def _settled(pid: int, fds: int, threads: int, timeout_s: float = 15) -> tuple[int, int]:
    """The level once it is back within the baseline (or as it is after ``timeout_s``)."""
    deadline = time.monotonic() + timeout_s
    while True:
        now = _level(pid)
        if (now[0] <= fds and now[1] <= threads) or time.monotonic() > deadline:
            return now
        time.sleep(0.25)


def test_descriptors_and_threads_return_to_their_level_after_a_burst(
    orch: OrchestratorProcess, tmp_path: Path
) -> None:
    assert orch.install_dir(make_plugin(tmp_path / "p", id=PID)).status_code == 201
    assert orch.client.post(f"/v1/plugins/{PID}/enable").status_code == 200
    assert orch.proc is not None
    pid = orch.proc.pid

    # A first burst opens what stays open by design (connections to the plugin, the thread
    # pools' workers, which grow on demand up to their bound); the level is taken after it.
    # SLACK allows a pool one more worker than the first burst happened to need: a leak
    # per call or per connection would be thousands or dozens.
    assert asyncio.run(_burst(orch.url, 1000)) == 0
    time.sleep(1)
    base = _level(pid)
    base_fds = _fd_targets(pid)

    for _ in range(2):
        assert asyncio.run(_burst(orch.url, 2000)) == 0
        after = _settled(pid, base[0] + FD_SLACK, base[1] + SLACK)
        grown = sorted((Counter(_fd_targets(pid)) - Counter(base_fds)).elements())
        assert after[0] <= base[0] + FD_SLACK, f"file descriptors {base[0]} -> {after[0]}: {grown}"
        assert after[1] <= base[1] + SLACK, f"threads {base[1]} -> {after[1]}"
