"""The UI's charts, as Vega-Lite specs written on the server, and the check a plugin's chart
passes before it is drawn.

A chart is a spec with its data inline (no chart fetches anything) that ``static/ui.js``
draws with the vendored renderer, plus a small table the page shows in its place when
scripts are off. Series come from the resource monitor's answers (``UsageService``), in its
units: MiB, milliseconds, counts per step.

A ``visualization`` plugin's output is untrusted. A Vega-Lite spec is data, not code, but it
can ask the renderer to load a URL (``data.url``, an image mark's ``url``), to make marks
links (``href``) or to carry anything in ``usermeta``; :func:`plugin_chart` refuses such a
spec whole rather than guess which part is safe. Expressions are left in: the renderer
evaluates them with Vega's interpreter, which runs no script (``ui.js``), and the page's
Content-Security-Policy forbids ``eval`` and other origins anyway. An SVG answer is shown as
an image (``data:`` URL in an ``<img>``), where a browser runs no script and loads nothing.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from orchestrator.domain.errors import InvalidInput

__all__ = [
    "DATASETS",
    "MAX_PLUGIN_SPEC_BYTES",
    "Chart",
    "fleet_charts",
    "plugin_chart",
    "plugin_series_charts",
    "rows_for",
    "totals",
]

VEGA_LITE = "https://vega.github.io/schema/vega-lite/v6.json"
MAX_PLUGIN_SPEC_BYTES = 512 * 1024
MAX_PLUGIN_SVG_BYTES = 512 * 1024
# Keys that make the renderer load or link something, or carry arbitrary payloads.
REFUSED_KEYS = frozenset({"url", "href", "usermeta", "loader"})
MAX_DEPTH = 32
FALLBACK_ROWS = 12
CALL_COLORS = {"ok": "#2f6f5e", "error": "#a32020"}  # the stylesheet's brand and bad


@dataclass(frozen=True)
class Chart:
    """``spec``: Vega-Lite, drawn by ``ui.js`` (None when ``image`` is set: an SVG data URL);
    ``rows``/``columns``: the table shown without scripts."""

    key: str
    title: str
    spec: dict[str, Any] | None = None
    image: str | None = None
    columns: tuple[str, ...] = ()
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    note: str = ""

    @property
    def spec_json(self) -> str:
        return json.dumps(self.spec, separators=(",", ":"), allow_nan=False)


def _spec(
    values: list[dict[str, Any]],
    *,
    mark: dict[str, Any],
    y_title: str,
    step_s: int,
    stack: bool = False,
    color_title: str = "",
    colors: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    # Times in UTC, as every page shows them; a date once a step is minutes long.
    time_format = "%H:%M" if step_s < 300 else "%d %b %H:%M"
    color: dict[str, Any] = {"field": "series", "type": "nominal", "title": color_title or None}
    if colors:
        color["scale"] = {"domain": list(colors), "range": list(colors.values())}
    encoding: dict[str, Any] = {
        "x": {
            "field": "at",
            "type": "temporal",
            "title": None,
            "scale": {"type": "utc"},
            "axis": {"format": time_format, "formatType": "utc", "labelOverlap": True},
        },
        "y": {
            "field": "value",
            "type": "quantitative",
            "title": y_title,
            "axis": {"format": "~r", **({"tickMinStep": 1} if mark["type"] == "bar" else {})},
            **({} if stack else {"stack": None}),
        },
        "color": color,
    }
    return {
        "$schema": VEGA_LITE,
        "width": "container",
        "height": 160,
        "autosize": {"type": "fit-x", "contains": "padding"},
        "data": {"values": values},
        # A line through one point draws nothing: each point is marked too.
        "mark": {**mark, "point": True} if mark["type"] == "line" else mark,
        "encoding": encoding,
        "config": {"legend": {"orient": "bottom"}, "view": {"stroke": None}},
    }


def _long(points: Sequence[Mapping[str, Any]], series: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Points as long rows ``{at, series, value}``: one per point and named series, where
    ``series`` maps a name to a point's key or to a function of the point."""
    rows = []
    for p in points:
        for name, pick in series.items():
            value = pick(p) if callable(pick) else p.get(pick)
            if value is not None:
                rows.append({"at": p["at"], "series": name, "value": value})
    return rows


def _cpu_percent(step_s: int) -> Any:
    def pick(p: Mapping[str, Any]) -> float | None:
        used = p.get("cpu_used_ms")
        return round(used / (step_s * 1000) * 100, 2) if used is not None and step_s else None

    return pick


def _ok_calls(p: Mapping[str, Any]) -> int | None:
    calls = p.get("calls_in_step")
    return None if calls is None else calls - (p.get("errors_in_step") or 0)


def _table(rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [(r["at"], r["series"], r["value"]) for r in rows[-FALLBACK_ROWS:]]


def _over_time(
    key: str,
    title: str,
    values: list[dict[str, Any]],
    *,
    mark: str,
    y_title: str,
    step_s: int,
    series_title: str = "series",
    colors: Mapping[str, str] | None = None,
) -> Chart:
    """A chart of long rows over time: bars stack (they are counts within a step), lines do
    not."""
    return Chart(
        key=key,
        title=title,
        spec=_spec(
            values,
            mark={"type": mark},
            y_title=y_title,
            step_s=step_s,
            stack=mark == "bar",
            color_title="" if series_title == "series" else series_title,
            colors=colors,
        ),
        columns=("at", series_title, "value"),
        rows=_table(values),
        note="" if values else "No points in this range yet.",
    )


def plugin_series_charts(series: Mapping[str, Any]) -> list[Chart]:
    """A plugin's calls, latency, memory and CPU over time (``series``: the ``series`` of
    ``UsageService.plugin_usage``)."""
    points = series.get("points") or []
    step = int(series.get("step_s") or 0)
    per = f"per {step} s" if step else "per step"
    return [
        _over_time(
            "calls",
            f"Calls ({per})",
            _long(points, {"ok": _ok_calls, "error": "errors_in_step"}),
            mark="bar",
            y_title="calls",
            step_s=step,
            colors=CALL_COLORS,
        ),
        _over_time(
            "latency",
            "Mean call time (ms)",
            _long(points, {"mean": "call_ms_mean"}),
            mark="line",
            y_title="ms",
            step_s=step,
        ),
        _over_time(
            "memory",
            "Memory (MiB)",
            _long(points, {"used": "memory_used_mb", "limit": "memory_limit_mb"}),
            mark="line",
            y_title="MiB",
            step_s=step,
        ),
        _over_time(
            "cpu",
            "CPU (% of one core)",
            _long(points, {"cpu": _cpu_percent(step)}),
            mark="line",
            y_title="%",
            step_s=step,
        ),
    ]


def fleet_charts(fleet: Mapping[str, Any]) -> list[Chart]:
    """Every plugin's calls, errors, latency, memory and CPU over time, a line per plugin
    (``fleet``: ``UsageService.fleet_usage``'s answer)."""
    step = int(fleet.get("step_s") or 0)
    per = f"per {step} s" if step else "per step"
    plugins: Mapping[str, Sequence[Mapping[str, Any]]] = fleet.get("plugins") or {}

    def per_plugin(pick: Any) -> list[dict[str, Any]]:
        return [
            row
            for plugin_id, points in sorted(plugins.items())
            for row in _long(points, {plugin_id: pick})
        ]

    return [
        _over_time(
            key,
            title,
            per_plugin(pick),
            mark=mark,
            y_title=unit,
            step_s=step,
            series_title="plugin",
        )
        for key, title, pick, mark, unit in (
            ("calls", f"Calls ({per})", "calls_in_step", "bar", "calls"),
            ("errors", f"Errors ({per})", "errors_in_step", "bar", "errors"),
            ("latency", "Mean call time (ms)", "call_ms_mean", "line", "ms"),
            ("memory", "Memory (MiB)", "memory_used_mb", "line", "MiB"),
            ("cpu", "CPU (% of one core)", _cpu_percent(step), "line", "%"),
        )
    ]


def totals(fleet: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Per plugin over the range: calls, errors, error share, mean call time, peak memory;
    busiest first (the dashboard's table, and the rows handed to visualization plugins)."""
    out = []
    for plugin_id, points in (fleet.get("plugins") or {}).items():
        calls = sum(p.get("calls_in_step") or 0 for p in points)
        errors = sum(p.get("errors_in_step") or 0 for p in points)
        call_ms = sum(p.get("call_ms_in_step") or 0 for p in points)
        memory = [p["memory_used_mb"] for p in points if p.get("memory_used_mb") is not None]
        out.append(
            {
                "plugin": plugin_id,
                "calls": calls,
                "errors": errors,
                "error_share": round(errors / calls, 4) if calls else 0.0,
                "call_ms_mean": round(call_ms / calls, 2) if calls else None,
                "memory_peak_mb": max(memory) if memory else None,
            }
        )
    return sorted(out, key=lambda r: (-r["calls"], r["plugin"]))


# -- what a visualization plugin returns ---------------------------------------------------------


def _refuse(reason: str) -> InvalidInput:
    return InvalidInput(f"the plugin's chart is not drawn: {reason}", code="unsafe_chart")


def _check(node: Any, path: str, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise _refuse(f"nested deeper than {MAX_DEPTH} levels")
    if isinstance(node, Mapping):
        for key, value in node.items():
            if not isinstance(key, str):
                raise _refuse(f"{path}: keys must be strings")
            if key in REFUSED_KEYS:
                raise _refuse(f"{path}/{key}: a chart may not load, link or carry anything")
            _check(value, f"{path}/{key}", depth + 1)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            _check(value, f"{path}/{i}", depth + 1)


def plugin_chart(plugin_id: str, output: Any, *, title: str) -> Chart:
    """The chart a ``visualization`` plugin answered, once it passes the checks above;
    :class:`InvalidInput` (``unsafe_chart``) says why one is not drawn."""
    if not isinstance(output, Mapping):
        raise _refuse("the answer is not an object")
    kind = output.get("format")
    if kind == "svg":
        svg = output.get("svg")
        if not isinstance(svg, str) or not svg.lstrip().startswith("<"):
            raise _refuse("an svg answer needs its svg text")
        raw = svg.encode()
        if len(raw) > MAX_PLUGIN_SVG_BYTES:
            raise _refuse(f"the SVG is over {MAX_PLUGIN_SVG_BYTES // 1024} KiB")
        image = "data:image/svg+xml;base64," + base64.b64encode(raw).decode()
        return Chart(key=f"plugin-{plugin_id}", title=title, image=image)
    if kind != "vega-lite":
        raise _refuse(f"unknown format {str(kind)[:40]!r} (vega-lite or svg)")
    spec = output.get("spec")
    if not isinstance(spec, Mapping):
        raise _refuse("a vega-lite answer needs its spec object")
    try:
        size = len(json.dumps(spec, separators=(",", ":"), allow_nan=False))
    except (TypeError, ValueError):
        raise _refuse("the spec is not plain JSON") from None
    if size > MAX_PLUGIN_SPEC_BYTES:
        raise _refuse(f"the spec is over {MAX_PLUGIN_SPEC_BYTES // 1024} KiB")
    _check(spec, "", 0)
    drawn = {k: v for k, v in spec.items() if k != "$schema"}
    drawn.setdefault("width", "container")
    return Chart(key=f"plugin-{plugin_id}", title=title, spec=drawn)


def rows_for(kind: str, table: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The dashboard's per-plugin totals as the ``{category, value}`` rows a visualization
    plugin is given (``kind``: one of :data:`DATASETS`)."""
    return [
        {"category": r["plugin"], "value": r[kind]}
        for r in table
        if isinstance(r.get(kind), int | float)
    ]


DATASETS = {
    "calls": "Calls per plugin",
    "errors": "Errors per plugin",
    "call_ms_mean": "Mean call time per plugin (ms)",
    "memory_peak_mb": "Peak memory per plugin (MiB)",
}
