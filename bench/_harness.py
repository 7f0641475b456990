"""Shared pieces of the benchmarks in ``bench/``: an orchestrator subprocess and small helpers.

Nothing here measures anything. A benchmark script imports it as ``_harness`` (``bench/`` is
on ``sys.path`` when a script in it is run as ``.venv/bin/python bench/<name>.py``); importing it
also puts the repository root on ``sys.path`` so that ``orchestrator`` can be imported.
"""

from __future__ import annotations

import contextlib
import os
import platform
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import docker
import docker.errors
import httpx

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

WORD_COUNT_DIR = REPO / "examples" / "word-count"
WORD_COUNT_ID = "com.example.word-count"

CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def nproc() -> int:
    """What ``nproc`` prints: the CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank-with-interpolation percentile (q in 0..100) of a non-empty list."""
    data = sorted(values)
    if len(data) == 1:
        return data[0]
    pos = (len(data) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def machine_line(dk: docker.DockerClient) -> str:
    """Docker, CPU count, kernel and Python: the numbers mean little without them."""
    server = dk.version()
    return (
        f"docker server {server.get('Version')} (API {server.get('ApiVersion')}), "
        f"nproc {nproc()}, kernel {platform.release()}, python {platform.python_version()}"
    )


def wakeup_round_trip_us(rounds: int = 5000) -> float:
    """Median round trip of one byte between two processes over pipes, in microseconds.

    Every brokered call wakes three processes in turn, so this is the machine's speed for what
    the broker benchmark measures; on a shared virtual machine it drifts within minutes (seen
    here: 20 to 80 us), and figures of runs far apart are only comparable next to it.
    """
    to_child, from_parent = os.pipe()
    from_child, to_parent = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child only echoes
        try:
            for _ in range(rounds):
                os.read(to_child, 1)
                os.write(to_parent, b"x")
        finally:
            os._exit(0)
    times: list[float] = []
    try:
        for _ in range(rounds):
            t0 = time.perf_counter()
            os.write(from_parent, b"x")
            os.read(from_child, 1)
            times.append(time.perf_counter() - t0)
    finally:
        os.waitpid(pid, 0)
        for fd in (to_child, from_parent, from_child, to_parent):
            os.close(fd)
    return percentile(times, 50) * 1e6


def process_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds used so far by process ``pid`` (all its threads), Linux only."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read().decode()
    except OSError:
        return None
    # Field 2 (comm) may contain spaces; the fields after it start past the last ')'.
    fields = raw[raw.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def sigterm_as_interrupt() -> None:
    """SIGTERM -> KeyboardInterrupt, so it takes the same clean-up path as Ctrl-C."""

    def _on_term(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, _on_term)


class Orchestrator:
    """Our own orchestrator subprocess, in its own session so Ctrl-C does not reach it.

    It gets a throw-away SQLite database and state folder under ``root``, its own owner label
    (``instance``) and admin ``token``; ``extra_env`` adds or overrides ``SUMMIT_*`` settings.
    The caller's own ``SUMMIT_*`` variables are not passed on.
    """

    def __init__(
        self, root: Path, instance: str, token: str, extra_env: Mapping[str, str] | None = None
    ) -> None:
        self.root = root
        self.instance = instance
        self.token = token
        self.extra_env = dict(extra_env or {})
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = root / "orchestrator.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.client = httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {token}"}, timeout=300
        )

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SUMMIT_")}
        env.update(
            SUMMIT_DATABASE_URL=f"sqlite:///{self.root / 'summit.db'}",
            SUMMIT_STATE_DIR=str(self.root / "state"),
            SUMMIT_INSTANCE=self.instance,
            SUMMIT_ADMIN_TOKEN=self.token,
            SUMMIT_SHUTDOWN_GRACE_S="3",
        )
        env.update(self.extra_env)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "orchestrator.app:create_app",
                    "--factory",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--log-level",
                    "warning",
                ],
                cwd=REPO,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def log_tail(self, n: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def wait_ready(self, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"orchestrator exited early:\n{self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            time.sleep(0.1)
        raise TimeoutError(f"orchestrator not ready after {timeout_s:g}s:\n{self.log_tail()}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.client.close()

    def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        r = self.client.request(method, path, **kwargs)
        if r.status_code >= 400:
            raise RuntimeError(f"{method} {path} -> {r.status_code}: {r.text[:2000]}")
        return r

    def uninstall(self, plugin_id: str, settle_s: float = 30) -> bool:
        """Disable (if needed) and uninstall ``plugin_id``; True once it is gone."""
        url = f"/v1/plugins/{plugin_id}"
        deadline = time.monotonic() + settle_s
        while time.monotonic() < deadline:
            try:
                r = self.client.get(url)
                if r.status_code == 404:
                    return True
                state = r.json().get("state")
                if state in ("INITIALIZING", "UNLOADING"):
                    # An enable/disable we abandoned is still running on the server.
                    time.sleep(0.2)
                    continue
                if state in ("ACTIVE", "FAILED"):
                    self.client.post(f"{url}/disable")
                    continue
                r = self.client.delete(url)
                if r.status_code < 400 or r.status_code == 404:
                    return True
                print(
                    f"warning: uninstall {plugin_id} answered {r.status_code}: {r.text[:300]}",
                    file=sys.stderr,
                )
            except httpx.HTTPError as exc:
                print(f"warning: uninstall {plugin_id} failed: {exc}", file=sys.stderr)
            time.sleep(0.5)
        return False


def unlimited_orchestrator() -> tuple[str, str, Path, Orchestrator]:
    """A throw-away orchestrator for a load benchmark, not yet started: no rate limit, room
    for 256 calls in flight per plugin, no idle pause. (tag, owner label, root folder,
    orchestrator); the root is short, since unix socket paths are limited to ~100 bytes."""
    tag = secrets.token_hex(3)
    root = Path(tempfile.mkdtemp(prefix="sb-", dir="/tmp"))
    orch = Orchestrator(
        root,
        f"summit-bench-{tag}",
        token=secrets.token_urlsafe(24),
        extra_env={
            "SUMMIT_RATE_LIMIT_REQUESTS": "0",
            "SUMMIT_PLUGIN_CONCURRENCY": "256",
            # No plugin freezes behind a benchmark's back (bench/pause.py pauses on purpose).
            "SUMMIT_IDLE_PAUSE_S": "0",
        },
    )
    return tag, orch.instance, root, orch


def remove_owned_containers(dk: docker.DockerClient, instance: str) -> int:
    """Force-remove every container carrying the orchestrator's owner label ``instance``."""
    n = 0
    for c in dk.containers.list(all=True, filters={"label": f"io.summit.owner={instance}"}):
        with contextlib.suppress(docker.errors.DockerException):
            c.remove(force=True, v=True)
            n += 1
    return n


def copy_word_count(dest: Path, plugin_id: str, edits: Sequence[tuple[str, str, str]] = ()) -> Path:
    """``examples/word-count`` under ``plugin_id`` (manifest id and the id its health reports),
    with ``edits`` (file name, text found exactly once, its replacement) applied after."""
    shutil.copytree(
        WORD_COUNT_DIR,
        dest,
        ignore=shutil.ignore_patterns("tests", "__pycache__", ".*", "*.pyc"),
    )
    for name, old, new in [
        ("plugin.yaml", f"id: {WORD_COUNT_ID}\n", f"id: {plugin_id}\n"),
        ("word_count.py", f'"{WORD_COUNT_ID}"', f'"{plugin_id}"'),
        *edits,
    ]:
        path = dest / name
        text = path.read_text()
        if text.count(old) != 1:
            raise RuntimeError(f"expected {old.strip()!r} exactly once in {path}")
        path.write_text(text.replace(old, new))
    return dest


def clean_up_run(
    dk: docker.DockerClient,
    orch: Orchestrator,
    installed: list[str],
    root: Path,
    instance: str,
) -> None:
    """Remove all a benchmark created: uninstall ``installed`` through the API (which drops
    their images), stop the orchestrator, remove any container still carrying its owner label
    (and the images of plugins the API could not uninstall) and delete ``root``. Every step
    runs even if an earlier one fails or is interrupted."""
    # Ignore further Ctrl-C while cleaning up, so a second press cannot leave debris.
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        left: list[str] = []
        if orch.alive():
            for plugin_id in installed:
                if not orch.uninstall(plugin_id):
                    left.append(plugin_id)
        else:
            left = list(installed)
        with contextlib.suppress(Exception):
            orch.stop()
        with contextlib.suppress(Exception):
            remove_owned_containers(dk, instance)
        if left:
            # The API could not uninstall them: drop the images built for them (unless in use).
            with contextlib.suppress(Exception):
                for image in dk.images.list():
                    for ref in image.tags:
                        if any(ref.startswith(f"summit-plugin/{p}:") for p in left):
                            with contextlib.suppress(docker.errors.DockerException):
                                dk.images.remove(ref, force=False)
                                print(f"removed image {ref} directly", file=sys.stderr)
        shutil.rmtree(root, ignore_errors=True)
    finally:
        signal.signal(signal.SIGINT, old)
