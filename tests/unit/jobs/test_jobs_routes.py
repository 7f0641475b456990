"""A worker process's routes come from the database: ACTIVE plugins and their newest container."""

from __future__ import annotations

from datetime import timedelta

import yaml
from sqlalchemy.engine import Engine

from orchestrator.broker import Broker
from orchestrator.jobs.routes import load_routes
from orchestrator.store.db import session_scope
from orchestrator.store.models import Container, Plugin, PluginVersion, utcnow
from tests.fixtures.plugins import PLUGINS

PROBE = yaml.safe_load((PLUGINS / "probe" / "plugin.yaml").read_text())


def add_plugin(engine: Engine, plugin_id: str, state: str, **resources: object) -> None:
    with session_scope(engine) as s:
        s.add(Plugin(id=plugin_id, version="1.0.0", state=state, resources=dict(resources)))
        s.flush()
        s.add(
            PluginVersion(
                plugin_id=plugin_id,
                version="1.0.0",
                manifest={**PROBE, "id": plugin_id},
                image=f"summit/{plugin_id}:1.0.0",
                source="bundle",
            )
        )
        s.add(
            Container(
                id=f"{plugin_id}-c1",
                plugin_id=plugin_id,
                name=f"{plugin_id}-c1",
                version="1.0.0",
                image="img",
                endpoint=f"unix:///run/{plugin_id}-c1.sock",
                created_at=utcnow() - timedelta(minutes=1),
            )
        )


def set_state(engine: Engine, plugin_id: str, state: str) -> None:
    with session_scope(engine) as s:
        plugin = s.get(Plugin, plugin_id)
        assert plugin is not None
        plugin.state = state
        s.add(plugin)


def test_routes_follow_the_database(engine: Engine) -> None:
    add_plugin(engine, "com.t.active", "ACTIVE", timeout_ms=1234, concurrency=2)
    add_plugin(engine, "com.t.loaded", "LOADED")
    broker = Broker()

    load_routes(engine, broker)
    [route] = broker.routes()
    assert route.plugin_id == "com.t.active"
    assert str(route.endpoint) == "unix:///run/com.t.active-c1.sock"
    assert (route.timeout_ms, route.concurrency) == (1234, 2)
    assert [(r.plugin_id, e.name) for r, e in broker.providers("analyzer")] == [
        ("com.t.active", "echo")
    ]

    # A reload wrote a newer container: calls go to it.
    with session_scope(engine) as s:
        s.add(
            Container(
                id="com.t.active-c2",
                plugin_id="com.t.active",
                name="c2",
                version="1.0.0",
                image="img",
                endpoint="unix:///run/c2.sock",
            )
        )
    load_routes(engine, broker)
    assert str(broker.route("com.t.active").endpoint) == "unix:///run/c2.sock"  # type: ignore[union-attr]

    set_state(engine, "com.t.loaded", "ACTIVE")
    set_state(engine, "com.t.active", "LOADED")
    load_routes(engine, broker)
    assert [r.plugin_id for r in broker.routes()] == ["com.t.loaded"]
