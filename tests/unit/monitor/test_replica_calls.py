"""Every replica's calls, counted once by whichever replica samples: sharing through Redis,
restarts, failovers, dead replicas, and the stored series."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator

import pytest
import redis
from sqlalchemy.engine import Engine

from orchestrator.monitor.replica_calls import ReplicaCallStats
from orchestrator.monitor.sampler import CallStats, Sampler
from orchestrator.monitor.series import UsageSeries
from tests.unit.monitor.conftest import FakeClock, add_plugin
from tests.unit.monitor.test_sampler import FakeMeter, cpu

T0 = 1_700_002_800.0
URL = "redis://127.0.0.1:6379/0"

pytestmark = pytest.mark.redis


@pytest.fixture
def instance() -> Iterator[str]:
    """A key prefix of this test's own; its keys are deleted afterwards."""
    client = redis.Redis.from_url(URL)
    try:
        client.ping()
    except redis.RedisError as exc:  # pragma: no cover - the test scripts start Redis
        pytest.fail(f"Redis is not running: {exc}")
    name = f"t{secrets.token_hex(4)}"
    yield name
    keys = list(client.scan_iter(match=f"{name}:*"))
    if keys:
        client.delete(*keys)
    client.close()


class Replica:
    """One orchestrator replica: its broker's counts (set by the test) and its sharing."""

    def __init__(
        self,
        name: str,
        instance: str | None,
        clock: FakeClock,
        *,
        publish_s: float = 5.0,
        ttl_s: float = 30.0,
    ) -> None:
        self.calls: dict[str, CallStats] = {}
        self.stats = ReplicaCallStats(
            call_stats=lambda: self.calls,
            replica=name,
            redis_url=URL if instance is not None else None,
            instance=instance or "summit",
            publish_s=publish_s,
            ttl_s=ttl_s,
            clock=clock,
        )

    def called(self, plugin: str, calls: int, errors: int = 0, usec: int = 0) -> None:
        """``calls`` more calls to ``plugin`` through this replica."""
        was = self.calls.get(plugin, CallStats(0, 0, 0))
        self.calls[plugin] = CallStats(
            was.calls + calls, (was.errors or 0) + errors, (was.usec or 0) + usec
        )

    def publish(self) -> None:
        self.stats.publish()

    def read(self) -> dict[str, CallStats]:
        return self.stats.read()


def test_the_sampler_counts_every_replicas_calls(instance: str) -> None:
    clock = FakeClock(T0)
    a, b, c = (Replica(n, instance, clock) for n in "abc")
    a.called("p", 3, errors=1, usec=300)
    b.called("p", 5, usec=500)
    b.called("q", 2, errors=2, usec=20)
    c.called("q", 1, usec=10)
    b.publish()
    c.publish()
    # a samples: its own calls are read from its process, the others' from Redis.
    assert a.read() == {"p": CallStats(8, 1, 800), "q": CallStats(3, 2, 30)}
    clock.advance(10)
    a.called("p", 1)
    b.called("p", 4, errors=1)
    b.publish()
    assert a.read() == {"p": CallStats(13, 2, 800), "q": CallStats(3, 2, 30)}
    # Nothing new: nothing more, however often it is read.
    assert a.read() == a.read() == {"p": CallStats(13, 2, 800), "q": CallStats(3, 2, 30)}


def test_a_replica_restarted_counts_its_new_calls_only(instance: str) -> None:
    clock = FakeClock(T0)
    a, b = Replica("a", instance, clock), Replica("b", instance, clock)
    b.called("p", 50)
    b.publish()
    assert a.read()["p"].calls == 50
    # b restarts under the same id: its counters start again, lower than before.
    clock.advance(30)
    b = Replica("b", instance, clock)
    b.called("p", 7)
    b.publish()
    assert a.read()["p"].calls == 57
    b.called("p", 3)
    b.publish()
    assert a.read()["p"].calls == 60


def test_a_new_sampler_without_a_record_takes_older_replicas_as_counted(instance: str) -> None:
    clock = FakeClock(T0)
    b = Replica("b", instance, clock)  # running before the sampler started
    b.called("p", 40)
    b.publish()
    clock.advance(60)
    a = Replica("a", instance, clock)
    clock.advance(1)
    c = Replica("c", instance, clock)  # started after the sampler
    c.called("p", 6)
    c.publish()
    # No sampler has counted anything yet (none ran, or Redis lost the record): b's calls
    # until now are taken as counted before, c's are all new.
    assert a.read()["p"].calls == 6
    b.called("p", 2)
    b.publish()
    assert a.read()["p"].calls == 8


def test_a_failover_carries_on_where_the_previous_sampler_stopped(instance: str) -> None:
    clock = FakeClock(T0)
    a, b, c = (Replica(n, instance, clock) for n in "abc")
    a.called("p", 10)
    b.called("p", 20)
    c.called("p", 30)
    b.publish()
    c.publish()
    assert a.read()["p"].calls == 60  # a samples
    # a dies after a last write; meanwhile b and c broker more calls, and b is elected.
    a.called("p", 1)
    a.publish()
    b.called("p", 2)
    c.called("p", 3)
    c.publish()
    clock.advance(20)
    # b counts what a did not: nothing a counted, nothing lost in between.
    assert b.read()["p"].calls == 6
    c.called("p", 4)
    c.publish()
    assert b.read()["p"].calls == 10


def test_leadership_coming_back_does_not_count_the_others_rounds_again(instance: str) -> None:
    clock = FakeClock(T0)
    a, b = Replica("a", instance, clock), Replica("b", instance, clock)
    a.called("p", 10)
    b.called("p", 5)
    b.publish()
    assert a.read()["p"].calls == 15  # a samples
    a.called("p", 1)
    a.publish()
    b.called("p", 2)
    assert b.read()["p"].calls == 3  # b samples a while
    a.called("p", 4)
    b.called("p", 8)
    b.publish()
    # a samples again: it adds the calls b did not count, not what b counted meanwhile.
    assert a.read()["p"].calls == 15 + 4 + 8


def test_a_plugin_first_called_on_a_running_replica_is_counted_whole(instance: str) -> None:
    clock = FakeClock(T0)
    b = Replica("b", instance, clock)
    b.called("p", 3)
    b.publish()
    clock.advance(60)
    a = Replica("a", instance, clock)
    assert a.read() == {"p": CallStats(0, 0, 0)}  # b's run taken as counted
    b.called("q", 9, usec=90)  # a plugin installed since: its counter started at zero
    b.publish()
    assert a.read()["q"] == CallStats(9, 0, 90)


def test_without_redis_the_process_counts_are_read_as_they_are() -> None:
    clock = FakeClock(T0)
    a = Replica("a", None, clock)
    a.called("p", 4, errors=1, usec=40)
    a.publish()  # nothing to share with
    a.stats.start()  # no thread either
    assert a.stats._thread is None
    assert a.read() == {"p": CallStats(4, 1, 40)}
    a.called("p", 1)
    assert a.read() == {"p": CallStats(5, 1, 40)}
    a.stats.stop()


def test_a_dead_replica_stops_contributing(instance: str) -> None:
    clock = FakeClock(T0)
    a = Replica("a", instance, clock)
    b = Replica("b", instance, clock, publish_s=0.05, ttl_s=0.3)
    b.called("p", 5)
    b.publish()
    assert a.read()["p"].calls == 5
    b.called("p", 2)  # after its last write: lost with it
    time.sleep(0.5)
    client = redis.Redis.from_url(URL)
    assert client.get(f"{instance}:calls:replica:b") is None
    assert a.read()["p"].calls == 5  # the count stays; nothing more from b
    assert b"b" not in client.smembers(f"{instance}:calls:replicas")
    client.close()


def test_each_replica_writes_its_counts_every_few_seconds_and_when_it_stops(
    instance: str,
) -> None:
    clock = FakeClock(T0)
    a = Replica("a", instance, clock)
    b = Replica("b", instance, clock, publish_s=0.05, ttl_s=5)
    b.stats.start()
    try:
        b.called("p", 2)
        deadline = time.monotonic() + 5
        while a.read().get("p", CallStats(0)).calls < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert a.read()["p"].calls == 2
        b.called("p", 1)
    finally:
        b.stats.stop()  # writes once more on its way out
    assert a.read()["p"].calls == 3


def test_two_replicas_calls_land_in_the_series_once(instance: str, engine: Engine) -> None:
    clock = FakeClock(T0)
    add_plugin(engine, "p", container_id="c1" * 32, created_at=T0 - 100)
    meter = FakeMeter()
    meter.readings["c1" * 32] = cpu(1_000)
    a, b = Replica("a", instance, clock), Replica("b", instance, clock)
    sampler = Sampler(
        engine=engine,
        meter=meter,  # type: ignore[arg-type]
        series=UsageSeries(engine, clock=clock),
        clock=clock,
        call_stats=a.stats.read,
    )
    a.called("p", 2, errors=1, usec=2_000)
    b.called("p", 3, usec=3_000)
    b.publish()
    [first] = sampler.sample_once()
    assert (first.calls, first.errors, first.call_usec) == (5, 1, 5_000)
    clock.advance(10)
    a.called("p", 1, usec=1_000)
    b.called("p", 4, errors=2, usec=4_000)
    b.publish()
    [second] = sampler.sample_once()
    assert (second.calls, second.errors, second.call_usec) == (5, 2, 5_000)
    stored = sampler.series.current()["p"]
    assert (stored["calls_total"], stored["errors_total"], stored["call_usec_total"]) == (
        10,
        3,
        10_000,
    )
    sampler.stop()


def test_a_copy_older_than_what_was_counted_adds_nothing(instance: str) -> None:
    clock = FakeClock(T0)
    a, b = Replica("a", instance, clock), Replica("b", instance, clock)
    a.called("p", 10)
    a.publish()
    a.called("p", 5)
    assert a.read()["p"].calls == 15  # a samples its own 15, live
    # b is elected before a writes again: a's copy in Redis (10) is older than what a counted.
    assert b.read()["p"].calls == 0
    a.called("p", 1)
    a.publish()
    assert b.read()["p"].calls == 1


def test_while_redis_is_unreachable_the_others_calls_are_counted_late_not_twice(
    instance: str,
) -> None:
    clock = FakeClock(T0)
    a, b = Replica("a", instance, clock), Replica("b", instance, clock)
    a.called("p", 10)
    b.called("p", 1)
    b.publish()
    assert a.read()["p"].calls == 11
    reachable = a.stats._redis
    a.stats._redis = redis.Redis.from_url("redis://127.0.0.1:1/0")  # nothing listens there
    try:
        a.called("p", 5)
        b.called("p", 3)
        b.publish()
        assert a.read()["p"].calls == 16  # its own calls only
    finally:
        a.stats._redis.close()
        a.stats._redis = reachable
    # Redis back: b's calls are counted now, and a's own not a second time (the record in
    # Redis still says 10 of them were counted; this process knows it was 15).
    assert a.read()["p"].calls == 19
