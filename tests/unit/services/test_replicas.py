"""Replicas in process: two sets of services over one database and one (fake) container
engine. Route re-reads, stale routes, the per-plugin lock across replicas (PostgreSQL) and the
supervisor lease."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import pytest
from sqlalchemy.engine import Engine

from orchestrator.broker.errors import PluginUnreachable
from orchestrator.config import Settings
from orchestrator.domain.errors import Conflict
from orchestrator.runtime.base import ContainerSpec
from orchestrator.services.containers import isolation_for
from orchestrator.services.leadership import Leadership
from orchestrator.services.locks import PluginLocks
from orchestrator.services.routing import RouteSync
from tests.unit.services.conftest import Services, wire

PID = "com.summit-tests.probe"


@pytest.fixture
def replica_b(services: Services) -> Iterator[tuple[Services, RouteSync]]:
    """A second replica of ``services``' deployment, with its route re-reader."""
    b = wire(services.engine, services.settings, services.runtime, services.plugins, services.tmp)
    sync = RouteSync(
        engine=b.engine,
        broker=b.broker,
        containers=b.supervision.containers,
        locks=b.lifecycle.locks,
        interval_s=60,
    )
    b.broker.refresh = sync.refresh
    yield b, sync
    b.supervision.stop()


def test_the_other_replica_routes_each_change_as_the_database_says(
    services: Services, replica_b: tuple[Services, RouteSync]
) -> None:
    b, sync = replica_b
    services.install(PID)
    assert sync.resync(PID) is None  # installed, not ACTIVE: no route

    services.lifecycle.enable(PID)
    mine, theirs = services.broker.route(PID), sync.resync(PID)
    assert mine is not None and theirs == mine
    assert theirs.call_token and theirs.call_token == mine.call_token

    services.lifecycle.reload(PID)
    assert sync.resync(PID) == services.broker.route(PID) != mine

    services.lifecycle.disable(PID)
    assert sync.resync(PID) is None and b.broker.route(PID) is None


def test_resync_all_drops_routes_of_plugins_the_database_no_longer_has(
    services: Services, replica_b: tuple[Services, RouteSync]
) -> None:
    b, sync = replica_b
    services.install(PID)
    services.lifecycle.enable(PID)
    sync.resync_all()
    assert b.broker.route(PID) is not None
    services.lifecycle.disable(PID)
    services.lifecycle.uninstall(PID)
    sync.resync_all()
    assert b.broker.routes() == []


def test_a_stale_route_to_a_disabled_plugin_answers_not_active(
    services: Services, replica_b: tuple[Services, RouteSync]
) -> None:
    b, sync = replica_b
    services.install(PID)
    services.lifecycle.enable(PID)
    sync.resync(PID)
    services.lifecycle.disable(PID)  # B has not heard of it: its route is stale
    assert b.broker.route(PID) is not None

    with pytest.raises(Conflict) as refused:
        asyncio.run(b.broker.execute("analyzer", {"x": 1}, plugins=[PID]))
    assert refused.value.code == "not_active"
    assert b.broker.route(PID) is None


def test_a_plugin_enabled_elsewhere_a_moment_ago_is_looked_up_when_named(
    services: Services, replica_b: tuple[Services, RouteSync]
) -> None:
    b, _ = replica_b
    services.install(PID)
    services.lifecycle.enable(PID)
    assert b.broker.route(PID) is None  # the event has not reached B yet
    # Not 409 not_active: B looked it up and called it (a fake container, which answers
    # nothing).
    with pytest.raises(PluginUnreachable):
        asyncio.run(b.broker.execute("analyzer", {"x": 1}, plugins=[PID]))
    assert b.broker.route(PID) == services.broker.route(PID)


def test_reconcile_leaves_a_plugin_another_thread_is_busy_with_alone(services: Services) -> None:
    services.install(PID)
    services.lifecycle.enable(PID)
    container = services.container(PID)
    held, release = threading.Event(), threading.Event()

    def busy() -> None:
        with services.lifecycle.locks.hold(PID):
            held.set()
            release.wait(10)

    worker = threading.Thread(target=busy)
    worker.start()
    try:
        held.wait(5)
        report = services.supervision.reconcile()
    finally:
        release.set()
        worker.join()
    assert report["busy"] == [PID] and report["removed"] == []
    assert services.container(PID) == container


# -- the lock across replicas ----------------------------------------------------------------


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_the_plugin_lock_holds_across_replicas_on_postgres(engine: Engine) -> None:
    here, there = PluginLocks(engine, namespace="t"), PluginLocks(engine, namespace="t")
    other = PluginLocks(engine, namespace="another-deployment")
    assert here.shared
    with here.hold(PID), here.hold(PID):  # re-entrant in one thread
        with there.attempt(PID) as got:
            assert not got
        with other.attempt(PID) as got:
            assert got  # keyed by the deployment too
        with there.attempt("com.summit-tests.other") as got:
            assert got
    with there.attempt(PID) as got:
        assert got


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_a_waiting_replica_gets_the_lock_when_the_holder_lets_go(engine: Engine) -> None:
    here, there = PluginLocks(engine, namespace="t"), PluginLocks(engine, namespace="t")
    order: list[str] = []
    with here.hold(PID):
        waiter = threading.Thread(target=lambda: _hold_and_note(there, order))
        waiter.start()
        time.sleep(0.3)
        order.append("here lets go")
    waiter.join(10)
    assert order == ["here lets go", "there holds"]


def _hold_and_note(locks: PluginLocks, order: list[str]) -> None:
    with locks.hold(PID):
        order.append("there holds")


def test_on_sqlite_the_lock_is_in_process(engine: Engine) -> None:
    locks = PluginLocks(engine)
    assert not locks.shared
    got: list[bool] = []
    with locks.hold(PID):
        t = threading.Thread(target=lambda: got.append(_attempt(locks)))
        t.start()
        t.join()
    assert got == [False] and _attempt(locks)


def _attempt(locks: PluginLocks) -> bool:
    with locks.attempt(PID) as held:
        return held


# -- the supervisor lease --------------------------------------------------------------------


def _candidate(engine: Engine, name: str, log: list[str], lease_s: float) -> Leadership:
    return Leadership(
        engine,
        holder=name,
        lease_s=lease_s,
        renew_s=lease_s / 4,
        on_elected=lambda: log.append(f"{name} elected"),
        on_deposed=lambda: log.append(f"{name} deposed"),
    )


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
def test_one_supervisor_and_a_clean_handover(engine: Engine) -> None:
    log: list[str] = []
    a, b = _candidate(engine, "a", log, 30), _candidate(engine, "b", log, 30)
    a.tick()
    b.tick()
    assert a.leader and not b.leader and b.decided.is_set()
    a.tick()  # renewing changes nothing
    a.stop()  # gives the lease up
    b.tick()
    assert b.leader and log == ["a elected", "a deposed", "b elected"]


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
def test_a_lease_nobody_renews_is_taken_over_and_the_old_leader_steps_down(
    engine: Engine,
) -> None:
    log: list[str] = []
    a, b = _candidate(engine, "a", log, 0.4), _candidate(engine, "b", log, 0.4)
    a.tick()
    b.tick()
    assert not b.leader
    time.sleep(0.5)  # a stops renewing (its process hangs, its node goes away)
    b.tick()
    a.tick()
    assert b.leader and not a.leader
    assert log == ["a elected", "b elected", "a deposed"]


def test_the_lease_must_outlast_its_renewals(engine: Engine) -> None:
    with pytest.raises(ValueError):
        Leadership(engine, holder="a", lease_s=1, renew_s=1, on_elected=print, on_deposed=print)


def test_settings_hold_the_replica_defaults() -> None:
    s = Settings()
    assert s.leader_lease_s + s.leader_renew_s < 15  # a new leader within 15 s


def test_on_kubernetes_a_source_bundle_is_refused_before_anything_is_read(
    services: Services,
) -> None:
    from orchestrator.services.install import InstallRequest

    installs = services.installs
    installs.settings = services.settings.model_copy(update={"runtime": "kubernetes"})
    with pytest.raises(Conflict) as refused:
        installs.check(InstallRequest())
    assert refused.value.code == "source_install_unsupported"
    assert "summit-plugin publish" in refused.value.message
    installs.check(InstallRequest(image="registry.example/p@sha256:" + "0" * 64))


# -- isolation tiers -------------------------------------------------------------------------


def _spec_of(services: Services, plugin_id: str) -> ContainerSpec:
    [status] = services.runtime.running(plugin_id)
    return services.runtime.containers[status.id].spec


def test_the_isolation_tier_is_the_operators_then_the_unsigned_tier_then_the_default(
    services: Services,
) -> None:
    services.settings.isolation_unsigned = "gvisor"
    services.install(PID)
    services.lifecycle.enable(PID)
    spec = _spec_of(services, PID)
    assert spec.isolation == "gvisor"  # unsigned
    assert spec.call_token and len(spec.call_token) >= 32

    services.lifecycle.set_limits(PID, {"isolation": "runc"})
    services.lifecycle.reload(PID)
    assert _spec_of(services, PID).isolation == "runc"  # the operator's choice wins

    services.lifecycle.set_limits(PID, {"isolation": None})
    services.settings.isolation_unsigned = None
    services.lifecycle.reload(PID)
    assert _spec_of(services, PID).isolation == services.settings.isolation == "runc"


def test_isolation_for_a_signed_plugin_is_the_default_tier() -> None:
    settings = Settings(isolation="runc", isolation_unsigned="gvisor")
    assert isolation_for({}, settings, signed=True) == "runc"
    assert isolation_for({}, settings, signed=False) == "gvisor"
    assert isolation_for({"isolation": "gvisor"}, settings, signed=True) == "gvisor"


def test_a_re_read_that_finds_nothing_changed_parses_no_manifest(
    services: Services, replica_b: tuple[Services, RouteSync], monkeypatch: pytest.MonkeyPatch
) -> None:
    from orchestrator.services import routing

    b, sync = replica_b
    services.install(PID)
    services.lifecycle.enable(PID)
    parsed: list[str] = []
    real = routing.manifest_of
    monkeypatch.setattr(
        routing,
        "manifest_of",
        lambda session, plugin: parsed.append(plugin.id) or real(session, plugin),
    )
    sync.resync_all()
    sync.resync_all()
    assert parsed == [PID] and b.broker.route(PID) == services.broker.route(PID)

    services.lifecycle.set_limits(PID, {"concurrency": 3})  # logs no event: the re-read finds it
    sync.resync_all()
    route = b.broker.route(PID)
    assert parsed == [PID, PID] and route is not None and route.concurrency == 3
