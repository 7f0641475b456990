"""``GET /v1/plugins/{id}/usage`` and ``GET /v1/usage`` over a real series (SQLite)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from orchestrator.api.deps import authorize
from orchestrator.api.errors import install_error_handlers
from orchestrator.api.routes import usage as usage_routes
from orchestrator.monitor.series import UsageSeries
from orchestrator.monitor.service import UsageService, parse_step, parse_time
from tests.unit.monitor.conftest import FakeClock, add_plugin

T0 = 1_700_002_800.0
MIB = 1024 * 1024


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def client(engine: Engine, clock: FakeClock) -> Iterator[TestClient]:
    add_plugin(engine, "p", container_id="a" * 64, created_at=T0 - 10)
    add_plugin(engine, "idle", state="LOADED")
    series = UsageSeries(engine, clock=clock)
    for i in range(120):  # 20 minutes of 10 s samples
        series.record(
            [
                {
                    "plugin_id": "p",
                    "memory_bytes": 50 * MIB,
                    "memory_limit_bytes": 64 * MIB,
                    "cpu_usec": 100_000,
                    "cpu_total_usec": 100_000 * (i + 1),
                    "pids": 3,
                    "storage_bytes": 2 * MIB,
                    "network_bytes": 10,
                    "network_total_bytes": 10 * (i + 1),
                    "calls": 1,
                    "calls_total": i + 1,
                }
            ],
            at=T0 + 10 * i,
        )
    clock.now = T0 + 1200
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(usage_routes.router)
    app.state.usage = UsageService(
        engine=engine,
        series=series,
        egress_usage=lambda _p: {"bytes_out": 5, "bytes_in": 7},
        clock=clock,
    )
    app.dependency_overrides[authorize] = lambda: "admin"
    with TestClient(app) as c:
        yield c


def test_now_keeps_the_old_fields(client: TestClient) -> None:
    body = client.get("/v1/plugins/p/usage").json()
    assert body["plugin"] == "p" and body["limits"]["memory_mb"] == 64
    assert body["usage"]["memory_bytes"] == 50 * MIB and body["usage"]["pids"] == 3
    assert body["usage"]["cpu_percent"] == 1.0  # 100 ms of CPU in a 10 s period
    assert body["network"] == {"bytes_out": 5, "bytes_in": 7}
    current = body["current"]
    assert current["memory_used_mb"] == 50.0 and current["storage_used_mb"] == 2.0
    assert current["cpu_time_ms"] == 12000.0 and current["calls"] == 120
    assert current["network_bytes_transferred"] == 1200
    assert "series" not in body


def test_a_range_gives_a_series(client: TestClient) -> None:
    body = client.get("/v1/plugins/p/usage", params={"since": "-10m", "step": "1m"}).json()
    series = body["series"]
    assert series["step_s"] == 60
    points = series["points"]
    assert len(points) == 10
    assert all(p["samples"] == 6 and p["cpu_used_ms"] == 600.0 for p in points)
    assert points[-1]["cpu_time_ms"] == 12000.0 and points[0]["memory_used_mb"] == 50.0
    since = datetime.fromtimestamp(T0, UTC).isoformat()
    body = client.get(
        "/v1/plugins/p/usage", params={"since": since, "until": "now", "step": "300"}
    ).json()
    assert [p["samples"] for p in body["series"]["points"]] == [30, 30, 30, 30]
    assert body["series"]["points"][0]["at"] == "2023-11-14T23:00:00Z"


@pytest.mark.parametrize(
    ("params", "path"),
    [
        ({"since": "yesterday"}, "query.since"),
        ({"until": "-1x"}, "query.until"),
        ({"step": "0"}, "query.step"),
        ({"step": "fast"}, "query.step"),
        ({"since": "-1h", "until": "-2h"}, "query.since"),
        ({"since": "-30d", "step": "10s"}, "query.step"),
    ],
)
def test_bad_input_is_422_with_the_error_shape(
    client: TestClient, params: dict[str, str], path: str
) -> None:
    r = client.get("/v1/plugins/p/usage", params=params)
    assert r.status_code == 422
    error = r.json()["error"]
    assert error["code"] == "invalid_request"
    assert error["details"][0]["path"] == path


def test_unknown_plugin_is_404(client: TestClient) -> None:
    r = client.get("/v1/plugins/nope/usage")
    assert r.status_code == 404 and r.json()["error"]["code"] == "plugin_not_found"


def test_all_plugins_now(client: TestClient, clock: FakeClock) -> None:
    body = client.get("/v1/usage").json()
    rows = {row["plugin"]: row for row in body["plugins"]}
    assert set(rows) == {"p", "idle"}
    assert rows["p"]["usage"]["memory_used_mb"] == 50.0 and rows["p"]["state"] == "ACTIVE"
    assert rows["idle"]["usage"] is None and rows["idle"]["state"] == "LOADED"
    clock.advance(3600)  # nothing sampled for an hour: stale, not "now"
    assert client.get("/v1/usage").json()["plugins"][1]["usage"] is None


def test_parsing() -> None:
    assert parse_time("-1h", field="since", now=10_000) == 6400
    assert parse_time("2024-01-01T00:00:00Z", field="since", now=0) == 1704067200
    assert parse_time("2024-01-01T01:00:00+01:00", field="since", now=0) == 1704067200
    assert parse_time("2024-01-01T00:00:00", field="since", now=0) == 1704067200
    assert (parse_step("90"), parse_step("5m"), parse_step("1d")) == (90, 300, 86400)
