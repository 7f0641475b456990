"""The resource monitor's rows: plugins' usage points (``resource_usage``), and the reads the
sampler needs from other aggregates (which containers to sample, storage used per plugin).

Points are plain dicts of :class:`UsagePoint`'s columns on the way in and out, so the series
logic above (``monitor/series.py``) never holds a session-bound row.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select as sa_select
from sqlmodel import Session, col, delete, func, select

from orchestrator.store.models import Container, Plugin, StorageItem, UsagePoint

__all__ = [
    "SamplingTarget",
    "delete_usage",
    "latest_points",
    "latest_tier_time",
    "load_points",
    "plugin_states",
    "plugins_between",
    "points_between",
    "prune_points",
    "sampling_targets",
    "save_points",
    "storage_used_by_plugin",
]

Point = dict[str, Any]


def _as_dict(row: UsagePoint) -> Point:
    return row.model_dump()


def save_points(session: Session, *, points: Iterable[Point]) -> None:
    """Insert or replace points (the key is plugin, step and bucket start)."""
    for point in points:
        session.merge(UsagePoint(**point))


def load_points(
    session: Session, *, step_s: int, at: int, plugin_ids: Sequence[str]
) -> list[Point]:
    """The points of ``plugin_ids`` in one bucket of one tier (to merge new samples into)."""
    if not plugin_ids:
        return []
    stmt = select(UsagePoint).where(
        UsagePoint.step_s == step_s,
        UsagePoint.at == at,
        col(UsagePoint.plugin_id).in_(list(plugin_ids)),
    )
    return [_as_dict(r) for r in session.exec(stmt).all()]


def points_between(
    session: Session, *, step_s: int, start: int, end: int, plugin_id: str | None = None
) -> list[Point]:
    """Points of one tier with ``start <= at < end``, by plugin then time."""
    stmt = select(UsagePoint).where(
        UsagePoint.step_s == step_s, UsagePoint.at >= start, UsagePoint.at < end
    )
    if plugin_id is not None:
        stmt = stmt.where(UsagePoint.plugin_id == plugin_id)
    stmt = stmt.order_by(col(UsagePoint.plugin_id), col(UsagePoint.at))
    return [_as_dict(r) for r in session.exec(stmt).all()]


def plugins_between(session: Session, *, step_s: Sequence[int], start: int, end: int) -> list[str]:
    """Plugins with a point of one of the tiers ``step_s`` with ``start <= at < end``."""
    stmt = (
        select(UsagePoint.plugin_id)
        .where(
            col(UsagePoint.step_s).in_(list(step_s)),
            UsagePoint.at >= start,
            UsagePoint.at < end,
        )
        .distinct()
        .order_by(col(UsagePoint.plugin_id))
    )
    return list(session.exec(stmt).all())


def latest_tier_time(session: Session, *, step_s: int, plugin_id: str | None = None) -> int | None:
    """Start of the newest bucket of a tier (of one plugin, or of any)."""
    stmt = select(func.max(UsagePoint.at)).where(UsagePoint.step_s == step_s)
    if plugin_id is not None:
        stmt = stmt.where(UsagePoint.plugin_id == plugin_id)
    value = session.exec(stmt).one()
    return int(value) if value is not None else None


def latest_points(
    session: Session, *, step_s: int, plugin_ids: Sequence[str] | None = None
) -> dict[str, Point]:
    """The newest point of each plugin in one tier."""
    newest = select(UsagePoint.plugin_id, func.max(UsagePoint.at).label("at")).where(
        UsagePoint.step_s == step_s
    )
    if plugin_ids is not None:
        newest = newest.where(col(UsagePoint.plugin_id).in_(list(plugin_ids)))
    sub = newest.group_by(col(UsagePoint.plugin_id)).subquery()
    stmt = select(UsagePoint).join(
        sub,
        (col(UsagePoint.plugin_id) == sub.c.plugin_id)
        & (col(UsagePoint.at) == sub.c.at)
        & (col(UsagePoint.step_s) == step_s),
    )
    return {r.plugin_id: _as_dict(r) for r in session.exec(stmt).all()}


def prune_points(session: Session, *, step_s: int, before: int) -> int:
    """Delete a tier's points that start before ``before``; how many went."""
    result = session.exec(
        delete(UsagePoint).where(col(UsagePoint.step_s) == step_s, col(UsagePoint.at) < before)
    )
    return int(result.rowcount)


def delete_usage(session: Session, *, plugin_id: str) -> int:
    """Forget a plugin's series (it was uninstalled)."""
    result = session.exec(delete(UsagePoint).where(col(UsagePoint.plugin_id) == plugin_id))
    return int(result.rowcount)


# -- what the sampler reads from other aggregates -------------------------------------------


@dataclass(frozen=True)
class SamplingTarget:
    plugin_id: str
    state: str
    resources: dict[str, Any]
    container_id: str
    container_created_at: datetime


def sampling_targets(session: Session, *, states: Sequence[str]) -> list[SamplingTarget]:
    """The current container of every plugin in one of ``states`` (the newest, where a
    reload has two for a moment)."""
    # (SQLAlchemy's select: SQLModel's is typed for at most four columns.)
    stmt = (
        sa_select(
            col(Plugin.id),
            col(Plugin.state),
            col(Plugin.resources),
            col(Container.id),
            col(Container.created_at),
        )
        .join(Container, col(Container.plugin_id) == col(Plugin.id))
        .where(col(Plugin.state).in_(list(states)))
        .order_by(col(Plugin.id), col(Container.created_at).desc())
    )
    out: dict[str, SamplingTarget] = {}
    for plugin_id, state, resources, container_id, created_at in session.execute(stmt).all():
        if plugin_id not in out:
            out[plugin_id] = SamplingTarget(
                plugin_id, state, dict(resources or {}), container_id, created_at
            )
    return list(out.values())


def plugin_states(session: Session) -> dict[str, str]:
    """Every installed plugin's state; PAUSED for an ACTIVE plugin frozen by the idle pause."""
    states = {p: s for p, s in session.exec(select(Plugin.id, Plugin.state)).all()}
    frozen = select(Container.plugin_id).where(col(Container.paused_at).is_not(None))
    for plugin_id in session.exec(frozen).all():
        if states.get(plugin_id) == "ACTIVE":
            states[plugin_id] = "PAUSED"
    return states


def storage_used_by_plugin(session: Session) -> dict[str, int]:
    """Bytes of host API storage each plugin uses (as its ``storage_mb`` quota counts them)."""
    stmt = select(StorageItem.plugin_id, func.coalesce(func.sum(StorageItem.size), 0)).group_by(
        col(StorageItem.plugin_id)
    )
    return {p: int(n) for p, n in session.exec(stmt).all()}
