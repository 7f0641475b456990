"""The plugin lifecycle through the REST API, against real Docker and a real database."""

from __future__ import annotations

import io
import tarfile
import threading
import time
from pathlib import Path

import docker.errors
import pytest

from tests.fixtures.orchestrator import OrchestratorProcess
from tests.fixtures.plugins import make_plugin

pytestmark = [pytest.mark.docker, pytest.mark.slow]

WC = "com.summit-tests.wc-api"


@pytest.fixture(scope="module")
def wc_dir(tmp_path_factory) -> Path:  # type: ignore[no-untyped-def]
    return make_plugin(tmp_path_factory.mktemp("wc") / "wc", "word-count", id=WC)


def test_full_lifecycle(orch: OrchestratorProcess, wc_dir: Path, docker_client) -> None:  # type: ignore[no-untyped-def]
    r = orch.install_dir(wc_dir)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["state"] == "LOADED"
    assert body["version"] == "1.0.0"
    assert body["manifest"]["id"] == WC
    assert body["container"] is None

    again = orch.install_dir(wc_dir)
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "already_installed"

    r = orch.client.post(f"/v1/plugins/{WC}/enable")
    assert r.status_code == 200, r.text
    active = r.json()
    assert active["state"] == "ACTIVE"
    container = docker_client.containers.get(active["container"]["id"])
    assert container.status == "running"

    r = orch.client.post(
        "/v1/extension-points/analyzer/execute",
        json={"input": {"text": "to be or not to be"}, "plugins": [WC]},
    )
    assert r.status_code == 200, r.text
    [result] = r.json()["results"]
    assert result["output"]["words"] == 6
    assert result["output"]["top"][0] == {"word": "to", "count": 2}

    # The call profile shows where that call's time went.
    profile = orch.client.get(f"/v1/plugins/{WC}/profile").json()
    assert profile["calls"] == 1
    assert set(profile["phases"]) == {"slot", "connect", "plugin", "check"}
    assert profile["phases"]["plugin"]["p50"] > 0
    assert orch.client.get("/v1/plugins/com.example.nobody/profile").status_code == 404

    # Enabling an ACTIVE plugin is an illegal transition that names the current state.
    r = orch.client.post(f"/v1/plugins/{WC}/enable")
    assert r.status_code == 409
    assert r.json()["error"]["details"]["state"] == "ACTIVE"

    logs = orch.client.get(f"/v1/plugins/{WC}/logs", params={"tail": 20})
    assert logs.status_code == 200
    usage = orch.client.get(f"/v1/plugins/{WC}/usage").json()
    assert usage["usage"]["memory_limit_bytes"] == 128 * 1024 * 1024

    r = orch.client.post(f"/v1/plugins/{WC}/disable")
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "LOADED"
    assert r.json()["container"] is None
    assert not [c for c in orch.owned_containers(docker_client) if c.id == container.id]

    history = orch.client.get(f"/v1/plugins/{WC}/events").json()
    assert [(h["from_state"], h["to_state"]) for h in reversed(history)] == [
        ("UNLOADED", "LOADED"),
        ("LOADED", "INITIALIZING"),
        ("INITIALIZING", "ACTIVE"),
        ("ACTIVE", "UNLOADING"),
        ("UNLOADING", "LOADED"),
    ]
    assert all(h["at"] and h["reason"] for h in history)

    image = body["container"] or orch.client.get(f"/v1/plugins/{WC}").json()
    r = orch.client.delete(f"/v1/plugins/{WC}")
    assert r.status_code == 204
    assert orch.client.get(f"/v1/plugins/{WC}").status_code == 404
    assert image  # the built image went with the plugin (not shared with any other plugin)
    assert not docker_client.images.list(name=f"summit-plugin/{WC}")


def test_sandbox_of_a_running_plugin(
    orch: OrchestratorProcess, tmp_path: Path, docker_client
) -> None:  # type: ignore[no-untyped-def]
    pid = "com.summit-tests.sandbox"
    src = make_plugin(tmp_path / "p", id=pid)
    assert orch.install_dir(src).status_code == 201
    enabled = orch.client.post(f"/v1/plugins/{pid}/enable").json()
    c = docker_client.containers.get(enabled["container"]["id"])
    host = c.attrs["HostConfig"]
    assert c.attrs["Config"]["User"] == "10001:10001"
    assert host["ReadonlyRootfs"] is True
    assert host["CapDrop"] == ["ALL"] and not host["CapAdd"]
    assert "no-new-privileges:true" in host["SecurityOpt"]
    assert host["Privileged"] is False
    assert host["PidsLimit"] == 128
    assert host["Memory"] == 96 * 1024 * 1024 == host["MemorySwap"]
    assert host["NanoCpus"] == 500_000_000
    assert host["NetworkMode"] == "none"
    assert "/tmp" in host["Tmpfs"] and "size=" in host["Tmpfs"]["/tmp"]
    mounts = c.attrs["Mounts"]
    assert [m["Destination"] for m in mounts] == ["/run/summit"]
    assert not any("docker.sock" in m["Source"] for m in mounts)
    assert c.labels["io.summit.owner"] == orch.instance
    assert c.labels["io.summit.plugin-id"] == pid
    # Inside: no network but loopback, and no way to write the root filesystem.
    code, out = c.exec_run(
        [
            "python",
            "-c",
            "import socket;s=socket.socket();s.settimeout(2);s.connect(('1.1.1.1',80))",
        ]
    )
    assert code != 0 and b"unreachable" in out.lower()
    code, out = c.exec_run(["python", "-c", "open('/plugin/x','w')"])
    assert code != 0 and b"read-only" in out.lower()
    code, out = c.exec_run(["sh", "-c", "grep CapEff /proc/self/status"])
    assert out.split()[-1] == b"0000000000000000"
    assert orch.client.post(f"/v1/plugins/{pid}/disable").status_code == 200
    assert orch.client.delete(f"/v1/plugins/{pid}").status_code == 204


def test_reload_serves_every_call(orch: OrchestratorProcess, tmp_path: Path, docker_client) -> None:  # type: ignore[no-untyped-def]
    pid = "com.summit-tests.reload"
    assert orch.install_dir(make_plugin(tmp_path / "v1", id=pid)).status_code == 201
    first = orch.client.post(f"/v1/plugins/{pid}/enable").json()["container"]["id"]
    # Upgrade while ACTIVE: the old version keeps serving until reload.
    r = orch.install_dir(make_plugin(tmp_path / "v2", id=pid, version="1.1.0"))
    assert r.status_code == 201, r.text
    assert r.json()["version"] == "1.0.0" and r.json()["pending_version"] == "1.1.0"

    # The default limit (100 calls per 15 minutes) would throttle the hammering below.
    r = orch.client.put(f"/v1/plugins/{pid}/limits", json={"rate_limit_requests": 0})
    assert r.status_code == 200 and r.json()["resources"]["rate_limit_requests"] == 0

    failures: list[str] = []
    calls = 0
    stop = threading.Event()

    def hammer() -> None:
        nonlocal calls
        while not stop.is_set():
            resp = orch.client.post(
                "/v1/extension-points/analyzer/execute",
                json={"input": {"n": calls}, "plugins": [pid]},
            )
            calls += 1
            result = resp.json().get("results", [{}])[0]
            if resp.status_code != 200 or "output" not in result:
                failures.append(resp.text)

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    r = orch.client.post(f"/v1/plugins/{pid}/reload")
    time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join()
    assert r.status_code == 200, r.text
    assert r.json()["version"] == "1.1.0" and r.json()["pending_version"] is None
    assert r.json()["container"]["id"] != first
    assert calls > 20
    assert failures == []
    with pytest.raises(docker.errors.NotFound):
        docker_client.containers.get(first)
    orch.client.post(f"/v1/plugins/{pid}/disable")
    assert orch.client.delete(f"/v1/plugins/{pid}").status_code == 204


def test_dependencies_enable_first_and_block_disable(
    orch: OrchestratorProcess, tmp_path: Path
) -> None:
    base_id, app_id = "com.summit-tests.dep-base", "com.summit-tests.dep-app"
    app_src = make_plugin(
        tmp_path / "app", id=app_id, dependencies=[{"id": base_id, "version": "^1.0"}]
    )
    r = orch.install_dir(app_src)
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "unresolved_dependencies"
    assert r.json()["error"]["details"][0]["id"] == base_id
    assert orch.install_dir(make_plugin(tmp_path / "base", id=base_id)).status_code == 201
    assert orch.install_dir(app_src).status_code == 201

    r = orch.client.post(f"/v1/plugins/{app_id}/enable")
    assert r.status_code == 200, r.text
    assert orch.plugin(base_id)["state"] == "ACTIVE"

    r = orch.client.post(f"/v1/plugins/{base_id}/disable")
    assert r.status_code == 409
    assert r.json()["error"]["details"]["dependents"] == [app_id]
    r = orch.client.post(f"/v1/plugins/{base_id}/disable", params={"cascade": True})
    assert r.status_code == 200
    assert orch.plugin(app_id)["state"] == "LOADED"
    assert orch.client.delete(f"/v1/plugins/{base_id}").status_code == 409
    assert orch.client.delete(f"/v1/plugins/{app_id}").status_code == 204
    assert orch.client.delete(f"/v1/plugins/{base_id}").status_code == 204


def test_config_is_validated_and_applied(orch: OrchestratorProcess, tmp_path: Path) -> None:
    pid = "com.summit-tests.config"
    src = make_plugin(tmp_path / "p", id=pid)
    r = orch.install_dir(src, config={"init_delay_s": "soon"})
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "invalid_config"
    assert r.json()["error"]["details"][0]["path"] == "config['init_delay_s']"
    assert orch.client.get(f"/v1/plugins/{pid}").status_code == 404
    assert orch.install_dir(src, config={"init_delay_s": 0}).status_code == 201
    r = orch.client.put(f"/v1/plugins/{pid}/config", json={"config": {"init_delay_s": -1}})
    assert r.status_code == 422
    r = orch.client.put(f"/v1/plugins/{pid}/config", json={"config": {"init_delay_s": 0.1}})
    assert r.status_code == 200 and r.json()["config"] == {"init_delay_s": 0.1}
    assert orch.client.delete(f"/v1/plugins/{pid}").status_code == 204


# -- bad input -------------------------------------------------------------------------------


def _tar(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _file(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def _link(name: str, target: str, kind: bytes) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info, None


MANIFEST = (Path(__file__).parents[1] / "fixtures/plugins/probe/plugin.yaml").read_bytes()


@pytest.mark.parametrize(
    "members",
    [
        [_file("plugin.yaml", MANIFEST), _file("../escape.py", b"x")],
        [_file("plugin.yaml", MANIFEST), _file("/etc/evil", b"x")],
        [_file("plugin.yaml", MANIFEST), _link("link", "../../etc/passwd", tarfile.SYMTYPE)],
        [_file("plugin.yaml", MANIFEST), _link("abs", "/etc/passwd", tarfile.SYMTYPE)],
        [_file("plugin.yaml", MANIFEST), _link("hard", "/etc/passwd", tarfile.LNKTYPE)],
        [_file("probe.py", b"")],
    ],
    ids=["dotdot", "absolute", "symlink-out", "symlink-abs", "hardlink-out", "no-manifest"],
)
def test_hostile_bundles_are_refused_leaving_nothing(orch: OrchestratorProcess, members) -> None:  # type: ignore[no-untyped-def]
    before = sorted(p.name for p in orch.state_dir.rglob("*"))
    r = orch.client.post("/v1/plugins", files={"bundle": ("b.tar.gz", _tar(members))})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "invalid_bundle"
    assert r.json()["error"]["message"]
    assert sorted(p.name for p in orch.state_dir.rglob("*")) == before
    assert orch.client.get("/v1/plugins/com.summit-tests.probe").status_code == 404


def test_oversized_bundle_is_refused(orch: OrchestratorProcess) -> None:
    import os

    big = _tar([_file("plugin.yaml", MANIFEST), _file("blob.bin", os.urandom(51 * 1024 * 1024))])
    r = orch.client.post("/v1/plugins", files={"bundle": ("b.tar.gz", big)})
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "bundle_too_large"


def test_malformed_manifest_lists_every_error(orch: OrchestratorProcess) -> None:
    bad = b"""schema_version: 1
id: Not A Valid Id
version: "1.0"
runtime: { base: python, entrypoint: "no colon" }
extensions:
  - { point: teleport, name: x }
permissions: [root]
"""
    r = orch.client.post(
        "/v1/plugins", files={"bundle": ("b.tar.gz", _tar([_file("plugin.yaml", bad)]))}
    )
    assert r.status_code == 422
    err = r.json()["error"]
    assert err["code"] == "invalid_manifest"
    paths = {d["path"] for d in err["details"]}
    assert {
        "id",
        "name",
        "version",
        "runtime.entrypoint",
        "extensions[0].point",
        "permissions[0]",
    } <= paths
    assert "semantic version" in next(
        d["message"] for d in err["details"] if d["path"] == "version"
    )


def test_unapproved_permissions_are_listed(orch: OrchestratorProcess, tmp_path: Path) -> None:
    src = make_plugin(
        tmp_path / "p",
        id="com.summit-tests.perms",
        permissions=["read:data", "storage"],
    )
    r = orch.install_dir(src, approve=["read:data"])
    assert r.status_code == 409
    assert r.json()["error"]["details"]["missing"] == ["storage"]
    assert orch.client.get("/v1/plugins/com.summit-tests.perms").status_code == 404


def test_unknown_plugin_and_image(orch: OrchestratorProcess) -> None:
    for method, path in [
        ("GET", "/v1/plugins/com.nobody.nothing"),
        ("POST", "/v1/plugins/com.nobody.nothing/enable"),
        ("POST", "/v1/plugins/com.nobody.nothing/disable"),
        ("DELETE", "/v1/plugins/com.nobody.nothing"),
    ]:
        r = orch.client.request(method, path)
        assert r.status_code == 404, (method, path)
        assert r.json()["error"]["code"] == "plugin_not_found"
    r = orch.client.post("/v1/plugins", json={"image": "127.0.0.1:5000/nobody/nothing:9.9.9"})
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "image_not_found"
    r = orch.client.post("/v1/plugins", json={"image": "summit-plugin/not-here:1"})
    assert r.status_code == 422


def test_auth_and_error_shape(orch: OrchestratorProcess) -> None:
    import httpx

    r = httpx.get(f"{orch.url}/v1/plugins")
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "unauthorized"
    r = httpx.get(f"{orch.url}/v1/plugins", headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401
    r = orch.client.post("/v1/plugins", content=b"hello", headers={"content-type": "text/plain"})
    assert r.status_code == 422 and set(r.json()["error"]) == {"code", "message", "details"}
    assert httpx.get(f"{orch.url}/healthz").status_code == 200
    assert httpx.get(f"{orch.url}/docs").status_code == 200


def test_install_streams_build_progress(orch: OrchestratorProcess, tmp_path: Path) -> None:
    import json

    from orchestrator.services.bundles import pack_directory

    pid = "com.summit-tests.progress"
    src = make_plugin(tmp_path / "p", id=pid)
    (src / "extra.txt").write_text("changes the digest, so the image must really be built")
    with orch.client.stream(
        "POST",
        "/v1/plugins",
        files={"bundle": ("b.tar.gz", pack_directory(src))},
        headers={"Accept": "application/x-ndjson"},
    ) as r:
        assert r.status_code == 201
        assert r.headers["content-type"].startswith("application/x-ndjson")
        lines = [json.loads(line) for line in r.iter_lines() if line.strip()]
    progress = [line["progress"] for line in lines if "progress" in line]
    assert any(p.startswith("building summit-plugin/") for p in progress)
    assert any("Step" in p for p in progress)  # the Docker build's own output
    assert lines[-1]["plugin"]["state"] == "LOADED"
    # Refused before anything is built: a plain HTTP error, not a stream.
    r = orch.client.post(
        "/v1/plugins",
        files={"bundle": ("b.tar.gz", pack_directory(src))},
        headers={"Accept": "application/x-ndjson"},
    )
    assert r.status_code == 409 and r.json()["error"]["code"] == "already_installed"
    assert orch.client.delete(f"/v1/plugins/{pid}").status_code == 204


@pytest.mark.parametrize("ref", ["Upper/Case:1", "a" * 256, "word count"])
def test_a_malformed_image_reference_is_the_callers_mistake(
    orch: OrchestratorProcess, ref: str
) -> None:
    for params in ({}, {"async": "true"}):
        r = orch.client.post("/v1/plugins", params=params, json={"image": ref})
        assert r.status_code == 422, r.text
        assert r.json()["error"]["code"] == "invalid_image_reference"
