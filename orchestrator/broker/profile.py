"""The call profile: per plugin, where the time of its recent successful calls went.

Phases of one call: ``slot`` (the broker's admission: breaker, rate limit, concurrency; then
waiting for one of the plugin's connections), ``connect`` (0 on a kept-alive connection),
``plugin`` (from the request's last byte to the answer's first: the plugin's own time), and
``check`` (reading the rest of the answer, decoding it within the JSON limits and checking it
against the output schema). The last ``KEEP`` calls of each plugin are kept in this replica's
memory (a ring per plugin, a few tuples per call; no histogram buckets to blur the tail), and
percentiles are computed when asked. Recorded and read on the event loop only (no lock).
"""

from __future__ import annotations

from collections import deque
from typing import Any

__all__ = ["PHASES", "CallProfile"]

PHASES = ("slot", "connect", "plugin", "check")
KEEP = 2048


class CallProfile:
    def __init__(self, keep: int = KEEP) -> None:
        self.keep = keep
        self._calls: dict[str, deque[tuple[float, float, float, float]]] = {}

    def record(
        self, plugin_id: str, slot: float, connect: float, plugin: float, check: float
    ) -> None:
        """One successful call's phases, in seconds (called on the event loop)."""
        ring = self._calls.get(plugin_id)
        if ring is None:
            ring = self._calls.setdefault(plugin_id, deque(maxlen=self.keep))
        ring.append((slot, connect, plugin, check))

    def forget(self, plugin_id: str) -> None:
        self._calls.pop(plugin_id, None)

    def summary(self, plugin_id: str) -> dict[str, Any]:
        """Calls counted and, per phase, p50/p90/p99/max and the mean, in milliseconds."""
        calls = list(self._calls.get(plugin_id, ()))
        phases: dict[str, Any] = {}
        for i, name in enumerate(PHASES):
            values = sorted(c[i] * 1000 for c in calls)
            phases[name] = _stats(values)
        total = sorted(sum(c) * 1000 for c in calls)
        return {"calls": len(calls), "kept": self.keep, "phases": phases, "total": _stats(total)}


def _stats(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p90": None, "p99": None, "max": None, "mean": None}
    return {
        "p50": round(_percentile(values, 50), 3),
        "p90": round(_percentile(values, 90), 3),
        "p99": round(_percentile(values, 99), 3),
        "max": round(values[-1], 3),
        "mean": round(sum(values) / len(values), 3),
    }


def _percentile(ordered: list[float], q: float) -> float:
    """Linear interpolation between closest ranks of an ordered list."""
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)
