"""Per-plugin resource metrics for Prometheus, read from the newest samples at scrape time.

A Collector rather than labelled Gauges: it yields only the plugins installed at this scrape,
so a removed plugin's series are gone from the next scrape without anyone deleting label
children (the label sets stay bounded by the installed plugins). Samples come from the
database (``UsageSeries.current``), so every replica shows the same figures, whichever one
samples.

- ``summit_plugin_memory_bytes``: working set of a running plugin's container;
- ``summit_plugin_cpu_seconds_total``: CPU time a plugin has used, across its containers;
- ``summit_plugin_storage_bytes``: host API storage it holds;
- ``summit_plugin_network_bytes_total``: bytes it moved through the egress proxy;
- ``summit_plugin_state``: one series per plugin and state, 1 for its current state.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from orchestrator.domain.lifecycle import PluginState

__all__ = ["STATES", "ResourceCollector"]

log = logging.getLogger(__name__)

# Every value ``summit_plugin_state`` takes: the lifecycle's, and PAUSED (an idle plugin
# frozen in place).
STATES: tuple[str, ...] = (*(s.value for s in PluginState), "PAUSED")


class ResourceCollector(Collector):
    """``states()``: each installed plugin's state; ``latest()``: each plugin's newest point
    (``series`` fields, raw units); ``running``: the states in which a plugin has a container
    whose memory is worth showing."""

    def __init__(
        self,
        *,
        states: Callable[[], Mapping[str, str]],
        latest: Callable[[], Mapping[str, Mapping[str, Any]]],
        running: Iterable[str] = ("ACTIVE", "PAUSED"),
    ) -> None:
        self.states = states
        self.latest = latest
        self.running = frozenset(running)

    def register(self, registry: CollectorRegistry) -> ResourceCollector:
        registry.register(self)
        return self

    def describe(self) -> Iterable[Metric]:
        # Without describe, registering would collect once (two database reads) to learn
        # the names; the families are the same as collect's, without samples.
        return list(self._families())

    def _families(
        self,
    ) -> tuple[
        GaugeMetricFamily,
        CounterMetricFamily,
        GaugeMetricFamily,
        CounterMetricFamily,
        GaugeMetricFamily,
    ]:
        return (
            GaugeMetricFamily(
                "summit_plugin_memory_bytes",
                "Memory a running plugin's container uses (working set).",
                labels=["plugin"],
            ),
            CounterMetricFamily(
                "summit_plugin_cpu_seconds",
                "CPU time a plugin has used, across its containers.",
                labels=["plugin"],
            ),
            GaugeMetricFamily(
                "summit_plugin_storage_bytes",
                "Host API storage a plugin holds.",
                labels=["plugin"],
            ),
            CounterMetricFamily(
                "summit_plugin_network_bytes",
                "Bytes a plugin moved through the egress proxy.",
                labels=["plugin"],
            ),
            GaugeMetricFamily(
                "summit_plugin_state",
                "A plugin's lifecycle state: 1 for its current state, 0 for the others.",
                labels=["plugin", "state"],
            ),
        )

    def collect(self) -> Iterable[Metric]:
        try:
            states = dict(self.states())
            latest = dict(self.latest())
        except Exception:
            # A scrape must not fail because the database is away; the other metrics stand.
            log.warning("plugin resource metrics unavailable", exc_info=True)
            return
        memory, cpu, storage, network, state = self._families()
        for plugin_id in sorted(states):
            current = states[plugin_id]
            for value in STATES:
                state.add_metric([plugin_id, value], 1.0 if value == current else 0.0)
            point = latest.get(plugin_id)
            if point is None:
                continue
            if current in self.running and point.get("memory_bytes") is not None:
                memory.add_metric([plugin_id], float(point["memory_bytes"]))
            if point.get("cpu_total_usec") is not None:
                cpu.add_metric([plugin_id], point["cpu_total_usec"] / 1e6)
            if point.get("storage_bytes") is not None:
                storage.add_metric([plugin_id], float(point["storage_bytes"]))
            if point.get("network_total_bytes") is not None:
                network.add_metric([plugin_id], float(point["network_total_bytes"]))
        yield from (memory, cpu, storage, network, state)
