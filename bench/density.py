"""Density benchmark: N plugins of one image on this host, how long they take to enable and what
they cost in memory.

Run from the repository root::

    .venv/bin/python bench/density.py [--plugins 200] [--concurrency 16] [--calls 200]

One run:

1. starts its own orchestrator (throw-away database, state folder, owner label; no rate limit),
   as the other benchmarks do (``bench/_harness.py``);
2. installs N copies of ``examples/word-count`` under distinct ids (only the id differs, so
   every build after the first reuses the base layers), each with a 64 MB memory limit;
3. enables all N concurrently (``--concurrency`` requests at a time) and times it;
4. waits ``--settle`` seconds, then prints the orchestrator's RSS, the memory of all plugin
   containers (each one's cgroup working set, as the resource monitor reads it), the idle
   footprint of one plugin (its container's working set, and the RSS of its processes), the
   p50/p99 of ``execute`` on one random plugin (``--calls`` calls), the p50 of an ``all``
   fan-out over 20 plugins, and the memory with every plugin paused
   (``POST /v1/plugins/{id}/pause``: frozen, a container keeps its memory);
5. compares with the targets: all N ACTIVE, orchestrator <= 300 MB RSS, an idle plugin
   <= 30 MB RSS.

Everything it creates is removed on exit, on error and on Ctrl-C. Figures are reported, never
asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import docker
from _harness import (
    REPO,
    WORD_COUNT_DIR,
    Orchestrator,
    clean_up_run,
    copy_word_count,
    machine_line,
    nproc,
    percentile,
    sigterm_as_interrupt,
    unlimited_orchestrator,
)

from orchestrator.monitor.cgroups import CgroupLocator, ContainerMeter
from orchestrator.services.bundles import pack_directory

MIB = 1024 * 1024
POINT, EXTENSION = "analyzer", "word-count"
TEXT = "the quick brown fox jumps over the lazy dog " * 10
FANOUT = 20


# -- what a process or a container uses ------------------------------------------------------


def _status_field(pid: int, name: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(name + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def rss_bytes(pid: int) -> int | None:
    """Resident set size of process ``pid`` (VmRSS)."""
    kb = _status_field(pid, "VmRSS")
    return kb * 1024 if kb is not None else None


def thread_count(pid: int) -> int | None:
    return _status_field(pid, "Threads")


def open_fds(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def container_rss(dk: docker.DockerClient, container_id: str) -> int | None:
    """RSS of every process of a container, added up (from the host's /proc)."""
    try:
        top = dk.api.top(container_id, ps_args="-o pid")
    except docker.errors.DockerException:
        return None
    total = 0
    for row in top.get("Processes") or []:
        value = rss_bytes(int(row[0]))
        total += value or 0
    return total


def mb(n: float | None) -> str:
    return f"{n / MIB:.1f} MB" if n is not None else "not available"


# -- the run ---------------------------------------------------------------------------------


def install_copies(orch: Orchestrator, root: Path, ids: list[str], installed: list[str]) -> None:
    for plugin_id in ids:
        src = copy_word_count(
            root / "src" / plugin_id,
            plugin_id,
            [("plugin.yaml", "memory_mb: 128", "memory_mb: 64")],
        )
        installed.append(plugin_id)
        orch.call(
            "POST",
            "/v1/plugins",
            files={"bundle": ("plugin.tar.gz", pack_directory(src), "application/gzip")},
            data={"approved_permissions": "[]", "config": "{}"},
        )


def enable_all(orch: Orchestrator, ids: list[str], concurrency: int) -> dict[str, str]:
    """Enable every plugin, ``concurrency`` at a time; each one's final state."""

    def enable(plugin_id: str) -> str:
        r = orch.client.post(f"/v1/plugins/{plugin_id}/enable")
        if r.status_code >= 400:
            return f"error {r.status_code}: {r.text[:200]}"
        return str(r.json().get("state"))

    with ThreadPoolExecutor(concurrency) as pool:
        return dict(zip(ids, pool.map(enable, ids), strict=True))


def container_ids(orch: Orchestrator, ids: list[str]) -> dict[str, str]:
    out = {}
    for plugin_id in ids:
        view = orch.client.get(f"/v1/plugins/{plugin_id}").json()
        cid = (view.get("container") or {}).get("id")
        if cid:
            out[plugin_id] = cid
    return out


def plugins_memory(meter: ContainerMeter, cids: dict[str, str]) -> tuple[int, list[int]]:
    sizes = [meter.read(cid).memory_bytes for cid in cids.values()]
    known = [s for s in sizes if s is not None]
    return sum(known), known


def time_calls(orch: Orchestrator, ids: list[str], calls: int) -> list[float]:
    url = f"/v1/extension-points/{POINT}/execute"
    out = []
    for _ in range(calls):
        body = {"input": {"text": TEXT}, "plugins": [random.choice(ids)]}
        t0 = time.perf_counter()
        r = orch.client.post(url, json=body)
        out.append((time.perf_counter() - t0) * 1000)
        if r.status_code != 200:
            raise RuntimeError(f"execute -> {r.status_code}: {r.text[:300]}")
    return out


def time_fanout(orch: Orchestrator, ids: list[str], runs: int) -> list[float]:
    url = f"/v1/extension-points/{POINT}/execute"
    out = []
    for _ in range(runs):
        chosen = random.sample(ids, min(FANOUT, len(ids)))
        body = {"input": {"text": TEXT}, "mode": "all", "plugins": chosen}
        t0 = time.perf_counter()
        r = orch.client.post(url, json=body)
        out.append((time.perf_counter() - t0) * 1000)
        if r.status_code != 200:
            raise RuntimeError(f"fan-out -> {r.status_code}: {r.text[:300]}")
    return out


def pause_all(orch: Orchestrator, ids: list[str]) -> bool:
    """Pause every plugin; False (and nothing changed) where the route does not exist."""
    r = orch.client.post(f"/v1/plugins/{ids[0]}/pause")
    if r.status_code in (404, 405) and r.json().get("error", {}).get("code") != "plugin_not_found":
        return False
    if r.status_code >= 400:
        raise RuntimeError(f"pause -> {r.status_code}: {r.text[:300]}")
    for plugin_id in ids[1:]:
        orch.call("POST", f"/v1/plugins/{plugin_id}/pause")
    return True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--plugins", "-n", type=int, default=200, help="plugins to run (default 200)")
    ap.add_argument("--concurrency", type=int, default=16, help="enables in flight at a time")
    ap.add_argument("--calls", type=int, default=200, help="calls to random plugins, timed")
    ap.add_argument("--fanout-runs", type=int, default=20, help="fan-outs over 20, timed")
    ap.add_argument("--settle", type=float, default=10.0, help="seconds idle before measuring")
    args = ap.parse_args(argv)
    if args.plugins < 1 or args.concurrency < 1:
        ap.error("--plugins and --concurrency must be >= 1")

    sigterm_as_interrupt()
    dk = docker.from_env(timeout=300)
    tag, instance, root, orch = unlimited_orchestrator()
    ids = [f"com.example.dense-{tag}-{i:03d}" for i in range(1, args.plugins + 1)]
    installed: list[str] = []
    meter = ContainerMeter(CgroupLocator())
    started = time.perf_counter()

    print("Summit density benchmark")
    print(f"  {machine_line(dk)}")
    print(
        f"  {args.plugins} copies of {WORD_COUNT_DIR.relative_to(REPO)} (64 MB limit each), "
        f"enabled {args.concurrency} at a time, instance {instance}"
    )
    try:
        orch.start()
        orch.wait_ready()
        assert orch.pid is not None
        rss_empty = rss_bytes(orch.pid)
        t0 = time.perf_counter()
        install_copies(orch, root, ids, installed)
        t1 = time.perf_counter()
        print(f"  installed {len(ids)} in {t1 - t0:.1f} s")
        states = enable_all(orch, ids, args.concurrency)
        t2 = time.perf_counter()
        active = [p for p, s in states.items() if s == "ACTIVE"]
        failed = {p: s for p, s in states.items() if s != "ACTIVE"}
        print(f"  enabled {len(active)}/{len(ids)} ACTIVE in {t2 - t1:.1f} s")
        for plugin_id, state in list(failed.items())[:5]:
            print(f"    {plugin_id}: {state}")
        if not active:
            raise RuntimeError("no plugin became ACTIVE")
        time.sleep(args.settle)

        cids = container_ids(orch, active)
        total, sizes = plugins_memory(meter, cids)
        one_id = active[0]
        one_cid = cids.get(one_id)
        rss_full = rss_bytes(orch.pid)
        one_rss = container_rss(dk, one_cid) if one_cid else None
        one_ws = meter.read(one_cid).memory_bytes if one_cid else None
        calls = time_calls(orch, active, args.calls) if args.calls else []
        fan = time_fanout(orch, active, args.fanout_runs) if args.fanout_runs else []
        rss_after = rss_bytes(orch.pid)

        print()
        print(f"  orchestrator RSS, no plugins       {mb(rss_empty)}")
        print(f"  orchestrator RSS, {len(active)} ACTIVE       {mb(rss_full)}")
        print(f"  orchestrator RSS after the calls   {mb(rss_after)}")
        print(
            f"  all plugin containers (cgroups)    {mb(total)} over {len(sizes)} "
            f"(median {mb(percentile([float(s) for s in sizes], 50)) if sizes else 'n/a'})"
        )
        print(f"  one idle plugin: container         {mb(one_ws)} (working set)")
        print(f"  one idle plugin: processes' RSS    {mb(one_rss)}")
        if calls:
            print(
                f"  call to a random plugin            p50 {percentile(calls, 50):.2f} ms, "
                f"p99 {percentile(calls, 99):.2f} ms ({len(calls)} calls)"
            )
        if fan:
            print(
                f"  'all' fan-out over {min(FANOUT, len(active))}             "
                f"p50 {percentile(fan, 50):.2f} ms, p99 {percentile(fan, 99):.2f} ms "
                f"({len(fan)} runs)"
            )
        if pause_all(orch, active):
            time.sleep(2)
            paused_total, _ = plugins_memory(meter, cids)
            print(f"  all plugin containers, paused      {mb(paused_total)}")
        else:
            print("  all plugin containers, paused      not available (no pause route yet)")

        print()
        target_n = len(active) == len(ids)
        print(f"  target: all {len(ids)} ACTIVE: {'met' if target_n else 'MISSED'}")
        if rss_full is not None:
            ok = rss_full <= 300 * MIB
            print(f"  target: orchestrator <= 300 MB RSS: {'met' if ok else 'MISSED'}")
        if one_rss is not None:
            ok = one_rss <= 30 * MIB
            print(f"  target: idle plugin <= 30 MB RSS: {'met' if ok else 'MISSED'}")
        print(f"  on {nproc()} CPUs; run took {time.perf_counter() - started:.0f} s")
        print(
            "  summary: "
            + json.dumps(
                {
                    "plugins": len(ids),
                    "active": len(active),
                    "enable_all_s": round(t2 - t1, 1),
                    "orchestrator_rss_mb": round((rss_full or 0) / MIB, 1),
                    "plugins_memory_mb": round(total / MIB, 1),
                    "idle_plugin_rss_mb": round((one_rss or 0) / MIB, 1),
                    "call_p50_ms": round(percentile(calls, 50), 2) if calls else None,
                    "fanout_p50_ms": round(percentile(fan, 50), 2) if fan else None,
                }
            )
        )
        return 0
    except KeyboardInterrupt:
        print("interrupted; cleaning up", file=sys.stderr)
        return 130
    except Exception as exc:
        print(f"error: {exc}\n{orch.log_tail()}", file=sys.stderr)
        return 1
    finally:
        t = time.perf_counter()
        clean_up_run(dk, orch, installed, root, instance)
        print(f"  cleaned up in {time.perf_counter() - t:.0f} s")


if __name__ == "__main__":
    raise SystemExit(main())
