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
                    # Every third call fails; each takes 2.5 ms.
                    "errors": 1 if i % 3 == 0 else 0,
                    "errors_total": i // 3 + 1,
                    "call_usec": 2_500,
                    "call_usec_total": 2_500 * (i + 1),
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
    assert current["errors"] == 40
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


def test_series_points_count_errors_and_call_time(client: TestClient) -> None:
    body = client.get("/v1/plugins/p/usage", params={"since": "-10m", "step": "1m"}).json()
    points = body["series"]["points"]
    assert len(points) == 10
    for point in points:
        assert point["calls_in_step"] == 6 and point["errors_in_step"] == 2
        assert point["call_ms_in_step"] == 15.0 and point["call_ms_mean"] == 2.5
    assert points[-1]["errors"] == 40 and points[-1]["calls"] == 120


def record_q(engine: Engine, client: TestClient, *, calls: int) -> None:
    """A second plugin, sampled over the last five minutes, each call taking 1.25 ms."""
    add_plugin(engine, "q", container_id="b" * 64, created_at=T0)
    series = client.app.state.usage.series  # type: ignore[attr-defined]
    for i in range(30):
        series.record(
            [
                {
                    "plugin_id": "q",
                    "calls": calls,
                    "calls_total": calls * (i + 1),
                    "errors": 0,
                    "errors_total": 0,
                    "call_usec": 1_250 * calls,
                    "call_usec_total": 1_250 * calls * (i + 1),
                }
            ],
            at=T0 + 900 + 10 * i,
        )


def test_all_plugins_over_time(engine: Engine, client: TestClient) -> None:
    record_q(engine, client, calls=1)
    body = client.get("/v1/usage", params={"since": "-10m", "step": "5m"}).json()
    # The answer of now is all there, and the series beside it.
    assert {row["plugin"] for row in body["plugins"]} == {"idle", "p", "q"}
    series = body["series"]
    assert series["step_s"] == 300
    assert series["since"] == "2023-11-14T23:10:00Z" and series["until"] == "2023-11-14T23:20:00Z"
    # A plugin without points in the range (never sampled) is not in the series.
    assert sorted(series["plugins"]) == ["p", "q"]
    p, q = series["plugins"]["p"], series["plugins"]["q"]
    assert [x["calls_in_step"] for x in p] == [30, 30]
    assert [x["errors_in_step"] for x in p] == [10, 10]
    assert [x["call_ms_mean"] for x in p] == [2.5, 2.5]
    assert [x["calls_in_step"] for x in q] == [30] and q[0]["call_ms_mean"] == 1.25
    assert q[0]["call_ms_in_step"] == 37.5 and q[0]["errors"] == 0
    # Without a step the answer picks one; without any of the three, no series at all.
    auto = client.get("/v1/usage", params={"since": "-10m"}).json()["series"]
    assert auto["step_s"] == 10 and len(auto["plugins"]["p"]) == 60
    assert "series" not in client.get("/v1/usage").json()


def test_no_calls_in_a_step_has_no_mean(engine: Engine, client: TestClient) -> None:
    record_q(engine, client, calls=0)
    body = client.get("/v1/usage", params={"since": "-5m", "step": "1m"}).json()
    q = body["series"]["plugins"]["q"]
    assert [x["calls_in_step"] for x in q] == [0] * 5
    assert [x["call_ms_mean"] for x in q] == [None] * 5
    assert [x["call_ms_in_step"] for x in q] == [0.0] * 5


@pytest.mark.parametrize(
    ("params", "path"),
    [
        ({"since": "-30d", "step": "10s"}, "query.step"),
        ({"step": "fast"}, "query.step"),
        ({"since": "soon"}, "query.since"),
        ({"since": "-1m", "until": "-2m"}, "query.since"),
    ],
)
def test_all_plugins_refuse_bad_ranges(
    client: TestClient, params: dict[str, str], path: str
) -> None:
    r = client.get("/v1/usage", params=params)
    assert r.status_code == 422
    error = r.json()["error"]
    assert error["code"] == "invalid_request" and error["details"][0]["path"] == path


def test_all_plugins_together_stay_within_the_bound(engine: Engine, client: TestClient) -> None:
    record_q(engine, client, calls=1)
    client.app.state.usage.max_fleet_points = 15  # type: ignore[attr-defined]
    # Ten points for one plugin are fine; ten for each of two are too many together.
    params = {"since": "-10m", "step": "1m"}
    assert client.get("/v1/plugins/p/usage", params=params).status_code == 200
    r = client.get("/v1/usage", params=params)
    assert r.status_code == 422 and r.json()["error"]["details"][0]["path"] == "query.step"
    assert "2 plugins" in r.json()["error"]["message"]
    # Without a step, the step grows until both fit.
    series = client.get("/v1/usage", params={"since": "-10m"}).json()["series"]
    assert series["step_s"] == 300
    assert sum(len(points) for points in series["plugins"].values()) <= 15
