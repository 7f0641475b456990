"""The call token: over TCP a plugin answers only callers that present ``SUMMIT_PLUGIN_TOKEN``
as a bearer token (the kubelet's readiness probe on /health excepted); over a unix socket
nothing changes."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml
from starlette.testclient import TestClient
from summit_sdk import create_app, create_plugin
from summit_sdk.runtime import call_token_for

BASE = "/summit/v1"
TOKEN = "k8s-call-token-123"
CALL = {"input": 2, "context": {"request_id": "r"}}


def app_with_token(token: str | None = TOKEN) -> TestClient:
    plugin = (
        create_plugin()
        .with_metadata(id="com.example.tok", version="1.0.0")
        .extension("analyzer", "double", lambda i, ctx: i * 2)
        .build()
    )
    return TestClient(create_app(plugin, call_token=token))


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", f"{BASE}/initialize", {}),
        ("POST", f"{BASE}/extensions/analyzer/double", CALL),
        ("POST", f"{BASE}/events", {"event": {"type": "x"}}),
        ("POST", f"{BASE}/shutdown", None),
        ("GET", f"{BASE}/nowhere", None),
        ("POST", f"{BASE}/health", None),  # only GET /health is open
    ],
)
@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong", f"Basic {TOKEN}", f"Bearer {TOKEN}x", "Bearer", f"{TOKEN}"],
)
def test_calls_without_the_token_are_401(
    method: str, path: str, body: object, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization is not None else {}
    response = app_with_token().request(method, path, json=body, headers=headers)
    assert response.status_code == 401
    assert response.json() == {
        "error": {"code": "unauthorized", "message": "a valid call token is required"}
    }
    assert response.headers["www-authenticate"] == "Bearer"


def test_calls_with_the_token_are_served() -> None:
    client = app_with_token()
    headers = {"Authorization": f"Bearer {TOKEN}"}
    response = client.post(f"{BASE}/extensions/analyzer/double", json=CALL, headers=headers)
    assert response.status_code == 200 and response.json() == {"output": 4}
    lower = {"Authorization": f"bearer {TOKEN}"}  # the scheme is case-insensitive
    assert client.post(f"{BASE}/initialize", json={}, headers=lower).status_code == 200


def test_health_needs_no_token_and_tells_only_identity() -> None:
    client = app_with_token()
    response = client.get(f"{BASE}/health")
    assert response.status_code == 200
    assert response.json()["plugin"] == {"id": "com.example.tok", "version": "1.0.0"}
    assert client.head(f"{BASE}/health").status_code == 200


def test_without_a_token_nothing_is_checked() -> None:
    response = app_with_token(None).post(f"{BASE}/extensions/analyzer/double", json=CALL)
    assert response.status_code == 200


def test_the_token_applies_on_tcp_only(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("SUMMIT_PLUGIN_TOKEN", TOKEN)
    assert call_token_for("tcp") == TOKEN
    assert call_token_for("unix") is None
    monkeypatch.delenv("SUMMIT_PLUGIN_TOKEN")
    with caplog.at_level(logging.WARNING, logger="summit_sdk.runtime"):
        assert call_token_for("tcp") is None
    assert "without SUMMIT_PLUGIN_TOKEN" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="summit_sdk.runtime"):
        assert call_token_for("unix") is None
    assert not caplog.text


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_served_plugin_checks_the_token_from_its_environment(tmp_path: Path) -> None:
    (tmp_path / "tok.py").write_text(
        "from summit_sdk import create_plugin\n"
        "plugin = (create_plugin().with_metadata(id='com.example.tok', version='1.0.0')\n"
        "          .extension('analyzer', 'double', lambda i, c: i * 2).build())\n"
    )
    port = _free_port()
    env = {
        **os.environ,
        "SUMMIT_PLUGIN_ENTRYPOINT": "tok:plugin",
        "SUMMIT_PLUGIN_LISTEN": f"tcp://127.0.0.1:{port}",
        "SUMMIT_PLUGIN_TOKEN": TOKEN,
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "summit_sdk.runtime"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
            deadline = time.monotonic() + 20
            while True:
                try:
                    assert http.get(f"{BASE}/health").status_code == 200
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline, "the plugin did not start"
                    time.sleep(0.1)
            url = f"{BASE}/extensions/analyzer/double"
            assert http.post(url, json=CALL).status_code == 401
            ok = http.post(url, json=CALL, headers={"Authorization": f"Bearer {TOKEN}"})
            assert ok.json() == {"output": 4}
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_the_protocol_document_declares_the_bearer_scheme() -> None:
    doc = yaml.safe_load(
        (Path(__file__).resolve().parents[3] / "sdk" / "protocol" / "openapi.yaml").read_text()
    )
    assert doc["components"]["securitySchemes"]["callToken"] == {
        "type": "http",
        "scheme": "bearer",
        "description": doc["components"]["securitySchemes"]["callToken"]["description"],
    }
    assert doc["security"] == [{"callToken": []}]
    assert doc["paths"][f"{BASE}/health"]["get"]["security"] == []
    for path, item in doc["paths"].items():
        for operation in item.values():
            if operation.get("security") != []:
                assert "401" in operation["responses"], path
