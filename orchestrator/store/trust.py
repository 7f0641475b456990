"""Publisher keys the operator trusts to sign plugins. A revoked key stays, so it is never
trusted again."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlmodel import Session, col, select

from orchestrator.store.models import TrustedKey, utcnow

__all__ = ["add_trusted_key", "get_trusted_key", "list_trusted_keys", "revoke_trusted_key"]


def add_trusted_key(session: Session, *, key_id: str, name: str, public_key: str) -> TrustedKey:
    row = TrustedKey(key_id=key_id, name=name, public_key=public_key)
    session.add(row)
    return row


def get_trusted_key(session: Session, *, key_id: str) -> TrustedKey | None:
    return session.get(TrustedKey, key_id)


def list_trusted_keys(session: Session) -> Sequence[TrustedKey]:
    return session.exec(select(TrustedKey).order_by(col(TrustedKey.added_at))).all()


def revoke_trusted_key(
    session: Session, *, key_id: str, at: datetime | None = None
) -> TrustedKey | None:
    """The key, revoked at ``at`` unless it already was; None when it was never trusted."""
    row = session.get(TrustedKey, key_id)
    if row is not None and row.revoked_at is None:
        row.revoked_at = at or utcnow()
        session.add(row)
    return row
