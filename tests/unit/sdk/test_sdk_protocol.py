"""The runtime checks requests by hand; these tests keep it in step with the wire models."""

import json
from typing import Any

import pytest
from pydantic import ValidationError
from starlette.testclient import TestClient
from summit_sdk import create_app, create_plugin
from summit_sdk.protocol import (
    PROTOCOL,
    ErrorResponse,
    EventRequest,
    ExtensionRequest,
    ExtensionResponse,
    HealthResponse,
    InitializeRequest,
    InitializeResponse,
    ShutdownResponse,
)

PLUGIN = (
    create_plugin()
    .with_metadata(id="com.example.p", version="1.0.0")
    .extension("analyzer", "echo", lambda i, c: i)
    .build()
)

EXTENSION_BODIES: list[Any] = [
    {"input": {"text": "hi"}, "context": {"request_id": "r"}},
    {"input": None, "context": {"request_id": "r", "deadline_ms": 100}},
    {"input": [1], "context": {"request_id": "r", "deadline_ms": None}, "extra": 1},
    {"context": {"request_id": "r"}},
    {"input": 1},
    {"input": 1, "context": {"deadline_ms": 5}},
    {"input": 1, "context": {"request_id": 7}},
    {"input": 1, "context": "r"},
    [],
]
INITIALIZE_BODIES: list[Any] = [
    {},
    {"config": {"a": 1}, "host": {"url": "http://h", "token": "t"}, "permissions": ["storage"]},
    {"host": {"url": None}},
    {"config": "x"},
    {"host": "x"},
    {"permissions": "read:data"},
    {"permissions": [1]},
    {"host": {"token": 5}},
]
EVENT_BODIES: list[Any] = [{"event": {"type": "a"}}, {"event": {}}, {"event": "a"}, {}, [1]]


def accepted_by(model: type[Any], body: Any) -> bool:
    try:
        model.model_validate_json(json.dumps(body))
    except ValidationError:
        return False
    return True


@pytest.mark.parametrize("body", EXTENSION_BODIES)
def test_extension_request_checks_match_the_model(body: Any) -> None:
    response = TestClient(create_app(PLUGIN)).post("/summit/v1/extensions/analyzer/echo", json=body)
    assert (response.status_code != 400) == accepted_by(ExtensionRequest, body)
    if response.status_code == 200:
        ExtensionResponse.model_validate(response.json())
    else:
        ErrorResponse.model_validate(response.json())


@pytest.mark.parametrize("body", INITIALIZE_BODIES)
def test_initialize_request_checks_match_the_model(body: Any) -> None:
    response = TestClient(create_app(PLUGIN)).post("/summit/v1/initialize", json=body)
    assert (response.status_code == 200) == accepted_by(InitializeRequest, body)
    if response.status_code == 200:
        InitializeResponse.model_validate(response.json())


@pytest.mark.parametrize("body", EVENT_BODIES)
def test_event_request_checks_match_the_model(body: Any) -> None:
    response = TestClient(create_app(PLUGIN)).post("/summit/v1/events", json=body)
    assert (response.status_code == 200) == accepted_by(EventRequest, body)


def test_health_and_shutdown_answers_parse_as_models() -> None:
    client = TestClient(create_app(PLUGIN))
    health = HealthResponse.model_validate(client.get("/summit/v1/health").json())
    assert health.protocol == PROTOCOL
    assert [(e.point, e.name) for e in health.extensions] == [("analyzer", "echo")]
    ShutdownResponse.model_validate(client.post("/summit/v1/shutdown").json())


def test_request_models_defaults() -> None:
    request = InitializeRequest()
    assert (request.config, request.host.url, request.permissions) == ({}, None, [])
    call = ExtensionRequest.model_validate({"input": 1, "context": {"request_id": "r"}})
    assert call.context.deadline_ms is None
