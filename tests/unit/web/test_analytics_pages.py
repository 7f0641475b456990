"""The analytics dashboard and a plugin's charts in process, over the real usage series
(SQLite) and the app the plugin-page tests build: what the monitor recorded is what the
charts and the table carry, a viewer sees the numbers but may not have a plugin draw them,
and a range that is not offered is refused."""

from __future__ import annotations

import html
import json
import re
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.unit.services.conftest import Services, services, settings
from tests.unit.web.test_plugin_pages import PID, app, client, csrf_of, post, sign_in, tokens

__all__ = ["app", "client", "services", "settings", "tokens"]  # the shared fixtures


def record_calls(app: FastAPI, plugin_id: str, *, calls: int, errors: int, usec: int) -> None:
    app.state.usage.series.record(
        [
            {
                "plugin_id": plugin_id,
                "calls": calls,
                "errors": errors,
                "call_usec": usec,
                "memory_bytes": 32 * 2**20,
            }
        ]
    )


def spec_of(page: str, chart: str) -> dict[str, Any]:
    found = re.search(rf'id="chart-{chart}">.*?data-vega-spec="([^"]+)"', page, re.S)
    assert found, f"no {chart} chart on the page"
    return dict(json.loads(html.unescape(found.group(1))))


def test_the_dashboard_charts_what_the_monitor_recorded(
    client: TestClient, app: FastAPI, tokens: dict[str, str], services: Services
) -> None:
    services.install(PID, version="1.0.0")
    record_calls(app, PID, calls=4, errors=1, usec=20_000)
    sign_in(client, tokens["viewer"])
    page = client.get("/ui/analytics").text
    calls = spec_of(page, "calls")["data"]["values"]
    assert [(v["series"], v["value"]) for v in calls] == [(PID, 4)]
    row = re.search(rf'<tr data-plugin="{re.escape(PID)}">(.*?)</tr>', page, re.S)
    assert row, page
    cells = re.findall(r"<td[^>]*>(.*?)</td>", row.group(1), re.S)
    assert [re.sub(r"<[^>]+>", "", c).strip() for c in cells[1:5]] == [
        "4",
        "1",
        "25.0 %",
        "5.00",
    ]
    # A viewer may read the numbers, not have a plugin draw them.
    assert 'action="/ui/analytics/draw"' not in page
    refused = post(client, "/ui/analytics/draw", csrf_of(page), plugin="x", dataset="calls")
    assert refused.status_code == 403


def test_a_plugins_page_charts_its_calls_split_by_outcome(
    client: TestClient, app: FastAPI, tokens: dict[str, str], services: Services
) -> None:
    services.install(PID, version="1.0.0")
    record_calls(app, PID, calls=3, errors=2, usec=9_000)
    sign_in(client, tokens["admin"])
    page = client.get(f"/ui/plugins/{PID}?range=6h").text
    values = spec_of(page, "calls")["data"]["values"]
    assert sorted((v["series"], v["value"]) for v in values) == [("error", 2), ("ok", 1)]
    assert [v["value"] for v in spec_of(page, "latency")["data"]["values"]] == [3.0]
    assert 'href="/ui/plugins/' + PID + '?range=6h" aria-current="true"' in page


def test_drawing_with_no_such_plugin_or_dataset_is_refused_clearly(
    client: TestClient, tokens: dict[str, str]
) -> None:
    csrf = sign_in(client, tokens["operator"])
    for fields, words in (
        ({"plugin": "com.nobody.here", "dataset": "calls"}, "no ACTIVE visualization plugin"),
        ({"plugin": "com.nobody.here", "dataset": "passwords"}, "dataset: one of"),
    ):
        r = post(client, "/ui/analytics/draw", csrf, **fields)
        assert r.status_code == 422, r.text
        assert words in html.unescape(r.text)


def test_a_range_not_offered_is_refused(client: TestClient, tokens: dict[str, str]) -> None:
    sign_in(client, tokens["viewer"])
    for path in ("/ui/analytics?range=1y", f"/ui/plugins/{PID}?range=-1000d"):
        r = client.get(path)
        assert r.status_code == 422, (path, r.status_code)
        assert "is not one of 1h, 6h, 24h, 7d" in html.unescape(r.text)
