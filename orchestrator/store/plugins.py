"""Plugins and what hangs off them: versions, state transitions, grants, containers (the
current one and a canary's candidate) and scan reports. Only ``services/lifecycle.py`` changes
a plugin's state."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum

from sqlmodel import Session, col, delete, func, select
from sqlmodel.sql.expression import SelectOfScalar

from orchestrator.store.history import PluginHistory
from orchestrator.store.models import (
    Container,
    Grant,
    HostToken,
    Plugin,
    PluginSecret,
    PluginVersion,
    ScanReport,
    StateTransition,
    StorageItem,
    UsagePoint,
    utcnow,
)

__all__ = [
    "CanaryAction",
    "add_canary_history",
    "add_transition",
    "canary_container",
    "count_transitions_since",
    "current_container",
    "delete_container",
    "delete_plugin",
    "get_container",
    "get_plugin",
    "get_scan_report",
    "get_version",
    "images_in_use",
    "list_containers",
    "list_grants",
    "list_plugins",
    "list_transitions",
    "list_versions",
    "paused_plugins",
    "plugin_exists",
    "serving_containers",
    "set_canary_weight",
    "set_container_paused",
    "set_grants",
]


def get_plugin(session: Session, *, plugin_id: str, for_update: bool = False) -> Plugin | None:
    stmt = select(Plugin).where(Plugin.id == plugin_id)
    if for_update:
        stmt = stmt.with_for_update()
    return session.exec(stmt).first()


def save_plugin(session: Session, plugin: Plugin) -> None:
    """Write the changes made to ``plugin`` with this session's transaction."""
    session.add(plugin)


def plugin_exists(session: Session, *, plugin_id: str) -> bool:
    return session.get(Plugin, plugin_id) is not None


def list_plugins(session: Session, *, state: str | None = None) -> Sequence[Plugin]:
    stmt = select(Plugin).order_by(col(Plugin.id))
    if state is not None:
        stmt = stmt.where(Plugin.state == state)
    return session.exec(stmt).all()


def get_version(session: Session, *, plugin_id: str, version: str) -> PluginVersion | None:
    return session.get(PluginVersion, (plugin_id, version))


def list_versions(session: Session, *, plugin_id: str) -> Sequence[PluginVersion]:
    stmt = select(PluginVersion).where(PluginVersion.plugin_id == plugin_id)
    return session.exec(stmt).all()


def images_in_use(session: Session, *, exclude_plugin: str | None = None) -> set[str]:
    stmt = select(PluginVersion.image)
    if exclude_plugin is not None:
        stmt = stmt.where(PluginVersion.plugin_id != exclude_plugin)
    return set(session.exec(stmt).all())


def add_transition(
    session: Session,
    *,
    plugin_id: str,
    from_state: str,
    to_state: str,
    action: str,
    reason: str | None,
    at: datetime | None = None,
) -> StateTransition:
    row = StateTransition(
        plugin_id=plugin_id,
        from_state=from_state,
        to_state=to_state,
        action=action,
        reason=reason,
        at=at or utcnow(),
    )
    session.add(row)
    return row


def list_transitions(
    session: Session, *, plugin_id: str, limit: int = 100
) -> Sequence[StateTransition]:
    stmt = (
        select(StateTransition)
        .where(StateTransition.plugin_id == plugin_id)
        .order_by(col(StateTransition.id).desc())
        .limit(limit)
    )
    return session.exec(stmt).all()


def count_transitions_since(
    session: Session, *, plugin_id: str, action: str, since: datetime
) -> int:
    stmt = select(func.count()).where(
        StateTransition.plugin_id == plugin_id,
        StateTransition.action == action,
        StateTransition.at >= since,
    )
    return int(session.exec(stmt).one())


def set_grants(session: Session, *, plugin_id: str, permissions: Sequence[str]) -> None:
    session.exec(delete(Grant).where(col(Grant.plugin_id) == plugin_id))
    for perm in sorted(set(permissions)):
        session.add(Grant(plugin_id=plugin_id, permission=perm))


def list_grants(session: Session, *, plugin_id: str) -> list[str]:
    stmt = select(Grant.permission).where(Grant.plugin_id == plugin_id)
    return sorted(session.exec(stmt).all())


def serving_containers(plugin_ids: Sequence[str]) -> SelectOfScalar[Container]:
    """The rule of a plugin's current container, as a query over ``plugin_ids``: its newest
    container (a reload has two for a moment) that is not a canary's candidate comes first
    among the plugin's rows."""
    return (
        select(Container)
        .where(col(Container.plugin_id).in_(plugin_ids), col(Container.canary_weight).is_(None))
        .order_by(col(Container.plugin_id), col(Container.created_at).desc())
    )


def current_container(session: Session, *, plugin_id: str) -> Container | None:
    """The container serving the plugin (the newest, a canary's candidate aside)."""
    return session.exec(serving_containers([plugin_id])).first()


def canary_container(session: Session, *, plugin_id: str) -> Container | None:
    """The candidate container of the plugin's canary, if it has one."""
    stmt = (
        select(Container)
        .where(Container.plugin_id == plugin_id, col(Container.canary_weight).is_not(None))
        .order_by(col(Container.created_at).desc())
    )
    return session.exec(stmt).first()


def set_canary_weight(session: Session, *, container_id: str, weight: int | None) -> bool:
    """Mark a container as a canary's candidate taking ``weight`` percent of the calls, or
    (None) as the plugin's current container; False if it has no row."""
    row = session.get(Container, container_id)
    if row is None:
        return False
    row.canary_weight = weight
    session.add(row)
    return True


def list_containers(session: Session, *, plugin_id: str | None = None) -> Sequence[Container]:
    stmt = select(Container)
    if plugin_id is not None:
        stmt = stmt.where(Container.plugin_id == plugin_id)
    return session.exec(stmt).all()


def get_container(session: Session, *, container_id: str) -> Container | None:
    return session.get(Container, container_id)


def set_container_paused(
    session: Session, *, container_id: str, paused_at: datetime | None
) -> bool:
    """Mark a container frozen (a time) or running (None); False if it has no row."""
    row = session.get(Container, container_id)
    if row is None:
        return False
    row.paused_at = paused_at
    session.add(row)
    return True


def paused_plugins(session: Session) -> set[str]:
    """Plugins whose current container is frozen."""
    stmt = select(Container.plugin_id).where(col(Container.paused_at).is_not(None))
    return set(session.exec(stmt).all())


def delete_container(session: Session, *, container_id: str) -> None:
    session.exec(delete(Container).where(col(Container.id) == container_id))


def delete_plugin(session: Session, *, plugin_id: str) -> None:
    """Every row of the plugin, its transition history included (a reinstall starts afresh)."""
    for table in (
        Container,
        Grant,
        PluginVersion,
        StateTransition,
        HostToken,
        StorageItem,
        PluginSecret,
        ScanReport,
        UsagePoint,
    ):
        session.exec(delete(table).where(col(table.plugin_id) == plugin_id))
    session.exec(delete(Plugin).where(col(Plugin.id) == plugin_id))


def get_scan_report(session: Session, *, plugin_id: str, version: str) -> ScanReport | None:
    return session.get(ScanReport, (plugin_id, version))


class CanaryAction(StrEnum):
    """History entries of a canary besides its promotion (recorded as ``upgraded``, so that a
    rollback returns to the version the candidate replaced)."""

    STARTED = "canary_started"
    WEIGHT = "canary_weight"  # the operator changed the share it takes
    ABORTED = "canary_aborted"
    # The candidate did not start, stopped on its own, or failed its health checks.
    FAILED = "canary_failed"


def add_canary_history(
    session: Session,
    *,
    plugin_id: str,
    action: CanaryAction,
    version: str,
    from_version: str | None,
    actor: str,
    reason: str | None = None,
) -> PluginHistory:
    """One history entry about a canary: ``version`` is the candidate's, ``from_version`` the
    current version it runs beside."""
    row = PluginHistory(
        plugin_id=plugin_id,
        action=action.value,
        version=version,
        from_version=from_version,
        actor=actor,
        reason=reason,
        at=utcnow(),
    )
    session.add(row)
    return row
