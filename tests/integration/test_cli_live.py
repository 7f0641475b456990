"""The ``summit`` command end to end: ``summit serve`` with real Docker, driven by the CLI."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.fixtures.orchestrator import free_port
from tests.fixtures.plugins import make_plugin

pytestmark = [pytest.mark.docker, pytest.mark.slow]

WC = "com.summit-tests.wc-cli"
TOKEN = f"cli-{secrets.token_hex(8)}"


class Served:
    def __init__(self, url: str, env: dict[str, str]) -> None:
        self.url = url
        self.env = env

    def summit(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "orchestrator.cli", *args],
            env=self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )


@pytest.fixture(scope="module")
def served(base_image, docker_client, tmp_path_factory) -> Iterator[Served]:  # type: ignore[no-untyped-def]
    tmp = tmp_path_factory.mktemp("cli")
    instance = f"summit-test-{secrets.token_hex(4)}"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUMMIT_")}
    env.update(
        SUMMIT_DATABASE_URL=f"sqlite:///{tmp / 'summit.db'}",
        SUMMIT_STATE_DIR=str(tmp / "state"),
        SUMMIT_INSTANCE=instance,
        SUMMIT_ADMIN_TOKEN=TOKEN,
        SUMMIT_STARTUP_TIMEOUT_S="20",
        SUMMIT_SHUTDOWN_GRACE_S="3",
        SUMMIT_URL=url,
    )
    log_path = tmp / "serve.log"
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "orchestrator.cli", "serve", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"summit serve exited:\n{log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"summit serve not ready:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.1)
        yield Served(url, env)
    finally:
        try:
            s = Served(url, env)
            s.summit("disable", WC, "--cascade", timeout=60)
            s.summit("uninstall", WC, "--yes", timeout=60)
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)
            owned = docker_client.containers.list(
                all=True, filters={"label": f"io.summit.owner={instance}"}
            )
            for c in owned:
                c.remove(force=True)


def test_cli_lifecycle(served: Served, tmp_path: Path) -> None:
    wc_dir = make_plugin(tmp_path / "wc", "word-count", id=WC)

    r = served.summit("install", str(wc_dir), "--approve-all", "--config", '{"top": 1}', "--enable")
    assert r.returncode == 0, r.stderr
    assert "Enabled" in r.stdout and "ACTIVE" in r.stdout

    r = served.summit("list", "--json")
    assert r.returncode == 0, r.stderr
    [plugin] = [p for p in json.loads(r.stdout) if p["id"] == WC]
    assert plugin["state"] == "ACTIVE"
    assert plugin["config"] == {"top": 1}

    r = served.summit("list")
    assert r.returncode == 0, r.stderr
    assert WC in r.stdout and plugin["container"]["id"][:12] in r.stdout

    r = served.summit(
        "execute", "analyzer", "--input", '{"text": "to be or not to be"}', "--plugin", WC
    )
    assert r.returncode == 0, r.stderr
    [result] = json.loads(r.stdout)["results"]
    assert result["output"]["words"] == 6

    # Installing again is refused by the API: one line, exit 2, no traceback.
    r = served.summit("install", str(wc_dir))
    assert r.returncode == 2
    assert r.stderr.startswith("error: already_installed: ")
    assert r.stderr.count("\n") == 1

    r = served.summit("logs", WC, "--tail", "20")
    assert r.returncode == 0, r.stderr

    r = served.summit("uninstall", WC)  # stdin is not a terminal and no --yes
    assert r.returncode == 2
    assert "--yes" in r.stderr

    r = served.summit("disable", WC)
    assert r.returncode == 0, r.stderr
    assert "LOADED" in r.stdout

    r = served.summit("uninstall", WC, "--yes")
    assert r.returncode == 0, r.stderr

    r = served.summit("show", WC)
    assert r.returncode == 2
    assert r.stderr.startswith("error: plugin_not_found: ")


def test_cli_wrong_token_is_refused(served: Served) -> None:
    r = served.summit("list", "--token", "wrong")
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("error: ")
