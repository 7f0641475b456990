"""Plugins' resource usage over time, in the database, at three resolutions.

Samples land in the finest tier; :meth:`UsageSeries.maintain` rolls closed buckets of each
tier into the next coarser one and prunes each tier past its retention:

=========  ==========  =====================
tier       point every kept
=========  ==========  =====================
fine       10 s        1 hour
minute     1 min       1 day
hour       1 h         30 days
=========  ==========  =====================

How a bucket combines its points depends on the field: memory is the mean weighted by
samples (and ``memory_max_bytes`` the highest), pids the highest, counters used within a
bucket (CPU time, periods, I/O, network, calls, failed calls, calls' time) add up, and running
totals, limits and storage take the last value. Rolling up is driven by a watermark read from
the database (the newest bucket of the coarser tier), so it survives restarts and a change of
supervisor, and a rerun over the same range writes the same rows again.

A query (:meth:`UsageSeries.series`) reads the tier whose step fits the asked step and whose
retention still covers the asked start, then the finer tiers for the recent part that has not
been rolled up yet, and re-buckets the whole to the asked step; :meth:`UsageSeries.fleet`
does the same for every plugin at once (one query per tier). Raw units throughout: bytes,
microseconds, counts; the API converts.
"""

from __future__ import annotations

import itertools
import math
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from orchestrator.store import usage as store
from orchestrator.store.db import Engine, session_scope

__all__ = [
    "COUNTER_FIELDS",
    "FIELDS",
    "LAST_FIELDS",
    "MAX_FIELDS",
    "MAX_FLEET_POINTS",
    "MAX_POINTS",
    "TIERS",
    "Tier",
    "UsageSeries",
    "choose_tier",
    "merge_points",
]

Point = dict[str, Any]


@dataclass(frozen=True)
class Tier:
    step_s: int
    keep_s: int


FINE = Tier(step_s=10, keep_s=3600)
MINUTE = Tier(step_s=60, keep_s=24 * 3600)
HOUR = Tier(step_s=3600, keep_s=30 * 24 * 3600)
TIERS: tuple[Tier, ...] = (FINE, MINUTE, HOUR)

# The most points one query answers; a finer step over a longer range is refused.
MAX_POINTS = 5000
# The most points a query over every plugin answers, all plugins together (about 10 MB of JSON).
MAX_FLEET_POINTS = 20_000

MEAN_FIELDS = ("memory_bytes",)
MAX_FIELDS = ("memory_max_bytes", "pids")
COUNTER_FIELDS = (
    "cpu_usec",
    "cpu_periods",
    "cpu_throttled_periods",
    "io_read_bytes",
    "io_write_bytes",
    "network_bytes",
    "calls",
    "errors",
    "call_usec",
)
LAST_FIELDS = (
    "memory_limit_bytes",
    "cpu_total_usec",
    "network_total_bytes",
    "storage_bytes",
    "calls_total",
    "errors_total",
    "call_usec_total",
)
FIELDS = MEAN_FIELDS + MAX_FIELDS + COUNTER_FIELDS + LAST_FIELDS


def bucket_of(t: float, step_s: int) -> int:
    return int(t // step_s) * step_s


def merge_points(points: Sequence[Point], *, plugin_id: str, step_s: int, at: int) -> Point:
    """One point for the bucket ``at`` of ``step_s`` from ``points`` (oldest first)."""
    out: Point = {"plugin_id": plugin_id, "step_s": step_s, "at": at}
    out["samples"] = sum(int(p.get("samples") or 1) for p in points)
    for name in MEAN_FIELDS:
        weighted = [
            (p[name], int(p.get("samples") or 1)) for p in points if p.get(name) is not None
        ]
        weight = sum(w for _, w in weighted)
        out[name] = round(sum(v * w for v, w in weighted) / weight) if weight else None
    for name in MAX_FIELDS:
        values = [p[name] for p in points if p.get(name) is not None]
        out[name] = max(values) if values else None
    for name in COUNTER_FIELDS:
        values = [p[name] for p in points if p.get(name) is not None]
        out[name] = sum(values) if values else None
    for name in LAST_FIELDS:
        out[name] = next((p[name] for p in reversed(points) if p.get(name) is not None), None)
    return out


def rebucket(points: Iterable[Point], step_s: int) -> list[Point]:
    """Points of one plugin (oldest first) combined into buckets of ``step_s``."""
    groups: dict[tuple[str, int], list[Point]] = defaultdict(list)
    for p in points:
        groups[(p["plugin_id"], bucket_of(p["at"], step_s))].append(p)
    return [
        merge_points(ps, plugin_id=plugin_id, step_s=step_s, at=at)
        for (plugin_id, at), ps in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1]))
    ]


def choose_tier(*, since: float, step_s: int, now: float) -> Tier:
    """The coarsest tier not coarser than ``step_s`` whose retention covers ``since``; the
    finest that covers it when all are coarser; the coarsest when none covers it."""
    covering = [t for t in TIERS if since >= now - t.keep_s] or [TIERS[-1]]
    fitting = [t for t in covering if t.step_s <= step_s]
    return max(fitting, key=lambda t: t.step_s) if fitting else covering[0]


class UsageSeries:
    """The usage series in the database. ``clock`` gives unix seconds (tests pass a fake)."""

    def __init__(self, engine: Engine, *, clock: Callable[[], float] = time.time) -> None:
        self.engine = engine
        self.clock = clock

    # -- writing -------------------------------------------------------------------------------

    def record(self, points: Sequence[Point], *, at: float | None = None) -> None:
        """Store one sample per plugin (a point of the finest tier without ``step_s``/``at``)
        at ``at`` (default now); a sample in a bucket that has one already merges into it."""
        if not points:
            return
        bucket = bucket_of(self.clock() if at is None else at, FINE.step_s)
        with session_scope(self.engine) as session:
            existing = {
                p["plugin_id"]: p
                for p in store.load_points(
                    session,
                    step_s=FINE.step_s,
                    at=bucket,
                    plugin_ids=[p["plugin_id"] for p in points],
                )
            }
            rows = []
            for point in points:
                new = {**point, "samples": 1, "step_s": FINE.step_s, "at": bucket}
                new.setdefault("memory_max_bytes", new.get("memory_bytes"))
                old = existing.get(point["plugin_id"])
                parts = [old, new] if old is not None else [new]
                rows.append(
                    merge_points(parts, plugin_id=point["plugin_id"], step_s=FINE.step_s, at=bucket)
                )
            store.save_points(session, points=rows)

    def rollup(self, *, now: float | None = None) -> int:
        """Roll every closed bucket of each coarser tier from the tier below it; how many
        points were written."""
        now = self.clock() if now is None else now
        written = 0
        for source, target in itertools.pairwise(TIERS):
            closed_end = bucket_of(now, target.step_s)
            with session_scope(self.engine) as session:
                newest = store.latest_tier_time(session, step_s=target.step_s)
                start = newest + target.step_s if newest is not None else 0
                start = max(start, bucket_of(now - source.keep_s, target.step_s))
                if start >= closed_end:
                    continue
                points = store.points_between(
                    session, step_s=source.step_s, start=start, end=closed_end
                )
                rolled = rebucket(points, target.step_s)
                store.save_points(session, points=rolled)
                written += len(rolled)
        return written

    def prune(self, *, now: float | None = None) -> int:
        """Delete each tier's points past its retention; how many went."""
        now = self.clock() if now is None else now
        removed = 0
        with session_scope(self.engine) as session:
            for tier in TIERS:
                removed += store.prune_points(
                    session, step_s=tier.step_s, before=bucket_of(now - tier.keep_s, tier.step_s)
                )
        return removed

    def maintain(self, *, now: float | None = None) -> tuple[int, int]:
        """Roll up, then prune (in that order, so nothing is pruned before it is rolled)."""
        now = self.clock() if now is None else now
        return self.rollup(now=now), self.prune(now=now)

    def forget(self, plugin_id: str) -> None:
        with session_scope(self.engine) as session:
            store.delete_usage(session, plugin_id=plugin_id)

    # -- reading -------------------------------------------------------------------------------

    def series(
        self, plugin_id: str, *, since: float, until: float, step_s: int
    ) -> tuple[int, list[Point]]:
        """The plugin's points in ``[since, until)`` at ``step_s`` or the nearest step the
        stored tiers allow; returns that step and the points, oldest first."""
        return self._read(since=since, until=until, step_s=step_s, plugin_id=plugin_id)

    def fleet(
        self, *, since: float, until: float, step_s: int
    ) -> tuple[int, dict[str, list[Point]]]:
        """:meth:`series` of every plugin with points in the range, read together (one query
        per tier); returns the step and each plugin's points, oldest first."""
        step, points = self._read(since=since, until=until, step_s=step_s, plugin_id=None)
        out: dict[str, list[Point]] = {}
        for point in points:
            out.setdefault(point["plugin_id"], []).append(point)
        return step, out

    def plugins_between(self, *, since: float, until: float) -> list[str]:
        """Plugins with a point of any tier in ``[since, until)`` (what a fleet query over
        that range answers at most, to bound it before reading)."""
        with session_scope(self.engine) as session:
            return store.plugins_between(
                session, step_s=[t.step_s for t in TIERS], start=int(since), end=math.ceil(until)
            )

    def _read(
        self, *, since: float, until: float, step_s: int, plugin_id: str | None
    ) -> tuple[int, list[Point]]:
        now = self.clock()
        tier = choose_tier(since=since, step_s=step_s, now=now)
        step = max(step_s, tier.step_s)
        # A bucket that starts before ``until`` is in the range: a sample taken this very
        # second is, too (rounding ``until`` down left it out until the next second).
        start, end = bucket_of(since, step), math.ceil(until)
        points: list[Point] = []
        with session_scope(self.engine) as session:
            covered = start
            # The chosen tier, then the finer ones for what is not rolled up into it yet. The
            # rollup moves every plugin up to one watermark, so where a coarser tier ends is
            # where the finer one takes over for all plugins alike.
            for t in reversed(TIERS[: TIERS.index(tier) + 1]):
                part = store.points_between(
                    session, step_s=t.step_s, start=covered, end=end, plugin_id=plugin_id
                )
                if part:
                    points.extend(part)
                    covered = max(covered, max(p["at"] for p in part) + t.step_s)
        return step, rebucket(points, step)

    def current(self, plugin_ids: Sequence[str] | None = None) -> dict[str, Point]:
        """The newest sample of each plugin (of ``plugin_ids``, or of all)."""
        with session_scope(self.engine) as session:
            return store.latest_points(session, step_s=FINE.step_s, plugin_ids=plugin_ids)

    def sum_since(self, plugin_id: str, name: str, *, since: float) -> int:
        """What a counter field added up to since ``since`` (for a daily budget)."""
        _, points = self.series(plugin_id, since=since, until=self.clock() + 1, step_s=FINE.step_s)
        return sum(int(p.get(name) or 0) for p in points)
