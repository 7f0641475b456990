"""Host API benchmark: a plugin's calls to ``/host/v1`` over its own socket.

Run from the repository root::

    .venv/bin/python bench/host_api.py [--calls 2000] [--warmup 200]

One run:

1. starts its own orchestrator (as ``bench/broker.py`` does: throw-away SQLite database, state
   folder and owner label, no rate limit);
2. installs a copy of ``examples/word-count`` that also asks for the ``storage`` permission
   (granted at install) and enables it. Its manifest carries three JSON Schemas, as real
   plugins' manifests do, and every host call reads the manifest back;
3. issues itself a host token for the plugin's container through the orchestrator's own token
   store (the token the plugin got never leaves its container), and calls the host socket the
   orchestrator made for that container, as the plugin would: ``PUT`` then ``GET
   /host/v1/storage/kv/{key}``, one caller, ``--calls`` of each after ``--warmup`` uncounted;
4. prints p50/p99 latency, calls per second and the orchestrator's CPU per call.

Everything it creates is removed on exit, on error and on Ctrl-C. Figures are reported,
never asserted.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import docker
import httpx
from _harness import (
    Orchestrator,
    clean_up_run,
    copy_word_count,
    machine_line,
    percentile,
    process_cpu_s,
    sigterm_as_interrupt,
)

from orchestrator.security.tokens import HostTokens
from orchestrator.services.bundles import pack_directory
from orchestrator.store.db import make_engine

KEY = "bench"
VALUE = {"counts": {"broker": 3, "plugin": 2}, "note": "a small JSON value, as plugins keep"}


def host_socket(dk: docker.DockerClient, container_id: str) -> str:
    """The host socket the orchestrator made in the container's ``/run/summit`` folder."""
    container = dk.containers.get(container_id)
    sources = [m["Source"] for m in container.attrs["Mounts"] if m["Destination"] == "/run/summit"]
    if len(sources) != 1:
        raise RuntimeError(f"container {container_id[:12]} has no /run/summit mount")
    return f"{sources[0]}/host.sock"


def series(
    name: str, call: Callable[[], httpx.Response], calls: int, warmup: int, orch_pid: int
) -> str:
    for _ in range(warmup):
        call().raise_for_status()
    latencies: list[float] = []
    cpu0, start = process_cpu_s(orch_pid), time.perf_counter()
    for _ in range(calls):
        t0 = time.perf_counter()
        r = call()
        latencies.append((time.perf_counter() - t0) * 1000)
        if r.status_code != 200:
            raise RuntimeError(f"{name}: {r.status_code} {r.text[:300]}")
    elapsed, cpu1 = time.perf_counter() - start, process_cpu_s(orch_pid)
    cpu = "-" if cpu0 is None or cpu1 is None else f"{(cpu1 - cpu0) * 1000 / calls:.2f}"
    return (
        f"{name:<22}{calls:>7}{percentile(latencies, 50):>9.2f}{percentile(latencies, 99):>9.2f}"
        f"{calls / elapsed:>9.0f}{cpu:>18}"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=2000, help="measured calls per series")
    ap.add_argument("--warmup", type=int, default=200, help="uncounted calls before each")
    args = ap.parse_args(argv)
    if args.calls < 1 or args.warmup < 0:
        ap.error("--calls must be >= 1 and --warmup >= 0")

    sigterm_as_interrupt()
    dk = docker.from_env(timeout=120)
    tag = secrets.token_hex(3)
    instance = f"summit-bench-{tag}"
    plugin_id = f"com.example.hostbench-{tag}"
    root = Path(tempfile.mkdtemp(prefix="sh-", dir="/tmp"))  # short: unix socket paths
    orch = Orchestrator(
        root,
        instance,
        token=secrets.token_urlsafe(24),
        extra_env={"SUMMIT_RATE_LIMIT_REQUESTS": "0"},
    )
    installed = False
    print("Summit host API benchmark")
    print(f"  {machine_line(dk)}")
    print(
        f"  one caller on the host socket of {plugin_id} (word-count + storage), "
        f"instance {instance}"
    )
    rows: list[str] = []
    try:
        orch.start()
        orch.wait_ready()
        src = copy_word_count(
            root / "src",
            plugin_id,
            [("plugin.yaml", "permissions: []\n", "permissions: [storage]\n")],
        )
        installed = True
        orch.call(
            "POST",
            "/v1/plugins",
            files={"bundle": ("plugin.tar.gz", pack_directory(src), "application/gzip")},
            data={"approved_permissions": json.dumps(["storage"]), "config": "{}"},
        )
        orch.call("POST", f"/v1/plugins/{plugin_id}/enable")
        view = orch.call("GET", f"/v1/plugins/{plugin_id}").json()
        container_id = (view.get("container") or {}).get("id")
        if view.get("state") != "ACTIVE" or not container_id:
            raise RuntimeError(f"{plugin_id} is not ACTIVE with a container: {view}")
        engine = make_engine(f"sqlite:///{root / 'summit.db'}")
        try:
            token = HostTokens(engine).issue(plugin_id=plugin_id, container_id=container_id)
        finally:
            engine.dispose()
        assert orch.pid is not None
        with httpx.Client(
            transport=httpx.HTTPTransport(uds=host_socket(dk, container_id)),
            base_url="http://host",
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        ) as host:
            url = f"/host/v1/storage/kv/{KEY}"
            rows.append(
                series(
                    "storage kv put",
                    lambda: host.put(url, json={"value": VALUE}),
                    args.calls,
                    args.warmup,
                    orch.pid,
                )
            )
            rows.append(
                series("storage kv get", lambda: host.get(url), args.calls, args.warmup, orch.pid)
            )
    except KeyboardInterrupt:
        print("\ninterrupted; cleaning up", file=sys.stderr)
        return 130
    finally:
        clean_up_run(dk, orch, [plugin_id] if installed else [], root, instance)
    print()
    print(
        f"{'series':<22}{'calls':>7}{'p50 ms':>9}{'p99 ms':>9}{'req/s':>9}{'orch CPU ms/call':>18}"
    )
    for row in rows:
        print(row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
