"""The catalog's dependency solver (``orchestrator/catalog/solver.py``) on a generated catalog.

Builds a seeded catalog (same seed, same catalog) of 200 plugins: plugin ``i`` depends on
plugins a little further down the list, so dependency chains run deep (66 plugins for the
default seed); each plugin has 5-20 versions released over time (mostly patch and minor bumps,
one in ten a major), and each version depends on 2-5 others with a caret range on the newest
version of each released before it, or now and then an older one. Dependents released on either
side of a major bump disagree, so most of the newest versions cannot go together and the solver
has to find older ones: a harder catalog than a healthy one. Then it times ``resolve``:

- **install the top-level plugins** (those nothing depends on), requested with ``*``;
- **upgrade all installed**: what that install chose from the catalog as it was earlier (at
  t=300 of 1000) is installed, and every installed plugin is requested with ``*``;
- **one deep plugin at its oldest**: the install plus an exact request for the oldest version
  of a plugin halfway down, which sends the search back through the plugins above it;
- **three deep ones at their oldest**: the same for three plugins, which no set satisfies:
  the search has to prove it (or stop at its step bound) and explain;
- **a range nothing matches**: refused before any search.

Prints, per series, the first run (before the solver's range caches know the catalog), then
p50/p99/min/max (ms) over the runs after it, the p50 of this process's CPU time (steadier on a
busy machine), and the outcome; then a one-line summary. Nothing is asserted.
``solver_figures()`` returns the lines, for another benchmark to print them too.

    .venv/bin/python bench/catalog_solver.py [--runs 20] [--plugins 200] [--seed 7]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from orchestrator.catalog.solver import (  # noqa: E402
    PluginVersion,
    ResolutionError,
    resolve,
)
from orchestrator.domain.versions import Version  # noqa: E402


@dataclass
class Catalog:
    versions: dict[str, list[PluginVersion]]
    top_level: list[str]
    released: dict[tuple[str, Version], float]

    def as_of(self, when: float) -> Catalog:
        """The catalog as it was at ``when``: the versions released by then."""
        versions = {
            p: [r for r in records if self.released[p, r.version] <= when]
            for p, records in self.versions.items()
        }
        return Catalog(versions, self.top_level, self.released)

    def source(self, plugin_id: str) -> list[PluginVersion]:
        return self.versions.get(plugin_id, [])

    @property
    def version_count(self) -> int:
        return sum(len(v) for v in self.versions.values())


def plugin_name(i: int) -> str:
    return f"com.bench.p{i:03d}"


def make_catalog(plugins: int = 200, seed: int = 7) -> Catalog:
    """A deterministic catalog of ``plugins`` plugins (see the module docstring)."""
    rng = random.Random(seed)
    history: dict[int, list[tuple[float, Version]]] = {}
    # Release histories first, from the bottom of the list up, so every range points at a
    # version that exists.
    for i in range(plugins):
        count = rng.randint(5, 20)
        times = sorted(rng.uniform(0, 1000) for _ in range(count))
        times[0] = min(times[0], 50.0)  # every plugin has a release early on
        major, minor, patch = 1, 0, 0
        releases = []
        for t in times:
            releases.append((t, Version(major, minor, patch)))
            roll = rng.random()
            if roll < 0.1:
                major, minor, patch = major + 1, 0, 0
            elif roll < 0.4:
                minor, patch = minor + 1, 0
            else:
                patch += 1
        history[i] = releases

    versions: dict[str, list[PluginVersion]] = {}
    released = {(plugin_name(i), v): t for i, h in history.items() for t, v in h}
    depended: set[int] = set()
    for i in range(plugins):
        window = list(range(i + 1, min(plugins, i + 16)))
        base = rng.sample(window, min(len(window), rng.randint(2, 5)))
        records = []
        for t, version in history[i]:
            deps = list(base)
            if window and rng.random() < 0.15:  # a later version picks up another dependency
                extra = rng.choice(window)
                if extra not in deps:
                    deps.append(extra)
            ranges = {}
            for j in deps:
                out = [v for tj, v in history[j] if tj <= t] or [history[j][0][1]]
                target = out[-1] if rng.random() > 0.1 else rng.choice(out)
                ranges[plugin_name(j)] = f"^{target.major}.{target.minor}"
                depended.add(j)
            records.append(PluginVersion(version, ranges))
        versions[plugin_name(i)] = records
    top = [plugin_name(i) for i in range(plugins) if i not in depended]
    return Catalog(versions, top, released)


def installed_earlier(catalog: Catalog, when: float = 300.0) -> dict[str, PluginVersion]:
    """What an install of the top-level plugins from the catalog as of ``when`` chose, as an
    installed set (empty when that earlier catalog has no consistent set either)."""
    earlier = catalog.as_of(when)
    try:
        res = resolve([(p, "*") for p in catalog.top_level], source=earlier.source)
    except ResolutionError:
        return {}
    return {
        p: next(r for r in earlier.versions[p] if r.version == picked.version)
        for p, picked in res.plugins.items()
    }


def percentile(values: Sequence[float], q: float) -> float:
    data = sorted(values)
    pos = (len(data) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


@dataclass
class Series:
    name: str
    first_ms: float  # the first run, before the solver's range caches know this catalog
    times_ms: list[float]
    cpu_ms: list[float]  # this process's CPU time per run: steadier than wall time on a busy host
    outcome: str


def timed(name: str, runs: int, solve: Callable[[], str]) -> Series:
    start = time.perf_counter()
    solve()
    first = (time.perf_counter() - start) * 1000
    times, cpu, outcome = [], [], ""
    for _ in range(runs):
        start, start_cpu = time.perf_counter(), time.process_time()
        outcome = solve()
        times.append((time.perf_counter() - start) * 1000)
        cpu.append((time.process_time() - start_cpu) * 1000)
    return Series(name, first, times, cpu, outcome)


def run_series(catalog: Catalog, runs: int) -> list[Series]:
    requests = [(p, "*") for p in catalog.top_level]
    count = len(catalog.versions)

    def oldest(i: int) -> tuple[str, str]:
        plugin_id = plugin_name(i)
        return plugin_id, f"={min(r.version for r in catalog.versions[plugin_id])}"

    def solving(
        reqs: list[tuple[str, str]],
        installed: dict[str, PluginVersion] | None = None,
        upgrade: bool = False,
    ) -> Callable[[], str]:
        def solve() -> str:
            try:
                res = resolve(
                    reqs, source=catalog.source, installed=installed, allow_upgrade=upgrade
                )
            except ResolutionError as exc:
                return f"{exc.code} ({len(exc.details or [])} items)"
            return f"{len(res.plugins)} plugins, {len(res.changes)} changes"

        return solve

    # First, so that its first run is a cold one.
    install = timed("install the top-level plugins", runs, solving(requests))
    installed = installed_earlier(catalog)
    return [
        install,
        # What the top-level install chose from the catalog as it was at t=300 is installed;
        # upgrade every installed plugin to the newest that fits now.
        timed(
            f"upgrade all {len(installed)} installed",
            runs,
            solving([(p, "*") for p in installed], installed),
        ),
        # The oldest version of a plugin halfway down: older versions above it must be found.
        timed(
            "install, one deep plugin at its oldest", runs, solving([*requests, oldest(count // 2)])
        ),
        # Three deep plugins at their oldest: for the seeded catalog, no set fits.
        timed(
            "install, three deep ones at their oldest",
            runs,
            solving([*requests, *(oldest(count * k // 10) for k in (3, 6, 9))]),
        ),
        # A range nothing matches: refused before any search.
        timed(
            "install, a range nothing matches",
            runs,
            solving([*requests, (plugin_name(count - 1), "<1.0.0 || >=99")]),
        ),
    ]


def solver_figures(runs: int = 20, plugins: int = 200, seed: int = 7) -> list[str]:
    """The benchmark's lines, for this script or another one to print."""
    catalog = make_catalog(plugins, seed)
    lines = [
        f"catalog: {plugins} plugins, {catalog.version_count} versions, "
        f"{len(catalog.top_level)} top-level, seed {seed}; {runs} runs per series (ms)",
        f"{'series':<42}{'first':>8}{'p50':>8}{'p99':>8}{'min':>8}{'max':>8}{'cpu p50':>9}"
        "  outcome",
    ]
    series = run_series(catalog, runs)
    for s in series:
        row = [
            s.first_ms,
            percentile(s.times_ms, 50),
            percentile(s.times_ms, 99),
            min(s.times_ms),
            max(s.times_ms),
        ]
        cpu = f"{percentile(s.cpu_ms, 50):9.1f}"
        cells = "".join(f"{v:8.1f}" for v in row)
        lines.append(f"{s.name:<42}{cells}{cpu}  {s.outcome}")
    install = series[0]
    worst = max(percentile(s.times_ms, 99) for s in series)
    lines.append(
        f"summary: resolving {plugins} plugins takes {percentile(install.times_ms, 50):.1f} ms "
        f"(p50; {percentile(install.cpu_ms, 50):.1f} ms of CPU); the slowest series' p99 is "
        f"{worst:.1f} ms"
    )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--plugins", type=int, default=200)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    for line in solver_figures(args.runs, args.plugins, args.seed):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
