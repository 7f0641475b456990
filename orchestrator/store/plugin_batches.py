"""Reads of what hangs off many plugins at once: one statement per kind of row, whatever the
number of plugins, for readers that show a list of plugins with their details (the GraphQL
API's DataLoaders). The one-plugin reads stay in ``store/plugins.py``."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence

from sqlmodel import Session, col, select

from orchestrator.store.catalog_models import CatalogVersion
from orchestrator.store.models import Container, Grant, Plugin, PluginVersion
from orchestrator.store.plugins import serving_containers

__all__ = [
    "catalog_versions_of",
    "current_containers",
    "grants_of",
    "plugins_by_id",
    "versions_of",
]

# Bound parameters per IN list: well under SQLite's (999 before 3.32) and PostgreSQL's limits.
_CHUNK = 500


def _chunks(ids: Sequence[str]) -> Iterator[list[str]]:
    unique = sorted(set(ids))
    for start in range(0, len(unique), _CHUNK):
        yield unique[start : start + _CHUNK]


def plugins_by_id(session: Session, *, plugin_ids: Sequence[str]) -> dict[str, Plugin]:
    out: dict[str, Plugin] = {}
    for chunk in _chunks(plugin_ids):
        for row in session.exec(select(Plugin).where(col(Plugin.id).in_(chunk))).all():
            out[row.id] = row
    return out


def versions_of(session: Session, *, plugin_ids: Sequence[str]) -> dict[str, list[PluginVersion]]:
    """Every installed version of each plugin, oldest installed first."""
    out: dict[str, list[PluginVersion]] = defaultdict(list)
    for chunk in _chunks(plugin_ids):
        stmt = (
            select(PluginVersion)
            .where(col(PluginVersion.plugin_id).in_(chunk))
            .order_by(col(PluginVersion.plugin_id), col(PluginVersion.installed_at))
        )
        for row in session.exec(stmt).all():
            out[row.plugin_id].append(row)
    return dict(out)


def current_containers(session: Session, *, plugin_ids: Sequence[str]) -> dict[str, Container]:
    """Each plugin's current container, by the rule of
    :func:`orchestrator.store.plugins.serving_containers`."""
    out: dict[str, Container] = {}
    for chunk in _chunks(plugin_ids):
        for row in session.exec(serving_containers(chunk)).all():
            out.setdefault(row.plugin_id, row)
    return out


def grants_of(session: Session, *, plugin_ids: Sequence[str]) -> dict[str, list[str]]:
    """Each plugin's granted permissions, sorted (as ``list_grants`` answers)."""
    out: dict[str, list[str]] = defaultdict(list)
    for chunk in _chunks(plugin_ids):
        stmt = (
            select(Grant.plugin_id, Grant.permission)
            .where(col(Grant.plugin_id).in_(chunk))
            .order_by(col(Grant.plugin_id), col(Grant.permission))
        )
        for plugin_id, permission in session.exec(stmt).all():
            out[plugin_id].append(permission)
    return dict(out)


def catalog_versions_of(
    session: Session, *, plugin_ids: Sequence[str]
) -> dict[str, list[CatalogVersion]]:
    """The catalog's versions of each plugin id (yanked included), in no particular order."""
    out: dict[str, list[CatalogVersion]] = defaultdict(list)
    for chunk in _chunks(plugin_ids):
        stmt = select(CatalogVersion).where(col(CatalogVersion.plugin_id).in_(chunk))
        for row in session.exec(stmt).all():
            out[row.plugin_id].append(row)
    return dict(out)
