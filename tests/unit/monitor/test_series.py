"""The usage series in the database: downsampling, rollup, retention, restarts, queries."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.engine import Engine

from orchestrator.monitor.series import (
    FINE,
    HOUR,
    MINUTE,
    UsageSeries,
    choose_tier,
    merge_points,
)
from orchestrator.store import usage as store
from orchestrator.store.db import session_scope
from tests.unit.monitor.conftest import FakeClock

T0 = 1_700_002_800.0  # a whole hour
assert T0 % 3600 == 0


def sample(plugin: str = "p", **fields: Any) -> dict[str, Any]:
    return {"plugin_id": plugin, **fields}


def tier_points(engine: Engine, step_s: int, plugin: str = "p") -> list[dict[str, Any]]:
    with session_scope(engine) as session:
        return store.points_between(session, step_s=step_s, start=0, end=2**40, plugin_id=plugin)


def test_merge_rules_per_field() -> None:
    a = {
        "samples": 1,
        "memory_bytes": 100,
        "memory_max_bytes": 100,
        "cpu_usec": 5,
        "cpu_total_usec": 105,
        "pids": 3,
        "storage_bytes": 7,
        "calls": None,
    }
    b = {
        "samples": 3,
        "memory_bytes": 300,
        "memory_max_bytes": 400,
        "cpu_usec": 10,
        "cpu_total_usec": 115,
        "pids": 2,
        "storage_bytes": None,
        "calls": 4,
    }
    m = merge_points([a, b], plugin_id="p", step_s=60, at=0)
    assert m["samples"] == 4
    assert m["memory_bytes"] == 250  # mean weighted by samples: (100 + 3*300) / 4
    assert m["memory_max_bytes"] == 400
    assert m["cpu_usec"] == 15  # used within: adds up
    assert m["cpu_total_usec"] == 115  # running total: the last
    assert m["pids"] == 3
    assert m["storage_bytes"] == 7  # last known
    assert m["calls"] == 4
    assert m["network_bytes"] is None  # nobody knew: still not available


def test_samples_in_one_bucket_merge(engine: Engine) -> None:
    clock = FakeClock(T0)
    series = UsageSeries(engine, clock=clock)
    series.record([sample(memory_bytes=100, cpu_usec=1)], at=T0 + 1)
    series.record([sample(memory_bytes=300, cpu_usec=2)], at=T0 + 6)
    [point] = tier_points(engine, FINE.step_s)
    assert (point["at"], point["samples"]) == (T0, 2)
    assert (point["memory_bytes"], point["memory_max_bytes"], point["cpu_usec"]) == (200, 300, 3)


def test_a_sample_of_this_very_second_is_in_a_range_ending_now(engine: Engine) -> None:
    clock = FakeClock(T0 + 0.4)  # T0 starts a bucket
    series = UsageSeries(engine, clock=clock)
    series.record([sample(memory_bytes=100)])
    _, points = series.series("p", since=T0 - 60, until=clock(), step_s=FINE.step_s)
    assert [(p["at"], p["memory_bytes"]) for p in points] == [(T0, 100)]
    assert series.plugins_between(since=T0 - 60, until=clock()) == ["p"]


def fill(series: UsageSeries, start: float, seconds: int, plugin: str = "p") -> None:
    """One sample every 10 s: memory = 1000 + i, 10 ms of CPU each."""
    for i in range(seconds // 10):
        series.record(
            [
                sample(
                    plugin, memory_bytes=1000 + i, cpu_usec=10_000, cpu_total_usec=10_000 * (i + 1)
                )
            ],
            at=start + 10 * i,
        )


@pytest.mark.slow
def test_rollup_to_minutes_and_hours_then_retention(engine: Engine) -> None:
    clock = FakeClock(T0)
    series = UsageSeries(engine, clock=clock)
    # Two hours of 10 s samples, maintained every minute as the sampler does.
    for i in range(2 * 360):
        clock.now = T0 + 10 * i
        if i % 6 == 0:
            series.maintain()
        series.record(
            [sample(memory_bytes=1000 + i, cpu_usec=10_000, cpu_total_usec=10_000 * (i + 1))]
        )
    clock.now = T0 + 2 * 3600 + 5
    series.maintain()
    minutes = tier_points(engine, MINUTE.step_s)
    hours = tier_points(engine, HOUR.step_s)
    assert len(minutes) == 120 and [p["samples"] for p in minutes] == [6] * 120
    assert minutes[0]["cpu_usec"] == 60_000  # six 10 ms samples add up
    assert minutes[0]["memory_bytes"] == round(sum(1000 + i for i in range(6)) / 6)
    assert minutes[0]["memory_max_bytes"] == 1005
    assert minutes[-1]["cpu_total_usec"] == 10_000 * 720
    assert [p["at"] for p in hours] == [T0, T0 + 3600]
    assert [p["samples"] for p in hours] == [360, 360]
    assert hours[0]["cpu_usec"] == 360 * 10_000 and hours[0]["cpu_total_usec"] == 10_000 * 360
    # Fine points older than an hour are gone; minutes and hours stay.
    fine = tier_points(engine, FINE.step_s)
    assert len(fine) == 360 and min(p["at"] for p in fine) == T0 + 3600
    # A day later the minutes are gone too; 30 days later the hours.
    clock.advance(MINUTE.keep_s + 60)
    series.maintain()
    assert tier_points(engine, FINE.step_s) == [] and tier_points(engine, MINUTE.step_s) == []
    assert len(tier_points(engine, HOUR.step_s)) == 2
    clock.advance(HOUR.keep_s)
    series.maintain()
    assert tier_points(engine, HOUR.step_s) == []


def test_rollup_is_idempotent_and_survives_a_restart(engine: Engine) -> None:
    clock = FakeClock(T0)
    fill(UsageSeries(engine, clock=clock), T0, 300)
    clock.now = T0 + 300
    UsageSeries(engine, clock=clock).rollup()
    first = tier_points(engine, MINUTE.step_s)
    assert len(first) == 5
    # A new process (another supervisor) rolls from the stored watermark: nothing twice.
    again = UsageSeries(engine, clock=clock)
    assert again.rollup() == 0
    assert tier_points(engine, MINUTE.step_s) == first
    fill(again, T0 + 300, 60)
    clock.now = T0 + 360
    assert again.rollup() == 1
    assert len(tier_points(engine, MINUTE.step_s)) == 6


def test_choose_tier_by_step_and_range() -> None:
    now = T0 + 10 * 86400
    assert choose_tier(since=now - 600, step_s=10, now=now) == FINE
    assert choose_tier(since=now - 600, step_s=60, now=now) == MINUTE
    assert choose_tier(since=now - 600, step_s=30, now=now) == FINE
    # Asking 10 s steps over two hours: the fine tier no longer covers the start.
    assert choose_tier(since=now - 7200, step_s=10, now=now) == MINUTE
    assert choose_tier(since=now - 3 * 86400, step_s=60, now=now) == HOUR
    assert choose_tier(since=now - 90 * 86400, step_s=60, now=now) == HOUR


def test_query_stitches_the_tier_and_the_recent_finer_points(engine: Engine) -> None:
    clock = FakeClock(T0)
    series = UsageSeries(engine, clock=clock)
    fill(series, T0, 600)  # ten minutes
    clock.now = T0 + 300
    series.rollup()  # the first five minutes rolled; the next five only fine
    clock.now = T0 + 600
    step, points = series.series("p", since=T0, until=T0 + 600, step_s=60)
    assert step == 60
    assert [p["at"] for p in points] == [T0 + 60 * i for i in range(10)]
    assert all(p["samples"] == 6 for p in points)
    assert sum(p["cpu_usec"] for p in points) == 60 * 10_000
    # A coarser step re-buckets; other plugins are not mixed in.
    fill(series, T0, 600, plugin="other")
    step, points = series.series("p", since=T0, until=T0 + 600, step_s=300)
    assert step == 300 and [p["samples"] for p in points] == [30, 30]
    assert series.sum_since("p", "cpu_usec", since=T0) == 60 * 10_000


def test_current_is_each_plugins_newest_point(engine: Engine) -> None:
    clock = FakeClock(T0)
    series = UsageSeries(engine, clock=clock)
    fill(series, T0, 60, plugin="a")
    fill(series, T0, 30, plugin="b")
    current = series.current()
    assert set(current) == {"a", "b"}
    assert current["a"]["at"] == T0 + 50 and current["b"]["at"] == T0 + 20
    assert set(series.current(["b"])) == {"b"}
    series.forget("a")
    assert set(series.current()) == {"b"}


def calls_sample(plugin: str, i: int) -> dict[str, Any]:
    """The i-th 10 s sample of a plugin called twice a sample, failing every third sample,
    each call taking 3 ms."""
    return sample(
        plugin,
        calls=2,
        calls_total=2 * (i + 1),
        errors=1 if i % 3 == 0 else 0,
        errors_total=i // 3 + 1,
        call_usec=6_000,
        call_usec_total=6_000 * (i + 1),
    )


def test_rollup_adds_errors_and_call_time_and_keeps_their_totals(engine: Engine) -> None:
    clock = FakeClock(T0)
    series = UsageSeries(engine, clock=clock)
    for i in range(12):  # two minutes
        series.record([calls_sample("p", i)], at=T0 + 10 * i)
    clock.now = T0 + 120
    assert series.rollup() == 2
    minutes = tier_points(engine, MINUTE.step_s)
    assert [(m["calls"], m["errors"], m["call_usec"]) for m in minutes] == [
        (12, 2, 36_000),
        (12, 2, 36_000),
    ]
    assert [(m["errors_total"], m["call_usec_total"]) for m in minutes] == [
        (2, 36_000),
        (4, 72_000),
    ]
    # Queried at a coarser step: the same rules once more.
    _, [point] = series.series("p", since=T0, until=T0 + 120, step_s=300)
    assert (point["errors"], point["call_usec"], point["errors_total"]) == (4, 72_000, 4)


@contextmanager
def counting_queries(engine: Engine) -> Iterator[list[str]]:
    statements: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if "resource_usage" in statement:
            statements.append(statement)

    event.listen(engine, "before_cursor_execute", seen)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", seen)


def test_fleet_reads_every_plugin_as_series_does_one_query_per_tier(engine: Engine) -> None:
    clock = FakeClock(T0)
    series = UsageSeries(engine, clock=clock)
    plugins = ["a", "b", "c", "d"]
    for i in range(60):  # ten minutes
        series.record([calls_sample(p, i) for p in plugins], at=T0 + 10 * i)
    clock.now = T0 + 300
    series.rollup()  # five minutes rolled; the rest only in the fine tier
    clock.now = T0 + 600
    with counting_queries(engine) as queries:
        step, fleet = series.fleet(since=T0, until=T0 + 600, step_s=60)
    assert step == 60 and sorted(fleet) == plugins
    assert len(queries) == 2  # the minute tier, then the fine one: not one per plugin
    for plugin in plugins:
        assert fleet[plugin] == series.series(plugin, since=T0, until=T0 + 600, step_s=60)[1]
    assert [p["calls"] for p in fleet["a"]] == [12] * 10
    assert fleet["d"][-1]["calls_total"] == 120
    assert series.plugins_between(since=T0 + 300, until=T0 + 600) == plugins
    assert series.plugins_between(since=T0 + 600, until=T0 + 900) == []
