"""Supervision against FakeRuntime: crashes and their restart budget, health probes, and the
reconcile an orchestrator runs when it starts again."""

from __future__ import annotations

import pytest
from sqlalchemy.engine import Engine

from orchestrator.config import Settings
from orchestrator.runtime.base import ContainerSpec, RuntimeEvent
from orchestrator.store import crud
from orchestrator.store.db import session_scope

from .conftest import Services, wire

PID = "com.summit-tests.probe"


def _crash(services: Services, plugin_id: str = PID, **how: object) -> None:
    event = services.runtime.crash(services.container(plugin_id), **how)  # type: ignore[arg-type]
    services.supervision.on_runtime_event(event)


def test_a_crash_is_failed_with_its_cause_then_restarted_after_the_backoff(
    services: Services,
) -> None:
    services.install(PID)
    services.lifecycle.enable(PID)
    first = services.container(PID)
    _crash(services, exit_code=3)

    assert services.state(PID) == "FAILED"
    reason = services.reasons(PID)[-1] or ""
    assert reason.startswith("exited with code 3; last log lines:")
    assert "Traceback" in reason
    assert first not in services.runtime.containers and services.broker.route(PID) is None
    assert services.timers.delays == [1.0]

    services.timers.fire_last()
    assert services.state(PID) == "ACTIVE"
    assert services.container(PID) != first
    assert services.reasons(PID)[-2] == "restarted after a crash"


def test_an_oom_kill_says_so(services: Services) -> None:
    services.install(PID)
    services.lifecycle.enable(PID)
    _crash(services, oom=True)
    assert services.reasons(PID)[-1] == "OOMKilled"


def test_an_oom_event_makes_the_death_that_follows_an_oom_kill(services: Services) -> None:
    """The engine's OOMKilled flag races the exit (gVisor loses it now and then): the
    runtime's ``oom`` event says it instead."""
    services.install(PID)
    services.lifecycle.enable(PID)
    cid = services.container(PID)
    services.supervision.on_runtime_event(RuntimeEvent("oom", cid, PID))
    assert services.state(PID) == "ACTIVE"  # an oom alone is not a death
    _crash(services, exit_code=137)  # no OOMKilled flag on the stopped container
    assert services.reasons(PID)[-1] == "OOMKilled"

    services.timers.fire_last()  # restarted: its next death is judged on its own
    _crash(services, exit_code=137)
    assert (services.reasons(PID)[-1] or "").startswith("exited with code 137")


def test_crashes_within_the_window_double_the_backoff_then_keep_it_failed(
    services: Services,
) -> None:
    services.install(PID)
    services.lifecycle.enable(PID)
    for _ in range(2):
        _crash(services)
        services.timers.fire_last()
        assert services.state(PID) == "ACTIVE"
    _crash(services)  # the third within CRASH_WINDOW_S (CRASH_LIMIT=3)

    assert services.timers.delays == [1.0, 2.0]  # no third restart scheduled
    assert services.state(PID) == "FAILED"
    assert not services.runtime.running(PID)


def test_the_backoff_doubles_up_to_its_cap(services: Services) -> None:
    assert [services.supervision.backoff_s(n) for n in range(1, 7)] == [1, 2, 4, 8, 8, 8]


def test_with_a_larger_budget_every_restart_waits_longer_up_to_the_cap(
    engine: Engine, settings: Settings, services: Services
) -> None:
    roomy = wire(
        engine,
        settings.model_copy(update={"crash_limit": 6}),
        services.runtime,
        services.plugins,
        services.tmp,
    )
    roomy.install(PID)
    roomy.lifecycle.enable(PID)
    for _ in range(5):
        _crash(roomy)
        roomy.timers.fire_last()
    assert roomy.timers.delays == [1.0, 2.0, 4.0, 8.0, 8.0]
    _crash(roomy)
    assert len(roomy.timers.scheduled) == 5 and roomy.state(PID) == "FAILED"


def test_an_operator_action_after_a_crash_wins_over_the_pending_restart(
    services: Services,
) -> None:
    services.install(PID)
    services.lifecycle.enable(PID)
    _crash(services)
    services.lifecycle.disable(PID)
    services.timers.fire_last()  # due, but the plugin moved since the crash
    assert services.state(PID) == "LOADED" and not services.runtime.containers


def test_the_die_of_a_container_retired_by_reload_is_no_crash(services: Services) -> None:
    services.install(PID)
    services.lifecycle.enable(PID)
    old = services.container(PID)
    services.lifecycle.reload(PID)
    # The old container's last words arrive after the reload retired it.
    services.supervision.on_runtime_event(RuntimeEvent("die", old, PID, exit_code=0))
    assert services.state(PID) == "ACTIVE" and not services.timers.scheduled
    assert len(services.runtime.running(PID)) == 1


def test_failed_health_checks_in_a_row_are_a_crash(services: Services) -> None:
    services.install(PID)
    services.lifecycle.enable(PID)
    services.plugins.unhealthy.add(PID)
    services.supervision.probe_health()
    assert services.state(PID) == "ACTIVE"  # one miss is not enough (HEALTH_FAILURES=2)
    services.supervision.probe_health()
    assert services.state(PID) == "FAILED"
    assert services.reasons(PID)[-1].startswith("failed 2 health checks")  # type: ignore[union-attr]
    assert services.timers.delays == [1.0]


def test_a_healthy_answer_resets_the_count(services: Services) -> None:
    services.install(PID)
    services.lifecycle.enable(PID)
    services.plugins.unhealthy.add(PID)
    services.supervision.probe_health()
    services.plugins.unhealthy.clear()
    services.supervision.probe_health()
    services.plugins.unhealthy.add(PID)
    services.supervision.probe_health()
    assert services.state(PID) == "ACTIVE"


# -- reconcile: the orchestrator starts again over the same database and containers ---------


def _restarted(services: Services) -> Services:
    return wire(
        services.engine, services.settings, services.runtime, services.plugins, services.tmp
    )


def test_reconcile_adopts_a_running_container(services: Services) -> None:
    services.install(PID)
    services.lifecycle.enable(PID)
    running = services.container(PID)

    again = _restarted(services)
    report = again.supervision.reconcile()

    assert report == {"adopted": [PID], "removed": [], "restarted": [], "settled": [], "busy": []}
    route = again.broker.route(PID)
    assert route is not None and route.endpoint == services.runtime.status(running).endpoint  # type: ignore[union-attr]
    assert services.container(PID) == running and services.state(PID) == "ACTIVE"


def test_reconcile_removes_orphans_and_their_socket_folders(services: Services) -> None:
    services.install(PID)
    services.lifecycle.enable(PID)
    kept = services.runtime.status(services.container(PID))
    assert kept is not None and kept.endpoint is not None
    # A container deployed by an orchestrator killed before it recorded it.
    orphan = services.runtime.deploy(
        ContainerSpec(plugin_id=PID, version="1.0.0", image=kept.image)
    )
    assert orphan.endpoint is not None

    report = _restarted(services).supervision.reconcile()

    assert report["removed"] == [orphan.name] and report["adopted"] == [PID]
    assert orphan.id not in services.runtime.containers
    assert orphan.endpoint not in services.runtime.endpoints
    assert kept.endpoint in services.runtime.endpoints


def test_reconcile_fails_and_restarts_a_plugin_whose_container_is_gone(
    services: Services,
) -> None:
    services.install(PID)
    services.lifecycle.enable(PID)
    services.runtime.remove(services.container(PID))  # gone while the orchestrator was down

    again = _restarted(services)
    report = again.supervision.reconcile()

    assert report["restarted"] == [PID]
    assert "container gone at orchestrator start" in again.reasons(PID)
    assert again.state(PID) == "ACTIVE" and len(services.runtime.running(PID)) == 1
    with session_scope(services.engine) as session:
        [row] = crud.list_containers(session, plugin_id=PID)
    assert row.id == services.container(PID)


@pytest.mark.parametrize(
    ("left", "report_key", "then"),
    [("INITIALIZING", "restarted", "ACTIVE"), ("UNLOADING", "settled", "LOADED")],
)
def test_reconcile_finishes_what_a_killed_orchestrator_left_half_done(
    services: Services, left: str, report_key: str, then: str
) -> None:
    services.install(PID)
    with session_scope(services.engine) as session:
        plugin = crud.get_plugin(session, plugin_id=PID)
        assert plugin is not None
        plugin.state = left
        session.add(plugin)

    report = _restarted(services).supervision.reconcile()

    assert report[report_key] == [PID]
    assert services.state(PID) == then
