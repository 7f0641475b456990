"""The call profile: per plugin, where the time of its recent successful calls went.

Phases of one call: ``slot`` (the broker's admission: breaker, rate limit, concurrency; then
waiting for one of the plugin's connections), ``connect`` (0 on a kept-alive connection),
``plugin`` (from the request's last byte to the answer's first: the plugin's own time), and
``check`` (reading the rest of the answer, decoding it within the JSON limits and checking it
against the output schema). The last ``KEEP`` calls of each plugin are kept in this replica's
memory (a ring of doubles per plugin; no histogram buckets to blur the tail), and
percentiles are computed when asked. Recorded and read on the event loop only (no lock).
"""

from __future__ import annotations

from array import array
from typing import Any

__all__ = ["PHASES", "CallProfile"]

PHASES = ("slot", "connect", "plugin", "check")
WIDTH = len(PHASES)
KEEP = 2048


class _Ring:
    """The last ``keep`` calls' phases in one flat array of doubles: no object allocated per
    call, and nothing the garbage collector has to walk."""

    __slots__ = ("count", "keep", "values")

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self.count = 0
        self.values = array("d", bytes(8 * WIDTH * keep))

    def add(self, slot: float, connect: float, plugin: float, check: float) -> None:
        at = (self.count % self.keep) * WIDTH
        values = self.values
        values[at] = slot
        values[at + 1] = connect
        values[at + 2] = plugin
        values[at + 3] = check
        self.count += 1

    def column(self, i: int) -> list[float]:
        return list(self.values[i : WIDTH * min(self.count, self.keep) : WIDTH])


class CallProfile:
    def __init__(self, keep: int = KEEP) -> None:
        self.keep = keep
        self._rings: dict[str, _Ring] = {}

    def record(
        self, plugin_id: str, slot: float, connect: float, plugin: float, check: float
    ) -> None:
        """One successful call's phases, in seconds."""
        ring = self._rings.get(plugin_id)
        if ring is None:
            ring = self._rings[plugin_id] = _Ring(self.keep)
        ring.add(slot, connect, plugin, check)

    def forget(self, plugin_id: str) -> None:
        self._rings.pop(plugin_id, None)

    def summary(self, plugin_id: str) -> dict[str, Any]:
        """Calls counted and, per phase, p50/p90/p99/max and the mean, in milliseconds."""
        ring = self._rings.get(plugin_id)
        columns = [ring.column(i) if ring else [] for i in range(WIDTH)]
        phases = {
            name: _stats(sorted(v * 1000 for v in columns[i])) for i, name in enumerate(PHASES)
        }
        total = sorted(sum(call) * 1000 for call in zip(*columns, strict=True))
        return {
            "calls": len(columns[0]),
            "kept": self.keep,
            "phases": phases,
            "total": _stats(total),
        }


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
