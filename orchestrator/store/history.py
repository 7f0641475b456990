"""A plugin's installation history: every version installed, every upgrade (and every one
rolled back automatically), rollback, enable, disable, reload and uninstall, with who asked
and when.

Kept apart from ``state_transitions``, which record the state machine's edges and go with the
plugin at uninstall (a reinstall starts afresh there). This table answers "what ran here, and
who changed it", so it has no foreign key to ``plugins`` and outlives an uninstall; the
lifecycle writes it in the same transaction as the change it records.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum

from sqlalchemy import Index
from sqlmodel import Field, Session, SQLModel, col, select

from orchestrator.store.models import utcnow

__all__ = ["HistoryAction", "PluginHistory", "add_history", "has_history", "list_history"]


class HistoryAction(StrEnum):
    INSTALLED = "installed"
    UPGRADED = "upgraded"
    # The new version did not start (health, initialize, startup timeout): the old one kept
    # serving and the upgrade was undone on its own.
    UPGRADE_FAILED = "upgrade_failed"
    ROLLED_BACK = "rolled_back"
    # The previous version did not start; the current one kept serving.
    ROLLBACK_FAILED = "rollback_failed"
    ENABLED = "enabled"
    DISABLED = "disabled"
    RELOADED = "reloaded"
    FAILED = "failed"
    UNINSTALLED = "uninstalled"


class PluginHistory(SQLModel, table=True):
    """One entry. ``version`` is the version the entry is about (the one now current, for an
    action that changed it); ``from_version`` is the one it replaced, set only when the current
    version changed (or, for ``upgrade_failed`` and ``rollback_failed``, the one that kept
    serving)."""

    __tablename__ = "plugin_history"
    __table_args__ = (Index("ix_plugin_history_plugin_id", "plugin_id", "id"),)

    id: int | None = Field(default=None, primary_key=True)
    plugin_id: str = Field(max_length=128)
    action: str = Field(max_length=32)
    version: str = Field(max_length=64)
    from_version: str | None = Field(default=None, max_length=64)
    actor: str = Field(max_length=160)
    reason: str | None = None
    at: datetime = Field(default_factory=utcnow)


def add_history(
    session: Session,
    *,
    plugin_id: str,
    action: HistoryAction,
    version: str,
    actor: str,
    from_version: str | None = None,
    reason: str | None = None,
    at: datetime | None = None,
) -> PluginHistory:
    row = PluginHistory(
        plugin_id=plugin_id,
        action=action.value,
        version=version,
        from_version=from_version,
        actor=actor,
        reason=reason,
        at=at or utcnow(),
    )
    session.add(row)
    return row


def list_history(
    session: Session, *, plugin_id: str, limit: int = 100, before_id: int | None = None
) -> Sequence[PluginHistory]:
    """Newest first; ``before_id`` is the cursor of the next page (entries older than it)."""
    stmt = select(PluginHistory).where(PluginHistory.plugin_id == plugin_id)
    if before_id is not None:
        stmt = stmt.where(col(PluginHistory.id) < before_id)
    return session.exec(stmt.order_by(col(PluginHistory.id).desc()).limit(limit)).all()


def has_history(session: Session, *, plugin_id: str) -> bool:
    stmt = select(PluginHistory.id).where(PluginHistory.plugin_id == plugin_id).limit(1)
    return session.exec(stmt).first() is not None
