"""``summit-plugin publish`` and ``dev`` against a real orchestrator, and ``verify`` on every
example: what a plugin author does after ``new``/``build``.

One orchestrator (SQLite) serves the module; every image, registry tag and plugin made here is
removed at the end.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import REPO
from tests.fixtures.orchestrator import TOKEN, OrchestratorProcess
from tests.fixtures.waiting import wait_until
from tests.integration.conftest import sqlite_orchestrator
from tests.integration.test_sdk_cli import REGISTRY, _cli, cli, images, registry_tags

pytestmark = [pytest.mark.docker, pytest.mark.registry, pytest.mark.slow]

__all__ = ["images", "registry_tags"]  # fixtures shared with test_sdk_cli

PYTHON_EXAMPLES = sorted(
    p.parent.name
    for p in (REPO / "examples").glob("*/plugin.yaml")
    if (p.parent / "tests").is_dir()
)


@pytest.fixture(scope="module")
def orch1(
    base_image: str, docker_client: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OrchestratorProcess]:
    with sqlite_orchestrator(
        tmp_path_factory, docker_client, "orch-sdk", health_interval_s="1"
    ) as o:
        yield o


def _remote(orch: OrchestratorProcess) -> list[str]:
    return ["--url", orch.url, "--token", TOKEN]


@pytest.mark.parametrize("example", PYTHON_EXAMPLES)
def test_every_example_builds_and_passes_verify(
    example: str, base_image: str, images: list[str]
) -> None:
    tag = f"summit-cli-test/{example}:{secrets.token_hex(3)}"
    images.append(tag)
    built = cli("build", str(REPO / "examples" / example), "--tag", tag, "--base", base_image)
    assert built.returncode == 0, built.stderr
    verified = cli("verify", tag)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "checks passed" in verified.stdout


def test_publish_pushes_then_installs_from_the_registry(
    tmp_path: Path,
    orch1: OrchestratorProcess,
    base_image: str,
    images: list[str],
    registry_tags: list[tuple[str, str]],
) -> None:
    name = f"pub-{secrets.token_hex(3)}"
    plugin_id = f"com.example.{name}"
    tag = f"summit-cli-test/{name}:0.1.0"
    images.append(tag)
    assert cli("new", name, "--point", "workflow", "--dir", str(tmp_path)).returncode == 0
    project = tmp_path / name
    tested = cli("test", str(project), "-q", "-p", "no:cacheprovider", cwd=project)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert cli("build", str(project), "--tag", tag, "--base", base_image).returncode == 0

    repo = f"summit-cli-tests/{name}"
    ref = f"{REGISTRY}/{repo}:0.1.0"
    images.append(ref)
    registry_tags.append((repo, "0.1.0"))
    wrong = cli("publish", tag, ref, "--url", orch1.url, "--token", "not-the-token")
    assert wrong.returncode == 2 and "refused" in wrong.stderr
    assert httpx.get(f"http://{REGISTRY}/v2/{repo}/tags/list", timeout=10).status_code == 404

    published = cli("publish", tag, ref, *_remote(orch1), "--approve-all", "--enable")
    try:
        assert published.returncode == 0, published.stdout + published.stderr
        assert f"pushed {ref}" in published.stdout
        assert f"{plugin_id} is ACTIVE" in published.stdout
        assert orch1.plugin(plugin_id)["state"] == "ACTIVE"
        answer = orch1.client.post(
            "/v1/extension-points/workflow/execute",
            json={
                "input": {"action": "count", "params": {"a": 1, "b": 2}},
                "plugins": [plugin_id],
            },
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["results"][0]["output"] == {"status": "done", "result": 2}

        again = cli("publish", tag, ref, *_remote(orch1))
        assert again.returncode == 2 and "already_installed" in again.stderr
    finally:
        # Its container uses the pulled image: gone first, the image can then be removed
        # (with a container still on it, removing the tags would leave it dangling).
        with contextlib.suppress(httpx.HTTPError):
            orch1.client.post(f"/v1/plugins/{plugin_id}/disable")
            orch1.client.delete(f"/v1/plugins/{plugin_id}")


def test_publish_to_the_catalog_pushes_then_publishes_by_digest(
    tmp_path: Path,
    orch1: OrchestratorProcess,
    base_image: str,
    images: list[str],
    registry_tags: list[tuple[str, str]],
) -> None:
    name = f"cat-{secrets.token_hex(3)}"
    plugin_id = f"com.example.{name}"
    tag = f"summit-cli-test/{name}:0.1.0"
    images.append(tag)
    assert cli("new", name, "--point", "workflow", "--dir", str(tmp_path)).returncode == 0
    assert cli("build", str(tmp_path / name), "--tag", tag, "--base", base_image).returncode == 0
    repo = f"summit-cli-tests/{name}"
    ref = f"{REGISTRY}/{repo}:0.1.0"
    images.append(ref)
    registry_tags.append((repo, "0.1.0"))
    readme = tmp_path / "README.md"
    readme.write_text("# Counting\nCounts things.")

    missing = cli("publish", tag, ref, *_remote(orch1), "--catalog", "--readme", "nope.md")
    assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1
    published = cli(
        "publish", tag, ref, *_remote(orch1), "--catalog",
        "--readme", str(readme), "--category", "tools", "--keyword", "count",
    )  # fmt: skip
    assert published.returncode == 0, published.stdout + published.stderr
    assert f"published {plugin_id} 0.1.0 to the catalog" in published.stdout
    [version] = orch1.client.get(f"/v1/catalog/plugins/{plugin_id}/versions").json()["items"]
    assert version["image"].startswith(f"{REGISTRY}/{repo}@sha256:")
    assert version["readme"] == "# Counting\nCounts things." and version["categories"] == ["tools"]
    assert orch1.client.get(f"/v1/plugins/{plugin_id}").status_code == 404  # not installed


def test_dev_deploys_and_hot_reloads_on_every_change(
    tmp_path: Path, orch1: OrchestratorProcess, docker_client: Any
) -> None:
    name = f"dev-{secrets.token_hex(3)}"
    plugin_id = f"com.example.{name}"
    assert cli("new", name, "--dir", str(tmp_path)).returncode == 0
    project = tmp_path / name
    code = project / f"{name.replace('-', '_')}.py"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUMMIT_")}
    log = (tmp_path / "dev.log").open("w+")
    proc = subprocess.Popen(
        [*_cli(), "dev", str(project), *_remote(orch1), "--interval", "0.2"],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )

    def state() -> dict[str, Any] | None:
        r = orch1.client.get(f"/v1/plugins/{plugin_id}")
        return r.json() if r.status_code == 200 else None

    def call() -> dict[str, Any]:
        r = orch1.client.post(
            "/v1/extension-points/analyzer/execute",
            json={"input": {"text": "alpha alpha beta"}, "plugins": [plugin_id]},
        )
        assert r.status_code == 200, r.text
        result: dict[str, Any] = r.json()["results"][0]
        assert result.get("error") is None, result
        return result["output"]

    try:
        first = wait_until(
            lambda: (s := state()) and s["state"] == "ACTIVE" and s, 120, "the first deploy"
        )
        assert first["version"].startswith("0.1.0-dev.")
        assert call()["findings"][0]["label"] == "alpha"

        # A broken plugin.yaml is reported and the running version keeps serving.
        manifest = (project / "plugin.yaml").read_text()
        (project / "plugin.yaml").write_text(manifest.replace("version: 0.1.0", "version: nope"))
        wait_until(lambda: "deploy failed" in _read(log), 30, "the failed deploy to be reported")
        assert state()["version"] == first["version"]  # type: ignore[index]
        (project / "plugin.yaml").write_text(manifest)
        second = wait_until(
            lambda: (s := state()) and s["version"] != first["version"] and s, 120, "redeploy"
        )

        # Change the code: the plugin is reloaded with it, and calls keep working meanwhile.
        source = code.read_text()
        assert source.count(".lower()") == 1
        code.write_text(source.replace(".lower()", ".upper()"))
        failures = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                output = call()
            except AssertionError as exc:
                failures.append(str(exc))
                continue
            current = state() or {}
            deployed = current.get("version") not in (first["version"], second["version"])
            if deployed and output["findings"][0]["label"] == "ALPHA":
                break
            time.sleep(0.05)
        else:
            raise AssertionError(f"the changed code was not deployed:\n{_read(log)}")
        assert failures == []
        assert len(orch1.owned_containers(docker_client)) >= 1
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()
    assert proc.returncode == 0, _read_path(tmp_path / "dev.log")
    output = _read_path(tmp_path / "dev.log")
    assert output.count(f"{plugin_id} 0.1.0-dev.") >= 3 and "is ACTIVE" in output
    with contextlib.suppress(httpx.HTTPError):
        orch1.client.post(f"/v1/plugins/{plugin_id}/disable")
        orch1.client.delete(f"/v1/plugins/{plugin_id}")
    shutil.rmtree(project, ignore_errors=True)


def test_dev_and_publish_refuse_bad_input_in_one_line(
    tmp_path: Path, orch1: OrchestratorProcess
) -> None:
    nowhere = cli("dev", str(tmp_path / "missing"), *_remote(orch1), "--once")
    assert nowhere.returncode == 2 and nowhere.stderr.startswith("error: ")
    assert len(nowhere.stderr.strip().splitlines()) == 1
    assert cli("new", "badcfg", "--dir", str(tmp_path)).returncode == 0
    bad_config = cli(
        "dev", str(tmp_path / "badcfg"), *_remote(orch1), "--config", "[1]", timeout=30
    )
    assert bad_config.returncode == 2 and "--config must be a JSON object" in bad_config.stderr
    down = cli("dev", str(tmp_path / "badcfg"), "--url", "http://127.0.0.1:9", "--once")
    assert down.returncode == 1 and "cannot be reached" in down.stderr
    assert orch1.client.get("/v1/plugins/com.example.badcfg").status_code == 404


def _read(log: Any) -> str:
    log.flush()
    log.seek(0)
    text: str = log.read()
    log.seek(0, os.SEEK_END)
    return text


def _read_path(path: Path) -> str:
    return path.read_text()
