"""A plugin whose accept queue is briefly full is retried, not answered 502: nothing was sent
on a connection that failed to open, so any extension may be retried."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.fixtures.orchestrator import TOKEN, OrchestratorProcess
from tests.fixtures.plugins import make_plugin
from tests.integration.conftest import sqlite_orchestrator

pytestmark = [pytest.mark.docker, pytest.mark.slow]

PLUGIN = "com.summit-tests.backlog"
CALLS = 32


@pytest.fixture(scope="module")
def orch(base_image, docker_client, tmp_path_factory) -> Iterator[OrchestratorProcess]:  # type: ignore[no-untyped-def]
    with sqlite_orchestrator(
        tmp_path_factory, docker_client, "backlog", rate_limit_requests="0"
    ) as orch:
        folder = make_plugin(tmp_path_factory.mktemp("plugin") / "backlog", "backlog")
        r = orch.install_dir(folder)
        assert r.status_code == 201, r.text
        assert orch.client.post(f"/v1/plugins/{PLUGIN}/enable").status_code == 200
        yield orch


def test_concurrent_calls_to_a_backlog_of_one_all_succeed(orch: OrchestratorProcess) -> None:
    def call(i: int) -> tuple[int, Any]:
        with httpx.Client(
            base_url=orch.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60
        ) as client:
            r = client.post(
                "/v1/extension-points/analyzer/execute",
                json={"input": {"i": i}, "plugins": [PLUGIN]},
            )
            return r.status_code, r.json()

    for _ in range(3):  # the race is likely, not certain, on any one round
        with ThreadPoolExecutor(CALLS) as pool:
            answers = list(pool.map(call, range(CALLS)))
        failed = [a for a in answers if a[0] != 200 or "output" not in a[1]["results"][0]]
        assert not failed, failed[:3]
        assert sorted(a[1]["results"][0]["output"]["echo"]["i"] for a in answers) == list(
            range(CALLS)
        )
