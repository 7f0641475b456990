"""`summit serve` stops on SIGTERM within the shutdown grace, whatever ran before, and
`make down` makes sure of it."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.fixtures.orchestrator import TOKEN, OrchestratorProcess
from tests.fixtures.plugins import make_plugin

pytestmark = [pytest.mark.docker, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
PLUGIN = "com.summit-tests.shutdown-probe"
GRACE_S = 3.0  # the fixture's SUMMIT_SHUTDOWN_GRACE_S
BOUND_S = GRACE_S + 5


class Served(OrchestratorProcess):
    """The orchestrator as an operator runs it: the `summit serve` command."""

    def start(self, *, wait_ready: bool = True) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        summit = Path(sys.executable).with_name("summit")
        self.proc = subprocess.Popen(
            [str(summit), "serve", "--host", "127.0.0.1", "--port", str(self.port)],
            env=self.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        if wait_ready:
            self.wait_ready()

    def terminate_within(self, bound_s: float) -> float:
        assert self.proc is not None
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(bound_s)
        except subprocess.TimeoutExpired:
            self.kill()
            tail = self.log_path.read_text()[-2000:]
            raise AssertionError(f"still running {bound_s} s after SIGTERM:\n{tail}") from None
        return time.monotonic() - started


@pytest.fixture(scope="module")
def served(base_image, docker_client, tmp_path_factory) -> Iterator[Served]:  # type: ignore[no-untyped-def]
    tmp = tmp_path_factory.mktemp("shutdown")
    orch = Served(
        database_url=f"sqlite:///{tmp / 'summit.db'}",
        state_dir=tmp / "state",
        instance=f"summit-test-shutdown-{os.getpid()}",
        env={
            "SUMMIT_SCAN_FAIL_ON": "never",
            "SUMMIT_RATE_LIMIT_REQUESTS": "0",
            # A receiver that refuses: deliveries are being retried when SIGTERM comes.
            "SUMMIT_WEBHOOK_ALLOW_PRIVATE": "127.0.0.0/8",
        },
    )
    orch.start()
    r = orch.install_dir(make_plugin(tmp / "probe", id=PLUGIN))
    assert r.status_code == 201, r.text
    try:
        yield orch
    finally:
        # SIGTERM leaves plugin containers running for the next start to adopt: start again,
        # then uninstall through the API so the image goes too.
        if orch.proc is None or orch.proc.poll() is not None:
            orch.start()
        orch.cleanup(docker_client)


def _cycle(orch: Served) -> None:
    """A little of everything the orchestrator runs in the background."""
    c = orch.client
    assert c.post(f"/v1/plugins/{PLUGIN}/enable").status_code == 200
    for mode in ("all", "first", "pipeline"):
        r = c.post(
            "/v1/extension-points/analyzer/execute",
            json={"input": {"n": 1}, "mode": mode, "plugins": [PLUGIN]},
        )
        assert r.status_code == 200, r.text
    r = c.post(
        "/v1/extension-points/analyzer/execute",
        json={"input": {"n": 2}, "plugins": [PLUGIN], "async": True},
    )
    assert r.status_code == 202, r.text
    job = r.json()["job_id"]
    deadline = time.monotonic() + 30
    while c.get(f"/v1/jobs/{job}").json()["status"] not in ("succeeded", "failed"):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert c.post(f"/v1/plugins/{PLUGIN}/reload").status_code == 200
    r = c.post("/v1/webhooks", json={"url": "http://127.0.0.1:9/hook", "types": ["*"]})
    assert r.status_code == 201, r.text
    assert c.post(f"/v1/plugins/{PLUGIN}/disable").status_code == 200


def test_sigterm_after_a_lifecycle_cycle(served: Served) -> None:
    _cycle(served)
    took = served.terminate_within(BOUND_S)
    # uvicorn re-raises the signal once it has shut down cleanly, so -SIGTERM is a clean stop.
    assert served.proc is not None and served.proc.returncode in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in served.log_path.read_text()
    print(f"stopped {took:.2f} s after SIGTERM")
    served.start()


def test_sigterm_with_an_event_stream_client(served: Served) -> None:
    _cycle(served)
    lines: list[str] = []
    connected = threading.Event()

    def follow() -> None:
        with (
            httpx.Client(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60) as client,
            client.stream("GET", f"{served.url}/v1/events/stream") as r,
        ):
            connected.set()
            try:
                for line in r.iter_lines():
                    lines.append(line)
            except httpx.HTTPError:
                pass

    reader = threading.Thread(target=follow, daemon=True)
    reader.start()
    assert connected.wait(10)
    assert served.client.post(f"/v1/plugins/{PLUGIN}/enable").status_code == 200
    took = served.terminate_within(BOUND_S)
    print(f"stopped {took:.2f} s after SIGTERM with a stream open")
    reader.join(5)
    assert not reader.is_alive(), "the stream did not end with the server"
    assert any(line.startswith("event: plugin.") for line in lines), lines
    served.start()


def test_make_down_kills_an_orchestrator_that_ignores_sigterm(tmp_path: Path) -> None:
    """down.sh waits for the process, then escalates to SIGKILL and says so."""
    (tmp_path / "scripts").mkdir()
    shutil.copy(REPO / "scripts" / "down.sh", tmp_path / "scripts" / "down.sh")
    (tmp_path / ".summit").mkdir()
    stubborn = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)",
        ]
    )
    try:
        (tmp_path / ".summit" / "orchestrator.pid").write_text(str(stubborn.pid))
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("SUMMIT_")},
            "SUMMIT_SHUTDOWN_GRACE_S": "0",
            "SUMMIT_URL": "http://127.0.0.1:9",  # nothing answers: skip the disable step
        }
        time.sleep(0.5)  # the stub installs its SIGTERM handler
        done = subprocess.run(
            ["bash", str(tmp_path / "scripts" / "down.sh")],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        assert "did not exit" in done.stderr and "SIGKILL" in done.stderr
        assert stubborn.wait(5) == -signal.SIGKILL
        assert "[down] stopped" in done.stdout
        assert not (tmp_path / ".summit" / "orchestrator.pid").exists()
    finally:
        if stubborn.poll() is None:
            stubborn.kill()
