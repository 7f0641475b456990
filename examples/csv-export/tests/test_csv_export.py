import csv
import io
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from summit_sdk.points import ExportOutput
from summit_sdk.testing import PluginCallError, PluginTestClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from csv_export import plugin

ROWS = [{"name": "Ada", "age": 36}, {"name": "Linus, T.", "tags": ["a", "b"]}]


@pytest.fixture
def client() -> Iterator[PluginTestClient]:
    with PluginTestClient(plugin) as client:
        yield client


def export(client: PluginTestClient, name: str, **input: object) -> ExportOutput:
    return ExportOutput.from_wire(client.call("export", name, {"data": ROWS, **input}))


def test_csv_has_every_column_and_quotes(client: PluginTestClient) -> None:
    out = export(client, "csv", filename="people.xlsx")
    assert (out.content_type, out.filename) == ("text/csv; charset=utf-8", "people.csv")
    rows = list(csv.DictReader(io.StringIO(out.content.decode())))
    assert rows == [
        {"name": "Ada", "age": "36", "tags": ""},
        {"name": "Linus, T.", "age": "", "tags": '["a", "b"]'},
    ]


def test_csv_delimiter(client: PluginTestClient) -> None:
    out = export(client, "csv", options={"delimiter": ";"})
    assert out.content.decode().splitlines()[0] == "name;age;tags"
    with pytest.raises(PluginCallError) as refused:
        export(client, "csv", options={"delimiter": ";;"})
    assert refused.value.code == "invalid_input"


def test_json_round_trips(client: PluginTestClient) -> None:
    out = export(client, "json", filename="../../etc/passwd", options={"pretty": True})
    assert out.content_type == "application/json"
    assert out.filename == "passwd.json"
    assert json.loads(out.content) == ROWS


def test_empty_data_gives_empty_files(client: PluginTestClient) -> None:
    empty = ExportOutput.from_wire(client.call("export", "csv", {"data": []}))
    assert (empty.content, empty.filename) == (b"\n", "export.csv")
    assert client.call("export", "json", {"data": []})["content"] == "W10="  # "[]"


def test_rows_must_be_objects(client: PluginTestClient) -> None:
    with pytest.raises(PluginCallError) as refused:
        client.call("export", "json", {"data": [1, 2]})
    assert (refused.value.status, refused.value.code) == (400, "invalid_input")
