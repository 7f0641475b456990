"""The execute fast path: what it answers itself, and what it hands to the FastAPI route with
the body intact. The broker here is a stand-in that records calls; the real broker's answers
through this path are covered by tests/integration/test_broker.py."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

from fastapi import Request
from fastapi.testclient import TestClient

from orchestrator.api.errors import install_error_handlers
from orchestrator.api.fastpath import FastPathAPI
from orchestrator.domain.errors import Conflict, SummitError
from orchestrator.security.access import Role

ADMIN = {"Authorization": "Bearer admin-secret"}


class TooMany(SummitError):
    status_code = 429
    code = "rate_limited"

    def __init__(self) -> None:
        super().__init__("slow down")
        self.headers = {"Retry-After": "7"}


class Broker:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any, dict[str, Any]]] = []
        self.fail: Exception | None = None

    async def execute(self, point: str, payload: Any, **options: Any) -> dict[str, Any]:
        self.calls.append((point, payload, options))
        if self.fail is not None:
            raise self.fail
        return {"mode": options["mode"], "results": [{"plugin": "p", "output": "é"}]}


def make() -> tuple[TestClient, Broker, list[bytes]]:
    app = FastPathAPI()
    install_error_handlers(app)
    broker = Broker()
    app.state.broker = broker
    app.state.settings = SimpleNamespace(admin_token="admin-secret", max_request_bytes=64)
    # What ApiTokens.cached_role knows: tokens the route verified a moment ago.
    verified = {"smt_operator": Role.OPERATOR, "smt_admin": Role.ADMIN, "smt_viewer": Role.VIEWER}
    app.state.api_tokens = SimpleNamespace(cached_role=verified.get)
    routed: list[bytes] = []

    @app.post("/v1/extension-points/{point}/execute")
    async def route(point: str, request: Request) -> dict[str, Any]:
        routed.append(await request.body())
        return {"routed": point}

    return TestClient(app), broker, routed


def test_the_admin_s_sync_call_goes_straight_to_the_broker() -> None:
    client, broker, routed = make()
    r = client.post(
        "/v1/extension-points/analyzer/execute",
        json={"input": {"text": "a b"}, "mode": "first", "timeout_ms": 50},
        headers=ADMIN,
    )
    assert r.status_code == 200 and routed == []
    assert (
        r.content
        == json.dumps(
            {"mode": "first", "results": [{"plugin": "p", "output": "é"}]},
            ensure_ascii=False,
            separators=(",", ":"),
        ).encode()
    )
    assert r.headers["content-type"] == "application/json"
    ((point, payload, options),) = broker.calls
    assert point == "analyzer" and payload == {"text": "a b"}
    assert options == {"mode": "first", "plugins": None, "timeout_ms": 50}


def test_recently_verified_operator_and_admin_api_tokens_take_the_fast_path() -> None:
    client, broker, routed = make()
    url = "/v1/extension-points/analyzer/execute"
    for token in ("smt_operator", "smt_admin"):
        r = client.post(url, json={"input": 1}, headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200 and "results" in r.json()
    assert len(broker.calls) == 2 and routed == []
    # A viewer's token, one not verified lately, or another scheme: the route decides.
    for credential in ("Bearer smt_viewer", "Bearer smt_unknown", "Basic smt_operator"):
        r = client.post(url, json={"input": 1}, headers={"Authorization": credential})
        assert r.json() == {"routed": "analyzer"}, credential
    assert len(broker.calls) == 2


def test_everything_else_reaches_the_route_with_its_body() -> None:
    client, broker, routed = make()
    url = "/v1/extension-points/analyzer/execute"
    cases: list[tuple[dict[str, str], bytes, str]] = [
        ({"Authorization": "Bearer someone-else"}, b'{"input": 1}', ""),
        ({"Authorization": "bearer admin-secret"}, b'{"input": 1}', ""),
        (ADMIN, b'{"input": 1, "async": true}', ""),
        (ADMIN, b'{"input": ', ""),  # not JSON
        (ADMIN, b'{"mode": "sideways"}', ""),  # not a valid body
        (ADMIN, b'{"input": "' + b"x" * 100 + b'"}', ""),  # over the cap
        (ADMIN, b'{"input": 1}', "?trace=1"),
    ]
    for headers, body, query in cases:
        r = client.post(url + query, content=body, headers=headers)
        assert r.json() == {"routed": "analyzer"}, (headers, body)
        assert routed[-1] == body
    assert broker.calls == []
    # Not the execute path at all.
    assert client.post("/v1/extension-points/analyzer/executed", headers=ADMIN).status_code == 404


def test_errors_are_the_api_s_error_bodies() -> None:
    client, broker, routed = make()
    url = "/v1/extension-points/analyzer/execute"
    broker.fail = TooMany()
    r = client.post(url, json={"input": 1}, headers=ADMIN)
    assert r.status_code == 429 and r.headers["retry-after"] == "7"
    assert r.json() == {"error": {"code": "rate_limited", "message": "slow down", "details": None}}
    broker.fail = RuntimeError("bug")
    r = client.post(url, json={"input": 1}, headers=ADMIN)
    assert r.status_code == 500 and r.json()["error"]["code"] == "internal_error"
    # not_active is decided before any call: the route answers it (it knows unknown plugins).
    broker.fail = Conflict("no", code="not_active", details={"plugins": ["x"]})
    r = client.post(url, json={"input": 1, "plugins": ["x"]}, headers=ADMIN)
    assert r.json() == {"routed": "analyzer"} and routed == [b'{"input":1,"plugins":["x"]}']
