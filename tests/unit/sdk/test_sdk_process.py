"""`python -m summit_sdk.runtime` as a real process, as the plugin image runs it."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest

PLUGIN_SOURCE = textwrap.dedent(
    """
    import time

    from summit_sdk import create_plugin

    NAME = "not a plugin"


    def slow(input, ctx):
        time.sleep(input)
        return "done"


    plugin = (
        create_plugin()
        .with_metadata(id="com.example.proc", version="0.0.1")
        .extension("analyzer", "upper", lambda input, ctx: input.upper())
        .extension("analyzer", "slow", slow)
        .build()
    )
    """
)


def start(tmp_path: Path, **env: str) -> subprocess.Popen[bytes]:
    (tmp_path / "proc_plugin.py").write_text(PLUGIN_SOURCE)
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SUMMIT_PLUGIN_")}
    full_env.update(env)
    return subprocess.Popen(
        [sys.executable, "-m", "summit_sdk.runtime"],
        cwd=tmp_path,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def wait_healthy(client: httpx.Client, proc: subprocess.Popen[bytes]) -> httpx.Response:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        try:
            return client.get("/summit/v1/health")
        except httpx.TransportError:
            time.sleep(0.05)
    raise AssertionError("plugin did not become healthy")


@pytest.fixture
def sock(tmp_path: Path) -> Path:
    path = tmp_path / "plugin.sock"
    path.write_text("stale")  # a leftover file must not stop the runtime from binding
    return path


def test_serves_on_unix_socket_and_exits_0_after_shutdown(tmp_path: Path, sock: Path) -> None:
    proc = start(
        tmp_path,
        SUMMIT_PLUGIN_ENTRYPOINT="proc_plugin:plugin",
        SUMMIT_PLUGIN_LISTEN=f"unix://{sock}",
    )
    try:
        transport = httpx.HTTPTransport(uds=str(sock))
        with httpx.Client(transport=transport, base_url="http://plugin", timeout=5) as client:
            health = wait_healthy(client, proc)
            assert health.json()["plugin"] == {"id": "com.example.proc", "version": "0.0.1"}
            assert sock.stat().st_mode & 0o777 == 0o666
            call = client.post(
                "/summit/v1/extensions/analyzer/upper",
                json={"input": "abc", "context": {"request_id": "r"}},
            )
            assert call.json() == {"output": "ABC"}
            assert client.post("/summit/v1/shutdown").json() == {"status": "ok"}
        assert proc.wait(timeout=5) == 0
        assert not sock.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_sigterm_stops_gracefully_with_status_0(tmp_path: Path, sock: Path) -> None:
    proc = start(
        tmp_path,
        SUMMIT_PLUGIN_ENTRYPOINT="proc_plugin:plugin",
        SUMMIT_PLUGIN_LISTEN=f"unix://{sock}",
    )
    try:
        transport = httpx.HTTPTransport(uds=str(sock))
        with httpx.Client(transport=transport, base_url="http://plugin", timeout=5) as client:
            wait_healthy(client, proc)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_sigterm_finishes_the_call_in_flight_before_exiting(tmp_path: Path, sock: Path) -> None:
    import threading

    proc = start(
        tmp_path,
        SUMMIT_PLUGIN_ENTRYPOINT="proc_plugin:plugin",
        SUMMIT_PLUGIN_LISTEN=f"unix://{sock}",
    )
    answers: list[httpx.Response] = []
    try:
        transport = httpx.HTTPTransport(uds=str(sock))
        with httpx.Client(transport=transport, base_url="http://plugin", timeout=10) as client:
            wait_healthy(client, proc)
            call = threading.Thread(
                target=lambda: answers.append(
                    client.post(
                        "/summit/v1/extensions/analyzer/slow",
                        json={"input": 1.0, "context": {"request_id": "r"}},
                    )
                )
            )
            call.start()
            time.sleep(0.3)  # the call is in the handler now
            proc.send_signal(signal.SIGTERM)
            call.join(10)
        assert [(a.status_code, a.json()) for a in answers] == [(200, {"output": "done"})]
        assert proc.wait(timeout=5) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize(
    ("entrypoint", "message"),
    [
        (None, "SUMMIT_PLUGIN_ENTRYPOINT is not set"),
        ("proc_plugin", "must be module:object"),
        ("no_such_module:plugin", "cannot import 'no_such_module'"),
        ("proc_plugin:nothing", "has no attribute 'nothing'"),
        ("proc_plugin:NAME", "is a str, not a summit_sdk Plugin"),
    ],
)
def test_bad_entrypoint_exits_2_with_one_line(
    tmp_path: Path, entrypoint: str | None, message: str
) -> None:
    env = {"SUMMIT_PLUGIN_LISTEN": f"unix://{tmp_path}/p.sock"}
    if entrypoint is not None:
        env["SUMMIT_PLUGIN_ENTRYPOINT"] = entrypoint
    proc = start(tmp_path, **env)
    _, stderr = proc.communicate(timeout=15)
    assert proc.returncode == 2
    lines = stderr.decode().strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines
