"""Catalog statistics recorded from the lifecycle and the broker's tally, over SQLite and
FakeRuntime: catalog installs only (judged by the installed image's digest), each install,
uninstall and call counted once with two replicas, active installs as a level, calls by UTC
day, one transaction per flush, and a failed flush written with the next one."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
import yaml
from sqlalchemy.exc import OperationalError

from orchestrator.catalog.tracking import CatalogTracking
from orchestrator.domain.manifest import Manifest
from orchestrator.events.bus import Event, EventBus
from orchestrator.runtime.base import LABEL_MANIFEST
from orchestrator.services.install import InstallRequest
from orchestrator.store import catalog as catalog_store
from orchestrator.store.catalog import DailyStats, StatsSummary
from orchestrator.store.catalog_models import CatalogPlugin
from orchestrator.store.db import session_scope
from orchestrator.store.models import utcnow
from tests.fixtures.plugins import PLUGINS
from tests.unit.services.conftest import Services, services, settings, wire

__all__ = ["services", "settings"]  # the services' fixtures, shared

PID = "com.acme.probe"
REGISTRY = "registry.example"


def image(services: Services, version: str, *, salt: str = "") -> str:
    """A probe plugin image (``PID``, ``version``) in the fake registry, by digest."""
    data: dict[str, Any] = yaml.safe_load((PLUGINS / "probe" / "plugin.yaml").read_text())
    data.update(id=PID, version=version)
    digest = hashlib.sha256(f"{PID}@{version}{salt}".encode()).hexdigest()
    ref = f"{REGISTRY}/acme/probe@sha256:{digest}"
    services.runtime.publish(ref, labels={LABEL_MANIFEST: json.dumps(data)})
    return ref


def publish(services: Services, ref: str) -> None:
    """Put the image ``ref`` in the catalog as its manifest's version."""
    info = services.runtime.registry[ref]
    manifest = Manifest.model_validate(json.loads(info.labels[LABEL_MANIFEST]))
    with session_scope(services.engine) as session:
        if catalog_store.get_publisher(session, publisher_id="acme") is None:
            catalog_store.add_publisher(session, publisher_id="acme", name="Acme")
        catalog_store.publish_version(
            session, manifest=manifest, image=ref, publisher="acme", published_by="test"
        )


def install(services: Services, ref: str) -> None:
    services.installs.install(InstallRequest(image=ref))


def tracker_for(services: Services) -> CatalogTracking:
    tracking = CatalogTracking(
        engine=services.engine,
        broker=services.broker,
        events=services.events,
        interval_s=3600,  # flushed by the tests
    )
    tracking.attach()
    tracking.load()
    return tracking


@pytest.fixture
def tracker(services: Services) -> Iterator[CatalogTracking]:
    tracking = tracker_for(services)
    yield tracking
    asyncio.run(tracking.aclose())


def flush(*trackers: CatalogTracking) -> None:
    for tracking in trackers:
        asyncio.run(tracking.flush())


def today(services: Services, version: str | None = None, day: date | None = None) -> DailyStats:
    day = day or utcnow().date()
    with session_scope(services.engine) as session:
        [stats] = catalog_store.daily_stats(
            session, plugin_id=PID, since=day, until=day, version=version
        )
        return stats


def summary(services: Services) -> StatsSummary:
    with session_scope(services.engine) as session:
        return catalog_store.stats_summary(session, plugin_id=PID)


def calls(tracking: CatalogTracking, *times_ms: float, failed: int = 0) -> None:
    """Calls as the broker's fan-out counts them; the last ``failed`` ones failed."""
    for i, ms in enumerate(times_ms):
        tracking.tally.count("analyzer", PID, ms, failed=i >= len(times_ms) - failed)


def test_a_catalog_install_is_counted_from_install_to_uninstall(
    services: Services, tracker: CatalogTracking
) -> None:
    ref = image(services, "1.0.0")
    publish(services, ref)

    install(services, ref)
    flush(tracker)
    assert (today(services).installs, today(services).active_installs) == (1, 0)

    services.lifecycle.enable(PID)
    flush(tracker)
    assert (today(services).installs, today(services).active_installs) == (1, 1)

    calls(tracker, *[10.0] * 9, 200.0, failed=1)
    flush(tracker)
    day = today(services)
    assert (day.calls, day.errors) == (10, 1)
    assert day.latency_p50_ms == pytest.approx(10, rel=0.06)
    assert day.latency_p99_ms == pytest.approx(200, rel=0.06)
    assert summary(services).latency_mean_ms == pytest.approx(29.0)  # (9 * 10 + 200) / 10
    # The summaries still take the broker's tally: the same calls, once there too.
    tally, _ = services.broker.take_tally()
    assert tally[("analyzer", PID)][:2] == [10, 1]

    services.lifecycle.disable(PID)
    services.lifecycle.uninstall(PID)
    flush(tracker)
    flush(tracker)  # nothing new: nothing added
    day = today(services)
    assert (day.installs, day.uninstalls, day.active_installs, day.calls) == (1, 1, 0, 10)
    with session_scope(services.engine) as session:
        entry = session.get(CatalogPlugin, PID)
        assert entry is not None and (entry.installs, entry.active_installs) == (1, 0)


def test_a_plugin_built_here_or_pinned_to_another_digest_does_not_count(
    services: Services, tracker: CatalogTracking
) -> None:
    publish(services, image(services, "1.0.0"))

    # Built here from a bundle, with the catalog's id and version.
    services.install(PID, version="1.0.0")
    flush(tracker)
    services.lifecycle.enable(PID)
    calls(tracker, 5.0, 5.0)
    flush(tracker)
    services.lifecycle.disable(PID)
    services.lifecycle.uninstall(PID)
    flush(tracker)

    # The same id and version, from an image that is not the one published.
    other = image(services, "1.0.0", salt="rebuilt")
    install(services, other)
    services.lifecycle.enable(PID)
    calls(tracker, 5.0)
    flush(tracker)
    services.lifecycle.disable(PID)
    services.lifecycle.uninstall(PID)
    flush(tracker)

    totals = summary(services)
    assert (totals.installs, totals.uninstalls, totals.active_installs) == (0, 0, 0)
    assert (totals.calls, totals.latency_p50_ms) == (0, None)


def test_an_uninstall_after_a_restart_is_judged_by_the_installed_image(
    services: Services, tracker: CatalogTracking
) -> None:
    publish(services, image(services, "1.0.0"))
    services.install(PID, version="1.0.0")  # built here: not the catalog's
    asyncio.run(tracker.aclose())

    restarted = tracker_for(services)  # reads the installed versions as it starts
    try:
        services.lifecycle.uninstall(PID)
        flush(restarted)
    finally:
        asyncio.run(restarted.aclose())
    assert summary(services).uninstalls == 0


def test_an_install_and_uninstall_between_two_flushes_count_by_id_and_version(
    services: Services, tracker: CatalogTracking
) -> None:
    ref = image(services, "1.0.0")
    publish(services, ref)
    install(services, ref)
    services.lifecycle.uninstall(PID)  # its rows are gone before the tracker read them
    flush(tracker)
    day = today(services)
    assert (day.installs, day.uninstalls, day.active_installs) == (1, 1, 0)


def test_events_a_plugin_or_a_caller_publishes_count_nothing(
    services: Services, tracker: CatalogTracking
) -> None:
    publish(services, image(services, "1.0.0"))
    payload = {"plugin": PID, "version": "1.0.0", "from": "UNLOADED", "to": "LOADED"}
    for source in (f"plugin:{PID}", "api:admin"):
        services.events.emit_sync("plugin.installed", source=source, subject=PID, payload=payload)
    flush(tracker)
    assert summary(services).installs == 0


def test_an_upgrade_moves_the_active_install_to_the_new_version(
    services: Services, tracker: CatalogTracking
) -> None:
    old, new = image(services, "1.0.0"), image(services, "1.1.0")
    publish(services, old)
    publish(services, new)
    install(services, old)
    services.lifecycle.enable(PID)
    flush(tracker)
    assert today(services, "1.0.0").active_installs == 1

    install(services, new)  # waits as the pending version while 1.0.0 serves
    services.lifecycle.upgrade(PID)
    calls(tracker, 3.0, 3.0)  # to the version that serves now
    flush(tracker)
    assert today(services, "1.0.0").active_installs == 0
    after = today(services, "1.1.0")
    assert (after.active_installs, after.calls) == (1, 2)
    assert (summary(services).installs, summary(services).active_installs) == (1, 1)


def test_calls_count_on_the_utc_day_they_were_made(
    services: Services, tracker: CatalogTracking
) -> None:
    ref = image(services, "1.0.0")
    publish(services, ref)
    install(services, ref)
    services.lifecycle.enable(PID)
    midnight = datetime.combine(utcnow().date(), datetime.min.time(), tzinfo=UTC)
    moments = iter([midnight.timestamp() - 1, midnight.timestamp() + 1])
    tracker.tally.clock = lambda: next(moments)

    calls(tracker, 4.0, 4.0)
    flush(tracker)
    yesterday = midnight.date() - timedelta(days=1)
    assert today(services, day=yesterday).calls == 1
    assert today(services).calls == 1


def test_a_flush_is_one_transaction_and_a_failed_one_is_written_with_the_next(
    services: Services, tracker: CatalogTracking, monkeypatch: pytest.MonkeyPatch
) -> None:
    old, new = image(services, "1.0.0"), image(services, "1.1.0")
    publish(services, old)
    publish(services, new)
    install(services, old)
    services.lifecycle.enable(PID)
    calls(tracker, *[2.0] * 50)

    real = catalog_store.record_stats

    def database_away(*args: Any, **kwargs: Any) -> None:
        raise OperationalError("INSERT", {}, Exception("database is locked"))

    monkeypatch.setattr(catalog_store, "record_stats", database_away)
    with pytest.raises(OperationalError):
        flush(tracker)
    assert summary(services).installs == 0

    monkeypatch.setattr(catalog_store, "record_stats", real)
    install(services, new)
    services.lifecycle.upgrade(PID)  # a second version's rows in the same flush
    calls(tracker, *[2.0] * 5)
    commits: list[object] = []

    def committed(connection: object) -> None:
        commits.append(connection)

    sa.event.listen(services.engine, "commit", committed)
    try:
        flush(tracker)
    finally:
        sa.event.remove(services.engine, "commit", committed)
    assert len(commits) == 1
    assert (today(services, "1.0.0").installs, today(services, "1.0.0").calls) == (1, 50)
    assert today(services, "1.1.0").calls == 5


def test_with_two_replicas_each_operation_and_each_call_counts_once(services: Services) -> None:
    replica = wire(
        services.engine, services.settings, services.runtime, services.plugins, services.tmp
    )
    ref = image(services, "1.0.0")
    publish(services, ref)

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        a, b = services, replica
        for bus in (a.events, b.events):
            bus.bind(loop)

        # What the Redis stream does: each replica's committed events reach the other's
        # subscribers as plain dispatches.
        def stream(to: EventBus) -> Callable[[list[Event]], None]:
            def publish(events: list[Event]) -> None:
                for event in events:
                    to.dispatch(event)

            return publish

        a.events.on_committed(stream(b.events))
        b.events.on_committed(stream(a.events))
        trackers = [tracker_for(a), tracker_for(b)]

        async def flush_both() -> None:
            await asyncio.sleep(0.05)  # the dispatched events' handlers run
            for tracking in trackers:
                await tracking.flush()

        await asyncio.to_thread(install, a, ref)
        await asyncio.to_thread(a.lifecycle.enable, PID)
        route = a.broker.route(PID)
        assert route is not None
        b.broker.set_route(route)  # as its route sync would
        await flush_both()
        assert (today(a).installs, today(a).active_installs) == (1, 1)

        calls(trackers[0], 3.0, 3.0, 3.0)
        calls(trackers[1], 3.0, 3.0, failed=1)
        await flush_both()
        assert (today(a).calls, today(a).errors) == (5, 1)

        await asyncio.to_thread(b.lifecycle.disable, PID)
        await asyncio.to_thread(b.lifecycle.uninstall, PID)
        await flush_both()
        day = today(a)
        assert (day.installs, day.uninstalls, day.active_installs, day.calls) == (1, 1, 0, 5)
        for tracking in trackers:
            await tracking.aclose()

    try:
        asyncio.run(scenario())
    finally:
        replica.supervision.stop()
