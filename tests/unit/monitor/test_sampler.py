"""The sampler: what it samples, and how counters become use and running totals across
container replacements and orchestrator restarts."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy.engine import Engine

from orchestrator.monitor.cgroups import CgroupLocator, ContainerUsage
from orchestrator.monitor.metrics import Metrics
from orchestrator.monitor.sampler import (
    CallStats,
    Sampler,
    UsageSample,
    call_counts_from,
    call_stats_from,
)
from orchestrator.monitor.series import UsageSeries
from orchestrator.store import storage
from orchestrator.store.db import session_scope
from tests.unit.monitor.conftest import FakeClock, add_plugin, replace_container

T0 = 1_700_002_800.0
A1, A2, B1 = "a1" * 32, "a2" * 32, "b1" * 32


class FakeMeter:
    """Cumulative readings per container, set by the test."""

    def __init__(self) -> None:
        self.locator = CgroupLocator()
        self.readings: dict[str, ContainerUsage] = {}

    def reads_files(self, container_id: str) -> bool:
        return True

    def read(self, container_id: str) -> ContainerUsage:
        return self.readings.get(container_id, ContainerUsage())


def cpu(usec: int, memory: int = 50 << 20, periods: int = 0, throttled: int = 0) -> ContainerUsage:
    return ContainerUsage(
        memory_bytes=memory,
        memory_limit_bytes=64 << 20,
        cpu_usec=usec,
        cpu_periods=periods,
        cpu_throttled_periods=throttled,
        pids=4,
        source="cgroup2",
    )


def make(engine: Engine, clock: FakeClock, meter: FakeMeter, **kw: object) -> Sampler:
    return Sampler(
        engine=engine,
        meter=meter,  # type: ignore[arg-type]
        series=UsageSeries(engine, clock=clock),
        clock=clock,
        **kw,  # type: ignore[arg-type]
    )


def by_plugin(samples: list[UsageSample]) -> dict[str, UsageSample]:
    return {s.plugin_id: s for s in samples}


def test_samples_running_plugins_only_with_storage_egress_and_calls(engine: Engine) -> None:
    clock = FakeClock(T0)
    add_plugin(engine, "a", container_id=A1, created_at=T0 - 100)
    add_plugin(engine, "b", state="LOADED")
    with session_scope(engine) as session:
        storage.put_storage_item(session, plugin_id="a", kind="kv", key="k", value=1, size=300)
    meter = FakeMeter()
    meter.readings[A1] = cpu(1_000_000)
    egress = {"a": 500}
    calls = {"a": 3, "gone": 9}
    sampler = make(engine, clock, meter, egress_bytes=egress.get, call_counts=lambda: calls)
    [s] = sampler.sample_once()
    assert s.plugin_id == "a" and s.container_id == A1
    assert s.memory_bytes == 50 << 20 and s.pids == 4 and s.storage_bytes == 300
    # A container created before anything was stored: its reading is all new use.
    assert (s.cpu_usec, s.cpu_total_usec) == (1_000_000, 1_000_000)
    assert (s.network_bytes, s.network_total_bytes, s.calls, s.calls_total) == (500, 500, 3, 3)
    clock.advance(10)
    meter.readings[A1] = cpu(1_500_000)
    egress["a"], calls["a"] = 800, 5
    s = by_plugin(sampler.sample_once())["a"]
    assert (s.cpu_usec, s.cpu_total_usec) == (500_000, 1_500_000)
    assert (s.network_bytes, s.network_total_bytes, s.calls, s.calls_total) == (300, 800, 2, 5)
    assert [x.cpu_usec for x in sampler.recent("a")] == [1_000_000, 500_000]
    stored = sampler.series.current()["a"]
    assert stored["cpu_total_usec"] == 1_500_000 and stored["storage_bytes"] == 300


def test_totals_carry_over_a_new_container_and_a_restart(engine: Engine) -> None:
    clock = FakeClock(T0)
    add_plugin(engine, "a", container_id=A1, created_at=T0 - 5)
    meter = FakeMeter()
    meter.readings[A1] = cpu(2_000_000)
    sampler = make(engine, clock, meter, call_counts=lambda: {"a": 10})
    sampler.sample_once()
    # A reload: a new container whose counter starts again from zero.
    clock.advance(10)
    replace_container(engine, "a", A2, created_at=clock.now - 2)
    meter.readings[A2] = cpu(300_000)
    s = by_plugin(sampler.sample_once())["a"]
    assert (s.cpu_usec, s.cpu_total_usec) == (300_000, 2_300_000)
    # The orchestrator restarts: the totals come back from the database; the adopted
    # container's CPU used before is not counted again, and the new process's call counter
    # starts from zero.
    clock.advance(10)
    meter.readings[A2] = cpu(400_000)
    restarted = make(engine, clock, meter, call_counts=lambda: {"a": 1})
    s = by_plugin(restarted.sample_once())["a"]
    assert (s.cpu_usec, s.cpu_total_usec) == (0, 2_300_000)
    assert (s.calls, s.calls_total) == (1, 11)
    clock.advance(10)
    meter.readings[A2] = cpu(450_000)
    s = by_plugin(restarted.sample_once())["a"]
    assert (s.cpu_usec, s.cpu_total_usec) == (50_000, 2_350_000)


def test_listeners_hear_each_round_and_a_failing_one_does_not_stop_it(engine: Engine) -> None:
    clock = FakeClock(T0)
    add_plugin(engine, "a", container_id=A1, created_at=T0)
    heard: list[list[str]] = []

    def broken(_samples: list[UsageSample]) -> None:
        raise RuntimeError("boom")

    sampler = make(
        engine,
        clock,
        FakeMeter(),
        listeners=[broken, lambda s: heard.append([x.plugin_id for x in s])],
    )
    sampler.sample_once()
    assert heard == [["a"]]


def test_thread_samples_only_while_should_run(engine: Engine) -> None:
    clock = FakeClock(T0)
    add_plugin(engine, "a", container_id=A1, created_at=T0)
    rounds = threading.Semaphore(0)
    allowed = threading.Event()
    sampler = make(
        engine,
        clock,
        FakeMeter(),
        interval_s=0.05,
        should_run=allowed.is_set,
        listeners=[lambda _s: rounds.release()],
    )
    sampler.start()
    try:
        assert not rounds.acquire(timeout=0.3)  # not the supervisor: no round
        allowed.set()
        assert rounds.acquire(timeout=5) and rounds.acquire(timeout=5)
    finally:
        sampler.stop()


def test_call_counts_from_the_brokers_counter() -> None:
    metrics = Metrics()
    metrics.observe_call("a", "analyzer", "ok", 0.01)
    metrics.observe_call("a", "export", "timeout", 0.01)
    metrics.observe_call("b", "analyzer", "ok", 0.01)
    assert call_counts_from(metrics.calls)() == {"a": 2, "b": 1}


def calls_of(s: UsageSample) -> tuple[int | None, ...]:
    return (s.calls, s.calls_total, s.errors, s.errors_total, s.call_usec, s.call_usec_total)


def test_errors_and_call_time_from_the_brokers_metrics(engine: Engine) -> None:
    clock = FakeClock(T0)
    add_plugin(engine, "a", container_id=A1, created_at=T0 - 100)
    add_plugin(engine, "b", container_id=B1, created_at=T0 - 100)
    metrics = Metrics()
    metrics.observe_call("a", "analyzer", "ok", 0.010)
    metrics.observe_call("a", "analyzer", "timeout", 0.250)
    metrics.observe_call("a", "export", "plugin_error", 0.005)
    sampler = make(engine, clock, FakeMeter(), call_stats=call_stats_from(metrics))
    samples = by_plugin(sampler.sample_once())
    # Two of three calls did not end ok; 265 ms between them, over both extension points.
    assert calls_of(samples["a"]) == (3, 3, 2, 2, 265_000, 265_000)
    # No call to b yet: none counted, and its totals are known (zero), not missing.
    assert calls_of(samples["b"]) == (0, 0, 0, 0, 0, 0)
    clock.advance(10)
    metrics.observe_call("a", "analyzer", "ok", 0.020)
    metrics.observe_call("b", "analyzer", "rate_limited", 0.001)
    samples = by_plugin(sampler.sample_once())
    assert calls_of(samples["a"]) == (1, 4, 0, 2, 20_000, 285_000)
    assert calls_of(samples["b"]) == (1, 1, 1, 1, 1_000, 1_000)
    stored = sampler.series.current()["a"]
    assert (stored["errors_total"], stored["call_usec_total"]) == (2, 285_000)


def test_call_totals_continue_across_restarts_even_without_calls_between(engine: Engine) -> None:
    clock = FakeClock(T0)
    add_plugin(engine, "a", container_id=A1, created_at=T0 - 100)
    first = Metrics()
    first.observe_call("a", "analyzer", "ok", 0.010)
    first.observe_call("a", "analyzer", "timeout", 0.500)
    make(engine, clock, FakeMeter(), call_stats=call_stats_from(first)).sample_once()
    # A new process: the broker's metrics start from zero and no call reaches the plugin
    # before the first round; the totals come from the database and are written again.
    clock.advance(10)
    quiet = make(engine, clock, FakeMeter(), call_stats=call_stats_from(Metrics()))
    [s] = quiet.sample_once()
    assert calls_of(s) == (0, 2, 0, 1, 0, 510_000)
    # And once more (another supervisor): still carried on, then counted on top.
    clock.advance(10)
    third = Metrics()
    third.observe_call("a", "export", "plugin_error", 0.040)
    [s] = make(engine, clock, FakeMeter(), call_stats=call_stats_from(third)).sample_once()
    assert calls_of(s) == (1, 3, 1, 2, 40_000, 550_000)


def test_call_counts_alone_still_count_calls(engine: Engine) -> None:
    clock = FakeClock(T0)
    add_plugin(engine, "a", container_id=A1, created_at=T0 - 100)
    metrics = Metrics()
    metrics.observe_call("a", "analyzer", "timeout", 0.5)
    sampler = make(engine, clock, FakeMeter(), call_counts=call_counts_from(metrics.calls))
    [s] = sampler.sample_once()
    assert calls_of(s) == (1, 1, None, None, None, None)  # failures and time: not counted
    [s] = make(engine, clock, FakeMeter()).sample_once()
    assert calls_of(s) == (None,) * 6  # no counts at all: nothing known
    with pytest.raises(ValueError, match="not both"):
        make(engine, clock, FakeMeter(), call_counts=dict, call_stats=dict)


def test_call_stats_read_the_counter_and_the_histograms_sum() -> None:
    metrics = Metrics()
    metrics.observe_call("a", "analyzer", "ok", 0.0015)
    metrics.observe_call("a", "export", "timeout", 2.0)
    metrics.observe_call("b", "analyzer", "ok", 0.25)
    assert call_stats_from(metrics)() == {
        "a": CallStats(calls=2, errors=1, usec=2_001_500),
        "b": CallStats(calls=1, errors=0, usec=250_000),
    }
