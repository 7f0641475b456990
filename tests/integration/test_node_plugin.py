"""A plugin in another language (plain Node.js, no SDK) runs like any other."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.orchestrator import OrchestratorProcess

pytestmark = [pytest.mark.docker, pytest.mark.slow]

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "node-echo"
PID = "com.example.node-echo"


def test_node_plugin_through_the_orchestrator(
    orch: OrchestratorProcess,
    docker_client,  # type: ignore[no-untyped-def]
) -> None:
    tag = f"summit-tests/node-echo:{secrets.token_hex(4)}"
    subprocess.run(["bash", str(EXAMPLE / "build.sh"), tag], check=True, capture_output=True)
    try:
        # The conformance suite passes on a plugin written without the SDK.
        verified = subprocess.run(
            [
                sys.executable,
                "-c",
                "from summit_sdk.cli import app; app()",
                "verify",
                tag,
                "--json",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert verified.returncode == 0, verified.stdout + verified.stderr
        report = json.loads(verified.stdout)
        assert report["passed"] and "extension analyzer/echo" in [
            c["name"] for c in report["checks"]
        ]
        r = orch.client.post("/v1/plugins", json={"image": tag})
        assert r.status_code == 201, r.text
        enabled = orch.client.post(f"/v1/plugins/{PID}/enable")
        assert enabled.status_code == 200, enabled.text
        container = docker_client.containers.get(enabled.json()["container"]["id"])
        assert container.attrs["HostConfig"]["NetworkMode"] == "none"
        assert container.attrs["Config"]["User"] == "10001:10001"
        r = orch.client.post(
            "/v1/extension-points/analyzer/execute",
            json={"input": {"hello": "node"}, "plugins": [PID]},
        )
        assert r.status_code == 200, r.text
        output = r.json()["results"][0]["output"]
        assert output["echo"] == {"hello": "node"}
        assert output["runtime"].startswith("node v")
        assert orch.client.post(f"/v1/plugins/{PID}/disable").json()["state"] == "LOADED"
        assert orch.client.delete(f"/v1/plugins/{PID}").status_code == 204
    finally:
        for image in docker_client.images.list(name=tag.split(":")[0]):
            if tag in image.tags:
                docker_client.images.remove(tag, force=True)
