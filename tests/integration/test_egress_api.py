"""The egress proxy behind the host API, from a real plugin container to an upstream server
on the host: only ``network.allowed_hosts``, only permitted addresses, bytes counted."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fixtures.orchestrator import OrchestratorProcess
from tests.fixtures.plugins import make_plugin
from tests.integration.conftest import sqlite_orchestrator
from tests.integration.test_host_api import spy

pytestmark = [pytest.mark.docker]

PID = "com.summit.tests.hostspy.egress"


class _Upstream(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps({"path": self.path, "host": self.headers.get("host")}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def upstream() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def orch_egress(
    base_image: str, docker_client: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OrchestratorProcess]:
    # Loopback is refused by default; this operator allows it so the test upstream is reachable.
    with sqlite_orchestrator(
        tmp_path_factory, docker_client, "orch-egress", allow_private_targets='["127.0.0.0/8"]'
    ) as o:
        yield o


def test_plugins_reach_allowed_hosts_only_through_the_proxy(
    orch_egress: OrchestratorProcess, upstream: int, tmp_path: Path
) -> None:
    folder = make_plugin(
        tmp_path / "p",
        "hostspy",
        id=PID,
        permissions=["network:access"],
        events={},
        network={"allowed_hosts": ["localhost", "10.9.8.7"]},
    )
    manifest = yaml.safe_load((folder / "plugin.yaml").read_text())
    assert orch_egress.install_dir(folder, approve=manifest["permissions"]).status_code == 201
    assert orch_egress.client.post(f"/v1/plugins/{PID}/enable").status_code == 200
    try:
        ok = spy(orch_egress, PID, "http.get", f"http://localhost:{upstream}/rows?x=1")
        assert ok["ok"], ok
        assert ok["result"]["status"] == 200
        echoed = json.loads(ok["result"]["text"])
        assert echoed == {"path": "/rows?x=1", "host": f"localhost:{upstream}"}

        not_listed = spy(orch_egress, PID, "http.get", f"http://127.0.0.1:{upstream}/")
        assert (not_listed["status"], not_listed["code"]) == (403, "host_not_allowed")
        private = spy(orch_egress, PID, "http.get", "http://10.9.8.7/")
        assert (private["status"], private["code"]) == (403, "address_not_allowed")
        metadata = spy(orch_egress, PID, "http.get", "http://169.254.169.254/latest/meta-data")
        assert metadata["code"] == "host_not_allowed"

        usage = orch_egress.client.get(f"/v1/plugins/{PID}/usage").json()["network"]
        assert usage["requests"] == 4 and usage["refused"] == 3
        assert usage["bytes_in"] > 0 and usage["bytes_out"] > 0
        audit = orch_egress.client.get("/v1/audit", params={"plugin": PID}).json()["records"]
        assert {a["outcome"] for a in audit} == {"host_not_allowed", "address_not_allowed"}
    finally:
        orch_egress.client.post(f"/v1/plugins/{PID}/disable")
        orch_egress.client.delete(f"/v1/plugins/{PID}")
