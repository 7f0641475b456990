"""Broker benchmark: direct HTTP to a plugin container vs. the same call through ``execute``.

Run from the repository root::

    .venv/bin/python bench/broker.py [--seconds 5] [--warmup 1] [--providers 1,5,20]
                                     [--async-handler]

One run:

1. starts its own orchestrator (``uvicorn orchestrator.app:create_app --factory``) on a free port
   with a throw-away database, state folder and owner label, no rate limit
   (``SUMMIT_RATE_LIMIT_REQUESTS=0``) and ``SUMMIT_PLUGIN_CONCURRENCY=256``;
2. installs copies of ``examples/word-count`` under distinct ids (as many as the largest
   ``--providers`` figure) and enables them; with ``--async-handler`` the copies' handler is
   ``async def`` (run on the plugin's event loop, no hand-off to a worker thread);
3. against the first copy, for ``--seconds`` each after ``--warmup`` seconds of uncounted calls:
   "direct" = ``POST /summit/v1/extensions/analyzer/word-count`` straight to the plugin
   container's unix socket (the ``io.summit.endpoint`` label of its container), "brokered" =
   ``POST /v1/extension-points/analyzer/execute`` with ``plugins: [id]``; each one client
   sequentially (keep-alive) and with 16 concurrent callers (asyncio + ``httpx.AsyncClient``);
4. fan-out: ``execute`` mode ``all`` over the first 1, 5 and 20 copies, sequentially;

5. prints p50/p99 latency, throughput, the CPU each party spent per call, and the ratios
   against the targets (added p50 <= 1 ms, brokered/direct throughput at c16 >= 60%,
   20-provider p50 <= 2x the 1-provider p50), and the floor the CPU sets on the largest
   fan-out: its CPU per call over the CPUs there are.

The series compared with each other (direct and brokered; the fan-out sizes) take turns in
0.5 s slices rather than running one after the other: on a shared host the machine's speed
drifts by tens of percent within a minute, and turns spread that drift over every series.

The load generator runs on the same machine as the orchestrator and the plugins, and competes
with them for the CPUs; the output says so. Everything it creates is removed on exit, on error
and on Ctrl-C. Timing figures are reported, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import docker
import docker.errors
import httpx
from _harness import (
    REPO,
    WORD_COUNT_DIR,
    WORD_COUNT_ID,
    Orchestrator,
    clean_up_run,
    copy_word_count,
    machine_line,
    nproc,
    percentile,
    process_cpu_s,
    sigterm_as_interrupt,
    unlimited_orchestrator,
    wakeup_round_trip_us,
)

from orchestrator.broker.client import base_url_for, transport_for
from orchestrator.runtime.endpoints import Endpoint, UnixEndpoint, parse_endpoint
from orchestrator.services.bundles import pack_directory

PLUGIN_DIR = WORD_COUNT_DIR
ORIGINAL_ID = WORD_COUNT_ID
POINT, EXTENSION = "analyzer", "word-count"
LABEL_ENDPOINT = "io.summit.endpoint"
CONCURRENCY = 16
# ~90 words / ~560 bytes: a short paragraph, so the plugin's own work stays small and the
# figures are mostly transport and brokering.
TEXT = (
    "Summit runs every plugin in its own container and brokers each call from the host "
    "application to the plugin over a local socket. The broker checks the input against the "
    "schema the plugin declared, applies rate limits and a circuit breaker, and fans a call out "
    "to every provider of an extension point when asked to. This paragraph is what the "
    "benchmark sends: it is long enough for the word counter to do some real work, and short "
    "enough that the cost of the work does not hide the cost of the broker. Words repeat, so "
    "the top of the count is not a tie: broker broker broker plugin plugin call."
)
DIRECT_BODY = json.dumps(
    {"input": {"text": TEXT}, "context": {"request_id": "x", "deadline_ms": 5000}}
).encode()
JSON_HEADERS = {"content-type": "application/json"}


# -- results -------------------------------------------------------------------------------


@dataclass
class Series:
    name: str
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    first_error: str | None = None
    elapsed_s: float = 0.0
    # CPU seconds spent in the measured window by: this process, the orchestrator, the plugin(s).
    cpu_s: dict[str, float | None] = field(default_factory=dict)

    def fail(self, what: str) -> None:
        self.errors += 1
        if self.first_error is None:
            self.first_error = what

    @property
    def calls(self) -> int:
        return len(self.latencies_ms)

    @property
    def rps(self) -> float:
        return self.calls / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def p(self, q: float) -> float:
        return percentile(self.latencies_ms, q) if self.latencies_ms else float("nan")

    def cpu_ms_per_call(self, who: str) -> float | None:
        used = self.cpu_s.get(who)
        if used is None or not self.calls:
            return None
        return used * 1000 / self.calls


class CpuMeter:
    """CPU seconds of the load generator, the orchestrator and a set of plugin processes."""

    def __init__(self, orchestrator_pid: int, plugin_pids: list[int]) -> None:
        self.orchestrator_pid = orchestrator_pid
        self.plugin_pids = plugin_pids

    def sample(self) -> dict[str, float | None]:
        plugins = [process_cpu_s(pid) for pid in self.plugin_pids]
        return {
            "client": time.process_time(),
            "orchestrator": process_cpu_s(self.orchestrator_pid),
            "plugins": None if any(v is None for v in plugins) else sum(plugins),  # type: ignore[arg-type]
        }

    @staticmethod
    def delta(a: dict[str, float | None], b: dict[str, float | None]) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        for k, v0 in a.items():
            v1 = b.get(k)
            out[k] = None if v0 is None or v1 is None else v1 - v0
        return out


# -- checks of one answer --------------------------------------------------------------------


def check_direct(r: httpx.Response) -> str | None:
    if r.status_code != 200:
        return f"direct {r.status_code}: {r.text[:300]}"
    try:
        data = r.json()
    except ValueError:
        return f"direct: not JSON: {r.text[:300]}"
    if not isinstance(data, dict) or "output" not in data:
        return f"direct: no output: {r.text[:300]}"
    return None


def check_execute(r: httpx.Response, expected: int) -> str | None:
    if r.status_code != 200:
        return f"execute {r.status_code}: {r.text[:300]}"
    try:
        results = r.json()["results"]
    except (ValueError, KeyError, TypeError):
        return f"execute: unexpected body: {r.text[:300]}"
    if len(results) != expected:
        return f"execute: {len(results)} results, expected {expected}"
    for entry in results:
        if "output" not in entry:
            return f"execute: {entry.get('plugin')} failed: {entry.get('error')}"
    return None


# -- load loops ------------------------------------------------------------------------------


SLICE_S = 0.5  # series compared with each other take turns in slices this long


def _add_cpu(series: Series, used: dict[str, float | None]) -> None:
    for who, v in used.items():
        old = series.cpu_s.get(who, 0.0)
        series.cpu_s[who] = None if v is None or old is None else old + v


@dataclass
class Load:
    """One series of a comparison: its name, one call (error text or None) and what to meter."""

    name: str
    send: Callable[[], str | None]
    meter: CpuMeter


def run_sequential(loads: list[Load], seconds: float, warmup: float) -> list[Series]:
    """Each load for ``seconds`` of one caller, the loads taking turns in ``SLICE_S`` slices.

    Taking turns, not one after the other, so that a machine that slows down or speeds up
    during the run (a shared host) weighs on every series of the comparison alike.
    """
    out = [Series(load.name) for load in loads]
    for load in loads:
        end = time.perf_counter() + warmup
        while time.perf_counter() < end:
            err = load.send()
            if err:
                raise RuntimeError(f"{load.name}: warm-up call failed: {err}")
    for _ in range(max(1, round(seconds / SLICE_S))):
        for load, series in zip(loads, out, strict=True):
            before = load.meter.sample()
            start = time.perf_counter()
            end = start + SLICE_S
            done = start
            while done < end:
                t0 = time.perf_counter()
                err = load.send()
                done = time.perf_counter()
                if err is None:
                    series.latencies_ms.append((done - t0) * 1000)
                else:
                    series.fail(err)
            series.elapsed_s += done - start
            _add_cpu(series, CpuMeter.delta(before, load.meter.sample()))
    return out


@dataclass
class ConcurrentLoad:
    name: str
    make_client: Callable[[], httpx.AsyncClient]
    send: Callable[[httpx.AsyncClient], Awaitable[str | None]]
    meter: CpuMeter


def run_concurrent(
    loads: list[ConcurrentLoad],
    seconds: float,
    warmup: float,
    concurrency: int = CONCURRENCY,
) -> list[Series]:
    """``concurrency`` callers per load on one event loop, each with its own keep-alive
    connection; the loads take turns in ``SLICE_S`` slices as in :func:`run_sequential`.

    One client per caller, not one shared pool: httpx's async pool spends far more CPU per call
    when many requests wait on it, and that CPU would be taken from the servers under test.
    """
    out = [Series(load.name) for load in loads]

    async def caller(
        load: ConcurrentLoad, series: Series | None, client: httpx.AsyncClient, until: float
    ) -> float:
        last = time.perf_counter()
        while last < until:
            t0 = time.perf_counter()
            err = await load.send(client)
            last = time.perf_counter()
            if series is None:
                if err:
                    raise RuntimeError(f"{load.name}: warm-up call failed: {err}")
            elif err is None:
                series.latencies_ms.append((last - t0) * 1000)
            else:
                series.fail(err)
        return last

    async def main() -> None:
        async with contextlib.AsyncExitStack() as stack:
            clients = [
                [await stack.enter_async_context(load.make_client()) for _ in range(concurrency)]
                for load in loads
            ]
            for load, group in zip(loads, clients, strict=True):
                until = time.perf_counter() + warmup
                await asyncio.gather(*(caller(load, None, c, until) for c in group))
            for _ in range(max(1, round(seconds / SLICE_S))):
                for load, series, group in zip(loads, out, clients, strict=True):
                    before = load.meter.sample()
                    start = time.perf_counter()
                    ends = await asyncio.gather(
                        *(caller(load, series, c, start + SLICE_S) for c in group)
                    )
                    # Calls in flight at the end of the slice finish and count; so does their
                    # time.
                    series.elapsed_s += max(ends) - start
                    _add_cpu(series, CpuMeter.delta(before, load.meter.sample()))

    asyncio.run(main())
    return out


# -- plugins ---------------------------------------------------------------------------------


def make_copy(dest: Path, plugin_id: str, *, async_handler: bool = False) -> Path:
    """``examples/word-count`` under ``plugin_id``; with ``async_handler``, its handler as
    ``async def``."""
    edits = [("word_count.py", "\ndef analyze(", "\nasync def analyze(")] if async_handler else []
    return copy_word_count(dest, plugin_id, edits)


def plugin_endpoint(
    orch: Orchestrator, dk: docker.DockerClient, plugin_id: str
) -> tuple[Endpoint, int]:
    """The plugin container's endpoint label and the host pid of its main process."""
    view = orch.call("GET", f"/v1/plugins/{plugin_id}").json()
    container_id = (view.get("container") or {}).get("id")
    if view.get("state") != "ACTIVE" or not container_id:
        raise RuntimeError(f"{plugin_id} is not ACTIVE with a container: {view}")
    container = dk.containers.get(container_id)
    endpoint = container.labels.get(LABEL_ENDPOINT)
    if not endpoint:
        raise RuntimeError(f"container {container_id[:12]} has no {LABEL_ENDPOINT} label")
    return parse_endpoint(endpoint), int(container.attrs["State"]["Pid"])


# -- output ----------------------------------------------------------------------------------


def _fmt(v: float | None, spec: str = ".2f") -> str:
    return "-" if v is None else format(v, spec)


def table(rows: list[Series]) -> list[str]:
    head = (
        f"{'series':<26}{'calls':>7}{'err':>5}{'p50 ms':>9}{'p99 ms':>9}{'req/s':>9}"
        f"   {'CPU ms/call: client':>19}{'orch':>7}{'plugin':>7}"
    )
    lines = [head, "-" * len(head)]
    for s in rows:
        lines.append(
            f"{s.name:<26}{s.calls:>7}{s.errors:>5}{s.p(50):>9.2f}{s.p(99):>9.2f}{s.rps:>9.0f}"
            f"   {_fmt(s.cpu_ms_per_call('client')):>19}"
            f"{_fmt(s.cpu_ms_per_call('orchestrator')):>7}"
            f"{_fmt(s.cpu_ms_per_call('plugins')):>7}"
        )
    return lines


def cpu_floor(fan: dict[int, Series], lo: int, hi: int) -> list[str]:
    """What the CPU measured per fan-out call allows at best: ``nproc`` CPUs cannot finish a
    call that needs C ms of CPU in less than C / nproc ms, however the work is spread.

    Printed so that a missed fan-out target can be told apart: a broker that serialises
    (p50 far above the floor) from a call that is CPU-bound (p50 near the floor).
    """
    big, small = fan[hi], fan[lo]
    parts = {who: big.cpu_ms_per_call(who) for who in ("client", "orchestrator", "plugins")}
    if any(v is None for v in parts.values()) or not small.latencies_ms:
        return []
    cpus = nproc()
    total = sum(v for v in parts.values() if v is not None)
    plugins = parts["plugins"] or 0.0
    x_lo = small.p(50)
    return [
        f"fan-out x{hi} CPU per call: {total:.2f} ms (client {parts['client']:.2f}, "
        f"orchestrator {parts['orchestrator']:.2f}, plugins {plugins:.2f}); on {cpus} CPUs "
        f"no x{hi} call can take less than {total / cpus:.2f} ms = {total / cpus / x_lo:.2f} "
        f"x the x{lo} p50, and the plugins' share alone needs {plugins / cpus:.2f} ms = "
        f"{plugins / cpus / x_lo:.2f} x; measured p50 {big.p(50):.2f} ms is "
        f"{big.p(50) / (total / cpus):.2f} x that floor"
    ]


def handler_kind(args: argparse.Namespace) -> str:
    return "async def" if args.async_handler else "sync"


def verdict(ok: bool) -> str:
    return "meets" if ok else "MISSES"


# -- main ------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=5.0, help="measured seconds per series")
    ap.add_argument("--warmup", type=float, default=1.0, help="uncounted seconds before each")
    ap.add_argument(
        "--providers", default="1,5,20", help="fan-out sizes, comma-separated (default 1,5,20)"
    )
    ap.add_argument(
        "--async-handler",
        action="store_true",
        help="make the copies' handler async def (no worker-thread hand-off in the plugin)",
    )
    args = ap.parse_args(argv)
    try:
        fanout = sorted({int(x) for x in args.providers.split(",") if x.strip()})
    except ValueError:
        ap.error("--providers must be comma-separated integers")
    if not fanout or fanout[0] < 1:
        ap.error("--providers needs sizes >= 1")
    if args.seconds <= 0 or args.warmup < 0:
        ap.error("--seconds must be > 0 and --warmup >= 0")
    n_plugins = max(fanout)

    sigterm_as_interrupt()
    dk = docker.from_env(timeout=120)
    tag, instance, root, orch = unlimited_orchestrator()
    ids = [f"com.example.bench-{tag}-{i:02d}" for i in range(1, n_plugins + 1)]
    installed: list[str] = []  # appended before each install call: it may finish after Ctrl-C

    print("Summit broker benchmark")
    print(f"  {machine_line(dk)}")
    wakeup_before = wakeup_round_trip_us()
    print(
        f"  load generator on the same machine ({nproc()} CPUs shared with the orchestrator "
        "and the plugins)"
    )
    print(
        f"  {n_plugins} copies of {PLUGIN_DIR.relative_to(REPO)} ({handler_kind(args)} handler), "
        f"{len(TEXT)}-byte text, "
        f"{args.seconds:g} s per series (+{args.warmup:g} s warm-up), instance {instance}"
    )
    rows: list[Series] = []
    fan: dict[int, Series] = {}
    try:
        orch.start()
        orch.wait_ready()
        t0 = time.perf_counter()
        for plugin_id in ids:
            src = make_copy(root / "src" / plugin_id, plugin_id, async_handler=args.async_handler)
            installed.append(plugin_id)
            orch.call(
                "POST",
                "/v1/plugins",
                files={"bundle": ("plugin.tar.gz", pack_directory(src), "application/gzip")},
                data={"approved_permissions": "[]", "config": "{}"},
            )
        t1 = time.perf_counter()
        pids: dict[str, int] = {}
        endpoints: dict[str, Endpoint] = {}
        for plugin_id in ids:
            orch.call("POST", f"/v1/plugins/{plugin_id}/enable")
            endpoints[plugin_id], pids[plugin_id] = plugin_endpoint(orch, dk, plugin_id)
        t2 = time.perf_counter()
        print(
            f"  installed {len(ids)} in {t1 - t0:.1f} s, enabled in {t2 - t1:.1f} s; "
            f"target {ids[0]} at {endpoints[ids[0]]}"
        )
        print()

        assert orch.pid is not None
        target = ids[0]
        one = CpuMeter(orch.pid, [pids[target]])
        direct_url = f"/summit/v1/extensions/{POINT}/{EXTENSION}"
        execute_url = f"/v1/extension-points/{POINT}/execute"
        auth = {"Authorization": f"Bearer {orch.token}"}

        def execute_body(plugins: list[str]) -> bytes:
            return json.dumps({"input": {"text": TEXT}, "plugins": plugins}).encode()

        single_body = execute_body([target])

        def direct_sync() -> httpx.Client:
            ep = endpoints[target]
            return httpx.Client(base_url=base_url_for(ep), transport=transport_for(ep), timeout=30)

        def broker_sync() -> httpx.Client:
            return httpx.Client(base_url=orch.url, headers=auth, timeout=30)

        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)

        def direct_async() -> httpx.AsyncClient:
            ep = endpoints[target]
            return httpx.AsyncClient(
                base_url=base_url_for(ep),
                transport=httpx.AsyncHTTPTransport(
                    uds=str(ep.path) if isinstance(ep, UnixEndpoint) else None,
                    retries=0,
                    verify=False,
                    limits=limits,
                ),
                timeout=30,
            )

        def broker_async() -> httpx.AsyncClient:
            return httpx.AsyncClient(base_url=orch.url, headers=auth, timeout=30, limits=limits)

        with direct_sync() as dc, broker_sync() as bc:
            rows += run_sequential(
                [
                    Load(
                        "direct   sequential",
                        lambda: check_direct(
                            dc.post(direct_url, content=DIRECT_BODY, headers=JSON_HEADERS)
                        ),
                        one,
                    ),
                    Load(
                        "brokered sequential",
                        lambda: check_execute(
                            bc.post(execute_url, content=single_body, headers=JSON_HEADERS), 1
                        ),
                        one,
                    ),
                ],
                args.seconds,
                args.warmup,
            )

        async def direct_send(c: httpx.AsyncClient) -> str | None:
            return check_direct(await c.post(direct_url, content=DIRECT_BODY, headers=JSON_HEADERS))

        async def broker_send(c: httpx.AsyncClient) -> str | None:
            r = await c.post(execute_url, content=single_body, headers=JSON_HEADERS)
            return check_execute(r, 1)

        rows += run_concurrent(
            [
                ConcurrentLoad(f"direct   c{CONCURRENCY}", direct_async, direct_send, one),
                ConcurrentLoad(f"brokered c{CONCURRENCY}", broker_async, broker_send, one),
            ],
            args.seconds,
            args.warmup,
        )

        with broker_sync() as c:

            def fan_send(n: int) -> Callable[[], str | None]:
                body = execute_body(ids[:n])
                return lambda: check_execute(
                    c.post(execute_url, content=body, headers=JSON_HEADERS), n
                )

            loads = [
                Load(
                    f"fan-out all x{n} sequential",
                    fan_send(n),
                    CpuMeter(orch.pid, [pids[p] for p in ids[:n]]),
                )
                for n in fanout
            ]
            for n, series in zip(
                fanout, run_sequential(loads, args.seconds, args.warmup), strict=True
            ):
                fan[n] = series
                rows.append(series)
    except KeyboardInterrupt:
        print("\ninterrupted; cleaning up", file=sys.stderr)
        return 130
    finally:
        clean_up_run(dk, orch, installed, root, instance)

    report(rows, fan, args, (wakeup_before, wakeup_round_trip_us()))
    return 0


def report(
    rows: list[Series],
    fan: dict[int, Series],
    args: argparse.Namespace,
    wakeup_us: tuple[float, float],
) -> None:
    by = {s.name.split()[0] + " " + s.name.split()[-1]: s for s in rows}
    ds, bs = by["direct sequential"], by["brokered sequential"]
    dc, bc = by[f"direct c{CONCURRENCY}"], by[f"brokered c{CONCURRENCY}"]
    for line in table(rows):
        print(line)
    errors = sum(s.errors for s in rows)
    if errors:
        first = next(s for s in rows if s.errors)
        print(f"warning: {errors} failed calls (not in the figures); first: {first.first_error}")
    added = bs.p(50) - ds.p(50)
    added_c = bc.p(50) - dc.p(50)
    share = bc.rps / dc.rps if dc.rps else float("nan")
    lo, hi = min(fan), max(fan)
    fan_ratio = fan[hi].p(50) / fan[lo].p(50)
    print()
    print(
        f"added p50 latency, sequential: {added:+.2f} ms ({verdict(added <= 1.0)} target <= 1 ms)"
    )
    print(f"added p50 latency, c{CONCURRENCY}:        {added_c:+.2f} ms (no target)")
    print(
        f"brokered/direct throughput, c{CONCURRENCY}: {share:.0%} "
        f"({verdict(share >= 0.6)} target >= 60%)"
    )
    print(
        f"fan-out p50 x{hi}/x{lo}: {fan_ratio:.2f} "
        + (f"({verdict(fan_ratio <= 2.0)} target <= 2x)" if (lo, hi) == (1, 20) else "")
    )
    for line in cpu_floor(fan, lo, hi):
        print(line)
    print(
        f"note: the load generator shares the {nproc()} CPUs with the orchestrator and the "
        "plugins; CPU ms/call is per call of the series (for fan-out: all its providers together)"
    )
    print(
        "machine: process wake-up round trip (pipe ping-pong, p50) "
        f"{wakeup_us[0]:.0f} us before, {wakeup_us[1]:.0f} us after; every figure above "
        "scales with it"
    )
    print()
    print(
        f"Broker ({nproc()} CPUs, load generator on the same machine, word-count "
        f"({handler_kind(args)} handler) with a "
        f"{len(TEXT)}-byte text, {args.seconds:g} s per series): sequential p50 "
        f"{ds.p(50):.2f} ms direct vs {bs.p(50):.2f} ms brokered, {added:+.2f} ms added "
        f"(target <= 1 ms); at concurrency {CONCURRENCY} direct {dc.rps:.0f} req/s "
        f"(p50 {dc.p(50):.1f} / p99 {dc.p(99):.1f} ms) vs brokered {bc.rps:.0f} req/s "
        f"(p50 {bc.p(50):.1f} / p99 {bc.p(99):.1f} ms), {share:.0%} of direct (target >= 60%); "
        f"fan-out `all` p50 "
        + ", ".join(f"{fan[n].p(50):.1f} ms over {n}" for n in sorted(fan))
        + f", x{hi}/x{lo} = {fan_ratio:.2f} (target <= 2x); process wake-up round trip "
        f"{wakeup_us[0]:.0f}-{wakeup_us[1]:.0f} us."
    )


if __name__ == "__main__":
    sys.exit(main())
