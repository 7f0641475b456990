"""Bar Chart: a visualization that turns rows into a Vega-Lite bar chart."""

from typing import Any

from summit_sdk import PluginContext, PluginError, Visualization, collect, visualization
from summit_sdk.points import VisualizationInput, VisualizationOutput

PLUGIN_ID = "com.example.bar-chart"
PLUGIN_VERSION = "1.0.0"
VEGA_LITE_SCHEMA = "https://vega.github.io/schema/vega-lite/v5.json"


@visualization("bar-chart")
class BarChart(Visualization):
    """Rows ``[{x: ..., y: number}]``; ``options.x`` / ``options.y`` name other fields."""

    def render(self, input: VisualizationInput, ctx: PluginContext) -> VisualizationOutput:
        x = str(input.options.get("x", "category"))
        y = str(input.options.get("y", "value"))
        for i, row in enumerate(input.data):
            if x not in row or not isinstance(row.get(y), int | float):
                raise PluginError(
                    f"row {i} needs a {x!r} field and a numeric {y!r} field", code="invalid_input"
                )
        spec: dict[str, Any] = {
            "$schema": VEGA_LITE_SCHEMA,
            "data": {"values": [{x: row[x], y: row[y]} for row in input.data]},
            "mark": {"type": "bar"},
            "encoding": {
                "x": {"field": x, "type": "nominal", "sort": None},
                "y": {"field": y, "type": "quantitative"},
            },
        }
        if input.title:
            spec["title"] = input.title
        if input.options.get("horizontal"):
            spec["encoding"]["x"], spec["encoding"]["y"] = (
                spec["encoding"]["y"],
                spec["encoding"]["x"],
            )
        return VisualizationOutput(format="vega-lite", spec=spec)


plugin = collect(__name__)
