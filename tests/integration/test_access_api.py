"""Admin API tokens with roles, and an auth_provider plugin authenticating outside callers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fixtures.orchestrator import OrchestratorProcess
from tests.fixtures.plugins import make_plugin
from tests.integration.conftest import sqlite_orchestrator

pytestmark = [pytest.mark.docker]


def as_token(orch: OrchestratorProcess, token: str | None, **headers: str) -> httpx.Client:
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.Client(base_url=orch.url, headers=headers, timeout=60)


def new_token(orch: OrchestratorProcess, role: str) -> dict[str, Any]:
    r = orch.client.post("/v1/tokens", json={"name": f"{role} of the tests", "role": role})
    assert r.status_code == 201, r.text
    return dict(r.json())


def test_roles_allow_what_they_should_and_nothing_more(orch: OrchestratorProcess) -> None:
    viewer, operator, admin = (new_token(orch, r) for r in ("viewer", "operator", "admin"))
    assert viewer["token"].startswith("smt_") and viewer["role"] == "viewer"
    listed = orch.client.get("/v1/tokens").json()
    assert {t["id"] for t in listed} >= {viewer["id"], operator["id"], admin["id"]}
    assert all("token" not in t and "token_hash" not in t for t in listed)

    with as_token(orch, viewer["token"]) as http:
        assert http.get("/v1/plugins").status_code == 200
        refused = http.post("/v1/plugins", json={"image": "nothing:0"})
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "forbidden"
        assert refused.json()["error"]["details"] == {"role": "viewer", "required": "operator"}
        assert http.get("/v1/audit").status_code == 403
        assert http.post("/v1/tokens", json={"name": "x", "role": "admin"}).status_code == 403
    with as_token(orch, operator["token"]) as http:
        # Past authorization: the request itself is judged (no such plugin, bad body).
        assert http.delete("/v1/plugins/com.example.absent").status_code == 404
        assert http.post("/v1/plugins", json={"nope": 1}).status_code == 422
        assert http.get("/v1/plugins/com.example.absent/secrets").status_code == 403
        assert http.put("/v1/plugins/com.example.absent/limits", json={}).status_code == 403
        assert http.get("/v1/tokens").status_code == 403
        # Verified a moment ago, the token now takes the execute fast path: same answers.
        for _ in range(2):
            r = http.post("/v1/extension-points/workflow/execute", json={"input": {}})
            assert (r.status_code, r.json()["error"]["code"]) == (404, "no_provider")
    with as_token(orch, admin["token"]) as http:
        assert http.get("/v1/audit").status_code == 200
        assert http.get("/v1/tokens").status_code == 200

    revoked = orch.client.delete(f"/v1/tokens/{viewer['id']}")
    assert revoked.status_code == 200 and revoked.json()["revoked_at"]
    for token in (viewer["token"], "smt_forged", "plain-wrong", None):
        with as_token(orch, token) as http:
            assert http.get("/v1/plugins").status_code == 401, token
    assert orch.client.post("/v1/tokens", json={"name": "x", "role": "root"}).status_code == 422
    assert orch.client.delete("/v1/tokens/tok_missing").status_code == 404
    for t in (operator, admin):
        orch.client.delete(f"/v1/tokens/{t['id']}")
    # Revoked here: refused at once, the fast path included.
    with as_token(orch, operator["token"]) as http:
        r = http.post("/v1/extension-points/workflow/execute", json={"input": {}})
        assert r.status_code == 401


@pytest.fixture(scope="module")
def orch_with_provider(
    base_image: str, docker_client: Any, tmp_path_factory: pytest.TempPathFactory
) -> Any:
    with sqlite_orchestrator(
        tmp_path_factory,
        docker_client,
        "orch-auth",
        auth_provider="com.example.api-key-auth/api-key",
    ) as o:
        yield o


def test_an_auth_provider_plugin_maps_outside_keys_to_a_role(
    orch_with_provider: OrchestratorProcess, tmp_path: Path
) -> None:
    orch = orch_with_provider
    pid = "com.example.api-key-auth"
    with as_token(orch, None, **{"X-API-Key": "partner-key"}) as http:
        assert http.get("/v1/plugins").status_code == 401  # the provider is not ACTIVE yet
    folder = make_plugin(tmp_path / "auth", "api-key-auth")
    r = orch.install_dir(folder, approve=["secrets:read"], config={"role": "operator"})
    assert r.status_code == 201, r.text
    assert orch.client.put(f"/v1/plugins/{pid}/secrets/api-key", json={"value": "partner-key"})
    assert orch.client.post(f"/v1/plugins/{pid}/enable").status_code == 200

    with as_token(orch, None, **{"X-API-Key": "partner-key"}) as http:
        assert http.get("/v1/plugins").status_code == 200
        assert http.post(f"/v1/plugins/{pid}/reload").status_code == 200  # operator may
        assert http.get("/v1/audit").status_code == 403  # but is no admin
    with as_token(orch, "partner-key") as http:  # the same key as a bearer token
        assert http.get("/v1/plugins").status_code == 200
    with as_token(orch, None, **{"X-API-Key": "wrong"}) as http:
        assert http.get("/v1/plugins").status_code == 401
