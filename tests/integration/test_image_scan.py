"""Installs by image reference get the checks a source install gets: the image's files are read
(never run), a known-vulnerable installed package or a dangerous call in the plugin's own code
refuses the install (admin override as for bundles), and a clean image installs with its
report. The same image read from the registry's layers finds the same things."""

from __future__ import annotations

import contextlib
import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker.errors
import pytest
import yaml
from summit_sdk.imagebuild import prepare_context

from orchestrator.domain.manifest import load_manifest_text
from orchestrator.runtime.base import LABEL_MANIFEST
from orchestrator.runtime.docker import LABEL_IMAGE_SCAN
from orchestrator.runtime.registry import RegistryImageStore
from orchestrator.security.advisories import AdvisoryDatabase
from orchestrator.security.image_contents import scan_image_contents, selector
from tests.conftest import REPO
from tests.fixtures.orchestrator import OrchestratorProcess
from tests.fixtures.plugins import make_plugin
from tests.integration.conftest import sqlite_orchestrator

pytestmark = [pytest.mark.docker]

OSV = REPO / "tests/fixtures/osv"
REGISTRY = "127.0.0.1:5000"
SITE = "opt/summit/lib/python3.11/site-packages"
# PyYAML 5.3 is affected by SUMMIT-TEST-2026-0001 (HIGH) in tests/fixtures/osv.
VULNERABLE_METADATA = "Metadata-Version: 2.1\nName: PyYAML\nVersion: 5.3\nSummary: fake\n"
RISKY = """
import os


def cleanup(path):
    os.system("rm -rf " + path)
"""


@pytest.fixture(scope="module")
def orch_scan(base_image: str, docker_client: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    with sqlite_orchestrator(
        tmp_path_factory,
        docker_client,
        "orch-image-scan",
        advisory_db=str(OSV),
        scan_fail_on="HIGH",
    ) as o:
        yield o


@pytest.fixture
def images(docker_client: Any) -> Iterator[list[str]]:
    """Tags built by a test, all removed after it."""
    made: list[str] = []
    yield made
    for tag in made:
        with contextlib.suppress(docker.errors.NotFound):
            docker_client.images.remove(tag, force=True)


def build_plugin_image(
    docker_client: Any,
    tmp: Path,
    images: list[str],
    pid: str,
    *,
    code: dict[str, str] | None = None,
    extra: dict[str, str] | None = None,
) -> str:
    """A plugin image the way the orchestrator's builder makes one (FROM the local base
    image, the plugin in /plugin, the manifest in its label), plus ``extra`` files at their
    absolute paths."""
    folder = make_plugin(tmp / "src", id=pid)
    for name, text in (code or {}).items():
        (folder / name).write_text(text)
    manifest = load_manifest_text((folder / "plugin.yaml").read_text())
    manifest_json = json.dumps(manifest.to_json(), sort_keys=True)
    ctx = tmp / "ctx"
    ctx.mkdir()
    prepare_context(
        ctx,
        folder,
        base_image_id=docker_client.images.get("summit/plugin-python:latest").id,
        entrypoint=manifest.runtime.entrypoint or "",
        manifest_json=manifest_json,
        manifest_yaml=yaml.safe_dump(manifest.to_json(), sort_keys=False),
    )
    if extra:
        for path, text in extra.items():
            target = ctx / "extra" / path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
        with (ctx / "Dockerfile").open("a") as dockerfile:
            dockerfile.write("COPY extra/ /\n")
    tag = f"summit-tests/image-scan-{pid.rsplit('.', 1)[-1]}:{secrets.token_hex(4)}"
    images.append(tag)
    docker_client.images.build(
        path=str(ctx), tag=tag, labels={LABEL_MANIFEST: manifest_json}, rm=True, forcerm=True
    )
    return tag


def scan_containers(docker_client: Any, orch: OrchestratorProcess) -> list[Any]:
    """The containers this orchestrator made to read images (each is removed after its scan)."""
    owned = f"{LABEL_IMAGE_SCAN}={orch.instance}"
    return list(docker_client.containers.list(all=True, filters={"label": owned}))


def test_a_clean_image_installs_with_its_report(
    orch_scan: OrchestratorProcess, docker_client: Any, tmp_path: Path, images: list[str]
) -> None:
    pid = "com.summit-tests.image-scan-clean"
    tag = build_plugin_image(docker_client, tmp_path, images, pid)
    r = orch_scan.client.post("/v1/plugins", json={"image": tag})
    assert r.status_code == 201, r.text
    report = orch_scan.client.get(f"/v1/plugins/{pid}/scan").json()
    assert report["source"] == "image"
    assert report["blocking"] == [] and report["summary"]["HIGH"] == 0
    assert report["image"]["plugin_dir"] == "/plugin"
    assert report["image"]["code_files"] >= 1  # probe.py
    # The base image's own venv: the SDK and its dependencies, every one checked.
    deps = {d["name"]: d for d in report["dependencies"]}
    assert deps["summit-plugin-sdk"]["status"] == "clean"
    assert deps["summit-plugin-sdk"]["ecosystem"] == "PyPI"
    assert deps["summit-plugin-sdk"]["locations"][0].startswith(f"/{SITE}/")
    assert report["image"]["python_packages"] == len(report["dependencies"]) >= 5
    print(f"\nimage extract+scan: {report['image']['seconds']} s")
    assert scan_containers(docker_client, orch_scan) == []
    assert orch_scan.client.delete(f"/v1/plugins/{pid}").status_code == 204


def test_a_known_vulnerable_installed_package_refuses_the_install(
    orch_scan: OrchestratorProcess, docker_client: Any, tmp_path: Path, images: list[str]
) -> None:
    pid = "com.summit-tests.image-scan-vulnerable"
    metadata = f"/{SITE}/PyYAML-5.3.dist-info/METADATA"
    tag = build_plugin_image(
        docker_client, tmp_path, images, pid, extra={metadata: VULNERABLE_METADATA}
    )
    r = orch_scan.client.post("/v1/plugins", json={"image": tag})
    assert r.status_code == 409, r.text
    error = r.json()["error"]
    assert error["code"] == "scan_refused"
    assert [(f["file"], f["rule"]) for f in error["details"]["blocking"]] == [
        (metadata, "osv:SUMMIT-TEST-2026-0001")
    ]
    assert orch_scan.client.get(f"/v1/plugins/{pid}").status_code == 404
    assert scan_containers(docker_client, orch_scan) == []

    # An admin may install it anyway, as for a bundle; the report keeps the advisory.
    allowed = orch_scan.client.post(
        "/v1/plugins",
        json={"image": tag, "allow_findings": True, "override_reason": "patched in-house"},
    )
    assert allowed.status_code == 201, allowed.text
    report = orch_scan.client.get(f"/v1/plugins/{pid}/scan").json()
    assert report["override"]["reason"] == "patched in-house"
    [yaml_dep] = [d for d in report["dependencies"] if d["name"] == "pyyaml"]
    assert yaml_dep["status"] == "vulnerable" and yaml_dep["locations"] == [metadata]
    assert yaml_dep["advisories"][0]["fixed"] == "5.4"
    assert orch_scan.client.delete(f"/v1/plugins/{pid}").status_code == 204


def test_a_dangerous_call_in_the_plugin_code_refuses_the_install(
    orch_scan: OrchestratorProcess, docker_client: Any, tmp_path: Path, images: list[str]
) -> None:
    pid = "com.summit-tests.image-scan-risky"
    tag = build_plugin_image(docker_client, tmp_path, images, pid, code={"helpers.py": RISKY})
    r = orch_scan.client.post("/v1/plugins", json={"image": tag})
    assert r.status_code == 409, r.text
    error = r.json()["error"]
    assert error["code"] == "scan_refused"
    found = {(f["file"], f["line"], f["rule"]) for f in error["details"]["blocking"]}
    assert ("/plugin/helpers.py", 6, "summit:process-exec") in found
    assert orch_scan.client.get(f"/v1/plugins/{pid}").status_code == 404
    assert scan_containers(docker_client, orch_scan) == []


@pytest.mark.registry
def test_the_registry_layers_read_as_the_export_does(
    docker_client: Any, tmp_path: Path, images: list[str], base_image: str
) -> None:
    """The Kubernetes image store reads the same image from its registry layers (whiteouts
    applied, digests checked) and the scan finds the same problems in it."""
    pid = "com.summit-tests.image-scan-layers"
    metadata = f"/{SITE}/PyYAML-5.3.dist-info/METADATA"
    tag = build_plugin_image(
        docker_client,
        tmp_path,
        images,
        pid,
        code={"helpers.py": RISKY},
        extra={metadata: VULNERABLE_METADATA},
    )
    remote = f"{REGISTRY}/summit-tests/image-scan-layers:{secrets.token_hex(4)}"
    docker_client.images.get(tag).tag(remote)
    images.append(remote)
    for line in docker_client.images.push(remote, stream=True, decode=True):
        assert "error" not in line, line
    store = RegistryImageStore(insecure_registries=[REGISTRY])
    try:
        info = store.image(remote)
        assert info is not None and info.workdir == "/plugin"
        fs = store.extract_filesystem(
            info.id, tmp_path / "root", wanted=selector("/plugin"), max_bytes=2 * 1024**3
        )
    finally:
        store.close()
    scan = scan_image_contents(
        fs.root,
        plugin_dir="/plugin",
        network_access=False,
        db=AdvisoryDatabase.load(OSV),
        links=fs.links,
    )
    assert ("/plugin/helpers.py", "summit:process-exec") in {
        (f.file, f.rule) for f in scan.findings
    }
    vulnerable = [d for d in scan.dependencies if d.status == "vulnerable"]
    assert [(d.name, d.locations) for d in vulnerable] == [("pyyaml", (metadata,))]
    # Only what the scan reads was written: no interpreter, no standard library.
    assert not (fs.root / "usr/bin").exists()
    assert fs.unpacked_bytes > 50 * 1024 * 1024 > fs.written_bytes
