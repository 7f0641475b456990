"""The read side of plugins for many at once: the parts of :class:`~.plugins.PluginView`, each
for a set of plugins in one database read, so that a list of plugins with their details costs
the same few reads whether it holds five plugins or five hundred.

``services/plugins.py`` builds one plugin's view with a read per part; this module builds the
same parts keyed by plugin id, with the same models and through the same rules (the current
container: ``store.plugins.serving_containers``; an update notice: the catalog source's
``newest_of``, as ``newest`` for one plugin). The GraphQL API's DataLoaders and the UI's lists
call it once per kind of part per request. Never changes state.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from orchestrator.catalog.sources import source_of
from orchestrator.domain.errors import NotFound
from orchestrator.services.plugins import ContainerView, UpdateNotice
from orchestrator.store import crud
from orchestrator.store import plugin_batches as store
from orchestrator.store.db import Engine, session_scope
from orchestrator.store.models import Plugin

__all__ = ["InstalledVersion", "PluginBatches", "PluginSummary"]


class PluginSummary(BaseModel):
    """A plugin's own row: the fields of :class:`~.plugins.PluginView` that need no other."""

    id: str
    version: str
    pending_version: str | None
    state: str
    state_reason: str | None
    resources: dict[str, Any]
    config: dict[str, Any]
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, row: Plugin) -> PluginSummary:
        return cls(
            id=row.id,
            version=row.version,
            pending_version=row.pending_version,
            state=row.state,
            state_reason=row.state_reason,
            resources=dict(row.resources),
            config=dict(row.config),
            created_at=row.created_at,
            updated_at=row.updated_at,
        )


class InstalledVersion(BaseModel):
    """A version of a plugin stored here (the current one, one waiting to take over, or one
    an upgrade replaced and a rollback can return to)."""

    version: str
    image: str
    source: str
    installed_at: datetime
    manifest: dict[str, Any]


class PluginBatches:
    def __init__(self, *, engine: Engine) -> None:
        self.engine = engine

    def list_plugins(self, *, state: str | None = None) -> list[PluginSummary]:
        """Every installed plugin (in ``state``), by id: the rows ``PluginQueries.list_plugins``
        starts from."""
        with session_scope(self.engine) as session:
            return [PluginSummary.of(p) for p in crud.list_plugins(session, state=state)]

    def get(self, plugin_id: str) -> PluginSummary:
        found = self.many([plugin_id]).get(plugin_id)
        if found is None:
            raise NotFound(f"plugin {plugin_id!r} is not installed", code="plugin_not_found")
        return found

    def many(self, plugin_ids: Sequence[str]) -> dict[str, PluginSummary]:
        """The installed ones of ``plugin_ids``."""
        with session_scope(self.engine) as session:
            rows = store.plugins_by_id(session, plugin_ids=plugin_ids)
            return {pid: PluginSummary.of(row) for pid, row in rows.items()}

    def versions(self, plugin_ids: Sequence[str]) -> dict[str, list[InstalledVersion]]:
        """Each plugin's stored versions, oldest installed first."""
        with session_scope(self.engine) as session:
            rows = store.versions_of(session, plugin_ids=plugin_ids)
            return {
                pid: [
                    InstalledVersion(
                        version=v.version,
                        image=v.image,
                        source=v.source,
                        installed_at=v.installed_at,
                        manifest=dict(v.manifest),
                    )
                    for v in versions
                ]
                for pid, versions in rows.items()
            }

    def containers(self, plugin_ids: Sequence[str]) -> dict[str, ContainerView]:
        """Each plugin's current container (absent: none)."""
        with session_scope(self.engine) as session:
            rows = store.current_containers(session, plugin_ids=plugin_ids)
            return {
                pid: ContainerView(id=c.id, image=c.image, name=c.name, paused_at=c.paused_at)
                for pid, c in rows.items()
            }

    def grants(self, plugin_ids: Sequence[str]) -> dict[str, list[str]]:
        with session_scope(self.engine) as session:
            return store.grants_of(session, plugin_ids=plugin_ids)

    def update_notices(self, installed: Mapping[str, str]) -> dict[str, UpdateNotice]:
        """For ``{plugin id: installed version}``, the newer compatible catalog version of
        each plugin that has one (the rule of ``services.plugins.update_notice``): from this
        orchestrator's catalog in one read, or asked of the remote catalog it reads (which
        caches its answers and leaves notices out while it cannot be reached)."""
        newest = source_of(self.engine).newest_of(installed)
        return {
            pid: UpdateNotice(
                version=entry.version, image=entry.image, published_at=entry.published_at
            )
            for pid, entry in newest.items()
        }
