import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from summit_sdk.testing import PluginCallError, PluginTestClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from http_source import plugin

CSV_URL = "https://data.example.com/people.csv"
JSON_URL = "https://data.example.com/people"
CSV = "name,city\nAda,London\nGrace,Arlington\nAlan,London\n"


@pytest.fixture
def client() -> Iterator[PluginTestClient]:
    with PluginTestClient(plugin, allowed_hosts=["data.example.com"]) as client:
        client.host.add_http_response(CSV_URL, CSV, content_type="text/csv")
        client.host.add_http_response(JSON_URL, {"records": [{"n": 1}, {"n": 2}]})
        yield client


def fetch(client: PluginTestClient, **input: object) -> dict[str, object]:
    output: dict[str, object] = client.call("data_source", "http", input)
    return output


def test_csv_rows_paged(client: PluginTestClient) -> None:
    first = fetch(client, query={"url": CSV_URL}, limit=2)
    assert first["records"] == [
        {"name": "Ada", "city": "London"},
        {"name": "Grace", "city": "Arlington"},
    ]
    assert (first["next_cursor"], first["total"]) == ("2", 3)
    rest = fetch(client, query={"url": CSV_URL}, limit=2, cursor="2")
    assert rest["records"] == [{"name": "Alan", "city": "London"}] and rest["next_cursor"] is None
    assert [c.operation for c in client.host.calls] == ["http.request", "http.request"]


def test_json_rows_and_where(client: PluginTestClient) -> None:
    assert fetch(client, query={"url": JSON_URL, "where": {"n": 2}})["records"] == [{"n": 2}]


def test_url_from_config() -> None:
    with PluginTestClient(plugin, config={"url": CSV_URL}) as client:
        client.host.add_http_response(CSV_URL, CSV, content_type="text/csv")
        assert fetch(client)["total"] == 3


def test_host_outside_allowed_hosts_is_refused(client: PluginTestClient) -> None:
    with pytest.raises(PluginCallError) as refused:
        fetch(client, query={"url": "https://evil.example.net/x.csv"})
    assert (refused.value.status, refused.value.code) == (403, "host_not_allowed")


def test_upstream_error_and_bad_json(client: PluginTestClient) -> None:
    client.host.add_http_response("https://data.example.com/gone", "", status=404)
    client.host.add_http_response("https://data.example.com/bad", {"records": 3})
    for url, code in [("gone", "upstream_error"), ("bad", "bad_data")]:
        with pytest.raises(PluginCallError) as failed:
            fetch(client, query={"url": f"https://data.example.com/{url}"})
        assert failed.value.code == code


def test_without_network_access_nothing_leaves(client: PluginTestClient) -> None:
    with PluginTestClient(plugin, permissions=[]) as denied_client:
        with pytest.raises(PluginCallError) as denied:
            fetch(denied_client, query={"url": CSV_URL})
        assert (denied.value.status, denied.value.code) == (403, "permission_denied")
        assert denied_client.host.calls == []
