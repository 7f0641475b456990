"""Cold import of the SDK's plugin runtime inside the plugin base image.

Runs one container of ``summit/plugin-python:latest`` (no network, read-only root, as a plugin
runs) and, inside it, starts a fresh Python process per sample that times
``import summit_sdk.runtime`` with ``time.perf_counter``; the same for ``import summit_sdk``
(the authoring API only) and for ``summit_sdk.points`` (typed points, which load pydantic).
Prints min/p50/p95 per module and the interpreter's own start-up for reference.
Target: p50 of ``summit_sdk.runtime`` under 150 ms.

    .venv/bin/python bench/sdk_import.py [--runs 20] [--image summit/plugin-python:latest]
"""

from __future__ import annotations

import argparse
import json
import sys

import _harness
import docker

PROBE = r"""
import json, subprocess, sys, time
runs = int(sys.argv[1])
code = "import time; t = time.perf_counter(); import {mod}; print(time.perf_counter() - t)"
out = {}
for mod in ("summit_sdk", "summit_sdk.runtime", "summit_sdk.points"):
    times = []
    for _ in range(runs):
        done = subprocess.run([sys.executable, "-c", code.format(mod=mod)],
                              capture_output=True, text=True, check=True)
        times.append(float(done.stdout) * 1000)
    out[mod] = times
start = []
for _ in range(runs):
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    start.append((time.perf_counter() - t) * 1000)
out["python -c pass (whole process)"] = start
print(json.dumps(out))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--image", default="summit/plugin-python:latest")
    args = parser.parse_args()
    dk = docker.from_env()
    print(_harness.machine_line(dk))
    raw = dk.containers.run(
        args.image,
        ["python", "-c", PROBE, str(args.runs)],
        entrypoint=[],
        network_mode="none",
        read_only=True,
        tmpfs={"/tmp": "size=16m"},
        user="10001:10001",
        remove=True,
        stdout=True,
        stderr=True,
    )
    figures = json.loads(raw.decode().strip().splitlines()[-1])
    print(f"{args.image}, {args.runs} fresh processes per row (ms)")
    print(f"{'import':<34}{'min':>8}{'p50':>8}{'p95':>8}")
    for name, times in figures.items():
        row = [min(times), _harness.percentile(times, 50), _harness.percentile(times, 95)]
        print(f"{name:<34}" + "".join(f"{v:8.1f}" for v in row))
    p50 = _harness.percentile(figures["summit_sdk.runtime"], 50)
    verdict = "within" if p50 < 150 else "OVER"
    print(f"summary: import summit_sdk.runtime p50 {p50:.1f} ms ({verdict} the 150 ms target)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
