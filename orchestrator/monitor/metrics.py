"""Prometheus metrics of one orchestrator. Each app owns its registry (tests run several)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

BREAKER_VALUES = {"closed": 0, "half_open": 1, "open": 2}
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class _Callback(Collector):
    def __init__(self, name: str, doc: str, read: Callable[[], float | None]) -> None:
        self.name, self.doc, self.read = name, doc, read

    def collect(self) -> Iterable[Metric]:
        value = self.read()
        if value is not None:
            yield GaugeMetricFamily(self.name, self.doc, value=value)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.calls = Counter(
            "summit_extension_calls",
            "Extension calls brokered to plugins, by outcome (ok or an error code).",
            ["plugin", "point", "outcome"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "summit_extension_call_seconds",
            "Time of brokered extension calls, including retries.",
            ["plugin", "point"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.breaker = Gauge(
            "summit_breaker_state",
            "Circuit breaker per plugin: 0 closed, 1 half-open, 2 open.",
            ["plugin"],
            registry=self.registry,
        )
        self.refused = Counter(
            "summit_calls_refused",
            "Calls refused before reaching the plugin, by reason.",
            ["plugin", "reason"],
            registry=self.registry,
        )
        self.retries = Counter(
            "summit_extension_retries",
            "Retried attempts of idempotent extension calls.",
            ["plugin", "point"],
            registry=self.registry,
        )

        # Labelled children looked up once: ``labels()`` validates and locks on every call,
        # which the broker's hot path would pay three times per call.
        self._call_children: dict[tuple[str, str, str], tuple[Any, Any]] = {}
        self._breaker_values: dict[str, tuple[Any, int]] = {}

    def observe_call(self, plugin: str, point: str, outcome: str, seconds: float) -> None:
        """Count one brokered call and its time."""
        key = (plugin, point, outcome)
        children = self._call_children.get(key)
        if children is None:
            children = self._call_children[key] = (
                self.calls.labels(plugin, point, outcome),
                self.latency.labels(plugin, point),
            )
        children[0].inc()
        children[1].observe(seconds)

    def set_breaker(self, plugin: str, value: int) -> None:
        """The breaker gauge of ``plugin``; written only when the value changes."""
        known = self._breaker_values.get(plugin)
        if known is not None and known[1] == value:
            return
        child = known[0] if known is not None else self.breaker.labels(plugin)
        child.set(value)
        self._breaker_values[plugin] = (child, value)

    def gauge_from(self, name: str, doc: str, read: Callable[[], float | None]) -> None:
        """Expose a value read at scrape time (e.g. the job queue's depth)."""
        self.registry.register(_Callback(name, doc, read))
