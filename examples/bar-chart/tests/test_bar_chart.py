import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from summit_sdk.testing import PluginCallError, PluginTestClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bar_chart import plugin

ROWS = [{"category": "a", "value": 3}, {"category": "b", "value": 1.5}]


@pytest.fixture
def client() -> Iterator[PluginTestClient]:
    with PluginTestClient(plugin) as client:
        yield client


def test_rows_become_a_vega_lite_bar_chart(client: PluginTestClient) -> None:
    output = client.call("visualization", "bar-chart", {"data": ROWS, "title": "Sales"})
    assert output["format"] == "vega-lite"
    spec = output["spec"]
    assert spec["$schema"].endswith("vega-lite/v5.json")
    assert spec["mark"] == {"type": "bar"} and spec["title"] == "Sales"
    assert spec["data"]["values"] == ROWS
    assert spec["encoding"]["x"]["field"] == "category"
    assert spec["encoding"]["y"] == {"field": "value", "type": "quantitative"}


def test_other_fields_and_horizontal(client: PluginTestClient) -> None:
    rows = [{"city": "Oslo", "pop": 700}]
    options = {"x": "city", "y": "pop", "horizontal": True}
    spec = client.call("visualization", "bar-chart", {"data": rows, "options": options})["spec"]
    assert spec["encoding"]["y"]["field"] == "city" and spec["encoding"]["x"]["field"] == "pop"
    assert "title" not in spec


@pytest.mark.parametrize(
    "data", [[{"category": "a", "value": "many"}], [{"value": 1}], "not a list"]
)
def test_bad_rows_are_refused(client: PluginTestClient, data: object) -> None:
    with pytest.raises(PluginCallError) as refused:
        client.call("visualization", "bar-chart", {"data": data})
    assert (refused.value.status, refused.value.code) == (400, "invalid_input")
