"""The Prometheus collector: series per installed plugin, gone once the plugin is."""

from __future__ import annotations

from typing import Any

from prometheus_client import generate_latest

from orchestrator.monitor.metrics import Metrics
from orchestrator.monitor.resources import STATES, ResourceCollector


def scrape(metrics: Metrics) -> str:
    return generate_latest(metrics.registry).decode()


def test_series_appear_and_disappear_with_plugins() -> None:
    states: dict[str, str] = {"a": "ACTIVE", "b": "PAUSED"}
    latest: dict[str, dict[str, Any]] = {
        "a": {
            "memory_bytes": 52428800,
            "cpu_total_usec": 2_500_000,
            "storage_bytes": 4096,
            "network_total_bytes": 777,
        },
        "b": {"memory_bytes": 1000, "cpu_total_usec": None, "storage_bytes": 0},
    }
    metrics = Metrics()
    ResourceCollector(states=lambda: states, latest=lambda: latest).register(metrics.registry)
    text = scrape(metrics)
    assert 'summit_plugin_memory_bytes{plugin="a"} 5.24288e+07' in text
    assert 'summit_plugin_cpu_seconds_total{plugin="a"} 2.5' in text
    assert 'summit_plugin_storage_bytes{plugin="a"} 4096.0' in text
    assert 'summit_plugin_network_bytes_total{plugin="a"} 777.0' in text
    assert "# TYPE summit_plugin_cpu_seconds_total counter" in text
    assert 'summit_plugin_state{plugin="b",state="PAUSED"} 1.0' in text
    assert 'summit_plugin_state{plugin="b",state="ACTIVE"} 0.0' in text
    assert 'summit_plugin_memory_bytes{plugin="b"} 1000.0' in text
    assert 'summit_plugin_cpu_seconds_total{plugin="b"}' not in text  # not available
    assert text.count('summit_plugin_state{plugin="a"') == len(STATES)

    # "a" is uninstalled and "b" disabled: a's series go, b keeps only what still holds.
    del states["a"], latest["a"]
    states["b"] = "LOADED"
    text = scrape(metrics)
    assert 'plugin="a"' not in text
    assert 'summit_plugin_memory_bytes{plugin="b"}' not in text
    assert 'summit_plugin_state{plugin="b",state="LOADED"} 1.0' in text


def test_a_failing_read_leaves_the_other_metrics_standing() -> None:
    def broken() -> dict[str, str]:
        raise RuntimeError("database away")

    metrics = Metrics()
    ResourceCollector(states=broken, latest=dict).register(metrics.registry)
    metrics.observe_call("a", "analyzer", "ok", 0.01)
    text = scrape(metrics)
    assert "summit_extension_calls_total" in text
    assert "summit_plugin_state{" not in text
