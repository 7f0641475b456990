"""Canary against FakeRuntime: a candidate version beside the current one (which containers
run, what the broker routes, what the database and the history say), weight changes, promote,
abort, a candidate that does not start or crashes, reconcile after a restart, the other
operations of a plugin with a canary, replicas and the idle pause."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from orchestrator.domain.errors import Conflict, InvalidInput, NotFound
from orchestrator.services.idle import IdlePause
from orchestrator.services.lifecycle import CANARY_EVENT, CanaryFailed
from orchestrator.services.plugins import plugin_view
from orchestrator.services.routing import ROUTE_EVENTS, RouteSync
from orchestrator.store import crud
from orchestrator.store import plugins as plugin_store
from orchestrator.store.db import session_scope

from .conftest import Services, wire

PID = "com.summit-tests.probe"


def history(services: Services) -> list[tuple[str, str, str | None, str]]:
    """(action, version, from_version, actor), oldest first."""
    items = services.lifecycle.history(PID, limit=1000).items
    return [(h.action, h.version, h.from_version, h.actor) for h in reversed(items)]


def rows(services: Services) -> list[tuple[str, str, int | None]]:
    """The plugin's container rows: (id, version, canary weight), oldest first."""
    with session_scope(services.engine) as session:
        found = crud.list_containers(session, plugin_id=PID)
        return [
            (r.id, r.version, r.canary_weight) for r in sorted(found, key=lambda r: r.created_at)
        ]


def running(services: Services) -> dict[str, str]:
    """version -> id of the plugin's running containers."""
    return {s.version or "": s.id for s in services.runtime.running(PID)}


def plugin_version(services: Services) -> tuple[str, str]:
    with session_scope(services.engine) as session:
        plugin = crud.get_plugin(session, plugin_id=PID)
        assert plugin is not None
        return plugin.state, plugin.version


def two_versions(services: Services) -> str:
    """v1 ACTIVE, v2 installed beside it; the id of v1's container."""
    services.install(PID, version="1.0.0")
    services.lifecycle.enable(PID)
    services.install(PID, version="2.0.0")
    return services.container(PID)


def with_canary(services: Services, weight: int = 30) -> tuple[str, str]:
    """v1 serving, v2 a canary at ``weight``: (v1's container, v2's container)."""
    current = two_versions(services)
    services.lifecycle.start_canary(PID, version="2.0.0", weight=weight, actor="alice")
    return current, running(services)["2.0.0"]


def canary_events(services: Services) -> list[tuple[str, str, int | None]]:
    return [
        (e["payload"]["action"], e["payload"]["version"], e["payload"]["weight"])
        for e in services.announced(PID, "plugin.canary")
    ]


def test_a_canary_runs_beside_the_current_version_with_its_weight_everywhere(
    services: Services,
) -> None:
    current = two_versions(services)
    route = services.broker.route(PID)

    view = services.lifecycle.start_canary(PID, version="2.0.0", weight=30, actor="alice")

    candidate = running(services)["2.0.0"]
    assert running(services) == {"1.0.0": current, "2.0.0": candidate}
    assert rows(services) == [(current, "1.0.0", None), (candidate, "2.0.0", 30)]
    # The plugin is still at 1.0.0 and routed there; the candidate takes 30% beside it.
    assert plugin_version(services) == ("ACTIVE", "1.0.0")
    assert services.broker.route(PID) == route
    canary = services.broker.canary(PID)
    assert canary is not None and canary.weight == 30
    assert canary.route.version == "2.0.0"
    assert canary.route.endpoint == services.runtime.status(candidate).endpoint  # type: ignore[union-attr]
    assert (view.weight, view.current.version, view.candidate.version) == (30, "1.0.0", "2.0.0")
    assert (view.current.container, view.candidate.container) == (current, candidate)
    assert history(services)[-1] == ("canary_started", "2.0.0", "1.0.0", "alice")
    assert canary_events(services) == [("started", "2.0.0", 30)]
    # The plugin's view shows the serving container, not the candidate.
    with session_scope(services.engine) as session:
        plugin = crud.get_plugin(session, plugin_id=PID)
        assert plugin is not None
        assert plugin_view(session, plugin).container.id == current  # type: ignore[union-attr]


def test_the_same_version_again_changes_the_weight_without_a_restart(services: Services) -> None:
    current, candidate = with_canary(services, 30)
    stats = services.broker.canary(PID).stats  # type: ignore[union-attr]

    view = services.lifecycle.start_canary(PID, version="2.0.0", weight=70, actor="bob")

    assert running(services) == {"1.0.0": current, "2.0.0": candidate}
    assert rows(services)[-1] == (candidate, "2.0.0", 70)
    canary = services.broker.canary(PID)
    assert canary is not None and canary.weight == 70 and canary.stats is stats
    assert view.weight == 70
    assert history(services)[-1] == ("canary_weight", "2.0.0", "1.0.0", "bob")
    # The same weight once more changes nothing and records nothing.
    services.lifecycle.start_canary(PID, version="2.0.0", weight=70, actor="bob")
    assert [h[0] for h in history(services)].count("canary_weight") == 1


def test_what_cannot_be_a_canary_is_refused_with_its_reason(services: Services) -> None:
    services.install(PID, version="1.0.0")
    with pytest.raises(Conflict) as stopped:
        services.lifecycle.start_canary(PID, version="1.0.0", weight=10)
    assert stopped.value.code == "illegal_transition"
    services.lifecycle.enable(PID)
    services.install(PID, version="2.0.0")
    services.install(PID, version="3.0.0")

    with pytest.raises(NotFound) as missing:
        services.lifecycle.start_canary(PID, version="9.0.0", weight=10)
    assert missing.value.code == "version_not_installed"
    assert missing.value.details["installed_versions"] == ["1.0.0", "2.0.0", "3.0.0"]
    with pytest.raises(Conflict) as same:
        services.lifecycle.start_canary(PID, version="1.0.0", weight=10)
    assert same.value.code == "same_version"
    with pytest.raises(InvalidInput):
        services.lifecycle.start_canary(PID, version="2.0.0", weight=101)

    services.lifecycle.start_canary(PID, version="2.0.0", weight=10)
    with pytest.raises(Conflict) as other:
        services.lifecycle.start_canary(PID, version="3.0.0", weight=10)
    assert other.value.code == "canary_running"
    assert other.value.details == {"version": "2.0.0", "weight": 10}
    assert len(services.runtime.running(PID)) == 2
    services.lifecycle.abort_canary(PID)
    with pytest.raises(Conflict) as none:
        services.lifecycle.promote_canary(PID)
    assert none.value.code == "no_canary"
    with pytest.raises(Conflict):
        services.lifecycle.abort_canary(PID)
    with pytest.raises(NotFound) as absent:
        services.lifecycle.canary(PID)
    assert absent.value.code == "no_canary"


def test_promote_makes_the_candidate_current_and_retires_the_old_container(
    services: Services,
) -> None:
    current, candidate = with_canary(services)

    services.lifecycle.promote_canary(PID, actor="carol")

    assert plugin_version(services) == ("ACTIVE", "2.0.0")
    assert running(services) == {"2.0.0": candidate}
    assert services.runtime.status(current) is None
    assert rows(services) == [(candidate, "2.0.0", None)]
    route = services.broker.route(PID)
    assert route is not None and route.version == "2.0.0"
    assert route.endpoint == services.runtime.status(candidate).endpoint  # type: ignore[union-attr]
    assert services.broker.canary(PID) is None
    assert history(services)[-1] == ("upgraded", "2.0.0", "1.0.0", "carol")
    assert services.edges(PID)[-1] == ("ACTIVE", "reload", "ACTIVE")
    assert canary_events(services)[-1] == ("promoted", "2.0.0", 30)
    # Like an upgrade: a rollback returns to the version the candidate replaced.
    services.lifecycle.rollback(PID)
    assert plugin_version(services) == ("ACTIVE", "1.0.0")


def test_abort_retires_the_candidate_and_the_current_version_serves_on(
    services: Services,
) -> None:
    current, candidate = with_canary(services)
    route = services.broker.route(PID)

    services.lifecycle.abort_canary(PID, actor="dave")

    assert running(services) == {"1.0.0": current}
    assert services.runtime.status(candidate) is None
    assert rows(services) == [(current, "1.0.0", None)]
    assert services.broker.route(PID) == route and services.broker.canary(PID) is None
    assert plugin_version(services) == ("ACTIVE", "1.0.0")
    assert history(services)[-1] == ("canary_aborted", "2.0.0", "1.0.0", "dave")
    assert canary_events(services)[-1] == ("aborted", "2.0.0", 30)


def test_a_candidate_that_does_not_start_leaves_nothing_behind(services: Services) -> None:
    current = two_versions(services)
    route = services.broker.route(PID)
    services.plugins.unhealthy.add(PID)  # health is asked of the new container only

    with pytest.raises(CanaryFailed) as failed:
        services.lifecycle.start_canary(PID, version="2.0.0", weight=50, actor="erin")
    services.plugins.unhealthy.clear()

    error = failed.value
    assert (error.status_code, error.code) == (409, "canary_failed")
    assert error.details["error"]["code"] == "startup_timeout"
    assert running(services) == {"1.0.0": current}
    assert rows(services) == [(current, "1.0.0", None)]
    assert services.broker.route(PID) == route and services.broker.canary(PID) is None
    assert plugin_version(services) == ("ACTIVE", "1.0.0")
    assert history(services)[-1] == ("canary_failed", "2.0.0", "1.0.0", "erin")


def test_a_candidate_that_crashes_is_dropped_and_the_plugin_stays_active(
    services: Services,
) -> None:
    current, candidate = with_canary(services)
    route = services.broker.route(PID)

    event = services.runtime.crash(candidate, exit_code=7)
    services.supervision.on_runtime_event(event)

    assert plugin_version(services) == ("ACTIVE", "1.0.0")
    assert services.broker.route(PID) == route and services.broker.canary(PID) is None
    assert running(services) == {"1.0.0": current}
    assert candidate not in services.runtime.containers  # removed, not left exited
    assert rows(services) == [(current, "1.0.0", None)]
    assert services.timers.scheduled == []  # no restart: the plugin did not crash
    action, version, _, actor = history(services)[-1]
    assert (action, version, actor) == ("canary_failed", "2.0.0", "system")
    reason = services.lifecycle.history(PID, limit=1).items[0].reason or ""
    assert reason.startswith("exited with code 7")
    assert canary_events(services)[-1][0] == "failed"


def test_a_candidate_failing_its_health_checks_is_dropped(services: Services) -> None:
    current, candidate = with_canary(services)
    services.runtime.pause(candidate)  # a frozen process never answers its health check

    services.supervision.probe_health()
    assert services.broker.canary(PID) is not None  # one miss is not enough
    services.supervision.probe_health()

    assert services.broker.canary(PID) is None
    assert running(services) == {"1.0.0": current}
    assert plugin_version(services) == ("ACTIVE", "1.0.0")
    reason = services.lifecycle.history(PID, limit=1).items[0].reason or ""
    assert reason.startswith("failed 2 health checks")


def test_a_crash_of_the_current_version_ends_the_canary(services: Services) -> None:
    current, _ = with_canary(services)

    event = services.runtime.crash(current)
    services.supervision.on_runtime_event(event)

    assert plugin_version(services)[0] == "FAILED"
    assert services.broker.route(PID) is None and services.broker.canary(PID) is None
    assert services.runtime.running(PID) == [] and rows(services) == []
    assert [h[0] for h in history(services)[-2:]] == ["failed", "canary_aborted"]
    # The restart brings back the current version alone.
    services.timers.fire_last()
    assert list(running(services)) == ["1.0.0"]


def test_reconcile_after_a_restart_keeps_the_candidate_as_the_canary(services: Services) -> None:
    current, candidate = with_canary(services, 40)

    again = wire(
        services.engine, services.settings, services.runtime, services.plugins, services.tmp
    )
    report = again.supervision.reconcile()

    assert report["removed"] == [] and report["adopted"] == [PID]
    assert running(services) == {"1.0.0": current, "2.0.0": candidate}
    route, canary = again.broker.route(PID), again.broker.canary(PID)
    assert route is not None and route.version == "1.0.0"
    assert canary is not None and (canary.weight, canary.route.version) == (40, "2.0.0")
    assert canary.route.endpoint == services.runtime.status(candidate).endpoint  # type: ignore[union-attr]
    assert rows(services) == [(current, "1.0.0", None), (candidate, "2.0.0", 40)]
    # A later round finds it all as it was.
    again.supervision.reconciled.set()
    assert again.supervision.reconcile()["removed"] == []
    assert again.broker.canary(PID) == canary
    # The restarted orchestrator can promote it.
    again.lifecycle.promote_canary(PID)
    assert running(services) == {"2.0.0": candidate}


def test_reconcile_drops_a_canary_whose_candidate_is_gone(services: Services) -> None:
    current, candidate = with_canary(services)
    services.runtime.remove(candidate)  # gone while the orchestrator was down

    again = wire(
        services.engine, services.settings, services.runtime, services.plugins, services.tmp
    )
    again.supervision.reconcile()

    assert again.broker.canary(PID) is None and again.broker.route(PID) is not None
    assert plugin_version(services) == ("ACTIVE", "1.0.0")
    assert rows(services) == [(current, "1.0.0", None)]
    assert history(services)[-1][0] == "canary_failed"
    assert services.lifecycle.history(PID, limit=1).items[0].reason == "container vanished"


@pytest.mark.parametrize("operation", ["reload", "upgrade", "disable"])
def test_reload_upgrade_and_disable_end_the_canary_first(
    services: Services, operation: str
) -> None:
    _, candidate = with_canary(services)
    services.install(PID, version="3.0.0")
    if operation == "reload":
        services.lifecycle.reload(PID, actor="frank")
    elif operation == "upgrade":
        services.lifecycle.upgrade(PID, version="3.0.0", actor="frank")
    else:
        services.lifecycle.disable(PID, actor="frank")

    assert services.runtime.status(candidate) is None
    assert services.broker.canary(PID) is None
    assert all(weight is None for _, _, weight in rows(services))
    aborted = [h for h in history(services) if h[0] == "canary_aborted"]
    assert aborted == [("canary_aborted", "2.0.0", "1.0.0", "frank")]
    # A reload takes the version installed last (pending), as without a canary.
    expected = {"reload": ["3.0.0"], "upgrade": ["3.0.0"], "disable": []}[operation]
    assert sorted(running(services)) == expected


def test_a_new_config_and_new_limits_reach_the_candidate_too(services: Services) -> None:
    with_canary(services)
    services.plugins.initialized.clear()

    services.lifecycle.set_config(PID, {"init_delay_s": 0})
    services.lifecycle.set_limits(PID, {"concurrency": 3})

    assert [(p, c) for p, c, _ in services.plugins.initialized] == [
        (PID, {"init_delay_s": 0}),
        (PID, {"init_delay_s": 0}),
    ]
    canary = services.broker.canary(PID)
    assert canary is not None and canary.route.concurrency == 3 and canary.weight == 30


@pytest.fixture
def replica_b(services: Services) -> Iterator[tuple[Services, RouteSync]]:
    b = wire(services.engine, services.settings, services.runtime, services.plugins, services.tmp)
    sync = RouteSync(
        engine=b.engine,
        broker=b.broker,
        containers=b.supervision.containers,
        locks=b.lifecycle.locks,
        interval_s=60,
    )
    yield b, sync
    b.supervision.stop()


def test_another_replica_routes_the_canary_share_as_the_database_says(
    services: Services, replica_b: tuple[Services, RouteSync]
) -> None:
    b, sync = replica_b
    assert CANARY_EVENT in ROUTE_EVENTS  # each change reaches the others as it happens
    two_versions(services)
    sync.resync_all()
    assert b.broker.canary(PID) is None

    services.lifecycle.start_canary(PID, version="2.0.0", weight=30)
    sync.resync_all()  # the safety net sees it as an event would
    mine, theirs = services.broker.canary(PID), b.broker.canary(PID)
    assert mine is not None and theirs == mine
    assert theirs.route.call_token == mine.route.call_token

    services.lifecycle.start_canary(PID, version="2.0.0", weight=60)
    sync.resync(PID)
    assert b.broker.canary(PID).weight == 60  # type: ignore[union-attr]

    promoted = services.broker.canary(PID).route  # type: ignore[union-attr]
    services.lifecycle.promote_canary(PID)
    sync.resync(PID)
    assert b.broker.route(PID) == promoted and b.broker.canary(PID) is None

    services.lifecycle.start_canary(PID, version="1.0.0", weight=10)
    sync.resync(PID)
    assert b.broker.canary(PID) is not None
    services.lifecycle.abort_canary(PID)
    sync.resync_all()
    assert b.broker.canary(PID) is None and b.broker.route(PID) == promoted


def test_a_plugin_with_a_canary_is_never_paused(services: Services) -> None:
    clock: list[float] = [1_000_000.0]
    services.broker.pauses.clock = lambda: clock[0]
    idle = IdlePause(
        engine=services.engine,
        runtime=services.runtime,
        broker=services.broker,
        locks=services.lifecycle.locks,
        idle_s=60,
        events=services.events,
    )
    current, _ = with_canary(services)
    idle.pause_idle()  # first sight of the containers
    clock[0] += 3600

    assert idle.pause_idle() == []
    assert not services.runtime.containers[current].status.paused
    with pytest.raises(Conflict) as refused:
        idle.pause_now(PID)
    assert refused.value.code == "canary_running"
    # Once the canary is gone it is paused as any other idle plugin.
    services.lifecycle.abort_canary(PID)
    assert idle.pause_idle() == [PID]
    assert services.runtime.containers[current].status.paused


def test_a_paused_plugin_is_thawed_when_a_canary_starts(services: Services) -> None:
    idle = IdlePause(
        engine=services.engine,
        runtime=services.runtime,
        broker=services.broker,
        locks=services.lifecycle.locks,
        idle_s=60,
        events=services.events,
    )
    current = two_versions(services)
    idle.pause_now(PID)
    assert services.runtime.containers[current].status.paused

    services.lifecycle.start_canary(PID, version="2.0.0", weight=10)

    assert not services.runtime.containers[current].status.paused
    assert PID not in services.broker.pauses.paused
    with session_scope(services.engine) as session:
        row = plugin_store.current_container(session, plugin_id=PID)
        assert row is not None and row.id == current


def test_the_view_counts_each_versions_calls_through_this_replica(services: Services) -> None:
    with_canary(services, 50)
    stats = services.broker.canary(PID).stats  # type: ignore[union-attr]
    for ms in (2, 4, 6):
        stats.current.add(ms / 1000, failed=False)
    stats.candidate.add(0.010, failed=True)

    view = services.lifecycle.canary(PID)

    summary: dict[str, Any] = view.current.model_dump()
    assert (summary["calls"], summary["errors"]) == (3, 0)
    assert summary["p50_ms"] == pytest.approx(4, rel=0.05)
    assert (view.candidate.calls, view.candidate.errors) == (1, 1)
    assert view.state == "running" and view.weight == 50
