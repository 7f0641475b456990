"""Plugins' own key/value entries and blobs; their sizes count against ``storage_mb``."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlmodel import Session, col, func, select

from orchestrator.store.models import StorageItem, utcnow

__all__ = ["delete_storage_item", "get_storage_item", "put_storage_item", "storage_used"]


def get_storage_item(
    session: Session, *, plugin_id: str, kind: str, key: str
) -> StorageItem | None:
    return session.get(StorageItem, (plugin_id, kind, key))


def put_storage_item(
    session: Session,
    *,
    plugin_id: str,
    kind: str,
    key: str,
    value: Any = None,
    blob: bytes | None = None,
    size: int,
    at: datetime | None = None,
    existing: StorageItem | None = None,
) -> StorageItem:
    """Create or replace an entry: ``value`` for kind ``kv``, ``blob`` for kind ``blob``.
    ``existing`` is the entry when the caller already read it in this session (the quota
    check does), which saves a second lookup on every write."""
    row = existing or session.get(StorageItem, (plugin_id, kind, key))
    if row is None:
        row = StorageItem(plugin_id=plugin_id, kind=kind, key=key)
    row.value, row.blob = value, blob
    row.size, row.updated_at = size, at or utcnow()
    session.add(row)
    return row


def delete_storage_item(session: Session, *, plugin_id: str, kind: str, key: str) -> bool:
    """Remove an entry; False when there was none."""
    row = session.get(StorageItem, (plugin_id, kind, key))
    if row is None:
        return False
    session.delete(row)
    return True


def storage_used(session: Session, *, plugin_id: str) -> int:
    total = session.exec(
        select(func.coalesce(func.sum(StorageItem.size), 0)).where(
            col(StorageItem.plugin_id) == plugin_id
        )
    ).one()
    return int(total)
