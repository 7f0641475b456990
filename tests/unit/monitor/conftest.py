"""Plugins and containers rows for the monitor's tests, on a migrated SQLite engine."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy.engine import Engine

from orchestrator.store.db import session_scope
from orchestrator.store.models import Container, Plugin


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def add_plugin(
    engine: Engine,
    plugin_id: str,
    *,
    state: str = "ACTIVE",
    container_id: str | None = None,
    created_at: float | None = None,
    resources: dict | None = None,
) -> None:
    with session_scope(engine) as session:
        session.add(
            Plugin(
                id=plugin_id,
                version="1.0.0",
                state=state,
                resources=resources or {"memory_mb": 64, "storage_mb": 1},
            )
        )
        if container_id is not None:
            session.flush()
            session.add(
                Container(
                    id=container_id,
                    plugin_id=plugin_id,
                    name=f"c-{plugin_id}",
                    version="1.0.0",
                    image="img",
                    endpoint="unix:///tmp/x.sock",
                    created_at=datetime.fromtimestamp(created_at or 0, UTC),
                )
            )


def replace_container(engine: Engine, plugin_id: str, container_id: str, created_at: float) -> None:
    from sqlmodel import col, delete

    with session_scope(engine) as session:
        session.exec(delete(Container).where(col(Container.plugin_id) == plugin_id))
        session.add(
            Container(
                id=container_id,
                plugin_id=plugin_id,
                name=f"c-{plugin_id}-{container_id[:4]}",
                version="1.0.0",
                image="img",
                endpoint="unix:///tmp/y.sock",
                created_at=datetime.fromtimestamp(created_at, UTC),
            )
        )
