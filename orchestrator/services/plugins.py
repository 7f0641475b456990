"""Read side of plugins: the views the API and CLI show. Never changes state."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel

from orchestrator.catalog.sources import source_of
from orchestrator.domain.errors import Conflict, NotFound
from orchestrator.runtime.base import ContainerRuntime
from orchestrator.store import crud
from orchestrator.store.db import Engine, Session, session_scope
from orchestrator.store.models import Plugin


class ContainerView(BaseModel):
    id: str
    image: str
    name: str
    # Frozen by the idle pause since then (None: running); the next call resumes it.
    paused_at: datetime | None = None


class UpdateNotice(BaseModel):
    """A newer version of the plugin that this orchestrator can run is in the catalog."""

    version: str
    image: str
    published_at: datetime


class PluginView(BaseModel):
    id: str
    version: str
    pending_version: str | None
    state: str
    state_reason: str | None
    manifest: dict[str, Any]
    granted_permissions: list[str]
    resources: dict[str, Any]
    config: dict[str, Any]
    container: ContainerView | None
    update_available: UpdateNotice | None = None
    created_at: datetime
    updated_at: datetime


class TransitionView(BaseModel):
    from_state: str
    to_state: str
    action: str
    reason: str | None
    at: datetime


def plugin_view(session: Session, plugin: Plugin) -> PluginView:
    """How ``plugin`` is shown, read in the caller's session (the install pipeline builds the
    answer in the transaction that recorded it)."""
    version = crud.get_version(session, plugin_id=plugin.id, version=plugin.version)
    container = crud.current_container(session, plugin_id=plugin.id)
    return PluginView(
        id=plugin.id,
        version=plugin.version,
        pending_version=plugin.pending_version,
        state=plugin.state,
        state_reason=plugin.state_reason,
        manifest=version.manifest if version else {},
        granted_permissions=crud.list_grants(session, plugin_id=plugin.id),
        resources=dict(plugin.resources),
        config=dict(plugin.config),
        container=(
            ContainerView(
                id=container.id,
                image=container.image,
                name=container.name,
                paused_at=container.paused_at,
            )
            if container
            else None
        ),
        update_available=update_notice(session, plugin),
        created_at=plugin.created_at,
        updated_at=plugin.updated_at,
    )


def update_notice(session: Session, plugin: Plugin) -> UpdateNotice | None:
    """The catalog's newest compatible version above the installed one, if any: this
    orchestrator's catalog, or the remote one it reads (``SUMMIT_CATALOG_URL``; left out while
    that one cannot be reached)."""
    newest = source_of(session.get_bind()).newest(plugin.id, after=plugin.version, session=session)
    if newest is None:
        return None
    return UpdateNotice(
        version=newest.version, image=newest.image, published_at=newest.published_at
    )


class PluginQueries:
    def __init__(self, *, engine: Engine, runtime: ContainerRuntime) -> None:
        self.engine = engine
        self.runtime = runtime

    def get(self, plugin_id: str) -> PluginView:
        with session_scope(self.engine) as session:
            plugin = crud.get_plugin(session, plugin_id=plugin_id)
            if plugin is None:
                raise NotFound(f"plugin {plugin_id!r} is not installed", code="plugin_not_found")
            return plugin_view(session, plugin)

    def list_plugins(self, *, state: str | None = None) -> list[PluginView]:
        with session_scope(self.engine) as session:
            return [plugin_view(session, p) for p in crud.list_plugins(session, state=state)]

    def transitions(self, plugin_id: str, *, limit: int = 100) -> list[TransitionView]:
        self.get(plugin_id)
        with session_scope(self.engine) as session:
            rows = crud.list_transitions(session, plugin_id=plugin_id, limit=limit)
            return [TransitionView.model_validate(r, from_attributes=True) for r in rows]

    def _container_id(self, plugin_id: str) -> str:
        view = self.get(plugin_id)
        if view.container is None:
            raise Conflict(
                f"plugin {plugin_id} has no running container (state {view.state})",
                code="not_running",
                details={"state": view.state},
            )
        return view.container.id

    def scan_report(self, plugin_id: str, *, version: str | None) -> dict[str, Any]:
        with session_scope(self.engine) as session:
            plugin = crud.get_plugin(session, plugin_id=plugin_id)
            if plugin is None:
                raise NotFound(f"plugin {plugin_id!r} is not installed", code="plugin_not_found")
            wanted = version or plugin.version
            row = crud.get_scan_report(session, plugin_id=plugin_id, version=wanted)
            if row is None:
                raise NotFound(f"no scan report for {plugin_id} {wanted}")
            return {"plugin_id": plugin_id, "version": wanted, **row.report}

    def live_usage(self, plugin_id: str) -> dict[str, float]:
        """The runtime's reading of the plugin's container now (Docker: about a second)."""
        return self.runtime.stats(self._container_id(plugin_id))

    def logs(self, plugin_id: str, *, tail: int) -> str:
        return self.runtime.logs(self._container_id(plugin_id), tail=tail)
