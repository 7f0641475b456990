"""The analytics dashboard (calls, errors, latency and resource use over time, across
plugins; a ``visualization`` plugin drawing the dashboard's numbers) and the charts of one
plugin's page. Every number comes from the resource monitor's ``UsageService``, as
``GET /v1/usage`` and ``GET /v1/plugins/{id}/usage`` answer it."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool
from starlette.responses import Response

from orchestrator.api.deps import extensions_of
from orchestrator.domain.errors import InvalidInput, SummitError
from orchestrator.web import charts
from orchestrator.web.guard import UiContext, UiDep, UiRoute

router = APIRouter(route_class=UiRoute)

# What a range selector offers: its label and the ``since`` the usage API takes.
RANGES = {"1h": "-1h", "6h": "-6h", "24h": "-24h", "7d": "-7d"}
VISUALIZATION = "visualization"


def range_of(value: str) -> str:
    if value not in RANGES:
        raise InvalidInput(
            f"range: {value[:16]!r} is not one of {', '.join(RANGES)}",
            details=[{"path": "query.range", "message": f"one of {', '.join(RANGES)}"}],
        )
    return value


def plugin_charts(ui: UiContext, plugin_id: str, window: str) -> dict[str, Any]:
    """What a plugin's page shows of its usage over ``window``: its charts, or why none."""
    try:
        answer = ui.request.app.state.usage.plugin_usage(plugin_id, since=RANGES[window])
    except SummitError as exc:
        return {"charts": [], "charts_note": exc.message, "window": window, "ranges": RANGES}
    return {
        "charts": charts.plugin_series_charts(answer["series"]),
        "charts_note": "",
        "window": window,
        "ranges": RANGES,
    }


def _visualizers(ui: UiContext) -> list[str]:
    """The ACTIVE plugins that draw charts, when this role may call them."""
    if not ui.can("POST", f"/v1/extension-points/{VISUALIZATION}/execute"):
        return []
    points = extensions_of(ui.request.app.state).providers()
    providers: list[dict[str, Any]] = next(
        (e["providers"] for e in points if e["point"] == VISUALIZATION), []
    )
    return sorted({p["plugin"] for p in providers})


async def _fleet(ui: UiContext, window: str) -> dict[str, Any]:
    fleet: dict[str, Any] = await run_in_threadpool(
        ui.request.app.state.usage.fleet_usage, since=RANGES[window]
    )
    return fleet


def _dashboard(
    ui: UiContext,
    window: str,
    fleet: dict[str, Any],
    *,
    visualizers: list[str],
    drawn: Any = None,
    status_code: int = 200,
    **chosen: str,
) -> Response:
    return ui.render(
        "analytics.html",
        status_code,
        window=window,
        ranges=RANGES,
        charts=charts.fleet_charts(fleet),
        totals=charts.totals(fleet),
        visualizers=visualizers,
        datasets=charts.DATASETS,
        drawn=drawn,
        chosen=chosen,
    )


@router.get("/analytics", name="ui_analytics")
async def analytics(ui: UiDep, range: str = Query("1h", max_length=8)) -> Response:
    await ui.require("GET", "/v1/usage")
    window = range_of(range)
    return _dashboard(ui, window, await _fleet(ui, window), visualizers=_visualizers(ui))


@router.post("/analytics/draw")
async def draw(ui: UiDep) -> Response:
    """Hand the dashboard's per-plugin totals to a ``visualization`` plugin, as
    ``POST /v1/extension-points/visualization/execute {"plugins": [id]}`` would, and draw
    what it answers once :func:`charts.plugin_chart` passes it."""
    form = await ui.form()
    await ui.require("GET", "/v1/usage")
    await ui.require("POST", f"/v1/extension-points/{VISUALIZATION}/execute")
    window = range_of(str(form.get("range") or "1h"))
    plugin_id = str(form.get("plugin") or "")
    dataset = str(form.get("dataset") or "calls")
    drawn: dict[str, Any] = {"plugin": plugin_id}
    status = 200
    fleet = await _fleet(ui, window)  # read once: drawn by the plugin and shown on the page
    visualizers = _visualizers(ui)
    try:
        if dataset not in charts.DATASETS:
            raise InvalidInput(f"dataset: one of {', '.join(charts.DATASETS)}")
        if plugin_id not in visualizers:
            raise InvalidInput(f"{plugin_id[:128]!r} is no ACTIVE visualization plugin")
        title = charts.DATASETS[dataset]
        payload = {
            "data": charts.rows_for(dataset, charts.totals(fleet)),
            "title": title,
            "options": {"x": "category", "y": "value"},
        }
        result = await extensions_of(ui.request.app.state).execute(
            VISUALIZATION, payload, mode="first", plugins=[plugin_id]
        )
        drawn["chart"] = charts.plugin_chart(plugin_id, result["output"], title=title)
    except SummitError as exc:
        drawn["error"] = {"code": exc.code, "message": exc.message}
        status = exc.status_code
    return _dashboard(
        ui,
        window,
        fleet,
        visualizers=visualizers,
        drawn=drawn,
        status_code=status,
        plugin=plugin_id,
        dataset=dataset,
    )
