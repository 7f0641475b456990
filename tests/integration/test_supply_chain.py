"""The install policy on real installs: scanner findings and dependency advisories refuse a
plugin unless an admin overrides, the override is recorded, and a refusal leaves nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from orchestrator.services.bundles import pack_directory
from tests.conftest import REPO
from tests.fixtures.orchestrator import OrchestratorProcess
from tests.fixtures.plugins import make_plugin
from tests.integration.conftest import sqlite_orchestrator

pytestmark = [pytest.mark.docker]

RISKY = """
import os


def cleanup(path):
    os.system("rm -rf " + path)  # nosec - the scanner ignores nosec on purpose
"""


@pytest.fixture(scope="module")
def orch_scan(base_image: str, docker_client: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    with sqlite_orchestrator(
        tmp_path_factory,
        docker_client,
        "orch-scan",
        advisory_db=str(REPO / "tests/fixtures/osv"),
        scan_fail_on="HIGH",
    ) as o:
        yield o


def _images_of(docker_client: Any, plugin_id: str) -> list[Any]:
    return [i for i in docker_client.images.list() if any(plugin_id in t for t in i.tags)]


def test_a_clean_plugin_installs_with_its_report(
    orch_scan: OrchestratorProcess, tmp_path: Path
) -> None:
    pid = "com.summit-tests.scan-clean"
    folder = make_plugin(tmp_path / "clean", id=pid)
    (folder / "requirements.txt").write_text("requests>=2\nPyYAML==6.0.1\n")
    r = orch_scan.install_dir(folder)
    assert r.status_code == 201, r.text
    report = orch_scan.client.get(f"/v1/plugins/{pid}/scan").json()
    assert report["source"] == "bundle" and report["blocking"] == []
    assert report["summary"]["HIGH"] == 0
    deps = {d["requirement"]: d for d in report["dependencies"]}
    assert deps["requests>=2"]["status"] == "unchecked"  # a range is never reported clean
    assert deps["PyYAML==6.0.1"]["status"] == "clean"
    assert orch_scan.client.delete(f"/v1/plugins/{pid}").status_code == 204


def test_findings_refuse_the_install_and_leave_nothing(
    orch_scan: OrchestratorProcess, tmp_path: Path, docker_client: Any
) -> None:
    pid = "com.summit-tests.scan-risky"
    folder = make_plugin(tmp_path / "risky", id=pid)
    (folder / "helpers.py").write_text(RISKY)
    (folder / "requirements.txt").write_text("PyYAML==5.3\n")
    r = orch_scan.install_dir(folder)
    assert r.status_code == 409, r.text
    error = r.json()["error"]
    assert error["code"] == "scan_refused"
    rules = {(f["file"], f["rule"]) for f in error["details"]["blocking"]}
    assert ("helpers.py", "summit:process-exec") in rules
    assert ("requirements.txt", "osv:SUMMIT-TEST-2026-0001") in rules
    line = next(f["line"] for f in error["details"]["blocking"] if f["file"] == "helpers.py")
    assert line == 6
    assert orch_scan.client.get(f"/v1/plugins/{pid}").status_code == 404
    assert _images_of(docker_client, pid) == []

    # An operator cannot override; an admin can, and the override is kept and audited.
    op = orch_scan.client.post("/v1/tokens", json={"name": "ops", "role": "operator"}).json()
    with httpx.Client(
        base_url=orch_scan.url, headers={"Authorization": f"Bearer {op['token']}"}, timeout=120
    ) as http:
        refused = http.post(
            "/v1/plugins",
            files={"bundle": ("p.tar.gz", pack_directory(folder), "application/gzip")},
            data={"allow_findings": "true"},
        )
        assert refused.status_code == 403, refused.text
    assert orch_scan.client.get(f"/v1/plugins/{pid}").status_code == 404

    allowed = orch_scan.client.post(
        "/v1/plugins",
        files={"bundle": ("p.tar.gz", pack_directory(folder), "application/gzip")},
        data={"allow_findings": "true", "override_reason": "vendor reviewed helpers.py"},
    )
    assert allowed.status_code == 201, allowed.text
    report = orch_scan.client.get(f"/v1/plugins/{pid}/scan").json()
    assert report["override"]["by"] == "admin"
    assert report["override"]["reason"] == "vendor reviewed helpers.py"
    assert len(report["blocking"]) >= 2
    audit = orch_scan.client.get("/v1/audit").json()["records"]
    assert any(a["action"] == "install.override_findings" and pid in a["detail"] for a in audit)
    assert orch_scan.client.delete(f"/v1/plugins/{pid}").status_code == 204
    orch_scan.client.delete(f"/v1/tokens/{op['id']}")
