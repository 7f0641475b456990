import base64
from typing import Any

import pytest
from summit_sdk import (
    AuthProvider,
    DataSource,
    Export,
    PluginContext,
    Visualization,
    Workflow,
    create_plugin,
)
from summit_sdk.points import (
    AuthRequest,
    AuthResult,
    DataSourcePage,
    DataSourceQuery,
    ExportInput,
    ExportOutput,
    VisualizationInput,
    WorkflowInput,
    WorkflowResult,
)
from summit_sdk.testing import PluginCallError, PluginTestClient

ROWS = [{"n": i} for i in range(5)]


class Numbers(DataSource):
    def fetch(self, query: DataSourceQuery, ctx: PluginContext) -> DataSourcePage:
        start = int(query.cursor or 0)
        end = start + query.limit
        return DataSourcePage(
            records=ROWS[start:end], next_cursor=str(end) if end < len(ROWS) else None
        )


class Chart(Visualization):
    async def render(self, input: VisualizationInput, ctx: PluginContext) -> dict[str, Any]:
        if input.options.get("svg"):
            return {"format": "svg", "svg": "<svg/>"}
        if input.options.get("broken"):
            return {"format": "vega-lite"}  # no spec
        return {"format": "vega-lite", "spec": {"mark": "bar", "data": {"values": input.data}}}


class Text(Export):
    def export(self, input: ExportInput, ctx: PluginContext) -> ExportOutput:
        content = "\n".join(str(row) for row in input.data).encode()
        return ExportOutput(content=content, content_type="text/plain", filename="rows.txt")


class Door(AuthProvider):
    def authenticate(self, request: AuthRequest, ctx: PluginContext) -> AuthResult:
        if request.credentials.get("key") == "open":
            return AuthResult.allow("alice", roles=["admin"])
        if request.credentials.get("key") == "sloppy":
            return AuthResult.model_construct(authenticated=True, principal=None)
        return AuthResult.refuse("wrong key")


class Echo(Workflow):
    def run(self, input: WorkflowInput, ctx: PluginContext) -> WorkflowResult:
        return WorkflowResult(result={"action": input.action, **input.params})


@pytest.fixture
def client() -> Any:
    plugin = (
        create_plugin()
        .with_metadata(id="com.example.points", version="1.0.0")
        .extension("data_source", "numbers", Numbers())
        .extension("visualization", "chart", Chart())
        .extension("export", "text", Text())
        .extension("auth_provider", "door", Door())
        .extension("workflow", "echo", Echo())
        .build()
    )
    with PluginTestClient(plugin) as client:
        yield client


def test_data_source_pages_with_cursor(client: PluginTestClient) -> None:
    first = client.call("data_source", "numbers", {"limit": 3})
    assert first["records"] == ROWS[:3] and first["next_cursor"] == "3"
    second = client.call("data_source", "numbers", {"limit": 3, "cursor": "3"})
    assert second["records"] == ROWS[3:] and second["next_cursor"] is None


def test_data_source_limit_is_validated(client: PluginTestClient) -> None:
    with pytest.raises(PluginCallError) as refused:
        client.call("data_source", "numbers", {"limit": 0})
    assert refused.value.code == "invalid_input"
    assert refused.value.details[0]["loc"] == ["limit"]


def test_visualization_async_handler_gives_vega_lite_or_svg(client: PluginTestClient) -> None:
    spec = client.call("visualization", "chart", {"data": [{"a": 1}]})
    assert spec["format"] == "vega-lite" and spec["spec"]["mark"] == "bar"
    assert client.call("visualization", "chart", {"data": [], "options": {"svg": True}})["svg"]


def test_visualization_output_without_spec_is_invalid_output(client: PluginTestClient) -> None:
    response = client.call_raw("visualization", "chart", {"data": [], "options": {"broken": 1}})
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "invalid_output"


def test_export_sends_base64_content(client: PluginTestClient) -> None:
    output = client.call("export", "text", {"data": [{"a": 1}]})
    assert base64.b64decode(output["content"]) == b"{'a': 1}"
    parsed = ExportOutput.from_wire(output)
    assert (parsed.content, parsed.filename) == (b"{'a': 1}", "rows.txt")


def test_export_input_must_be_rows(client: PluginTestClient) -> None:
    with pytest.raises(PluginCallError) as refused:
        client.call("export", "text", {"data": "not rows"})
    assert (refused.value.status, refused.value.code) == (400, "invalid_input")


def test_auth_provider_allows_and_refuses(client: PluginTestClient) -> None:
    allowed = client.call("auth_provider", "door", {"credentials": {"key": "open"}})
    assert allowed["authenticated"] and allowed["principal"]["id"] == "alice"
    refused = client.call("auth_provider", "door", {"credentials": {"key": "nope"}})
    assert refused == {"authenticated": False, "principal": None, "reason": "wrong key"}


def test_auth_result_without_principal_is_invalid_output(client: PluginTestClient) -> None:
    response = client.call_raw("auth_provider", "door", {"credentials": {"key": "sloppy"}})
    assert (response.status_code, response.json()["error"]["code"]) == (500, "invalid_output")


def test_workflow_needs_an_action(client: PluginTestClient) -> None:
    assert client.call("workflow", "echo", {"action": "go", "params": {"x": 1}})["result"] == {
        "action": "go",
        "x": 1,
    }
    with pytest.raises(PluginCallError) as refused:
        client.call("workflow", "echo", {"params": {}})
    assert refused.value.code == "invalid_input"


def test_protocol_error_model_accepts_details() -> None:
    from summit_sdk.protocol import ErrorResponse

    body = {"error": {"code": "invalid_input", "message": "m", "details": [{"loc": ["a"]}]}}
    assert ErrorResponse.model_validate(body).error.details == [{"loc": ["a"]}]
