"""The plugin services wired as ``app.py`` wires them, over a real (SQLite) database and a
broker, with ``FakeRuntime`` for Docker and ``FakePlugins`` for the plugin protocol client.
Restart timers are recorded, not run: a test fires them when it wants to."""

from __future__ import annotations

import io
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from orchestrator.broker import Broker
from orchestrator.config import Settings
from orchestrator.events.bus import EventBus
from orchestrator.services.assembly import assemble
from orchestrator.services.bundles import pack_directory
from orchestrator.services.install import InstallRequest, InstallService, PluginImages
from orchestrator.services.lifecycle import LIFECYCLE_EVENTS, LifecycleService
from orchestrator.services.plugins import PluginView
from orchestrator.services.supervision import Supervision
from orchestrator.store import crud
from orchestrator.store.db import session_scope
from tests.fixtures.fake_runtime import FakePlugins, FakeRuntime
from tests.fixtures.plugins import make_plugin

BASE_IMAGE = "summit/plugin-python:latest"


@dataclass
class RecordedTimer:
    delay_s: float
    fn: Callable[[], None]
    cancelled: bool = False

    def cancel(self) -> None:
        self.cancelled = True


@dataclass
class Timers:
    scheduled: list[RecordedTimer] = field(default_factory=list)

    def __call__(self, delay_s: float, fn: Callable[[], None]) -> RecordedTimer:
        timer = RecordedTimer(delay_s, fn)
        self.scheduled.append(timer)
        return timer

    @property
    def delays(self) -> list[float]:
        return [t.delay_s for t in self.scheduled]

    def fire_last(self) -> None:
        timer = self.scheduled[-1]
        assert not timer.cancelled
        timer.fn()


@dataclass
class Services:
    engine: Engine
    settings: Settings
    runtime: FakeRuntime
    plugins: FakePlugins
    broker: Broker
    events: EventBus
    images: PluginImages
    lifecycle: LifecycleService
    installs: InstallService
    supervision: Supervision
    timers: Timers
    tmp: Path

    def install(self, plugin_id: str = "com.summit-tests.probe", **changes: Any) -> PluginView:
        """Install a copy of the probe fixture plugin from a bundle, as the API would."""
        folder = make_plugin(self.tmp / f"src-{secrets.token_hex(4)}", id=plugin_id, **changes)
        bundle = io.BytesIO(pack_directory(folder))
        return self.installs.install(InstallRequest(), bundle=bundle)

    def state(self, plugin_id: str) -> str:
        with session_scope(self.engine) as session:
            plugin = crud.get_plugin(session, plugin_id=plugin_id)
            assert plugin is not None
            return plugin.state

    def edges(self, plugin_id: str) -> list[tuple[str, str, str]]:
        """The stored transitions, oldest first: (from, action, to)."""
        with session_scope(self.engine) as session:
            rows = crud.list_transitions(session, plugin_id=plugin_id, limit=1000)
            return [(r.from_state, r.action, r.to_state) for r in reversed(rows)]

    def announced(self, plugin_id: str, pattern: str = "plugin.*") -> list[dict[str, Any]]:
        """The plugin's events, oldest first (kept after an uninstall, unlike transitions)."""
        return list(self.events.page(type_pattern=pattern, subject=plugin_id, limit=1000)["events"])

    def announced_edges(self, plugin_id: str) -> list[tuple[str, str, str]]:
        """(from, action, to) of every lifecycle event of the plugin."""
        action_of = {event: action for action, event in LIFECYCLE_EVENTS.items()}
        return [
            (e["payload"]["from"], action_of[e["type"]], e["payload"]["to"])
            for e in self.announced(plugin_id)
            if e["type"] in action_of
        ]

    def reasons(self, plugin_id: str) -> list[str | None]:
        with session_scope(self.engine) as session:
            rows = crud.list_transitions(session, plugin_id=plugin_id, limit=1000)
            return [r.reason for r in reversed(rows)]

    def container(self, plugin_id: str) -> str:
        """The id of the plugin's one running container."""
        [status] = self.runtime.running(plugin_id)
        return status.id


def wire(
    engine: Engine,
    settings: Settings,
    runtime: FakeRuntime,
    plugins: FakePlugins,
    tmp: Path,
) -> Services:
    """One orchestrator's services (a second call over the same database and runtime is the
    orchestrator started again)."""
    broker = Broker()
    events = EventBus(engine)
    timers = Timers()
    services = assemble(
        engine=engine,
        settings=settings,
        runtime=runtime,
        images=runtime,
        broker=broker,
        events=events,
        clients=plugins,
        schedule=timers,
    )
    images, lifecycle, installs, supervision = (
        services.images,
        services.lifecycle,
        services.installs,
        services.supervision,
    )
    return Services(
        engine=engine,
        settings=settings,
        runtime=runtime,
        plugins=plugins,
        broker=broker,
        events=events,
        images=images,
        lifecycle=lifecycle,
        installs=installs,
        supervision=supervision,
        timers=timers,
        tmp=tmp,
    )


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        state_dir=tmp_path / "state",
        base_image=BASE_IMAGE,
        # The fixture plugins misbehave on purpose (os._exit, memory hogs): report only.
        scan_fail_on="never",
        startup_timeout_s=0.3,
        shutdown_grace_s=0.1,
        restart_backoff_s=1.0,
        restart_backoff_cap_s=8.0,
        crash_limit=3,
        crash_window_s=600.0,
        health_failures=2,
    )


@pytest.fixture
def services(engine: Engine, settings: Settings, tmp_path: Path) -> Iterator[Services]:
    runtime = FakeRuntime()
    runtime.add_image(BASE_IMAGE)
    wired = wire(engine, settings, runtime, FakePlugins(runtime), tmp_path)
    yield wired
    wired.supervision.stop()
