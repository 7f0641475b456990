"""Metering on a real orchestrator (Docker, SQLite, sampling every second): calls brokered to a
plugin installed from a local bundle reach ``GET /v1/metering`` through the resource monitor's
series, as JSON and as CSV, and a viewer may not read the report."""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fixtures.orchestrator import OrchestratorProcess
from tests.fixtures.plugins import make_plugin

from .conftest import sqlite_orchestrator

pytestmark = [pytest.mark.docker, pytest.mark.slow]

PID = "com.summit-tests.metered"
CALLS = 5


@pytest.fixture(scope="module")
def orch(base_image, docker_client, tmp_path_factory) -> Iterator[OrchestratorProcess]:  # type: ignore[no-untyped-def]
    with sqlite_orchestrator(
        tmp_path_factory, docker_client, "metering", monitor_interval_s="1"
    ) as o:
        yield o


def _row(orch: OrchestratorProcess) -> dict[str, Any] | None:
    r = orch.client.get("/v1/metering", params={"since": "-10m"})
    assert r.status_code == 200, r.text
    return next((row for row in r.json()["plugins"] if row["plugin_id"] == PID), None)


def test_calls_to_a_local_plugin_are_metered_and_only_an_admin_reads_them(
    orch: OrchestratorProcess, tmp_path: Path
) -> None:
    assert orch.install_dir(make_plugin(tmp_path / "p", id=PID)).status_code == 201
    assert orch.client.post(f"/v1/plugins/{PID}/enable").status_code == 200
    for i in range(CALLS):
        r = orch.client.post(
            "/v1/extension-points/analyzer/execute", json={"input": f"call {i}", "plugins": [PID]}
        )
        assert r.status_code == 200, r.text

    # A bucket counts once it is closed (10 s) and sampled (every second here).
    deadline = time.monotonic() + 40
    row = _row(orch)
    while (row is None or row["calls"] < CALLS) and time.monotonic() < deadline:
        time.sleep(1)
        row = _row(orch)
    assert row is not None and row["calls"] == CALLS, row
    assert row["version"] == "1.0.0" and row["installed"] is True
    assert row["source"] == "local" and row["publisher_id"] is None
    assert row["pricing"] == "free" and row["amount_due"] is None
    assert row["samples"] >= 1

    r = orch.client.get("/v1/metering", params={"since": "-10m", "format": "csv"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = {line["plugin_id"]: line for line in csv.DictReader(io.StringIO(r.text))}
    assert rows[PID]["calls"] == str(CALLS) and rows[PID]["source"] == "local"

    token = orch.client.post("/v1/tokens", json={"name": "dashboards", "role": "viewer"})
    assert token.status_code == 201, token.text
    with httpx.Client(
        base_url=orch.url, headers={"Authorization": f"Bearer {token.json()['token']}"}
    ) as viewer:
        assert viewer.get("/v1/usage").status_code == 200
        refused = viewer.get("/v1/metering", params={"since": "-10m"})
        assert refused.status_code == 403
        assert refused.json()["error"]["details"] == {"role": "viewer", "required": "admin"}
    orch.client.delete(f"/v1/tokens/{token.json()['id']}")

    bad = orch.client.get("/v1/metering", params={"since": "-1h", "until": "-2h"})
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_request"
