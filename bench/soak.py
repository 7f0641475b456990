"""Soak benchmark: many brokered calls, and whether the orchestrator gives back what they took.

Run from the repository root::

    .venv/bin/python bench/soak.py [--calls 100000] [--concurrency 16] [--plugins 4]

One run:

1. starts its own orchestrator (throw-away database, state folder and owner label, no rate
   limit) and installs and enables ``--plugins`` copies of ``examples/word-count``;
2. warms up (a few hundred calls), waits for it to settle, then reads the orchestrator's RSS,
   open file descriptors and threads ("before");
3. sends ``--calls`` ``execute`` calls at ``--concurrency`` (asyncio callers, each with its own
   keep-alive client), each to one plugin in turn, counting answers that are not 200;
4. waits ``--settle`` seconds and reads the same figures ("after"), and prints both, the growth,
   the throughput and p50/p99 latency.

A leak shows as growth that does not go away: RSS after a burst settles above its first level
(some growth is the allocator keeping freed memory), or descriptors and threads that stay.
Everything it creates is removed on exit, on error and on Ctrl-C. Figures are reported, never
asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import sys
import time

import docker
import httpx
from _harness import (
    Orchestrator,
    clean_up_run,
    machine_line,
    percentile,
    sigterm_as_interrupt,
    unlimited_orchestrator,
)
from density import POINT, TEXT, install_copies, mb, open_fds, rss_bytes, thread_count

WARMUP_CALLS = 300


def figures(pid: int) -> dict[str, int | None]:
    return {"rss": rss_bytes(pid), "fds": open_fds(pid), "threads": thread_count(pid)}


async def burst(
    orch: Orchestrator, ids: list[str], calls: int, concurrency: int
) -> tuple[list[float], int]:
    """``calls`` execute calls, ``concurrency`` at a time; latencies (ms) and failures."""
    url = f"{orch.url}/v1/extension-points/{POINT}/execute"
    headers = {"Authorization": f"Bearer {orch.token}"}
    bodies = [
        httpx.Request("POST", url, json={"input": {"text": TEXT}, "plugins": [p]}).content
        for p in ids
    ]
    counter = itertools.count()
    latencies: list[float] = []
    failed = 0

    async def caller() -> None:
        nonlocal failed
        async with httpx.AsyncClient(
            headers={**headers, "content-type": "application/json"}, timeout=60
        ) as client:
            while (i := next(counter)) < calls:
                t0 = time.perf_counter()
                try:
                    r = await client.post(url, content=bodies[i % len(bodies)])
                    ok = r.status_code == 200
                except httpx.HTTPError:
                    ok = False
                latencies.append((time.perf_counter() - t0) * 1000)
                if not ok:
                    failed += 1

    await asyncio.gather(*(caller() for _ in range(concurrency)))
    return latencies, failed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=100_000, help="calls to send (default 100000)")
    ap.add_argument("--concurrency", type=int, default=16, help="callers at a time")
    ap.add_argument("--plugins", type=int, default=4, help="plugins the calls go to in turn")
    ap.add_argument("--settle", type=float, default=5.0, help="seconds idle before a reading")
    args = ap.parse_args(argv)
    if args.calls < 1 or args.concurrency < 1 or args.plugins < 1:
        ap.error("--calls, --concurrency and --plugins must be >= 1")

    sigterm_as_interrupt()
    dk = docker.from_env(timeout=120)
    tag, instance, root, orch = unlimited_orchestrator()
    ids = [f"com.example.soak-{tag}-{i:02d}" for i in range(1, args.plugins + 1)]
    installed: list[str] = []
    started = time.perf_counter()
    print("Summit soak benchmark")
    print(f"  {machine_line(dk)}")
    print(
        f"  {args.calls} calls at concurrency {args.concurrency} over {args.plugins} copies "
        f"of examples/word-count, instance {instance}"
    )
    try:
        orch.start()
        orch.wait_ready()
        assert orch.pid is not None
        install_copies(orch, root, ids, installed)
        for plugin_id in ids:
            orch.call("POST", f"/v1/plugins/{plugin_id}/enable")
        asyncio.run(burst(orch, ids, WARMUP_CALLS, args.concurrency))
        time.sleep(args.settle)
        before = figures(orch.pid)
        t0 = time.perf_counter()
        latencies, failed = asyncio.run(burst(orch, ids, args.calls, args.concurrency))
        elapsed = time.perf_counter() - t0
        during = figures(orch.pid)
        time.sleep(args.settle)
        after = figures(orch.pid)

        print()
        print(f"  {'':<22}{'before':>12}{'end of burst':>14}{'after settle':>14}")
        print(f"  {'RSS':<22}{mb(before['rss']):>12}{mb(during['rss']):>14}{mb(after['rss']):>14}")
        for key, name in (("fds", "open descriptors"), ("threads", "threads")):
            print(f"  {name:<22}{before[key]!s:>12}{during[key]!s:>14}{after[key]!s:>14}")
        if before["rss"] is not None and after["rss"] is not None:
            print(f"  RSS growth             {mb(after['rss'] - before['rss'])}")
        print(
            f"  {len(latencies)} calls in {elapsed:.1f} s ({len(latencies) / elapsed:.0f}/s), "
            f"{failed} failed; p50 {percentile(latencies, 50):.2f} ms, "
            f"p99 {percentile(latencies, 99):.2f} ms"
        )
        print(f"  run took {time.perf_counter() - started:.0f} s")
        return 0 if failed == 0 else 1
    except KeyboardInterrupt:
        print("interrupted; cleaning up", file=sys.stderr)
        return 130
    except Exception as exc:
        print(f"error: {exc}\n{orch.log_tail()}", file=sys.stderr)
        return 1
    finally:
        clean_up_run(dk, orch, installed, root, instance)


if __name__ == "__main__":
    raise SystemExit(main())
