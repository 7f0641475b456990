"""A canary in the broker, over a fake transport: the share of calls each version gets, the
statistics per version, calls the candidate cannot take, and promotion without a failed call."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest

from orchestrator.broker import Broker, Route
from orchestrator.broker.canary import Canary, VersionStats
from orchestrator.domain.manifest import Extension
from orchestrator.runtime.endpoints import UnixEndpoint
from tests.unit.broker.test_broker_calls import (
    FakePlugins,
    Handler,
    add,
    endpoint_of,
    ext,
    make_broker,
    raising,
    replying,
)

CALLS = 1000
TOLERANCE = 5  # percentage points


def candidate(
    broker: Broker,
    plugins: FakePlugins,
    plugin_id: str,
    handler: Handler,
    weight: int,
    *extensions: Extension,
) -> Route:
    """Route ``weight`` percent of ``plugin_id``'s calls to a 2.0.0 container with ``handler``."""
    endpoint = UnixEndpoint(Path(f"/run/summit/{plugin_id}-canary/plugin.sock"))
    plugins.handlers[endpoint] = handler
    route = Route(plugin_id, "2.0.0", endpoint, extensions or (ext(),))
    broker.set_canary(route, weight)
    return route


def versions_answering(broker: Broker, calls: int = CALLS, **options: Any) -> Counter[str]:
    """Which version answered each of ``calls`` executes naming plugin ``a``."""

    async def run() -> Counter[str]:
        seen: Counter[str] = Counter()
        try:
            for _ in range(calls):
                result = await broker.execute("analyzer", {"n": 1}, plugins=["a"], **options)
                seen[result["results"][0]["output"]["version"]] += 1
        finally:
            await broker.aclose()
        return seen

    return asyncio.run(run())


def seeded(broker: Broker, seed: int = 20240611) -> Broker:
    broker.draw = random.Random(seed).random
    return broker


@pytest.mark.parametrize("weight", [0, 10, 30, 75, 100])
def test_the_candidate_takes_its_weight_of_the_calls_within_the_tolerance(weight: int) -> None:
    plugins = FakePlugins()
    broker = seeded(make_broker(plugins))
    add(broker, plugins, "a", replying({"version": "1"}))
    candidate(broker, plugins, "a", replying({"version": "2"}), weight)

    seen = versions_answering(broker)

    assert sum(seen.values()) == CALLS  # not one call failed
    share = 100 * seen["2"] / CALLS
    assert abs(share - weight) <= TOLERANCE, seen
    if weight in (0, 100):
        assert share == weight  # the edges are exact
    canary = broker.canary("a")
    assert canary is not None
    stats = canary.stats
    assert (stats.current.calls, stats.candidate.calls) == (seen["1"], seen["2"])
    assert stats.current.errors == stats.candidate.errors == 0


def test_a_new_weight_keeps_the_statistics_and_changes_the_share() -> None:
    plugins = FakePlugins()
    broker = seeded(make_broker(plugins))
    add(broker, plugins, "a", replying({"version": "1"}))
    route = candidate(broker, plugins, "a", replying({"version": "2"}), 20)
    first = versions_answering(broker, 500)

    broker.set_canary(route, 80)
    second = versions_answering(broker, 500)

    assert abs(100 * first["2"] / 500 - 20) <= TOLERANCE * 2
    assert abs(100 * second["2"] / 500 - 80) <= TOLERANCE * 2
    canary = broker.canary("a")
    assert canary is not None and canary.weight == 80
    assert canary.stats.candidate.calls == first["2"] + second["2"]
    summary = canary.stats.candidate.summary()
    assert summary["calls"] == first["2"] + second["2"] and summary["p50_ms"] is not None


def test_a_fan_out_calls_a_plugin_with_a_canary_once_as_one_provider() -> None:
    plugins = FakePlugins()
    broker = seeded(make_broker(plugins))
    add(broker, plugins, "a", replying({"version": "1"}), ext(priority=200))
    add(broker, plugins, "b", replying({"version": "b"}), ext(priority=100))
    candidate(broker, plugins, "a", replying({"version": "2"}), 50)

    async def run() -> list[list[tuple[str, str]]]:
        out = []
        try:
            for _ in range(200):
                result = await broker.execute("analyzer", {"n": 1}, mode="all")
                out.append([(r["plugin"], r["output"]["version"]) for r in result["results"]])
        finally:
            await broker.aclose()
        return out

    rounds = asyncio.run(run())
    assert all([p for p, _ in r] == ["a", "b"] for r in rounds)
    drawn = Counter(r[0][1] for r in rounds)
    assert set(drawn) == {"1", "2"} and abs(drawn["2"] - 100) <= 20


def test_a_call_the_candidate_cannot_take_goes_to_the_current_version() -> None:
    plugins = FakePlugins()
    broker = seeded(make_broker(plugins))
    add(broker, plugins, "a", replying({"version": "1"}), ext("run"))
    # The candidate has no "run" extension at all: it never gets a "run" call.
    candidate(broker, plugins, "a", replying({"version": "2"}), 100, ext("other"))
    assert versions_answering(broker, 50) == Counter({"1": 50})

    # Its input schema wants a "text" the callers do not send: not asked either.
    strict = ext("run", input_schema={"type": "object", "required": ["text"]})
    broker.drop_canary("a")
    candidate(broker, plugins, "a", replying({"version": "2"}), 100, strict)
    assert versions_answering(broker, 50) == Counter({"1": 50})


def test_a_candidate_that_does_not_answer_is_counted_and_the_current_version_answers() -> None:
    plugins = FakePlugins()
    broker = seeded(make_broker(plugins))
    add(broker, plugins, "a", replying({"version": "1"}))
    candidate(broker, plugins, "a", raising(ConnectionRefusedError()), 40)

    seen = versions_answering(broker, 300)

    assert seen == Counter({"1": 300})  # every call answered
    canary = broker.canary("a")
    assert canary is not None
    tried = canary.stats.candidate
    assert tried.calls == tried.errors and abs(tried.calls - 120) <= 30


def test_promotion_switches_every_new_call_and_a_stale_route_is_answered_by_the_new_one() -> None:
    plugins = FakePlugins()
    broker = seeded(make_broker(plugins))
    old = add(broker, plugins, "a", replying({"version": "1"}))
    new = candidate(broker, plugins, "a", replying({"version": "2"}), 30)

    moved = broker.promote_canary("a")

    assert moved is not None and moved[0] == old and moved[1].route == new
    assert broker.route("a") == new and broker.canary("a") is None
    assert [r for r, _ in broker.providers("analyzer")] == [new]
    assert broker.promote_canary("a") is None  # nothing left to promote
    # A fan-out that read the routes before the switch reaches the old container after it
    # was retired: the call is answered where the plugin is served now.
    plugins.handlers[endpoint_of("a")] = raising(ConnectionRefusedError())

    async def stale_call() -> Any:
        try:
            return await broker.call(old, old.extensions[0], {"n": 1})
        finally:
            await broker.aclose()

    assert asyncio.run(stale_call()) == {"version": "2"}
    assert versions_answering(broker, 20) == Counter({"2": 20})


def test_dropping_the_route_ends_the_canary_and_its_figures_are_on_metrics() -> None:
    plugins = FakePlugins()
    broker = seeded(make_broker(plugins))
    add(broker, plugins, "a", replying({"version": "1"}))
    candidate(broker, plugins, "a", replying({"version": "2"}), 50)
    versions_answering(broker, 100)

    text = generate_latest(broker.metrics.registry).decode()
    assert 'summit_canary_weight{plugin="a",version="2.0.0"} 50.0' in text
    assert 'summit_canary_calls_total{plugin="a",role="candidate",version="2.0.0"}' in text
    assert 'summit_canary_calls_total{plugin="a",role="current",version="1.0.0"}' in text
    assert 'quantile="0.99"' in text

    broker.drop_route("a")
    assert broker.canary("a") is None and broker.canaries() == []
    assert "summit_canary_weight{" not in generate_latest(broker.metrics.registry).decode()


def test_a_weight_outside_0_to_100_is_refused_and_quantiles_come_from_the_histogram() -> None:
    route = Route("a", "2.0.0", endpoint_of("a"), (ext(),))
    with pytest.raises(ValueError, match="percentage"):
        Canary(route, 101)
    stats = VersionStats()
    assert stats.quantile(0.5) is None
    for ms in range(1, 101):  # 1 ms .. 100 ms
        stats.add(ms / 1000, failed=ms > 95)
    p50, p99 = stats.quantile(0.5), stats.quantile(0.99)
    assert p50 is not None and p99 is not None
    assert abs(p50 - 0.050) <= 0.050 * 0.05 and abs(p99 - 0.099) <= 0.099 * 0.05
    assert (stats.calls, stats.errors) == (100, 5)
