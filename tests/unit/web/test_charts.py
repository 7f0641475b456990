"""The UI's chart specs, and the checks a visualization plugin's answer passes before it is
drawn in an operator's browser."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from orchestrator.domain.errors import InvalidInput
from orchestrator.web import charts


def bar_spec(**extra: Any) -> dict[str, Any]:
    return {
        "$schema": "https://vega.github.io/schema/vega-lite/v5.json",
        "data": {"values": [{"category": "a", "value": 1}]},
        "mark": {"type": "bar"},
        "encoding": {
            "x": {"field": "category", "type": "nominal"},
            "y": {"field": "value", "type": "quantitative"},
        },
        **extra,
    }


def test_a_plain_spec_is_drawn_without_its_schema_and_fits_its_box() -> None:
    chart = charts.plugin_chart("p", {"format": "vega-lite", "spec": bar_spec()}, title="T")
    assert chart.spec is not None and "$schema" not in chart.spec
    assert chart.spec["width"] == "container"
    assert json.loads(chart.spec_json)["data"]["values"] == [{"category": "a", "value": 1}]


@pytest.mark.parametrize(
    "spec",
    [
        bar_spec(data={"url": "https://tracker.example/data.json"}),
        bar_spec(
            layer=[{"mark": "image", "encoding": {"url": {"value": "https://x.example/p.png"}}}]
        ),
        bar_spec(encoding={"href": {"value": "javascript:alert(1)"}}),
        bar_spec(usermeta={"embedOptions": {"loader": {"baseURL": "https://x.example"}}}),
        bar_spec(transform=[{"lookup": "k", "from": {"data": {"url": "/v1/tokens"}}}]),
    ],
    ids=["data-url", "image-url", "href", "usermeta", "nested-url"],
)
def test_a_spec_that_would_load_or_link_anything_is_refused(spec: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput) as refused:
        charts.plugin_chart("p", {"format": "vega-lite", "spec": spec}, title="T")
    assert refused.value.code == "unsafe_chart"
    assert "may not load, link or carry" in refused.value.message


def test_oversized_deep_or_odd_answers_are_refused() -> None:
    big = bar_spec(data={"values": [{"v": "x" * 1000}] * 600})
    deep: dict[str, Any] = {}
    node = deep
    for _ in range(40):
        node["n"] = {}
        node = node["n"]
    for output, words in (
        ({"format": "vega-lite", "spec": big}, "over 512 KiB"),
        ({"format": "vega-lite", "spec": bar_spec(deep=deep)}, "deeper than"),
        ({"format": "vega-lite", "spec": bar_spec(bad=float("nan"))}, "not plain JSON"),
        ({"format": "vega-lite"}, "needs its spec"),
        ({"format": "html", "html": "<script>"}, "unknown format"),
        (["not", "an", "object"], "not an object"),
        ({"format": "svg", "svg": 3}, "needs its svg text"),
    ):
        with pytest.raises(InvalidInput) as refused:
            charts.plugin_chart("p", output, title="T")
        assert words in refused.value.message, (output if len(str(output)) < 200 else "", words)


def test_an_svg_answer_becomes_an_image_never_markup_in_the_page() -> None:
    svg = '<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'
    chart = charts.plugin_chart("p", {"format": "svg", "svg": svg}, title="T")
    assert chart.spec is None and chart.image is not None
    prefix = "data:image/svg+xml;base64,"
    assert chart.image.startswith(prefix)
    assert base64.b64decode(chart.image[len(prefix) :]).decode() == svg


POINTS = [
    {
        "at": "2026-12-05T20:00:00Z",
        "calls_in_step": 5,
        "errors_in_step": 2,
        "call_ms_in_step": 50.0,
        "call_ms_mean": 10.0,
        "memory_used_mb": 20.5,
        "memory_limit_mb": 256.0,
        "cpu_used_ms": 500.0,
    },
    {
        "at": "2026-12-05T20:00:10Z",
        "calls_in_step": 0,
        "errors_in_step": 0,
        "call_ms_in_step": 0,
        "call_ms_mean": None,
        "memory_used_mb": 21.0,
        "memory_limit_mb": 256.0,
        "cpu_used_ms": None,
    },
]


def values(chart: charts.Chart) -> list[dict[str, Any]]:
    assert chart.spec is not None
    return list(chart.spec["data"]["values"])


def test_a_plugins_charts_split_calls_into_ok_and_errors() -> None:
    made = {c.key: c for c in charts.plugin_series_charts({"step_s": 10, "points": POINTS})}
    assert set(made) == {"calls", "latency", "memory", "cpu"}
    first = [v for v in values(made["calls"]) if v["at"] == POINTS[0]["at"]]
    assert {v["series"]: v["value"] for v in first} == {"ok": 3, "error": 2}
    assert [v["value"] for v in values(made["latency"])] == [10.0]  # no calls: no point
    # 500 ms of CPU in a 10 s step is 5 % of one core.
    assert [v["value"] for v in values(made["cpu"])] == [5.0]
    assert made["calls"].rows[-1][1:] in {("ok", 0), ("error", 0)}
    assert made["calls"].title == "Calls (per 10 s)"


def test_an_empty_range_says_so_instead_of_an_empty_chart() -> None:
    made = charts.plugin_series_charts({"step_s": 10, "points": []})
    assert all(c.note and not c.rows for c in made)


def test_the_fleet_totals_are_busiest_first_and_feed_visualizations() -> None:
    fleet = {"step_s": 10, "plugins": {"a.quiet": POINTS[1:], "b.busy": POINTS}}
    table = charts.totals(fleet)
    assert [t["plugin"] for t in table] == ["b.busy", "a.quiet"]
    busy = table[0]
    assert busy["calls"] == 5 and busy["errors"] == 2 and busy["error_share"] == 0.4
    assert busy["call_ms_mean"] == 10.0 and busy["memory_peak_mb"] == 21.0
    assert table[1]["call_ms_mean"] is None
    assert charts.rows_for("calls", table) == [
        {"category": "b.busy", "value": 5},
        {"category": "a.quiet", "value": 0},
    ]
    assert charts.rows_for("call_ms_mean", table) == [{"category": "b.busy", "value": 10.0}]
    lines = {c.key: c for c in charts.fleet_charts(fleet)}
    assert {v["series"] for v in values(lines["memory"])} == {"a.quiet", "b.busy"}
