"""``sdk/protocol/openapi.yaml`` describes the wire models of ``summit_sdk.protocol``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel
from summit_sdk import protocol

DOC = Path(__file__).resolve().parents[3] / "sdk" / "protocol" / "openapi.yaml"
MODELS: list[type[BaseModel]] = [
    protocol.PluginRef,
    protocol.ExtensionRef,
    protocol.HealthResponse,
    protocol.HostInfo,
    protocol.InitializeRequest,
    protocol.InitializeResponse,
    protocol.CallContext,
    protocol.ExtensionRequest,
    protocol.ExtensionResponse,
    protocol.ErrorDetail,
    protocol.ErrorResponse,
    protocol.EventRequest,
    protocol.ShutdownResponse,
]


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    data = yaml.safe_load(DOC.read_text())
    assert isinstance(data, dict)
    return data


def test_is_openapi_3_1_with_every_endpoint(doc: dict[str, Any]) -> None:
    assert doc["openapi"].startswith("3.1.")
    assert doc["info"]["version"] == protocol.PROTOCOL
    base = protocol.BASE_PATH
    assert set(doc["paths"]) == {
        f"{base}/health",
        f"{base}/initialize",
        f"{base}/extensions/{{point}}/{{name}}",
        f"{base}/events",
        f"{base}/shutdown",
    }
    assert "get" in doc["paths"][f"{base}/health"]
    for path in ("initialize", "extensions/{point}/{name}", "events", "shutdown"):
        assert "post" in doc["paths"][f"{base}/{path}"]


def test_every_ref_resolves(doc: dict[str, Any]) -> None:
    def refs(node: Any) -> list[str]:
        if isinstance(node, dict):
            found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
            return found + [r for v in node.values() for r in refs(v)]
        if isinstance(node, list):
            return [r for v in node for r in refs(v)]
        return []

    for ref in refs(doc):
        node: Any = doc
        for part in ref.removeprefix("#/").split("/"):
            node = node[part]
        assert isinstance(node, dict), ref


def test_component_schemas_are_valid_json_schemas(doc: dict[str, Any]) -> None:
    import jsonschema

    for name, schema in doc["components"]["schemas"].items():
        plain = {k: v for k, v in schema.items()}
        jsonschema.Draft202012Validator.check_schema(plain), name


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_schemas_agree_with_the_pydantic_models(
    doc: dict[str, Any], model: type[BaseModel]
) -> None:
    schema = doc["components"]["schemas"][model.__name__]
    assert set(schema.get("properties", {})) == set(model.model_fields), model.__name__
    expected_required = set(model.model_json_schema().get("required", []))
    assert set(schema.get("required", [])) == expected_required, model.__name__


def test_error_codes_are_documented(doc: dict[str, Any]) -> None:
    described = doc["components"]["schemas"]["ErrorDetail"]["properties"]["code"]["description"]
    for code, status in protocol.ERROR_CODES.items():
        assert f"{code} ({status}" in described, code


def test_extension_points_match(doc: dict[str, Any]) -> None:
    assert doc["components"]["schemas"]["ExtensionPoint"]["enum"] == list(protocol.EXTENSION_POINTS)
