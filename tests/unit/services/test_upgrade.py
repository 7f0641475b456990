"""Upgrade, automatic rollback of an upgrade that does not start, rollback, and the
installation history, against FakeRuntime: which container serves, which version is current,
and what the history says, with who."""

from __future__ import annotations

import io
import secrets
from typing import Any

import pytest

from orchestrator.domain.errors import Conflict, InvalidInput, NotFound
from orchestrator.services.bundles import pack_directory
from orchestrator.services.install import InstallRequest
from orchestrator.services.lifecycle import RollbackFailed, UpgradeRolledBack
from orchestrator.services.plugins import PluginView
from orchestrator.store import crud
from orchestrator.store.db import session_scope
from tests.fixtures.plugins import make_plugin

from .conftest import Services

PID = "com.summit-tests.probe"
BASE = "com.summit-tests.base"


def install(
    services: Services, plugin_id: str = PID, *, actor: str = "system", **changes: Any
) -> PluginView:
    """Install a copy of the probe fixture as ``actor`` (the route passes the caller)."""
    folder = make_plugin(services.tmp / f"src-{secrets.token_hex(4)}", id=plugin_id, **changes)
    bundle = io.BytesIO(pack_directory(folder))
    return services.installs.install(InstallRequest(actor=actor), bundle=bundle)


def plugin(services: Services, plugin_id: str = PID) -> tuple[str, str, str | None]:
    """(state, version, pending_version)."""
    with session_scope(services.engine) as session:
        row = crud.get_plugin(session, plugin_id=plugin_id)
        assert row is not None
        return row.state, row.version, row.pending_version


def history(services: Services, plugin_id: str = PID) -> list[tuple[str, str, str | None, str]]:
    """(action, version, from_version, actor), oldest first."""
    items = services.lifecycle.history(plugin_id, limit=1000).items
    return [(h.action, h.version, h.from_version, h.actor) for h in reversed(items)]


def serving(services: Services, plugin_id: str = PID) -> tuple[str, str | None]:
    """The one running container's id and version; the broker routes to it."""
    [status] = services.runtime.running(plugin_id)
    route = services.broker.route(plugin_id)
    assert route is not None and route.endpoint == status.endpoint
    return status.id, status.version


def active_with_pending(services: Services) -> str:
    """v1 ACTIVE, v2 installed beside it (pending); the serving container's id."""
    install(services, version="1.0.0")
    services.lifecycle.enable(PID)
    view = install(services, version="2.0.0")
    assert (view.version, view.pending_version) == ("1.0.0", "2.0.0")
    return serving(services)[0]


def test_upgrade_switches_to_the_installed_version_blue_green(services: Services) -> None:
    old = active_with_pending(services)

    services.lifecycle.upgrade(PID, version=None, actor="alice")

    assert plugin(services) == ("ACTIVE", "2.0.0", None)
    new, version = serving(services)
    assert new != old and version == "2.0.0"
    assert services.runtime.status(old) is None  # retired once the new one served
    assert history(services)[-1] == ("upgraded", "2.0.0", "1.0.0", "alice")
    assert services.edges(PID)[-1] == ("ACTIVE", "reload", "ACTIVE")

    with pytest.raises(Conflict) as same:
        services.lifecycle.upgrade(PID, version="2.0.0", actor="alice")
    assert same.value.code == "no_upgrade"
    with pytest.raises(InvalidInput) as bad:
        services.lifecycle.upgrade(PID, version="2.0", actor="alice")
    assert bad.value.code == "invalid_version"
    with pytest.raises(NotFound) as missing:
        services.lifecycle.upgrade(PID, version="9.9.9", actor="alice")
    assert missing.value.code == "version_not_installed"
    assert missing.value.details["installed_versions"] == ["1.0.0", "2.0.0"]


def test_an_upgrade_that_fails_health_is_rolled_back_and_the_old_container_serves_on(
    services: Services,
) -> None:
    old = active_with_pending(services)
    route = services.broker.route(PID)
    services.plugins.unhealthy.add(PID)

    with pytest.raises(UpgradeRolledBack) as undone:
        services.lifecycle.upgrade(PID, version=None, actor="alice")
    services.plugins.unhealthy.clear()

    error = undone.value
    assert (error.status_code, error.code) == (409, "upgrade_rolled_back")
    assert error.details["version"] == "2.0.0" and error.details["serving"] == "1.0.0"
    assert error.details["error"]["code"] == "startup_timeout"
    assert "did not become healthy" in error.details["error"]["message"]
    # The old container never stopped serving; the failed one is gone.
    assert serving(services) == (old, "1.0.0")
    assert services.broker.route(PID) == route
    assert plugin(services) == ("ACTIVE", "1.0.0", None)  # pending cleared
    action, version, from_version, actor = history(services)[-1]
    assert (action, version, from_version, actor) == ("upgrade_failed", "2.0.0", "1.0.0", "alice")
    reason = services.lifecycle.history(PID, limit=1).items[0].reason
    assert "did not become healthy" in (reason or "")
    assert "fail" not in [a for _, a, _ in services.edges(PID)]

    # Nothing is waiting any more; naming the version tries again, and now it starts.
    with pytest.raises(Conflict) as nothing:
        services.lifecycle.upgrade(PID, version=None)
    assert nothing.value.code == "no_upgrade"
    services.lifecycle.upgrade(PID, version="2.0.0")
    assert plugin(services) == ("ACTIVE", "2.0.0", None)


def test_an_upgrade_outside_an_installed_dependents_range_is_refused_with_the_list(
    services: Services,
) -> None:
    install(services, BASE, version="1.2.0")
    strict, loose, other = "com.summit-tests.strict", "com.summit-tests.loose", "com.summit-tests.c"
    install(services, strict, dependencies=[{"id": BASE, "version": "^1.0"}])
    install(services, loose, dependencies=[{"id": BASE, "version": ">=1.0"}])
    install(services, other, dependencies=[{"id": BASE, "version": "~1.2"}])
    services.lifecycle.enable(strict)  # and BASE with it
    install(services, BASE, version="2.0.0")
    containers = set(services.runtime.containers)

    with pytest.raises(Conflict) as refused:
        services.lifecycle.upgrade(BASE, version="2.0.0", actor="alice")

    assert refused.value.code == "dependents_would_break"
    assert refused.value.details == {
        "version": "2.0.0",
        "dependents": [
            {"id": other, "version": "1.0.0", "range": "~1.2"},
            {"id": strict, "version": "1.0.0", "range": "^1.0"},
        ],
    }
    assert plugin(services, BASE) == ("ACTIVE", "1.2.0", "2.0.0")
    assert set(services.runtime.containers) == containers
    assert history(services, BASE)[-1][0] == "installed"


def test_rollback_returns_to_the_previous_version_the_same_way(services: Services) -> None:
    install(services, version="1.0.0")
    with pytest.raises(Conflict) as none:
        services.lifecycle.rollback(PID, actor="bob")
    assert none.value.code == "no_previous_version"

    services.lifecycle.enable(PID)
    install(services, version="2.0.0")
    services.lifecycle.upgrade(PID, version=None, actor="alice")
    upgraded, _ = serving(services)

    services.lifecycle.rollback(PID, actor="bob")

    assert plugin(services) == ("ACTIVE", "1.0.0", None)
    back, version = serving(services)
    assert back != upgraded and version == "1.0.0"
    assert history(services)[-1] == ("rolled_back", "1.0.0", "2.0.0", "bob")

    # The previous version fails to start: the current one serves on.
    services.plugins.unhealthy.add(PID)
    with pytest.raises(RollbackFailed) as failed:
        services.lifecycle.rollback(PID, actor="bob")
    services.plugins.unhealthy.clear()
    assert failed.value.code == "rollback_failed" and failed.value.status_code == 409
    assert serving(services) == (back, "1.0.0")
    assert history(services)[-1] == ("rollback_failed", "2.0.0", "1.0.0", "bob")

    # A second rollback undoes the first.
    services.lifecycle.rollback(PID, actor="bob")
    assert plugin(services) == ("ACTIVE", "2.0.0", None)


def test_a_plugin_that_is_not_running_just_changes_version(services: Services) -> None:
    active_with_pending(services)
    services.lifecycle.disable(PID)
    assert plugin(services) == ("LOADED", "1.0.0", "2.0.0")

    services.lifecycle.upgrade(PID, version=None, actor="alice")
    assert plugin(services) == ("LOADED", "2.0.0", None)
    assert not services.runtime.running(PID) and services.broker.route(PID) is None
    assert history(services)[-1] == ("upgraded", "2.0.0", "1.0.0", "alice")

    services.lifecycle.rollback(PID, actor="bob")
    assert plugin(services) == ("LOADED", "1.0.0", None)
    assert not services.runtime.running(PID)
    services.lifecycle.enable(PID)
    assert serving(services)[1] == "1.0.0"


def test_a_version_installed_while_loaded_replaces_the_current_one_and_can_be_rolled_back(
    services: Services,
) -> None:
    install(services, version="1.0.0", actor="carol")
    install(services, version="1.1.0", actor="carol")
    assert plugin(services) == ("LOADED", "1.1.0", None)
    services.lifecycle.rollback(PID, actor="bob")
    assert plugin(services) == ("LOADED", "1.0.0", None)
    assert history(services) == [
        ("installed", "1.0.0", None, "carol"),
        ("installed", "1.1.0", "1.0.0", "carol"),
        ("rolled_back", "1.0.0", "1.1.0", "bob"),
    ]


def test_history_names_every_actor_and_outlives_the_uninstall(services: Services) -> None:
    install(services, version="1.0.0", actor="carol")
    services.lifecycle.enable(PID, actor="dave")
    services.lifecycle.reload(PID, actor="dave")
    crash = services.runtime.crash(services.container(PID))
    services.supervision.on_runtime_event(crash)  # the orchestrator's own doing: "system"
    services.lifecycle.disable(PID, actor="erin")
    services.lifecycle.uninstall(PID, actor="frank")

    with session_scope(services.engine) as session:
        assert crud.get_plugin(session, plugin_id=PID) is None
        assert not crud.list_transitions(session, plugin_id=PID)
    assert history(services) == [
        ("installed", "1.0.0", None, "carol"),
        ("enabled", "1.0.0", None, "dave"),
        ("reloaded", "1.0.0", None, "dave"),
        ("failed", "1.0.0", None, "system"),
        ("disabled", "1.0.0", None, "erin"),
        ("uninstalled", "1.0.0", None, "frank"),
    ]
    # Pages, newest first, each entry with its time.
    first = services.lifecycle.history(PID, limit=4)
    assert [h.action for h in first.items] == ["uninstalled", "disabled", "failed", "reloaded"]
    rest = services.lifecycle.history(PID, limit=4, before=first.next)
    assert [h.action for h in rest.items] == ["enabled", "installed"]
    assert rest.next is None and all(h.at for h in rest.items)

    # A reinstall starts a new chapter: nothing from before the uninstall to roll back to.
    install(services, version="2.0.0", actor="carol")
    with pytest.raises(Conflict) as none:
        services.lifecycle.rollback(PID)
    assert none.value.code == "no_previous_version"
    assert history(services)[-1] == ("installed", "2.0.0", None, "carol")

    with pytest.raises(NotFound):
        services.lifecycle.history("com.summit-tests.never", limit=10)
