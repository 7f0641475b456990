"""Cold-start benchmark: enable-to-ACTIVE through the orchestrator vs. a bare sandboxed container.

Run from the repository root::

    .venv/bin/python bench/cold_start.py [--runs 20] [--warmup 2]

One run:

1. starts its own orchestrator (``uvicorn orchestrator.app:create_app --factory``) on a free port
   with a throw-away SQLite database, state folder and owner label, and installs
   ``examples/word-count`` as a bundle;
2. series "enable": ``POST /v1/plugins/{id}/enable`` timed wall-clock (the call returns once the
   plugin is ACTIVE, i.e. its container answered health and ``initialize``), then ``disable``
   (not timed);
3. series "floor": the same image started directly with the Docker SDK in the sandbox
   ``DockerRuntime.deploy`` gives it (``summit_sdk.sandbox.sandbox_options``, same settings),
   timed from the ``containers.run`` call until ``GET /summit/v1/health`` answers 200 over the
   unix socket (polled every ~5 ms); the container is then removed (not timed);
4. prints p50/p95/min/max of both series and the ratio of the p50s (target <= 1.5).

The two series alternate run by run (after a few uncounted warm-up runs of each) so that machine
noise hits both alike. Everything it creates is removed on exit, on error and on Ctrl-C. Timing
figures are reported, never asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import secrets
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import docker
import docker.errors
import httpx
from _harness import (
    REPO,
    WORD_COUNT_DIR,
    WORD_COUNT_ID,
    Orchestrator,
    clean_up_run,
    machine_line,
    nproc,
    percentile,
    sigterm_as_interrupt,
)
from summit_sdk.sandbox import SOCKET_NAME, open_socket_dir, sandbox_options

from orchestrator.config import Settings
from orchestrator.services.bundles import pack_directory

PLUGIN_DIR = WORD_COUNT_DIR
PLUGIN_ID = WORD_COUNT_ID
BENCH_LABEL = "io.summit.bench"
HEALTH_POLL_S = 0.005
FLOOR_TIMEOUT_S = 30.0


class Floor:
    """Starts the plugin's image the way ``DockerRuntime.deploy`` does, without the orchestrator."""

    def __init__(
        self, dk: docker.DockerClient, image: str, resources: dict[str, Any], root: Path, tag: str
    ) -> None:
        self.dk = dk
        self.image = image
        self.root = root
        self.tag = tag
        # The same settings the orchestrator reads (defaults unless SUMMIT_* says otherwise).
        s = Settings()
        self.sandbox = functools.partial(
            sandbox_options,
            memory_mb=int(resources.get("memory_mb", s.default_memory_mb)),
            cpu_percent=int(resources.get("cpu_percent", s.default_cpu_percent)),
            pids_limit=s.pids_limit,
            tmpfs_mb=s.tmpfs_mb,
            tmpfs_inodes=s.tmpfs_inodes,
            nofile_limit=s.nofile_limit,
            user=s.plugin_user,
            log_max_size=s.log_max_size,
            labels={BENCH_LABEL: tag},
        )
        self.user = s.plugin_user
        self.root.mkdir(parents=True, exist_ok=True)

    def _sock_dir(self) -> Path:
        d = self.root / secrets.token_hex(6)
        d.mkdir()
        open_socket_dir(d, self.user)
        return d

    def run_once(self) -> float:
        """Seconds from ``containers.run`` until health answers 200; the container is removed."""
        sock_dir = self._sock_dir()
        name = f"summit-bench-floor-{sock_dir.name}"
        container = None
        http = httpx.Client(
            base_url="http://plugin",
            transport=httpx.HTTPTransport(uds=str(sock_dir / SOCKET_NAME), retries=0),
            timeout=1.0,
        )
        options = self.sandbox(socket_dir=sock_dir)
        try:
            t0 = time.perf_counter()
            container = self.dk.containers.run(self.image, name=name, **options)
            deadline = t0 + FLOOR_TIMEOUT_S
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if http.get("/summit/v1/health").status_code == 200:
                        return time.perf_counter() - t0
                if time.perf_counter() > deadline:
                    logs = container.logs(tail=20).decode(errors="replace")
                    raise TimeoutError(f"floor container never became healthy:\n{logs}")
                time.sleep(HEALTH_POLL_S)
        finally:
            http.close()
            if container is not None:
                with contextlib.suppress(docker.errors.DockerException):
                    container.remove(force=True, v=True)
            shutil.rmtree(sock_dir, ignore_errors=True)

    def sweep(self) -> None:
        for c in self.dk.containers.list(all=True, filters={"label": f"{BENCH_LABEL}={self.tag}"}):
            with contextlib.suppress(docker.errors.DockerException):
                c.remove(force=True, v=True)


def stats_row(name: str, ms: list[float]) -> str:
    return (
        f"{name:<16}{len(ms):>5}{percentile(ms, 50):>10.1f}{percentile(ms, 95):>10.1f}"
        f"{min(ms):>10.1f}{max(ms):>10.1f}{statistics.fmean(ms):>10.1f}"
    )


def time_enable(orch: Orchestrator) -> float:
    t0 = time.perf_counter()
    r = orch.call("POST", f"/v1/plugins/{PLUGIN_ID}/enable")
    elapsed = time.perf_counter() - t0
    state = r.json().get("state")
    if state != "ACTIVE":
        raise RuntimeError(f"enable returned state {state!r}: {r.text[:500]}")
    return elapsed


def disable(orch: Orchestrator) -> None:
    orch.call("POST", f"/v1/plugins/{PLUGIN_ID}/disable")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=20, help="measured runs of each series")
    ap.add_argument("--warmup", type=int, default=2, help="uncounted warm-up runs of each series")
    args = ap.parse_args(argv)
    if args.runs < 1:
        ap.error("--runs must be >= 1")

    sigterm_as_interrupt()
    dk = docker.from_env(timeout=120)
    server = dk.version()
    tag = secrets.token_hex(4)
    instance = f"summit-bench-{tag}"
    # Short path: unix socket paths are limited to ~100 bytes.
    root = Path(tempfile.mkdtemp(prefix="sb-", dir="/tmp"))
    orch = Orchestrator(root, instance, token=secrets.token_urlsafe(24))
    floor: Floor | None = None
    installed = False  # set before the install call: the server may finish it after Ctrl-C
    enable_ms: list[float] = []
    floor_ms: list[float] = []

    print("Summit cold-start benchmark")
    print(f"  {machine_line(dk)}")
    print(f"  plugin {PLUGIN_ID} from {PLUGIN_DIR.relative_to(REPO)}")
    print(f"  runs {args.runs} per series (+{args.warmup} warm-up each), instance {instance}")
    try:
        orch.start()
        orch.wait_ready()
        t0 = time.perf_counter()
        installed = True
        orch.call(
            "POST",
            "/v1/plugins",
            files={"bundle": ("plugin.tar.gz", pack_directory(PLUGIN_DIR), "application/gzip")},
            data={"approved_permissions": json.dumps([]), "config": json.dumps({})},
        )
        print(f"  installed in {(time.perf_counter() - t0) * 1000:.0f} ms")

        # The image and resources the orchestrator runs, read while the plugin is enabled.
        orch.call("POST", f"/v1/plugins/{PLUGIN_ID}/enable")
        view = orch.call("GET", f"/v1/plugins/{PLUGIN_ID}").json()
        disable(orch)
        image = (view.get("container") or {}).get("image")
        if not image:
            raise RuntimeError(f"no container image in the plugin view: {view}")
        floor = Floor(dk, image, view.get("resources") or {}, root / "floor", tag)
        print(f"  image {image[:19]}  resources {json.dumps(view.get('resources'))}")
        print()

        def one(kind: str, into: list[float] | None) -> None:
            if kind == "enable":
                seconds = time_enable(orch)
                disable(orch)
            else:
                assert floor is not None
                seconds = floor.run_once()
            if into is not None:
                into.append(seconds * 1000)

        steps: list[tuple[str, list[float] | None]] = []
        for _ in range(args.warmup):
            steps += [("enable", None), ("floor", None)]
        for i in range(args.runs):
            # Alternate which series goes first, so neither always follows the other.
            pair = [("enable", enable_ms), ("floor", floor_ms)]
            steps += pair if i % 2 == 0 else pair[::-1]
        for n, (kind, into) in enumerate(steps, 1):
            one(kind, into)
            if sys.stderr.isatty():
                label = "warm-up" if into is None else kind
                last = f"{into[-1]:.1f} ms" if into else "-"
                print(f"\r  step {n}/{len(steps)} {label:<8} {last:<12}", end="", file=sys.stderr)
        if sys.stderr.isatty():
            print("\r" + " " * 50 + "\r", end="", file=sys.stderr)
    except KeyboardInterrupt:
        print("\ninterrupted; cleaning up", file=sys.stderr)
        return 130
    finally:
        cleanup(dk, orch, floor, installed, root, instance)

    p50_e, p50_f = percentile(enable_ms, 50), percentile(floor_ms, 50)
    ratio = p50_e / p50_f
    head = f"{'series (ms)':<16}{'n':>5}{'p50':>10}{'p95':>10}{'min':>10}{'max':>10}{'mean':>10}"
    print(head)
    print("-" * len(head))
    print(stats_row("enable->ACTIVE", enable_ms))
    print(stats_row("floor (docker)", floor_ms))
    print("-" * len(head))
    verdict = "meets" if ratio <= 1.5 else "misses"
    print(f"ratio of p50s enable/floor: {ratio:.2f} ({verdict} target <= 1.5)")
    print()
    print(
        f"Cold start ({PLUGIN_ID}, {args.runs} runs, Docker {server.get('Version')}, "
        f"{nproc()} CPUs): enable->ACTIVE p50 {p50_e:.0f} ms / p95 "
        f"{percentile(enable_ms, 95):.0f} ms; bare `docker run`->healthy p50 {p50_f:.0f} ms / "
        f"p95 {percentile(floor_ms, 95):.0f} ms; ratio {ratio:.2f} (target <= 1.5)."
    )
    return 0


def cleanup(
    dk: docker.DockerClient,
    orch: Orchestrator,
    floor: Floor | None,
    installed: bool,
    root: Path,
    instance: str,
) -> None:
    """Remove the floor's containers, then all the orchestrator run left (``clean_up_run``);
    every step runs even if an earlier one fails, and a second Ctrl-C cannot stop it."""
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        if floor is not None:
            with contextlib.suppress(Exception):
                floor.sweep()
        clean_up_run(dk, orch, [PLUGIN_ID] if installed else [], root, instance)
    finally:
        signal.signal(signal.SIGINT, old)


if __name__ == "__main__":
    sys.exit(main())
