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


def test_cli_tokens_secrets_trust_and_signed_install(served: Served, tmp_path: Path) -> None:
    from summit_sdk import signing

    created = served.summit("token", "create", "ci bot", "--role", "viewer")
    assert created.returncode == 0, created.stderr
    viewer = created.stdout.strip()
    assert viewer.startswith("smt_") and "created tok_" in created.stderr
    listed = served.summit("token", "list", "--json")
    (row,) = [t for t in json.loads(listed.stdout) if t["name"] == "ci bot"]
    assert viewer not in listed.stdout
    as_viewer = {**served.env, "SUMMIT_ADMIN_TOKEN": viewer}
    refused = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "token", "list"],
        env=as_viewer,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 2 and "forbidden" in refused.stderr
    assert served.summit("token", "revoke", row["id"]).returncode == 0

    signing.generate_keypair(tmp_path / "keys")
    pub = tmp_path / "keys" / "summit-signing.pub"
    added = served.summit("trust", "add", "Example Ltd", "--key", str(pub))
    assert added.returncode == 0 and "trusted key" in added.stdout, added.stderr
    folder = make_plugin(tmp_path / "signed", id="com.summit-tests.cli-signed")
    sig = tmp_path / "sig.json"
    sdk_cli = [sys.executable, "-c", "from summit_sdk.cli import app; app()"]
    signed = subprocess.run(
        [
            *sdk_cli,
            "sign",
            str(folder),
            "--key",
            str(tmp_path / "keys/summit-signing.key"),
            "--out",
            str(sig),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert signed.returncode == 0, signed.stderr
    installed = served.summit("install", str(folder), "--signature", str(sig))
    assert installed.returncode == 0, installed.stderr
    secret = subprocess.run(
        [
            sys.executable,
            "-m",
            "orchestrator.cli",
            "secret",
            "set",
            "com.summit-tests.cli-signed",
            "token",
        ],
        env=served.env,
        input="hunter2\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert secret.returncode == 0, secret.stderr
    names = served.summit("secret", "list", "com.summit-tests.cli-signed")
    assert "token" in names.stdout and "hunter2" not in names.stdout
    assert served.summit("uninstall", "com.summit-tests.cli-signed", "--yes").returncode == 0
    missing = served.summit("install", str(folder), "--signature", str(tmp_path / "none.json"))
    assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1
