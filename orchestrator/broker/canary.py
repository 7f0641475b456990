"""A canary: a candidate version of a plugin running beside its current one and taking a share
of the plugin's calls, with each version's calls, errors and latency since the canary started.

The broker decides per call (``Broker.call``): a uniform draw below the canary's share sends
the call to the candidate, provided the candidate has the same extension and its input schema
takes the input; otherwise the call goes to the current version. Fan-out sees the plugin as one
provider (``RoutingTable.providers`` lists current routes only), so each of its calls is drawn
the same way. Events are delivered to the current version only: a subscriber sees each once.

The statistics are this replica's (its calls), kept on the event loop thread that makes the
calls; readers on other threads copy before they iterate. Latencies go into a histogram of
buckets 5% wide, so p50 and p99 since the start cost a few hundred integers, not every call's
time.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from orchestrator.broker.routes import Route
from orchestrator.domain.manifest import Extension

__all__ = ["Canary", "CanaryCollector", "CanaryStats", "VersionStats"]

_STEP = math.log(1.05)  # bucket width: 5%, so a quantile is within 2.5% of the truth
_FLOOR_S = 1e-5  # times under 10 us share the first bucket


class VersionStats:
    """Calls, errors and a latency histogram of one version (event loop thread)."""

    __slots__ = ("buckets", "calls", "errors")

    def __init__(self) -> None:
        self.calls = 0
        self.errors = 0
        self.buckets: dict[int, int] = {}

    def add(self, seconds: float, *, failed: bool) -> None:
        self.calls += 1
        if failed:
            self.errors += 1
        index = int(math.log(max(seconds, _FLOOR_S) / _FLOOR_S) / _STEP)
        self.buckets[index] = self.buckets.get(index, 0) + 1

    def quantile(self, q: float) -> float | None:
        """The ``q`` quantile of the call times in seconds (the bucket's middle); None before
        any call."""
        # A copy: the loop thread may add a bucket while another thread reads.
        counts = sorted(dict(self.buckets).items())
        total = sum(n for _, n in counts)
        if total == 0:
            return None
        rank = q * total
        seen = 0
        for index, n in counts:
            seen += n
            if seen >= rank:
                return _FLOOR_S * math.exp((index + 0.5) * _STEP)
        return _FLOOR_S * math.exp((counts[-1][0] + 0.5) * _STEP)

    def summary(self) -> dict[str, Any]:
        p50, p99 = self.quantile(0.5), self.quantile(0.99)
        return {
            "calls": self.calls,
            "errors": self.errors,
            "p50_ms": round(p50 * 1000, 3) if p50 is not None else None,
            "p99_ms": round(p99 * 1000, 3) if p99 is not None else None,
        }


@dataclass
class CanaryStats:
    """Both versions' statistics since the canary started here (a weight change keeps them)."""

    current: VersionStats = field(default_factory=VersionStats)
    candidate: VersionStats = field(default_factory=VersionStats)
    since: float = field(default_factory=time.time)


@dataclass(frozen=True)
class Canary:
    """The candidate's route and the share of calls it takes (``weight`` percent)."""

    route: Route
    weight: int
    stats: CanaryStats = field(default_factory=CanaryStats, compare=False)
    # (point, name) -> the candidate's extension, looked up on every call drawn for it.
    extensions: dict[tuple[str, str], Extension] = field(
        init=False, compare=False, repr=False, default_factory=dict
    )
    share: float = field(init=False, compare=False, repr=False, default=0.0)

    def __post_init__(self) -> None:
        if not 0 <= self.weight <= 100:
            raise ValueError(f"a canary's weight is a percentage, not {self.weight}")
        object.__setattr__(self, "share", self.weight / 100)
        self.extensions.update({(e.point.value, e.name): e for e in self.route.extensions})

    @property
    def plugin_id(self) -> str:
        return self.route.plugin_id

    def pick(self, ext: Extension, draw: float) -> Extension | None:
        """The candidate's extension for a call drawn ``draw`` (uniform in [0, 1)) to
        ``ext``; None: the call goes to the current version."""
        if draw >= self.share:
            return None
        return self.extensions.get((ext.point.value, ext.name))


class CanaryCollector(Collector):
    """Per-version figures of every running canary, read at scrape time:
    ``summit_canary_weight``, ``summit_canary_calls``, ``summit_canary_errors`` and
    ``summit_canary_call_seconds`` (p50 and p99), labelled by plugin, version and role
    (``current`` or ``candidate``)."""

    def __init__(self, canaries: dict[str, Canary], current_version: Any) -> None:
        self.canaries = canaries
        self.current_version = current_version  # plugin id -> its current version, or None

    def collect(self) -> Iterable[Metric]:
        weight = GaugeMetricFamily(
            "summit_canary_weight",
            "Percent of a plugin's calls sent to its candidate version.",
            labels=["plugin", "version"],
        )
        calls = CounterMetricFamily(
            "summit_canary_calls",
            "Calls to each version of a plugin with a canary, since the canary started.",
            labels=["plugin", "version", "role"],
        )
        errors = CounterMetricFamily(
            "summit_canary_errors",
            "Failed calls to each version of a plugin with a canary, since it started.",
            labels=["plugin", "version", "role"],
        )
        seconds = GaugeMetricFamily(
            "summit_canary_call_seconds",
            "Call time quantiles of each version of a plugin with a canary.",
            labels=["plugin", "version", "role", "quantile"],
        )
        for canary in list(self.canaries.values()):
            plugin = canary.plugin_id
            weight.add_metric([plugin, canary.route.version], canary.weight)
            sides = (
                ("current", self.current_version(plugin), canary.stats.current),
                ("candidate", canary.route.version, canary.stats.candidate),
            )
            for role, version, stats in sides:
                if version is None:
                    continue
                calls.add_metric([plugin, version, role], stats.calls)
                errors.add_metric([plugin, version, role], stats.errors)
                for q in (0.5, 0.99):
                    value = stats.quantile(q)
                    if value is not None:
                        seconds.add_metric([plugin, version, role, str(q)], value)
        yield from (weight, calls, errors, seconds)
