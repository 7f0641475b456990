"""The lifecycle service against FakeRuntime: every edge of the state machine it takes, each
stored with its reason; an illegal action is a 409 naming the current state and changes
nothing."""

from __future__ import annotations

import pytest

from orchestrator.domain.errors import Conflict, RuntimeUnavailable
from orchestrator.domain.lifecycle import TRANSITIONS, PluginState
from orchestrator.runtime.endpoints import UnixEndpoint
from orchestrator.services.containers import StartFailed
from orchestrator.store import crud
from orchestrator.store.db import session_scope

from .conftest import Services

S = PluginState
PID = "com.summit-tests.probe"


def _force_state(services: Services, plugin_id: str, state: PluginState) -> None:
    """Put a plugin in a state the service only passes through (INITIALIZING, UNLOADING), as
    a killed orchestrator leaves it."""
    with session_scope(services.engine) as session:
        plugin = crud.get_plugin(session, plugin_id=plugin_id)
        assert plugin is not None
        plugin.state = state.value
        session.add(plugin)


def test_install_enable_reload_disable_uninstall(services: Services) -> None:
    view = services.install(PID)
    assert (view.state, view.container) == ("LOADED", None)

    services.lifecycle.enable(PID)
    first = services.container(PID)
    route = services.broker.route(PID)
    assert route is not None and isinstance(route.endpoint, UnixEndpoint)
    assert route.endpoint == services.runtime.status(first).endpoint  # type: ignore[union-attr]
    assert services.plugins.initialized[-1][0] == PID

    services.lifecycle.reload(PID)
    second = services.container(PID)
    assert second != first and services.runtime.status(first) is None
    assert services.broker.route(PID).endpoint != route.endpoint  # type: ignore[union-attr]

    services.lifecycle.disable(PID)
    assert services.state(PID) == "LOADED"
    assert not services.runtime.running(PID) and services.broker.route(PID) is None

    images_before = set(services.runtime.images)
    services.lifecycle.uninstall(PID)
    with session_scope(services.engine) as session:
        assert crud.get_plugin(session, plugin_id=PID) is None
    # Its built image and its kept source go with it.
    assert len(services.runtime.images) == len(images_before) - 1
    assert not list((services.settings.state_dir / "sources").iterdir())


def test_every_edge_the_service_takes_is_stored_with_its_reason(services: Services) -> None:
    services.install(PID)
    services.lifecycle.enable(PID)  # LOADED -enable-> INITIALIZING -initialized-> ACTIVE
    services.lifecycle.reload(PID)  # ACTIVE -reload-> ACTIVE
    crash = services.runtime.crash(services.container(PID))
    services.supervision.on_runtime_event(crash)  # ACTIVE -fail-> FAILED
    services.lifecycle.enable(PID)  # FAILED -enable-> INITIALIZING
    services.lifecycle.disable(PID)  # ACTIVE -disable-> UNLOADING -destroy-> LOADED
    services.plugins.unhealthy.add(PID)
    with pytest.raises(StartFailed):
        services.lifecycle.enable(PID)  # INITIALIZING -fail-> FAILED
    services.plugins.unhealthy.clear()
    services.lifecycle.disable(PID)  # FAILED -disable-> UNLOADING -destroy-> LOADED
    stored = services.edges(PID)
    reasons = services.reasons(PID)
    services.lifecycle.enable(PID)
    services.supervision.crashed(PID, services.container(PID), "failed 2 health checks")
    services.lifecycle.uninstall(PID)  # FAILED -uninstall-> UNLOADED
    other = "com.summit-tests.other"
    services.install(other)
    services.lifecycle.uninstall(other)  # LOADED -uninstall-> UNLOADED

    announced = services.announced_edges(PID) + services.announced_edges(other)
    assert stored == announced[: len(stored)]  # each transition stored and announced
    assert all(TRANSITIONS[(S(f), a)] == S(t) for f, a, t in announced)
    # No code takes UNLOADING --fail--> FAILED: a disable that cannot stop a container raises,
    # and reconcile settles a plugin left UNLOADING at the next start.
    assert {(S(f), a) for f, a, _ in announced} == set(TRANSITIONS) - {(S.UNLOADING, "fail")}
    assert reasons[0] == "installed 1.0.0" and None not in reasons
    assert (reasons[4] or "").startswith("exited with code 3")  # the crash says why


@pytest.mark.parametrize(
    ("state", "action"),
    [
        (S.LOADED, "disable"),
        (S.LOADED, "reload"),
        (S.ACTIVE, "enable"),
        (S.ACTIVE, "uninstall"),
        (S.FAILED, "reload"),
        (S.INITIALIZING, "enable"),
        (S.INITIALIZING, "disable"),
        (S.INITIALIZING, "reload"),
        (S.INITIALIZING, "uninstall"),
        (S.UNLOADING, "enable"),
        (S.UNLOADING, "disable"),
        (S.UNLOADING, "reload"),
        (S.UNLOADING, "uninstall"),
    ],
)
def test_an_illegal_action_is_a_409_with_the_current_state(
    services: Services, state: PluginState, action: str
) -> None:
    services.install(PID)
    if state in (S.ACTIVE, S.FAILED):
        services.lifecycle.enable(PID)
    if state == S.FAILED:
        services.supervision.on_runtime_event(services.runtime.crash(services.container(PID)))
    if state in (S.INITIALIZING, S.UNLOADING):
        _force_state(services, PID, state)
    before = services.edges(PID)
    containers = set(services.runtime.containers)

    with pytest.raises(Conflict) as refused:
        getattr(services.lifecycle, action)(PID)

    assert refused.value.status_code == 409
    assert refused.value.code == "illegal_transition"
    assert refused.value.details["state"] == state.value
    assert action not in refused.value.details["allowed"]
    assert services.state(PID) == state.value
    assert services.edges(PID) == before
    assert set(services.runtime.containers) == containers


def test_a_start_that_fails_leaves_no_container(services: Services) -> None:
    services.install(PID)
    services.plugins.unhealthy.add(PID)
    with pytest.raises(StartFailed) as failed:
        services.lifecycle.enable(PID)
    assert failed.value.code == "startup_timeout"
    assert services.state(PID) == "FAILED"
    assert not services.runtime.containers and services.broker.route(PID) is None
    # The start's log lines are in the reason an operator reads.
    assert "last log lines" in (services.reasons(PID)[-1] or "")


def test_docker_down_refuses_before_any_state_changes(services: Services) -> None:
    services.install(PID)
    services.runtime.unavailable = True
    with pytest.raises(RuntimeUnavailable):
        services.lifecycle.enable(PID)
    assert services.state(PID) == "LOADED"


def test_enable_starts_dependencies_first_and_disable_refuses_their_users(
    services: Services,
) -> None:
    services.install("com.summit-tests.base")
    user = "com.summit-tests.user"
    services.install(user, dependencies=[{"id": "com.summit-tests.base", "version": "^1.0"}])
    services.lifecycle.enable(user)
    assert services.state("com.summit-tests.base") == "ACTIVE"
    with pytest.raises(Conflict) as refused:
        services.lifecycle.disable("com.summit-tests.base")
    assert refused.value.code == "has_dependents"
    services.lifecycle.disable("com.summit-tests.base", cascade=True)
    assert services.state(user) == "LOADED"


def test_limits_and_config_reach_the_running_plugin(services: Services) -> None:
    services.install(PID)
    services.lifecycle.enable(PID)
    services.lifecycle.set_limits(PID, {"concurrency": 4, "rate_limit_requests": None})
    route = services.broker.route(PID)
    assert route is not None and route.concurrency == 4
    assert isinstance(route.endpoint, UnixEndpoint)
    services.lifecycle.set_config(PID, {"init_delay_s": 0})
    assert services.plugins.initialized[-1] == (PID, {"init_delay_s": 0}, [])
