"""Operator-set secrets of plugins, stored encrypted (the store never sees them in clear)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlmodel import Session, col, select

from orchestrator.store.models import PluginSecret, utcnow

__all__ = ["delete_secret", "get_secret", "list_secrets", "put_secret"]


def get_secret(session: Session, *, plugin_id: str, name: str) -> PluginSecret | None:
    return session.get(PluginSecret, (plugin_id, name))


def put_secret(
    session: Session, *, plugin_id: str, name: str, ciphertext: bytes, at: datetime | None = None
) -> PluginSecret:
    """Create or replace a secret."""
    row = session.get(PluginSecret, (plugin_id, name))
    if row is None:
        row = PluginSecret(plugin_id=plugin_id, name=name, ciphertext=b"")
    row.ciphertext, row.updated_at = ciphertext, at or utcnow()
    session.add(row)
    return row


def delete_secret(session: Session, *, plugin_id: str, name: str) -> bool:
    """Remove a secret; False when there was none."""
    row = session.get(PluginSecret, (plugin_id, name))
    if row is None:
        return False
    session.delete(row)
    return True


def list_secrets(session: Session, *, plugin_id: str) -> Sequence[PluginSecret]:
    return session.exec(
        select(PluginSecret)
        .where(col(PluginSecret.plugin_id) == plugin_id)
        .order_by(col(PluginSecret.name))
    ).all()
