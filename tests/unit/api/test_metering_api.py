"""``GET /v1/metering`` in process, behind the real access rule: an admin gets the report as
JSON or as a CSV download, a viewer gets 403, and bad windows are 422 in the house shape."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from orchestrator.api.errors import install_error_handlers
from orchestrator.api.routes import metering as metering_routes
from orchestrator.catalog.metering import MeteringService
from orchestrator.monitor.series import UsageSeries
from orchestrator.security.access import ApiTokens, Role, required_role
from orchestrator.services.extensions import AdminAccess
from orchestrator.store import crud
from orchestrator.store.db import session_scope
from tests.unit.monitor.conftest import FakeClock

T0 = 1_700_002_800.0
ADMIN = "admin-secret"
PLUGIN = "com.local.tool"


@pytest.fixture
def tokens(engine: Engine) -> ApiTokens:
    return ApiTokens(engine)


@pytest.fixture
def client(engine: Engine, tokens: ApiTokens) -> Iterator[TestClient]:
    clock = FakeClock(T0)
    with session_scope(engine) as s:
        crud.add_plugin(
            s, plugin_id=PLUGIN, version="2.0.0", state="ACTIVE", config={}, resources={}
        )
        crud.add_version(
            s,
            plugin_id=PLUGIN,
            version="2.0.0",
            manifest={"id": PLUGIN, "version": "2.0.0", "license": "=cmd"},
            image="summit/com.local.tool:2.0.0",
            image_id=None,
            source="bundle",
            source_digest=None,
        )
    series = UsageSeries(engine, clock=clock)
    for i in range(30):
        series.record([{"plugin_id": PLUGIN, "calls": 2, "cpu_usec": 100_000}], at=T0 + 10 * i)
    clock.now = T0 + 600
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(metering_routes.router)
    app.state.access = AdminAccess(admin_token=ADMIN, tokens=tokens)
    app.state.metering = MeteringService(engine=engine, clock=clock)
    with TestClient(app) as c:
        yield c


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_the_rule_is_admin_only() -> None:
    assert required_role("GET", "/v1/metering") is Role.ADMIN
    assert required_role("HEAD", "/v1/metering") is Role.ADMIN
    assert required_role("GET", "/v1/usage") is Role.VIEWER  # the rule is no wider than it


def test_an_admin_reads_the_report_as_json(client: TestClient) -> None:
    r = client.get("/v1/metering", params={"since": "-10m", "until": "now"}, headers=auth(ADMIN))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["resolution_s"] == 10 and body["complete"] is True
    [row] = body["plugins"]
    assert row["plugin_id"] == PLUGIN and row["version"] == "2.0.0"
    assert row["calls"] == 60 and row["cpu_seconds"] == 3.0
    assert row["source"] == "local" and row["publisher_id"] is None
    assert body["totals"] == [
        {
            "publisher_id": None,
            "publisher_name": None,
            "currency": None,
            "plugins": 1,
            "calls": 60,
            "cpu_seconds": 3.0,
            "amount_due": None,
        }
    ]


def test_an_admin_downloads_the_report_as_csv(client: TestClient) -> None:
    r = client.get(
        "/v1/metering",
        params={"since": "2023-11-14T23:00:00Z", "until": "2023-11-14T23:05:00Z", "format": "csv"},
        headers=auth(ADMIN),
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "text/csv; charset=utf-8"
    assert r.headers["content-disposition"] == (
        'attachment; filename="summit-metering-2023-11-14T230000Z-2023-11-14T230500Z.csv"'
    )
    [row] = list(csv.DictReader(io.StringIO(r.text)))
    assert row["plugin_id"] == PLUGIN and row["calls"] == "60"
    assert row["license"] == "'=cmd"


def test_a_viewer_is_refused(client: TestClient, tokens: ApiTokens) -> None:
    viewer = tokens.create(name="dashboards", role="viewer").token
    operator = tokens.create(name="ops", role="operator").token
    for token in (viewer, operator):
        r = client.get("/v1/metering", params={"since": "-1h"}, headers=auth(token))
        assert r.status_code == 403, r.text
        assert r.json()["error"]["code"] == "forbidden"
    assert client.get("/v1/metering", params={"since": "-1h"}).status_code == 401


@pytest.mark.parametrize(
    "params",
    [
        {"since": "-1h", "until": "-2h"},
        {"since": "-400d"},
        {"since": "last tuesday"},
        {"since": "-1h", "until": "2023-02-30"},
        {},
        {"since": "-1h", "format": "xlsx"},
        {"since": "-" + "9" * 60 + "d"},
    ],
)
def test_bad_windows_are_422_in_the_house_shape(client: TestClient, params: dict[str, str]) -> None:
    r = client.get("/v1/metering", params=params, headers=auth(ADMIN))
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "invalid_request" and error["message"]
    assert error["details"]
