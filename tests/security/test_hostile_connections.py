"""Hostile connections: a plugin (or anyone who reaches the admin port) tries to take the
orchestrator down with idle connections, endless or slow request heads, and file descriptors
or inodes, and every other caller must not notice.

The orchestrator here is ``summit serve``, the command an operator runs, started with a soft
open-files limit of 1024 so that a flood of connections would exhaust it if nothing stopped
them. While each attack runs, a thread keeps asking ``/healthz`` (1 s timeout) and every ask
must be answered.
"""

from __future__ import annotations

import resource
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fixtures.orchestrator import OrchestratorProcess
from tests.fixtures.waiting import wait_until

from .conftest import EscapePlugin, escape_plugin

pytestmark = [pytest.mark.docker, pytest.mark.slow]

KIB = 1024
HEAD_CAP = 64 * KIB  # SUMMIT_HTTP_MAX_HEAD_BYTES default
HOST_CAP = 64  # SUMMIT_HOST_MAX_CONNECTIONS default
PLUGIN_NOFILE = 1024  # SUMMIT_NOFILE_LIMIT default
TMPFS_INODES = 4096  # SUMMIT_TMPFS_INODES default
HEAD_TIMEOUT_S = 5.0  # SUMMIT_HTTP_HEAD_TIMEOUT_S default
ORCH_SOFT_NOFILE = 1024


def _low_soft_nofile() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(ORCH_SOFT_NOFILE, hard), hard))


class ServedOrchestrator(OrchestratorProcess):
    """``summit serve`` in a subprocess, born with a soft open-files limit of 1024."""

    def start(self, *, wait_ready: bool = True) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "orchestrator.cli", "serve", "--port", str(self.port)],
                env=self.env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_low_soft_nofile,
            )
        if wait_ready:
            self.wait_ready()

    def open_files(self) -> int:
        assert self.proc is not None
        return len(list(Path(f"/proc/{self.proc.pid}/fd").iterdir()))

    def nofile_limits(self) -> tuple[int, int]:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/limits").read_text().splitlines():
            if line.startswith("Max open files"):
                soft, hard = line.split()[3:5]
                return int(soft), int(hard)
        raise AssertionError("no open-files line in /proc/<pid>/limits")


@pytest.fixture(scope="module")
def served(
    base_image: str, docker_client: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServedOrchestrator]:
    tmp = tmp_path_factory.mktemp("hostile")
    settings = {
        "health_interval_s": "1",
        "restart_backoff_s": "0.2",
        "rate_limit_requests": "0",
        "scan_fail_on": "never",
    }
    orch = ServedOrchestrator(
        database_url=f"sqlite:///{tmp / 'summit.db'}",
        state_dir=tmp / "state",
        instance=f"summit-test-{secrets.token_hex(4)}",
        env={f"SUMMIT_{k.upper()}": v for k, v in settings.items()},
    )
    orch.start()
    try:
        yield orch
    finally:
        orch.cleanup(docker_client)


@pytest.fixture(scope="module")
def hostile(
    served: ServedOrchestrator, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EscapePlugin]:
    with escape_plugin(
        served, tmp_path_factory.mktemp("hostile-plugin"), "com.summit-tests.hostile"
    ) as plugin:
        yield plugin


@pytest.fixture(scope="module")
def bystander(
    served: ServedOrchestrator, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EscapePlugin]:
    with escape_plugin(
        served, tmp_path_factory.mktemp("bystander"), "com.summit-tests.bystander"
    ) as plugin:
        yield plugin


class HealthWatch:
    """Asks ``/healthz`` (1 s timeout) every 0.1 s from a thread while open; also samples the
    orchestrator's open files."""

    def __init__(self, orch: ServedOrchestrator) -> None:
        self.orch = orch
        self.answers: list[tuple[int | str, float]] = []
        self.most_open_files = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _ask(self, client: httpx.Client) -> None:
        started = time.monotonic()
        try:
            outcome: int | str = client.get("/healthz").status_code
        except httpx.HTTPError as exc:
            outcome = type(exc).__name__
        self.answers.append((outcome, round(time.monotonic() - started, 3)))
        self.most_open_files = max(self.most_open_files, self.orch.open_files())

    def _watch(self) -> None:
        with httpx.Client(base_url=self.orch.url, timeout=1.0) as client:
            while not self._stop.is_set():
                self._ask(client)
                self._stop.wait(0.1)

    def __enter__(self) -> HealthWatch:
        self._thread.start()
        wait_until(lambda: self.answers, 5, "a first /healthz answer")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        with httpx.Client(base_url=self.orch.url, timeout=1.0) as client:
            self._ask(client)  # and once more after the attack

    def assert_always_answered(self, at_least: int = 5) -> None:
        assert len(self.answers) >= at_least, self.answers
        failed = [answer for answer in self.answers if answer[0] != 200]
        assert failed == [], failed


# -- item 2: idle connections, file descriptors ---------------------------------------------


def test_orchestrator_raised_its_own_open_files_limit(served: ServedOrchestrator) -> None:
    soft, hard = served.nofile_limits()
    assert soft == hard, (soft, hard)
    assert soft > PLUGIN_NOFILE


def test_plugin_containers_have_a_lower_open_files_limit(
    hostile: EscapePlugin, docker_client: Any
) -> None:
    ulimits = hostile.container(docker_client).attrs["HostConfig"]["Ulimits"]
    assert ulimits == [{"Name": "nofile", "Soft": PLUGIN_NOFILE, "Hard": PLUGIN_NOFILE}]


def test_idle_host_connections_are_capped_and_reaped(
    served: ServedOrchestrator, hostile: EscapePlugin, bystander: EscapePlugin
) -> None:
    before = served.open_files()
    with HealthWatch(served) as health:
        report = hostile.attack(
            "hold_host_connections", count=1500, settle_s=1.0, hold_s=HEAD_TIMEOUT_S + 3
        )
        # Another plugin's host API and calls into it are untouched meanwhile.
        own = bystander.attack("host_token")["evidence"]["statuses"]["own"]
    seen = report["evidence"]
    print(report["detail"], seen, f"orchestrator files: {before} -> {health.most_open_files}")
    assert not report["escaped"], report["detail"]
    # The container's own file limit stops the flood before 1500 ...
    assert seen["refusal"] == "EMFILE", seen
    assert seen["opened"] < PLUGIN_NOFILE
    # ... the host keeps HOST_CAP of them, closes the rest at once, and the kept ones work.
    assert seen["held"] == HOST_CAP, seen
    assert seen["closed_at_once"] == seen["opened"] - HOST_CAP
    assert seen["request_on_held"] in (200, 404), seen
    # Silent connections do not outlive the head deadline, nor idle ones the keep-alive.
    assert seen["still_open"] == 0, seen
    assert own in (200, 404)
    health.assert_always_answered()
    assert health.most_open_files <= before + HOST_CAP + 100, (before, health.most_open_files)


# -- item 5: request heads on the host socket -----------------------------------------------


def test_endless_host_header_is_refused_with_431(
    served: ServedOrchestrator, hostile: EscapePlugin
) -> None:
    with HealthWatch(served) as health:
        report = hostile.attack("huge_host_header", mib=1)
    seen = report["evidence"]
    assert not report["escaped"], seen
    assert seen["status"] == 431, seen
    assert seen["closed"], seen
    health.assert_always_answered(at_least=1)


def test_slow_host_header_is_cut_off_with_408(
    served: ServedOrchestrator, hostile: EscapePlugin
) -> None:
    with HealthWatch(served) as health:
        report = hostile.attack("slow_host_header", every_s=0.5, max_s=20)
    seen = report["evidence"]
    assert not report["escaped"], seen
    assert seen["status"] == 408, seen
    assert seen["closed"], seen
    assert seen["took_s"] < HEAD_TIMEOUT_S + 2, seen
    health.assert_always_answered()


# -- item 6: request heads on the admin port ------------------------------------------------


def _stream_head(url: str, total: int, every_s: float = 0.0) -> dict[str, Any]:
    """Send one request head of ``total`` bytes to the admin port (``every_s`` between 16 KiB
    pieces) and read what comes back; no token is needed to do this."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    sent = 0

    def send() -> None:
        nonlocal sent
        try:
            sock.sendall(b"GET /v1/plugins HTTP/1.1\r\nHost: summit\r\nX-Pad: ")
            while sent < total:
                sock.sendall(b"a" * (16 * KIB))
                sent += 16 * KIB
                if every_s:
                    time.sleep(every_s)
        except OSError:
            pass

    started = time.monotonic()
    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    answer, closed = b"", False
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                closed = True
                break
            answer += chunk
    except ConnectionResetError:
        closed = True
    except TimeoutError:
        pass
    took = time.monotonic() - started
    sock.close()
    sender.join(5)
    status_line = answer.split(b"\r\n", 1)[0]
    status = int(status_line.split()[1]) if status_line.startswith(b"HTTP/") else None
    return {"status": status, "closed": closed, "sent": sent, "took_s": took}


def test_endless_admin_header_is_refused_with_431(served: ServedOrchestrator) -> None:
    with HealthWatch(served) as health:
        seen = _stream_head(served.url, 32 * 1024 * KIB)
    assert seen["status"] == 431, seen
    assert seen["closed"], seen
    assert seen["sent"] < 32 * 1024 * KIB, seen
    health.assert_always_answered(at_least=1)


def test_slow_admin_header_is_cut_off_with_408(served: ServedOrchestrator) -> None:
    with HealthWatch(served) as health:
        seen = _stream_head(served.url, 40 * KIB, every_s=0.5)
    assert seen["status"] == 408, seen
    assert seen["closed"], seen
    assert seen["took_s"] < HEAD_TIMEOUT_S + 2, seen
    health.assert_always_answered()


# -- tightening: inodes of the plugin's tmpfs mounts ----------------------------------------


def test_tmpfs_mounts_cap_their_inodes(hostile: EscapePlugin, docker_client: Any) -> None:
    tmpfs = hostile.container(docker_client).attrs["HostConfig"]["Tmpfs"]
    assert f"nr_inodes={TMPFS_INODES}" in tmpfs["/tmp"].split(","), tmpfs
    report = hostile.attack("many_files", count=10_000, folders=["/tmp", "/run/summit"])
    seen = report["evidence"]
    assert not report["escaped"], report["detail"]
    for folder in ("/tmp", "/run/summit"):
        assert seen[folder]["refusal"] == "ENOSPC", seen
        assert seen[folder]["created"] < TMPFS_INODES, seen
