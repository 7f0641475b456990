"""The host API end to end: real plugin containers call ``/host/v1`` over their own socket.

Covers authentication (a token works only for its own plugin, and not after its container is
retired), permission checks with audit records, the storage quota, secrets set by the
operator, events restricted to declared types, invoke limited to declared dependencies, and
the SDK examples that need the host (api-key-auth, notify).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.fixtures.orchestrator import OrchestratorProcess
from tests.fixtures.plugins import make_plugin

pytestmark = [pytest.mark.docker, pytest.mark.slow]

SPY = "com.summit.tests.hostspy"


def spy(orch: OrchestratorProcess, plugin_id: str, op: str, *args: Any) -> dict[str, Any]:
    r = orch.client.post(
        "/v1/extension-points/workflow/execute",
        json={"input": {"op": op, "args": list(args)}, "plugins": [plugin_id]},
    )
    assert r.status_code == 200, r.text
    (result,) = r.json()["results"]
    assert result.get("error") is None, result
    output: dict[str, Any] = result["output"]
    return output


def install_enabled(
    orch: OrchestratorProcess, tmp_path: Path, plugin_id: str, **changes: Any
) -> dict[str, Any]:
    folder = make_plugin(tmp_path / plugin_id, "hostspy", id=plugin_id, **changes)
    manifest = yaml.safe_load((folder / "plugin.yaml").read_text())
    r = orch.install_dir(folder, approve=manifest["permissions"])
    assert r.status_code == 201, r.text
    enabled = orch.client.post(f"/v1/plugins/{plugin_id}/enable")
    assert enabled.status_code == 200, enabled.text
    return dict(enabled.json())


def host_socket(docker_client: Any, container_id: str) -> str:
    container = docker_client.containers.get(container_id)
    (mount,) = [m for m in container.attrs["Mounts"] if m["Destination"] == "/run/summit"]
    return f"{mount['Source']}/host.sock"


def direct(sock: str, token: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(
        transport=httpx.HTTPTransport(uds=sock), base_url="http://host", headers=headers, timeout=10
    )


def test_host_api_round_trips_through_a_real_plugin(
    orch: OrchestratorProcess, tmp_path: Path
) -> None:
    pid = f"{SPY}.full"
    install_enabled(orch, tmp_path, pid)
    try:
        assert spy(orch, pid, "whoami")["result"]["url"] == "unix:///run/summit/host.sock"
        # data: shared documents
        assert spy(orch, pid, "data.put", "notes", "a/1", {"kind": "x", "n": 1})["ok"]
        assert spy(orch, pid, "data.put", "notes", "a/2", {"kind": "y", "n": 2})["ok"]
        assert spy(orch, pid, "data.get", "notes", "a/1")["result"] == {"kind": "x", "n": 1}
        assert spy(orch, pid, "data.get", "notes", "missing")["result"] is None
        page = spy(orch, pid, "data.query", "notes", {"kind": "y"})["result"]
        assert page == {"records": [{"kind": "y", "n": 2}], "next_cursor": None}
        # storage: per plugin, with its quota (storage_mb: 1)
        assert spy(orch, pid, "storage.put", "k", {"deep": [1, 2]})["ok"]
        assert spy(orch, pid, "storage.get", "k")["result"] == {"deep": [1, 2]}
        blob = base64.b64encode(b"\x00" * 600_000).decode()
        assert spy(orch, pid, "storage.put_blob", "b1", blob)["ok"]
        refused = spy(orch, pid, "storage.put_blob", "b2", blob)
        assert (refused["status"], refused["code"]) == (413, "storage_quota_exceeded")
        assert spy(orch, pid, "storage.get_blob", "b2")["result"] is None  # nothing half-written
        assert spy(orch, pid, "storage.delete_blob", "b1")["ok"]
        assert spy(orch, pid, "storage.put_blob", "b2", blob)["ok"]  # room again
        # secrets: set by the operator, never shown by the admin API
        missing = spy(orch, pid, "secrets.get", "api-key")
        assert (missing["status"], missing["code"]) == (404, "not_found")
        r = orch.client.put(f"/v1/plugins/{pid}/secrets/api-key", json={"value": "s3cret"})
        assert r.status_code == 204, r.text
        assert spy(orch, pid, "secrets.get", "api-key")["result"] == "s3cret"
        listed = orch.client.get(f"/v1/plugins/{pid}/secrets").json()
        assert [s["name"] for s in listed] == ["api-key"] and "s3cret" not in json.dumps(listed)
        # events: declared types only
        assert spy(orch, pid, "events.publish", "spy.done", {"n": 1})["ok"]
        undeclared = spy(orch, pid, "events.publish", "other.type", {})
        assert (undeclared["status"], undeclared["code"]) == (403, "event_type_not_declared")
    finally:
        orch.client.post(f"/v1/plugins/{pid}/disable")
        orch.client.delete(f"/v1/plugins/{pid}")


def test_tokens_permissions_and_audit(
    orch: OrchestratorProcess, tmp_path: Path, docker_client: Any
) -> None:
    a, b = f"{SPY}.a", f"{SPY}.b"
    view_a = install_enabled(orch, tmp_path, a, permissions=["storage"], events={})
    install_enabled(orch, tmp_path, b, permissions=["storage"], events={})
    try:
        token_a = spy(orch, a, "whoami")["result"]["token"]
        token_b = spy(orch, b, "whoami")["result"]["token"]
        sock_a = host_socket(docker_client, view_a["container"]["id"])
        with direct(sock_a, token_a) as http:
            assert http.put("/host/v1/storage/kv/x", json={"value": 1}).status_code == 200
            # The host checks grants itself, whatever the plugin's SDK would have done.
            denied = http.get("/host/v1/secrets/anything")
            assert denied.status_code == 403
            assert denied.json()["error"]["code"] == "permission_denied"
            assert "secrets:read" in denied.json()["error"]["message"]
        for token in (token_b, None, "forged"):
            with direct(sock_a, token) as http:
                r = http.get("/host/v1/storage/kv/x")
                assert r.status_code == 401, (token, r.text)
        audit = orch.client.get("/v1/audit", params={"plugin": a}).json()["records"]
        outcomes = [(r["action"], r["outcome"], r["permission"]) for r in audit]
        assert ("secrets.get", "permission_denied", "secrets:read") in outcomes
        # The three refusals fold into one record (two, should a minute end between them).
        unauthorized = [r["count"] for r in audit if r["outcome"] == "unauthorized"]
        assert outcomes.count(("storage.get", "unauthorized", "storage")) == len(unauthorized)
        assert sum(unauthorized) == 3
        # The admin API is not on the plugin's socket.
        with direct(sock_a, token_a) as http:
            assert http.get("/v1/plugins").status_code == 404
            assert http.get("/docs").status_code == 404

        # A reload gives the new container a new token; the old one stops working.
        assert orch.client.post(f"/v1/plugins/{a}/reload").status_code == 200
        new_view = orch.plugin(a)
        new_token = spy(orch, a, "whoami")["result"]["token"]
        assert new_token != token_a
        with direct(host_socket(docker_client, new_view["container"]["id"]), token_a) as http:
            assert http.get("/host/v1/storage/kv/x").status_code == 401
        assert spy(orch, a, "storage.get", "x")["result"] == 1  # the data survived the reload
    finally:
        for pid in (a, b):
            orch.client.post(f"/v1/plugins/{pid}/disable")
            orch.client.delete(f"/v1/plugins/{pid}")


def test_invoke_reaches_declared_dependencies_only(
    orch: OrchestratorProcess, tmp_path: Path
) -> None:
    dep, caller, stranger = f"{SPY}.dep", f"{SPY}.caller", f"{SPY}.stranger"
    install_enabled(orch, tmp_path, dep)
    install_enabled(orch, tmp_path, stranger)
    install_enabled(orch, tmp_path, caller, dependencies=[{"id": dep, "version": "^1.0"}])
    try:
        answer = spy(orch, caller, "invoke", dep, "workflow", "host", {"op": "whoami"})
        assert answer["ok"] and answer["result"]["ok"]
        assert answer["result"]["result"]["url"] == "unix:///run/summit/host.sock"
        refused = spy(orch, caller, "invoke", stranger, "workflow", "host", {"op": "whoami"})
        assert (refused["status"], refused["code"]) == (403, "unknown_dependency")
        audit = orch.client.get("/v1/audit", params={"plugin": caller}).json()["records"]
        assert [r["outcome"] for r in audit] == ["unknown_dependency"]
    finally:
        for pid in (caller, dep, stranger):
            orch.client.post(f"/v1/plugins/{pid}/disable", params={"cascade": True})
            orch.client.delete(f"/v1/plugins/{pid}")


def test_sdk_examples_that_need_the_host_run_in_the_orchestrator(
    orch: OrchestratorProcess, tmp_path: Path
) -> None:
    auth = "com.example.api-key-auth"
    folder = make_plugin(tmp_path / "auth", "api-key-auth")
    assert orch.install_dir(folder, approve=["secrets:read"]).status_code == 201
    try:
        assert (
            orch.client.put(f"/v1/plugins/{auth}/secrets/api-key", json={"value": "k"}).status_code
            == 204
        )
        assert orch.client.post(f"/v1/plugins/{auth}/enable").status_code == 200
        r = orch.client.post(
            "/v1/extension-points/auth_provider/execute",
            json={"input": {"credentials": {"api_key": "k"}}, "plugins": [auth]},
        )
        assert r.status_code == 200, r.text
        assert r.json()["results"][0]["output"]["authenticated"] is True
        r = orch.client.post(
            "/v1/extension-points/auth_provider/execute",
            json={"input": {"credentials": {"api_key": "nope"}}, "plugins": [auth]},
        )
        assert r.json()["results"][0]["output"]["authenticated"] is False
    finally:
        orch.client.post(f"/v1/plugins/{auth}/disable")
        orch.client.delete(f"/v1/plugins/{auth}")


def test_an_upgrade_asking_for_more_waits_for_approval_and_for_reload(
    orch: OrchestratorProcess, tmp_path: Path, docker_client: Any
) -> None:
    pid = f"{SPY}.upgrade"
    view = install_enabled(orch, tmp_path, pid, permissions=["storage"], events={})
    try:
        v2 = make_plugin(
            tmp_path / "v2",
            "hostspy",
            id=pid,
            version="1.1.0",
            permissions=["storage", "secrets:read"],
            events={},
        )
        not_approved = orch.install_dir(v2, approve=["storage"])
        assert not_approved.status_code == 409
        assert not_approved.json()["error"]["details"]["missing"] == ["secrets:read"]
        assert orch.plugin(pid)["version"] == "1.0.0"

        assert orch.install_dir(v2, approve=["storage", "secrets:read"]).status_code == 201
        pending = orch.plugin(pid)
        assert (pending["state"], pending["version"]) == ("ACTIVE", "1.0.0")
        # The running 1.0.0 keeps exactly the grants it was started with.
        token = spy(orch, pid, "whoami")["result"]["token"]
        with direct(host_socket(docker_client, view["container"]["id"]), token) as http:
            assert http.get("/host/v1/secrets/x").status_code == 403
        assert sorted(pending["granted_permissions"]) == ["storage"]

        reloaded = orch.client.post(f"/v1/plugins/{pid}/reload")
        assert reloaded.status_code == 200, reloaded.text
        assert orch.plugin(pid)["version"] == "1.1.0"
        assert sorted(orch.plugin(pid)["granted_permissions"]) == ["secrets:read", "storage"]
        missing = spy(orch, pid, "secrets.get", "x")
        assert (missing["status"], missing["code"]) == (404, "not_found")  # allowed now
    finally:
        orch.client.post(f"/v1/plugins/{pid}/disable")
        orch.client.delete(f"/v1/plugins/{pid}")
