"""``summit-plugin`` end to end on a real Docker Engine and the registry on 127.0.0.1:5000.

new -> build -> verify -> run -> sign -> verify-signature -> push on a generated analyzer,
``verify`` on examples/word-count, and ``verify`` failing on a plugin whose health lies.
Every image, container, socket folder and registry tag made here is removed.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import secrets
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import REPO

pytestmark = [pytest.mark.docker, pytest.mark.registry]

REGISTRY = "127.0.0.1:5000"


def _cli() -> list[str]:
    script = Path(sys.executable).parent / "summit-plugin"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from summit_sdk.cli import app; app()"]


def cli(
    *args: str, cwd: Path | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUMMIT_")}
    env["COLUMNS"] = "200"
    return subprocess.run(
        [*_cli(), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def _owned(docker_client: Any, plugin_id: str) -> list[Any]:
    return list(
        docker_client.containers.list(
            all=True,
            filters={
                "label": [f"io.summit.plugin-id={plugin_id}", "io.summit.owner=summit-plugin-cli"]
            },
        )
    )


@pytest.fixture
def images(docker_client: Any) -> Iterator[list[str]]:
    """Image references to remove at the end of the test."""
    refs: list[str] = []
    yield refs
    for ref in reversed(refs):
        with contextlib.suppress(Exception):
            docker_client.images.remove(ref, force=True)


@pytest.fixture
def registry_tags() -> Iterator[list[tuple[str, str]]]:
    """(repository, tag) pairs to delete from the registry at the end of the test."""
    pushed: list[tuple[str, str]] = []
    yield pushed
    accept = ", ".join(
        [
            "application/vnd.docker.distribution.manifest.v2+json",
            "application/vnd.oci.image.manifest.v1+json",
            "application/vnd.oci.image.index.v1+json",
        ]
    )
    with httpx.Client(base_url=f"http://{REGISTRY}", timeout=10) as http:
        for repo, tag in pushed:
            head = http.head(f"/v2/{repo}/manifests/{tag}", headers={"Accept": accept})
            digest = head.headers.get("docker-content-digest")
            if digest:
                http.delete(f"/v2/{repo}/manifests/{digest}")


def test_author_workflow_new_build_verify_run_sign_push(
    tmp_path: Path,
    base_image: str,
    docker_client: Any,
    images: list[str],
    registry_tags: list[tuple[str, str]],
) -> None:
    token = secrets.token_hex(3)
    name = f"cli-e2e-{token}"
    plugin_id = f"com.example.{name}"
    tag = f"summit-cli-test/{name}:0.1.0"
    images.append(tag)

    created = cli("new", name, "--point", "analyzer", "--dir", str(tmp_path))
    assert created.returncode == 0, created.stderr
    project = tmp_path / name

    built = cli("build", str(project), "--tag", tag, "--base", base_image)
    assert built.returncode == 0, built.stderr
    image = docker_client.images.get(tag)
    assert f"built {tag}" in built.stdout and image.id in built.stdout
    # the same image the orchestrator's builder makes
    manifest = json.loads(image.labels["io.summit.plugin"])
    assert manifest["id"] == plugin_id
    assert (
        image.attrs["Config"]["Env"].count(
            f"SUMMIT_PLUGIN_ENTRYPOINT={name.replace('-', '_')}:plugin"
        )
        == 1
    )
    holder = docker_client.containers.create(tag, network_mode="none")
    try:
        stream, _ = holder.get_archive("/summit/plugin.json")
        with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
            member = tar.extractfile("plugin.json")
            assert member is not None
            assert json.loads(member.read()) == manifest
    finally:
        holder.remove(force=True)

    verified = cli("verify", tag, "--json")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    report = json.loads(verified.stdout)
    assert report["passed"] is True
    names = [c["name"] for c in report["checks"]]
    assert names == [
        "manifest",
        "start",
        "health",
        "initialize",
        f"extension analyzer/{name}",
        "unknown extension",
        "malformed body",
        "events",
        "shutdown",
        "exit within 5 s",
    ]
    assert 0 < report["startup_ms"] < 30_000
    assert _owned(docker_client, plugin_id) == []

    table = cli("verify", tag)
    assert table.returncode == 0, table.stdout + table.stderr
    assert "all 10 checks passed" in table.stdout

    _check_run(tag, plugin_id, name, docker_client)

    keys = tmp_path / "keys"
    assert cli("keygen", "--out", str(keys)).returncode == 0
    sig = tmp_path / "sig.json"
    signed = cli("sign", tag, "--key", str(keys / "summit-signing.key"), "--out", str(sig))
    assert signed.returncode == 0, signed.stderr
    document = json.loads(sig.read_text())["document"]
    assert document["image_digest"] == image.id and document["plugin_id"] == plugin_id
    pub = str(keys / "summit-signing.pub")
    ok = cli("verify-signature", str(sig), "--pub", pub, "--image", tag)
    assert ok.returncode == 0, ok.stderr
    assert cli("keygen", "--out", str(tmp_path / "other")).returncode == 0
    wrong = cli("verify-signature", str(sig), "--pub", str(tmp_path / "other/summit-signing.pub"))
    assert wrong.returncode == 1 and "signature invalid" in wrong.stderr

    repo = f"summit-cli-tests/{name}"
    ref = f"{REGISTRY}/{repo}:0.1.0"
    images.append(ref)
    registry_tags.append((repo, "0.1.0"))
    pushed = cli("push", tag, ref)
    assert pushed.returncode == 0, pushed.stderr
    assert f"pushed {ref} (sha256:" in pushed.stdout
    tags = httpx.get(f"http://{REGISTRY}/v2/{repo}/tags/list", timeout=10).json()
    assert tags["tags"] == ["0.1.0"]


def _check_run(tag: str, plugin_id: str, name: str, docker_client: Any) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUMMIT_")}
    env["COLUMNS"] = "400"
    proc = subprocess.Popen(
        [*_cli(), "run", tag], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        assert proc.stdout is not None
        lines = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if f"/extensions/analyzer/{name}" in line:
                break
        socket_line = next(ln for ln in lines if ln.startswith("socket "))
        sock = socket_line.split(" ", 1)[1].strip()
        assert any(ln.startswith(f"curl --unix-socket {sock} ") for ln in lines)
        transport = httpx.HTTPTransport(uds=sock)
        with httpx.Client(transport=transport, base_url="http://plugin", timeout=10) as http:
            health = http.get("/summit/v1/health").json()
            assert health["plugin"]["id"] == plugin_id
            answer = http.post(
                f"/summit/v1/extensions/analyzer/{name}",
                json={"input": {"text": "hello hello world"}, "context": {"request_id": "r"}},
            )
            assert answer.status_code == 200, answer.text
        (container,) = _owned(docker_client, plugin_id)
        host = container.attrs["HostConfig"]
        assert host["NetworkMode"] == "none" and host["ReadonlyRootfs"] is True
        assert host["CapDrop"] == ["ALL"] and container.attrs["Config"]["User"] == "10001:10001"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(20) == 0, proc.stderr.read() if proc.stderr else ""
        assert _owned(docker_client, plugin_id) == []
        assert not Path(sock).parent.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        for c in _owned(docker_client, plugin_id):
            c.remove(force=True)


def test_verify_passes_on_the_word_count_example(
    base_image: str, docker_client: Any, images: list[str]
) -> None:
    tag = f"summit-cli-test/word-count:{secrets.token_hex(3)}"
    images.append(tag)
    built = cli("build", str(REPO / "examples" / "word-count"), "--tag", tag, "--base", base_image)
    assert built.returncode == 0, built.stderr
    verified = cli("verify", tag, "--json")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    report = json.loads(verified.stdout)
    assert report["plugin"] == {"id": "com.example.word-count", "version": "1.0.0"}
    assert all(c["ok"] for c in report["checks"])
    assert "extension analyzer/word-count" in [c["name"] for c in report["checks"]]


def test_verify_fails_on_a_plugin_whose_health_lies(
    tmp_path: Path, base_image: str, docker_client: Any, images: list[str]
) -> None:
    name = f"liar-{secrets.token_hex(3)}"
    tag = f"summit-cli-test/{name}:0.1.0"
    images.append(tag)
    assert cli("new", name, "--dir", str(tmp_path)).returncode == 0
    code = tmp_path / name / f"{name.replace('-', '_')}.py"
    # The manifest says com.example.<name>; the running plugin claims another id.
    code.write_text(code.read_text().replace(f"id='com.example.{name}'", "id='com.example.other'"))
    assert "com.example.other" in code.read_text()
    # The build refuses code that contradicts plugin.yaml unless told not to check.
    refused = cli("build", str(tmp_path / name), "--tag", tag, "--base", base_image)
    assert refused.returncode == 2 and "id: the code says 'com.example.other'" in refused.stderr
    built = cli("build", str(tmp_path / name), "--tag", tag, "--base", base_image, "--no-check")
    assert built.returncode == 0, built.stderr

    table = cli("verify", tag)
    assert table.returncode == 1
    assert "failed: health" in table.stdout
    report = json.loads(cli("verify", tag, "--json").stdout)
    assert report["passed"] is False
    failed = {c["name"]: c["detail"] for c in report["checks"] if not c["ok"]}
    assert list(failed) == ["health"]
    assert "plugin.id 'com.example.other' != manifest id" in failed["health"]
    assert _owned(docker_client, f"com.example.{name}") == []


def test_bad_input_exits_2_and_missing_image_is_reported(docker_client: Any) -> None:
    missing = cli("verify", "summit-cli-test/does-not-exist:0")
    assert missing.returncode == 2
    assert missing.stderr.startswith("error: image summit-cli-test/does-not-exist:0 not found")
    assert len(missing.stderr.strip().splitlines()) == 1
    assert cli("push", "summit-cli-test/does-not-exist:0", "noslash").returncode == 2
