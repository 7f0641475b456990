"""Idle pause benchmark: what thawing a frozen plugin adds to its first call.

Run from the repository root::

    .venv/bin/python bench/pause.py [--rounds 50]

One run starts its own orchestrator (``bench/_harness.py``: throw-away database and state, no
rate limit, no automatic pause), installs ``examples/word-count`` and enables it, then for each
round: freezes it (``POST /v1/plugins/{id}/pause``, as the idle pause would after
``SUMMIT_IDLE_PAUSE_S``), times the first call (which waits for the thaw), then times a second
call on the running plugin. The resume's cost is the first call's time less the second's, per
round; p50 and p99 are printed beside the target (20 ms). Figures are reported, never asserted.
Everything it creates is removed on exit, on error and on Ctrl-C.
"""

from __future__ import annotations

import argparse
import sys
import time

import docker
from _harness import (
    clean_up_run,
    copy_word_count,
    machine_line,
    percentile,
    sigterm_as_interrupt,
    unlimited_orchestrator,
)

from orchestrator.services.bundles import pack_directory

TARGET_MS = 20.0
URL = "/v1/extension-points/analyzer/execute"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=50, help="pause, then call, this many times")
    args = ap.parse_args(argv)
    if args.rounds < 1:
        ap.error("--rounds must be >= 1")

    sigterm_as_interrupt()
    dk = docker.from_env(timeout=300)
    tag, instance, root, orch = unlimited_orchestrator()
    plugin_id = f"com.example.sleepy-{tag}"
    installed: list[str] = []
    print("Summit idle pause benchmark")
    print(f"  {machine_line(dk)}")
    try:
        orch.start()
        orch.wait_ready()
        src = copy_word_count(root / "src", plugin_id)
        installed.append(plugin_id)
        orch.call(
            "POST",
            "/v1/plugins",
            files={"bundle": ("plugin.tar.gz", pack_directory(src), "application/gzip")},
            data={"approved_permissions": "[]", "config": "{}"},
        )
        orch.call("POST", f"/v1/plugins/{plugin_id}/enable")
        body = {"input": {"text": "the quick brown fox"}, "plugins": [plugin_id]}

        def timed_call() -> float:
            t0 = time.perf_counter()
            r = orch.client.post(URL, json=body)
            elapsed = (time.perf_counter() - t0) * 1000
            if r.status_code != 200:
                raise RuntimeError(f"execute -> {r.status_code}: {r.text[:300]}")
            return elapsed

        for _ in range(5):  # connections and caches warm
            timed_call()
        first, warm, added = [], [], []
        for _ in range(args.rounds):
            orch.call("POST", f"/v1/plugins/{plugin_id}/pause")
            cid = orch.client.get(f"/v1/plugins/{plugin_id}").json()["container"]["id"]
            if not dk.containers.get(cid).attrs["State"]["Paused"]:
                raise RuntimeError("the plugin's container is not frozen after a pause")
            cold = timed_call()
            hot = timed_call()
            first.append(cold)
            warm.append(hot)
            added.append(cold - hot)
            time.sleep(0.2)  # the resume's row and event are written after the call
        p50, p99 = percentile(added, 50), percentile(added, 99)
        print(f"  {args.rounds} rounds of pause, first call, second call (one plugin)")
        print(
            f"  first call after a pause        p50 {percentile(first, 50):.2f} ms, "
            f"p99 {percentile(first, 99):.2f} ms"
        )
        print(
            f"  call to a running plugin        p50 {percentile(warm, 50):.2f} ms, "
            f"p99 {percentile(warm, 99):.2f} ms"
        )
        print(f"  added by the resume             p50 {p50:.2f} ms, p99 {p99:.2f} ms")
        verdict = "met" if p50 <= TARGET_MS else "MISSED"
        print(f"  target: resume adds <= {TARGET_MS:g} ms (p50): {verdict}")
        return 0
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
