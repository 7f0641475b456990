"""Idle pause against FakeRuntime (whose plugin clients time out on a frozen container, as a
frozen process would): who is paused and when, the thaw before a call, the state every other
part of the orchestrator sees, and replicas sharing their last calls through Redis."""

from __future__ import annotations

import asyncio
import secrets
import threading
from collections.abc import Iterator

import pytest
import redis
from sqlmodel import select

from orchestrator.domain.errors import Conflict
from orchestrator.events.fanout import NOT_FOR_PLUGINS, Fanout
from orchestrator.runtime.kubernetes import KubernetesRuntime
from orchestrator.services.idle import IdlePause
from orchestrator.store import plugins as plugin_store
from orchestrator.store import usage as usage_store
from orchestrator.store.db import session_scope
from orchestrator.store.models import Delivery
from tests.fixtures.fake_runtime import FakePlugins, FakeRuntime

from .conftest import BASE_IMAGE, Services, wire

PID = "com.summit-tests.probe"
IDLE_S = 60.0


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(services: Services) -> Clock:
    clock = Clock()
    services.broker.pauses.clock = clock
    return clock


def idle_pause(services: Services, **kw: object) -> IdlePause:
    return IdlePause(
        engine=services.engine,
        runtime=services.runtime,
        broker=services.broker,
        locks=services.lifecycle.locks,
        idle_s=IDLE_S,
        events=services.events,
        **kw,  # type: ignore[arg-type]
    )


@pytest.fixture
def idle(services: Services, clock: Clock) -> IdlePause:
    return idle_pause(services)


def active(services: Services, plugin_id: str = PID) -> str:
    services.install(plugin_id)
    services.lifecycle.enable(plugin_id)
    return services.container(plugin_id)


def paused_at(services: Services, container_id: str) -> object:
    with session_scope(services.engine) as session:
        row = plugin_store.get_container(session, container_id=container_id)
        assert row is not None
        return row.paused_at


def frozen(services: Services, container_id: str) -> bool:
    return services.runtime.containers[container_id].status.paused


def test_a_plugin_idle_for_the_set_time_is_frozen_and_shown_paused(
    services: Services, idle: IdlePause, clock: Clock
) -> None:
    cid = active(services)
    assert idle.pause_idle() == []  # first seen now: idle from here
    clock.now += IDLE_S - 1
    assert idle.pause_idle() == []
    clock.now += 1
    assert idle.pause_idle() == [PID]

    assert frozen(services, cid) and paused_at(services, cid) is not None
    assert PID in services.broker.pauses.paused
    assert [e["payload"]["container"] for e in services.announced(PID, "plugin.paused")] == [cid]
    with session_scope(services.engine) as session:
        assert usage_store.plugin_states(session)[PID] == "PAUSED"
    assert services.state(PID) == "ACTIVE"  # the lifecycle state is untouched
    assert idle.pause_idle() == []  # not twice


def test_a_call_keeps_a_plugin_awake(services: Services, idle: IdlePause, clock: Clock) -> None:
    cid = active(services)
    idle.pause_idle()
    clock.now += IDLE_S - 5
    services.broker.pauses.touch(PID)
    clock.now += 10
    assert idle.pause_idle() == [] and not frozen(services, cid)
    clock.now += IDLE_S
    assert idle.pause_idle() == [PID]


def test_a_call_in_flight_stops_the_pause_at_the_last_moment(
    services: Services, idle: IdlePause, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    cid = active(services)
    idle.pause_idle()
    clock.now += IDLE_S
    monkeypatch.setattr(services.broker, "in_flight", lambda endpoint: 1)
    assert idle.pause_idle() == []
    assert not frozen(services, cid) and PID not in services.broker.pauses.paused


def test_a_plugin_a_lifecycle_operation_holds_is_left_alone(
    services: Services, idle: IdlePause, clock: Clock
) -> None:
    cid = active(services)
    idle.pause_idle()
    clock.now += IDLE_S
    held, release = threading.Event(), threading.Event()

    def busy() -> None:
        with services.lifecycle.locks.hold(PID):
            held.set()
            release.wait(10)

    worker = threading.Thread(target=busy)
    worker.start()
    try:
        held.wait(5)
        assert idle.pause_idle() == []
    finally:
        release.set()
        worker.join()
    assert not frozen(services, cid)


def test_the_next_call_thaws_the_plugin_first(
    services: Services, idle: IdlePause, clock: Clock
) -> None:
    cid = active(services)
    idle.pause_idle()
    clock.now += IDLE_S
    idle.pause_idle()

    async def two_calls_at_once() -> None:
        gate = services.broker.pauses
        await asyncio.gather(gate.ready(PID), gate.ready(PID))
        await idle.aclose()  # the row and the event are written after the call went out

    asyncio.run(two_calls_at_once())
    assert not frozen(services, cid) and PID not in services.broker.pauses.paused
    assert paused_at(services, cid) is None
    assert len(services.announced(PID, "plugin.resumed")) == 1  # one thaw for both
    clock.now += IDLE_S - 1
    assert idle.pause_idle() == []  # the call counts as activity


def test_health_probes_leave_a_frozen_plugin_alone(
    services: Services, idle: IdlePause, clock: Clock
) -> None:
    cid = active(services)
    idle.pause_idle()
    clock.now += IDLE_S
    idle.pause_idle()
    for _ in range(services.settings.health_failures + 2):
        services.supervision.probe_health()
    assert services.state(PID) == "ACTIVE" and cid in services.runtime.containers


def test_a_restarted_orchestrator_adopts_a_frozen_container_as_frozen(
    services: Services, idle: IdlePause, clock: Clock
) -> None:
    cid = active(services)
    idle.pause_idle()
    clock.now += IDLE_S
    idle.pause_idle()

    again = wire(
        services.engine, services.settings, services.runtime, services.plugins, services.tmp
    )
    try:
        report = again.supervision.reconcile()
        assert report["adopted"] == [PID] and not report["removed"]
        assert again.state(PID) == "ACTIVE" and again.container(PID) == cid
        assert PID in again.broker.pauses.paused and frozen(again, cid)
        assert idle_pause(again).resume(PID) == cid
        assert not frozen(again, cid)
    finally:
        again.supervision.stop()


def test_reconcile_trusts_the_runtime_over_the_row(services: Services, idle: IdlePause) -> None:
    cid = active(services)
    services.runtime.pause(cid)  # frozen, and nobody wrote it down
    services.supervision.reconcile()
    assert paused_at(services, cid) is not None and PID in services.broker.pauses.paused

    services.runtime.unpause(cid)
    services.supervision.reconcile()
    assert paused_at(services, cid) is None and PID not in services.broker.pauses.paused


def test_disabling_a_frozen_plugin_thaws_it_to_shut_it_down(
    services: Services, idle: IdlePause, clock: Clock
) -> None:
    cid = active(services)
    idle.pause_idle()
    clock.now += IDLE_S
    idle.pause_idle()
    services.lifecycle.disable(PID)
    assert services.state(PID) == "LOADED" and cid not in services.runtime.containers
    assert PID in services.plugins.shutdowns  # it heard the shutdown
    assert PID not in services.broker.pauses.paused


def test_a_new_config_reaches_a_frozen_plugin(
    services: Services, idle: IdlePause, clock: Clock
) -> None:
    cid = active(services)
    idle.pause_idle()
    clock.now += IDLE_S
    idle.pause_idle()
    services.supervision.containers.reinitialize(PID, config={"x": 1}, grants=[])
    assert not frozen(services, cid) and paused_at(services, cid) is None
    assert services.plugins.initialized[-1][1] == {"x": 1}


def test_pause_news_goes_to_webhooks_never_to_plugins(services: Services) -> None:
    listener = "com.summit-tests.listener"
    services.events.fanout = Fanout(lambda: [(listener, ("plugin.*",))])
    for event_type in (*sorted(NOT_FOR_PLUGINS), "plugin.enabled"):
        services.events.emit_sync(event_type, source="orchestrator", subject=PID)
    with session_scope(services.engine) as session:
        owed = set(session.exec(select(Delivery.event_id).where(Delivery.plugin_id == listener)))
    delivered = [e["type"] for e in services.events.page(limit=10)["events"] if e["id"] in owed]
    assert delivered == ["plugin.enabled"]


def test_on_a_runtime_that_cannot_freeze_nothing_is_paused(
    services: Services, clock: Clock
) -> None:
    runtime = FakeRuntime(can_pause=False)
    runtime.add_image(BASE_IMAGE)
    pods = wire(services.engine, services.settings, runtime, FakePlugins(runtime), services.tmp)
    pods.broker.pauses.clock = clock
    try:
        active(pods)
        idle = idle_pause(pods)
        assert not idle.enabled
        idle.pause_idle()
        clock.now += IDLE_S * 10
        assert idle.pause_idle() == [] and pods.broker.pauses.thaw is None
    finally:
        pods.supervision.stop()


def test_the_kubernetes_runtime_says_pods_cannot_be_frozen() -> None:
    assert KubernetesRuntime.can_pause is False
    runtime = KubernetesRuntime.__new__(KubernetesRuntime)
    with pytest.raises(Conflict) as caught:
        runtime.pause("any")
    assert caught.value.code == "pause_unsupported"


@pytest.fixture
def redis_url() -> Iterator[str]:
    url = "redis://127.0.0.1:6379/0"
    try:
        redis.Redis.from_url(url).ping()
    except redis.RedisError as exc:  # pragma: no cover - the test scripts start Redis
        pytest.fail(f"Redis is not running: {exc}")
    yield url


@pytest.mark.redis
def test_a_call_through_another_replica_keeps_the_plugin_awake(
    services: Services, clock: Clock, redis_url: str
) -> None:
    instance = f"t{secrets.token_hex(4)}"
    b = wire(services.engine, services.settings, services.runtime, services.plugins, services.tmp)
    b.broker.pauses.clock = clock
    leader = idle_pause(services, redis_url=redis_url, instance=instance)
    other = idle_pause(b, redis_url=redis_url, instance=instance)
    try:
        cid = active(services)
        leader.pause_idle()
        clock.now += IDLE_S - 5
        b.broker.pauses.touch(PID)  # a call through replica b
        other.share_last_calls()
        clock.now += 10
        assert leader.pause_idle() == [] and not frozen(services, cid)
        clock.now += IDLE_S
        assert leader.pause_idle() == [PID]
    finally:
        redis.Redis.from_url(redis_url).delete(f"{instance}:idle:last-call")
        leader.stop()
        other.stop()
        b.supervision.stop()


@pytest.mark.redis
def test_without_the_other_replicas_calls_nothing_is_paused(
    services: Services, clock: Clock
) -> None:
    cid = active(services)
    idle = idle_pause(services, redis_url="redis://127.0.0.1:1/0")  # nothing listens there
    idle.pause_idle()
    clock.now += IDLE_S * 2
    assert idle.pause_idle() == [] and not frozen(services, cid)
    idle.stop()
