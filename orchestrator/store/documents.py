"""The platform's document store, which plugins read and write through the host API."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select

from orchestrator.store.models import Document, utcnow

__all__ = ["get_document", "put_document", "query_documents"]


def get_document(session: Session, *, collection: str, key: str) -> Document | None:
    return session.get(Document, (collection, key))


def put_document(
    session: Session,
    *,
    collection: str,
    key: str,
    value: Any,
    updated_by: str,
    at: datetime | None = None,
) -> Document:
    """Create or replace the record ``key`` of ``collection``."""
    row = session.get(Document, (collection, key))
    if row is None:
        row = Document(collection=collection, key=key, value=value, updated_by=updated_by)
    row.value, row.updated_by, row.updated_at = value, updated_by, at or utcnow()
    session.add(row)
    return row


def query_documents(
    session: Session, *, collection: str, after_key: str | None, limit: int
) -> Sequence[Document]:
    query = select(Document).where(col(Document.collection) == collection)
    if after_key is not None:
        query = query.where(col(Document.key) > after_key)
    return session.exec(query.order_by(col(Document.key)).limit(limit)).all()
